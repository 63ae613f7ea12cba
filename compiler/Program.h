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

struct Program {
  SourceFile source;
  Graph graph;
  std::vector<Decl> inputs, targets, params;
  std::vector<NamedValue> values;  // every `NAME = EXPR`, `dense` and the loss, in source order
  std::vector<NamedValue> outputs; // `output` names, in order (inputs and params included)
  std::optional<NamedValue> loss;

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
