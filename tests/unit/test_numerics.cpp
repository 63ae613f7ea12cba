// Numerics at the edges: no NaN or inf where the mathematical value is representable, for every op
// at extreme inputs (±1e4, ±80, tiny denormals, exactly 0 at the relu and abs kinks), in f32 and
// f64, with both engines (the interpreter and the JIT, through Model).
//   - elementwise ops (unary, and binary on every pair of edge values): forward values and
//     gradients against long-double references, wherever the reference is representable in the
//     dtype (a value the dtype cannot hold, like exp(1e4) or 1/denormal, is not checked);
//   - softmax and log_softmax rows, cross_entropy(softmax) and bce(logistic) (the stable
//     rewrites), mse, against references;
//   - matrix products, transposes, axis reductions, broadcasting, dot: finite, and the engines
//     agree with the f64 interpreter.
// The extreme values reach each op both from inputs (per-example code) and from params
// (batch-shared code).
#include <catch2/catch.hpp>

#include "Model.h"

#include <fmt/format.h>

#include <cfloat>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

using namespace nabla;

namespace {

using LD = long double;

struct Config {
  DType dtype;
  Engine engine;
  const char *name;
};
const Config kConfigs[] = {{DType::F32, Engine::Interp, "interp f32"},
                           {DType::F64, Engine::Interp, "interp f64"},
                           {DType::F32, Engine::Jit, "jit f32"},
                           {DType::F64, Engine::Jit, "jit f64"}};

bool isF32(DType d) { return d == DType::F32; }
double inDType(DType d, double v) { return isF32(d) ? static_cast<double>(static_cast<float>(v)) : v; }
double maxOf(DType d) { return isF32(d) ? FLT_MAX : DBL_MAX; }
// A denormal of the dtype.
double tinyOf(DType d) { return isF32(d) ? 1e-40 : 1e-310; }
// Relative tolerance, and an absolute floor below which results may flush to zero.
double relTol(DType d) { return isF32(d) ? 3e-5 : 1e-10; }
double absFloor(DType d) { return isF32(d) ? 1e-36 : 1e-300; }

std::vector<double> edgeValues(DType d) {
  const double t = tinyOf(d);
  return {1e4, -1e4, t, -t, 0.0, 0.5, -3.0, 80.0, -80.0, 20.0};
}

bool representable(LD v, DType d) { return std::isfinite(static_cast<double>(v)) && fabsl(v) <= maxOf(d); }

// "" when `got` matches `ref` (or ref is not representable, so anything goes); else why not.
std::string mismatch(double got, LD ref, DType d, LD scale = 0) {
  if (!representable(ref, d)) return "";
  if (!std::isfinite(got)) return fmt::format("{} where {} is representable", got, static_cast<double>(ref));
  LD tol = relTol(d) * std::max(fabsl(ref), scale) + absFloor(d);
  if (fabsl(static_cast<LD>(got) - ref) > tol)
    return fmt::format("{} but the reference is {}", got, static_cast<double>(ref));
  return "";
}

Model compile(const std::string &src, const Config &c) {
  CompileOptions o;
  o.dtype = c.dtype;
  o.engine = c.engine;
  Expected<Model> m = Model::compileString(src, "numerics.nn", o);
  if (!m) FAIL("does not compile:\n" << src << "\n" << m.error().message);
  return std::move(*m);
}

LD logistic(LD x) { return x >= 0 ? 1 / (1 + expl(-x)) : expl(x) / (1 + expl(x)); }
LD softplus(LD x) { return x > 0 ? x + log1pl(expl(-x)) : log1pl(expl(x)); }

struct UnaryCase {
  const char *name;
  const char *format; // the op applied to {}
  std::function<LD(LD)> f, df;
  // The derivatives of logistic and tanh are computed from the output, y (1 - y) and 1 - y^2:
  // accurate to rounding relative to 1, not to themselves (far out they round to 0, which is
  // finite and within that tolerance).
  LD gradScale = 0;
};

const std::vector<UnaryCase> &unaryCases() {
  static const std::vector<UnaryCase> cases = {
      {"neg", "-({})", [](LD x) { return -x; }, [](LD) { return LD(-1); }},
      {"logistic", "logistic({})", logistic, [](LD x) { return logistic(x) * logistic(-x); }, 1},
      {"tanh", "tanh({})", [](LD x) { return tanhl(x); }, [](LD x) { LD t = tanhl(x); return 1 - t * t; }, 1},
      {"relu", "relu({})", [](LD x) { return x > 0 ? x : LD(0); }, [](LD x) { return x > 0 ? LD(1) : LD(0); }},
      {"softplus", "softplus({})", softplus, logistic},
      {"exp", "exp({})", [](LD x) { return expl(x); }, [](LD x) { return expl(x); }},
      {"log", "log({})", [](LD x) { return logl(x); }, [](LD x) { return 1 / x; }},
      {"sqrt", "sqrt({})", [](LD x) { return sqrtl(x); }, [](LD x) { return 1 / (2 * sqrtl(x)); }},
      {"abs", "abs({})", [](LD x) { return fabsl(x); }, [](LD x) { return x > 0 ? LD(1) : x < 0 ? LD(-1) : LD(0); }},
      {"square", "({}) ^ 2", [](LD x) { return x * x; }, [](LD x) { return 2 * x; }},
      {"cube", "({}) ^ 3", [](LD x) { return x * x * x; }, [](LD x) { return 3 * x * x; }},
      {"reciprocal", "({}) ^ -1", [](LD x) { return 1 / x; }, [](LD x) { return -1 / (x * x); }},
      {"root", "({}) ^ 0.5", [](LD x) { return sqrtl(x); }, [](LD x) { return 1 / (2 * sqrtl(x)); }},
      {"power 1.5", "({}) ^ 1.5", [](LD x) { return powl(x, 1.5L); }, [](LD x) { return 1.5L * sqrtl(x); }},
  };
  return cases;
}

std::string join(const std::vector<double> &v) {
  std::string s;
  for (double x : v) s += fmt::format("{}{}", s.empty() ? "" : ", ", x);
  return s;
}

TEST_CASE("numerics: unary ops at the edges, forward and gradient", "[numerics]") {
  for (const UnaryCase &u : unaryCases())
    for (const Config &c : kConfigs) {
      INFO(u.name << ", " << c.name);
      const std::vector<double> all = edgeValues(c.dtype);
      { // forward, every edge value as an input
        const size_t K = all.size();
        Model m = compile(fmt::format("input x[{}]\ny = {}\noutput y\n", K, fmt::format(fmt::runtime(u.format), "x")), c);
        std::vector<double> in;
        for (double v : all) in.push_back(inDType(c.dtype, v));
        std::vector<double> y = m.forward({}, in.data(), 1);
        REQUIRE(y.size() == K);
        for (size_t i = 0; i < K; ++i) {
          std::string bad = mismatch(y[i], u.f(static_cast<LD>(in[i])), c.dtype);
          if (!bad.empty()) FAIL_CHECK(fmt::format("{}({}) = {}", u.name, in[i], bad));
        }
      }
      // Gradient, over the values where the op itself is representable (the loss sums them): from
      // an input (x + p, p = 0) and from a param (q).
      std::vector<double> xs;
      for (double v : all)
        if (representable(u.f(static_cast<LD>(inDType(c.dtype, v))), c.dtype)) xs.push_back(inDType(c.dtype, v));
      const size_t K = xs.size();
      std::string src = fmt::format("input x[{0}]\nparam p[{0}]\nparam q[{0}]\nloss E = sum({1}) + sum({2})\n", K,
                                    fmt::format(fmt::runtime(u.format), "x + p"), fmt::format(fmt::runtime(u.format), "q"));
      Model m = compile(src, c);
      std::vector<double> params(2 * K, 0.0);
      std::copy(xs.begin(), xs.end(), params.begin() + static_cast<long>(K));
      std::vector<double> grads;
      const double noTargets = 0;
      double loss = m.lossAndGradient(params, xs.data(), &noTargets, 1, grads);
      LD refLoss = 0, scale = 0;
      for (double v : xs) refLoss += 2 * u.f(v), scale += 2 * fabsl(u.f(v));
      CHECK(mismatch(loss, refLoss, c.dtype, scale) == "");
      REQUIRE(grads.size() == 2 * K);
      for (size_t i = 0; i < 2 * K; ++i) {
        double v = xs[i % K];
        std::string bad = mismatch(grads[i], u.df(static_cast<LD>(v)), c.dtype, u.gradScale);
        if (!bad.empty()) FAIL_CHECK(fmt::format("d{}/d{}[{}] at {}: {}", u.name, i < K ? "p" : "q", i % K, v, bad));
      }
    }
}

struct BinaryCase {
  const char *op;
  std::function<LD(LD, LD)> f, da, db;
};

TEST_CASE("numerics: binary ops on every pair of edge values, forward and gradient", "[numerics]") {
  const BinaryCase cases[] = {
      {"+", [](LD a, LD b) { return a + b; }, [](LD, LD) { return LD(1); }, [](LD, LD) { return LD(1); }},
      {"-", [](LD a, LD b) { return a - b; }, [](LD, LD) { return LD(1); }, [](LD, LD) { return LD(-1); }},
      {"*", [](LD a, LD b) { return a * b; }, [](LD, LD b) { return b; }, [](LD a, LD) { return a; }},
      {"/", [](LD a, LD b) { return a / b; }, [](LD, LD b) { return 1 / b; }, [](LD a, LD b) { return -a / (b * b); }},
  };
  for (const BinaryCase &bc : cases)
    for (const Config &c : kConfigs) {
      INFO("'" << bc.op << "', " << c.name);
      std::vector<double> as, bs;
      for (double a : edgeValues(c.dtype))
        for (double b : edgeValues(c.dtype)) as.push_back(inDType(c.dtype, a)), bs.push_back(inDType(c.dtype, b));
      { // forward
        const size_t K = as.size();
        Model m = compile(fmt::format("input a[{0}]\ninput b[{0}]\ny = a {1} b\noutput y\n", K, bc.op), c);
        std::vector<double> in = as;
        in.insert(in.end(), bs.begin(), bs.end());
        std::vector<double> y = m.forward({}, in.data(), 1);
        REQUIRE(y.size() == K);
        for (size_t i = 0; i < K; ++i) {
          std::string bad = mismatch(y[i], bc.f(as[i], bs[i]), c.dtype);
          if (!bad.empty()) FAIL_CHECK(fmt::format("{} {} {} = {}", as[i], bc.op, bs[i], bad));
        }
      }
      // Gradient over the pairs where the op is representable: (a + p) op (b + q), p = q = 0.
      std::vector<double> A, B;
      for (size_t i = 0; i < as.size(); ++i)
        if (representable(bc.f(as[i], bs[i]), c.dtype)) A.push_back(as[i]), B.push_back(bs[i]);
      const size_t K = A.size();
      Model m = compile(fmt::format("input a[{0}]\ninput b[{0}]\nparam p[{0}]\nparam q[{0}]\n"
                                    "loss E = sum((a + p) {1} (b + q))\n", K, bc.op), c);
      std::vector<double> in = A, grads;
      in.insert(in.end(), B.begin(), B.end());
      const double noTargets = 0;
      double loss = m.lossAndGradient(std::vector<double>(2 * K, 0.0), in.data(), &noTargets, 1, grads);
      CHECK(std::isfinite(loss));
      REQUIRE(grads.size() == 2 * K);
      for (size_t i = 0; i < K; ++i) {
        std::string bad = mismatch(grads[i], bc.da(A[i], B[i]), c.dtype);
        if (!bad.empty()) FAIL_CHECK(fmt::format("d/da of {} {} {}: {}", A[i], bc.op, B[i], bad));
        bad = mismatch(grads[K + i], bc.db(A[i], B[i]), c.dtype);
        if (!bad.empty()) FAIL_CHECK(fmt::format("d/db of {} {} {}: {}", A[i], bc.op, B[i], bad));
      }
    }
}

// Rows of three logits at the edges.
std::vector<std::vector<double>> logitRows(DType d) {
  const double t = tinyOf(d);
  return {{1e4, 0, -1e4}, {1e4, 1e4, 1e4}, {-1e4, -1e4, -1e4}, {t, 0, -t},
          {80, -80, 0},   {0, 0, 0},       {1e4, 9999, -3},     {-1e4, 0.5, 20}};
}

std::vector<LD> softmaxRef(const std::vector<double> &z) {
  LD mx = z[0];
  for (double v : z) mx = std::max<LD>(mx, v);
  LD s = 0;
  for (double v : z) s += expl(v - mx);
  std::vector<LD> r;
  for (double v : z) r.push_back(expl(v - mx) / s);
  return r;
}
std::vector<LD> logSoftmaxRef(const std::vector<double> &z) {
  LD mx = z[0];
  for (double v : z) mx = std::max<LD>(mx, v);
  LD s = 0;
  for (double v : z) s += expl(v - mx);
  std::vector<LD> r;
  for (double v : z) r.push_back(v - mx - logl(s));
  return r;
}

TEST_CASE("numerics: softmax and log_softmax rows at the edges", "[numerics]") {
  for (bool logForm : {false, true})
    for (const Config &c : kConfigs) {
      const char *fn = logForm ? "log_softmax" : "softmax";
      INFO(fn << ", " << c.name);
      auto rows = logitRows(c.dtype);
      const size_t R = rows.size();
      std::vector<double> Z;
      for (auto &r : rows)
        for (double v : r) Z.push_back(inDType(c.dtype, v));
      const double w[3] = {1, -2, 0.5};
      std::vector<double> W;
      for (size_t r = 0; r < R; ++r) W.insert(W.end(), w, w + 3);
      { // forward on inputs
        Model m = compile(fmt::format("input Z[{}, 3]\ny = {}(Z)\noutput y\n", R, fn), c);
        std::vector<double> y = m.forward({}, Z.data(), 1);
        REQUIRE(y.size() == 3 * R);
        for (size_t r = 0; r < R; ++r) {
          std::vector<double> z(Z.begin() + static_cast<long>(3 * r), Z.begin() + static_cast<long>(3 * r + 3));
          auto ref = logForm ? logSoftmaxRef(z) : softmaxRef(z);
          for (size_t j = 0; j < 3; ++j) {
            std::string bad = mismatch(y[3 * r + j], ref[j], c.dtype, logForm ? fabsl(ref[0]) + 1 : 1);
            if (!bad.empty()) FAIL_CHECK(fmt::format("{}([{}])[{}]: {}", fn, join(z), j, bad));
          }
        }
      }
      // gradient of sum(f(Z + P) * W) with respect to P (P = 0): from inputs and params alike
      Model m = compile(fmt::format("input Z[{0}, 3]\ninput W[{0}, 3]\nparam P[{0}, 3]\nparam Q[{0}, 3]\n"
                                    "loss E = sum({1}(Z + P) * W) + sum({1}(Q) * W)\n", R, fn), c);
      std::vector<double> in = Z, params(3 * R, 0.0), grads;
      in.insert(in.end(), W.begin(), W.end());
      params.insert(params.end(), Z.begin(), Z.end());
      const double noTargets = 0;
      double loss = m.lossAndGradient(params, in.data(), &noTargets, 1, grads);
      CHECK(std::isfinite(loss));
      REQUIRE(grads.size() == 6 * R);
      for (size_t r = 0; r < R; ++r) {
        std::vector<double> z(Z.begin() + static_cast<long>(3 * r), Z.begin() + static_cast<long>(3 * r + 3));
        auto s = softmaxRef(z);
        LD sw = 0, sumw = 0;
        for (size_t j = 0; j < 3; ++j) sw += s[j] * w[j], sumw += w[j];
        for (size_t j = 0; j < 3; ++j) {
          LD ref = logForm ? w[j] - s[j] * sumw : s[j] * (w[j] - sw);
          for (size_t half : {size_t(0), size_t(1)}) {
            std::string bad = mismatch(grads[half * 3 * R + 3 * r + j], ref, c.dtype, 1);
            if (!bad.empty())
              FAIL_CHECK(fmt::format("d/d{}[{}][{}] of {} at [{}]: {}", half ? "Q" : "P", r, j, fn, join(z), bad));
          }
        }
      }
    }
}

TEST_CASE("numerics: cross_entropy(softmax) and bce(logistic) at the edges", "[numerics]") {
  for (const Config &c : kConfigs) {
    INFO(c.name);
    { // cross_entropy over a batch of extreme rows, one-hot and soft targets
      auto rows = logitRows(c.dtype);
      const std::vector<std::vector<double>> targets = {{1, 0, 0}, {0, 0, 1}, {0.5, 0.5, 0}};
      std::vector<double> Z, T;
      for (auto &r : rows)
        for (auto &t : targets) {
          for (double v : r) Z.push_back(inDType(c.dtype, v));
          T.insert(T.end(), t.begin(), t.end());
        }
      const int64_t n = static_cast<int64_t>(Z.size() / 3);
      Model m = compile("input z[3]\ntarget t[3]\nparam s[3]\nloss E = cross_entropy(softmax(z + s), t)\n", c);
      std::vector<double> grads;
      double loss = m.lossAndGradient({0, 0, 0}, Z.data(), T.data(), n, grads);
      LD refLoss = 0, refGrad[3] = {0, 0, 0};
      for (int64_t e = 0; e < n; ++e) {
        std::vector<double> z(Z.begin() + 3 * e, Z.begin() + 3 * e + 3);
        auto ls = logSoftmaxRef(z);
        auto sm = softmaxRef(z);
        LD tsum = 0;
        for (int j = 0; j < 3; ++j) refLoss -= T[static_cast<size_t>(3 * e + j)] * ls[static_cast<size_t>(j)], tsum += T[static_cast<size_t>(3 * e + j)];
        for (int j = 0; j < 3; ++j) refGrad[j] += sm[static_cast<size_t>(j)] * tsum - T[static_cast<size_t>(3 * e + j)];
      }
      CHECK(mismatch(loss, refLoss / n, c.dtype) == "");
      REQUIRE(grads.size() == 3);
      for (int j = 0; j < 3; ++j) CHECK(mismatch(grads[static_cast<size_t>(j)], refGrad[j] / n, c.dtype, 1) == "");
    }
    { // bce(logistic(z), t) over a batch: t * softplus(-z) + (1 - t) * softplus(z)
      std::vector<double> Z, T;
      for (double z : edgeValues(c.dtype))
        for (double t : {0.0, 1.0, 0.25}) Z.push_back(inDType(c.dtype, z)), T.push_back(t);
      const int64_t n = static_cast<int64_t>(Z.size());
      Model m = compile("input z\ntarget t\nparam s\np = logistic(z + s)\nloss E = bce(p, t)\n", c);
      std::vector<double> grads;
      double loss = m.lossAndGradient({0}, Z.data(), T.data(), n, grads);
      LD refLoss = 0, refGrad = 0;
      for (int64_t e = 0; e < n; ++e) {
        LD z = Z[static_cast<size_t>(e)], t = T[static_cast<size_t>(e)];
        refLoss += t * softplus(-z) + (1 - t) * softplus(z);
        refGrad += logistic(z) - t;
      }
      CHECK(mismatch(loss, refLoss / n, c.dtype) == "");
      REQUIRE(grads.size() == 1);
      CHECK(mismatch(grads[0], refGrad / n, c.dtype, 1) == "");
    }
    { // mse at the edges: mean((y - t)^2)
      const double t = tinyOf(c.dtype);
      std::vector<double> Y = {1e4, -1e4, t, 0, -t, 80}, T = {-1e4, 1e4, 0, 0, t, 80};
      for (double &v : Y) v = inDType(c.dtype, v);
      for (double &v : T) v = inDType(c.dtype, v);
      Model m = compile("input y[6]\ntarget t[6]\nparam s[6]\nloss E = mse(y + s, t)\n", c);
      std::vector<double> grads;
      double loss = m.lossAndGradient(std::vector<double>(6, 0.0), Y.data(), T.data(), 1, grads);
      LD refLoss = 0;
      for (int j = 0; j < 6; ++j) refLoss += (LD(Y[static_cast<size_t>(j)]) - T[static_cast<size_t>(j)]) * (LD(Y[static_cast<size_t>(j)]) - T[static_cast<size_t>(j)]) / 6;
      CHECK(mismatch(loss, refLoss, c.dtype) == "");
      REQUIRE(grads.size() == 6);
      for (int j = 0; j < 6; ++j)
        CHECK(mismatch(grads[static_cast<size_t>(j)], 2 * (LD(Y[static_cast<size_t>(j)]) - T[static_cast<size_t>(j)]) / 6, c.dtype, 1) == "");
    }
  }
}

TEST_CASE("numerics: products, transposes, reductions and broadcasting at the edges", "[numerics]") {
  // Finite everywhere, and every engine agrees with the f64 interpreter.
  const std::string src =
      "input X[3, 4]\ninput v[4]\ninput u[3]\nparam W[4, 4]\nparam b[4]\nparam c[3]\n"
      "A = X @ W + b\n"                       // matrix product, broadcast bias
      "B = transpose(X) @ u\n"                // [4, 3] @ [3]
      "r = sum(A * X, 1) + mean(X, 1) * c\n"  // axis reductions, products of extremes
      "s = sum(A, 0) + dot(v, b) + u @ X @ v\n"
      "y = relu(A) + abs(X * b)\n"
      "output A, B, r, s\n"
      "loss E = mean(r ^ 2) + sum(s * B) / 1e8 + sum(y) / 1e4 + sum(c * u)\n";
  const std::vector<double> X = {1e4, -1e4, 0, 1e-40, 0.5, -3, 1e4, 0, -1e-40, 80, -80, 1},
                            v = {0, 1e-40, -1e4, 1}, u = {1e4, 0, -0.5};
  std::vector<double> in = X;
  in.insert(in.end(), v.begin(), v.end());
  in.insert(in.end(), u.begin(), u.end());
  std::vector<double> P;
  for (int i = 0; i < 16; ++i) P.push_back(i % 5 == 0 ? 0.0 : (i % 2 ? 1e-2 : -2.0)); // W, zeros at kinks
  for (double x : {0.0, 1.0, -1e-3, 0.25}) P.push_back(x);                              // b
  for (double x : {1e-3, 0.0, -1.0}) P.push_back(x);                                     // c
  Model oracle = compile(src, {DType::F64, Engine::Interp, "interp f64"});
  std::vector<double> refGrads;
  const double refLoss = oracle.lossAndGradient(P, in.data(), in.data(), 1, refGrads);
  const std::vector<double> refY = oracle.forward(P, in.data(), 1);
  REQUIRE(std::isfinite(refLoss));
  double scale = std::abs(refLoss);
  for (double g : refGrads) {
    REQUIRE(std::isfinite(g));
    scale = std::max(scale, std::abs(g));
  }
  for (const Config &c : kConfigs) {
    INFO(c.name);
    Model m = compile(src, c);
    std::vector<double> grads;
    double loss = m.lossAndGradient(P, in.data(), in.data(), 1, grads);
    CHECK(std::isfinite(loss));
    CHECK(std::abs(loss - refLoss) <= relTol(c.dtype) * 10 * std::abs(refLoss));
    REQUIRE(grads.size() == refGrads.size());
    for (size_t i = 0; i < grads.size(); ++i) {
      INFO("grad " << i);
      CHECK(std::isfinite(grads[i]));
      CHECK(std::abs(grads[i] - refGrads[i]) <= relTol(c.dtype) * 10 * scale);
    }
    std::vector<double> y = m.forward(P, in.data(), 1);
    REQUIRE(y.size() == refY.size());
    for (size_t i = 0; i < y.size(); ++i) {
      INFO("output " << i);
      CHECK(std::isfinite(y[i]));
      CHECK(std::abs(y[i] - refY[i]) <= relTol(c.dtype) * 10 * std::max(1.0, std::abs(refY[i])));
    }
  }
}

} // namespace

