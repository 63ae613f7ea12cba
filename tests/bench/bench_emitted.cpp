// One training step (forward + loss + full gradient, no update), f32, one thread, of the C++ that
// `nabla emit-cpp` writes for the four bench programs, compiled with g++ -O3 -march=native
// (BM_Emitted) and, where clang++ is installed, with clang++ -O3 -march=native (BM_EmittedClang;
// see CMakeLists.txt: the sources are generated at build time). Same params (initParams(1)), inputs
// and targets as BM_Nabla in bench_step.cpp, so the numbers sit beside the JIT and Eigen.
#include "Model.h"

#include "deep.hpp"
#include "hinton.hpp"
#include "mnist.hpp"
#include "wide.hpp"
#ifdef NABLA_BENCH_CLANG
#include "deep_clang.hpp"
#include "hinton_clang.hpp"
#include "mnist_clang.hpp"
#include "wide_clang.hpp"
#endif

#include <benchmark/benchmark.h>

#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Emitted {
  const char *name;
  int batch;
  std::size_t (*workspaceSize)(std::size_t);
  float (*step)(const float *, const float *, const float *, std::size_t, float *, float *);
};

const Emitted kEmitted[] = {
    {"hinton", 1, hinton::workspace_size, hinton::loss_and_gradient},
    {"mnist", 64, mnist::workspace_size, mnist::loss_and_gradient},
    {"wide", 256, wide::workspace_size, wide::loss_and_gradient},
    {"deep", 32, deep::workspace_size, deep::loss_and_gradient},
#ifdef NABLA_BENCH_CLANG
    {"hinton_clang", 1, hinton_clang::workspace_size, hinton_clang::loss_and_gradient},
    {"mnist_clang", 64, mnist_clang::workspace_size, mnist_clang::loss_and_gradient},
    {"wide_clang", 256, wide_clang::workspace_size, wide_clang::loss_and_gradient},
    {"deep_clang", 32, deep_clang::workspace_size, deep_clang::loss_and_gradient},
#endif
};

void BM_Emitted(benchmark::State &state, const char *emitted) {
  const Emitted *e = nullptr;
  for (auto &x : kEmitted)
    if (std::string(emitted) == x.name) e = &x;
  if (!e) throw std::runtime_error(std::string("no emitted case ") + emitted);
  // CASE_clang: CASE's program compiled by clang++.
  std::string name = emitted;
  if (name.size() > 6 && name.compare(name.size() - 6, 6, "_clang") == 0) name.resize(name.size() - 6);
  // The data of NablaStep (bench_step.cpp).
  nabla::CompileOptions o;
  o.engine = nabla::Engine::Interp;
  auto m = nabla::Model::compileFile(std::string(NABLA_BENCH_DIR) + "/" + name + ".nn", o);
  if (!m) throw std::runtime_error(m.error().message);
  std::vector<double> p = m->initParams(1);
  std::vector<float> params(p.begin(), p.end());
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0, 0.1f);
  const int batch = e->batch;
  std::vector<float> inputs(static_cast<size_t>(m->inputCount() * batch));
  for (float &x : inputs) x = nd(rng) + 0.5f;
  std::vector<float> targets(static_cast<size_t>(m->targetCount() * batch), 0.0f);
  int64_t k = m->targetCount();
  for (int i = 0; i < batch; ++i) targets[static_cast<size_t>(i * k + i % k)] = 1;
  std::vector<float> grads(static_cast<size_t>(m->paramCount())), workspace(e->workspaceSize(static_cast<size_t>(batch)));
  for (auto _ : state)
    benchmark::DoNotOptimize(e->step(params.data(), inputs.data(), targets.data(), static_cast<size_t>(batch),
                                     grads.data(), workspace.data()));
}

void BM_EmittedClang(benchmark::State &state, const char *emitted) { BM_Emitted(state, emitted); }

} // namespace

BENCHMARK_CAPTURE(BM_Emitted, hinton, "hinton")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Emitted, mnist, "mnist")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Emitted, wide, "wide")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Emitted, deep, "deep")->Unit(benchmark::kMicrosecond);
#ifdef NABLA_BENCH_CLANG
BENCHMARK_CAPTURE(BM_EmittedClang, hinton, "hinton_clang")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_EmittedClang, mnist, "mnist_clang")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_EmittedClang, wide, "wide_clang")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_EmittedClang, deep, "deep_clang")->Unit(benchmark::kMicrosecond);
#endif
