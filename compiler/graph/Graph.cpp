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
  for (int64_t a : k.attrs) mix(static_cast<uint64_t>(a));
  return h;
}

// The shape rule of each op; the inputs' shapes were checked by sema (user errors) or are built
// by autodiff and the simplifier, so a mismatch here is a compiler bug.
static Shape inferShape(const Graph &g, Op op, const std::vector<NodeId> &in, int64_t iattr,
                        const Shape &given, const std::vector<int64_t> &attrs, double fattr) {
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
  case Op::Max:
  case Op::Min: {
    if ((op == Op::Max || op == Op::Min) && iattr == -1) return Shape{};
    if (iattr < 0 || iattr >= sh(0).rank()) return bad();
    std::vector<int64_t> d = sh(0).dims;
    d.erase(d.begin() + iattr);
    return Shape(std::move(d));
  }
  case Op::Broadcast: {
    if (iattr < 0) {
      Shape out;
      if (!broadcastShapes(sh(0), given, out) || out != given) return bad();
      return given;
    }
    // A rank r-1 value fills every index of axis iattr of a rank-r shape.
    if (iattr >= given.rank() || sh(0).rank() != given.rank() - 1) return bad();
    std::vector<int64_t> d = given.dims;
    d.erase(d.begin() + iattr);
    if (Shape(std::move(d)) != sh(0)) return bad();
    return given;
  }
  case Op::ExtremeMask:
    if (iattr < -1 || iattr >= sh(0).rank() || (fattr != 1 && fattr != -1)) return bad();
    return sh(0);
  case Op::Slice:
  case Op::Pad: {
    // Slice: the result `given` lies inside a at `attrs`; Pad: a lies inside the result.
    const Shape &inner = op == Op::Slice ? given : sh(0);
    const Shape &outer = op == Op::Slice ? sh(0) : given;
    if (inner.rank() != outer.rank() || attrs.size() != static_cast<size_t>(inner.rank()))
      return bad();
    for (int k = 0; k < inner.rank(); ++k)
      if (attrs[static_cast<size_t>(k)] < 0 || attrs[static_cast<size_t>(k)] + inner[k] > outer[k])
        return bad();
    return given;
  }
  case Op::Conv2d:
  case Op::Conv2dInputGrad:
  case Op::Conv2dKernelGrad:
  case Op::MaxPool2d:
  case Op::MaxPool2dGrad:
  case Op::AvgPool2d:
  case Op::AvgPool2dGrad: {
    if (attrs.size() != 2) return bad();
    const bool conv = op == Op::Conv2d || op == Op::Conv2dInputGrad || op == Op::Conv2dKernelGrad;
    const int64_t stride = conv ? attrs[0] : attrs[1], pad = conv ? attrs[1] : 0;
    if (stride < 1 || pad < 0 || (!conv && attrs[0] < 1)) return bad();
    // The image x and, for the convolutions, the kernel K.
    Shape x, K;
    switch (op) {
    case Op::Conv2d: x = sh(0); K = sh(1); break;
    case Op::Conv2dInputGrad: x = given; K = sh(1); break;
    case Op::Conv2dKernelGrad: x = sh(0); K = given; break;
    case Op::AvgPool2dGrad: x = given; break;
    default: x = sh(0); break;
    }
    if (x.rank() != 3) return bad();
    int64_t F = x[0], kh = attrs[0], kw = attrs[0];
    if (conv) {
      if (K.rank() != 4 || K[1] != x[0]) return bad();
      F = K[0], kh = K[2], kw = K[3];
    }
    const int64_t hp = x[1] + 2 * pad, wp = x[2] + 2 * pad;
    if (hp < kh || wp < kw) return bad();
    const Shape y{F, (hp - kh) / stride + 1, (wp - kw) / stride + 1};
    switch (op) {
    case Op::Conv2d:
    case Op::MaxPool2d:
    case Op::AvgPool2d: return y;
    case Op::Conv2dInputGrad:
    case Op::AvgPool2dGrad: return sh(0) == y ? given : bad();
    case Op::Conv2dKernelGrad: return sh(1) == y ? given : bad();
    case Op::MaxPool2dGrad: return sh(1) == y ? x : bad();
    default: return bad();
    }
  }
  case Op::Reshape:
    if (given.numel() != sh(0).numel()) return bad();
    return given;
  case Op::Concat: {
    const Shape &a = sh(0), &b = sh(1);
    if (a.rank() != b.rank() || iattr < 0 || iattr >= a.rank()) return bad();
    std::vector<int64_t> d = a.dims;
    for (int k = 0; k < a.rank(); ++k)
      if (k != iattr && a[k] != b[k]) return bad();
    d[static_cast<size_t>(iattr)] += b[static_cast<int>(iattr)];
    return Shape(std::move(d));
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

NodeId Graph::make(Op op, std::vector<NodeId> in, double fattr, int64_t iattr, Shape shape,
                   std::vector<int64_t> attrs) {
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
  if (opKind(op) != OpKind::Other || op == Op::Concat || op == Op::Reshape) attrs.clear();
  n.shape = inferShape(*this, op, in, iattr, shape, attrs, fattr);
  n.attrs = attrs;
  uint64_t bits;
  std::memcpy(&bits, &fattr, sizeof bits);
  Key key{op, n.in, bits, iattr, n.shape.dims, std::move(attrs)};
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
