// Tests of whole programs through the front end, derive() and the interpreter, against
// independent references:
//   - the lecture network against its backprop formulas written out by hand (f64 to 1e-12,
//     f32 to 1e-4);
//   - weight sharing, a skip connection, mse, softmax + cross_entropy and bce + logistic against
//     hand-derived gradients;
//   - stability: logits at +-1000 give the exact values, finite, in f32 and f64;
//   - every program with a loss in samples/, tests/golden/ok/ and tests/conformance/cases/
//     against central finite differences;
//   - the derivative printer's formulas for the lecture network and the Σ over consumers.
#include <catch2/catch.hpp>

#include <stdexcept> // before Program.h: Graph.h uses std::runtime_error

#include "Evaluate.h"
#include "GradPrinter.h"
#include "Pipeline.h"
#include "Random.h"
#include "Sema.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

using namespace nabla;

namespace {

// A compiled program and its derivation. Heap-allocated because the derivation's simplifier refers
// to the program's graph: the program must not move.
struct Compiled {
  Program p;
  Derivation d;
};

std::unique_ptr<Compiled> compile(const std::string &text, const std::string &name = "test.nn") {
  std::string diags;
  std::optional<Program> p = compileSource(SourceFile{name, text}, diags);
  INFO(diags);
  REQUIRE(p);
  auto c = std::make_unique<Compiled>(Compiled{std::move(*p), {}});
  REQUIRE(c->p.loss);
  Expected<Derivation> d = derive(c->p);
  INFO((d ? std::string() : d.error().message));
  REQUIRE(d);
  c->d = std::move(*d);
  return c;
}

using Vec = std::vector<double>;
using Mat = std::vector<Vec>; // row-major, rows of equal length

// max |a - b| <= tol * max |b| over one array.
bool close(const Vec &a, const Vec &b, double tol) {
  if (a.size() != b.size()) return false;
  double diff = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return false;
    diff = std::max(diff, std::abs(a[i] - b[i]));
    ref = std::max(ref, std::abs(b[i]));
  }
  return diff <= tol * ref;
}

std::string show(const Vec &v) {
  std::ostringstream s;
  s.precision(17);
  s << "[";
  for (size_t i = 0; i < v.size(); ++i) s << (i ? ", " : "") << v[i];
  return s.str() + "]";
}

// The slice of a flat param-layout array that belongs to param `name`.
Vec slice(const Program &p, const Vec &flat, const std::string &name) {
  const Decl *d = p.findParam(name);
  REQUIRE(d);
  return Vec(flat.begin() + d->offset, flat.begin() + d->offset + d->shape.numel());
}
Mat matrix(const Program &p, const Vec &flat, const std::string &name) {
  const Decl *d = p.findParam(name);
  REQUIRE(d);
  REQUIRE(d->shape.rank() == 2);
  Vec v = slice(p, flat, name);
  Mat m(static_cast<size_t>(d->shape[0]));
  for (size_t i = 0; i < m.size(); ++i)
    m[i] = Vec(v.begin() + static_cast<long>(i * static_cast<size_t>(d->shape[1])),
               v.begin() + static_cast<long>((i + 1) * static_cast<size_t>(d->shape[1])));
  return m;
}
Vec flatten(const Mat &m) {
  Vec v;
  for (auto &r : m) v.insert(v.end(), r.begin(), r.end());
  return v;
}

// Plain linear algebra for the hand-written references.
Vec matvec(const Mat &A, const Vec &x) {
  Vec y(A.size(), 0.0);
  for (size_t i = 0; i < A.size(); ++i)
    for (size_t j = 0; j < x.size(); ++j) y[i] += A[i][j] * x[j];
  return y;
}
Vec matTvec(const Mat &A, const Vec &y) { // Aᵀ y
  Vec x(A[0].size(), 0.0);
  for (size_t i = 0; i < A.size(); ++i)
    for (size_t j = 0; j < x.size(); ++j) x[j] += A[i][j] * y[i];
  return x;
}
Mat outer(const Vec &a, const Vec &b) {
  Mat m(a.size(), Vec(b.size()));
  for (size_t i = 0; i < a.size(); ++i)
    for (size_t j = 0; j < b.size(); ++j) m[i][j] = a[i] * b[j];
  return m;
}
void addTo(Mat &acc, const Mat &m, double scale = 1) {
  for (size_t i = 0; i < m.size(); ++i)
    for (size_t j = 0; j < m[i].size(); ++j) acc[i][j] += scale * m[i][j];
}
void addTo(Vec &acc, const Vec &v, double scale = 1) {
  for (size_t i = 0; i < v.size(); ++i) acc[i] += scale * v[i];
}
Mat zeros(size_t r, size_t c) { return Mat(r, Vec(c, 0.0)); }
double logistic(double a) { return 1 / (1 + std::exp(-a)); }
Vec map(Vec v, double (*f)(double)) {
  for (double &x : v) x = f(x);
  return v;
}
Vec add(Vec a, const Vec &b) {
  addTo(a, b);
  return a;
}

