// The simplifier's rewrite rules, one small rule a line where possible. Each rule returns a node
// equal in value to the one it replaces, for every input (rules that would change a NaN into a
// number, such as 0 * x -> 0, are applied only where they are standard practice in symbolic
// differentiation: multiplying by a structural zero).
#include "Simplify.h"

#include "Kernels.h"

#include <algorithm>
#include <unordered_set>

namespace nabla {

NodeId Simplifier::simplify(NodeId root) {
  auto it = memo_.find(root);
  if (it != memo_.end()) return it->second;
  // The nodes under root that are not simplified yet: a walk that stops at simplified ones (a
  // sweep over the whole graph for every root was quadratic in the number of statements).
  std::vector<NodeId> todo, stack{root};
  std::unordered_set<NodeId> seen{root};
  while (!stack.empty()) {
    NodeId id = stack.back();
    stack.pop_back();
    todo.push_back(id);
    const Node &n = g_.node(id);
    for (int k = 0; k < n.nin; ++k) {
      NodeId x = n.in[static_cast<size_t>(k)];
      if (!memo_.count(x) && seen.insert(x).second) stack.push_back(x);
    }
  }
  // Ids are topological: rebuild them in increasing order, no recursion.
  std::sort(todo.begin(), todo.end());
  for (NodeId id : todo) {
    if (memo_.count(id)) continue;
    Node n = g_.node(id); // copy: make() may grow the node vector
    NodeId a = n.nin > 0 ? memo_.at(n.a()) : kNoNode;
    NodeId b = n.nin > 1 ? memo_.at(n.b()) : kNoNode;
    NodeId s = rewrite(n, a, b);
    memo_[id] = s;
    memo_[s] = s;
  }
  return memo_.at(root);
}

NodeId Simplifier::raw(Op op, NodeId a, NodeId b, double fattr, int64_t iattr, const Shape &shape,
                       const std::vector<int64_t> &attrs) {
  std::vector<NodeId> in;
  if (a != kNoNode) in.push_back(a);
  if (b != kNoNode) in.push_back(b);
  return g_.make(op, std::move(in), fattr, iattr, shape, attrs);
}

NodeId Simplifier::make(Op op, NodeId a, NodeId b, double fattr, int64_t iattr, const Shape &shape,
                        const std::vector<int64_t> &attrs) {
  Node n;
  n.op = op;
  n.fattr = fattr;
  n.iattr = iattr;
  n.shape = shape;
  n.attrs = attrs;
  return rewrite(n, a, b);
}

NodeId Simplifier::zeros(const Shape &s) {
  NodeId z = g_.constant(0);
  return s.isScalar() ? z : g_.broadcast(z, s);
}
bool Simplifier::scalarConst(NodeId id, double &v) const {
  if (g_.op(id) != Op::Const) return false;
  v = g_.node(id).fattr;
  return true;
}
bool Simplifier::isZero(NodeId id) const {
  double v;
  return g_.constValue(id, v) && v == 0;
}
bool Simplifier::isOne(NodeId id) const {
  double v;
  return g_.constValue(id, v) && v == 1;
}

NodeId Simplifier::rewrite(const Node &n, NodeId a, NodeId b) {
  switch (opKind(n.op)) {
  case OpKind::Leaf: return raw(n.op, kNoNode, kNoNode, n.fattr, n.iattr, n.shape);
  case OpKind::Unary: return rewriteUnary(n.op, a, n.fattr);
  case OpKind::Binary: {
    Shape out;
    broadcastShapes(g_.shape(a), g_.shape(b), out);
    return rewriteBinary(n.op, a, b, out);
  }
  case OpKind::Other: return rewriteOther(n.op, a, b, n.fattr, n.iattr, n.shape, n.attrs);
  }
  return kNoNode;
}

NodeId Simplifier::rewriteUnary(Op op, NodeId a, double p) {
  const Node x = g_.node(a); // a copy: make() may grow the node vector
  double c;
  if (scalarConst(a, c)) { // fold, except a logistic that saturates to exactly 0 or 1: kept, a
    // log or log(1 - .) of it still finds its stable form (log(logistic(-1000)) is -1000, not -inf)
    const double v = applyUnary(op, c, p);
    if (op != Op::Logistic || (v != 0 && v != 1)) return g_.constant(v);
  }
  if (op == Op::Neg && x.op == Op::Neg) return x.a();                // --x -> x
  if (op == Op::Pow && p == 1) return a;                             // x^1 -> x
  if (op == Op::Pow && x.op == Op::Pow && p == std::floor(p) && x.fattr == std::floor(x.fattr))
    return make(Op::Pow, x.a(), kNoNode, p * x.fattr);               // (x^m)^n -> x^(mn), integers
  if (op == Op::Log && x.op == Op::Softmax)                          // log(softmax z) -> log_softmax z
    return make(Op::LogSoftmax, x.a());
  if (op == Op::Log && x.op == Op::Logistic)                         // log(logistic z) -> -softplus(-z)
    return make(Op::Neg, make(Op::Softplus, make(Op::Neg, x.a())));
  if (op == Op::Log && x.op == Op::Sub && isOne(x.a()) &&            // log(1 - logistic z) -> -softplus(z)
      g_.op(x.b()) == Op::Logistic && g_.shape(x.b()) == x.shape)
    return make(Op::Neg, make(Op::Softplus, g_.node(x.b()).a()));
  if (op == Op::Exp && x.op == Op::LogSoftmax) return make(Op::Softmax, x.a()); // exp(log_softmax z)
  if ((op == Op::Step || op == Op::Sign) && isZero(a)) return a;
  return raw(op, a, kNoNode, p, 0, {});
}

NodeId Simplifier::rewriteBinary(Op op, NodeId a, NodeId b, const Shape &out) {
  // A numpy-aligned broadcast operand is implied by the op itself: drop it.
  auto unbroadcast = [&](NodeId &x, NodeId other) {
    const Node n = g_.node(x);
    Shape s;
    if (n.op == Op::Broadcast && n.iattr < 0 && broadcastShapes(g_.shape(n.a()), g_.shape(other), s) &&
        s == out)
      x = n.a();
  };
  unbroadcast(a, b);
  unbroadcast(b, a);
  auto widen = [&](NodeId x) { return g_.shape(x) == out ? x : make(Op::Broadcast, x, kNoNode, 0, -1, out); };
  double ca = 0, cb = 0;
  bool A = scalarConst(a, ca), B = scalarConst(b, cb);
  if (A && B) return g_.constant(applyBinary(op, ca, cb)); // fold
  const Node na = g_.node(a), nb = g_.node(b); // copies, as above
  switch (op) {
  case Op::Add:
    if (isZero(a)) return widen(b);                                    // 0 + x -> x
    if (isZero(b)) return widen(a);                                    // x + 0 -> x
    if (nb.op == Op::Neg) return make(Op::Sub, a, nb.a());             // x + -y -> x - y
    if (na.op == Op::Neg) return make(Op::Sub, b, na.a());             // -x + y -> y - x
    if (a == b) return make(Op::Mul, g_.constant(2), a);               // x + x -> 2 * x
    break;
  case Op::Sub:
    if (isZero(b)) return widen(a);                                    // x - 0 -> x
    if (isZero(a)) return widen(make(Op::Neg, b));                     // 0 - x -> -x
    if (nb.op == Op::Neg) return make(Op::Add, a, nb.a());             // x - -y -> x + y
    if (a == b) return zeros(out);                                     // x - x -> 0
    break;
  case Op::Mul:
    if (B && !A) return make(Op::Mul, b, a);                           // x * c -> c * x
    if (A && ca == 1) return widen(b);                                 // 1 * x -> x
    if (A && ca == -1) return widen(make(Op::Neg, b));                 // -1 * x -> -x
    if (isZero(a) || isZero(b)) return zeros(out);                     // 0 * x -> 0
    if (A && nb.op == Op::Mul && scalarConst(nb.a(), cb))              // c * (d * x) -> (cd) * x
      return make(Op::Mul, g_.constant(ca * cb), nb.b());
    if (A && nb.op == Op::Neg) return make(Op::Mul, g_.constant(-ca), nb.a()); // c * -x -> (-c) * x
    if (na.op == Op::Neg) return make(Op::Neg, make(Op::Mul, na.a(), b)); // -x * y -> -(x * y)
    if (nb.op == Op::Neg) return make(Op::Neg, make(Op::Mul, a, nb.a())); // x * -y -> -(x * y)
    if (nb.op == Op::Mul && scalarConst(nb.a(), cb))                   // x * (c * y) -> c * (x * y)
      return make(Op::Mul, nb.a(), make(Op::Mul, a, nb.b()));
    if (na.op == Op::Mul && scalarConst(na.a(), ca))                   // (c * x) * y -> c * (x * y)
      return make(Op::Mul, na.a(), make(Op::Mul, na.b(), b));
    break;
  case Op::Div:
    if (B && cb == 1) return widen(a);                                 // x / 1 -> x
    if (isZero(a)) return zeros(out);                                  // 0 / x -> 0
    if (na.op == Op::Neg) return make(Op::Neg, make(Op::Div, na.a(), b)); // -x / y -> -(x / y)
    break;
  default: break;
  }
  return raw(op, a, b, 0, 0, {});
}

NodeId Simplifier::rewriteOther(Op op, NodeId a, NodeId b, double fattr, int64_t iattr,
                                const Shape &shape, const std::vector<int64_t> &attrs) {
  const Node x = g_.node(a); // a copy: make() may grow the node vector
  const Shape sa = g_.shape(a);
  switch (op) {
  case Op::Broadcast:
    if (sa == shape) return a;                                         // broadcast to own shape
    if (x.op == Op::Broadcast && x.iattr < 0 && iattr < 0)             // broadcast of a broadcast
      return make(Op::Broadcast, x.a(), kNoNode, 0, -1, shape);
    break;
  case Op::SumTo: {
    if (sa == shape) return a;                                         // nothing to sum
    if (isZero(a)) return zeros(shape);
    // sum_to(broadcast(y)) where y already has the target shape: each element repeated k times.
    if (x.op == Op::Broadcast && x.iattr < 0 && g_.shape(x.a()) == shape) {
      double k = double(sa.numel()) / double(shape.numel());
      return make(Op::Mul, g_.constant(k), x.a());
    }
    break;
  }
  case Op::Sum:
    if (sa.isScalar()) return a;                                       // sum of a scalar
    if (x.op == Op::Neg) return make(Op::Neg, make(Op::Sum, x.a()));  // sum(-x) -> -sum(x)
    if (isZero(a)) return g_.constant(0);
    if (x.op == Op::Broadcast && x.iattr < 0 && g_.shape(x.a()).isScalar()) // sum(broadcast s) -> n * s
      return make(Op::Mul, g_.constant(double(sa.numel())), x.a());
    if (x.op == Op::Mul && g_.shape(x.a()).isScalar())                 // sum(c * y) -> c * sum(y)
      return make(Op::Mul, x.a(), make(Op::Sum, x.b()));
    break;
  case Op::SumAxis:
    if (x.op == Op::Neg) return make(Op::Neg, make(Op::SumAxis, x.a(), kNoNode, 0, iattr, shape));
    if (isZero(a)) { // the result's shape is a's without the axis (whatever `shape` a caller gave)
      std::vector<int64_t> d = sa.dims;
      d.erase(d.begin() + iattr);
      return zeros(Shape(std::move(d)));
    }
    break;
  case Op::Reshape:
    if (sa == shape) return a;                                         // reshape to own shape
    if (x.op == Op::Reshape) return make(Op::Reshape, x.a(), kNoNode, 0, 0, shape); // of a reshape
    if (isZero(a)) return zeros(shape);
    break;
  case Op::Slice:
  case Op::Pad:
    // the whole of a (every start 0, same shape): nothing to cut or add
    if (sa == shape && std::all_of(attrs.begin(), attrs.end(), [](int64_t v) { return v == 0; }))
      return a;
    if (isZero(a)) return zeros(shape);                                // a part of zeros, zeros padded
    break;
  case Op::Concat:
  case Op::Conv2d:
  case Op::Conv2dInputGrad:
  case Op::Conv2dKernelGrad:
  case Op::AvgPool2d:
  case Op::AvgPool2dGrad:
    // linear in each operand (Concat: zeros joined to zeros): a zero operand gives zeros
    if (isZero(a) && (op != Op::Concat || isZero(b))) return zeros(g_.shape(raw(op, a, b, 0, iattr, shape, attrs)));
    if (b != kNoNode && op != Op::Concat && isZero(b)) return zeros(g_.shape(raw(op, a, b, 0, iattr, shape, attrs)));
    break;
  case Op::MaxPool2dGrad: // linear in g
    if (isZero(b)) return zeros(g_.shape(a));
    break;
  case Op::Transpose:
    if (x.op == Op::Transpose) return x.a();                           // (xᵀ)ᵀ -> x
    if (isZero(a)) return zeros(Shape{sa[1], sa[0]});
    break;
  case Op::MatMul:
  case Op::Outer:
    if (isZero(a) || isZero(b)) {
      Shape out = g_.shape(raw(op, a, b, 0, 0, {}));
      return zeros(out);
    }
    break;
  default: break;
  }
  return raw(op, a, b, fattr, iattr, shape, attrs);
}

} // namespace nabla
