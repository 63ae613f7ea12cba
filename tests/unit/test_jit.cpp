// Tests of the Loop IR lowering, the LLVM backend and the JIT session, against the interpreter
// (the oracle), through the library API (Model):
//   - random well-formed .nn programs from a seed: DAGs over every op and form of the language
//     (the generator records which forms it produced, and the test fails when one is missing);
//     JIT and interpreter agree on loss, gradient and forward outputs in f64 (1e-12 relative)
//     and f32 (1e-4) at batch sizes 1, 2, 3, 7, 64 and 1000;
//   - every sample and every golden ok/ program, at batch sizes 1, 3 and 64;
//   - every function at -O0 and -O3;
//   - threads: 1, 2 and 3 agree, and one thread count gives bit-identical results twice;
//   - workspaceSize(n) is sane, and the raw entry points neither write outside the workspace,
//     outputs and grads they are given, nor read workspace they have not written;
//   - large arguments to the numerically stable functions; a batch of no examples; matrix
//     products of sizes around the backend's register tiles and reduction chunks.
// A failure prints the program's source. To explore more programs:
//   NABLA_FUZZ_SEED=123 NABLA_FUZZ_COUNT=500 nabla_tests "[jit-fuzz]"
#include <catch2/catch.hpp>

#include "Model.h"
#include "Random.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

using namespace nabla;