// Random examples: inputs and targets from `rng` in [lo, hi].
Vec randomVec(Rng &rng, size_t n, double lo, double hi) {
  Vec v(n);
  for (double &x : v) x = rng.uniform(lo, hi);
  return v;
}

// Checks the evaluator's loss and gradient of every param against a reference, in f64 to `tol64`
// and in f32 to `tol32`.
struct Reference {
  double loss = 0;
  std::vector<std::pair<std::string, Vec>> grads; // by param name
};
void checkAgainst(const Compiled &c, const Vec &P, const Vec &X, const Vec &T, int64_t rows,
                  const Reference &ref, double tol64, double tol32) {
  for (DType dt : {DType::F64, DType::F32}) {
    const double tol = dt == DType::F64 ? tol64 : tol32;
    INFO((dt == DType::F64 ? "f64" : "f32"));
    LossAndGradient r = interpretLossAndGradient(c.p, c.d, dt, P, X.data(), T.data(), rows);
    INFO("loss " << r.loss << " expected " << ref.loss);
    CHECK(std::abs(r.loss - ref.loss) <= tol * std::abs(ref.loss));
    REQUIRE(ref.grads.size() == c.p.params.size());
    for (auto &[name, want] : ref.grads) {
      Vec got = slice(c.p, r.grads, name);
      INFO("param " << name << "\n  got      " << show(got) << "\n  expected " << show(want));
      CHECK(close(got, want, tol));
    }
  }
}

// --- the lecture network ---------------------------------------------------------------------

const char *kLecture = R"(# Two logistic layers: hidden layer i, top layer j, squared error.
input  x[4]
target t[2]

param W_i[3, 4] ~ normal(0, 0.5)
param b_i[3]
param W_j[2, 3] ~ normal(0, 0.5)
param b_j[2]

y_i = logistic(W_i @ x + b_i)     # hidden layer i
z_j = W_j @ y_i + b_j             # total input of the top layer
y_j = logistic(z_j)               # top layer j

output y_j
loss E = 0.5 * sum((y_j - t)^2)
)";

} // namespace