// The new elementwise ops at the edges on the interpreter, from graphs built directly (the
// front end and the backends gain these ops separately; their rows belong in unaryCases once
// `gelu(x)` compiles): forward values and gradients (raw and simplified) against long-double
// references, f32 and f64.
#include "OpBench.h"

namespace {

LD normalCdf(LD x) { return erfcl(-x / sqrtl(2)) / 2; }
LD normalPdf(LD x) { return expl(-x * x / 2) / sqrtl(2 * 3.14159265358979323846264338327950288L); }

struct GraphUnaryCase {
  Op op;
  double fattr;
  std::function<LD(LD)> f, df;
};

} // namespace

TEST_CASE("numerics: gelu, elu, erf, sin, cos, leaky_relu at the edges on the interpreter", "[numerics]") {
  const std::vector<GraphUnaryCase> cases = {
      {Op::Gelu, 0, [](LD x) { return x * normalCdf(x); }, [](LD x) { return normalCdf(x) + x * normalPdf(x); }},
      {Op::Elu, 0, [](LD x) { return x > 0 ? x : expm1l(x); }, [](LD x) { return x > 0 ? LD(1) : expl(x); }},
      {Op::Erf, 0, [](LD x) { return erfl(x); }, [](LD x) { return 2 / sqrtl(3.14159265358979323846264338327950288L) * expl(-x * x); }},
      {Op::Sin, 0, [](LD x) { return sinl(x); }, [](LD x) { return cosl(x); }},
      {Op::Cos, 0, [](LD x) { return cosl(x); }, [](LD x) { return -sinl(x); }},
      {Op::LeakyRelu, 0.01, [](LD x) { return x > 0 ? x : LD(0.01) * x; }, [](LD x) { return x > 0 ? LD(1) : LD(0.01); }},
      {Op::LeakyRelu, 0.2, [](LD x) { return x > 0 ? x : LD(0.2) * x; }, [](LD x) { return x > 0 ? LD(1) : LD(0.2); }},
  };
  for (const GraphUnaryCase &u : cases)
    for (DType d : {DType::F32, DType::F64}) {
      INFO(opSpelling(u.op) << " fattr " << u.fattr << (isF32(d) ? " f32" : " f64"));
      std::vector<double> xs;
      for (double v : edgeValues(d)) xs.push_back(inDType(d, v));
      xs.push_back(inDType(d, -10)); // gelu(-10) = -7.6e-23: no cancellation to 0
      xs.push_back(inDType(d, -1));
      nabla::testing::Bench b;
      Graph &g = b.g();
      NodeId x = b.param(Shape{static_cast<int64_t>(xs.size())}, xs);
      NodeId y = g.make(u.op, {x}, u.fattr);
      NodeId loss = g.unary(Op::Sum, y);
      Expected<Gradient> grad = differentiate(g, loss);
      REQUIRE(grad);
      NodeId adj = grad->adjoint[static_cast<size_t>(x)];
      Simplifier S(g);
      NodeId simple = S.simplify(adj);
      auto at = [&](NodeId id) { return isF32(d) ? b.eval32(id) : b.eval(id); };
      const std::vector<double> yv = at(y), raw = at(adj), simp = at(simple);
      for (size_t i = 0; i < xs.size(); ++i) {
        INFO("x = " << xs[i]);
        // The derivative of gelu (as PyTorch's) computes Phi(x) as (1 + erf(x / sqrt 2)) / 2, which
        // the op table allows (it has no erfc): accurate to rounding relative to 1, not to itself
        // (gelu'(-10) = -7.6e-22 comes out as -7.7e-22), like logistic's and tanh's above.
        const LD scale = u.op == Op::Gelu ? 1 : 0;
        CHECK(mismatch(yv[i], u.f(xs[i]), d) == "");
        if (fabsl(u.f(xs[i])) > maxOf(d)) continue;
        CHECK(mismatch(raw[i], u.df(xs[i]), d, scale) == "");
        CHECK(mismatch(simp[i], u.df(xs[i]), d, scale) == "");
      }
    }
}