namespace {

// ---------------------------------------------------------------------------------------------
// Comparison: max |a - b| <= tol * max |b| over an array (b is the reference). Positions where
// both are NaN, or both the same infinity, count as equal and are left out of the maxima.
// One exception, for gradients only: an array that is numerically zero (max |b| <= 1e-6 * scale,
// `scale` the largest |value| of the loss and the whole gradient) passes when max |a - b| <=
// zeroTol * scale. Such an array is mathematically zero (the gradient of a sum of softmax rows,
// which is 1) and holds rounding noise in both engines, which no relative tolerance can compare.
std::string compareArrays(const double *a, const double *b, size_t count, double tol, const std::string &what,
                          double scale = 0, double zeroTol = 0) {
  double maxDiff = 0, maxRef = 0;
  size_t worst = 0;
  for (size_t i = 0; i < count; ++i) {
    if (std::isnan(a[i]) && std::isnan(b[i])) continue;
    if (std::isinf(a[i]) && a[i] == b[i]) continue;
    if (!std::isfinite(a[i]) || !std::isfinite(b[i]))
      return fmt::format("{}[{}]: {} vs reference {}", what, i, a[i], b[i]);
    maxRef = std::max(maxRef, std::abs(b[i]));
    double d = std::abs(a[i] - b[i]);
    if (d > maxDiff) {
      maxDiff = d;
      worst = i;
    }
  }
  if (maxDiff <= tol * maxRef) return "";
  if (maxRef <= 1e-6 * scale && maxDiff <= zeroTol * scale) return "";
  return fmt::format("{}: max |a - b| = {:.3e} > {:.0e} * max |b| = {:.3e} (relative {:.3e}); worst at [{}]: "
                     "{:.17g} vs reference {:.17g}",
                     what, maxDiff, tol, tol * maxRef, maxRef > 0 ? maxDiff / maxRef : INFINITY, worst,
                     a[worst], b[worst]);
}

std::string compareArrays(const std::vector<double> &a, const std::vector<double> &b, double tol,
                          const std::string &what) {
  if (a.size() != b.size()) return fmt::format("{}: {} values vs {} in the reference", what, a.size(), b.size());
  return compareArrays(a.data(), b.data(), a.size(), tol, what);
}

// Random data: inputs in [0.5, 1.5], targets in [0, 1].
struct Batch {
  std::vector<double> inputs, targets;
};
Batch randomBatch(const Model &m, int64_t n, uint64_t seed) {
  Rng rng(seed);
  Batch b;
  b.inputs.resize(static_cast<size_t>(n * m.inputCount()));
  b.targets.resize(static_cast<size_t>(n * m.targetCount()));
  for (double &x : b.inputs) x = rng.uniform(0.5, 1.5);
  for (double &t : b.targets) t = rng.uniform();
  return b;
}

Model compileOrFail(const std::string &src, const std::string &name, DType dtype, Engine engine, int opt = 2,
                    int jitModules = 0) {
  CompileOptions o;
  o.dtype = dtype;
  o.engine = engine;
  o.optLevel = opt;
  o.jitModules = jitModules;
  auto m = Model::compileString(src, name, o);
  if (!m) throw std::runtime_error("compiling " + name + " failed:\n" + m.error().message);
  return std::move(*m);
}

const char *dtypeName(DType d) { return d == DType::F64 ? "f64" : "f32"; }

// Compares model `a` with reference `b` (same source) on one random batch: the loss, the gradient
// of every param, and every forward output (over the batch). Returns every mismatch, one a line.
// With `finite`, a reference value that is NaN or infinite is a failure too (the generated
// programs keep every function on its domain, so a comparison never degenerates to NaN = NaN).
std::string compareModels(const Model &a, const Model &b, int64_t n, uint64_t seed, double tol, bool finite) {
  std::string problems;
  auto note = [&](const std::string &s) {
    if (!s.empty()) problems += s + "\n";
  };
  auto checkFinite = [&](const std::vector<double> &v, const char *what) {
    if (finite && !std::all_of(v.begin(), v.end(), [](double x) { return std::isfinite(x); }))
      note(fmt::format("the reference {} is not finite everywhere", what));
  };
  std::vector<double> params = b.initParams(seed);
  Batch data = randomBatch(b, n, seed + 1);
  if (b.hasLoss()) {
    std::vector<double> ga, gb;
    double la = a.lossAndGradient(params, data.inputs.data(), data.targets.data(), n, ga);
    double lb = b.lossAndGradient(params, data.inputs.data(), data.targets.data(), n, gb);
    checkFinite({lb}, "loss");
    checkFinite(gb, "gradient");
    note(compareArrays(&la, &lb, 1, tol, "loss"));
    double scale = std::abs(lb);
    for (double g : gb) scale = std::max(scale, std::abs(g));
    const double zeroTol = 100 * (b.dtype() == DType::F64 ? 0x1p-52 : 0x1p-23);
    if (ga.size() != gb.size()) note("gradient sizes differ");
    else
      for (const TensorInfo &p : b.params())
        note(compareArrays(ga.data() + p.offset, gb.data() + p.offset, static_cast<size_t>(p.shape.numel()), tol,
                           "d/d" + p.name, scale, zeroTol));
  }
  std::vector<double> ya = a.forward(params, data.inputs.data(), n);
  std::vector<double> yb = b.forward(params, data.inputs.data(), n);
  checkFinite(yb, "output");
  if (ya.size() != yb.size() || static_cast<int64_t>(yb.size()) != n * b.outputCount()) {
    note(fmt::format("forward: {} values vs {} in the reference", ya.size(), yb.size()));
  } else {
    // Output by output, over the whole batch.
    const int64_t stride = b.outputCount();
    for (const TensorInfo &o : b.outputs()) {
      std::vector<double> va, vb;
      for (int64_t e = 0; e < n; ++e)
        for (int64_t j = 0; j < o.shape.numel(); ++j) {
          va.push_back(ya[static_cast<size_t>(e * stride + o.offset + j)]);
          vb.push_back(yb[static_cast<size_t>(e * stride + o.offset + j)]);
        }
      note(compareArrays(va, vb, tol, "output " + o.name));
    }
  }
  return problems;
}

// JIT against the interpreter, in f64 (1e-12) and f32 (1e-4), at each batch size.
void checkJitAgainstInterp(const std::string &src, const std::string &name, const std::vector<int64_t> &sizes,
                           uint64_t seed, bool finite) {
  for (DType dt : {DType::F64, DType::F32}) {
    INFO(name << " in " << dtypeName(dt) << ", seed " << seed << "; the program:\n" << src);
    try {
      Model jit = compileOrFail(src, name, dt, Engine::Jit);
      Model interp = compileOrFail(src, name, dt, Engine::Interp);
      for (int64_t n : sizes) {
        INFO("batch " << n);
        std::string problems = compareModels(jit, interp, n, seed + static_cast<uint64_t>(n), dt == DType::F64 ? 1e-12 : 1e-4, finite);
        INFO(problems);
        CHECK(problems.empty());
      }
    } catch (const std::exception &e) { // one program's failure does not hide the others'
      FAIL_CHECK("exception: " << e.what());
    }
  }
}

std::string readText(const std::filesystem::path &p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

uint64_t envOr(const char *name, uint64_t fallback) {
  const char *v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

// ---------------------------------------------------------------------------------------------
// The program generator. A program is a DAG of named values over inputs, targets and params that
// are declared on demand; operands come from earlier values (the recent ones preferred, so values
// are shared by several consumers) or from fresh declarations. A heuristic bound on |x| and a
// lower bound for positive values keep every function on its domain and the numbers moderate:
// an operand that is too large is squashed (tanh, logistic, scaling), one that must be positive
// is made so (softplus(.) + 0.1, exp(.), ...). Every form it emits is recorded in `features`.

using Dims = std::vector<int64_t>;

struct Val {
  std::string text;   // a name, a call or a parenthesized expression
  Dims shape;
  double mag = 1;     // |x| <= mag (heuristic)
  double lo = 0;      // when > 0: x >= lo
  double hi = 1e300;  // x <= hi
  bool logistic = false; // the value is logistic(z) (bce's stable form applies)
  bool softmax = false;  // the value is softmax(z) (cross_entropy's stable form applies)
  bool named = false;    // a statement's value (counts towards the loss when unused)
  bool leaf = false;     // an input, target or param
  bool fromTarget = false; // computed from a target (cannot be an output)
  int uses = 0;
};

std::string dimsText(const Dims &d) {
  if (d.empty()) return "";
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

int64_t numel(const Dims &d) {
  int64_t n = 1;
  for (auto x : d) n *= x;
  return n;
}

bool broadcastDims(const Dims &a, const Dims &b, Dims &out) {
  Shape s;
  if (!broadcastShapes(Shape(a), Shape(b), s)) return false;
  out = s.dims;
  return true;
}

class Generator {
public:
  Generator(uint64_t seed, bool small, std::set<std::string> &features) : rng_(seed), small_(small), features_(features) {
    dims_ = small ? Dims{2, 3} : Dims{2, 3, 4, 5};
  }

  std::string run() {
    // A few declarations up front (the rest appear on demand).
    int nIn = 1 + pick(2);
    for (int i = 0; i < nIn; ++i) pool_.push_back(newInput(randomShape()));
    if (chance(0.6)) pool_.push_back(newParam(randomShape(), false));
    int statements = small_ ? 3 + pick(3) : 5 + pick(9);
    for (int i = 0; i < statements; ++i) statement();
    // Outputs: a few values, sometimes an input or a param; sometimes none.
    std::vector<std::string> outs;
    if (!chance(0.08)) {
      int k = 1 + pick(3);
      for (int i = 0; i < k; ++i) {
        const Val &v = pool_[static_cast<size_t>(chance(0.8) ? pickRecent(pool_.size()) : pick(static_cast<int>(pool_.size())))];
        if (!v.fromTarget && std::find(outs.begin(), outs.end(), v.text) == outs.end()) outs.push_back(v.text);
      }
      if (std::any_of(outs.begin(), outs.end(), [&](auto &o) { return isLeafName(o); })) feature("output of a leaf");
    }
    // The loss: every value that nothing consumed, reduced to a scalar, summed.
    std::vector<std::string> terms;
    for (Val &v : pool_)
      if (v.named && v.uses == 0) terms.push_back(lossTerm(v));
    if (terms.empty()) terms.push_back(lossTerm(pool_.back()));
    std::string loss;
    for (size_t i = 0; i < terms.size(); ++i) loss += (i ? " + " : "") + terms[i];
    for (const Val &v : pool_)
      if (v.named && v.uses >= 2) feature("shared value");

    std::string src = fmt::format("# generated program, seed-driven ({} statements)\n", statements);
    for (auto &d : decls_) src += d + "\n";
    for (auto &s : body_) src += s + "\n";
    if (!outs.empty()) {
      src += "output ";
      for (size_t i = 0; i < outs.size(); ++i) src += (i ? ", " : "") + outs[i];
      src += "\n";
    }
    src += "loss E = " + loss + "\n";
    return src;
  }

private:
  // --- randomness ----------------------------------------------------------------------------
  int pick(int n) { return static_cast<int>(rng_.next() % static_cast<uint64_t>(n)); }
  bool chance(double p) { return rng_.uniform() < p; }
  int64_t dim() { return dims_[static_cast<size_t>(pick(static_cast<int>(dims_.size())))]; }
  // Recent entries are likelier: half the time one of the last three.
  int pickRecent(size_t size) {
    int s = static_cast<int>(size);
    if (chance(0.5)) return std::max(0, s - 1 - pick(3));
    return pick(s);
  }
  Dims randomShape() {
    switch (pick(8)) {
    case 0: return {};
    case 1:
    case 2: return {dim()};
    case 3: return {dim(), dim()};
    case 4: return {dim(), 1};
    case 5: return {1, dim()};
    case 6: return {dim(), dim(), dim()};
    default: return chance(0.5) ? Dims{dim(), 1, dim()} : Dims{2, dim(), dim(), 2};
    }
  }
  Dims nonScalarShape() {
    Dims d = randomShape();
    while (d.empty()) d = randomShape();
    return d;
  }
  void feature(const std::string &f) { features_.insert(f); }
  std::string fresh(const char *prefix) { return prefix + std::to_string(id_++); }
  bool isLeafName(const std::string &s) {
    return std::any_of(pool_.begin(), pool_.end(), [&](const Val &v) { return v.leaf && v.text == s; });
  }

  // --- declarations --------------------------------------------------------------------------
  Val newInput(const Dims &s) {
    Val v;
    v.text = fresh("x");
    v.shape = s;
    v.mag = 1.5;
    v.lo = 0.5;
    v.hi = 1.5;
    v.leaf = true;
    decls_.push_back("input " + v.text + dimsText(s));
    if (s.empty()) feature("scalar input");
    if (s.size() == 2) feature("rank-2 input");
    if (s.size() == 3) feature("rank-3 input");
    if (s.size() == 4) feature("rank-4 input");
    return v;
  }
  Val newTarget(const Dims &s) {
    Val v;
    v.text = fresh("t");
    v.shape = s;
    v.mag = 1;
    v.hi = 1;
    v.leaf = true;
    decls_.push_back("target " + v.text + dimsText(s));
    return v;
  }
  Val newParam(const Dims &s, bool positive) {
    Val v;
    v.text = fresh("w");
    v.shape = s;
    v.leaf = true;
    std::string init;
    int choice = positive ? 0 : pick(s.size() == 2 ? 8 : 6);
    switch (choice) {
    case 0: init = " ~ uniform(0.5, 1.5)"; v.mag = 1.5; v.lo = 0.5; v.hi = 1.5; feature("init uniform"); break;
    case 1: init = " ~ normal(0, 0.5)"; v.mag = 2; feature("init normal"); break;
    case 2: init = " ~ uniform(-1, 1)"; v.mag = 1; feature("init uniform"); break;
    case 3: init = " = 0.25"; v.mag = 0.25; v.lo = 0.25; v.hi = 0.25; feature("init constant"); break;
    case 4: init = " ~ normal(-0.5, 2e-1)"; v.mag = 1.5; feature("init normal"); break;
    case 5:
      init = "";
      v.mag = s.size() == 2 ? 1.3 : 0.01; // glorot, or 0
      feature("init default");
      break;
    case 6: init = " ~ glorot"; v.mag = 1.3; feature("init glorot"); break;
    default: init = " = -1.5"; v.mag = 1.5; feature("init constant"); break;
    }
    decls_.push_back("param " + v.text + dimsText(s) + init);
    return v;
  }

  // --- operands --------------------------------------------------------------------------------
  // An operand satisfying `ok`: an existing value (recent ones likelier) or, when none fits or
  // now and then, `make()`.
  Val operand(const std::function<bool(const Val &)> &ok, const std::function<Val()> &make) {
    std::vector<size_t> fit;
    for (size_t i = 0; i < pool_.size(); ++i)
      if (ok(pool_[i])) fit.push_back(i);
    if (fit.empty() || chance(0.15)) {
      Val v = make();
      pool_.push_back(v);
      return use(pool_.size() - 1);
    }
    return use(fit[static_cast<size_t>(pickRecent(fit.size()))]);
  }
  Val use(size_t i) {
    ++pool_[i].uses;
    return pool_[i];
  }
  Val freshLeaf(const Dims &s, bool positive = false) {
    return chance(positive ? 0.5 : 0.4) ? newInput(s) : newParam(s, positive);
  }
  Val withShape(const Dims &s) {
    return operand([&](const Val &v) { return v.shape == s; }, [&] { return freshLeaf(s); });
  }
  Val any() {
    return operand([](const Val &) { return true; }, [&] { return freshLeaf(randomShape()); });
  }
  Val target(const Dims &s) {
    // Targets are consumed by the losses only, so they live apart from the pool.
    for (size_t i = 0; i < targets_.size(); ++i)
      if (targets_[i].shape == s && chance(0.7)) return targets_[i];
    targets_.push_back(newTarget(s));
    return targets_.back();
  }

  // Inline wrappers (always one call or one parenthesized expression).
  static Val wrap(const Val &in, std::string text, double mag, double lo, double hi) {
    Val v = in;
    v.text = std::move(text);
    v.mag = mag;
    v.lo = lo;
    v.hi = hi;
    v.logistic = v.softmax = v.named = v.leaf = false;
    return v;
  }
  // |x| <= limit.
  Val bounded(const Val &v, double limit) {
    if (v.mag <= limit) return v;
    switch (pick(3)) {
    case 0: return wrap(v, "tanh(" + v.text + ")", 1, 0, 1);
    case 1: {
      Val r = wrap(v, "logistic(" + v.text + ")", 1, 1 / (1 + std::exp(v.mag)), 1);
      return r;
    }
    default: {
      double k = std::ceil(v.mag / limit);
      return wrap(v, fmt::format("({} / {})", v.text, k), v.mag / k, v.lo / k, v.hi / k);
    }
    }
  }
  // x >= minLo (and moderate).
  Val positive(const Val &v, double minLo) {
    if (v.lo >= minLo) return v;
    Val b = bounded(v, 4);
    switch (pick(4)) {
    case 0: return wrap(b, "(softplus(" + b.text + ") + 0.1)", b.mag + 0.8, 0.1 + std::log1p(std::exp(-b.mag)), b.mag + 0.8);
    case 1: return wrap(b, "exp(" + b.text + ")", std::exp(b.mag), std::exp(-b.mag), std::exp(b.mag));
    case 2: return wrap(b, "(logistic(" + b.text + ") + 0.2)", 1.2, 0.2, 1.2);
    default: return wrap(b, "(" + b.text + " ^ 2 + 0.5)", b.mag * b.mag + 0.5, 0.5, b.mag * b.mag + 0.5);
    }
  }
  // The rows of a softmax sum to 1: its sum has a gradient that is mathematically zero and
  // numerically rounding noise, which no relative tolerance can compare. Squared, it is not.
  Val notConstantSum(const Val &v) {
    if (!v.softmax) return v;
    feature("sum of a squared softmax");
    return wrap(v, "(" + v.text + " ^ 2)", 1, v.lo * v.lo, 1);
  }
  // 0 < x < 1 away from both ends: bce's probabilities other than logistic(z) and softmax(z).
  Val probability(const Val &v, bool expSoftplus) {
    Val b = bounded(v, 2);
    if (expSoftplus) {
      feature("bce of exp(-softplus)");
      return wrap(b, "exp(-softplus(" + b.text + "))", 1, 0.05, 0.9);
    }
    feature("bce of scaled logistic");
    return wrap(b, "(0.5 * logistic(" + b.text + ") + 0.25)", 0.75, 0.25, 0.75);
  }

  // --- statements --------------------------------------------------------------------------------
  void define(Val v, const std::string &rhs) { defineAs(fresh("v"), std::move(v), rhs); }
  void defineAs(const std::string &name, Val v, const std::string &rhs) {
    v.text = name;
    v.named = true;
    v.leaf = false;
    v.uses = 0;
    v.fromTarget = mentionsTarget(rhs);
    body_.push_back(name + " = " + rhs);
    pool_.push_back(v);
  }
  // Whether an expression reads a target, directly or through a value (outputs must not).
  bool mentionsTarget(const std::string &rhs) const {
    for (size_t i = 0; i < rhs.size();) {
      if (!std::isalpha(static_cast<unsigned char>(rhs[i])) && rhs[i] != '_') {
        ++i;
        continue;
      }
      size_t j = i;
      while (j < rhs.size() && (std::isalnum(static_cast<unsigned char>(rhs[j])) || rhs[j] == '_' || rhs[j] == '.')) ++j;
      std::string word = rhs.substr(i, j - i);
      for (const Val &t : targets_)
        if (t.text == word) return true;
      for (const Val &v : pool_)
        if (v.text == word && v.fromTarget) return true;
      i = j;
    }
    return false;
  }

  void statement() {
    switch (pick(20)) {
    case 14: return newFunction();
    case 15: return extremum();
    case 16: return indexing();
    case 17: return joinOrReshape();
    case 18: return image();
    case 19: return reduction();
    case 0:
    case 1: return unaryFunction();
    case 2: return power();
    case 3:
    case 4: return binary();
    case 5: return matmul();
    case 6:
    case 7: return reduction();
    case 8: return softmaxLike();
    case 9: return transposeOrDot();
    case 10: return dense();
    case 11:
    case 12: return lossFunction();
    default: return sharedDense();
    }
  }

  void unaryFunction() {
    static const char *fns[] = {"logistic", "sigmoid", "tanh", "relu", "softplus", "exp", "log", "sqrt", "abs", "neg"};
    std::string f = fns[pick(10)];
    feature("fn " + f);
    Val a = any();
    if (f == "logistic" || f == "sigmoid") {
      Val r = wrap(a, "", 1, 1 / (1 + std::exp(a.mag)), 1 / (1 + std::exp(-a.mag)));
      r.logistic = true;
      return define(r, f + "(" + a.text + ")");
    }
    if (f == "tanh") return define(wrap(a, "", std::min(1.0, a.mag), 0, 1), "tanh(" + a.text + ")");
    if (f == "relu") return define(wrap(a, "", a.mag, 0, a.mag), "relu(" + a.text + ")");
    if (f == "softplus") {
      double lo = std::log1p(std::exp(-a.mag));
      return define(wrap(a, "", a.mag + 0.7, lo, a.mag + 0.7), "softplus(" + a.text + ")");
    }
    if (f == "abs") return define(wrap(a, "", a.mag, a.lo, a.mag), "abs(" + a.text + ")");
    if (f == "neg") return define(wrap(a, "", a.mag, 0, a.mag), "-" + a.text);
    if (f == "exp") {
      Val b = bounded(a, 3);
      return define(wrap(b, "", std::exp(b.mag), std::exp(-b.mag), std::exp(b.mag)), "exp(" + b.text + ")");
    }
    Val p = positive(a, f == "log" ? 0.05 : 0.01);
    if (f == "log") {
      double mag = std::max(std::abs(std::log(p.lo)), std::abs(std::log(std::max(p.mag, 1.0))));
      return define(wrap(p, "", mag, 0, mag), "log(" + p.text + ")");
    }
    return define(wrap(p, "", std::sqrt(p.mag), std::sqrt(p.lo), std::sqrt(p.mag)), "sqrt(" + p.text + ")");
  }

  // gelu, elu, erf, sin, cos, leaky_relu; maximum, minimum (broadcasting).
  void newFunction() {
    static const char *fns[] = {"gelu", "elu", "erf", "sin", "cos", "leaky_relu", "maximum", "minimum"};
    std::string f = fns[pick(8)];
    Val a = any();
    if (f == "maximum" || f == "minimum") {
      Dims as = a.shape;
      Val b = operand([&](const Val &v) { Dims o; return v.text != a.text && broadcastDims(as, v.shape, o); },
                      [&] { return freshLeaf(chance(0.5) ? as : Dims{}); });
      if (chance(0.5)) std::swap(a, b);
      Dims out;
      broadcastDims(a.shape, b.shape, out);
      feature("fn " + f + (a.shape == b.shape ? "" : " broadcasting"));
      Val r = wrap(a, "", std::max(a.mag, b.mag), 0, std::max(a.hi, b.hi));
      if (f == "maximum") r.lo = std::max(a.lo, b.lo);
      else if (a.lo > 0 && b.lo > 0) r.lo = std::min(a.lo, b.lo);
      r.shape = out;
      return define(r, f + "(" + a.text + ", " + b.text + ")");
    }
    if (f == "leaky_relu") {
      const bool slope = chance(0.5);
      feature(slope ? "fn leaky_relu slope" : "fn leaky_relu");
      return define(wrap(a, "", a.mag * (slope ? 2 : 1), 0, a.mag * (slope ? 2 : 1)),
                    slope ? "leaky_relu(" + a.text + ", slope=-2)" : "leaky_relu(" + a.text + ")");
    }
    feature("fn " + f);
    double mag = f == "gelu" ? a.mag : f == "elu" ? std::max(a.mag, 1.0) : 1;
    define(wrap(a, "", mag, 0, mag), f + "(" + a.text + ")");
  }

  // max/min of all elements or along an axis (keepdims sometimes), of any rank.
  void extremum() {
    const bool mx = chance(0.5);
    Val a = operand([](const Val &v) { return !v.shape.empty(); }, [&] { return freshLeaf(nonScalarShape()); });
    const std::string f = mx ? "max" : "min";
    Val r = wrap(a, "", a.mag, a.lo, a.hi);
    if (a.shape.empty() || chance(0.3)) {
      feature(f + " of all");
      r.shape = {};
      return define(r, f + "(" + a.text + ")");
    }
    const int axis = pick(static_cast<int>(a.shape.size()));
    const bool keep = chance(0.3);
    feature(fmt::format("{} axis of rank {}{}", f, a.shape.size(), keep ? " keepdims" : ""));
    r.shape = a.shape;
    if (keep) r.shape[static_cast<size_t>(axis)] = 1;
    else r.shape.erase(r.shape.begin() + axis);
    define(r, fmt::format("{}({}, {}{})", f, a.text, axis, keep ? ", keepdims=true" : ""));
  }

  // x[i], x[a:b], x[:, i], negative indices, several axes.
  void indexing() {
    Val a = operand([](const Val &v) { return !v.shape.empty(); }, [&] { return freshLeaf(nonScalarShape()); });
    Val r = wrap(a, "", a.mag, a.lo, a.hi);
    Dims out;
    std::string idx;
    const size_t axes = 1 + static_cast<size_t>(pick(static_cast<int>(std::min<size_t>(a.shape.size(), 2))));
    for (size_t d = 0; d < a.shape.size(); ++d) {
      const int64_t n = a.shape[d];
      std::string part;
      if (d >= axes) {
        out.push_back(n);
        continue;
      }
      switch (pick(4)) {
      case 0: part = std::to_string(pick(static_cast<int>(n))); feature("index"); break;
      case 1: part = std::to_string(-1 - pick(static_cast<int>(n))); feature("negative index"); break;
      case 2: {
        int64_t lo = pick(static_cast<int>(n)), hi = lo + 1 + pick(static_cast<int>(n - lo));
        part = fmt::format("{}:{}", lo, hi);
        out.push_back(hi - lo);
        feature("slice");
        break;
      }
      default:
        if (d + 1 < axes || chance(0.5)) {
          part = ":";
          out.push_back(n);
        } else {
          part = fmt::format("-{}:", n);
          out.push_back(n);
          feature("negative slice");
        }
        break;
      }
      idx += (idx.empty() ? "" : ", ") + part;
    }
    if (axes > 1) feature("index of two axes");
    r.shape = out;
    define(r, a.text + "[" + idx + "]");
  }

  // concat along an axis; reshape to another factorization; flatten.
  void joinOrReshape() {
    Val a = operand([](const Val &v) { return !v.shape.empty(); }, [&] { return freshLeaf(nonScalarShape()); });
    if (chance(0.5)) {
      const int axis = pick(static_cast<int>(a.shape.size()));
      Dims bs = a.shape;
      bs[static_cast<size_t>(axis)] = dim();
      Val b = withShape(bs);
      Val r = wrap(a, "", std::max(a.mag, b.mag), std::min(a.lo, b.lo), std::max(a.hi, b.hi));
      r.shape = a.shape;
      r.shape[static_cast<size_t>(axis)] += bs[static_cast<size_t>(axis)];
      feature(axis == 0 ? "concat" : "concat axis");
      return define(r, axis == 0 && chance(0.5) ? fmt::format("concat({}, {})", a.text, b.text)
                                                : fmt::format("concat({}, {}, axis={})", a.text, b.text, axis));
    }
    Val r = wrap(a, "", a.mag, a.lo, a.hi);
    const int64_t n = numel(a.shape);
    if (chance(0.3) || n == 1) {
      feature("flatten");
      r.shape = {n};
      return define(r, "flatten(" + a.text + ")");
    }
    // A factorization of n: its smallest factor first, the rest, sometimes a leading 1.
    int64_t f = 2;
    while (n % f != 0) ++f;
    r.shape = f == n ? Dims{1, n} : Dims{f, n / f};
    if (chance(0.3)) r.shape.insert(r.shape.begin(), 1);
    feature(fmt::format("reshape to rank {}", r.shape.size()));
    define(r, fmt::format("reshape({}, {})", a.text, dimsText(r.shape)));
  }

  // conv2d (stride, padding, bias, kh != kw), the conv sugar, max and average pools, of an image
  // [C, H, W].
  void image() {
    const int64_t C = 1 + pick(2), H = 4 + pick(4), W = 4 + pick(4);
    Val x = bounded(withShape({C, H, W}), 1.5);
    const int kind = pick(4);
    const int64_t stride = 1 + pick(2);
    if (kind < 2) {
      const int64_t F = 1 + pick(3), kh = 1 + pick(3), kw = kind == 0 ? kh : 1 + pick(3), pad = pick(2);
      const int64_t Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
      const double mag = static_cast<double>(C * kh * kw) * x.mag * 0.9 + 0.5;
      Val r = wrap(x, "", mag, 0, mag);
      r.shape = {F, Ho, Wo};
      if (kind == 1 && chance(0.5)) {
        feature("conv sugar");
        const std::string name = fresh("c");
        r.mag = r.hi = 1;
        return defineAs(name, r, fmt::format("conv({}, {}, {}, tanh, stride={}, padding={})", x.text, F, kh, stride, pad));
      }
      Val K = newParamWithInit({F, C, kh, kw}, " ~ normal(0, 0.3)");
      std::string bias;
      if (chance(0.5)) {
        bias = ", " + newParamWithInit({F}, " ~ normal(0, 0.3)").text;
        feature("conv2d bias");
      }
      feature(kh == kw ? "conv2d" : "conv2d kh != kw");
      if (stride > 1) feature("conv2d stride");
      if (pad > 0) feature("conv2d padding");
      return define(r, fmt::format("conv2d({}, {}{}, stride={}, padding={})", x.text, K.text, bias, stride, pad));
    }
    const int64_t k = 1 + pick(3);
    Val r = wrap(x, "", x.mag, x.lo, x.hi);
    r.shape = {C, (H - k) / stride + 1, (W - k) / stride + 1};
    const bool mx = kind == 2;
    feature(std::string(mx ? "maxpool2d" : "avgpool2d") + (stride < k ? " overlapping" : ""));
    define(r, stride == k && chance(0.5) ? fmt::format("{}({}, {})", mx ? "maxpool2d" : "avgpool2d", x.text, k)
                                         : fmt::format("{}({}, {}, stride={})", mx ? "maxpool2d" : "avgpool2d", x.text, k, stride));
  }
  Val newParamWithInit(const Dims &s, const std::string &init) {
    Val v;
    v.text = fresh("w");
    v.shape = s;
    v.leaf = true;
    v.mag = 1;
    decls_.push_back("param " + v.text + dimsText(s) + init);
    pool_.push_back(v);
    return use(pool_.size() - 1);
  }

  void power() {
    static const char *exps[] = {"2", "3", "0.5", "-1"};
    std::string e = exps[pick(4)];
    feature("pow " + e);
    Val a = any();
    if (e == "2") {
      Val b = bounded(a, 4);
      return define(wrap(b, "", b.mag * b.mag, b.lo * b.lo, b.mag * b.mag), b.text + " ^ 2");
    }
    if (e == "3") {
      Val b = bounded(a, 2.5);
      double m = b.mag * b.mag * b.mag;
      return define(wrap(b, "", m, b.lo * b.lo * b.lo, m), b.text + " ^ 3");
    }
    if (e == "0.5") {
      Val p = positive(a, 0.01);
      return define(wrap(p, "", std::sqrt(p.mag), std::sqrt(p.lo), std::sqrt(p.mag)), p.text + " ^ 0.5");
    }
    Val p = positive(a, 0.2);
    return define(wrap(p, "", 1 / p.lo, 1 / p.mag, 1 / p.lo), p.text + " ^ -1");
  }

  // The shapes that broadcast with `s` (to a rank <= 2 result).
  void noteBroadcast(const Dims &a, const Dims &b) {
    if (a == b) return feature("broadcast: same shape");
    if (a.empty() || b.empty()) return feature("broadcast: scalar");
    auto kind = [](const Dims &d) {
      if (d.size() == 1) return std::string("v");
      if (d[0] == 1 && d[1] != 1) return std::string("row");
      if (d[1] == 1 && d[0] != 1) return std::string("col");
      return std::string("mat");
    };
    std::string ka = kind(a), kb = kind(b);
    if (ka > kb) std::swap(ka, kb);
    feature("broadcast: " + ka + " with " + kb);
  }

  void binary() {
    static const char ops[] = {'+', '-', '*', '/'};
    char op = ops[pick(4)];
    feature(std::string("binary ") + op);
    Val a, b;
    if (chance(0.5)) {
      // One of the broadcasting forms, by name: [m,n] with [], [n], [m,1] or [1,n]; [m,1] with
      // [1,n] or [n].
      int64_t m = dim(), n = dim();
      while (n == m) n = dim();
      Dims sa, sb;
      switch (pick(6)) {
      case 0: sa = {m, n}; sb = {}; break;
      case 1: sa = {m, n}; sb = {n}; break;
      case 2: sa = {m, n}; sb = {m, 1}; break;
      case 3: sa = {m, n}; sb = {1, n}; break;
      case 4: sa = {m, 1}; sb = {1, n}; break;
      default: sa = {m, 1}; sb = {n}; break;
      }
      a = withShape(sa);
      b = withShape(sb);
    } else if (chance(0.2)) {
      // A literal operand.
      a = any();
      static const char *lits[] = {"2", "0.5", "1e-1", "3"};
      std::string lit = lits[pick(4)];
      double v = std::stod(lit);
      b = wrap(a, lit, v, v, v);
      b.shape = {};
      feature("binary with a literal");
    } else {
      // Any two values of compatible shapes.
      a = any();
      Dims as = a.shape;
      b = operand([&](const Val &v) { Dims o; return !chance(0.25) && broadcastDims(as, v.shape, o); },
                  [&] {
                    // A fresh leaf of a compatible shape.
                    std::vector<Dims> options{{}, as};
                    if (as.size() == 1) options.insert(options.end(), {Dims{dim(), as[0]}, Dims{1, as[0]}, Dims{as[0], 1}});
                    if (as.size() == 2) {
                      options.push_back({as[1]});
                      options.push_back({as[0], 1});
                      options.push_back({1, as[1]});
                    }
                    if (as.empty()) options.push_back(randomShape());
                    return freshLeaf(options[static_cast<size_t>(pick(static_cast<int>(options.size())))]);
                  });
    }
    if (chance(0.5) && b.text != a.text) std::swap(a, b); // literal or not, either side
    Dims out;
    broadcastDims(a.shape, b.shape, out);
    noteBroadcast(a.shape, b.shape);
    Val r = wrap(a, "", 1, 0, 1);
    r.shape = out;
    std::string rhs;
    switch (op) {
    case '+':
    case '-':
      r.mag = a.mag + b.mag;
      r.hi = r.mag;
      if (op == '+' && a.lo > 0 && b.lo > 0) r.lo = a.lo + b.lo;
      rhs = a.text + " " + op + " " + b.text;
      break;
    case '*': {
      if (a.mag * b.mag > 30) a = bounded(a, 3);
      if (a.mag * b.mag > 30) b = bounded(b, 3);
      r.mag = r.hi = a.mag * b.mag;
      if (a.lo > 0 && b.lo > 0) r.lo = a.lo * b.lo;
      rhs = a.text + " * " + b.text;
      break;
    }
    default: {
      b = positive(b, 0.2);
      if (a.mag / b.lo > 30) a = bounded(a, 3);
      r.mag = r.hi = a.mag / b.lo;
      if (a.lo > 0) r.lo = a.lo / b.mag;
      rhs = a.text + " / " + b.text;
      break;
    }
    }
    define(r, rhs);
  }

  // All four forms of @, the matrix operands sometimes transposed inline.
  void matmul() {
    int form = pick(4);
    Val a, b;
    int64_t inner = 0;
    Dims out;
    auto matrix = [&](const Dims &want) -> Val {
      // An existing [r, c] value, or transpose() of an existing [c, r] one, or a fresh leaf.
      if (want[0] != want[1] && chance(0.4)) {
        Val t = withShape({want[1], want[0]});
        feature("transpose inline");
        Val r = wrap(t, "transpose(" + t.text + ")", t.mag, t.lo, t.hi);
        r.shape = want;
        return r;
      }
      return withShape(want);
    };
    switch (form) {
    case 0: { // [m,n] @ [n,p]
      feature("matmul [m,n]@[n,p]");
      a = operand([](const Val &v) { return v.shape.size() == 2; }, [&] { return freshLeaf({dim(), dim()}); });
      inner = a.shape[1];
      Dims want{inner, dim()};
      b = matrix(want);
      b.shape = want;
      out = {a.shape[0], want[1]};
      break;
    }
    case 1: { // [m,n] @ [n]
      feature("matmul [m,n]@[n]");
      b = operand([](const Val &v) { return v.shape.size() == 1; }, [&] { return freshLeaf({dim()}); });
      inner = b.shape[0];
      Dims want{dim(), inner};
      a = matrix(want);
      a.shape = want;
      out = {want[0]};
      break;
    }
    case 2: { // [n] @ [n,p]
      feature("matmul [n]@[n,p]");
      a = operand([](const Val &v) { return v.shape.size() == 1; }, [&] { return freshLeaf({dim()}); });
      inner = a.shape[0];
      Dims want{inner, dim()};
      b = matrix(want);
      b.shape = want;
      out = {want[1]};
      break;
    }
    default: { // [n] @ [n]
      feature("matmul [n]@[n]");
      a = operand([](const Val &v) { return v.shape.size() == 1; }, [&] { return freshLeaf({dim()}); });
      inner = a.shape[0];
      b = withShape({inner});
      out = {};
      break;
    }
    }
    if (a.mag * b.mag * static_cast<double>(inner) > 30) a = bounded(a, 1.5);
    if (a.mag * b.mag * static_cast<double>(inner) > 30) b = bounded(b, 1.5);
    Val r = wrap(a, "", a.mag * b.mag * static_cast<double>(inner), 0, 0);
    r.hi = r.mag;
    if (a.lo > 0 && b.lo > 0) r.lo = a.lo * b.lo * static_cast<double>(inner);
    r.shape = out;
    define(r, a.text + " @ " + b.text);
  }

  void reduction() {
    bool mean = chance(0.5);
    std::string f = mean ? "mean" : "sum";
    // All elements of a vector or a matrix, axis 0 of a vector, axis 0 or 1 of a matrix; any
    // axis of rank 3 and 4 (keepdims sometimes).
    const int form = pick(7);
    if (form >= 5) {
      Val a = operand([&](const Val &v) { return v.shape.size() >= 3; },
                      [&] { return freshLeaf(chance(0.5) ? Dims{dim(), dim(), dim()} : Dims{2, dim(), 3, dim()}); });
      a = notConstantSum(a);
      const int axis = pick(static_cast<int>(a.shape.size()));
      const bool keep = chance(0.3);
      const int64_t count = a.shape[static_cast<size_t>(axis)];
      Val r = wrap(a, "", a.mag * (mean ? 1 : static_cast<double>(count)), a.lo * (mean ? 1 : static_cast<double>(count)),
                   a.hi * (mean ? 1 : static_cast<double>(count)));
      r.shape = a.shape;
      if (keep) r.shape[static_cast<size_t>(axis)] = 1;
      else r.shape.erase(r.shape.begin() + axis);
      feature(fmt::format("{} axis of rank {}{}", f, a.shape.size(), keep ? " keepdims" : ""));
      return define(r, fmt::format("{}({}, {}{})", f, a.text, axis, keep ? ", keepdims=true" : ""));
    }
    const size_t rank = form == 0 || form == 2 ? 1 : 2;
    const int axis = form < 2 ? -1 : form == 4 ? 1 : 0;
    Val a = operand([&](const Val &v) { return v.shape.size() == rank; },
                    [&] { return freshLeaf(rank == 1 ? Dims{dim()} : Dims{dim(), dim()}); });
    a = notConstantSum(a);
    Val r = wrap(a, "", a.mag, a.lo, a.hi);
    int64_t count = axis < 0 ? numel(a.shape) : a.shape[static_cast<size_t>(axis)];
    if (axis < 0) r.shape = {};
    else if (a.shape.size() == 1) r.shape = {};
    else r.shape = {a.shape[static_cast<size_t>(1 - axis)]};
    if (!mean) {
      r.mag = r.hi = a.mag * static_cast<double>(count);
      r.lo = a.lo * static_cast<double>(count);
    }
    feature(fmt::format("{}{} of rank {}", f, axis < 0 ? "" : fmt::format(" axis {}", axis), a.shape.size()));
    define(r, axis < 0 ? f + "(" + a.text + ")" : fmt::format("{}({}, {})", f, a.text, axis));
  }

  void softmaxLike() {
    bool log = chance(0.5);
    Val a = operand([](const Val &v) { return !v.shape.empty(); }, [&] { return freshLeaf(chance(0.5) ? Dims{dim()} : Dims{dim(), dim()}); });
    a = bounded(a, 5);
    int64_t cols = a.shape.back();
    feature(fmt::format("{} of rank {}", log ? "log_softmax" : "softmax", a.shape.size()));
    if (log) {
      double m = 2 * a.mag + std::log(static_cast<double>(cols)) + 0.1;
      return define(wrap(a, "", m, 0, 0), "log_softmax(" + a.text + ")");
    }
    Val r = wrap(a, "", 1, std::exp(-2 * a.mag) / static_cast<double>(cols), 1);
    r.softmax = true;
    define(r, "softmax(" + a.text + ")");
  }

  void transposeOrDot() {
    if (chance(0.5)) {
      feature("transpose");
      Val a = operand([](const Val &v) { return v.shape.size() == 2; }, [&] { return freshLeaf({dim(), dim()}); });
      Val r = wrap(a, "", a.mag, a.lo, a.hi);
      r.shape = {a.shape[1], a.shape[0]};
      return define(r, "transpose(" + a.text + ")");
    }
    feature("dot");
    Val a = operand([](const Val &v) { return v.shape.size() == 1; }, [&] { return freshLeaf({dim()}); });
    Val b = withShape(a.shape);
    if (a.mag * b.mag * static_cast<double>(a.shape[0]) > 30) a = bounded(a, 1.5);
    if (a.mag * b.mag * static_cast<double>(a.shape[0]) > 30) b = bounded(b, 1.5);
    Val r = wrap(a, "", a.mag * b.mag * static_cast<double>(a.shape[0]), 0, 0);
    r.shape = {};
    define(r, "dot(" + a.text + ", " + b.text + ")");
  }

  void dense() {
    static const char *acts[] = {"logistic", "sigmoid", "tanh", "relu", "softplus", "softmax", "log_softmax", "linear"};
    std::string act = acts[pick(8)];
    feature("dense " + act);
    Val in = operand([](const Val &v) { return v.shape.size() == 1; }, [&] { return freshLeaf({dim()}); });
    if (chance(0.3) && in.mag > 1) {
      in = wrap(in, fmt::format("({} / 2)", in.text), in.mag / 2, in.lo / 2, in.hi / 2);
      feature("dense of an expression");
    }
    in = bounded(in, 3);
    int64_t K = in.shape[0], N = 1 + pick(small_ ? 2 : 4);
    std::string name = fresh("h");
    double z = std::sqrt(6.0 / static_cast<double>(K + N)) * static_cast<double>(K) * in.mag; // |W @ in|, b = 0
    Val r = wrap(in, "", z, 0, z);
    r.shape = {N};
    if (act == "logistic" || act == "sigmoid") {
      r.mag = r.hi = 1;
      r.lo = 1 / (1 + std::exp(z));
      r.logistic = true;
    } else if (act == "tanh") {
      r.mag = r.hi = 1;
    } else if (act == "softplus") {
      r.mag = r.hi = z + 0.7;
      r.lo = std::log1p(std::exp(-z));
    } else if (act == "softmax") {
      r.mag = r.hi = 1;
      r.lo = std::exp(-2 * z) / static_cast<double>(N);
      r.softmax = true;
    } else if (act == "log_softmax") {
      r.mag = r.hi = 2 * z + std::log(static_cast<double>(N)) + 0.1;
    }
    dense_.push_back({name, K, N});
    defineAs(name, r, fmt::format("dense({}, {}, {})", in.text, N, act));
  }

  // Weight sharing: a dense layer's dotted params used again in an expression.
  void sharedDense() {
    if (dense_.empty()) return dense();
    auto [name, K, N] = dense_[static_cast<size_t>(pick(static_cast<int>(dense_.size())))];
    feature("dense weights shared");
    if (chance(0.5)) {
      Val v = bounded(withShape({K}), 2);
      Val r = wrap(v, "", 1.3 * static_cast<double>(K) * v.mag + 1, 0, 0);
      r.shape = {N};
      r.hi = r.mag;
      return define(r, fmt::format("tanh({}.W @ {} + {}.b)", name, v.text, name));
    }
    Val u = bounded(withShape({N}), 2);
    Val r = wrap(u, "", 1.3 * static_cast<double>(N) * u.mag, 0, 0);
    r.shape = {K};
    r.hi = r.mag;
    define(r, fmt::format("transpose({}.W) @ {}", name, u.text));
  }

  void lossFunction() {
    int kind = pick(3);
    if (kind == 0) {
      // cross_entropy(p, t): the stable form for softmax(z) (named or inline), else any positive p.
      Val p;
      if (chance(0.5)) {
        p = operand([](const Val &v) { return v.softmax; }, [&] { return freshLeaf(chance(0.5) ? Dims{dim()} : Dims{dim(), dim()}); });
        if (!p.softmax) {
          Val z = bounded(p, 5);
          p = wrap(z, "softmax(" + z.text + ")", 1, 0, 1);
          p.softmax = true;
        }
      } else {
        p = positive(operand([](const Val &v) { return !v.shape.empty(); }, [&] { return freshLeaf({dim()}); }), 0.05);
      }
      feature(p.softmax ? "cross_entropy of softmax" : "cross_entropy of other");
      Val t = target(p.shape);
      double lmax = p.softmax ? 2 * 5 + 3 : std::max(std::abs(std::log(std::max(p.lo, 1e-300))), std::log(std::max(p.mag, 1.0)));
      Val r = wrap(p, "", lmax * static_cast<double>(numel(p.shape)), 0, 0);
      r.shape = {};
      return define(r, "cross_entropy(" + p.text + ", " + t.text + ")");
    }
    if (kind == 1) {
      // bce(p, t): the stable form for logistic(z), else another probability.
      Val p;
      int form = pick(4);
      if (form == 0) {
        p = operand([](const Val &v) { return v.logistic; },
                    [&] {
                      Val z = freshLeaf(randomShape());
                      return z;
                    });
        if (!p.logistic) {
          Val z = p;
          p = wrap(z, (chance(0.5) ? "logistic(" : "sigmoid(") + z.text + ")", 1, 0, 1);
          p.logistic = true;
        }
        feature("bce of logistic");
      } else if (form == 1) {
        // A softmax over at least two columns (a softmax of one column is 1: log(1 - p) = -inf).
        Val z = bounded(operand([](const Val &v) { return !v.shape.empty() && v.shape.back() >= 2; },
                                [&] { return freshLeaf({1 + dim()}); }),
                        2);
        feature("bce of softmax");
        p = wrap(z, "softmax(" + z.text + ")", 1, 0.01, 0.95);
      } else {
        p = probability(any(), form == 2);
      }
      Val t = target(p.shape);
      Val r = wrap(p, "", 40 * static_cast<double>(numel(p.shape)), 0, 0);
      r.shape = {};
      return define(r, "bce(" + p.text + ", " + t.text + ")");
    }
    feature("mse");
    Val a = any();
    Val b;
    if (chance(0.5)) b = target(a.shape);
    else b = operand([&](const Val &v) { Dims o; return broadcastDims(a.shape, v.shape, o); }, [&] { return freshLeaf(a.shape); });
    a = bounded(a, 5);
    b = bounded(b, 5);
    Val r = wrap(a, "", (a.mag + b.mag) * (a.mag + b.mag), 0, 0);
    r.shape = {};
    define(r, "mse(" + a.text + ", " + b.text + ")");
  }

  std::string lossTerm(Val &v) {
    ++v.uses;
    Val w = notConstantSum(v);
    std::string t = w.text;
    double mag = w.mag;
    if (!v.shape.empty()) {
      bool mean = chance(0.5);
      t = (mean ? "mean(" : "sum(") + t + ")";
      if (!mean) mag *= static_cast<double>(numel(v.shape));
    }
    if (mag > 100) return "1e-2 * " + t;
    switch (pick(3)) {
    case 0: return "0.5 * " + t;
    default: return t;
    }
  }

  Rng rng_;
  bool small_;
  std::set<std::string> &features_;
  Dims dims_;
  int id_ = 0;
  std::vector<std::string> decls_, body_;
  std::vector<Val> pool_, targets_;
  struct DenseLayer {
    std::string name;
    int64_t K, N;
  };
  std::vector<DenseLayer> dense_;
};

std::string generateProgram(uint64_t seed, bool small, std::set<std::string> &features) {
  return Generator(seed, small, features).run();
}

// Every form the generator must have produced over the fixed seeds of the test.
const std::vector<std::string> &requiredFeatures() {
  static const std::vector<std::string> f = {
      "fn logistic", "fn sigmoid", "fn tanh", "fn relu", "fn softplus", "fn exp", "fn log", "fn sqrt",
      "fn abs", "fn neg", "pow 2", "pow 3", "pow 0.5", "pow -1", "binary +", "binary -", "binary *",
      "binary /", "binary with a literal", "broadcast: same shape", "broadcast: scalar",
      "broadcast: mat with v", "broadcast: col with mat", "broadcast: mat with row", "broadcast: col with row",
      "broadcast: col with v", "matmul [m,n]@[n,p]", "matmul [m,n]@[n]", "matmul [n]@[n,p]", "matmul [n]@[n]",
      "transpose inline", "sum of rank 1", "sum of rank 2", "mean of rank 1", "mean of rank 2", "sum axis 0 of rank 1",
      "mean axis 0 of rank 1", "sum axis 0 of rank 2", "sum axis 1 of rank 2", "mean axis 0 of rank 2",
      "mean axis 1 of rank 2", "softmax of rank 1", "softmax of rank 2", "log_softmax of rank 1",
      "log_softmax of rank 2", "transpose", "dot", "dense logistic", "dense sigmoid", "dense tanh", "dense relu",
      "dense softplus", "dense softmax", "dense log_softmax", "dense linear", "dense of an expression",
      "dense weights shared", "cross_entropy of softmax", "cross_entropy of other", "bce of logistic",
      "bce of softmax", "bce of exp(-softplus)", "bce of scaled logistic", "mse", "shared value", "scalar input",
      "rank-2 input", "output of a leaf", "init uniform", "init normal", "init constant", "init default",
      "init glorot",
      // The grown-up language and images.
      "rank-3 input", "rank-4 input", "fn gelu", "fn elu", "fn erf", "fn sin", "fn cos", "fn leaky_relu",
      "fn leaky_relu slope", "fn maximum", "fn minimum", "fn maximum broadcasting", "fn minimum broadcasting",
      "max of all", "min of all", "max axis of rank 2", "min axis of rank 3", "max axis of rank 4",
      "sum axis of rank 3", "mean axis of rank 4", "sum axis of rank 3 keepdims", "index", "negative index",
      "slice", "negative slice", "index of two axes", "concat", "concat axis", "flatten", "reshape to rank 2",
      "reshape to rank 3", "conv2d", "conv2d kh != kw", "conv2d stride", "conv2d padding", "conv2d bias",
      "conv sugar", "maxpool2d", "maxpool2d overlapping", "avgpool2d", "avgpool2d overlapping",
      "softmax of rank 3"};
  return f;
}

} // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE("jit: the generator is deterministic and its programs compile", "[jit]") {
  std::set<std::string> f1, f2;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    std::string a = generateProgram(seed, seed % 3 == 0, f1), b = generateProgram(seed, seed % 3 == 0, f2);
    INFO("seed " << seed << ":\n" << a);
    CHECK(a == b);
    auto m = Model::compileString(a, "generated", CompileOptions{DType::F64, 2, Engine::Interp});
    if (!m) FAIL_CHECK(m.error().message);
  }
  CHECK(f1 == f2);
}

// Not run by default: writes generated programs as snapshots for the emit-cpp tests
// (NABLA_SNAPSHOT_DIR, seeds NABLA_FUZZ_SEED .. + NABLA_FUZZ_COUNT).
TEST_CASE("jit: write generated programs", "[.snapshot]") {
  const char *dir = std::getenv("NABLA_SNAPSHOT_DIR");
  REQUIRE(dir);
  std::set<std::string> features;
  const uint64_t base = envOr("NABLA_FUZZ_SEED", 2000), count = envOr("NABLA_FUZZ_COUNT", 6);
  for (uint64_t seed = base; seed < base + count; ++seed)
    std::ofstream(std::filesystem::path(dir) / fmt::format("generated_{}.nn", seed)) << generateProgram(seed, false, features);
}

TEST_CASE("jit: random programs agree with the interpreter (f64 1e-12, f32 1e-4)", "[jit][jit-fuzz]") {
  const uint64_t base = envOr("NABLA_FUZZ_SEED", 1000);
  const uint64_t count = envOr("NABLA_FUZZ_COUNT", 60);
  const int64_t sizes[] = {1, 2, 3, 7, 64, 1000};
  std::set<std::string> features;
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t seed = base + i;
    const int64_t n = sizes[i % 6];
    const bool small = n == 1000;
    std::string src = generateProgram(seed, small, features);
    checkJitAgainstInterp(src, fmt::format("generated-{}.nn", seed), {n}, seed, true);
  }
  if (base == 1000 && count >= 60) {
    // The fixed seeds must have exercised every form (a generator change that drops one fails).
    for (const std::string &f : requiredFeatures()) {
      INFO("the generated programs never produced: " << f);
      CHECK(features.count(f) == 1);
    }
  }
}