TEST_CASE("programs: the lecture network matches its backprop formulas written by hand",
          "[programs]") {
  auto c = compile(kLecture, "lecture.nn");
  const Program &p = c->p;
  Rng rng(42);
  // Random params (not the initializer's: biases nonzero too) and a batch of 7 examples.
  Vec P = randomVec(rng, static_cast<size_t>(p.paramCount()), -1, 1);
  const int64_t rows = 7;
  Vec X = randomVec(rng, static_cast<size_t>(rows * 4), -2, 2);
  Vec T = randomVec(rng, static_cast<size_t>(rows * 2), 0, 1);

  const Mat Wi = matrix(p, P, "W_i"), Wj = matrix(p, P, "W_j");
  const Vec bi = slice(p, P, "b_i"), bj = slice(p, P, "b_j");
  Mat dWi = zeros(3, 4), dWj = zeros(2, 3);
  Vec dbi(3, 0.0), dbj(2, 0.0);
  double E = 0;
  for (int64_t e = 0; e < rows; ++e) {
    const Vec x(X.begin() + e * 4, X.begin() + e * 4 + 4), t(T.begin() + e * 2, T.begin() + e * 2 + 2);
    // Forward: y_i = logistic(W_i x + b_i), z_j = W_j y_i + b_j, y_j = logistic(z_j).
    const Vec yi = map(add(matvec(Wi, x), bi), logistic);
    const Vec zj = add(matvec(Wj, yi), bj);
    const Vec yj = map(zj, logistic);
    for (size_t j = 0; j < 2; ++j) E += 0.5 * (yj[j] - t[j]) * (yj[j] - t[j]);
    // Backward, the lecture's formulas.
    Vec dyj(2), dzj(2), dyi, dzi(3);
    for (size_t j = 0; j < 2; ++j) dyj[j] = yj[j] - t[j];                   // dE/dy_j = y_j - t
    for (size_t j = 0; j < 2; ++j) dzj[j] = dyj[j] * yj[j] * (1 - yj[j]);   // dE/dz_j = dE/dy_j y_j (1 - y_j)
    addTo(dWj, outer(dzj, yi));                                              // dE/dW_j = dE/dz_j y_iᵀ
    addTo(dbj, dzj);                                                         // dE/db_j = dE/dz_j
    dyi = matTvec(Wj, dzj);                                                  // dE/dy_i = W_jᵀ dE/dz_j
    for (size_t i = 0; i < 3; ++i) dzi[i] = dyi[i] * yi[i] * (1 - yi[i]);   // dE/dz_i = dE/dy_i y_i (1 - y_i)
    addTo(dWi, outer(dzi, x));                                               // dE/dW_i = dE/dz_i xᵀ
    addTo(dbi, dzi);                                                         // dE/db_i = dE/dz_i
  }
  // The objective is the mean over the batch.
  const double inv = 1.0 / static_cast<double>(rows);
  Reference ref;
  ref.loss = E * inv;
  auto scaled = [&](Vec v) {
    for (double &x : v) x *= inv;
    return v;
  };
  ref.grads = {{"W_i", scaled(flatten(dWi))},
               {"b_i", scaled(dbi)},
               {"W_j", scaled(flatten(dWj))},
               {"b_j", scaled(dbj)}};
  checkAgainst(*c, P, X, T, rows, ref, 1e-12, 1e-4);

  // The same with the initializer's params (seeded), as `nabla eval` without --params uses them.
  Vec P0 = initParams(p, 3);
  LossAndGradient a = interpretLossAndGradient(p, c->d, DType::F64, P0, X.data(), T.data(), rows);
  LossAndGradient b = interpretLossAndGradient(p, c->d, DType::F64, P, X.data(), T.data(), rows);
  CHECK(a.grads != b.grads); // different params, different gradients: the check above is not vacuous
}

// --- hand-derived gradients ------------------------------------------------------------------

TEST_CASE("programs: weight sharing sums the gradients of both uses", "[programs]") {
  auto c = compile(R"(
input x[3]
target t[3]
param W[3, 3]
h = tanh(W @ x)
y = W @ h             # the same W again
loss E = 0.5 * sum((y - t)^2)
)");
  Rng rng(5);
  Vec P = randomVec(rng, 9, -1, 1), X = randomVec(rng, 3, -1, 1), T = randomVec(rng, 3, 0, 1);
  Mat W = matrix(c->p, P, "W");
  Vec h = map(matvec(W, X), [](double v) { return std::tanh(v); });
  Vec y = matvec(W, h), dy(3), da(3);
  double E = 0;
  for (size_t i = 0; i < 3; ++i) dy[i] = y[i] - T[i], E += 0.5 * dy[i] * dy[i];
  Vec dh = matTvec(W, dy);
  for (size_t i = 0; i < 3; ++i) da[i] = dh[i] * (1 - h[i] * h[i]);
  Mat dW = outer(dy, h); // from y = W h
  addTo(dW, outer(da, X)); // from h = tanh(W x)
  checkAgainst(*c, P, X, T, 1, {E, {{"W", flatten(dW)}}}, 1e-12, 1e-4);
  // One use alone would be wrong: the sum is needed.
  LossAndGradient r = interpretLossAndGradient(c->p, c->d, DType::F64, P, X.data(), T.data(), 1);
  CHECK_FALSE(close(r.grads, flatten(outer(dy, h)), 1e-3));
}

