// Tests of the ops of the grown-up language and of images on hand-built graphs (the front end is
// not needed), in f64 on the interpreter:
//   - hand-derived values: gelu'(0) = 1/2, elu(-1) = e^-1 - 1, leaky_relu'(0) = slope, ties of
//     maximum/minimum/max/min and of max pooling go to the first, conv2d and pooling by hand;
//   - the adjoint identities that define the *Grad ops: <conv2d(x, K), u> = <x, conv_transpose(u, K)>
//     = <K, correlate(x, u)>, <avgpool(x), u> = <x, avgunpool(u)>, <maxpool'(x) h, u> = <h, maxunpool(u)>;
//   - second order: the gradient of a gradient through every new op against finite differences,
//     which exercises the rules of the *Grad ops, GreaterEq and ExtremeMask;
//   - the printed notation of EVERY op of Ops.def, Unicode and --ascii (a new op fails here until
//     it has one);
//   - the simplifier's rules for the new ops, and constant folding through Kernels.h.
// Every op's first derivative against finite differences on ranks 0 to 4 is in test_autodiff.cpp.
#include "OpBench.h"

#include "GradPrinter.h"
#include "Pipeline.h"

#include <functional>
#include <map>
#include <numeric>

using namespace nabla;
using namespace nabla::testing;

namespace {

double dotProduct(const std::vector<double> &a, const std::vector<double> &b) {
  REQUIRE(a.size() == b.size());
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// The gradient of sum(R * op(...)) with respect to the param `x`, raw, evaluated.
std::vector<double> gradientOf(Bench &b, NodeId value, NodeId x, const std::vector<double> &R) {
  NodeId Rn = b.leaf(Op::Input, b.g().shape(value), R);
  NodeId loss = b.g().unary(Op::Sum, b.g().binary(Op::Mul, value, Rn));
  Expected<Gradient> grad = differentiate(b.g(), loss);
  REQUIRE(grad);
  NodeId adj = grad->adjoint[static_cast<size_t>(x)];
  REQUIRE(adj != kNoNode);
  Simplifier S(b.g());
  auto v = b.eval({adj, S.simplify(adj)}, b.params);
  CHECK(relError(v[1], v[0], 1e-300) <= 1e-15);
  return v[0];
}

std::vector<double> iota(int64_t n, double from = 0) {
  std::vector<double> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), from);
  return v;
}

} // namespace

TEST_CASE("ops: hand-derived values of the new elementwise functions and their derivatives", "[ops]") {
  Bench b;
  Graph &g = b.g();
  NodeId x = b.param(Shape{5}, {0.0, 1.0, -1.0, 2.0, -3.0});
  const double e1 = std::exp(-1.0), Phi1 = 0.5 * (1 + std::erf(1 / std::sqrt(2.0)));
  const double phi1 = std::exp(-0.5) / std::sqrt(2 * M_PI);
  const std::vector<double> ones(5, 1.0);
  SECTION("gelu: gelu(0) = 0, gelu'(0) = 1/2, gelu'(1) = Phi(1) + phi(1)") {
    NodeId y = g.unary(Op::Gelu, x);
    auto v = b.eval(y);
    CHECK(v[0] == 0);
    CHECK(v[1] == Approx(Phi1).epsilon(1e-15));
    CHECK(v[2] == Approx(-(1 - Phi1)).epsilon(1e-15));
    auto d = gradientOf(b, y, x, ones);
    CHECK(d[0] == Approx(0.5).epsilon(1e-15));
    CHECK(d[1] == Approx(Phi1 + phi1).epsilon(1e-15));
    CHECK(d[2] == Approx((1 - Phi1) - phi1).epsilon(1e-15));
  }
  SECTION("elu: elu(-1) = e^-1 - 1, elu'(-1) = e^-1, elu'(0) = 1 (both sides agree), elu'(2) = 1") {
    NodeId y = g.unary(Op::Elu, x);
    auto v = b.eval(y);
    CHECK(v == std::vector<double>{0, 1, std::expm1(-1.0), 2, std::expm1(-3.0)});
    CHECK(v[2] == Approx(e1 - 1).epsilon(1e-15));
    auto d = gradientOf(b, y, x, ones);
    const std::vector<double> want{1, 1, std::expm1(-1.0) + 1, 1, std::expm1(-3.0) + 1};
    for (size_t i = 0; i < 5; ++i) CHECK(d[i] == Approx(want[i]).epsilon(1e-15));
  }
  SECTION("erf' = 2/sqrt(pi) exp(-x^2); sin' = cos; cos' = -sin") {
    auto d = gradientOf(b, g.unary(Op::Erf, x), x, ones);
    CHECK(d[0] == Approx(2 / std::sqrt(M_PI)).epsilon(1e-15));
    CHECK(d[3] == Approx(2 / std::sqrt(M_PI) * std::exp(-4.0)).epsilon(1e-14));
    auto ds = gradientOf(b, g.unary(Op::Sin, x), x, ones);
    auto dc = gradientOf(b, g.unary(Op::Cos, x), x, ones);
    for (size_t i = 0; i < 5; ++i) {
      CHECK(ds[i] == Approx(std::cos(b.params[i])).epsilon(1e-15));
      CHECK(dc[i] == Approx(-std::sin(b.params[i])).epsilon(1e-15).margin(1e-300));
    }
  }
  SECTION("leaky_relu: slope 0.2: leaky_relu(-3) = -0.6, the derivative at 0 is the slope") {
    NodeId y = g.make(Op::LeakyRelu, {x}, 0.2);
    auto v = b.eval(y);
    CHECK(v[4] == Approx(-0.6).epsilon(1e-15));
    CHECK(v[0] == 0);
    auto d = gradientOf(b, y, x, ones);
  const std::vector<double> want{0.2, 1, 0.2, 1, 0.2};
  for (size_t i = 0; i < 5; ++i) CHECK(d[i] == Approx(want[i]).epsilon(1e-15));
  }
}