namespace {

std::vector<std::filesystem::path> corpusPrograms() {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  // The emit-cpp tests' programs of one function or form each (op_*.nn) too: the ranks and ops
  // of the grown-up language and of images are there.
  for (const char *dir : {"samples", "tests/golden/ok", "tests/golden/front", "tests/emit/programs"}) {
    fs::path d = fs::path(NABLA_SOURCE_DIR) / dir;
    if (!fs::is_directory(d)) continue;
    for (auto &e : fs::directory_iterator(d))
      if (e.path().extension() == ".nn" &&
          (std::string_view(dir) != "tests/emit/programs" || e.path().filename().string().rfind("op_", 0) == 0) &&
          // The Fashion-MNIST samples are networks of 28x28 images (the GRU unrolls 28 steps of
          // 128 units): seconds of compiling each, for forms that the golden programs (images,
          // gru_lstm_scan, rnn_steps) check here, and the conformance cases on both engines, at a
          // smaller size.
          e.path().filename().string().rfind("fashion_", 0) != 0)
        files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

} // namespace

TEST_CASE("jit: every sample and golden program agrees with the interpreter", "[jit]") {
  auto files = corpusPrograms();
  REQUIRE(files.size() >= 4); // the samples at least
  for (const auto &path : files) {
    std::string src = readText(path);
    // 7 and 8: either side of the batch from which weight products of short reductions run
    // tiled (LowerToLoops; longer ones switch at 128: the dot-tiles test below).
    checkJitAgainstInterp(src, path.filename().string(), {1, 3, 7, 8, 64}, 7, false);
  }
}

namespace {

// One small program for each function and form, for the optimization-level test.
const std::vector<std::pair<std::string, std::string>> &opPrograms() {
  static const std::vector<std::pair<std::string, std::string>> programs = [] {
    std::vector<std::pair<std::string, std::string>> r;
    const std::string head = "input x[5]\ninput M[3, 5]\ninput s\ntarget t[5]\ntarget T[3, 5]\n"
                             "param a[5] ~ normal(0, 1)\nparam B[3, 5] ~ normal(0, 1)\nparam c ~ normal(0, 1)\n";
    auto add = [&](const std::string &name, const std::string &body) {
      r.push_back({name, head + body + "\n"});
    };
    // Two groups of three functions (a JIT compile costs tens of milliseconds).
    for (auto [f, g, h] : {std::tuple{"logistic", "sigmoid", "tanh"}, std::tuple{"relu", "softplus", "abs"}}) {
      add(fmt::format("{} {} {}", f, g, h),
          fmt::format("v = {0}(a * x + c) + {1}(B * M - s) + {2}(a - x)\noutput v\n"
                      "loss E = sum(v * x) + sum({0}(B)) + sum({1}(B * M)) + sum({2}(B + c))", f, g, h));
    }
    add("exp", "v = exp(tanh(a) * x)\nloss E = sum(v) + mean(exp(B / 2))\noutput v");
    add("log", "v = log(softplus(a) + 0.1) * x\nloss E = sum(v) + sum(log(exp(B) * M))\noutput v");
    add("sqrt", "v = sqrt(exp(a) + x)\nloss E = sum(v) + sum(sqrt(M * softplus(B)))\noutput v");
    add("neg", "v = -a * x\nloss E = sum(-v ^ 2) - c\noutput v");
    add("pow", "v = (a * x) ^ 2 + (a * x) ^ 3 + (exp(a) * x) ^ 0.5 + (exp(a) + x) ^ -1\n"
               "loss E = sum(v) + sum(B ^ 2 * M) + sum(B ^ 3 * M) + sum((M + B ^ 2) ^ 0.5) + sum((M + B ^ 2) ^ -1)\n"
               "output v");
    add("add sub", "v = a + x - c\nw = B + M - a - s + c\nloss E = sum(v * v) + sum(w * w)\noutput v, w");
    add("mul div", "v = a * x / (s + c ^ 2)\nw = B * M / x * a / exp(B)\nloss E = sum(v) + sum(w)\noutput v, w");
    add("broadcast col row", "param col[3, 1] ~ normal(0, 1)\nparam row[1, 5] ~ normal(0, 1)\n"
                             "v = col * row + col / exp(row) - M * col + row\nloss E = sum(v * T)\noutput v");
    add("broadcast vec col", "param col[3, 1] ~ normal(0, 1)\nv = col + a * x\nloss E = sum(tanh(v)) + sum(col - x)\noutput v");
    add("matmul mm", "param W[5, 4] ~ normal(0, 1)\nv = (B * M) @ W\nloss E = sum(tanh(v))\noutput v");
    add("matmul mv", "v = B @ (a * x)\nloss E = sum(tanh(v))\noutput v");
    add("matmul vm", "param W[3, 4] ~ normal(0, 1)\nv = (B @ x) @ W\nloss E = sum(tanh(v))\noutput v");
    add("matmul vv", "v = a @ x\nloss E = v * v\noutput v");
    add("transpose", "v = transpose(B * M) @ (B @ x)\nloss E = sum(tanh(v)) + sum(transpose(B))\noutput v");
    add("dot", "v = dot(a, x) + dot(a, a)\nloss E = v\noutput v");
    add("sum mean", "v = sum(a * x) + mean(B * M) + sum(c * s)\nloss E = v * v\noutput v");
    add("sum mean axis", "v = sum(B * M, 0) + mean(B * M, 1) @ B + sum(a * x, 0) + mean(a, 0)\nloss E = sum(tanh(v))\noutput v");
    add("softmax", "v = softmax(a * x)\nw = softmax(B * M)\nloss E = sum(v * t) + sum(w * T)\noutput v, w");
    add("log_softmax", "v = log_softmax(a * x)\nw = log_softmax(B * M)\nloss E = -sum(v * t) - sum(w * T)\noutput v, w");
    add("cross_entropy", "p = softmax(a * x)\nloss E = cross_entropy(p, t) + cross_entropy(softmax(B + M), T) + cross_entropy(exp(-softplus(a)), t)\noutput p");
    add("bce", "p = logistic(a * x)\nloss E = bce(p, t) + bce(sigmoid(B * M), T) + bce(0.5 * logistic(a) + 0.25, t)\noutput p");
    add("mse", "loss E = mse(a * x, t) + mse(B, M) + mse(B, a)");
    for (auto [f, g, h, k] : {std::tuple{"logistic", "sigmoid", "tanh", "relu"},
                              std::tuple{"softplus", "softmax", "log_softmax", "linear"}})
      add(fmt::format("dense {} {} {} {}", f, g, h, k),
          fmt::format("h1 = dense(a * x, 4, {})\nh2 = dense(h1, 3, {})\nh3 = dense(h2, 4, {})\nh4 = dense(h3, 2, {})\n"
                      "loss E = sum(h4 * h4) + sum(h1.W) + sum(h2 * h2) + sum(h3 * h3)\noutput h1, h4",
                      f, g, h, k));
    return r;
  }();
  return programs;
}

} // namespace

TEST_CASE("jit: every function at -O0 and -O3 (f64 1e-12, f32 1e-4)", "[jit]") {
  // f32 to 1e-4, the default level's tolerance (see the random programs): -O3 runs -O2's passes,
  // whose vectorized sums add in another order (a cancelling f32 loss of 0.016 moves by 3e-5
  // relative; LLVM's default -O3 pipeline, used before, happened to keep the order).
  for (const auto &[name, src] : opPrograms()) {
    for (DType dt : {DType::F64, DType::F32}) {
      const double tol = dt == DType::F64 ? 1e-12 : 1e-4;
      INFO(name << " in " << dtypeName(dt) << "; the program:\n" << src);
      Model o0 = compileOrFail(src, name, dt, Engine::Jit, 0);
      Model o3 = compileOrFail(src, name, dt, Engine::Jit, 3);
      Model interp = compileOrFail(src, name, dt, Engine::Interp);
      for (int64_t n : {1, 5, 33}) {
        INFO("batch " << n);
        const uint64_t seed = 100 + static_cast<uint64_t>(n);
        std::string p = compareModels(o0, o3, n, seed, tol, true);
        if (!p.empty()) p = "-O0 against -O3:\n" + p;
        std::string q = compareModels(o0, interp, n, seed, tol, true);
        if (!q.empty()) p += "-O0 against the interpreter:\n" + q;
        q = compareModels(o3, interp, n, seed, tol, true);
        if (!q.empty()) p += "-O3 against the interpreter:\n" + q;
        INFO(p);
        CHECK(p.empty());
      }
    }
  }
}

TEST_CASE("jit: code cut into 2, 3 and 5 modules compiled in parallel agrees with one module", "[jit]") {
  // Each module's parts are external functions that module 0's entry points call; a part's
  // kernels are those of the one-module code, so the numbers agree to rounding (f64 1e-13).
  std::vector<std::pair<std::string, std::string>> programs(opPrograms().begin(), opPrograms().begin() + 3);
  programs.push_back(opPrograms().back());
  for (const char *sample : {"digits.nn", "iris.nn"})
    programs.push_back({sample, readText(std::filesystem::path(NABLA_SOURCE_DIR) / "samples" / sample)});
  for (const auto &[name, src] : programs) {
    INFO(name << "; the program:\n" << src);
    Model one = compileOrFail(src, name, DType::F64, Engine::Jit, 2, 1);
    for (int modules : {2, 3, 5}) {
      INFO(modules << " modules");
      Model cut = compileOrFail(src, name, DType::F64, Engine::Jit, 2, modules);
      for (int64_t n : {1, 7}) {
        std::string p = compareModels(cut, one, n, 40 + static_cast<uint64_t>(n), 1e-13, true);
        INFO(p);
        CHECK(p.empty());
      }
    }
  }
}

TEST_CASE("jit: a kernel shared by forward and gradient is compiled in one module of two", "[jit]") {
  // mnist's four product kernels are functions that both entry points call. Cut into two modules
  // (forward's kernels in the first), each is compiled in the module of its first use and called
  // from the other: the two objects together are about the one module's size (when both modules
  // compiled them, 1.25 times it), and the numbers are the one module's, on both sides of the
  // batch size where the products change form (128).
  const std::string src = readText(std::filesystem::path(NABLA_SOURCE_DIR) / "tests/bench/mnist.nn");
  auto compile = [&](int modules) {
    CompileOptions o;
    o.dtype = DType::F32;
    o.jitModules = modules;
    o.cacheDir = std::string(); // compiled, not read from a cache: the object sizes are measured
    auto m = Model::compileString(src, "mnist.nn", o);
    if (!m) throw std::runtime_error(m.error().message);
    return std::move(*m);
  };
  Model one = compile(1), two = compile(2);
  auto bytes = [](const Model &m) {
    size_t b = 0;
    for (const JitModuleTimes &t : m.compileTimes().jit.modules) b += t.objectBytes;
    return b;
  };
  REQUIRE(two.compileTimes().jit.modules.size() == 2);
  INFO("one module " << bytes(one) << " bytes, two " << bytes(two));
  CHECK(static_cast<double>(bytes(two)) < 1.15 * static_cast<double>(bytes(one)));
  for (int64_t n : {7, 130}) {
    std::string p = compareModels(two, one, n, 50 + static_cast<uint64_t>(n), 0, true);
    INFO(p);
    CHECK(p.empty());
  }
}

TEST_CASE("jit: threads 1, 2, 3 agree, and each is deterministic", "[jit]") {
  std::set<std::string> unused;
  std::vector<std::pair<std::string, std::string>> programs = {
      {"digits.nn", readText(std::filesystem::path(NABLA_SOURCE_DIR) / "samples/digits.nn")},
      {"generated-7", generateProgram(7, false, unused)},
      {"generated-8", generateProgram(8, false, unused)},
  };
  for (const auto &[name, src] : programs) {
    for (DType dt : {DType::F64, DType::F32}) {
      INFO(name << " in " << dtypeName(dt) << "; the program:\n" << src);
      Model m = compileOrFail(src, name, dt, Engine::Jit);
      for (int64_t n : {2, 7, 64}) {
        INFO("batch " << n);
        std::vector<double> params = m.initParams(3);
        Batch data = randomBatch(m, n, 4);
        std::vector<double> g1;
        double l1 = m.lossAndGradient(params, data.inputs.data(), data.targets.data(), n, g1, 1);
        for (int threads : {1, 2, 3}) {
          INFO("threads " << threads);
          std::vector<double> ga, gb;
          double la = m.lossAndGradient(params, data.inputs.data(), data.targets.data(), n, ga, threads);
          double lb = m.lossAndGradient(params, data.inputs.data(), data.targets.data(), n, gb, threads);
          CHECK(std::memcmp(&la, &lb, sizeof la) == 0);
          REQUIRE(ga.size() == gb.size());
          CHECK(std::memcmp(ga.data(), gb.data(), ga.size() * sizeof(double)) == 0);
          const double tol = dt == DType::F64 ? 1e-12 : 1e-5;
          std::string p = compareArrays(&la, &l1, 1, tol, "loss");
          for (const TensorInfo &t : m.params())
            p += compareArrays(ga.data() + t.offset, g1.data() + t.offset, static_cast<size_t>(t.shape.numel()), tol, "d/d" + t.name);
          if (!p.empty()) FAIL_CHECK("against one thread: " << p);
        }
      }
    }
  }
}

namespace {

template <class T> T sentinel() {
  if constexpr (sizeof(T) == 8) {
    uint64_t bits = 0x7ff8dead0badf00dULL; // a quiet NaN with a payload
    T v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
  } else {
    uint32_t bits = 0x7fc0beefU;
    T v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
  }
}

template <class T> bool isSentinel(T v) {
  T s = sentinel<T>();
  return std::memcmp(&v, &s, sizeof v) == 0;
}

// A buffer with `guard` sentinels on each side of `size` values; the values are sentinels too,
// so that reading workspace, outputs or grads before writing them shows as NaN in the results.
template <class T> struct Guarded {
  static constexpr size_t guard = 64;
  std::vector<T> all;
  explicit Guarded(int64_t size) : all(static_cast<size_t>(size) + 2 * guard, sentinel<T>()) {}
  T *data() { return all.data() + guard; }
  size_t size() const { return all.size() - 2 * guard; }
  bool guardsIntact() const {
    for (size_t i = 0; i < guard; ++i)
      if (!isSentinel(all[i]) || !isSentinel(all[all.size() - 1 - i])) return false;
    return true;
  }
};

template <class T> void checkRaw(const Model &m, int64_t n) {
  std::vector<double> params = m.initParams(11);
  Batch data = randomBatch(m, n, 12);
  std::vector<T> P(params.begin(), params.end()), X(data.inputs.begin(), data.inputs.end()),
      Y(data.targets.begin(), data.targets.end());
  const std::vector<T> P0 = P, X0 = X, Y0 = Y;
  const int64_t ws = m.workspaceSize(n);
  {
    Guarded<T> out(n * m.outputCount()), work(ws);
    m.forwardRaw<T>(P.data(), X.data(), n, out.data(), work.data());
    CHECK(work.guardsIntact());
    CHECK(out.guardsIntact());
    std::vector<double> ref = m.forward(params, data.inputs.data(), n);
    std::vector<double> got(out.data(), out.data() + out.size());
    CHECK(compareArrays(got, ref, 0, "forwardRaw against forward") == "");
  }
  if (m.hasLoss()) {
    Guarded<T> grads(m.paramCount()), work(ws);
    T loss = m.lossAndGradientRaw<T>(P.data(), X.data(), Y.data(), n, grads.data(), work.data());
    CHECK(work.guardsIntact());
    CHECK(grads.guardsIntact());
    std::vector<double> ref;
    double refLoss = m.lossAndGradient(params, data.inputs.data(), data.targets.data(), n, ref, 1);
    std::vector<double> got(grads.data(), grads.data() + grads.size());
    double l = static_cast<double>(loss);
    CHECK(compareArrays(&l, &refLoss, 1, 0, "lossAndGradientRaw's loss") == "");
    CHECK(compareArrays(got, ref, 0, "lossAndGradientRaw against lossAndGradient") == "");
  }
  CHECK(P == P0);
  CHECK(X == X0);
  CHECK(Y == Y0);
}

} // namespace

TEST_CASE("jit: workspaceSize is sane and the raw entry points stay inside their buffers", "[jit]") {
  std::vector<std::pair<std::string, std::string>> programs;
  for (const auto &path : corpusPrograms()) programs.push_back({path.filename().string(), readText(path)});
  std::set<std::string> unused;
  for (uint64_t seed = 0; seed < 12; ++seed) programs.push_back({fmt::format("generated-{}", seed), generateProgram(seed, false, unused)});
  for (const auto &[name, src] : programs) {
    for (DType dt : {DType::F64, DType::F32}) {
      INFO(name << " in " << dtypeName(dt) << "; the program:\n" << src);
      Model m = compileOrFail(src, name, dt, Engine::Jit);
      // Affine in n, never negative; one real at least for the loss; no more than every node of
      // the graph needs for the batch plus one copy shared by the batch.
      const int64_t w0 = m.workspaceSize(0), w1 = m.workspaceSize(1);
      CHECK(w0 >= 0);
      CHECK(w1 >= w0);
      if (m.hasLoss()) CHECK(w1 >= 1);
      int64_t nodes = 0;
      for (size_t i = 0; i < m.program().graph.size(); ++i) nodes += m.program().graph.shape(static_cast<NodeId>(i)).numel();
      for (int64_t n : {1, 2, 3, 64, 1000}) {
        CHECK(m.workspaceSize(n) == w0 + n * (w1 - w0));
        CHECK(m.workspaceSize(n) <= (n + 1) * (nodes + 1));
      }
      for (int64_t n : {1, 3, 64}) {
        INFO("batch " << n);
        if (dt == DType::F64) checkRaw<double>(m, n);
        else checkRaw<float>(m, n);
      }
    }
  }
}

TEST_CASE("jit: large arguments to the stable functions stay finite and agree", "[jit]") {
  // The language promises exact results for large inputs to logistic, softplus, softmax,
  // log_softmax and the two losses: data far outside [0.5, 1.5] here, both signs.
  const std::string src = "input x[4]\ninput s\ntarget t[4]\ntarget u\n"
                          "param w[4] ~ uniform(0.5, 1.5)\n"
                          "z = w * x * 100\n"
                          "a = logistic(z) + sigmoid(-z) + softplus(z) + softplus(-z) + tanh(z)\n"
                          "p = softmax(z)\n"
                          "q = log_softmax(z)\n"
                          "r = logistic(s * 100)\n"
                          "output a, p, q, r\n"
                          "loss E = sum(a) + cross_entropy(p, t) + sum(q) + bce(r, u) + bce(logistic(z), t) "
                          "+ cross_entropy(softmax(-z), t)\n";
  INFO("the program:\n" << src);
  for (DType dt : {DType::F64, DType::F32}) {
    INFO(dtypeName(dt));
    Model jit = compileOrFail(src, "large.nn", dt, Engine::Jit);
    Model interp = compileOrFail(src, "large.nn", dt, Engine::Interp);
    const int64_t n = 8;
    Rng rng(5);
    std::vector<double> params = jit.initParams(5), inputs, targets;
    for (int64_t i = 0; i < n * jit.inputCount(); ++i) inputs.push_back(rng.uniform(-20, 20));
    for (int64_t i = 0; i < n * jit.targetCount(); ++i) targets.push_back(rng.uniform());
    std::vector<double> ga, gb;
    double la = jit.lossAndGradient(params, inputs.data(), targets.data(), n, ga);
    double lb = interp.lossAndGradient(params, inputs.data(), targets.data(), n, gb);
    std::vector<double> ya = jit.forward(params, inputs.data(), n), yb = interp.forward(params, inputs.data(), n);
    CHECK(std::isfinite(la));
    CHECK(std::all_of(ga.begin(), ga.end(), [](double g) { return std::isfinite(g); }));
    CHECK(std::all_of(ya.begin(), ya.end(), [](double y) { return std::isfinite(y); }));
    const double tol = dt == DType::F64 ? 1e-12 : 1e-4;
    CHECK(compareArrays(&la, &lb, 1, tol, "loss") == "");
    CHECK(compareArrays(ga, gb, tol, "gradient") == "");
    CHECK(compareArrays(ya, yb, tol, "outputs") == "");
  }
}

TEST_CASE("jit: a convnet's lowering (padded im2col, transposed and batch-summed products, tiled pool gradients) agrees with the interpreter", "[jit][jit-ops]") {
  // The lowering's conv paths: conv1 (3 filters: the product K x̂) and conv2 (32 filters, more
  // positions than filters: yᵀ = x̂ᵀ Kᵀ) with padding (the padded image copy and the padded col2im),
  // the kernel gradients as products summed over the batch (each K's gradient is the correlation
  // itself), max pools that tile the image (gradient written once, maxima from the forward pool)
  // and one that does not (stride 1), an average pool.
  const std::string src = "input img[2, 8, 6]\n"
                          "target t[4]\n"
                          "param K2[32, 3, 3, 2]\n"
                          "param b2[32]\n"
                          "c1 = conv(img, 3, 3, relu, padding=1)\n"
                          "p1 = maxpool2d(c1, 2)\n"
                          "c2 = tanh(conv2d(p1, K2, b2, padding=2))\n"
                          "p2 = maxpool2d(c2, 2, stride=1)\n"
                          "a2 = avgpool2d(p2, 2)\n"
                          "y  = dense(flatten(a2), 4, softmax)\n"
                          "output y\n"
                          "loss E = cross_entropy(y, t)\n";
  INFO("the program:\n" << src);
  for (DType dt : {DType::F64, DType::F32}) {
    INFO(dtypeName(dt));
    Model jit = compileOrFail(src, "convnet.nn", dt, Engine::Jit);
    Model interp = compileOrFail(src, "convnet.nn", dt, Engine::Interp);
    for (int64_t n : {1, 5}) {
      INFO("batch " << n);
      Rng rng(7 + static_cast<uint64_t>(n));
      std::vector<double> params = jit.initParams(3), inputs, targets;
      for (int64_t i = 0; i < n * jit.inputCount(); ++i) inputs.push_back(rng.uniform(-1, 1));
      for (int64_t e = 0; e < n; ++e)
        for (int64_t j = 0; j < 4; ++j) targets.push_back(j == e % 4 ? 1 : 0);
      std::vector<double> ga, gb;
      double la = jit.lossAndGradient(params, inputs.data(), targets.data(), n, ga);
      double lb = interp.lossAndGradient(params, inputs.data(), targets.data(), n, gb);
      const double tol = dt == DType::F64 ? 1e-12 : 1e-4;
      CHECK(compareArrays(&la, &lb, 1, tol, "loss") == "");
      CHECK(compareArrays(ga, gb, tol, "gradient") == "");
      CHECK(compareArrays(jit.forward(params, inputs.data(), n), interp.forward(params, inputs.data(), n), tol, "outputs") == "");
    }
  }
}

TEST_CASE("jit: windowed convolution products (no im2col copy) agree with the interpreter", "[jit][jit-ops]") {
  // Convolutions of 32 filters or more (and more positions than filters) read their windows
  // straight out of the padded image (LoopIR.h's windowed Gemm): the forward yᵀ = x̂ᵀ Kᵀ and the
  // kernel gradient dKᵀ = x̂ gᵀ, and with stride 1 and padding below the kernel's size the input
  // gradient as the convolution of g padded by k-1-pad with the flipped kernel. Odd shapes: kh ≠
  // kw, C > 1, F not a multiple of the register tile, rows not a multiple of 8, a reduction of
  // several chunks (33·4·3 = 396 window elements), stride 2 and no padding (the image read in
  // place), and a padding that is not below the kernel's width (the im2col input gradient).
  const std::string stride1 = "input img[3, 9, 11]\n"
                              "target t[4]\n"
                              "param K1[33, 3, 3, 2] ~ normal(0, 0.3)\n"
                              "param b1[33]\n"
                              "param K2[40, 33, 4, 3] ~ normal(0, 0.05)\n"
                              "c1 = tanh(conv2d(img, K1, b1, padding=1))\n" // [33, 9, 12]
                              "c2 = tanh(conv2d(c1, K2, padding=2))\n"      // [40, 10, 14]
                              "p = maxpool2d(c2, 2)\n"
                              "y = dense(flatten(p), 4, softmax)\n"
                              "output y\n"
                              "loss E = cross_entropy(y, t)\n";
  checkJitAgainstInterp(stride1, "windowed-stride1.nn", {1, 3, 64}, 31, true);
  const std::string stride2 = "input img[2, 20, 18]\n"
                              "target t[3]\n"
                              "param K1[32, 2, 3, 3] ~ normal(0, 0.3)\n"
                              "param K2[33, 32, 3, 2] ~ normal(0, 0.1)\n"
                              "param K3[34, 33, 2, 3] ~ normal(0, 0.1)\n"
                              "c1 = relu(conv2d(img, K1))\n"                // [32, 18, 16], no padding
                              "c2 = tanh(conv2d(c1, K2, stride=2, padding=1))\n" // [33, 9, 9]
                              "c3 = tanh(conv2d(c2, K3, padding=2))\n"      // [34, 12, 11]: pad 2 > kh-1
                              "y = dense(flatten(avgpool2d(c3, 3)), 3, softmax)\n"
                              "output y\n"
                              "loss E = cross_entropy(y, t)\n";
  checkJitAgainstInterp(stride2, "windowed-stride2.nn", {1, 3, 64}, 37, true);
  // The lowering took the windowed form where it should (and only there).
  Model m = compileOrFail(stride1, "windowed-stride1.nn", DType::F64, Engine::Jit);
  const std::string loops = nabla::loops::dump(m.loops());
  CHECK(loops.find("its windows read in the image") != std::string::npos);
  CHECK(loops.find("the windows of padded g read in it") != std::string::npos);
  CHECK(loops.find("(the windows of the image") == std::string::npos);
  CHECK(loops.find("dcol") == std::string::npos);
}

TEST_CASE("jit: a batch of no examples gives what the interpreter gives", "[jit]") {
  const std::string src = readText(std::filesystem::path(NABLA_SOURCE_DIR) / "samples/hinton.nn");
  for (DType dt : {DType::F64, DType::F32}) {
    INFO(dtypeName(dt));
    Model jit = compileOrFail(src, "hinton.nn", dt, Engine::Jit);
    Model interp = compileOrFail(src, "hinton.nn", dt, Engine::Interp);
    std::vector<double> params = jit.initParams(0), none, ga, gb;
    for (int threads : {1, 2}) {
      double la = jit.lossAndGradient(params, none.data(), none.data(), 0, ga, threads);
      double lb = interp.lossAndGradient(params, none.data(), none.data(), 0, gb);
      CHECK(la == lb);
      CHECK(ga == gb);
    }
    CHECK(jit.forward(params, none.data(), 0).empty());
    CHECK(interp.forward(params, none.data(), 0).empty());
  }
}

TEST_CASE("jit: matrix products of sizes around the backend's tiles and chunks", "[jit]") {
  // The generated programs use dimensions up to 5; the LLVM backend tiles products (register
  // tiles, chunks of the reduction): sizes of 1, just under, at and just over powers of two and
  // reductions longer than a chunk, with batch sizes that leave remainders.
  struct Sizes {
    int64_t K, N, A, P;
  };
  for (Sizes z : {Sizes{1, 1, 1, 1}, Sizes{9, 8, 3, 17}, Sizes{33, 31, 2, 32}, Sizes{130, 7, 9, 33}, Sizes{257, 40, 1, 8},
                  Sizes{16, 65, 8, 1}}) {
    const std::string src = fmt::format(
        "input x[{0}]\ninput M[{2}, {0}]\ntarget t[{1}]\n"
        "param V[{0}, {3}] ~ normal(0, 0.2)\nparam U[{3}, {2}] ~ normal(0, 0.2)\n"
        "h = dense(x, {1}, tanh)\n"
        "g = dense(h, {1}, softmax)\n"
        "y = tanh(M @ V)\n"           // [A, P]: [m,n] @ [n,p]
        "w = y @ U\n"                 // [A, A]
        "v = x @ V\n"                 // [P]:    [n] @ [n,p]
        "u = transpose(M) @ sum(y, 1)\n" // [K]
        "output g, y\n"
        "loss E = cross_entropy(g, t) + mean(w * w) + 0.1 * sum(tanh(v)) + 0.01 * dot(u, x)\n",
        z.K, z.N, z.A, z.P);
    checkJitAgainstInterp(src, fmt::format("products-{}-{}-{}-{}.nn", z.K, z.N, z.A, z.P), {1, 7, 67}, 21, true);
  }
}

TEST_CASE("jit: dot-tiled products of examples with weights, at the batch sizes where the forms switch", "[jit]") {
  // x W: the weights read in place by dot tiles (4 examples by 4 rows of W, partial sums across
  // k in registers, the last step masked) below the batch from which the product copies W
  // transposed and runs register-tiled (LowerToLoops: 8 for reductions K of 16 to 127, 128 from
  // there), at every batch where W has 262144 elements or more (400 x 784 here): batch sizes on
  // both sides, with 1, 2 and 3 examples left over from the 4-example tiles; rows of W (N, P) and
  // reductions around the vector width and the tile (below 16, no dot tiles).
  struct Sizes {
    int64_t K, N, P;
  };
  for (Sizes z : {Sizes{16, 4, 3}, Sizes{17, 5, 16}, Sizes{33, 1, 31}, Sizes{129, 9, 17}, Sizes{200, 2, 130},
                  Sizes{784, 10, 400}}) {
    const std::string src = fmt::format("input x[{0}]\ntarget t[{1}]\n"
                                        "h = dense(x, {2}, tanh)\n"   // K -> P, fused tanh
                                        "g = dense(x, {1}, linear)\n" // K -> N, the bias only
                                        "y = dense(h, {1}, softmax)\n" // P -> N
                                        "output y, g\n"
                                        "loss E = cross_entropy(y, t) + 0.1 * sum(g * g)\n",
                                        z.K, z.N, z.P);
    checkJitAgainstInterp(src, fmt::format("dot-tiles-{}-{}-{}.nn", z.K, z.N, z.P), {1, 2, 3, 4, 5, 7, 8, 9, 33, 127, 128, 129},
                          5, true);
  }
}

// ---------------------------------------------------------------------------------------------
// Hand-built graphs: the lowering of ranks 3 and 4 and of the ops of the grown-up language and of
// images, forward only, JIT (f64) against a plain reference evaluator written here from the op
// table's comments (independent of the interpreter: a second oracle).
#include "EmitCpp.h"
#include "Evaluate.h"
#include "LowerToLoops.h"
#include "Pipeline.h"
#include "Sema.h"
#include "../fuzz/LoopCheck.h"
#include "llvm/JitSession.h"

#include <unistd.h>

namespace {

using Coord = std::vector<int64_t>;

Coord unflat(int64_t i, const Shape &s) {
  Coord c(static_cast<size_t>(s.rank()));
  for (int d = s.rank() - 1; d >= 0; --d) {
    c[static_cast<size_t>(d)] = i % s[d];
    i /= s[d];
  }
  return c;
}
int64_t flatOf(const Coord &c, const Shape &s) {
  int64_t i = 0;
  for (int d = 0; d < s.rank(); ++d) i = i * s[d] + c[static_cast<size_t>(d)];
  return i;
}

// The value of node id for one example, every op by its definition in Ops.def.
std::vector<double> refEval(const Program &p, NodeId id, const double *params, const double *inputs,
                            std::map<NodeId, std::vector<double>> &memo) {
  if (auto it = memo.find(id); it != memo.end()) return it->second;
  const Graph &g = p.graph;
  const Node n = g.node(id);
  const Shape &s = n.shape;
  std::vector<double> y(static_cast<size_t>(s.numel()), 0.0);
  auto in = [&](int k) { return refEval(p, n.in[static_cast<size_t>(k)], params, inputs, memo); };
  auto sh = [&](int k) { return g.shape(n.in[static_cast<size_t>(k)]); };
  switch (n.op) {
  case Op::Input:
    for (size_t i = 0; i < y.size(); ++i) y[i] = inputs[p.inputs[static_cast<size_t>(n.iattr)].offset + static_cast<int64_t>(i)];
    break;
  case Op::Param:
    for (size_t i = 0; i < y.size(); ++i) y[i] = params[p.params[static_cast<size_t>(n.iattr)].offset + static_cast<int64_t>(i)];
    break;
  case Op::Const: y[0] = n.fattr; break;
  default:
    if (opKind(n.op) == OpKind::Unary) {
      std::vector<double> a = in(0);
      for (size_t i = 0; i < y.size(); ++i) {
        double x = a[i];
        switch (n.op) {
        case Op::Neg: y[i] = -x; break;
        case Op::Tanh: y[i] = std::tanh(x); break;
        case Op::Exp: y[i] = std::exp(x); break;
        case Op::Relu: y[i] = x > 0 ? x : 0; break;
        case Op::Abs: y[i] = std::abs(x); break;
        case Op::Gelu: y[i] = 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); break;
        case Op::Elu: y[i] = x > 0 ? x : std::exp(x) - 1; break;
        case Op::Erf: y[i] = std::erf(x); break;
        case Op::Sin: y[i] = std::sin(x); break;
        case Op::Cos: y[i] = std::cos(x); break;
        case Op::LeakyRelu: y[i] = x > 0 ? x : n.fattr * x; break;
        default: throw std::runtime_error("refEval: unary op " + std::string(opSpelling(n.op)));
        }
      }
      break;
    }
    if (opKind(n.op) == OpKind::Binary) {
      std::vector<double> a = in(0), b = in(1);
      std::vector<int64_t> sa = broadcastStrides(sh(0), s), sb = broadcastStrides(sh(1), s);
      for (int64_t i = 0; i < s.numel(); ++i) {
        Coord c = unflat(i, s);
        int64_t ia = 0, ib = 0;
        for (size_t d = 0; d < c.size(); ++d) ia += c[d] * sa[d], ib += c[d] * sb[d];
        double u = a[static_cast<size_t>(ia)], v = b[static_cast<size_t>(ib)], r = 0;
        switch (n.op) {
        case Op::Add: r = u + v; break;
        case Op::Sub: r = u - v; break;
        case Op::Mul: r = u * v; break;
        case Op::Div: r = u / v; break;
        case Op::Maximum: r = u >= v ? u : v; break;
        case Op::Minimum: r = u <= v ? u : v; break;
        case Op::GreaterEq: r = u >= v ? 1 : 0; break;
        default: throw std::runtime_error("refEval: binary op");
        }
        y[static_cast<size_t>(i)] = r;
      }
      break;
    }
    {
      std::vector<double> a = in(0);
      const Shape sa = sh(0);
      switch (n.op) {
      case Op::Sum:
      case Op::SumAxis:
      case Op::Max:
      case Op::Min: {
        const bool all = n.op == Op::Sum || n.iattr < 0;
        const bool mx = n.op == Op::Max, mn = n.op == Op::Min;
        std::vector<char> seen(y.size(), 0);
        for (int64_t i = 0; i < sa.numel(); ++i) {
          Coord c = unflat(i, sa);
          int64_t o = 0;
          if (!all) {
            c.erase(c.begin() + n.iattr);
            o = flatOf(c, s);
          }
          double &r = y[static_cast<size_t>(o)];
          double v = a[static_cast<size_t>(i)];
          if (!seen[static_cast<size_t>(o)]) r = v;
          else r = mx ? std::max(r, v) : mn ? std::min(r, v) : r + v;
          seen[static_cast<size_t>(o)] = 1;
        }
        break;
      }
      case Op::Broadcast:
        for (int64_t i = 0; i < s.numel(); ++i) {
          Coord c = unflat(i, s);
          if (n.iattr >= 0) {
            c.erase(c.begin() + n.iattr);
          } else {
            c.erase(c.begin(), c.begin() + (s.rank() - sa.rank()));
            for (int d = 0; d < sa.rank(); ++d)
              if (sa[d] == 1) c[static_cast<size_t>(d)] = 0;
          }
          y[static_cast<size_t>(i)] = a[static_cast<size_t>(flatOf(c, sa))];
        }
        break;
      case Op::ExtremeMask: {
        // Slice by slice, the first extreme in row-major order.
        std::map<int64_t, std::pair<double, int64_t>> best; // slice -> (value, flat index)
        for (int64_t i = 0; i < sa.numel(); ++i) {
          Coord c = unflat(i, sa);
          int64_t slice = 0;
          if (n.iattr >= 0) {
            c.erase(c.begin() + n.iattr);
            Shape ss = sa;
            ss.dims.erase(ss.dims.begin() + n.iattr);
            slice = flatOf(c, ss);
          }
          double v = a[static_cast<size_t>(i)];
          auto it = best.find(slice);
          if (it == best.end() || (n.fattr > 0 ? v > it->second.first : v < it->second.first)) best[slice] = {v, i};
        }
        for (auto &[sl, vi] : best) y[static_cast<size_t>(vi.second)] = 1;
        break;
      }
      case Op::Slice:
      case Op::Pad: {
        const Shape &inner = n.op == Op::Slice ? s : sa;
        for (int64_t i = 0; i < inner.numel(); ++i) {
          Coord c = unflat(i, inner), o = c;
          for (size_t d = 0; d < c.size(); ++d) o[d] += n.attrs[d];
          if (n.op == Op::Slice) y[static_cast<size_t>(i)] = a[static_cast<size_t>(flatOf(o, sa))];
          else y[static_cast<size_t>(flatOf(o, s))] = a[static_cast<size_t>(i)];
        }
        break;
      }
      case Op::Reshape: y = a; break;
      case Op::Concat: {
        std::vector<double> b = in(1);
        const Shape sb = sh(1);
        for (int64_t i = 0; i < s.numel(); ++i) {
          Coord c = unflat(i, s);
          int64_t &k = c[static_cast<size_t>(n.iattr)];
          if (k < sa[static_cast<int>(n.iattr)]) y[static_cast<size_t>(i)] = a[static_cast<size_t>(flatOf(c, sa))];
          else {
            k -= sa[static_cast<int>(n.iattr)];
            y[static_cast<size_t>(i)] = b[static_cast<size_t>(flatOf(c, sb))];
          }
        }
        break;
      }
      case Op::Softmax:
      case Op::LogSoftmax: {
        const int64_t cols = s[s.rank() - 1];
        for (int64_t r = 0; r < s.numel() / cols; ++r) {
          double m = -INFINITY, z = 0;
          for (int64_t j = 0; j < cols; ++j) m = std::max(m, a[static_cast<size_t>(r * cols + j)]);
          for (int64_t j = 0; j < cols; ++j) z += std::exp(a[static_cast<size_t>(r * cols + j)] - m);
          for (int64_t j = 0; j < cols; ++j) {
            double d = a[static_cast<size_t>(r * cols + j)] - m;
            y[static_cast<size_t>(r * cols + j)] = n.op == Op::Softmax ? std::exp(d) / z : d - std::log(z);
          }
        }
        break;
      }
      case Op::Conv2d:
      case Op::Conv2dInputGrad:
      case Op::Conv2dKernelGrad: {
        // In terms of the forward convolution y = conv2d(x, K): every (f, c, oh, ow, i, j) term.
        std::vector<double> b = in(1);
        const int64_t st = n.attrs[0], pd = n.attrs[1];
        Shape xs = n.op == Op::Conv2d ? sa : n.op == Op::Conv2dInputGrad ? s : sa;
        Shape ks = n.op == Op::Conv2d ? sh(1) : n.op == Op::Conv2dInputGrad ? sh(1) : s;
        Shape ys = n.op == Op::Conv2d ? s : n.op == Op::Conv2dInputGrad ? sa : sh(1);
        for (int64_t f = 0; f < ks[0]; ++f)
          for (int64_t c = 0; c < ks[1]; ++c)
            for (int64_t oh = 0; oh < ys[1]; ++oh)
              for (int64_t ow = 0; ow < ys[2]; ++ow)
                for (int64_t i = 0; i < ks[2]; ++i)
                  for (int64_t j = 0; j < ks[3]; ++j) {
                    int64_t h = oh * st + i - pd, w = ow * st + j - pd;
                    if (h < 0 || h >= xs[1] || w < 0 || w >= xs[2]) continue;
                    size_t xi = static_cast<size_t>(flatOf({c, h, w}, xs)), ki = static_cast<size_t>(flatOf({f, c, i, j}, ks)),
                           yi = static_cast<size_t>(flatOf({f, oh, ow}, ys));
                    if (n.op == Op::Conv2d) y[yi] += a[xi] * b[ki];
                    else if (n.op == Op::Conv2dInputGrad) y[xi] += a[yi] * b[ki];
                    else y[ki] += b[yi] * a[xi];
                  }
        break;
      }
      case Op::MaxPool2d:
      case Op::AvgPool2d:
      case Op::MaxPool2dGrad:
      case Op::AvgPool2dGrad: {
        const int64_t k = n.attrs[0], st = n.attrs[1];
        const Shape ys = n.op == Op::MaxPool2d || n.op == Op::AvgPool2d ? s : n.op == Op::MaxPool2dGrad ? sh(1) : sa;
        std::vector<double> gy = n.op == Op::MaxPool2dGrad ? in(1) : a;
        const Shape xs = n.op == Op::AvgPool2dGrad ? s : sa;
        for (int64_t c = 0; c < ys[0]; ++c)
          for (int64_t oh = 0; oh < ys[1]; ++oh)
            for (int64_t ow = 0; ow < ys[2]; ++ow) {
              size_t yi = static_cast<size_t>(flatOf({c, oh, ow}, ys));
              double best = -INFINITY, sum = 0;
              size_t at = 0;
              for (int64_t i = 0; i < k; ++i)
                for (int64_t j = 0; j < k; ++j) {
                  size_t xi = static_cast<size_t>(flatOf({c, oh * st + i, ow * st + j}, xs));
                  if (n.op == Op::AvgPool2dGrad) {
                    y[xi] += gy[yi] / static_cast<double>(k * k);
                    continue;
                  }
                  if (a[xi] > best) best = a[xi], at = xi;
                  sum += a[xi];
                }
              if (n.op == Op::MaxPool2d) y[yi] = best;
              if (n.op == Op::AvgPool2d) y[yi] = sum / static_cast<double>(k * k);
              if (n.op == Op::MaxPool2dGrad) y[at] += gy[yi];
            }
        break;
      }
      default: throw std::runtime_error("refEval: op " + std::string(opSpelling(n.op)));
      }
    }
  }
  memo[id] = y;
  return y;
}

// A program of inputs and params of the given shapes, whose outputs `build` makes.
struct Built {
  Program p;
  std::vector<NodeId> outs;
};
Built buildProgram(const std::vector<Shape> &inputs, const std::vector<Shape> &params,
                   const std::function<std::vector<NodeId>(Graph &, const std::vector<NodeId> &, const std::vector<NodeId> &)> &build) {
  Built b;
  b.p.source = SourceFile{"built.nn", ""};
  std::vector<NodeId> xs, ws;
  int64_t off = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    Decl d;
    d.name = fmt::format("x{}", i);
    d.shape = inputs[i];
    d.offset = off;
    off += inputs[i].numel();
    d.node = b.p.graph.make(Op::Input, {}, 0, static_cast<int64_t>(i), inputs[i]);
    xs.push_back(d.node);
    b.p.inputs.push_back(d);
  }
  off = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    Decl d;
    d.name = fmt::format("w{}", i);
    d.shape = params[i];
    d.offset = off;
    off += params[i].numel();
    d.node = b.p.graph.make(Op::Param, {}, 0, static_cast<int64_t>(i), params[i]);
    ws.push_back(d.node);
    b.p.params.push_back(d);
  }
  b.outs = build(b.p.graph, xs, ws);
  for (size_t i = 0; i < b.outs.size(); ++i) {
    NamedValue v;
    v.name = fmt::format("y{}", i);
    v.node = b.outs[i];
    b.p.outputs.push_back(v);
  }
  return b;
}

