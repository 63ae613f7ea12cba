// GradPrinter: `nabla grad`, the derivative of the loss with respect to every named value and
// param, as formulas in the source's own names, from the loss backwards. A value with several
// consumers shows one term per consumer, labelled by the statement it comes from, then the sum:
// the multivariate chain rule, dE/dy_i = Σ_j dE/dz_j dz_j/dy_i, made visible.
#pragma once
#include "Pipeline.h"

#include <string>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace nabla {

struct GradPrintOptions {
  bool ascii = false; // `@`, `transpose(A)`, `outer(a, b)` instead of juxtaposition, ᵀ and ⊗
  // With ascii: every formula is a nabla expression that computes the printed value at its full
  // shape (outer(a, b) as reshape(a, [n, 1]) * reshape(b, [1, m]); every broadcast explicit,
  // `C + zeros([n])`), so that a test can parse the printout back as code.
  bool parseable = false;
};

std::string printGradient(Program &p, Derivation &d, const GradPrintOptions &opts);

// The structure behind printGradient, for `nabla explain`: per item (value or param, from the
// loss backwards), its gradient and its consumers' terms, as printed and as nodes.
struct GradTermLine {
  std::string label;          // the consumer as printed ("z_j"; "hs.h[t]" for a Σ over steps)
  std::string text;           // the term as printed
  std::vector<int64_t> steps; // a Σ over these steps of a recurrence (empty: one term)
  std::string range;          // the steps as printed ("t=0..4"), empty without steps
  std::vector<NodeId> nodes;  // the term; for a Σ, one node per step (the term is their sum)
  size_t statement = SIZE_MAX; // the consumer's statement (index in Program::values), if known
};
struct GradListItem {
  std::string name;              // as printed ("y_i"; "hs.h[t]" for a block over steps)
  NodeId fwd = kNoNode;          // the forward node (of the first step for a block over steps)
  NodeId adjoint = kNoNode;      // its simplified adjoint, kNoNode when none
  bool isParam = false;
  std::string lhs;               // "dE/dy_i"
  std::string formula;           // the whole gradient (always with wantWhole, else with one term)
  std::string range;             // the steps of a block printed over t ("t=0..4")
  std::vector<GradTermLine> terms; // one per consumer statement
  std::string note;              // "E does not depend on it"
  std::string text;              // grad's lines for it
};
struct GradListing {
  std::string header, notes, aliases; // grad's first lines, and its closing notes
  std::vector<GradListItem> items;
  std::unordered_map<NodeId, std::string> names;    // forward nodes printed by name
  std::unordered_map<NodeId, std::string> adjoints; // adjoint nodes printed as dE/dNAME
  std::string stepVar;                              // the letter of a recurrence's step
};
// perStep: each step value of a recurrence on its own (else, as grad: one block over t for the
// steps whose gradients read the same). wantWhole: GradListItem::formula for several terms too.
GradListing listGradient(Program &p, Derivation &d, const GradPrintOptions &opts, bool perStep = false,
                         bool wantWhole = false);
// ASCII for the Unicode letters of a listing (Σ -> sum, ∈ -> in).
std::string asciiLetters(const std::string &text);

// One expression in the printer's notation, with decls and `names` substituted (for tests and
// for the comments of lowered code); output beyond about `budget` characters is elided.
std::string printExpression(const Program &p, NodeId id, const GradPrintOptions &opts,
                            const std::unordered_map<NodeId, std::string> &names = {},
                            size_t budget = 20000);

} // namespace nabla