TEST_CASE("ops: ties: maximum/minimum give the gradient to a; max/min to the first extreme", "[ops]") {
  Bench b;
  Graph &g = b.g();
  NodeId a = b.param(Shape{4}, {1.0, 2.0, 3.0, -1.0});
  NodeId c = b.param(Shape{4}, {1.0, 5.0, 3.0, -2.0}); // ties at 0 and 2
  const std::vector<double> R = {3, 5, 7, 11};
  CHECK(b.eval(g.binary(Op::Maximum, a, c)) == std::vector<double>{1, 5, 3, -1});
  CHECK(b.eval(g.binary(Op::Minimum, a, c)) == std::vector<double>{1, 2, 3, -2});
  CHECK(b.eval(g.binary(Op::GreaterEq, a, c)) == std::vector<double>{1, 0, 1, 1});
  CHECK(gradientOf(b, g.binary(Op::Maximum, a, c), a, R) == std::vector<double>{3, 0, 7, 11});
  CHECK(gradientOf(b, g.binary(Op::Maximum, a, c), c, R) == std::vector<double>{0, 5, 0, 0});
  CHECK(gradientOf(b, g.binary(Op::Minimum, a, c), a, R) == std::vector<double>{3, 5, 7, 0});
  CHECK(gradientOf(b, g.binary(Op::Minimum, a, c), c, R) == std::vector<double>{0, 0, 0, 11});
  // NaN propagates through maximum and minimum, as in PyTorch
  NodeId n = b.param(Shape{2}, {NAN, 1.0});
  NodeId m = b.param(Shape{2}, {1.0, NAN});
  for (Op op : {Op::Maximum, Op::Minimum}) {
    auto v = b.eval(g.binary(op, n, m));
    CHECK(std::isnan(v[0]));
    CHECK(std::isnan(v[1]));
  }

  // max/min over all elements and along an axis: the first extreme in row-major order
  NodeId X = b.param(Shape{2, 3}, {1.0, 3.0, 3.0, 2.0, 2.0, 0.0});
  CHECK(b.eval(g.make(Op::Max, {X}, 0, -1)) == std::vector<double>{3});
  CHECK(b.eval(g.make(Op::Min, {X}, 0, 1)) == std::vector<double>{1, 0});
  CHECK(b.eval(g.make(Op::Max, {X}, 0, 0)) == std::vector<double>{2, 3, 3});
  CHECK(b.eval(g.make(Op::ExtremeMask, {X}, 1.0, -1)) == std::vector<double>{0, 1, 0, 0, 0, 0});
  CHECK(b.eval(g.make(Op::ExtremeMask, {X}, 1.0, 1)) == std::vector<double>{0, 1, 0, 1, 0, 0});
  CHECK(b.eval(g.make(Op::ExtremeMask, {X}, -1.0, 0)) == std::vector<double>{1, 0, 0, 0, 1, 1});
  CHECK(gradientOf(b, g.make(Op::Max, {X}, 0, -1), X, {2}) == std::vector<double>{0, 2, 0, 0, 0, 0});
  CHECK(gradientOf(b, g.make(Op::Max, {X}, 0, 1), X, {2, 5}) == std::vector<double>{0, 2, 0, 5, 0, 0});
  CHECK(gradientOf(b, g.make(Op::Min, {X}, 0, 0), X, {2, 5, 7}) == std::vector<double>{2, 0, 0, 0, 5, 7});
  // rank 3 along the middle axis
  NodeId T = b.param(Shape{2, 2, 2}, {1.0, 9.0, 4.0, 9.0, 5.0, 6.0, 5.0, 7.0});
  CHECK(b.eval(g.make(Op::Max, {T}, 0, 1)) == std::vector<double>{4, 9, 5, 7});
  CHECK(gradientOf(b, g.make(Op::Max, {T}, 0, 1), T, {1, 2, 3, 4}) ==
        std::vector<double>{0, 2, 1, 0, 3, 0, 0, 4});
}

TEST_CASE("ops: slices, pads, reshapes and concatenations by hand", "[ops]") {
  Bench b;
  Graph &g = b.g();
  NodeId X = b.param(Shape{2, 3, 2}, iota(12));
  // X[1:2, 1:3, 1:2] = [[[3 + 6], [5 + 6]]]
  NodeId s = g.slice(X, {1, 1, 1}, Shape{1, 2, 1});
  CHECK(b.eval(s) == std::vector<double>{9, 11});
  CHECK(gradientOf(b, s, X, {3, 5}) == std::vector<double>{0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 5});
  NodeId v = b.param(Shape{2}, {7.0, 8.0});
  NodeId p = g.pad(v, {1}, Shape{4});
  CHECK(b.eval(p) == std::vector<double>{0, 7, 8, 0});
  CHECK(gradientOf(b, p, v, {1, 2, 3, 4}) == std::vector<double>{2, 3});
  NodeId r = g.reshape(X, Shape{3, 4});
  CHECK(b.eval(r) == iota(12));
  CHECK(gradientOf(b, r, X, iota(12, 1)) == iota(12, 1));
  NodeId A = b.param(Shape{2, 1}, {1.0, 2.0});
  NodeId B = b.param(Shape{2, 2}, {3.0, 4.0, 5.0, 6.0});
  NodeId c = g.make(Op::Concat, {A, B}, 0, 1);
  CHECK(g.shape(c) == Shape{2, 3});
  CHECK(b.eval(c) == std::vector<double>{1, 3, 4, 2, 5, 6});
  CHECK(gradientOf(b, c, A, iota(6, 1)) == std::vector<double>{1, 4});
  CHECK(gradientOf(b, c, B, iota(6, 1)) == std::vector<double>{2, 3, 5, 6});
  // rank 4: SumAxis and an axis broadcast by hand
  NodeId Q = b.param(Shape{2, 1, 3, 2}, iota(12));
  CHECK(b.eval(g.make(Op::SumAxis, {Q}, 0, 2)) == std::vector<double>{6, 9, 24, 27});
  CHECK(b.eval(g.make(Op::SumAxis, {Q}, 0, 0)) == std::vector<double>{6, 8, 10, 12, 14, 16});
  NodeId V = b.param(Shape{2, 2}, {1.0, 2.0, 3.0, 4.0});
  CHECK(b.eval(g.broadcast(V, Shape{2, 2, 2}, 1)) == std::vector<double>{1, 2, 1, 2, 3, 4, 3, 4});
  CHECK(b.eval(g.broadcast(V, Shape{2, 2, 2}, 2)) == std::vector<double>{1, 1, 2, 2, 3, 3, 4, 4});
  CHECK(b.eval(g.broadcast(V, Shape{3, 2, 2}, 0)) == std::vector<double>{1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4});
  // softmax along the last axis of a rank-3 value: each row of 2 on its own
  auto sm = b.eval(g.unary(Op::Softmax, X));
  for (size_t i = 0; i < 12; i += 2) {
    CHECK(sm[i] == Approx(1 / (1 + std::exp(1.0))).epsilon(1e-15));
    CHECK(sm[i] + sm[i + 1] == Approx(1).epsilon(1e-15));
  }
}

TEST_CASE("ops: conv2d and pooling by hand; a max pool tie goes to the first", "[ops]") {
  Bench b;
  Graph &g = b.g();
  // x: one channel 3 x 3 = 1..9; K: one 2 x 2 filter [[1, 0], [0, -1]]: y = x[i,j] - x[i+1,j+1]
  NodeId x = b.param(Shape{1, 3, 3}, iota(9, 1));
  NodeId K = b.param(Shape{1, 1, 2, 2}, {1.0, 0.0, 0.0, -1.0});
  NodeId y = g.make(Op::Conv2d, {x, K}, 0, 0, {}, {1, 0});
  CHECK(g.shape(y) == Shape{1, 2, 2});
  CHECK(b.eval(y) == std::vector<double>{-4, -4, -4, -4});
  // padding 1, stride 2: output 2 x 2 at rows/cols -1 and 1 of x: y[0,0] = 0 - x[0,0] = -1,
  // y[0,1] = 0 - x[0,2] = -3, y[1,0] = 0 - x[2,0] = -7, y[1,1] = x[1,1] - x[2,2] = 5 - 9
  NodeId y2 = g.make(Op::Conv2d, {x, K}, 0, 0, {}, {2, 1});
  CHECK(b.eval(y2) == std::vector<double>{-1, -3, -7, -4});
  // dK[0,0,i,j] = Σ_o g x[o + (i,j)] with g = 1: sums of the 2 x 2 corners of x
  CHECK(gradientOf(b, y, K, {1, 1, 1, 1}) == std::vector<double>{12, 16, 24, 28});
  // dx = transposed convolution: x[0,0] is only in y[0,0] (weight 1), x[2,2] only in y[1,1] (-1)
  CHECK(gradientOf(b, y, x, {1, 1, 1, 1}) == std::vector<double>{1, 1, 0, 1, 0, -1, 0, -1, -1});
  // two channels, two filters: y[f] = Σ_c K[f,c] * x[c] with 1 x 1 kernels
  NodeId x2 = b.param(Shape{2, 1, 2}, {1.0, 2.0, 10.0, 20.0});
  NodeId K2 = b.param(Shape{2, 2, 1, 1}, {1.0, 1.0, 2.0, -1.0});
  CHECK(b.eval(g.make(Op::Conv2d, {x2, K2}, 0, 0, {}, {1, 0})) == std::vector<double>{11, 22, -8, -16});

  // pooling: a 4 x 4 image with ties inside the windows
  NodeId im = b.param(Shape{1, 4, 4}, {5.0, 5.0, 1.0, 2.0, //
                                       5.0, 1.0, 2.0, 2.0, //
                                       0.0, 0.0, 3.0, 4.0, //
                                       0.0, 0.0, 4.0, 4.0});
  NodeId mp = g.make(Op::MaxPool2d, {im}, 0, 0, {}, {2, 2});
  CHECK(b.eval(mp) == std::vector<double>{5, 2, 0, 4});
  CHECK(gradientOf(b, mp, im, {1, 2, 3, 4}) ==
        std::vector<double>{1, 0, 0, 2, 0, 0, 0, 0, 3, 0, 0, 4, 0, 0, 0, 0});
  NodeId ap = g.make(Op::AvgPool2d, {im}, 0, 0, {}, {2, 2});
  CHECK(b.eval(ap) == std::vector<double>{4, 1.75, 0, 3.75});
  CHECK(gradientOf(b, ap, im, {4, 8, 12, 16}) ==
        std::vector<double>{1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4});
  // overlapping windows (k 3, stride 1): each window's first maximum
  NodeId mo = g.make(Op::MaxPool2d, {im}, 0, 0, {}, {3, 1});
  CHECK(b.eval(mo) == std::vector<double>{5, 5, 5, 4});
  CHECK(gradientOf(b, mo, im, {1, 2, 3, 4}) ==
        std::vector<double>{1, 2, 0, 0, 3, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0});
  // ... and where two overlapping windows share their maximum, both gradients add there
  NodeId one = b.param(Shape{1, 2, 3}, {1.0, 9.0, 1.0, 1.0, 1.0, 1.0});
  NodeId shared = g.make(Op::MaxPool2d, {one}, 0, 0, {}, {2, 1});
  CHECK(b.eval(shared) == std::vector<double>{9, 9});
  CHECK(gradientOf(b, shared, one, {2, 5}) == std::vector<double>{0, 7, 0, 0, 0, 0});
}