// Random params, and inputs with ties (multiples of 1/4) so that the first of equal maxima
// matters.
void builtData(const Built &b, int64_t n, uint64_t seed, std::vector<double> &params, std::vector<double> &inputs) {
  Rng rng(seed);
  params.assign(static_cast<size_t>(b.p.paramCount()), 0);
  inputs.assign(static_cast<size_t>(n * b.p.inputCount()), 0);
  for (double &x : params) x = rng.uniform(-1, 1);
  for (double &x : inputs) x = std::round(rng.uniform(-2, 2) * 4) / 4;
}

// The forward outputs of the JIT (f64) at batch n.
std::vector<double> jitForward(const Built &b, const loops::Program &L, int64_t n, const std::vector<double> &params,
                               const std::vector<double> &inputs) {
  JitOptions o;
  o.f64 = true;
  auto jit = JitSession::create(L, o);
  if (!jit) throw std::runtime_error("JIT: " + jit.error().message);
  std::vector<double> out(static_cast<size_t>(n * b.p.outputCount())),
      ws(static_cast<size_t>(L.workspaceFixed + L.workspacePerExample * n) + 1);
  using Fn = void (*)(const double *, const double *, int64_t, double *, double *);
  reinterpret_cast<Fn>((*jit)->forward())(params.data(), inputs.data(), n, out.data(), ws.data());
  return out;
}

