// One training step (forward + loss + full gradient, no update), f32, one thread: the nabla JIT
// against a hand-written Eigen 3 baseline measured in the same run. Also the compile time of the
// mnist network (parse to callable code) at the default optimization level.
#include "Model.h"

#include <Eigen/Dense>
#include <benchmark/benchmark.h>

#include <cmath>
#include <filesystem>
#include <random>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

using namespace nabla;

namespace {

enum class Act { Logistic, Tanh, Relu, Softmax };

struct Case {
  const char *name;
  std::vector<int> sizes; // input, hidden..., output
  Act hidden, out;
  bool crossEntropy;
  int batch;
};

const Case kCases[] = {
    {"hinton", {4, 3, 2}, Act::Logistic, Act::Logistic, false, 1},
    {"mnist", {784, 256, 10}, Act::Logistic, Act::Softmax, true, 64},
    {"wide", {784, 1024, 1024, 10}, Act::Relu, Act::Softmax, true, 256},
    {"deep", {32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32}, Act::Tanh, Act::Tanh, false, 32},
};

const Case &findCase(const std::string &name) {
  for (auto &c : kCases)
    if (name == c.name) return c;
  throw std::runtime_error("no case " + name);
}

using RM = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// The hand-written baseline: dense layers, batch rows, the gradient written out by hand.
struct EigenMLP {
  Case c; // a copy: the batch sweep changes its batch
  std::vector<RM> W, dW, Z, A, dZ;
  std::vector<Eigen::RowVectorXf> b, db;
  RM X, T;

  explicit EigenMLP(const Case &cs) : c(cs) {
    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0, 0.1f);
    size_t L = c.sizes.size() - 1;
    for (size_t l = 0; l < L; ++l) {
      W.push_back(RM::NullaryExpr(c.sizes[l + 1], c.sizes[l], [&] { return nd(rng); }));
      b.push_back(Eigen::RowVectorXf::Zero(c.sizes[l + 1]));
    }
    dW = W;
    db = b;
    X = RM::NullaryExpr(c.batch, c.sizes[0], [&] { return nd(rng) + 0.5f; });
    T = RM::Zero(c.batch, c.sizes.back());
    for (int i = 0; i < c.batch; ++i) T(i, i % c.sizes.back()) = 1;
    Z.resize(L);
    A.resize(L + 1);
    dZ.resize(L);
  }

  static void activate(Act a, const RM &z, RM &y) {
    switch (a) {
    case Act::Logistic: y = (1.0f / (1.0f + (-z.array()).exp())).matrix(); break;
    case Act::Tanh: y = z.array().tanh().matrix(); break;
    case Act::Relu: y = z.array().max(0.0f).matrix(); break;
    case Act::Softmax: {
      Eigen::VectorXf m = z.rowwise().maxCoeff();
      y = (z.colwise() - m).array().exp().matrix();
      Eigen::VectorXf s = y.rowwise().sum();
      y = s.cwiseInverse().asDiagonal() * y;
      break;
    }
    }
  }
  static void derive(Act a, const RM &y, RM &d) { // d *= act'(z), written through y
    switch (a) {
    case Act::Logistic: d.array() *= y.array() * (1.0f - y.array()); break;
    case Act::Tanh: d.array() *= 1.0f - y.array().square(); break;
    case Act::Relu: d.array() *= (y.array() > 0.0f).cast<float>(); break;
    case Act::Softmax: break;
    }
  }

  float step() {
    size_t L = W.size();
    A[0] = X;
    for (size_t l = 0; l < L; ++l) {
      Z[l].noalias() = A[l] * W[l].transpose();
      Z[l].rowwise() += b[l];
      activate(l + 1 == L ? c.out : c.hidden, Z[l], A[l + 1]);
    }
    const float invB = 1.0f / static_cast<float>(c.batch);
    float loss;
    if (c.crossEntropy) {
      loss = -(T.array() * (A[L].array() + 1e-30f).log()).sum() * invB;
      dZ[L - 1] = (A[L] - T) * invB;
    } else {
      loss = 0.5f * (A[L] - T).squaredNorm() * invB;
      dZ[L - 1] = (A[L] - T) * invB;
      derive(c.out, A[L], dZ[L - 1]);
    }
    for (size_t l = L; l-- > 0;) {
      dW[l].noalias() = dZ[l].transpose() * A[l];
      db[l] = dZ[l].colwise().sum();
      if (l > 0) {
        dZ[l - 1].noalias() = dZ[l] * W[l];
        derive(c.hidden, A[l], dZ[l - 1]);
      }
    }
    return loss;
  }
};

void BM_Eigen(benchmark::State &state, const char *name) {
  EigenMLP m(findCase(name));
  for (auto _ : state) benchmark::DoNotOptimize(m.step());
}