TEST_CASE("ops: the *Grad ops are the adjoints of conv2d and pooling", "[ops]") {
  // <conv2d(x, K), u> = <x, conv2d_input_grad(u, K)> = <K, conv2d_kernel_grad(x, u)>: the
  // definitions of the transposed convolution and of the correlation, for strides, paddings,
  // kh != kw and sizes that the windows do not divide.
  struct C {
    int64_t C, H, W, F, kh, kw, s, p;
  };
  for (C c : {C{2, 5, 6, 3, 3, 2, 1, 0}, C{2, 6, 5, 3, 3, 2, 2, 1}, C{3, 7, 7, 2, 2, 3, 3, 2},
              C{1, 5, 4, 2, 5, 4, 1, 0}, C{2, 8, 9, 2, 3, 3, 2, 2}}) {
    INFO(fmt::format("C {} H {} W {} F {} kh {} kw {} stride {} padding {}", c.C, c.H, c.W, c.F, c.kh,
                     c.kw, c.s, c.p));
    Bench b(c.H * 100 + c.W);
    Graph &g = b.g();
    const Shape xs{c.C, c.H, c.W}, Ks{c.F, c.C, c.kh, c.kw};
    const std::vector<int64_t> attrs{c.s, c.p};
    NodeId x = b.param(xs, 0.1, 1, true), K = b.param(Ks, 0.1, 1, true);
    NodeId y = g.make(Op::Conv2d, {x, K}, 0, 0, {}, attrs);
    NodeId u = b.param(g.shape(y), 0.1, 1, true);
    NodeId dx = g.make(Op::Conv2dInputGrad, {u, K}, 0, 0, xs, attrs);
    NodeId dK = g.make(Op::Conv2dKernelGrad, {x, u}, 0, 0, Ks, attrs);
    auto v = b.eval({y, u, x, dx, K, dK}, b.params);
    const double lhs = dotProduct(v[0], v[1]);
    CHECK(dotProduct(v[2], v[3]) == Approx(lhs).epsilon(1e-13));
    CHECK(dotProduct(v[4], v[5]) == Approx(lhs).epsilon(1e-13));
  }
  // <avgpool(x), u> = <x, avgpool2d_grad(u)>
  for (auto [k, s] : std::vector<std::pair<int64_t, int64_t>>{{2, 2}, {3, 2}, {2, 3}, {3, 1}}) {
    Bench b(k * 10 + s);
    Graph &g = b.g();
    const Shape xs{2, 7, 8};
    NodeId x = b.param(xs, 0.1, 1, true);
    NodeId y = g.make(Op::AvgPool2d, {x}, 0, 0, {}, {k, s});
    NodeId u = b.param(g.shape(y), 0.1, 1, true);
    NodeId dx = g.make(Op::AvgPool2dGrad, {u}, 0, 0, xs, {k, s});
    auto v = b.eval({y, u, x, dx}, b.params);
    CHECK(dotProduct(v[2], v[3]) == Approx(dotProduct(v[0], v[1])).epsilon(1e-13));
  }
}

TEST_CASE("ops: second order: gradients of gradients through every new op", "[ops][autodiff]") {
  // loss = sum(R * tanh(f(params))): the tanh makes the adjoint that reaches f depend on the
  // params, so the second derivative runs through the rules of f's VJPs (the *Grad ops,
  // GreaterEq, ExtremeMask, Slice/Pad) with respect to every one of their operands. The
  // first-order gradient (simplified) is weighted by random S and differentiated again; the
  // result is checked against finite differences of the first-order gradient.
  struct Case {
    std::string name;
    std::function<NodeId(Bench &)> build;
  };
  auto conv = [](int64_t s, int64_t p, Shape xs, Shape Ks) {
    return [=](Bench &b) {
      return b.g().make(Op::Conv2d, {b.param(xs, 0.1, 1, true), b.param(Ks, 0.1, 1, true)}, 0, 0, {},
                        {s, p});
    };
  };
  auto pool = [](Op op, int64_t k, int64_t s, Shape xs) {
    return [=](Bench &b) { return b.g().make(op, {b.param(xs, 0.1, 1.5, true)}, 0, 0, {}, {k, s}); };
  };
  auto unary = [](Op op, double fattr) {
    return [=](Bench &b) { return b.g().make(op, {b.param(Shape{2, 1, 3}, 0.2, 1.5, true)}, fattr); };
  };
  const std::vector<Case> cases = {
      {"gelu", unary(Op::Gelu, 0)},
      {"elu", unary(Op::Elu, 0)},
      {"erf", unary(Op::Erf, 0)},
      {"sin", unary(Op::Sin, 0)},
      {"cos", unary(Op::Cos, 0)},
      {"leaky_relu", unary(Op::LeakyRelu, 0.1)},
      {"maximum", [](Bench &b) {
         return b.g().binary(Op::Maximum, b.param(Shape{2, 3}, 0.2, 1.5, true), b.param(Shape{3}, 0.2, 1.5, true));
       }},
      {"minimum", [](Bench &b) {
         return b.g().binary(Op::Minimum, b.param(Shape{3}, 0.2, 1.5, true), b.param(Shape{2, 3}, 0.2, 1.5, true));
       }},
      {"max along 1 of rank 3", [](Bench &b) { return b.g().make(Op::Max, {b.param(Shape{2, 3, 2}, 0.2, 1.5, true)}, 0, 1); }},
      {"min of all", [](Bench &b) {
         Graph &g = b.g();
         NodeId x = b.param(Shape{2, 3}, 0.2, 1.5, true);
         return g.binary(Op::Mul, g.make(Op::Min, {x}, 0, -1), x);
       }},
      {"slice, pad, reshape, concat", [](Bench &b) {
         Graph &g = b.g();
         NodeId x = b.param(Shape{2, 3, 2}, 0.2, 1.5, true);
         NodeId s = g.slice(g.unary(Op::Tanh, x), {0, 1, 0}, Shape{2, 2, 2});
         NodeId c = g.make(Op::Concat, {s, g.binary(Op::Mul, x, x)}, 0, 1);
         NodeId r = g.reshape(c, Shape{5, 4});
         return g.pad(g.unary(Op::Sin, r), {1, 0}, Shape{6, 4});
       }},
      {"softmax of rank 3", [](Bench &b) { return b.g().unary(Op::LogSoftmax, b.param(Shape{2, 2, 3}, 0.2, 1.5, true)); }},
      {"conv2d stride 1", conv(1, 0, Shape{2, 4, 5}, Shape{3, 2, 3, 2})},
      {"conv2d stride 2 padding 1", conv(2, 1, Shape{2, 6, 5}, Shape{2, 2, 3, 2})},
      {"conv2d stride 3 padding 2, 1 x 3 kernel", conv(3, 2, Shape{1, 5, 7}, Shape{2, 1, 1, 3})},
      {"maxpool2d k 2 stride 2", pool(Op::MaxPool2d, 2, 2, Shape{2, 5, 4})},
      {"maxpool2d k 2 stride 3", pool(Op::MaxPool2d, 2, 3, Shape{2, 6, 7})},
      {"avgpool2d k 3 stride 2", pool(Op::AvgPool2d, 3, 2, Shape{2, 7, 6})},
      {"avgpool2d k 2 stride 1", pool(Op::AvgPool2d, 2, 1, Shape{1, 4, 5})},
  };
  uint64_t seed = 500;
  for (const Case &c : cases) {
    INFO("case: " << c.name);
    Bench b(++seed);
    Graph &g = b.g();
    NodeId f = c.build(b);
    NodeId loss = weightedLoss(b, g.unary(Op::Tanh, f));
    checkGradients(b, loss, 1e-8);
    Expected<Gradient> g1 = differentiate(g, loss);
    REQUIRE(g1);
    Simplifier S(g);
    NodeId l2 = kNoNode;
    for (const Decl &d : std::vector<Decl>(b.p.params)) {
      NodeId adj = S.simplify(g1->adjoint[static_cast<size_t>(d.node)]);
      NodeId term = weightedLoss(b, adj);
      l2 = l2 == kNoNode ? term : g.binary(Op::Add, l2, term);
    }
    checkGradients(b, l2, 1e-7);
  }
}