// Forward through the JIT (f64) at batch n against refEval; returns the mismatches.
std::string checkBuilt(const Built &b, int64_t n, uint64_t seed) {
  loops::Program L = lowerToLoops(b.p, b.outs, nullptr);
  std::vector<double> params, inputs;
  builtData(b, n, seed, params, inputs);
  std::vector<double> out = jitForward(b, L, n, params, inputs);
  std::string problems;
  for (int64_t e = 0; e < n; ++e) {
    std::map<NodeId, std::vector<double>> memo;
    int64_t off = 0;
    for (size_t k = 0; k < b.outs.size(); ++k) {
      std::vector<double> want = refEval(b.p, b.outs[k], params.data(), inputs.data() + e * b.p.inputCount(), memo);
      std::vector<double> got(out.begin() + e * b.p.outputCount() + off,
                              out.begin() + e * b.p.outputCount() + off + static_cast<int64_t>(want.size()));
      off += static_cast<int64_t>(want.size());
      std::string s = compareArrays(got, want, 1e-12, fmt::format("example {} output {}", e, k));
      if (!s.empty()) problems += s + "\n";
    }
  }
  if (!problems.empty()) problems += loops::dump(L);
  return problems;
}

} // namespace

namespace {
using Xs = const std::vector<NodeId> &;
struct BuiltCase {
  const char *name;
  std::vector<Shape> inputs, params;
  std::function<std::vector<NodeId>(Graph &, Xs, Xs)> build;
};

std::vector<BuiltCase> builtCases() {
  const Shape s3{2, 3, 4}, s4{2, 3, 2, 5};
  return {
      {"elementwise rank 3/4 with broadcasting", {s3, Shape{3, 1}, s4}, {Shape{4}},
       [](Graph &g, Xs x, Xs w) {
         NodeId a = g.binary(Op::Add, x[0], w[0]);                // [2,3,4] + [4]
         NodeId b = g.binary(Op::Mul, g.unary(Op::Tanh, a), x[1]); // [2,3,4] * [3,1]
         NodeId c = g.binary(Op::Sub, x[2], g.constant(0.5));
         return std::vector<NodeId>{b, g.unary(Op::Exp, c)};
       }},
      {"new elementwise functions", {s3}, {},
       [](Graph &g, Xs x, Xs) {
         std::vector<NodeId> o;
         for (Op op : {Op::Gelu, Op::Elu, Op::Erf, Op::Sin, Op::Cos}) o.push_back(g.unary(op, x[0]));
         o.push_back(g.make(Op::LeakyRelu, {x[0]}, 0.1));
         return o;
       }},
      {"maximum, minimum, ge with broadcasting", {s3, Shape{3, 1}}, {Shape{4}},
       [](Graph &g, Xs x, Xs w) {
         return std::vector<NodeId>{g.binary(Op::Maximum, x[0], x[1]), g.binary(Op::Minimum, w[0], x[0]),
                                    g.binary(Op::GreaterEq, x[0], g.binary(Op::Maximum, x[1], w[0]))};
       }},
      {"sums, max, min over every axis of rank 3 and 4", {s3, s4}, {},
       [](Graph &g, Xs x, Xs) {
         std::vector<NodeId> o{g.make(Op::Sum, {x[1]}), g.make(Op::Max, {x[0]}, 0, -1), g.make(Op::Min, {x[1]}, 0, -1)};
         for (int k = 0; k < 3; ++k)
           for (Op op : {Op::SumAxis, Op::Max, Op::Min}) o.push_back(g.make(op, {x[0]}, 0, k));
         for (int k = 0; k < 4; ++k)
           for (Op op : {Op::SumAxis, Op::Max, Op::Min}) o.push_back(g.make(op, {g.unary(Op::Sin, x[1])}, 0, k));
         return o;
       }},
      {"broadcast along an axis of rank 3 and 4", {Shape{3, 4}, Shape{2, 3, 5}}, {},
       [](Graph &g, Xs x, Xs) {
         std::vector<NodeId> o;
         o.push_back(g.broadcast(x[0], Shape{2, 3, 4}, 0));
         o.push_back(g.broadcast(x[0], Shape{3, 7, 4}, 1));
         o.push_back(g.broadcast(x[1], Shape{2, 3, 2, 5}, 2));
         o.push_back(g.broadcast(g.unary(Op::Cos, x[1]), Shape{2, 3, 5, 3}, 3));
         o.push_back(g.broadcast(x[0], Shape{2, 2, 3, 4}));
         return o;
       }},
      {"softmax and log_softmax of rank 3 and 4", {s3, s4}, {},
       [](Graph &g, Xs x, Xs) {
         return std::vector<NodeId>{g.unary(Op::Softmax, x[0]), g.unary(Op::LogSoftmax, x[1]),
                                    g.unary(Op::Softmax, g.binary(Op::Mul, x[1], x[1]))};
       }},
      {"extreme masks of all elements and along every axis", {s3, Shape{5}}, {},
       [](Graph &g, Xs x, Xs) {
         std::vector<NodeId> o;
         for (double f : {1.0, -1.0}) {
           o.push_back(g.make(Op::ExtremeMask, {x[0]}, f, -1));
           o.push_back(g.make(Op::ExtremeMask, {x[1]}, f, 0));
           for (int k = 0; k < 3; ++k) o.push_back(g.make(Op::ExtremeMask, {g.unary(Op::Abs, x[0])}, f, k));
         }
         return o;
       }},
      {"slice, pad, reshape, concat", {s3, Shape{2, 2, 4}}, {Shape{6}},
       [](Graph &g, Xs x, Xs w) {
         NodeId t = g.unary(Op::Tanh, x[0]);
         NodeId sl = g.slice(t, {1, 1, 2}, Shape{1, 2, 2});
         NodeId pd = g.pad(g.unary(Op::Exp, sl), {0, 2, 1}, Shape{2, 4, 4});
         NodeId rs = g.reshape(t, Shape{4, 6});
         NodeId rs2 = g.binary(Op::Add, g.reshape(w[0], Shape{2, 3}), g.constant(1));
         NodeId c1 = g.make(Op::Concat, {x[0], x[1]}, 0, 1);
         NodeId c2 = g.make(Op::Concat, {g.unary(Op::Sin, x[1]), x[1]}, 0, 2);
         NodeId c3 = g.make(Op::Concat, {x[0], g.pad(x[0], {0, 0, 0}, Shape{2, 3, 4})}, 0, 0);
         NodeId r4 = g.reshape(c1, Shape{2, 5, 2, 2});
         return std::vector<NodeId>{sl, pd, rs, rs2, c1, c2, c3, r4, g.reshape(g.slice(x[0], {1, 0, 0}, Shape{1, 3, 4}), Shape{3, 4})};
       }},
      {"conv2d and its adjoints: strides, padding, kh != kw", {Shape{2, 7, 6}, Shape{3, 4, 3}}, {Shape{3, 2, 3, 2}},
       [](Graph &g, Xs x, Xs w) {
         std::vector<NodeId> o;
         for (auto [st, pd] : std::vector<std::pair<int64_t, int64_t>>{{1, 0}, {1, 1}, {2, 1}, {2, 2}, {3, 0}}) {
           NodeId y = g.make(Op::Conv2d, {x[0], w[0]}, 0, 0, {}, {st, pd});
           o.push_back(y);
           NodeId gy = g.unary(Op::Sin, y);
           o.push_back(g.make(Op::Conv2dInputGrad, {gy, w[0]}, 0, 0, Shape{2, 7, 6}, {st, pd}));
           o.push_back(g.make(Op::Conv2dKernelGrad, {x[0], gy}, 0, 0, Shape{3, 2, 3, 2}, {st, pd}));
         }
         return o;
       }},
      // 32 filters and more positions than filters: the forward product is lowered transposed
      // (yᵀ = x̂ᵀ Kᵀ, then y = (yᵀ)ᵀ); its gradient reads the forward's windows again.
      {"conv2d with 32 filters: the transposed product", {Shape{2, 9, 8}}, {Shape{32, 2, 3, 2}},
       [](Graph &g, Xs x, Xs w) {
         std::vector<NodeId> o;
         for (auto [st, pd] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {1, 0}, {2, 2}}) {
           NodeId y = g.make(Op::Conv2d, {x[0], w[0]}, 0, 0, {}, {st, pd});
           o.push_back(y);
           o.push_back(g.make(Op::Conv2dKernelGrad, {x[0], g.unary(Op::Sin, y)}, 0, 0, Shape{32, 2, 3, 2}, {st, pd}));
         }
         return o;
       }},
      {"max and average pools, first order (their gradients are pool adjoints)", {Shape{2, 7, 5}}, {},
       [](Graph &g, Xs x, Xs) {
         std::vector<NodeId> o;
         for (auto [k, st] : std::vector<std::pair<int64_t, int64_t>>{{2, 2}, {3, 2}, {2, 1}, {3, 3}}) {
           o.push_back(g.make(Op::MaxPool2d, {x[0]}, 0, 0, {}, {k, st}));
           o.push_back(g.make(Op::AvgPool2d, {g.unary(Op::Tanh, x[0])}, 0, 0, {}, {k, st}));
         }
         return o;
       }},
      {"pools and their adjoints: windows that do not divide, overlapping", {Shape{2, 7, 5}}, {},
       [](Graph &g, Xs x, Xs) {
         std::vector<NodeId> o;
         for (auto [k, st] : std::vector<std::pair<int64_t, int64_t>>{{2, 2}, {3, 2}, {2, 1}, {3, 3}}) {
           NodeId m = g.make(Op::MaxPool2d, {x[0]}, 0, 0, {}, {k, st});
           NodeId a = g.make(Op::AvgPool2d, {x[0]}, 0, 0, {}, {k, st});
           o.push_back(m);
           o.push_back(a);
           o.push_back(g.make(Op::MaxPool2dGrad, {x[0], g.unary(Op::Cos, m)}, 0, 0, {}, {k, st}));
           o.push_back(g.make(Op::AvgPool2dGrad, {g.unary(Op::Cos, a)}, 0, 0, Shape{2, 7, 5}, {k, st}));
         }
         return o;
       }},
  };
}
} // namespace