struct NablaStep {
  Model model;
  std::vector<float> params, inputs, targets, grads, workspace;
  int batch;

  NablaStep(const Case &c, int optLevel, int batchSize = 0)
      : model(compile(c, optLevel)), batch(batchSize > 0 ? batchSize : c.batch) {
    std::vector<double> p = model.initParams(1);
    params.assign(p.begin(), p.end());
    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0, 0.1f);
    inputs.resize(static_cast<size_t>(model.inputCount() * batch));
    for (float &x : inputs) x = nd(rng) + 0.5f;
    targets.assign(static_cast<size_t>(model.targetCount() * batch), 0.0f);
    int64_t k = model.targetCount();
    for (int i = 0; i < batch; ++i) targets[static_cast<size_t>(i * k + i % k)] = 1;
    grads.resize(static_cast<size_t>(model.paramCount()));
    workspace.resize(static_cast<size_t>(model.workspaceSize(batch)));
  }
  static Model compile(const Case &c, int optLevel) {
    CompileOptions o;
    o.optLevel = optLevel;
    auto m = Model::compileFile(std::string(NABLA_BENCH_DIR) + "/" + c.name + ".nn", o);
    if (!m) throw std::runtime_error(m.error().message);
    return std::move(*m);
  }
  float step() {
    return model.lossAndGradientRaw<float>(params.data(), inputs.data(), targets.data(), batch,
                                           grads.data(), workspace.data());
  }
};

void BM_Nabla(benchmark::State &state, const char *name) {
  NablaStep s(findCase(name), static_cast<int>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(s.step());
}

// hinton with fixed-size Eigen types (the "best peer" for it: every size known at compile
// time, no heap, the products unrolled): one example, the forward pass, the squared error and
// the gradient by hand, as BM_Eigen does with dynamic sizes.
void BM_EigenFixedHinton(benchmark::State &state) {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0, 0.5f);
  Eigen::Matrix<float, 3, 4> W1 = Eigen::Matrix<float, 3, 4>::NullaryExpr([&] { return nd(rng); }), dW1;
  Eigen::Matrix<float, 2, 3> W2 = Eigen::Matrix<float, 2, 3>::NullaryExpr([&] { return nd(rng); }), dW2;
  Eigen::Vector3f b1 = Eigen::Vector3f::Zero(), db1;
  Eigen::Vector2f b2 = Eigen::Vector2f::Zero(), db2, t(1, 0);
  Eigen::Vector4f x = Eigen::Vector4f::NullaryExpr([&] { return nd(rng) + 0.5f; });
  for (float *p : {W1.data(), W2.data(), b1.data(), b2.data(), x.data(), t.data(), dW1.data(), dW2.data(), db1.data(), db2.data()})
    benchmark::DoNotOptimize(p);
  for (auto _ : state) {
    benchmark::ClobberMemory(); // the params and the example are read afresh each step
    const Eigen::Vector3f h = (1.0f / (1.0f + (-(W1 * x + b1)).array().exp())).matrix();
    const Eigen::Vector2f y = (1.0f / (1.0f + (-(W2 * h + b2)).array().exp())).matrix();
    const Eigen::Vector2f d = y - t;
    const float loss = 0.5f * d.squaredNorm();
    const Eigen::Vector2f g2 = (d.array() * y.array() * (1.0f - y.array())).matrix();
    dW2.noalias() = g2 * h.transpose();
    db2 = g2;
    const Eigen::Vector3f g1 = ((W2.transpose() * g2).array() * h.array() * (1.0f - h.array())).matrix();
    dW1.noalias() = g1 * x.transpose();
    db1 = g1;
    benchmark::DoNotOptimize(loss);
    benchmark::ClobberMemory(); // the gradient is stored
  }
}

// The batch-size sweep (issue 14, item 2): CASE's step at batch state.range(0), Eigen and the JIT
// at -O2 side by side (BM_EigenBatch/CASE/B against BM_NablaBatch/CASE/B).
void BM_EigenBatch(benchmark::State &state, const char *name) {
  Case c = findCase(name);
  c.batch = static_cast<int>(state.range(0));
  EigenMLP m(c);
  for (auto _ : state) benchmark::DoNotOptimize(m.step());
}

