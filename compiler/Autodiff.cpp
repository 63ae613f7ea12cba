// Reverse-mode differentiation: the derivative rule of every op, with its maths beside it, and
// the reverse topological walk that sums contributions over consumers.
#include "Autodiff.h"

#include <fmt/format.h>

namespace nabla {

namespace {

// Sums `g` along the last axis, keeping that axis (as a broadcast), for softmax's rules.
NodeId sumLastKeep(Graph &G, NodeId g) {
  const Shape s = G.shape(g);
  if (s.rank() == 1) return G.broadcast(G.unary(Op::Sum, g), s);
  return G.broadcast(G.make(Op::SumAxis, {g}, 0, 1), s, 1);
}

} // namespace

NodeId vectorJacobianProduct(Graph &G, NodeId id, int k, NodeId g) {
  const Node n = G.node(id); // a copy: building nodes may grow the node vector
  if (k < 0 || k >= n.nin) return kNoNode; // leaves (and bad operand indices) have no rule
  const NodeId x = n.a(), y = id;
  const Shape sa = G.shape(n.a());
  const Shape sb = n.nin > 1 ? G.shape(n.b()) : Shape{};
  auto c = [&](double v) { return G.constant(v); };
  auto mul = [&](NodeId p, NodeId q) { return G.binary(Op::Mul, p, q); };
  auto sub = [&](NodeId p, NodeId q) { return G.binary(Op::Sub, p, q); };
  auto div = [&](NodeId p, NodeId q) { return G.binary(Op::Div, p, q); };
  auto neg = [&](NodeId p) { return G.unary(Op::Neg, p); };
  auto matmul = [&](NodeId p, NodeId q) { return G.binary(Op::MatMul, p, q); };
  auto tr = [&](NodeId p) { return G.unary(Op::Transpose, p); };
  switch (n.op) {
  case Op::Input:
  case Op::Target:
  case Op::Param:
  case Op::Const: return kNoNode; // leaves have no operands
  // d/dx -x = -1
  case Op::Neg: return neg(g);
  // d/dx logistic(x) = y (1 - y)
  case Op::Logistic: return mul(mul(g, y), sub(c(1), y));
  // d/dx tanh(x) = 1 - y^2
  case Op::Tanh: return mul(g, sub(c(1), G.make(Op::Pow, {y}, 2.0)));
  // d/dx relu(x) = step(x), with relu'(0) = 0
  case Op::Relu: return mul(g, G.unary(Op::Step, x));
  // d/dx softplus(x) = logistic(x)
  case Op::Softplus: return mul(g, G.unary(Op::Logistic, x));
  // d/dx exp(x) = exp(x) = y
  case Op::Exp: return mul(g, y);
  // d/dx log(x) = 1 / x
  case Op::Log: return div(g, x);
  // d/dx sqrt(x) = 1 / (2 sqrt(x)) = 1 / (2 y)
  case Op::Sqrt: return div(g, mul(c(2), y));
  // d/dx |x| = sign(x), with abs'(0) = 0
  case Op::Abs: return mul(g, G.unary(Op::Sign, x));
  // step and sign are flat wherever they are differentiable
  case Op::Step:
  case Op::Sign: return G.zeros(sa);
  // d/dx x^c = c x^(c-1)
  case Op::Pow: return mul(g, mul(c(n.fattr), G.make(Op::Pow, {x}, n.fattr - 1)));
  // d/da (a + b) = 1, d/db (a + b) = 1; broadcasting is undone by summing
  case Op::Add: return G.sumTo(g, k == 0 ? sa : sb);
  // d/da (a - b) = 1, d/db (a - b) = -1
  case Op::Sub: return k == 0 ? G.sumTo(g, sa) : G.sumTo(neg(g), sb);
  // d/da (a b) = b, d/db (a b) = a
  case Op::Mul: return k == 0 ? G.sumTo(mul(g, n.b()), sa) : G.sumTo(mul(g, n.a()), sb);
  // d/da (a / b) = 1 / b, d/db (a / b) = -a / b^2, computed as -(a / b) / b: b^2 alone would
  // underflow (0 / tiny gave 0 / 0 = NaN) or overflow where the derivative is representable
  case Op::Div:
    return k == 0 ? G.sumTo(div(g, n.b()), sa) : G.sumTo(neg(div(mul(g, y), n.b())), sb);
  // d/dx_i sum(x) = 1: the scalar adjoint spreads over x
  case Op::Sum: return G.broadcast(g, sa);
  // sum along an axis: the adjoint spreads along that axis
  case Op::SumAxis: return G.broadcast(g, sa, n.iattr);
  // a broadcast's adjoint sums back over the stretched dimensions
  case Op::Broadcast:
    return n.iattr < 0 ? G.sumTo(g, sa) : G.make(Op::SumAxis, {g}, 0, n.iattr);
  case Op::SumTo: return G.broadcast(g, sa);
  // y = softmax(x): dx = y * (g - sum(g * y)) along the last axis
  case Op::Softmax: return mul(y, sub(g, sumLastKeep(G, mul(g, y))));
  // y = log_softmax(x): dx = g - softmax(x) * sum(g) along the last axis
  case Op::LogSoftmax: return sub(g, mul(G.unary(Op::Softmax, x), sumLastKeep(G, g)));
  case Op::MatMul: {
    NodeId a = n.a(), b = n.b();
    if (sa.rank() == 2 && sb.rank() == 2) // C = A B: dA = G Bᵀ, dB = Aᵀ G
      return k == 0 ? matmul(g, tr(b)) : matmul(tr(a), g);
    if (sa.rank() == 2) // c = A b: dA = g ⊗ b, db = Aᵀ g
      return k == 0 ? G.binary(Op::Outer, g, b) : matmul(tr(a), g);
    if (sb.rank() == 2) // c = a B: da = B g, dB = a ⊗ g
      return k == 0 ? matmul(b, g) : G.binary(Op::Outer, a, g);
    return k == 0 ? mul(g, b) : mul(g, a); // s = a · b: da = g b, db = g a
  }
  // C = a ⊗ b: da = C_adj b, db = aᵀ C_adj
  case Op::Outer: return k == 0 ? matmul(g, n.b()) : matmul(n.a(), g);
  // C = Aᵀ: dA = Gᵀ
  case Op::Transpose: return tr(g);
  }
  return kNoNode;
}

Expected<Gradient> differentiate(Graph &G, NodeId loss) {
  if (!G.shape(loss).isScalar()) throw InternalError("differentiate: the loss must be a scalar");
  const size_t n = static_cast<size_t>(loss) + 1;
  // Which nodes depend on a param: only those receive gradients.
  std::vector<char> active(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const Node &nd = G.node(static_cast<NodeId>(i));
    active[i] = nd.op == Op::Param;
    for (int k = 0; k < nd.nin; ++k) active[i] |= active[static_cast<size_t>(nd.in[static_cast<size_t>(k)])];
  }
  Gradient grad;
  grad.loss = loss;
  grad.contributions.resize(n);
  grad.adjoint.assign(n, kNoNode);
  grad.adjoint[static_cast<size_t>(loss)] = G.constant(1); // dE/dE = 1
  for (size_t i = n; i-- > 0;) {
    NodeId id = static_cast<NodeId>(i);
    if (!active[i]) continue;
    auto &contribs = grad.contributions[i];
    if (id != loss) {
      if (contribs.empty()) continue; // not on a path to the loss
      // adjoint = Σ over consumers of their contributions
      NodeId sum = contribs[0].term;
      for (size_t c = 1; c < contribs.size(); ++c) sum = G.binary(Op::Add, sum, contribs[c].term);
      grad.adjoint[i] = sum;
    }
    const Node nd = G.node(id);
    for (int k = 0; k < nd.nin; ++k) {
      NodeId operand = nd.in[static_cast<size_t>(k)];
      if (!active[static_cast<size_t>(operand)]) continue;
      NodeId term = vectorJacobianProduct(G, id, k, grad.adjoint[i]);
      if (term == kNoNode)
        return Error{fmt::format("internal error: op '{}' has no derivative rule", opSpelling(nd.op))};
      grad.contributions[static_cast<size_t>(operand)].push_back({id, term});
    }
  }
  return grad;
}

} // namespace nabla