TEST_CASE("programs: a skip connection adds its gradient to the layer's", "[programs]") {
  auto c = compile(R"(
input x[3]
target t[2]
param A[4, 3]
param B[4, 4]
param C[2, 4]
h = tanh(A @ x)
k = logistic(B @ h) + h     # skip connection
y = C @ k
loss E = 0.5 * sum((y - t)^2)
)");
  Rng rng(6);
  Vec P = randomVec(rng, static_cast<size_t>(c->p.paramCount()), -1, 1);
  const int64_t rows = 3;
  Vec X = randomVec(rng, 3 * rows, -1, 1), T = randomVec(rng, 2 * rows, 0, 1);
  Mat A = matrix(c->p, P, "A"), B = matrix(c->p, P, "B"), C = matrix(c->p, P, "C");
  Mat dA = zeros(4, 3), dB = zeros(4, 4), dC = zeros(2, 4);
  double E = 0;
  for (int64_t e = 0; e < rows; ++e) {
    Vec x(X.begin() + 3 * e, X.begin() + 3 * e + 3), t(T.begin() + 2 * e, T.begin() + 2 * e + 2);
    Vec h = map(matvec(A, x), [](double v) { return std::tanh(v); });
    Vec s = map(matvec(B, h), logistic);
    Vec k = add(s, h);
    Vec y = matvec(C, k), dy(2);
    for (size_t i = 0; i < 2; ++i) dy[i] = y[i] - t[i], E += 0.5 * dy[i] * dy[i];
    addTo(dC, outer(dy, k));
    Vec dk = matTvec(C, dy), ds(4), da(4);
    for (size_t i = 0; i < 4; ++i) ds[i] = dk[i] * s[i] * (1 - s[i]);
    addTo(dB, outer(ds, h));
    Vec dh = add(matTvec(B, ds), dk); // Σ over h's two consumers: through B, and the skip
    for (size_t i = 0; i < 4; ++i) da[i] = dh[i] * (1 - h[i] * h[i]);
    addTo(dA, outer(da, x));
  }
  const double n = static_cast<double>(rows);
  auto mean = [&](Mat m) {
    Vec v = flatten(m);
    for (double &x : v) x /= n;
    return v;
  };
  checkAgainst(*c, P, X, T, rows, {E / n, {{"A", mean(dA)}, {"B", mean(dB)}, {"C", mean(dC)}}}, 1e-12, 1e-4);
}

TEST_CASE("programs: mse", "[programs]") {
  auto c = compile(R"(
input x[3]
target t[2]
param W[2, 3]
loss E = mse(W @ x, t)
)");
  Rng rng(7);
  Vec P = randomVec(rng, 6, -1, 1), X = randomVec(rng, 3, -1, 1), T = randomVec(rng, 2, 0, 1);
  Vec y = matvec(matrix(c->p, P, "W"), X), dy(2);
  double E = 0;
  for (size_t i = 0; i < 2; ++i) E += (y[i] - T[i]) * (y[i] - T[i]) / 2, dy[i] = 2 * (y[i] - T[i]) / 2;
  checkAgainst(*c, P, X, T, 1, {E, {{"W", flatten(outer(dy, X))}}}, 1e-12, 1e-4);
}

TEST_CASE("programs: softmax + cross_entropy: dE/dz = softmax(z) - t", "[programs]") {
  auto c = compile(R"(
input x[3]
target t[4]
param W[4, 3]
param b[4]
z = W @ x + b
p = softmax(z)
loss E = cross_entropy(p, t)
)");
  Rng rng(8);
  Vec P = randomVec(rng, 16, -1, 1);
  const int64_t rows = 4;
  Vec X = randomVec(rng, 3 * rows, -1, 1), T(4 * rows, 0.0);
  for (int64_t e = 0; e < rows; ++e) T[static_cast<size_t>(4 * e + (e * 3) % 4)] = 1; // one-hot
  Mat W = matrix(c->p, P, "W");
  Vec bias = slice(c->p, P, "b");
  Mat dW = zeros(4, 3);
  Vec db(4, 0.0);
  double E = 0;
  for (int64_t e = 0; e < rows; ++e) {
    Vec x(X.begin() + 3 * e, X.begin() + 3 * e + 3), t(T.begin() + 4 * e, T.begin() + 4 * e + 4);
    Vec z = add(matvec(W, x), bias), sm(4), dz(4);
    double s = 0;
    for (double v : z) s += std::exp(v);
    for (size_t i = 0; i < 4; ++i) sm[i] = std::exp(z[i]) / s;
    for (size_t i = 0; i < 4; ++i) E -= t[i] * std::log(sm[i]);
    for (size_t i = 0; i < 4; ++i) dz[i] = sm[i] - t[i];
    addTo(dW, outer(dz, x));
    addTo(db, dz);
  }
  for (auto &r : dW) for (double &v : r) v /= rows;
  for (double &v : db) v /= rows;
  checkAgainst(*c, P, X, T, rows, {E / rows, {{"W", flatten(dW)}, {"b", db}}}, 1e-12, 1e-4);
}