void BM_NablaBatch(benchmark::State &state, const char *name) {
  NablaStep s(findCase(name), 2, static_cast<int>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(s.step());
}

// Source to callable code, wall time: /OPT/MODULES/CACHE, MODULES 1 for one module compiled on
// the calling thread, 0 for the default (cut into modules compiled on a thread a core); CACHE 0
// for a cold compile (no object cache), 1 for a warm one (the objects in a cache folder of its
// own, filled by one compile before timing). The stage breakdown of the last compile is reported
// as counters (ms; the JIT's stages in CPU time, the largest of the modules').
void BM_CompileMnist(benchmark::State &state) {
  CompileOptions o;
  o.optLevel = static_cast<int>(state.range(0));
  o.jitModules = static_cast<int>(state.range(1));
  const bool warm = state.range(2) != 0;
  char dir[] = "/tmp/nabla-bench-cache-XXXXXX";
  o.cacheDir = std::string();
  if (warm) {
    if (!mkdtemp(dir)) throw std::runtime_error("mkdtemp");
    o.cacheDir = dir;
  }
  const std::string path = std::string(NABLA_BENCH_DIR) + "/mnist.nn";
  if (warm) (void)Model::compileFile(path, o);
  CompileTimes last;
  for (auto _ : state) {
    auto m = Model::compileFile(path, o);
    if (!m) throw std::runtime_error(m.error().message);
    last = m->compileTimes();
    benchmark::DoNotOptimize(m);
  }
  double emit = 0, cache = 0, passes = 0, codegen = 0;
  for (const JitModuleTimes &t : last.jit.modules) {
    emit = std::max(emit, t.emit), cache = std::max(cache, t.cache);
    passes = std::max(passes, t.optimize), codegen = std::max(codegen, t.codegen);
  }
  state.counters["front"] = last.frontend, state.counters["derive"] = last.derive, state.counters["lower"] = last.lower;
  state.counters["llvmIR"] = emit, state.counters["key"] = cache, state.counters["passes"] = passes;
  state.counters["codegen"] = codegen, state.counters["link"] = last.jit.link;
  if (warm) std::filesystem::remove_all(dir);
}

void BM_NablaThreads(benchmark::State &state, const char *name) {
  // Through the f64 convenience API's thread split, on the f32 model: measures the speedup of
  // --threads; conversion costs are included, so compare only with itself at threads = 1.
  NablaStep s(findCase(name), 2);
  std::vector<double> p(s.params.begin(), s.params.end()), x(s.inputs.begin(), s.inputs.end()),
      t(s.targets.begin(), s.targets.end()), g;
  for (auto _ : state)
    benchmark::DoNotOptimize(s.model.lossAndGradient(p, x.data(), t.data(), s.batch, g, static_cast<int>(state.range(0))));
}

// The f32 FMA peak of one core, the yardstick for the shares of peak: 24 independent chains of
// 512-bit multiply-adds (more than latency x units), no memory traffic. Reported as GFLOP/s
// (2 flops a lane a multiply-add).
void BM_FmaPeak(benchmark::State &state) {
#if defined(__AVX512F__)
  constexpr int kChains = 24;
  const int64_t steps = 1 << 16;
  for (auto _ : state) {
    __m512 acc[kChains];
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (int64_t s = 0; s < steps; ++s) {
#pragma GCC unroll 24
      for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    }
    float sum = 0;
    for (int i = 0; i < kChains; ++i) sum += _mm512_reduce_add_ps(acc[i]);
    benchmark::DoNotOptimize(sum);
  }
  state.counters["GFLOP/s"] = benchmark::Counter(static_cast<double>(state.iterations()) * steps * kChains * 16 * 2 / 1e9,
                                                 benchmark::Counter::kIsRate);
#else
  state.SkipWithError("no AVX-512");
#endif
}

} // namespace

BENCHMARK(BM_FmaPeak);
#define STEP_CASE(NAME)                                                                            \
  BENCHMARK_CAPTURE(BM_Eigen, NAME, #NAME)->Unit(benchmark::kMicrosecond);                         \
  BENCHMARK_CAPTURE(BM_Nabla, NAME, #NAME)->Arg(1)->Arg(2)->Arg(3)->Unit(benchmark::kMicrosecond);
STEP_CASE(hinton)
STEP_CASE(mnist)
STEP_CASE(wide)
STEP_CASE(deep)
#define BATCH_SWEEP(NAME)                                                                          \
  BENCHMARK_CAPTURE(BM_EigenBatch, NAME, #NAME)->RangeMultiplier(2)->Range(1, 1024)->Unit(benchmark::kMicrosecond); \
  BENCHMARK_CAPTURE(BM_NablaBatch, NAME, #NAME)->RangeMultiplier(2)->Range(1, 1024)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_EigenFixedHinton)->Unit(benchmark::kMicrosecond);
BATCH_SWEEP(mnist)
BATCH_SWEEP(wide)
BENCHMARK(BM_CompileMnist)->ArgsProduct({{0, 1, 2, 3}, {1, 0}, {0, 1}})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_NablaThreads, wide, "wide")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
