// Graph construction: the shape rule of every op and hash-consing (an identical node is never
// created twice, so common subexpressions are shared).
#include "Graph.h"

#include <fmt/format.h>

#include <cstring>

namespace nabla {

int opArity(Op op) {
  switch (op) {
#define OP(Name, Arity, Spelling, Kind)                                                            \
  case Op::Name:                                                                                   \
    return Arity;
#include "Ops.def"
  }
  return 0;
}

std::string_view opSpelling(Op op) {
  switch (op) {
#define OP(Name, Arity, Spelling, Kind)                                                            \
  case Op::Name:                                                                                   \
    return Spelling;
#include "Ops.def"
  }
  return "?";
}

OpKind opKind(Op op) {
  switch (op) {
#define OP(Name, Arity, Spelling, Kind)                                                            \
  case Op::Name:                                                                                   \
    return OpKind::Kind;
#include "Ops.def"
  }
  return OpKind::Other;
}

size_t Graph::KeyHash::operator()(const Key &k) const {
  size_t h = static_cast<size_t>(k.op) * 0x9E3779B97F4A7C15ull;
  auto mix = [&h](uint64_t v) { h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2); };
  mix(static_cast<uint64_t>(k.in[0]));
  mix(static_cast<uint64_t>(k.in[1]));
  mix(k.fbits);
  mix(static_cast<uint64_t>(k.iattr));
  for (int64_t d : k.dims) mix(static_cast<uint64_t>(d));
  return h;
}

// The shape rule of each op; the inputs' shapes were checked by sema (user errors) or are built
// by autodiff and the simplifier, so a mismatch here is a compiler bug.
static Shape inferShape(const Graph &g, Op op, const std::vector<NodeId> &in, int64_t iattr,
                        const Shape &given) {
  auto bad = [&]() -> Shape {
    std::string s;
    for (NodeId i : in) s += " " + g.shape(i).str();
    throw InternalError(fmt::format("bad operand shapes for {}:{}", opSpelling(op), s));
  };
  auto sh = [&](int k) -> const Shape & { return g.shape(in[static_cast<size_t>(k)]); };
  switch (opKind(op)) {
  case OpKind::Leaf: return op == Op::Const ? Shape{} : given;
  case OpKind::Unary: return sh(0);
  case OpKind::Binary: {
    Shape out;
    if (!broadcastShapes(sh(0), sh(1), out)) return bad();
    return out;
  }
  case OpKind::Other: break;
  }
  switch (op) {
  case Op::Sum: return Shape{};
  case Op::SumAxis:
    if (sh(0).rank() != 2 || iattr < 0 || iattr > 1) return bad();
    return Shape{sh(0)[1 - static_cast<int>(iattr)]};
  case Op::Broadcast: {
    if (iattr < 0) {
      Shape out;
      if (!broadcastShapes(sh(0), given, out) || out != given) return bad();
      return given;
    }
    // A rank-1 value fills every index of axis iattr of a rank-2 shape.
    if (given.rank() != 2 || sh(0).rank() != 1 || iattr > 1 ||
        sh(0)[0] != given[1 - static_cast<int>(iattr)])
      return bad();
    return given;
  }
  case Op::SumTo: {
    Shape out;
    if (!broadcastShapes(given, sh(0), out) || out != sh(0)) return bad();
    return given;
  }
  case Op::Softmax:
  case Op::LogSoftmax:
    if (sh(0).rank() < 1) return bad();
    return sh(0);
  case Op::MatMul: {
    const Shape &a = sh(0), &b = sh(1);
    if (a.rank() < 1 || b.rank() < 1) return bad();
    int64_t ka = a[a.rank() - 1], kb = b[0];
    if (ka != kb) return bad();
    std::vector<int64_t> d;
    if (a.rank() == 2) d.push_back(a[0]);
    if (b.rank() == 2) d.push_back(b[1]);
    return Shape(std::move(d));
  }
  case Op::Outer:
    if (sh(0).rank() != 1 || sh(1).rank() != 1) return bad();
    return Shape{sh(0)[0], sh(1)[0]};
  case Op::Transpose:
    if (sh(0).rank() != 2) return bad();
    return Shape{sh(0)[1], sh(0)[0]};
  default: return bad();
  }
}

NodeId Graph::make(Op op, std::vector<NodeId> in, double fattr, int64_t iattr, Shape shape) {
  if (static_cast<int>(in.size()) != opArity(op))
    throw InternalError(fmt::format("{} takes {} operands", opSpelling(op), opArity(op)));
  for (NodeId i : in)
    if (i < 0 || static_cast<size_t>(i) >= nodes_.size())
      throw InternalError("operand is not a node of this graph");
  Node n;
  n.op = op;
  n.nin = static_cast<int8_t>(in.size());
  for (size_t k = 0; k < in.size(); ++k) n.in[k] = in[k];
  n.fattr = fattr;
  n.iattr = iattr;
  n.shape = inferShape(*this, op, in, iattr, shape);
  uint64_t bits;
  std::memcpy(&bits, &fattr, sizeof bits);
  Key key{op, n.in, bits, iattr, n.shape.dims};
  auto it = interned_.find(key);
  if (it != interned_.end()) return it->second;
  NodeId id = static_cast<NodeId>(nodes_.size());
  nodes_.push_back(std::move(n));
  interned_.emplace(std::move(key), id);
  return id;
}

bool Graph::constValue(NodeId id, double &v) const {
  const Node &n = node(id);
  if (n.op == Op::Const) {
    v = n.fattr;
    return true;
  }
  if (n.op == Op::Broadcast && op(n.a()) == Op::Const) {
    v = node(n.a()).fattr;
    return true;
  }
  return false;
}

std::vector<NodeId> Graph::reachable(const std::vector<NodeId> &roots) const {
  std::vector<char> seen(nodes_.size(), 0);
  for (NodeId r : roots)
    if (r != kNoNode) seen[static_cast<size_t>(r)] = 1;
  // Inputs have smaller ids than their users: one downward sweep marks everything reachable.
  for (size_t i = nodes_.size(); i-- > 0;) {
    if (!seen[i]) continue;
    for (int k = 0; k < nodes_[i].nin; ++k) seen[static_cast<size_t>(nodes_[i].in[static_cast<size_t>(k)])] = 1;
  }
  std::vector<NodeId> out;
  for (size_t i = 0; i < nodes_.size(); ++i)
    if (seen[i]) out.push_back(static_cast<NodeId>(i));
  return out;
}

} // namespace nabla
