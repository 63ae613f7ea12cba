// This core's f32 FMA peak, the ceiling against which tests/bench/README.md states the share of
// peak of a training step: 12 independent chains of vector FMAs (enough to hide the FMA latency
// on two pipes), 512-bit and 256-bit, best of 5 runs, CPU time.
//
//   g++ -O3 -march=native tests/bench/fma_peak.cpp -o /tmp/fma_peak && /tmp/fma_peak
//
// (also built as fma_peak with -DNABLA_BUILD_BENCH=ON). At -O2 GCC kept the chains in memory
// (44 GFLOP/s on the development machine); -O3 keeps them in registers.
#include <immintrin.h>

#include <cstdio>
#include <ctime>
#include <initializer_list>

namespace {

template <int W> float chains(long iters) {
  if constexpr (W == 512) {
    __m512 a[12];
    const __m512 x = _mm512_set1_ps(1.0000001f), y = _mm512_set1_ps(0.9999999f);
    for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(float(i));
    for (long it = 0; it < iters; ++it)
      for (int i = 0; i < 12; ++i) a[i] = _mm512_fmadd_ps(a[i], x, y);
    float s = 0;
    for (int i = 0; i < 12; ++i) s += _mm512_reduce_add_ps(a[i]);
    return s;
  } else {
    __m256 a[12];
    const __m256 x = _mm256_set1_ps(1.0000001f), y = _mm256_set1_ps(0.9999999f);
    for (int i = 0; i < 12; ++i) a[i] = _mm256_set1_ps(float(i));
    for (long it = 0; it < iters; ++it)
      for (int i = 0; i < 12; ++i) a[i] = _mm256_fmadd_ps(a[i], x, y);
    alignas(32) float t[8];
    float s = 0;
    for (int i = 0; i < 12; ++i) {
      _mm256_store_ps(t, a[i]);
      for (float v : t) s += v;
    }
    return s;
  }
}

double cpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

} // namespace

int main() {
  const long iters = 50'000'000;
  float sink = 0;
  for (int w : {512, 256}) {
    double best = 0;
    for (int r = 0; r < 5; ++r) {
      const double t0 = cpuSeconds();
      sink += w == 512 ? chains<512>(iters) : chains<256>(iters);
      const double gflops = double(iters) * 12 * (w / 32) * 2 / (cpuSeconds() - t0) / 1e9;
      if (gflops > best) best = gflops;
    }
    std::printf("%d-bit FMA: %.1f GFLOP/s f32 (12 chains, best of 5, CPU time)\n", w, best);
  }
  return sink == 42.0f; // keeps the chains
}
