// Explain: `nabla explain`, the chain rule of a program made visible value by value. For each named
// value and param, from the loss backwards (the order of `nabla grad`): its gradient as the sum of
// its consumers' terms, dE/dy_i = Σ_j dE/dz_j · dz_j/dy_i, each term labelled with the statement it
// flows from and that statement's source line; for small values (at most `maxUnits` elements) the
// same sum written per element, as a lecture writes it (dE/dy_i[1] = W_j[0,1]·dE/dz_j[0] + ...);
// and, given one example and the params, the number of every term beside its formula.
//
// The result is structured so that every view renders the same derivation: the text printer
// (renderText), LaTeX and Markdown (renderLatex, renderMarkdown) and the HTML page of
// `nabla explain --html` (which reads the fields directly).
//
// Indices are 0-based, as in the language (x[0] is the first element), so that every per-element
// formula is also nabla code.
#pragma once
#include "Expected.h"
#include "Pipeline.h"

#include <optional>
#include <string>
#include <vector>

namespace nabla {

struct ExplainOptions {
  // The values and params to explain (each a statement's name, a param's, or a recurrence's step
  // value such as `hs.h[3]`); empty: all, from the loss backwards. An unknown name is an Error
  // with a did-you-mean suggestion.
  std::vector<std::string> names;
  bool ascii = false; // the notation of `grad --ascii` (@, transpose, outer, sum) in `formula`s
  int maxUnits = 8;   // per-element form for values of at most this many units (a matrix: rows
                      // and columns each, and at most max(16, maxUnits) elements); 0: never

  // With numbers: the flat params (Program::params' layout) and ONE example's inputs and targets
  // (Program::inputs' and ::targets' layouts). Every term, total and forward value is evaluated
  // in f64 by the interpreter, and each total is checked against the gradient computed as a whole
  // (a mismatch is an Error whose message starts with "internal error:").
  bool withNumbers = false;
  std::vector<double> params, inputs, targets;
  std::string example; // how the example was chosen, for the header ("row 0 of hinton.csv")
};

// One consumer's term of a gradient: dE/dz_j · dz_j/dy_i for the consumer z_j, already multiplied
// out (W_jᵀ dE/dz_j).
struct ExplainTerm {
  std::string consumer; // the statement it flows from ("z_j"; "hs.h[t]" for a step's term)
  int line = 0;         // the consumer statement's source line (1-based), 0 when unknown
  std::string formula;  // in the user's names, in grad's notation
  std::string steps;    // for a Σ over a recurrence's steps, their range ("t=0..4"); else empty
  std::optional<std::vector<double>> value; // with numbers: the term's value, row-major
};

// One element of a small value's gradient, as scalars: lhs = terms[0] + terms[1] + ...
struct ExplainScalar {
  std::string lhs;                // "dE/dy_i[1]"
  std::vector<std::string> terms; // "W_j[0,1]·dE/dz_j[0]", one per product (consumers in order)
  std::vector<std::string> numeric; // with numbers: each term with its factors' values
                                    // ("0.38·(-0.1439)"), one per term
  std::vector<double> values;     // with numbers: one per term
  std::optional<double> total;    // with numbers: the element of the gradient
};

struct ExplainEntry {
  std::string name;      // "y_i", "W_j", "hs.h[3]"
  bool isParam = false;
  int line = 0;          // the statement's (a param's: its declaration's) source line, 1-based
  std::string shape;     // "[3]", "[2, 3]"; "scalar" for a scalar
  std::string gradient;  // the symbol: "dE/dy_i"
  std::string formula;   // the whole gradient, as `nabla grad` prints it after `=`
  std::vector<ExplainTerm> terms; // one per consuming statement (one term: the formula itself)
  std::vector<ExplainScalar> perElement; // for at most maxUnits elements; else empty
  std::string note;      // e.g. "E does not depend on it"; else empty
  // With numbers, row-major:
  std::optional<std::vector<double>> forward;  // the value itself (a param's value)
  std::optional<std::vector<double>> numbers;  // its gradient, checked against the compiled one
};

struct Explanation {
  std::string file;  // the source's name as given
  std::string loss;  // "E"
  std::string example;                // ExplainOptions::example, when numbers were asked for
  std::optional<double> lossValue;    // with numbers
  std::vector<ExplainEntry> entries;  // from the loss backwards (grad's order)
  std::vector<std::string> notes;     // grad's trailing notes (aliases, from-logits forms)
};

// Requires program.loss and `d` from derive(program). Grows program.graph (the terms' nodes).
Expected<Explanation> explain(Program &program, Derivation &d, const ExplainOptions &opts);

// Plain text: per entry, the whole gradient, its terms with `← from z_j, line 12`, the
// per-element form, and with numbers the values (`= 0.0213 + -0.0087 = 0.0126`).
std::string renderText(const Explanation &e, bool ascii = false);

// LaTeX: a standalone document (article, amsmath) or, with standalone = false, a fragment to
// \input into one. User names with subscripts as TeX writes them (W_j -> W_{j}).
std::string renderLatex(const Explanation &e, bool standalone = true);

// GitHub-flavoured Markdown, math in $...$.
std::string renderMarkdown(const Explanation &e);

// A formula of grad's notation (Unicode, as in ExplainTerm::formula) as LaTeX math, for the
// renderers and the page.
std::string formulaToLatex(const std::string &formula);

} // namespace nabla