TEST_CASE("jit: ranks 3 and 4 and the new ops of hand-built graphs agree with a reference", "[jit][jit-ops]") {
  for (const BuiltCase &c : builtCases()) {
    INFO(c.name);
    Built b = buildProgram(c.inputs, c.params, c.build);
    for (int64_t n : {1, 3}) {
      std::string problems = checkBuilt(b, n, 7 + static_cast<uint64_t>(n));
      INFO("batch " << n << "\n" << problems);
      CHECK(problems.empty());
    }
  }
}

TEST_CASE("emit-cpp: the hand-built graphs of the new ops compute what the JIT computes", "[jit-ops][emit-ops]") {
  // Every case emitted in f64 into one program with a small driver (g++ -O1 -Wall -Wextra
  // -Werror), run at batch 3 on the data given to the JIT; 1e-12 relative.
  namespace fs = std::filesystem;
  if (std::system("command -v g++ > /dev/null 2>&1") != 0) {
    WARN("no g++: the emitted C++ is not compiled");
    return;
  }
  const fs::path dir = fs::temp_directory_path() / fmt::format("nabla-emit-ops-{}", static_cast<long>(::getpid()));
  fs::create_directories(dir);
  const std::vector<BuiltCase> cases = builtCases();
  const int64_t n = 3;
  std::vector<Built> built;
  std::vector<std::vector<double>> want;
  std::string driver = "#include <cstdio>\n#include <cstdlib>\n#include <cstring>\n#include <vector>\n";
  std::string dispatch;
  for (size_t i = 0; i < cases.size(); ++i) {
    built.push_back(buildProgram(cases[i].inputs, cases[i].params, cases[i].build));
    const Built &b = built.back();
    loops::Program L = lowerToLoops(b.p, b.outs, nullptr);
    CppEmitOptions o;
    o.f64 = true;
    o.name = fmt::format("case{}", i);
    CppFiles f = emitCpp(b.p, L, o);
    std::ofstream(dir / (f.name + ".hpp")) << f.header;
    std::ofstream(dir / (f.name + ".cpp")) << f.source;
    std::vector<double> params, inputs;
    builtData(b, n, 100 + i, params, inputs);
    want.push_back(jitForward(b, L, n, params, inputs));
    std::ofstream data(dir / fmt::format("in{}.bin", i), std::ios::binary);
    data.write(reinterpret_cast<const char *>(params.data()), static_cast<std::streamsize>(params.size() * sizeof(double)));
    data.write(reinterpret_cast<const char *>(inputs.data()), static_cast<std::streamsize>(inputs.size() * sizeof(double)));
    driver += fmt::format("#include \"{}.hpp\"\n", f.name);
    dispatch += fmt::format("  if (c == {0}) run(f, case{0}::kParams, case{0}::kInputs, case{0}::kOutputs, case{0}::workspace_size, case{0}::forward);\n", i);
  }
  driver += "template <class W, class F>\n"
            "void run(FILE* f, std::size_t P, std::size_t I, std::size_t O, W ws, F fwd) {\n"
            "  const std::size_t n = " + std::to_string(n) + ";\n"
            "  std::vector<double> p(P + 1), in(n * I + 1), out(n * O + 1), w(ws(n) + 1);\n"
            "  if (std::fread(p.data(), sizeof(double), P, f) != P || std::fread(in.data(), sizeof(double), n * I, f) != n * I) std::exit(3);\n"
            "  fwd(p.data(), in.data(), n, out.data(), w.data());\n"
            "  std::fwrite(out.data(), sizeof(double), n * O, stdout);\n"
            "}\n"
            "int main(int argc, char** argv) {\n"
            "  if (argc != 3) return 2;\n"
            "  const int c = std::atoi(argv[1]);\n"
            "  FILE* f = std::fopen(argv[2], \"rb\");\n"
            "  if (!f) return 2;\n" + dispatch + "  return 0;\n}\n";
  std::ofstream(dir / "driver.cpp") << driver;
  std::string cmd = fmt::format("cd '{}' && g++ -std=c++17 -O1 -Wall -Wextra -Werror -o driver *.cpp > build.log 2>&1", dir.string());
  INFO(readText(dir / "build.log"));
  REQUIRE(std::system(cmd.c_str()) == 0);
  for (size_t i = 0; i < cases.size(); ++i) {
    INFO(cases[i].name);
    std::string run = fmt::format("cd '{0}' && ./driver {1} in{1}.bin > out{1}.bin", dir.string(), i);
    REQUIRE(std::system(run.c_str()) == 0);
    std::string bytes = readText(dir / fmt::format("out{}.bin", i));
    std::vector<double> got(bytes.size() / sizeof(double));
    std::memcpy(got.data(), bytes.data(), got.size() * sizeof(double));
    CHECK(compareArrays(got, want[i], 1e-12, "outputs") == "");
  }
  fs::remove_all(dir);
}