TEST_CASE("programs: bce of logistic: dE/dz = p - t", "[programs]") {
  auto c = compile(R"(
input x[3]
target t
param w[3]
param b
p = logistic(dot(w, x) + b)
loss E = bce(p, t)
)");
  Rng rng(9);
  Vec P = randomVec(rng, 4, -1, 1);
  const int64_t rows = 5;
  Vec X = randomVec(rng, 3 * rows, -2, 2), T = randomVec(rng, rows, 0, 1); // soft targets too
  T[0] = 0, T[1] = 1;
  Vec w = slice(c->p, P, "w"), dw(3, 0.0);
  const double b = slice(c->p, P, "b")[0];
  double E = 0, db = 0;
  for (int64_t e = 0; e < rows; ++e) {
    const double *x = &X[static_cast<size_t>(3 * e)], t = T[static_cast<size_t>(e)];
    double z = b;
    for (size_t i = 0; i < 3; ++i) z += w[i] * x[i];
    const double p = logistic(z);
    E -= t * std::log(p) + (1 - t) * std::log(1 - p);
    for (size_t i = 0; i < 3; ++i) dw[i] += (p - t) * x[i];
    db += p - t;
  }
  for (double &v : dw) v /= rows;
  checkAgainst(*c, P, X, T, rows, {E / rows, {{"w", dw}, {"b", {db / rows}}}}, 1e-12, 1e-4);
}

// --- numerical stability ---------------------------------------------------------------------

namespace {

// Loss and gradient for one example of each row (rows evaluated one at a time, since the loss is
// a mean), in f32 and f64: finite and equal to the exact values to `tol` relative, with an
// absolute floor of tol * 1 for values that are exactly zero.
struct Exact {
  Vec x, t;
  double loss;
  Vec grad; // the flat gradient
};
void checkExact(const std::string &source, const std::vector<Exact> &cases) {
  auto c = compile(source);
  const Vec P = initParams(c->p, 0); // `= 1` params: deterministic
  for (const Exact &ex : cases) {
    for (DType dt : {DType::F64, DType::F32}) {
      const double tol = dt == DType::F64 ? 1e-13 : 1e-6;
      INFO((dt == DType::F64 ? "f64" : "f32") << " x = " << show(ex.x) << " t = " << show(ex.t));
      LossAndGradient r = interpretLossAndGradient(c->p, c->d, dt, P, ex.x.data(), ex.t.data(), 1);
      INFO("loss " << r.loss << ", expected " << ex.loss);
      INFO("grad " << show(r.grads) << ", expected " << show(ex.grad));
      CHECK(std::isfinite(r.loss));
      CHECK(std::abs(r.loss - ex.loss) <= tol * std::max(1.0, std::abs(ex.loss)));
      REQUIRE(r.grads.size() == ex.grad.size());
      for (size_t i = 0; i < ex.grad.size(); ++i) {
        CHECK(std::isfinite(r.grads[i]));
        CHECK(std::abs(r.grads[i] - ex.grad[i]) <= tol * std::max(1.0, std::abs(ex.grad[i])));
      }
    }
  }
}

const double s2 = 1 / (1 + std::exp(-2.0)); // logistic(2)

} // namespace

TEST_CASE("programs: stability of logistic at +-1000", "[programs][stability]") {
  // E = sum(logistic(w * x)), w = 1: logistic(1000) = 1, logistic(-1000) = 0 (e^-1000 underflows);
  // dE/dw = x logistic(x) (1 - logistic(x)) = 1000 * e^-1000 = 0 to double precision.
  checkExact("input x[3]\nparam w[3] = 1\nloss E = sum(logistic(w * x))\n",
             {{{1000, -1000, 2}, {}, 1 + 0 + s2, {0, 0, 2 * s2 * (1 - s2)}}});
}

