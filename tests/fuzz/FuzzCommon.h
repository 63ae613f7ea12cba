// Shared by the fuzz targets: how a finding is reported, and the fixed programs that the CSV and
// JSON targets read data against. A target's entry point is LLVMFuzzerTestOneInput; it runs under
// libFuzzer (NABLA_BUILD_FUZZ) or under replay_main.cpp, which feeds it files (regressions, corpora).
#pragma once
#include "Sema.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace nabla::fuzz {

// A broken invariant: print what and abort, so that libFuzzer keeps the input as a crash.
[[noreturn]] inline void bug(std::string_view what, std::string_view detail = {}) {
  std::fprintf(stderr, "FUZZ FINDING: %.*s\n%.*s\n", static_cast<int>(what.size()), what.data(),
               static_cast<int>(detail.size()), detail.data());
  std::abort();
}

inline std::string_view asText(const uint8_t *data, size_t size) {
  return {reinterpret_cast<const char *>(data), size};
}

// The programs that data and params are read against: class targets (one-hot from a class-index
// column), rank-2 inputs beside a scalar input, a scalar target, no targets and a rank-0 param.
inline constexpr const char *kFixedPrograms[] = {
    // 0: class targets, dense layers (dotted params h.W, h.b)
    "input x[4]\ntarget species[3]\nh = dense(x / 4, 8, tanh)\ny = dense(h, 3, softmax)\n"
    "output y\nloss E = cross_entropy(y, species)\n",
    // 1: a rank-2 input and a scalar input, two targets; a scalar and a matrix param
    "input X[2, 3]\ninput s\ntarget t[2]\nparam v[3]\nparam A[3, 3] ~ glorot\nparam c = 0.5\n"
    "Y = softplus(X * v + s) @ transpose(A)\nr = mean(Y, 1) * c\noutput r\n"
    "loss E = sum((r - t)^2)\n",
    // 2: a scalar target
    "input x[2]\ntarget t\nh = dense(x, 4, tanh)\nz = dense(h, 1, linear)\np = logistic(sum(z))\n"
    "output p\nloss E = bce(p, t)\n",
    // 3: no targets, no loss, one scalar param
    "input x[3]\nparam w[3]\nparam k\ny = dot(w, x) * k\noutput y\n",
};
inline constexpr size_t kFixedProgramCount = sizeof kFixedPrograms / sizeof *kFixedPrograms;

// The fixed programs, compiled once.
inline Program &fixedProgram(size_t i) {
  static Program *programs[kFixedProgramCount] = {};
  if (!programs[i]) {
    std::string diags;
    std::optional<Program> p =
        compileSource(SourceFile{"fixed" + std::to_string(i) + ".nn", kFixedPrograms[i]}, diags);
    if (!p) bug("a fixed program does not compile", diags);
    programs[i] = new Program(std::move(*p)); // lives as long as the process
  }
  return *programs[i];
}

} // namespace nabla::fuzz
