// Reverse-mode differentiation: the derivative rule of every op, with its maths beside it, and
// the reverse topological walk that sums contributions over consumers.
#include "Autodiff.h"

#include <fmt/format.h>

#include <numbers>

namespace nabla {

namespace {

// Sums `g` along the last axis, keeping that axis (as a broadcast), for softmax's rules.
NodeId sumLastKeep(Graph &G, NodeId g) {
  const Shape s = G.shape(g);
  if (s.rank() == 1) return G.broadcast(G.unary(Op::Sum, g), s);
  const int64_t last = s.rank() - 1;
  return G.broadcast(G.make(Op::SumAxis, {g}, 0, last), s, last);
}

// Whether a pool's windows overlap (stride < k): MaxPool2dGrad's adjoint for g is then not a
// graph of the op table (see its rule).
constexpr double kInvSqrt2 = 0.70710678118654752440;                    // 1 / sqrt 2
constexpr double kInvSqrt2Pi = std::numbers::inv_sqrtpi * kInvSqrt2;      // 1 / sqrt(2 pi)
constexpr double kTwoInvSqrtPi = 2 * std::numbers::inv_sqrtpi;            // 2 / sqrt(pi)

bool poolWindowsOverlap(const Node &n) { return n.attrs.size() == 2 && n.attrs[1] < n.attrs[0]; }

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
  // gelu(x) = x Phi(x): gelu'(x) = Phi(x) + x phi(x), with Phi(x) = (1 + erf(x / sqrt 2)) / 2 and
  // phi(x) = exp(-x^2 / 2) / sqrt(2 pi) the normal density; gelu'(0) = 1/2
  case Op::Gelu: {
    NodeId Phi = mul(c(0.5), G.binary(Op::Add, c(1), G.unary(Op::Erf, mul(c(kInvSqrt2), x))));
    NodeId phi = mul(c(kInvSqrt2Pi), G.unary(Op::Exp, mul(c(-0.5), G.make(Op::Pow, {x}, 2.0))));
    return mul(g, G.binary(Op::Add, Phi, mul(x, phi)));
  }
  // elu'(x) = 1 for x > 0, exp(x) otherwise (= y + 1, but y + 1 loses exp(x)'s digits once y is
  // near -1, and step(x) + (1 - step(x)) exp(x) is 0 * inf = NaN for large x): exp(min(x, 0)),
  // which is both at once; elu'(0) = 1
  case Op::Elu: return mul(g, G.unary(Op::Exp, G.binary(Op::Minimum, x, c(0))));
  // erf'(x) = 2 / sqrt(pi) exp(-x^2)
  case Op::Erf: return mul(g, mul(c(kTwoInvSqrtPi), G.unary(Op::Exp, neg(G.make(Op::Pow, {x}, 2.0)))));
  // sin' = cos, cos' = -sin
  case Op::Sin: return mul(g, G.unary(Op::Cos, x));
  case Op::Cos: return neg(mul(g, G.unary(Op::Sin, x)));
  // leaky_relu'(x) = 1 for x > 0, slope otherwise: slope + (1 - slope) step(x), = slope at 0
  case Op::LeakyRelu:
    return mul(g, G.binary(Op::Add, c(n.fattr), mul(c(1 - n.fattr), G.unary(Op::Step, x))));
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
  // y = maximum(a, b) = a where a >= b (ties to a), else b:
  //   d/da = sumTo(g ge(a, b)), d/db = sumTo(g (1 - ge(a, b)))
  case Op::Maximum: {
    NodeId m = G.binary(Op::GreaterEq, n.a(), n.b());
    return k == 0 ? G.sumTo(mul(g, m), sa) : G.sumTo(mul(g, sub(c(1), m)), sb);
  }
  // y = minimum(a, b) = a where a <= b, i.e. where b >= a (ties to a), else b:
  //   d/da = sumTo(g ge(b, a)), d/db = sumTo(g (1 - ge(b, a)))
  case Op::Minimum: {
    NodeId m = G.binary(Op::GreaterEq, n.b(), n.a());
    return k == 0 ? G.sumTo(mul(g, m), sa) : G.sumTo(mul(g, sub(c(1), m)), sb);
  }
  // ge is piecewise constant: flat wherever it is differentiable
  case Op::GreaterEq: return G.zeros(k == 0 ? sa : sb);
  // d/dx_i sum(x) = 1: the scalar adjoint spreads over x
  case Op::Sum: return G.broadcast(g, sa);
  // sum along an axis: the adjoint spreads along that axis
  case Op::SumAxis: return G.broadcast(g, sa, n.iattr);
  // a broadcast's adjoint sums back over the stretched dimensions
  case Op::Broadcast:
    return n.iattr < 0 ? G.sumTo(g, sa) : G.make(Op::SumAxis, {g}, 0, n.iattr);
  case Op::SumTo: return G.broadcast(g, sa);
  // y = max(x) (or along axis k): dy/dx_i = 1 at the first extreme element (of each slice), 0
  // elsewhere: dx = extreme_mask(x) * g spread back over x (along the axis)
  case Op::Max:
  case Op::Min: {
    NodeId mask = G.make(Op::ExtremeMask, {x}, n.op == Op::Max ? 1.0 : -1.0, n.iattr);
    return mul(mask, n.iattr < 0 ? G.broadcast(g, sa) : G.broadcast(g, sa, n.iattr));
  }
  // the mask is piecewise constant: flat
  case Op::ExtremeMask: return G.zeros(sa);
  // y = x[start : start + shape]: dx is g placed at `start` in zeros of x's shape (Slice's
  // adjoint is Pad, and Pad's is Slice)
  case Op::Slice: return G.pad(g, n.attrs, sa);
  case Op::Pad: return G.slice(g, n.attrs, sa);
  // the same elements in the same order: dx = g read back in x's shape
  case Op::Reshape: return G.reshape(g, sa);
  // y = concat(a, b) along axis k: da and db are the two parts of g along that axis
  case Op::Concat: {
    std::vector<int64_t> start(static_cast<size_t>(sa.rank()), 0);
    if (k == 1) start[static_cast<size_t>(n.iattr)] = sa[static_cast<int>(n.iattr)];
    return G.slice(g, std::move(start), k == 0 ? sa : sb);
  }
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
  // y = conv2d(x, K), y[f,o] = Σ_c,i K[f,c,i] x[c, o s + i - p] (o and i stand for the two spatial
  // indices): y is linear in x and in K, and
  //   dx = conv2d_input_grad(g, K): the transposed convolution, dx[c,h] = Σ_f,o,i g[f,o] K[f,c,i]
  //        over h = o s + i - p
  //   dK = conv2d_kernel_grad(x, g): the correlation dK[f,c,i] = Σ_o g[f,o] x[c, o s + i - p]
  case Op::Conv2d:
    return k == 0 ? G.make(Op::Conv2dInputGrad, {g, n.b()}, 0, 0, sa, n.attrs)
                  : G.make(Op::Conv2dKernelGrad, {x, g}, 0, 0, sb, n.attrs);
  // z = conv2d_input_grad(u, K), with adjoint h of z's (an image's) shape. By definition it is
  // the transpose of x -> conv2d(x, K): <z, h> = <u, conv2d(h, K)>, and the right side read as a
  // function of K is <conv2d_kernel_grad(h, u), K>. Hence du = conv2d(h, K) and
  // dK = conv2d_kernel_grad(h, u).
  case Op::Conv2dInputGrad:
    return k == 0 ? G.make(Op::Conv2d, {g, n.b()}, 0, 0, {}, n.attrs)
                  : G.make(Op::Conv2dKernelGrad, {g, n.a()}, 0, 0, sb, n.attrs);
  // Z = conv2d_kernel_grad(x, u), with adjoint H of a kernel's shape: <Z, H> = <u, conv2d(x, H)>
  // (the definition of the correlation), = <x, conv2d_input_grad(u, H)>. Hence
  // dx = conv2d_input_grad(u, H) and du = conv2d(x, H).
  case Op::Conv2dKernelGrad:
    return k == 0 ? G.make(Op::Conv2dInputGrad, {n.b(), g}, 0, 0, sa, n.attrs)
                  : G.make(Op::Conv2d, {n.a(), g}, 0, 0, {}, n.attrs);
  // y = maxpool2d(x): each y is its window's first maximum, so dx = g routed to those maxima
  case Op::MaxPool2d: return G.make(Op::MaxPool2dGrad, {x, g}, 0, 0, {}, n.attrs);
  // z = maxpool2d_grad(x, u): piecewise constant in x (the argmax moves only by jumps), so dx = 0;
  // linear in u, z[m(o)] += u[o] with m(o) the first maximum of window o, so du[o] = h[m(o)], a
  // gather. Without overlaps (stride >= k) each pixel is in at most one window and
  // M = maxpool2d_grad(x, 1) is 1 exactly at each window's chosen maximum, so
  // du[o] = Σ_window h M = k² avgpool2d(h M). With overlapping windows a window would also pick up
  // other windows' maxima and the gather is not a graph of the op table: no rule (kNoNode), and
  // differentiate reports that a second derivative through overlapping max pools is not supported.
  case Op::MaxPool2dGrad: {
    if (k == 0) return G.zeros(sa);
    if (poolWindowsOverlap(n)) return kNoNode;
    const double area = double(n.attrs[0] * n.attrs[0]);
    NodeId M = G.make(Op::MaxPool2dGrad, {x, G.broadcast(c(1), sb)}, 0, 0, {}, n.attrs);
    return mul(c(area), G.make(Op::AvgPool2d, {mul(g, M)}, 0, 0, {}, n.attrs));
  }
  // y = avgpool2d(x): dx = g / k² spread over each window
  case Op::AvgPool2d: return G.make(Op::AvgPool2dGrad, {g}, 0, 0, sa, n.attrs);
  // z = avgpool2d_grad(u): <z, h> = Σ_o u[o] / k² Σ_window h = <u, avgpool2d(h)>, so du = avgpool2d(h)
  case Op::AvgPool2dGrad: return G.make(Op::AvgPool2d, {g}, 0, 0, {}, n.attrs);
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
      if (term == kNoNode) {
        if (nd.op == Op::MaxPool2dGrad && poolWindowsOverlap(nd))
          return Error{"internal error: the second derivative through a max pool with overlapping "
                       "windows (stride < k) is not supported: its adjoint is a gather that the op "
                       "table cannot express"};
        return Error{fmt::format("internal error: op '{}' has no derivative rule", opSpelling(nd.op))};
      }
      grad.contributions[static_cast<size_t>(operand)].push_back({id, term});
    }
  }
  return grad;
}

} // namespace nabla