TEST_CASE("ops: a second derivative through overlapping max pools is a clear error", "[ops][autodiff]") {
  Bench b(9);
  Graph &g = b.g();
  NodeId x = b.param(Shape{1, 5, 5}, 0.1, 1.5, true);
  NodeId y = g.unary(Op::Tanh, g.make(Op::MaxPool2d, {x}, 0, 0, {}, {3, 1}));
  NodeId loss = weightedLoss(b, y);
  Expected<Gradient> g1 = differentiate(g, loss); // the first derivative is fine
  REQUIRE(g1);
  checkGradients(b, loss, 1e-8);
  NodeId l2 = weightedLoss(b, g1->adjoint[static_cast<size_t>(x)]);
  Expected<Gradient> g2 = differentiate(g, l2);
  REQUIRE(!g2);
  CHECK(g2.error().message.find("overlapping windows") != std::string::npos);
}

namespace {

// The printed form of one node of each op, Unicode and ASCII. Leaves are named x, y, A, B, K, g.
struct Printed {
  std::string unicode, ascii;
};

std::vector<std::pair<Op, Printed>> printedForms(Bench &b, std::vector<NodeId> &nodes,
                                                 std::unordered_map<NodeId, std::string> &names) {
  Graph &g = b.g();
  NodeId x = b.param(Shape{4, 3}, 0.5, 1, true), y = b.param(Shape{4, 3}, 0.5, 1, true);
  NodeId v = b.param(Shape{3}, 0.5, 1, true), w = b.param(Shape{4}, 0.5, 1, true);
  NodeId im = b.param(Shape{2, 6, 5}, 0.5, 1, true), K = b.param(Shape{3, 2, 3, 2}, 0.5, 1, true);
  NodeId in = b.input(Shape{4, 3}, 0.5, 1, true);
  NodeId tg = b.leaf(Op::Target, Shape{4, 3}, std::vector<double>(12, 0.5));
  names = {{x, "x"}, {y, "y"}, {v, "v"}, {w, "w"}, {im, "im"}, {K, "K"}, {in, "X"}, {tg, "T"}};
  const std::vector<int64_t> cv{2, 1};
  NodeId conv = g.make(Op::Conv2d, {im, K}, 0, 0, {}, cv); // [3, 3, 3]
  NodeId gy = b.param(g.shape(conv), 0.5, 1, true);
  NodeId mp = b.param(Shape{2, 2, 2}, 0.5, 1, true);
  names[gy] = "g";
  names[mp] = "u";
  std::vector<std::pair<Op, Printed>> f;
  auto add = [&](NodeId id, std::string u, std::string a = "") {
    nodes.push_back(id);
    f.push_back({g.op(id), {u, a.empty() ? u : a}});
  };
  add(in, "X");
  add(tg, "T");
  add(x, "x");
  add(g.constant(2.5), "2.5");
  // the constants of gelu's and erf's derivatives by name
  add(g.binary(Op::Mul, g.constant(0.70710678118654752440), x), "1/√2 * x", "1/sqrt(2) * x");
  add(g.binary(Op::Mul, g.constant(2 / std::sqrt(M_PI)), x), "2/√π * x", "2/sqrt(pi) * x");
  add(g.unary(Op::Neg, x), "-x");
  for (Op op : {Op::Logistic, Op::Tanh, Op::Relu, Op::Softplus, Op::Exp, Op::Log, Op::Sqrt, Op::Abs,
                Op::Step, Op::Sign, Op::Gelu, Op::Elu, Op::Erf, Op::Sin, Op::Cos})
    add(g.unary(op, x), std::string(opSpelling(op)) + "(x)");
  add(g.make(Op::Pow, {x}, 3.0), "x^3");
  add(g.make(Op::LeakyRelu, {x}, 0.01), "leaky_relu(x)");
  add(g.make(Op::LeakyRelu, {x}, 0.2), "leaky_relu(x, slope=0.2)");
  add(g.binary(Op::Add, x, y), "x + y");
  add(g.binary(Op::Sub, x, y), "x - y");
  add(g.binary(Op::Mul, x, y), "x * y");
  add(g.binary(Op::Div, x, y), "x / y");
  add(g.binary(Op::Maximum, x, v), "maximum(x, v)");
  add(g.binary(Op::Minimum, x, g.binary(Op::Add, y, x)), "minimum(x, y + x)");
  add(g.binary(Op::GreaterEq, x, g.binary(Op::Add, y, x)), "[x ≥ y + x]", "[x >= y + x]");
  add(g.unary(Op::Sum, x), "sum(x)");
  add(g.make(Op::SumAxis, {x}, 0, 1), "sum(x, 1)");
  add(g.broadcast(v, Shape{4, 3}), "v");
  add(g.make(Op::Max, {x}, 0, -1), "max(x)");
  add(g.make(Op::Min, {x}, 0, 0), "min(x, 0)");
  add(g.make(Op::ExtremeMask, {x}, 1.0, 1), "argmax_mask(x, 1)");
  add(g.make(Op::ExtremeMask, {x}, -1.0, -1), "argmin_mask(x)");
  add(g.slice(x, {1, 0}, Shape{2, 3}), "x[1:3, :]");
  add(g.slice(g.binary(Op::Add, x, y), {3, 1}, Shape{1, 2}), "(x + y)[3:4, 1:3]");
  add(g.pad(v, {2}, Shape{6}), "pad(v, [6], at=[2])");
  add(g.reshape(x, Shape{2, 6}), "reshape(x, [2, 6])");
  add(g.reshape(x, Shape{12}), "flatten(x)");
  // indexing: a slice of extent 1 and a reshape that drops that axis print as the source's x[i]
  add(g.reshape(g.slice(x, {1, 0}, Shape{1, 3}), Shape{3}), "x[1]");
  add(g.reshape(g.slice(x, {0, 2}, Shape{4, 1}), Shape{4}), "x[:, 2]");
  add(g.reshape(g.slice(x, {3, 2}, Shape{1, 1}), Shape{}), "x[3, 2]");
  add(g.reshape(g.slice(x, {1, 1}, Shape{2, 1}), Shape{2}), "x[1:3, 1]");
  add(g.reshape(g.slice(x, {1, 0}, Shape{1, 3}), Shape{1, 3}), "reshape(x[1:2, :], [1, 3])");
  add(g.make(Op::Concat, {x, y}, 0, 1), "concat(x, y, axis=1)");
  add(g.make(Op::Concat, {g.make(Op::Concat, {x, y}, 0, 0), x}, 0, 0), "concat(x, y, x, axis=0)");
  add(g.sumTo(x, Shape{3}), "sum(x, 0)");
  add(g.unary(Op::Softmax, x), "softmax(x)");
  add(g.unary(Op::LogSoftmax, x), "log_softmax(x)");
  add(g.binary(Op::MatMul, g.unary(Op::Transpose, x), w), "xᵀ w", "transpose(x) @ w");
  add(g.binary(Op::Outer, w, v), "w ⊗ v", "outer(w, v)");
  add(g.unary(Op::Transpose, x), "xᵀ", "transpose(x)");
  add(conv, "conv2d(im, K, stride=2, padding=1)");
  add(g.make(Op::Conv2d, {im, K}, 0, 0, {}, {1, 0}), "conv2d(im, K)");
  // im is [2, 6, 5]: from a [3, 3, 3] g, PyTorch's transposed size is (3 - 1) 2 - 2 + 3 = 5
  // rows and (3 - 1) 2 - 2 + 2 = 4 columns: one of each is left over
  add(g.make(Op::Conv2dInputGrad, {gy, K}, 0, 0, Shape{2, 6, 5}, cv),
      "conv_transpose2d(g, K, stride=2, padding=1, output_padding=[1, 1])");
  add(g.make(Op::Conv2dKernelGrad, {im, gy}, 0, 0, Shape{3, 2, 3, 2}, cv),
      "correlate2d(im, g, stride=2, padding=1)");
  add(g.make(Op::MaxPool2d, {im}, 0, 0, {}, {2, 2}), "maxpool2d(im, 2)");
  add(g.make(Op::MaxPool2d, {im}, 0, 0, {}, {3, 2}), "maxpool2d(im, 3, stride=2)");
  add(g.make(Op::MaxPool2dGrad, {im, mp}, 0, 0, {}, {2, 3}), "maxunpool2d(u, im, 2, stride=3)");
  add(g.make(Op::AvgPool2d, {im}, 0, 0, {}, {2, 3}), "avgpool2d(im, 2, stride=3)");
  add(g.make(Op::AvgPool2dGrad, {mp}, 0, 0, Shape{2, 4, 4}, {2, 2}), "avgunpool2d(u, 2)");
  add(g.make(Op::AvgPool2dGrad, {mp}, 0, 0, Shape{2, 7, 6}, {3, 3}), "avgunpool2d(u, 3, to=[7, 6])");
  return f;
}

} // namespace