TEST_CASE("jit: the Loop IR of the new ops stays inside its buffers (the fuzzers' oracle)", "[jit-ops]") {
  for (const BuiltCase &c : builtCases()) {
    INFO(c.name);
    Built b = buildProgram(c.inputs, c.params, c.build);
    loops::Program L = lowerToLoops(b.p, b.outs, nullptr);
    std::string why = fuzz::checkLoops(L, {b.p.paramCount(), b.p.inputCount(), b.p.targetCount(), b.p.outputCount()});
    INFO(why);
    CHECK(why.empty());
  }
}

TEST_CASE("jit: the fuzzers' Loop IR oracle reports an access outside a buffer", "[jit-ops]") {
  // The oracle above must be able to fail: one read moved past its buffer's end, and one
  // workspace buffer declared larger than the workspace.
  std::string diags;
  std::optional<Program> p = compileSource(
      {"o.nn", "input x[3]\nparam W[2, 3]\nparam b[2]\ny = tanh(W @ x + b)\noutput y\n"}, diags);
  REQUIRE(p);
  const fuzz::LoopSpaces sizes{p->paramCount(), p->inputCount(), p->targetCount(), p->outputCount()};
  loops::Program L = lowerToLoops(*p, simplifiedOutputs(*p), nullptr);
  REQUIRE(fuzz::checkLoops(L, sizes) == "");
  loops::Program moved = L;
  bool changed = false;
  for (loops::Kernel &k : moved.forward.kernels)
    for (loops::Expr &e : k.pool)
      if (!changed && e.kind == loops::Expr::Load && moved.buffers[static_cast<size_t>(e.buffer)].space == loops::Space::Params) {
        e.index.constant += 100;
        changed = true;
      }
  REQUIRE(changed);
  CHECK(fuzz::checkLoops(moved, sizes).find("outside") != std::string::npos);
  loops::Program grown = L;
  grown.buffers.push_back({"%extra", loops::Space::Workspace, 0, 0, 0, grown.workspaceFixed + 1});
  CHECK(fuzz::checkLoops(grown, sizes).find("outside its space") != std::string::npos);
}