TEST_CASE("programs: stability of softplus at +-1000", "[programs][stability]") {
  // softplus(1000) = 1000, softplus(-1000) = e^-1000 = 0; d/dw softplus(w x) = x logistic(w x).
  checkExact("input x[3]\nparam w[3] = 1\nloss E = sum(softplus(w * x))\n",
             {{{1000, -1000, 2}, {}, 1000 + 0 + std::log1p(std::exp(2.0)), {1000, 0, 2 * s2}}});
}

TEST_CASE("programs: stability of log_softmax at +-1000", "[programs][stability]") {
  // z = [1000, 0, -1000]: log_softmax(z) = [0, -1000, -2000] (the rest is e^-1000).
  // E = -sum(t * log_softmax(z)) = 0.3 * 1000 + 0.5 * 2000 = 1300;
  // dE/dz = softmax(z) sum(t) - t = [1, 0, 0] - t; dE/dw = dE/dz * x.
  checkExact("input x[3]\ntarget t[3]\nparam w[3] = 1\nloss E = -sum(t * log_softmax(w * x))\n",
             {{{1000, 0, -1000}, {0.2, 0.3, 0.5}, 1300, {0.8 * 1000, 0, -0.5 * -1000}}});
}

TEST_CASE("programs: stability of cross_entropy(softmax) at +-1000", "[programs][stability]") {
  // logits [1000, 0, -1000]: class 0 -> E = 0 and dE/dz = softmax - t = 0; class 1 -> E = 1000,
  // dE/dz = [1, -1, 0], dE/dw = dE/dz * x = [1000, 0, 0]; class 2 -> E = 2000, dE/dz = [1, 0, -1],
  // dE/dw = [1000, 0, 1000].
  const std::string src = "input x[3]\ntarget t[3]\nparam w[3] = 1\np = softmax(w * x)\n"
                          "loss E = cross_entropy(p, t)\n";
  checkExact(src, {{{1000, 0, -1000}, {1, 0, 0}, 0, {0, 0, 0}},
                   {{1000, 0, -1000}, {0, 1, 0}, 1000, {1000, 0, 0}},
                   {{1000, 0, -1000}, {0, 0, 1}, 2000, {1000, 0, 1000}}});
  // The same through `dense(..., softmax)`.
  const std::string dense = "input x[2]\ntarget t[2]\ny = dense(x, 2, softmax)\n"
                            "loss E = cross_entropy(y, t)\n";
  auto c = compile(dense);
  Vec P = {1, 0, 0, 1, 0, 0}; // y.W = identity, y.b = 0: z = x
  for (DType dt : {DType::F64, DType::F32}) {
    Vec x = {1000, -1000}, t = {0, 1};
    LossAndGradient r = interpretLossAndGradient(c->p, c->d, dt, P, x.data(), t.data(), 1);
    CHECK(r.loss == 2000);
    // dE/dz = softmax(z) - t = [1, -1]; dE/dW = dE/dz xᵀ; dE/db = dE/dz.
    CHECK(r.grads == Vec{1000, -1000, -1000, 1000, 1, -1});
  }
}

TEST_CASE("programs: stability of bce(logistic) at +-1000", "[programs][stability]") {
  // E = bce(logistic(z), t) with z = w x, w = 1: = softplus(z) - t z.
  // dE/dz = p - t, dE/dw = (p - t) x.
  const std::string src = "input x\ntarget t\nparam w = 1\np = logistic(w * x)\nloss E = bce(p, t)\n";
  checkExact(src, {{{1000}, {0}, 1000, {1000}},
                   {{-1000}, {1}, 1000, {1000}},
                   {{1000}, {1}, 0, {0}},
                   {{-1000}, {0}, 0, {0}},
                   {{1000}, {0.25}, 750, {750}}});
}

// --- every program with a loss, against finite differences ------------------------------------