TEST_CASE("ops: every op of Ops.def has a printed notation, Unicode and ASCII", "[ops][print]") {
  Bench b;
  std::vector<NodeId> nodes;
  std::unordered_map<NodeId, std::string> names;
  auto forms = printedForms(b, nodes, names);
  std::map<Op, int> covered;
  for (size_t i = 0; i < forms.size(); ++i) {
    const auto &[op, want] = forms[i];
    ++covered[op];
    INFO("op '" << opSpelling(op) << "'");
    // leaves print by name: pass the names only for the operands, not for the node itself
    std::unordered_map<NodeId, std::string> operandNames = names;
    if (opKind(op) != OpKind::Leaf) operandNames.erase(nodes[i]);
    CHECK(printExpression(b.p, nodes[i], {false}, operandNames) == want.unicode);
    const std::string ascii = printExpression(b.p, nodes[i], {true}, operandNames);
    CHECK(ascii == want.ascii);
    for (unsigned char ch : ascii) CHECK(ch < 128);
  }
  // A new op in Ops.def fails here until it has a notation (and a line in printedForms).
  for (int k = 0; k < kNumOps; ++k) {
    INFO("op '" << opSpelling(static_cast<Op>(k)) << "'");
    CHECK(covered.count(static_cast<Op>(k)) == 1);
  }
}

