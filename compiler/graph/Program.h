// Program: what sema makes of a source file. The declarations in the flat layout's order, the
// named values, outputs and loss, and the forward graph that computes them for ONE example.
#pragma once
#include "Graph.h"
#include "Source.h"

#include <optional>
#include <string>
#include <vector>

namespace nabla {

// How a param is initialized: `~ normal(mean, std)`, `~ uniform(lo, hi)`, `~ glorot`, `= value`.
struct Init {
  enum Kind { Constant, Normal, Uniform, Glorot } kind = Constant;
  double a = 0, b = 0; // Constant: value in a; Normal: mean, std; Uniform: lo, hi
};

struct Decl {
  std::string name; // "W_i", or "h.W" for a param that `dense` declares
  Shape shape;
  SourceLoc loc;
  NodeId node = kNoNode;
  int64_t offset = 0; // first scalar of this decl in its flat array (params, inputs or targets)
  Init init;          // params only
};

// A statement `NAME = EXPR` (or `loss NAME = EXPR`) after sema.
struct NamedValue {
  std::string name;
  SourceLoc loc;
  NodeId node = kNoNode;
  int statement = 0; // index of the statement in the source, for ordering
};

// A value of one step of a recurrence: `hs.h[t]` is {"h", t, node}.
struct StepValue {
  std::string name; // "h" (the state), "c" (lstm's cell), a gate's letter, or a scan cell's value
  int64_t t = 0;    // 0-based step; h[t] is the state after reading xs[t], i.e. row t of hs
  NodeId node = kNoNode;
};

// The per-step values of one recurrence statement (`hs = gru(xs, 32)`, `hs = scan(cell, h0, xs)`).
// Per step: the row `hs.x[t]` (xs[t]) and the state `hs.h[t]` (hs[t]); gru's gates `hs.r[t]`,
// `hs.z[t]`, `hs.n[t]`; lstm's `hs.i[t]`, `hs.f[t]`, `hs.g[t]`, `hs.o[t]` and cell `hs.c[t]`; a
// scan cell's named values `hs.V[t]`. Each is also in Program::values under that name
// (FAMILY[t], before the statement's own value), where the gradient printer finds the steps of
// one family and shows a shared weight's T per-step terms as one Σ over t.
struct RecurrenceSteps {
  std::string name;  // the statement's NAME ("hs")
  int statement = 0; // as NamedValue::statement
  int64_t steps = 0; // T
  std::vector<StepValue> values; // in step order; within a step, in computation order
};

struct Program {
  SourceFile source;
  Graph graph;
  std::vector<Decl> inputs, targets, params;
  std::vector<NamedValue> values;  // every `NAME = EXPR`, `dense` and the loss, in source order
  std::vector<NamedValue> outputs; // `output` names, in order (inputs and params included)
  std::optional<NamedValue> loss;
  std::vector<RecurrenceSteps> recurrences; // one per rnn/gru/lstm/scan statement, in source order

  int64_t paramCount() const { return flatSize(params); }
  int64_t inputCount() const { return flatSize(inputs); }
  int64_t targetCount() const { return flatSize(targets); }
  int64_t outputCount() const {
    int64_t n = 0;
    for (auto &o : outputs) n += graph.shape(o.node).numel();
    return n;
  }
  const Decl *findParam(std::string_view name) const {
    for (auto &p : params)
      if (p.name == name) return &p;
    return nullptr;
  }

private:
  static int64_t flatSize(const std::vector<Decl> &ds) {
    int64_t n = 0;
    for (auto &d : ds) n += d.shape.numel();
    return n;
  }
};

} // namespace nabla