namespace {

std::vector<std::filesystem::path> programsWithLoss() {
  namespace fs = std::filesystem;
  const fs::path root = NABLA_SOURCE_DIR;
  std::vector<fs::path> files;
  for (const char *dir : {"samples", "tests/golden/ok"}) {
    std::error_code ec;
    if (!fs::is_directory(root / dir, ec)) continue;
    for (auto &e : fs::directory_iterator(root / dir, ec))
      // Not the Fashion-MNIST samples: on gradcheck's inputs (0.5 to 1.5, scaled by 1/255) their
      // 784 relu and max-pool positions a channel sit within a step of a kink by the hundred, so
      // no difference quotient is smooth there; their forms are checked by the op table's finite
      // differences and the conv_pool and gru_sequence conformance cases (PyTorch's numbers).
      if (e.path().extension() == ".nn" && e.path().filename().string().rfind("fashion_", 0) != 0)
        files.push_back(e.path());
  }
  std::error_code ec;
  if (fs::is_directory(root / "tests/conformance/cases", ec))
    for (auto &e : fs::directory_iterator(root / "tests/conformance/cases", ec))
      if (fs::exists(e.path() / "program.nn")) files.push_back(e.path() / "program.nn");
  std::sort(files.begin(), files.end());
  return files;
}

std::string readText(const std::filesystem::path &path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

} // namespace

TEST_CASE("programs: every sample and golden program's gradient matches finite differences",
          "[programs][fd]") {
  int checked = 0;
  for (const auto &path : programsWithLoss()) {
    std::string diags;
    std::optional<Program> parsed = compileSource(SourceFile{path.string(), readText(path)}, diags);
    if (!parsed || !parsed->loss) continue; // error cases and forward-only programs
    INFO("program " << path.string());
    Compiled c{std::move(*parsed), {}};
    Expected<Derivation> d = derive(c.p);
    INFO((d ? std::string() : d.error().message));
    REQUIRE(d);
    c.d = std::move(*d);
    const Program &p = c.p;
    // Random params from the initializer, inputs in [0.5, 1.5], targets in [0, 1], as gradcheck.
    const Vec P = initParams(p, 0);
    Rng rng(1234);
    const int64_t rows = 3;
    const Vec X = randomVec(rng, static_cast<size_t>(rows * p.inputCount()), 0.5, 1.5);
    const Vec T = randomVec(rng, static_cast<size_t>(rows * p.targetCount()), 0, 1);
    LossAndGradient r = interpretLossAndGradient(p, c.d, DType::F64, P, X.data(), T.data(), rows);
    REQUIRE(std::isfinite(r.loss));
    CHECK(std::abs(r.loss - interpretLoss(p, c.d.loss, P, X.data(), T.data(), rows)) <=
          1e-14 * std::abs(r.loss));
    // Fourth-order central differences of the mean loss, in f64.
    auto loss = [&](const Vec &q) { return interpretLoss(p, c.d.loss, q, X.data(), T.data(), rows); };
    for (const Decl &decl : p.params) {
      Vec fd;
      const Vec got = slice(p, r.grads, decl.name);
      Vec q = P;
      // Every element of a small param; of a large one (the Fashion-MNIST samples have 200,000)
      // 24 elements spread evenly over it, the first and the last included.
      const int64_t numel = decl.shape.numel(), checks = std::min<int64_t>(numel, 24);
      Vec gotChecked;
      for (int64_t c = 0; c < checks; ++c) {
        const int64_t i = checks == 1 ? 0 : c * (numel - 1) / (checks - 1);
        gotChecked.push_back(got[static_cast<size_t>(i)]);
        const size_t at = static_cast<size_t>(decl.offset + i);
        const double h = 1e-5 * std::max(1.0, std::abs(P[at]));
        auto f = [&](double dx) {
          q[at] = P[at] + dx;
          return loss(q);
        };
        auto diff4 = [&](double step) {
          return (f(-2 * step) - 8 * f(-step) + 8 * f(step) - f(2 * step)) / (12 * step);
        };
        double d = diff4(h);
        // A relu, abs, max or pooling window whose kink lies within 2h of this point makes the
        // difference quotient straddle two slopes; a step 16 times smaller then gives another
        // value. Where the two steps disagree, the one nearer the gradient is kept: a wrong
        // gradient is far from both.
        const double gi = got[static_cast<size_t>(i)];
        if (std::abs(d - gi) > 1e-7 * std::max(1.0, std::abs(d))) {
          double d2 = diff4(h / 16);
          if (std::abs(d2 - gi) < std::abs(d - gi)) d = d2;
        }
        fd.push_back(d);
        q[at] = P[at];
      }
      INFO("param " << decl.name << "\n  gradient    " << show(gotChecked) << "\n  differences " << show(fd));
      // Relative to the largest magnitude; a gradient that is zero everywhere (a param the loss
      // does not depend on) must be matched to 1e-10 absolute.
      double diff = 0, ref = 1e-4;
      for (size_t i = 0; i < fd.size(); ++i)
        diff = std::max(diff, std::abs(gotChecked[i] - fd[i])), ref = std::max(ref, std::abs(fd[i]));
      CHECK(diff <= 1e-6 * ref);
    }
    ++checked;
  }
  // The conformance cases are always there; samples and golden programs join as they are written.
  CHECK(checked >= 5);
}

// --- the derivative printer ------------------------------------------------------------------

namespace {
bool hasLine(const std::string &text, const std::string &line) {
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);)
    if (l == line) return true;
  return false;
}
} // namespace