TEST_CASE("ops: simplifier rules for the new ops; none assumes rank <= 2", "[ops][simplify]") {
  Bench b(5);
  Graph &g = b.g();
  Simplifier S(g);
  NodeId X = b.param(Shape{2, 3, 4}, 0.2, 1.5, true);
  auto zero = [&](const Shape &sh) { return sh.isScalar() ? g.constant(0) : g.broadcast(g.constant(0), sh); };
  auto isZeros = [&](NodeId id, const Shape &sh) {
    double v = -1;
    return g.constValue(id, v) && v == 0 && g.shape(id) == sh;
  };
  SECTION("constant folding of the new unary and binary ops uses Kernels.h") {
    for (Op op : {Op::Gelu, Op::Elu, Op::Erf, Op::Sin, Op::Cos, Op::LeakyRelu})
      for (double c : {-2.0, -0.5, 0.0, 0.7, 3.0}) {
        INFO(opSpelling(op) << "(" << c << ")");
        NodeId e = g.make(op, {g.constant(c)}, op == Op::LeakyRelu ? 0.3 : 0.0);
        NodeId r = S.simplify(e);
        REQUIRE(g.op(r) == Op::Const);
        CHECK(g.node(r).fattr == b.eval(e)[0]);
      }
    CHECK(g.node(S.simplify(g.make(Op::Elu, {g.constant(-1)}))).fattr == std::expm1(-1.0));
    CHECK(g.node(S.simplify(g.make(Op::Gelu, {g.constant(0)}))).fattr == 0);
    CHECK(g.node(S.simplify(g.binary(Op::Maximum, g.constant(2), g.constant(3)))).fattr == 3);
    CHECK(g.node(S.simplify(g.binary(Op::Minimum, g.constant(2), g.constant(3)))).fattr == 2);
    CHECK(g.node(S.simplify(g.binary(Op::GreaterEq, g.constant(2), g.constant(2)))).fattr == 1);
    CHECK(g.node(S.simplify(g.binary(Op::GreaterEq, g.constant(1), g.constant(2)))).fattr == 0);
  }
  SECTION("reshape of a reshape is one reshape; to its own shape it is nothing") {
    NodeId r = S.simplify(g.reshape(g.reshape(X, Shape{6, 4}), Shape{4, 6}));
    CHECK(g.op(r) == Op::Reshape);
    CHECK(g.node(r).a() == X);
    CHECK(S.simplify(g.reshape(g.reshape(X, Shape{24}), Shape{2, 3, 4})) == X);
    CHECK(S.simplify(g.reshape(X, Shape{2, 3, 4})) == X);
  }
  SECTION("a slice of a slice is one slice; a pad of a pad one pad") {
    NodeId ss = g.slice(g.slice(X, {1, 0, 1}, Shape{1, 3, 3}), {0, 1, 1}, Shape{1, 2, 1});
    NodeId r = S.simplify(ss);
    REQUIRE(g.op(r) == Op::Slice);
    CHECK(g.node(r).a() == X);
    CHECK(g.node(r).attrs == std::vector<int64_t>{1, 1, 2});
    CHECK(b.eval(r) == b.eval(ss));
    NodeId pp = g.pad(g.pad(X, {0, 1, 0}, Shape{2, 5, 4}), {1, 0, 2}, Shape{3, 5, 7});
    NodeId rp = S.simplify(pp);
    REQUIRE(g.op(rp) == Op::Pad);
    CHECK(g.node(rp).a() == X);
    CHECK(g.node(rp).attrs == std::vector<int64_t>{1, 1, 2});
    CHECK(b.eval(rp) == b.eval(pp));
  }
  SECTION("a slice or a pad of the whole extent is the operand") {
    CHECK(S.simplify(g.slice(X, {0, 0, 0}, Shape{2, 3, 4})) == X);
    CHECK(S.simplify(g.pad(X, {0, 0, 0}, Shape{2, 3, 4})) == X);
    NodeId part = S.simplify(g.slice(X, {0, 1, 0}, Shape{2, 2, 4}));
    CHECK(g.op(part) == Op::Slice);
    CHECK(g.node(part).attrs == std::vector<int64_t>{0, 1, 0});
  }
  SECTION("linear ops of zeros are zeros, of every rank") {
    CHECK(isZeros(S.simplify(g.make(Op::SumAxis, {zero(Shape{2, 3, 4, 2})}, 0, 2)), Shape{2, 3, 2}));
    CHECK(isZeros(S.simplify(g.make(Op::SumAxis, {zero(Shape{3})}, 0, 0)), Shape{}));
    CHECK(isZeros(S.simplify(g.pad(zero(Shape{1, 2}), {1, 1}, Shape{3, 4})), Shape{3, 4}));
    CHECK(isZeros(S.simplify(g.slice(zero(Shape{3, 4}), {1, 1}, Shape{1, 2})), Shape{1, 2}));
    CHECK(isZeros(S.simplify(g.reshape(zero(Shape{3, 4}), Shape{2, 6})), Shape{2, 6}));
    CHECK(isZeros(S.simplify(g.make(Op::Concat, {zero(Shape{3, 4}), zero(Shape{1, 4})}, 0, 0)), Shape{4, 4}));
    NodeId half = S.simplify(g.make(Op::Concat, {zero(Shape{2, 3, 4}), X}, 0, 0));
    CHECK(g.op(half) == Op::Concat);
    NodeId im = b.param(Shape{2, 5, 5}, 0.2, 1.5, true), K = b.param(Shape{3, 2, 2, 2}, 0.2, 1.5, true);
    CHECK(isZeros(S.simplify(g.make(Op::Conv2d, {im, zero(Shape{3, 2, 2, 2})}, 0, 0, {}, {2, 1})), Shape{3, 3, 3}));
    CHECK(isZeros(S.simplify(g.make(Op::Conv2dInputGrad, {zero(Shape{3, 3, 3}), K}, 0, 0, Shape{2, 5, 5}, {2, 1})),
                  Shape{2, 5, 5}));
    CHECK(isZeros(S.simplify(g.make(Op::MaxPool2dGrad, {im, zero(Shape{2, 2, 2})}, 0, 0, {}, {2, 2})), Shape{2, 5, 5}));
    CHECK(isZeros(S.simplify(g.make(Op::AvgPool2dGrad, {zero(Shape{2, 2, 2})}, 0, 0, Shape{2, 5, 5}, {2, 2})),
                  Shape{2, 5, 5}));
  }
  SECTION("the simplifier keeps attrs and fattr of the ops that have them") {
    NodeId im = b.param(Shape{2, 6, 5}, 0.2, 1.5, true), K = b.param(Shape{3, 2, 3, 2}, 0.2, 1.5, true);
    NodeId negIm = g.unary(Op::Neg, g.unary(Op::Neg, im)); // simplifies to im: the ops are rebuilt
    for (NodeId e : {g.make(Op::Conv2d, {negIm, K}, 0, 0, {}, {2, 1}),
                     g.make(Op::MaxPool2d, {negIm}, 0, 0, {}, {3, 2}),
                     g.make(Op::ExtremeMask, {negIm}, -1.0, 2), g.make(Op::LeakyRelu, {negIm}, 0.25),
                     g.slice(negIm, {1, 2, 0}, Shape{1, 3, 5})}) {
      INFO(printExpression(b.p, e, {true}));
      NodeId r = S.simplify(e);
      CHECK(g.node(r).a() == im);
      CHECK(g.node(r).attrs == g.node(e).attrs);
      CHECK(g.node(r).fattr == g.node(e).fattr);
      CHECK(b.eval(r) == b.eval(e));
    }
  }
}

namespace {

// A program built by hand, as sema would: decls, named values in source order and the loss.
struct HandProgram {
  Bench b;
  int statement = 0;
  NodeId value(const std::string &name, NodeId node) {
    NamedValue v;
    v.name = name;
    v.node = node;
    v.statement = statement++;
    b.p.values.push_back(v);
    return node;
  }
  NodeId param(const std::string &name, const Shape &s) {
    NodeId id = b.param(s, 0.1, 1, true);
    b.p.params.back().name = name;
    return id;
  }
  NodeId input(const std::string &name, const Shape &s) {
    NodeId id = b.input(s, 0.1, 1, true);
    b.p.inputs.back().name = name;
    return id;
  }
  void loss(const std::string &name, NodeId node) {
    value(name, node);
    b.p.loss = b.p.values.back();
  }
  std::string grad(bool ascii) {
    checkGradients(b, b.p.loss->node, 1e-8); // the formulas printed are of a right gradient
    Expected<Derivation> d = derive(b.p);
    REQUIRE(d);
    return printGradient(b.p, *d, {ascii});
  }
};

} // namespace

TEST_CASE("ops: grad text of a small convnet", "[ops][print]") {
  HandProgram h;
  Graph &g = h.b.g();
  NodeId img = h.input("img", Shape{1, 6, 6});
  NodeId t = h.input("t", Shape{3});
  NodeId K = h.param("c1.K", Shape{2, 1, 3, 3});
  NodeId W = h.param("W", Shape{3, 8});
  NodeId c1 = h.value("c1", g.unary(Op::Relu, g.make(Op::Conv2d, {img, K}, 0, 0, {}, {1, 1})));
  NodeId p1 = h.value("p1", g.make(Op::MaxPool2d, {c1}, 0, 0, {}, {2, 2}));
  NodeId a1 = h.value("a1", g.make(Op::AvgPool2d, {p1}, 0, 0, {}, {2, 1}));
  NodeId f = h.value("f", g.reshape(a1, Shape{8}));
  NodeId z = h.value("z", g.binary(Op::MatMul, W, f));
  h.loss("E", g.unary(Op::Neg, g.unary(Op::Sum, g.binary(Op::Mul, t, g.unary(Op::LogSoftmax, z)))));
  // the relu's step reads the pre-activation, which has no name of its own
  CHECK(h.grad(false) == R"(# The gradient of E for one example, from the loss backwards.
# A param's gradient over a batch is the mean of these.
dE/dz = softmax(z) * sum(t) - t
dE/dW = dE/dz ⊗ f
dE/df = Wᵀ dE/dz
dE/da1 = reshape(dE/df, [2, 2, 2])
dE/dp1 = avgunpool2d(dE/da1, 2, stride=1)
dE/dc1 = maxunpool2d(dE/dp1, c1, 2)
dE/dc1.K = correlate2d(img, dE/dc1 * step(conv2d(img, c1.K, padding=1)), padding=1)
)");
  CHECK(h.grad(true) == R"(# The gradient of E for one example, from the loss backwards.
# A param's gradient over a batch is the mean of these.
dE/dz = softmax(z) * sum(t) - t
dE/dW = outer(dE/dz, f)
dE/df = transpose(W) @ dE/dz
dE/da1 = reshape(dE/df, [2, 2, 2])
dE/dp1 = avgunpool2d(dE/da1, 2, stride=1)
dE/dc1 = maxunpool2d(dE/dp1, c1, 2)
dE/dc1.K = correlate2d(img, dE/dc1 * step(conv2d(img, c1.K, padding=1)), padding=1)
)");
}

