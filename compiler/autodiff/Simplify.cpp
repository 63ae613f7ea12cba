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

// A term as c · f1 · f2 · ...: its constant factor (signs and scalar constants, broadcast or not)
// and its other factors, for rules that look at products whatever their grouping. False for a
// term of more than `max` factors.
static bool productOf(const Graph &g, NodeId id, double &c, std::vector<NodeId> &factors, size_t max = 4) {
  const Node &n = g.node(id);
  double v;
  if (g.constValue(id, v)) {
    c *= v;
    return true;
  }
  if (n.op == Op::Neg) {
    c = -c;
    return productOf(g, n.a(), c, factors, max);
  }
  if (n.op == Op::Mul) return productOf(g, n.a(), c, factors, max) && productOf(g, n.b(), c, factors, max);
  factors.push_back(id);
  return factors.size() <= max;
}

// (1 - t) σ(z) - t σ(-z) -> σ(z) - t: the derivative of bce(logistic(z), t) in its stable
// from-logits form (d/dz [t softplus(-z) + (1 - t) softplus(z)]), since σ(-z) = 1 - σ(z):
// (1 - t) σ(z) - t (1 - σ(z)) = σ(z) - t. Logistic regression's gradient is then `p - t`, as every
// textbook writes it. Both terms may carry the same constant factor with opposite signs
// (c (1 - t) σ(z) + (-c) t σ(-z) -> c (σ(z) - t)), in any order and grouping. `a + signB * b`;
// kNoNode when the sum is not of that form.
NodeId Simplifier::logisticPair(NodeId a, NodeId b, double signB, const Shape &out) {
  double ca = 1, cb = signB;
  std::vector<NodeId> fa, fb;
  if (!productOf(g_, a, ca, fa) || !productOf(g_, b, cb, fb) || fa.size() != 2 || fb.size() != 2) return kNoNode;
  // term 1: c1 · P · σ(z), term 2: c2 · Q · σ(-z), P = 1 - Q, c2 = -c1
  for (int swapTerms = 0; swapTerms < 2; ++swapTerms) {
    const std::vector<NodeId> &f1 = swapTerms ? fb : fa, &f2 = swapTerms ? fa : fb;
    const double c1 = swapTerms ? cb : ca, c2 = swapTerms ? ca : cb;
    if (c2 != -c1) continue;
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j) {
        const NodeId sig = f1[static_cast<size_t>(i)], P = f1[static_cast<size_t>(1 - i)];
        const NodeId sigNeg = f2[static_cast<size_t>(j)], Q = f2[static_cast<size_t>(1 - j)];
        if (g_.op(sig) != Op::Logistic || g_.op(sigNeg) != Op::Logistic) continue;
        const Node &inner = g_.node(g_.node(sigNeg).a());
        if (inner.op != Op::Neg || inner.a() != g_.node(sig).a()) continue;
        const Node &p = g_.node(P);
        double one;
        if (p.op != Op::Sub || !g_.constValue(p.a(), one) || one != 1 || p.b() != Q) continue;
        NodeId r = make(Op::Sub, sig, Q);
        if (c1 != 1) r = make(Op::Mul, g_.constant(c1), r);
        return g_.shape(r) == out ? r : make(Op::Broadcast, r, kNoNode, 0, -1, out);
      }
  }
  return kNoNode;
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
    if (NodeId r = logisticPair(a, b, 1, out); r != kNoNode) return r;  // bce's (1 - t) σ(z) - t σ(-z)
    if (na.op == Op::Pad && nb.op == Op::Pad && na.shape == nb.shape) { // pad(x) + pad(y) -> pad(concat)
      // Two padded values side by side along one axis (and aligned on the others) fill disjoint,
      // adjacent regions: their sum is the two joined, padded (a stacked gate's gradient).
      const Shape sx = g_.shape(na.a()), sy = g_.shape(nb.a());
      int axis = -1;
      bool aligned = sx.rank() == sy.rank();
      for (int k = 0; aligned && k < sx.rank(); ++k) {
        const size_t u = static_cast<size_t>(k);
        if (na.attrs[u] == nb.attrs[u] && sx[k] == sy[k]) continue;
        const bool adjacent = na.attrs[u] + sx[k] == nb.attrs[u] || nb.attrs[u] + sy[k] == na.attrs[u];
        if (axis >= 0 || !adjacent) aligned = false;
        axis = k;
      }
      if (aligned && axis >= 0) {
        const bool xFirst = na.attrs[static_cast<size_t>(axis)] < nb.attrs[static_cast<size_t>(axis)];
        NodeId joined = make(Op::Concat, xFirst ? na.a() : nb.a(), xFirst ? nb.a() : na.a(), 0, axis);
        return make(Op::Pad, joined, kNoNode, 0, 0, out, xFirst ? na.attrs : nb.attrs);
      }
    }
    break;
  case Op::Sub:
    if (isZero(b)) return widen(a);                                    // x - 0 -> x
    if (isZero(a)) return widen(make(Op::Neg, b));                     // 0 - x -> -x
    if (nb.op == Op::Neg) return make(Op::Add, a, nb.a());             // x - -y -> x + y
    if (a == b) return zeros(out);                                     // x - x -> 0
    if (NodeId r = logisticPair(a, b, -1, out); r != kNoNode) return r; // (1 - t) σ(z) - t σ(-z) -> σ(z) - t
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
  case Op::SumAxis: {
    if (x.op == Op::Neg) return make(Op::Neg, make(Op::SumAxis, x.a(), kNoNode, 0, iattr, shape));
    double c;
    if (x.op == Op::Broadcast && g_.constValue(a, c)) { // sum(c everywhere, k) -> n_k c everywhere
      std::vector<int64_t> d = sa.dims;
      d.erase(d.begin() + iattr);
      NodeId v = g_.constant(c * double(sa[static_cast<int>(iattr)]));
      return d.empty() ? v : make(Op::Broadcast, v, kNoNode, 0, -1, Shape(std::move(d)));
    }
    if (isZero(a)) { // the result's shape is a's without the axis (whatever `shape` a caller gave)
      std::vector<int64_t> d = sa.dims;
      d.erase(d.begin() + iattr);
      return zeros(Shape(std::move(d)));
    }
    break;
  }
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
    if (op == Op::Slice && x.op == Op::Pad) { // a part of a padded value: of the value, or of zeros
      const Shape inner = g_.shape(x.a());
      bool inside = true, outside = false;
      std::vector<int64_t> start(attrs.size());
      for (size_t k = 0; k < attrs.size(); ++k) {
        const int64_t lo = attrs[k], hi = lo + shape[static_cast<int>(k)];          // the slice
        const int64_t plo = x.attrs[k], phi = plo + inner[static_cast<int>(k)];     // the value
        inside &= lo >= plo && hi <= phi;
        outside |= hi <= plo || lo >= phi;
        start[k] = lo - plo;
      }
      if (outside) return zeros(shape);                                // only the padding
      if (inside) return make(Op::Slice, x.a(), kNoNode, 0, 0, shape, start); // only the value
    }
    if (op == Op::Slice && x.op == Op::Concat) { // a part of one of the two joined values
      const size_t k = static_cast<size_t>(x.iattr);
      const int64_t split = g_.shape(x.a())[static_cast<int>(x.iattr)];
      const int64_t lo = attrs[k], hi = lo + shape[static_cast<int>(x.iattr)];
      if (hi <= split) return make(Op::Slice, x.a(), kNoNode, 0, 0, shape, attrs);
      if (lo >= split) {
        std::vector<int64_t> start = attrs;
        start[k] -= split;
        return make(Op::Slice, x.b(), kNoNode, 0, 0, shape, start);
      }
    }
    if (x.op == op) { // a slice of a slice is one slice, a pad of a pad one pad: the starts add
      std::vector<int64_t> start = attrs;
      for (size_t k = 0; k < start.size(); ++k) start[k] += x.attrs[k];
      return make(op, x.a(), kNoNode, 0, 0, shape, start);
    }
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
  case Op::Transpose: {
    if (x.op == Op::Transpose) return x.a();                           // (xᵀ)ᵀ -> x
    double c;
    if (x.op == Op::Broadcast && g_.constValue(a, c))                  // (c everywhere)ᵀ
      return make(Op::Broadcast, g_.constant(c), kNoNode, 0, -1, Shape{sa[1], sa[0]});
    if (isZero(a)) return zeros(Shape{sa[1], sa[0]});
    break;
  }
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