TEST_CASE("programs: the grad printer shows the lecture's formulas", "[programs][grad]") {
  auto c = compile(kLecture, "lecture.nn");
  const std::string text = printGradient(c->p, c->d, {});
  INFO(text);
  CHECK(hasLine(text, "dE/dy_j = y_j - t"));
  CHECK(hasLine(text, "dE/dz_j = dE/dy_j * y_j * (1 - y_j)"));
  CHECK(hasLine(text, "dE/dW_j = dE/dz_j ⊗ y_i"));
  CHECK(hasLine(text, "dE/db_j = dE/dz_j"));
  CHECK(hasLine(text, "dE/dy_i = W_jᵀ dE/dz_j"));
  // From the loss backwards: y_j before z_j before y_i.
  CHECK(text.find("dE/dy_j =") < text.find("dE/dz_j ="));
  CHECK(text.find("dE/dz_j =") < text.find("dE/dy_i ="));
  CHECK(text.find("dE/dy_i =") < text.find("dE/dW_i ="));

  const std::string ascii = printGradient(c->p, c->d, {true});
  INFO(ascii);
  CHECK(hasLine(ascii, "dE/dy_i = transpose(W_j) @ dE/dz_j"));
  CHECK(hasLine(ascii, "dE/dW_j = outer(dE/dz_j, y_i)"));
  for (unsigned char ch : ascii) CHECK(ch < 0x80);
}

TEST_CASE("programs: the grad printer shows a Σ over consumers", "[programs][grad]") {
  auto c = compile(R"(
input x[3]
target t[3]
param A[3, 3]
param B[3, 3]
h = tanh(A @ x)
u = B @ h
v = logistic(h)
loss E = 0.5 * sum((u + v - t)^2)
)");
  const std::string text = printGradient(c->p, c->d, {});
  INFO(text);
  std::istringstream in(text);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  auto at = std::find_if(lines.begin(), lines.end(), [](const std::string &l) {
    return l.rfind("dE/dh = ", 0) == 0;
  });
  REQUIRE(at != lines.end());
  CHECK(*at == "dE/dh = Σ over the 2 consumers of h:");
  REQUIRE(lines.end() - at >= 3);
  // One line per consumer, labelled, the second one starting with '+'.
  const std::string &first = *(at + 1), &second = *(at + 2);
  auto endsWith = [](const std::string &s, const std::string &suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  CHECK((endsWith(first, "← from u") || endsWith(first, "← from v")));
  CHECK((endsWith(second, "← from u") || endsWith(second, "← from v")));
  CHECK(endsWith(first, "← from u") != endsWith(second, "← from u"));
  CHECK(second.find_first_not_of(' ') == second.find('+'));
  CHECK((first.find("Bᵀ") != std::string::npos || second.find("Bᵀ") != std::string::npos));
  // A value with one consumer has no Σ.
  CHECK(text.find("dE/du = Σ") == std::string::npos);

  const std::string ascii = printGradient(c->p, c->d, {true});
  INFO(ascii);
  CHECK(hasLine(ascii, "dE/dh = sum over the 2 consumers of h:"));
  CHECK(ascii.find("<- from u") != std::string::npos);
  CHECK(ascii.find("<- from v") != std::string::npos);
}