TEST_CASE("jit: a value beyond the element limit is the program's error, not an overflow", "[jit]") {
  // Issue 16 item 6: a matrix product of admitted operands, [65536, 1] @ [1, 65536], has 2^32
  // elements; chained, the workspace sum wrapped. Every value of the forward and gradient graphs
  // now obeys the one element limit, and the workspace is summed with checked arithmetic.
  const std::string src = "param a[1, 65536]\nparam b[65536, 1]\nm0 = b @ a\nm1 = m0 @ m0\noutput m1\n";
  auto m = Model::compileString(src, "big.nn");
  REQUIRE_FALSE(m);
  INFO(m.error().message);
  CHECK(m.error().message.find("big.nn:3:1: error: 'm0' has shape [65536, 65536]") == 0);
  CHECK(m.error().message.find("268435456") != std::string::npos);
  // With a loss: the gradient's values are checked too (d/dm0 has m0's shape).
  auto g = Model::compileString("input x\nparam a[1, 65536]\nparam b[65536, 1]\nloss E = sum(b @ a) * x\n", "big2.nn");
  REQUIRE_FALSE(g);
  CHECK(g.error().message.find("big2.nn") == 0);
  CHECK(g.error().message.find("[65536, 65536]") != std::string::npos);
  CHECK(g.error().message.find("internal") == std::string::npos);
}

TEST_CASE("jit: loss and gradient through every new op agree with the interpreter", "[jit][jit-ops]") {
  // Each hand-built case with every leaf an input times a param of its shape (so that every
  // value is per example and every gradient flows back through the ops and their adjoints:
  // conv2d_input_grad, maxpool2d_grad, extreme masks, pads, ...), and the loss Σ_k sum(sin(y_k)).
  // JIT (f64 and f32) against the interpreter at batches 1, 3 and 8.
  for (const BuiltCase &c : builtCases()) {
    INFO(c.name);
    std::vector<Shape> leaves = c.inputs;
    leaves.insert(leaves.end(), c.params.begin(), c.params.end());
    Built b = buildProgram(leaves, leaves, [&](Graph &g, Xs x, Xs w) {
      std::vector<NodeId> l;
      for (size_t i = 0; i < x.size(); ++i) l.push_back(g.binary(Op::Mul, x[i], w[i]));
      return c.build(g, std::vector<NodeId>(l.begin(), l.begin() + static_cast<std::ptrdiff_t>(c.inputs.size())),
                     std::vector<NodeId>(l.begin() + static_cast<std::ptrdiff_t>(c.inputs.size()), l.end()));
    });
    NodeId loss = kNoNode;
    for (NodeId y : b.outs) {
      NodeId t = b.p.graph.make(Op::Sum, {b.p.graph.unary(Op::Sin, y)});
      loss = loss == kNoNode ? t : b.p.graph.binary(Op::Add, loss, t);
    }
    NamedValue lv;
    lv.name = "E";
    lv.node = loss;
    b.p.loss = lv;
    auto d = derive(b.p);
    if (!d) {
      // The second derivative through overlapping max pools is undefined: a clear error (the
      // pool case applies maxpool2d_grad itself). Its first-order gradient is the case below.
      INFO(d.error().message);
      CHECK(std::string(c.name).find("pools") == 0);
      continue;
    }
    loops::Program L = lowerToLoops(b.p, d->outputs, &*d);
    CHECK(fuzz::checkLoops(L, {b.p.paramCount(), b.p.inputCount(), b.p.targetCount(), b.p.outputCount()}) == "");
    for (bool f64 : {true, false}) {
      INFO((f64 ? "f64" : "f32"));
      JitOptions o;
      o.f64 = f64;
      auto jit = JitSession::create(L, o);
      REQUIRE(jit);
      for (int64_t n : {1, 3, 8}) {
        INFO("batch " << n);
        std::vector<double> params, inputs;
        builtData(b, n, 40 + static_cast<uint64_t>(n), params, inputs);
        for (double &x : inputs) x = x == 0 ? 0.5 : x; // no zero leaves: ties of 0 * w
        LossAndGradient want = interpretLossAndGradient(b.p, *d, f64 ? DType::F64 : DType::F32, params, inputs.data(), nullptr, n);
        std::vector<double> grads(params.size());
        double loss = 0;
        const size_t ws = static_cast<size_t>(L.workspaceFixed + L.workspacePerExample * n) + 1;
        if (f64) {
          std::vector<double> w(ws);
          double dummy = 0;
          using Fn = double (*)(const double *, const double *, const double *, int64_t, double *, double *);
          loss = reinterpret_cast<Fn>((*jit)->gradient())(params.data(), inputs.data(), &dummy, n, grads.data(), w.data());
        } else {
          std::vector<float> w(ws), pf(params.begin(), params.end()), inf(inputs.begin(), inputs.end()), gf(params.size());
          float dummy = 0;
          using Fn = float (*)(const float *, const float *, const float *, int64_t, float *, float *);
          loss = reinterpret_cast<Fn>((*jit)->gradient())(pf.data(), inf.data(), &dummy, n, gf.data(), w.data());
          grads.assign(gf.begin(), gf.end());
        }
        const double tol = f64 ? 1e-12 : 1e-4;
        CHECK(compareArrays(&loss, &want.loss, 1, tol, "loss") == "");
        for (const Decl &p : b.p.params)
          CHECK(compareArrays(grads.data() + p.offset, want.grads.data() + p.offset, static_cast<size_t>(p.shape.numel()), tol,
                              "d/d" + p.name, std::abs(want.loss) + 1, f64 ? 1e-13 : 1e-5) == "");
      }
    }
  }
}

#include "EmitLLVM.h"

TEST_CASE("jit: small programs' one-example body (every loop unrolled, exp inline) agrees with the interpreter", "[jit]") {
  // At n = 1 a small program runs a second body (EmitLLVM's oneExample): loops unrolled, products
  // as plain sums, each stored element kept in a register for the kernels after it, exp inline.
  // Against the interpreter at -O0, -O2 and -O3 in f64 (1e-12) and f32 (1e-4), n = 1 and the
  // general body around it (2, 3, 5, 9 and 33 examples: remainders of the 4- and 8-row tiles).
  std::vector<std::pair<std::string, std::string>> programs = {
      {"hinton.nn", readText(std::filesystem::path(NABLA_SOURCE_DIR) / "samples/hinton.nn")},
      // products of every form (x W, transpose(M) @ g, the batch sums of the weight gradients,
      // a product with a weight matrix read twice), softmax, log_softmax, the activations.
      {"small-products.nn", "input x[5]\ninput M[3, 5]\ntarget t[4]\n"
                            "param V[5, 3] ~ normal(0, 0.4)\nparam U[3, 3] ~ normal(0, 0.4)\n"
                            "h = dense(x, 6, tanh)\n"
                            "g = dense(h, 4, softmax)\n"
                            "y = logistic(M @ V)\n"
                            "w = softplus(y @ U) + relu(y @ U - 0.1)\n"
                            "v = exp(x @ V * 0.5)\n"
                            "u = transpose(M) @ sum(y, 1)\n"
                            "q = log_softmax(v)\n"
                            "output g, y, q\n"
                            "loss E = cross_entropy(g, t) + mean(w * w) + 0.1 * sum(tanh(v)) + 0.01 * dot(u, x) - 0.1 * sum(q)\n"},
      // Batch sums of rows of 19 (EmitLLVM's batchSum: vector sums across the batch,
      // 8 vectors at a time, the last masked) beside a fused one.
      {"small-rows.nn", "input x[2, 19]\ninput z[20]\ntarget t[2, 19]\n"
                        "param c[2, 19] ~ normal(0, 0.5)\nparam d[19] ~ normal(0, 0.5)\nparam e[20] ~ normal(0, 0.5)\n"
                        "y = tanh(x + c + d)\n"
                        "output y\n"
                        "loss E = 0.5 * sum((y - t)^2) + 0.1 * sum(logistic(z + e))\n"},
      // Weight blocks of 32 x 32 and 16 x 32 (multiples of the vector width in both precisions):
      // from 8 examples on, their transposed copies are made by EmitLLVM's transposeBlocks.
      {"small-blocks.nn", "input x[32]\ntarget t[16]\n"
                          "h = dense(x, 32, tanh)\n"
                          "y = dense(h, 16, logistic)\n"
                          "output y\n"
                          "loss E = 0.5 * sum((y - t)^2)\n"},
      // exp far out of [-1, 1]: the inline exp's range reduction, its limits and its sign handling.
      {"small-large.nn", "input x[4]\ntarget t[4]\nparam w[4] ~ uniform(0.5, 1.5)\n"
                         "z = w * x * 30\n"
                         "a = logistic(z) + softplus(-z) + tanh(z) + exp(z * 0.1)\n"
                         "p = softmax(z)\n"
                         "output a, p\n"
                         "loss E = sum(a) + cross_entropy(p, t)\n"},
  };
  for (const auto &[name, src] : programs) {
    for (DType dt : {DType::F64, DType::F32}) {
      INFO(name << " in " << dtypeName(dt) << "; the program:\n" << src);
      const double tol = dt == DType::F64 ? 1e-12 : 1e-4;
      Model interp = compileOrFail(src, name, dt, Engine::Interp);
      for (int opt : {0, 2, 3}) {
        INFO("-O" << opt);
        Model jit = compileOrFail(src, name, dt, Engine::Jit, opt);
        // Every program but the one with 32 x 32 weights is small enough for the one-example body.
        const bool small = name != "small-blocks.nn";
        CHECK(unrollsForOneExample(jit.loops().gradient) == small);
        CHECK(unrollsForOneExample(jit.loops().forward) == small);
        for (int64_t n : {1, 2, 3, 5, 9, 33}) {
          INFO("batch " << n);
          std::string problems = compareModels(jit, interp, n, 40 + static_cast<uint64_t>(n), tol, true);
          INFO(problems);
          CHECK(problems.empty());
        }
      }
    }
  }
  // A program of mnist's size keeps the general body only (its compile time stays as it was).
  const std::string mnist = readText(std::filesystem::path(NABLA_SOURCE_DIR) / "tests/bench/mnist.nn");
  Model big = compileOrFail(mnist, "mnist.nn", DType::F32, Engine::Jit);
  CHECK_FALSE(unrollsForOneExample(big.loops().gradient));
  CHECK_FALSE(unrollsForOneExample(big.loops().forward));
}

TEST_CASE("jit: the one-example body's inline exp agrees with the C library over its whole range", "[jit]") {
  // exp(x) as an output at n = 1 (inline) against std::exp, from where it underflows to 0 to where
  // it overflows, in both precisions: 2 ulp in the normal range, 0 and infinity beyond it.
  for (DType dt : {DType::F64, DType::F32}) {
    INFO(dtypeName(dt));
    Model jit = compileOrFail("input x\ny = exp(x)\noutput y\n", "exp.nn", dt, Engine::Jit);
    REQUIRE(unrollsForOneExample(jit.loops().forward));
    const bool f64 = dt == DType::F64;
    const double lo = f64 ? -740 : -103, hi = f64 ? 709.7 : 88.7, eps = f64 ? 0x1p-52 : 0x1p-23;
    const double tiny = f64 ? 0x1p-1022 : 0x1p-126;
    std::vector<double> params;
    int bad = 0;
    double worst = 0;
    for (int i = 0; i <= 4000; ++i) {
      const double x = lo + (hi - lo) * i / 4000.0 + (i % 7) * 1e-3;
      const double xs = f64 ? x : static_cast<double>(static_cast<float>(x));
      const double y = jit.forward(params, &xs, 1).at(0);
      const double ref = f64 ? std::exp(xs) : static_cast<double>(std::exp(static_cast<float>(xs)));
      // In ulps of the result where it is normal; below, of the subnormal spacing.
      const double ulps = std::abs(y - ref) / std::max(eps * std::abs(ref), tiny * eps);
      worst = std::max(worst, ulps);
      if (!(ulps <= 2) && ++bad <= 5) FAIL_CHECK("exp(" << xs << ") = " << y << ", expected " << ref);
    }
    INFO("largest error " << worst << " ulp");
    CHECK(bad == 0);
    CHECK(worst > 0); // the inline exp, not the library's (which agrees to the last bit)
    for (double x : {-1e4, f64 ? -746.0 : -105.0}) CHECK(jit.forward(params, &x, 1).at(0) == 0);
    for (double x : {1e4, f64 ? 710.0 : 89.0}) CHECK(std::isinf(jit.forward(params, &x, 1).at(0)));
    const double nan = std::nan("");
    CHECK(std::isnan(jit.forward(params, &nan, 1).at(0)));
  }
}
