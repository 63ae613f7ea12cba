// The emitted-code side of the emit-cpp tests (tests/emit/run.sh): run.sh compiles the emitted
// sources of many programs into one bundle with this driver. For each program and batch size it
// reads params, inputs and targets (written by emit_compare), runs forward and
// loss_and_gradient, and writes what they computed for emit_compare to check against the JIT.
// Also checked here: nothing is written outside the workspace_size(n) reals of workspace, the
// outputs and the grads; grads are overwritten, not accumulated; a second call gives the same
// bits (no state).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace emit_test {

inline bool readNumbers(const std::string& path, std::vector<double>& v) {
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return false;
  std::size_t count = 0;
  bool ok = std::fscanf(f, "%zu", &count) == 1;
  v.assign(count, 0.0);
  for (std::size_t i = 0; ok && i < count; ++i) ok = std::fscanf(f, "%lf", &v[i]) == 1;
  std::fclose(f);
  return ok;
}

template <class T>
void writeNumbers(std::FILE* f, const char* what, const T* v, std::size_t count) {
  std::fprintf(f, "%s %zu\n", what, count);
  for (std::size_t i = 0; i < count; ++i) std::fprintf(f, "%.17g\n", static_cast<double>(v[i]));
}

constexpr std::size_t kGuard = 64;

// A buffer of `count` reals followed by kGuard canaries; every real starts as `fill`.
template <class T>
struct Guarded {
  std::vector<T> data;
  std::size_t count;
  Guarded(std::size_t n, T fill) : data(n + kGuard, fill), count(n) {
    for (std::size_t i = 0; i < kGuard; ++i) data[n + i] = T(12345.678);
  }
  bool intact() const {
    for (std::size_t i = 0; i < kGuard; ++i)
      if (!(data[count + i] == T(12345.678))) return false;
    return true;
  }
};

// P: an adapter with real, kParams, kInputs, kTargets, kOutputs, hasLoss, workspace_size,
// forward and loss_and_gradient. Returns false on an error (written to the result file too).
template <class P>
bool run(const std::string& dir, std::size_t n, const std::string& resultName) {
  using real = typename P::real;
  std::vector<double> params, inputs, targets;
  std::FILE* out = std::fopen((dir + "/" + resultName).c_str(), "w");
  if (!out) {
    std::fprintf(stderr, "cannot write %s/%s\n", dir.c_str(), resultName.c_str());
    return false;
  }
  auto fail = [&](const char* what) {
    std::fprintf(out, "error %s\n", what);
    std::fclose(out);
    std::fprintf(stderr, "%s: %s\n", dir.c_str(), what);
    return false;
  };
  if (!readNumbers(dir + "/params.txt", params) || !readNumbers(dir + "/inputs.txt", inputs) ||
      !readNumbers(dir + "/targets.txt", targets))
    return fail("cannot read the data files");
  if (params.size() != P::kParams || inputs.size() != n * P::kInputs || targets.size() != n * P::kTargets)
    return fail("the data files do not fit kParams, kInputs, kTargets");
  const std::vector<real> p(params.begin(), params.end()), x(inputs.begin(), inputs.end()),
      t(targets.begin(), targets.end());
  const real nan = std::numeric_limits<real>::quiet_NaN();

  Guarded<real> y(n * P::kOutputs, nan), ws(P::workspace_size(n), nan);
  P::forward(p.data(), x.data(), n, y.data.data(), ws.data.data());
  if (!y.intact()) return fail("forward wrote past the outputs");
  if (!ws.intact()) return fail("forward wrote past the workspace");

  if (P::hasLoss) {
    Guarded<real> g(P::kParams, nan), ws2(P::workspace_size(n), nan), g2(P::kParams, real(7));
    const real loss = P::loss_and_gradient(p.data(), x.data(), t.data(), n, g.data.data(), ws2.data.data());
    if (!g.intact()) return fail("loss_and_gradient wrote past the grads");
    if (!ws2.intact()) return fail("loss_and_gradient wrote past the workspace");
    // Again, on a used workspace and grads holding other numbers: the same bits.
    const real loss2 = P::loss_and_gradient(p.data(), x.data(), t.data(), n, g2.data.data(), ws2.data.data());
    if (std::memcmp(&loss, &loss2, sizeof loss) != 0 ||
        std::memcmp(g.data.data(), g2.data.data(), P::kParams * sizeof(real)) != 0)
      return fail("a second call computed different bits (state, or grads accumulated)");
    writeNumbers(out, "loss", &loss, 1);
    writeNumbers(out, "grads", g.data.data(), P::kParams);
  } else {
    writeNumbers(out, "loss", static_cast<const real*>(nullptr), 0);
  }
  writeNumbers(out, "outputs", y.data.data(), y.count);
  std::fclose(out);
  return true;
}

struct Entry {
  const char* name;
  bool (*run)(const std::string&, std::size_t, const std::string&);
};

// argv: DATA-DIR RESULT-NAME: runs every program of `entries` at batch sizes 1, 3, 6 and 37 on
// DATA-DIR/NAME/nN/, writing RESULT-NAME there.
inline int main(int argc, char** argv, const Entry* entries, std::size_t count) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s DATA-DIR RESULT-NAME\n", argv[0]);
    return 2;
  }
  int failures = 0;
  for (std::size_t i = 0; i < count; ++i)
    for (std::size_t n : {1, 3, 6, 37})
      if (!entries[i].run(std::string(argv[1]) + "/" + entries[i].name + "/n" + std::to_string(n), n, argv[2]))
        ++failures;
  return failures ? 1 : 0;
}

}  // namespace emit_test

// An adapter for the namespace NS of an emitted program.
#define EMIT_TEST_ADAPTER(NS, HAS_LOSS, LOSS_FN)                                                   \
  struct Adapter_##NS {                                                                           \
    using real = NS::real;                                                                        \
    static constexpr std::size_t kParams = NS::kParams, kInputs = NS::kInputs,                    \
                                 kTargets = NS::kTargets, kOutputs = NS::kOutputs;                \
    static constexpr bool hasLoss = HAS_LOSS;                                                     \
    static std::size_t workspace_size(std::size_t n) { return NS::workspace_size(n); }            \
    static void forward(const real* p, const real* x, std::size_t n, real* y, real* w) {         \
      NS::forward(p, x, n, y, w);                                                                 \
    }                                                                                             \
    static real loss_and_gradient(const real* p, const real* x, const real* t, std::size_t n,     \
                                  real* g, real* w) {                                             \
      return LOSS_FN(p, x, t, n, g, w);                                                           \
    }                                                                                             \
  };
#define EMIT_TEST_PROGRAM(NS) EMIT_TEST_ADAPTER(NS, true, NS::loss_and_gradient)
#define EMIT_TEST_FORWARD_ONLY(NS) EMIT_TEST_ADAPTER(NS, false, emit_test_no_loss)

template <class real>
real emit_test_no_loss(const real*, const real*, const real*, std::size_t, real*, real*) {
  return real(0);
}