TEST_CASE("ops: grad text of slices, concat, max and gelu", "[ops][print]") {
  HandProgram h;
  Graph &g = h.b.g();
  NodeId x = h.input("x", Shape{4, 3});
  NodeId W = h.param("W", Shape{3, 3});
  NodeId hdn = h.value("h", g.unary(Op::Gelu, g.binary(Op::MatMul, x, W)));
  NodeId top = h.value("top", g.slice(hdn, {0, 0}, Shape{2, 3}));
  NodeId both = h.value("both", g.make(Op::Concat, {top, g.unary(Op::Elu, top)}, 0, 1));
  NodeId m = h.value("m", g.make(Op::Max, {both}, 0, 1));
  NodeId mm = h.value("mm", g.binary(Op::Maximum, m, g.make(Op::LeakyRelu, {m}, 0.2)));
  h.loss("E", g.unary(Op::Sum, g.binary(Op::Mul, mm, mm)));
  // maximum's two terms (a and, through leaky_relu, b), each reusing dE/dmm = 2 * mm; max's mask;
  // concat's two slices; the slice's pad; gelu' = Phi + x phi as gelu'(x W)
  CHECK(h.grad(false) == R"(# The gradient of E for one example, from the loss backwards.
# A param's gradient over a batch is the mean of these.
dE/dmm = 2 * mm
dE/dm = dE/dmm * [m ≥ leaky_relu(m, slope=0.2)] + dE/dmm * (1 - [m ≥ leaky_relu(m, slope=0.2)]) * (0.2 + 0.8 * step(m))
dE/dboth = argmax_mask(both, 1) * reshape(dE/dm, [2, 1])
dE/dtop = dE/dboth[:, 0:3] + dE/dboth[:, 3:6] * exp(minimum(top, 0))
dE/dh = pad(dE/dtop, [4, 3], at=[0, 0])
dE/dW = xᵀ (dE/dh * gelu'(x W))
)");
  CHECK(h.grad(true) == R"(# The gradient of E for one example, from the loss backwards.
# A param's gradient over a batch is the mean of these.
dE/dmm = 2 * mm
dE/dm = dE/dmm * [m >= leaky_relu(m, slope=0.2)] + dE/dmm * (1 - [m >= leaky_relu(m, slope=0.2)]) * (0.2 + 0.8 * step(m))
dE/dboth = argmax_mask(both, 1) * reshape(dE/dm, [2, 1])
dE/dtop = dE/dboth[:, 0:3] + dE/dboth[:, 3:6] * exp(minimum(top, 0))
dE/dh = pad(dE/dtop, [4, 3], at=[0, 0])
dE/dW = transpose(x) @ (dE/dh * gelu'(x @ W))
)");
}

TEST_CASE("ops: grad shows a recurrence's per-step terms as one Σ over t (issue 13)", "[ops][print]") {
  // An RNN unrolled over T = 4 steps as a recurrence would be: the values of step t are named
  // FAMILY[t] (x[t], h[t]); every state is an output (hs), so each state but the last has two
  // consumers: the stack at t and the step t + 1.
  HandProgram h;
  Graph &g = h.b.g();
  const int64_t T = 4;
  NodeId xs = h.input("xs", Shape{T, 2});
  NodeId Wih = h.param("rnn.W_ih", Shape{3, 2});
  NodeId Whh = h.param("rnn.W_hh", Shape{3, 3});
  NodeId bias = h.param("rnn.b", Shape{3});
  std::vector<NodeId> states;
  for (int64_t t = 0; t < T; ++t) {
    NodeId x = h.value(fmt::format("x[{}]", t), g.reshape(g.slice(xs, {t, 0}, Shape{1, 2}), Shape{2}));
    NodeId pre = g.binary(Op::Add, g.binary(Op::MatMul, Wih, x), bias);
    if (t > 0) pre = g.binary(Op::Add, pre, g.binary(Op::MatMul, Whh, states.back()));
    states.push_back(h.value(fmt::format("h[{}]", t), g.unary(Op::Tanh, pre)));
  }
  NodeId hs = g.reshape(states[0], Shape{1, 3});
  for (int64_t t = 1; t < T; ++t) hs = g.make(Op::Concat, {hs, g.reshape(states[static_cast<size_t>(t)], Shape{1, 3})}, 0, 0);
  hs = h.value("hs", hs);
  h.loss("E", g.unary(Op::Sum, g.binary(Op::Mul, hs, hs)));
  // dE/dh[t] for t < 3 is printed once over t; each param's T consumers are one Σ over t
  CHECK(h.grad(false) == R"(# The gradient of E for one example, from the loss backwards.
# A param's gradient over a batch is the mean of these.
dE/dhs = 2 * hs
dE/dh[3] = dE/dhs[3]
dE/dh[t] = Σ over the 2 consumers of h[t]:    (for t=0..2)
           dE/dhs[t]                                   ← from hs
         + rnn.W_hhᵀ (dE/dh[t+1] * (1 - h[t+1]^2))     ← from h[t+1]
dE/drnn.W_hh = Σ_{t=1..3} (dE/dh[t] * (1 - h[t]^2)) ⊗ h[t-1]   ← from h[t], one term per step
dE/drnn.b = Σ_{t=0..3} dE/dh[t] * (1 - h[t]^2)   ← from h[t], one term per step
dE/drnn.W_ih = Σ_{t=0..3} (dE/dh[t] * (1 - h[t]^2)) ⊗ x[t]   ← from h[t], one term per step
)");
  CHECK(h.grad(true) == R"(# The gradient of E for one example, from the loss backwards.
# A param's gradient over a batch is the mean of these.
dE/dhs = 2 * hs
dE/dh[3] = dE/dhs[3]
dE/dh[t] = sum over the 2 consumers of h[t]:    (for t=0..2)
           dE/dhs[t]                                             <- from hs
         + transpose(rnn.W_hh) @ (dE/dh[t+1] * (1 - h[t+1]^2))   <- from h[t+1]
dE/drnn.W_hh = sum_{t=1..3} outer(dE/dh[t] * (1 - h[t]^2), h[t-1])   <- from h[t], one term per step
dE/drnn.b = sum_{t=0..3} dE/dh[t] * (1 - h[t]^2)   <- from h[t], one term per step
dE/drnn.W_ih = sum_{t=0..3} outer(dE/dh[t] * (1 - h[t]^2), x[t])   <- from h[t], one term per step
)");
}

TEST_CASE("ops: grad keeps the per-step terms apart where their formulas differ over t", "[ops][print]") {
  HandProgram h;
  Graph &g = h.b.g();
  NodeId x = h.input("x", Shape{2});
  NodeId W = h.param("W", Shape{2, 2});
  NodeId h0 = h.value("h[0]", g.unary(Op::Tanh, g.binary(Op::MatMul, W, x)));
  NodeId h1 = h.value("h[1]", g.unary(Op::Tanh, g.binary(Op::MatMul, W, h0)));
  NodeId h2 = h.value("h[2]", g.unary(Op::Sin, g.binary(Op::MatMul, W, h1)));
  h.loss("E", g.unary(Op::Sum, h2));
  const std::string text = h.grad(false);
  INFO(text);
  // the three terms read differently over t (x at step 0, sin at step 2): none is merged
  CHECK(text.find("dE/dW = Σ over the 3 consumers of W:") != std::string::npos);
  CHECK(text.find("Σ_{") == std::string::npos);
  CHECK(text.find("[t") == std::string::npos);
  CHECK(text.find("← from h[2]") != std::string::npos);
  CHECK(text.find("dE/dh[1] = ") != std::string::npos);
  CHECK(text.find("dE/dh[0] = ") != std::string::npos);
}

TEST_CASE("ops: grad names a recurrence's step values (Program::recurrences) and sums over t", "[ops][print]") {
  // As sema unrolls `hs = rnn(xs, 3)` with a last-state readout: the step values hs.h[t] are not
  // statements; the owner of each step's nodes is its step value, so W_hh's terms are per step.
  HandProgram h;
  Graph &g = h.b.g();
  const int64_t T = 3;
  NodeId xs = h.input("xs", Shape{T, 2});
  NodeId Wih = h.param("hs.W_ih", Shape{3, 2});
  NodeId Whh = h.param("hs.W_hh", Shape{3, 3});
  NodeId bias = h.param("hs.b", Shape{3});
  NodeId v = h.param("v", Shape{3});
  RecurrenceSteps rs;
  rs.name = "hs";
  rs.steps = T;
  std::vector<NodeId> states;
  for (int64_t t = 0; t < T; ++t) {
    NodeId x = g.reshape(g.slice(xs, {t, 0}, Shape{1, 2}), Shape{2});
    NodeId pre = g.binary(Op::Add, g.binary(Op::MatMul, Wih, x), bias);
    if (t > 0) pre = g.binary(Op::Add, pre, g.binary(Op::MatMul, Whh, states.back()));
    states.push_back(g.unary(Op::Tanh, pre));
    rs.values.push_back({"h", t, states.back()});
  }
  NodeId stacked = g.reshape(states[0], Shape{1, 3});
  for (int64_t t = 1; t < T; ++t) stacked = g.make(Op::Concat, {stacked, g.reshape(states[static_cast<size_t>(t)], Shape{1, 3})}, 0, 0);
  rs.statement = h.statement;
  h.value("hs", stacked);
  h.b.p.recurrences.push_back(rs);
  NodeId last = h.value("last", g.reshape(g.slice(stacked, {T - 1, 0}, Shape{1, 3}), Shape{3}));
  h.loss("E", g.binary(Op::MatMul, v, last));
  // the lecture's rule for time: dE/dhs.h[t] from step t+1, each weight's gradient one Σ over t
  // (last is hs.h[2]: the step's name wins, so step 2 reads like the others)
  CHECK(h.grad(false) == R"(# The gradient of E for one example, from the loss backwards.
# A param's gradient over a batch is the mean of these.
dE/dv = hs.h[2]
dE/dhs.h[2] = v
dE/dhs.h[t] = hs.W_hhᵀ (dE/dhs.h[t+1] * (1 - hs.h[t+1]^2))    (for t=0..1)
dE/dhs.b = Σ_{t=0..2} dE/dhs.h[t] * (1 - hs.h[t]^2)   ← from hs.h[t], one term per step
dE/dhs.W_hh = Σ_{t=1..2} (dE/dhs.h[t] * (1 - hs.h[t]^2)) ⊗ hs.h[t-1]   ← from hs.h[t], one term per step
dE/dhs.W_ih = Σ_{t=0..2} (dE/dhs.h[t] * (1 - hs.h[t]^2)) ⊗ xs[t]   ← from hs.h[t], one term per step
# last is hs.h[2] after simplification; see dE/dhs.h[2].
)");
  CHECK(h.grad(true) == R"(# The gradient of E for one example, from the loss backwards.
# A param's gradient over a batch is the mean of these.
dE/dv = hs.h[2]
dE/dhs.h[2] = v
dE/dhs.h[t] = transpose(hs.W_hh) @ (dE/dhs.h[t+1] * (1 - hs.h[t+1]^2))    (for t=0..1)
dE/dhs.b = sum_{t=0..2} dE/dhs.h[t] * (1 - hs.h[t]^2)   <- from hs.h[t], one term per step
dE/dhs.W_hh = sum_{t=1..2} outer(dE/dhs.h[t] * (1 - hs.h[t]^2), hs.h[t-1])   <- from hs.h[t], one term per step
dE/dhs.W_ih = sum_{t=0..2} outer(dE/dhs.h[t] * (1 - hs.h[t]^2), xs[t])   <- from hs.h[t], one term per step
# last is hs.h[2] after simplification; see dE/dhs.h[2].
)");
}

TEST_CASE("ops: a slice of a pad, and padded neighbours added, simplify", "[ops][simplify]") {
  Bench b(6);
  Graph &g = b.g();
  Simplifier S(g);
  NodeId x = b.param(Shape{2, 3}, 0.2, 1.5, true), y = b.param(Shape{2, 2}, 0.2, 1.5, true);
  NodeId z = b.param(Shape{1, 3}, 0.2, 1.5, true);
  NodeId px = g.pad(x, {1, 1}, Shape{4, 6}); // x at rows 1-2, columns 1-3
  auto same = [&](NodeId before, NodeId after) { CHECK(b.eval(before) == b.eval(after)); };
  // inside the value: a slice of x
  NodeId in = g.slice(px, {2, 2}, Shape{1, 2});
  NodeId rin = S.simplify(in);
  REQUIRE(g.op(rin) == Op::Slice);
  CHECK(g.node(rin).a() == x);
  CHECK(g.node(rin).attrs == std::vector<int64_t>{1, 1});
  same(in, rin);
  // exactly the value: x itself
  CHECK(S.simplify(g.slice(px, {1, 1}, Shape{2, 3})) == x);
  // only padding: zeros
  double c = -1;
  NodeId out = S.simplify(g.slice(px, {0, 0}, Shape{1, 6}));
  CHECK(g.constValue(out, c));
  CHECK(c == 0);
  CHECK(g.shape(out) == Shape{1, 6});
  // a part of a concatenation: of the part it lies in
  NodeId cat = g.make(Op::Concat, {x, y}, 0, 1); // [2, 5]: x in columns 0-2, y in 3-4
  NodeId ofX = S.simplify(g.slice(cat, {1, 0}, Shape{1, 2}));
  REQUIRE(g.op(ofX) == Op::Slice);
  CHECK(g.node(ofX).a() == x);
  NodeId ofY = S.simplify(g.slice(cat, {0, 3}, Shape{2, 2}));
  CHECK(ofY == y);
  NodeId both = g.slice(cat, {0, 2}, Shape{2, 2});
  CHECK(g.node(S.simplify(both)).a() == cat);
  same(both, S.simplify(both));
  same(g.slice(cat, {1, 0}, Shape{1, 2}), ofX);
  // across the border: kept
  NodeId across = g.slice(px, {0, 0}, Shape{2, 2});
  CHECK(g.op(S.simplify(across)) == Op::Slice);
  same(across, S.simplify(across));
  // side by side along columns, aligned on rows: pad(concat)
  NodeId py = g.pad(y, {1, 4}, Shape{4, 6});
  NodeId sum = g.binary(Op::Add, px, py);
  NodeId rs = S.simplify(sum);
  REQUIRE(g.op(rs) == Op::Pad);
  CHECK(g.op(g.node(rs).a()) == Op::Concat);
  same(sum, rs);
  NodeId sum2 = g.binary(Op::Add, py, px); // the other order joins in the same order
  same(sum2, S.simplify(sum2));
  CHECK(S.simplify(sum2) == rs);
  // three parts along rows covering everything: one concat, no pad
  NodeId whole = g.binary(Op::Add, g.binary(Op::Add, g.pad(x, {1, 0}, Shape{4, 3}), g.pad(z, {3, 0}, Shape{4, 3})),
                          g.pad(z, {0, 0}, Shape{4, 3}));
  NodeId rw = S.simplify(whole);
  CHECK(g.op(rw) == Op::Concat);
  same(whole, rw);
  // not adjacent (a gap), or overlapping: kept as a sum
  NodeId gap = g.binary(Op::Add, g.pad(z, {0, 0}, Shape{4, 3}), g.pad(z, {2, 0}, Shape{4, 3}));
  CHECK(g.op(S.simplify(gap)) == Op::Add);
  NodeId overlap = g.binary(Op::Add, g.pad(x, {0, 0}, Shape{4, 3}), g.pad(x, {1, 0}, Shape{4, 3}));
  CHECK(g.op(S.simplify(overlap)) == Op::Add);
  same(overlap, S.simplify(overlap));
}
