// Random: SplitMix64-seeded xoshiro256**, uniform and polar-method normal draws, and param
// initialization, exactly as documented in Random.h.
#include "Random.h"

#include "Program.h"

#include <cmath>

namespace nabla {

namespace {
uint64_t splitMix64(uint64_t &x) {
  x += 0x9E3779B97F4A7C15ull;
  uint64_t z = x;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
uint64_t rotl(uint64_t v, int k) { return (v << k) | (v >> (64 - k)); }
} // namespace

Rng::Rng(uint64_t seed) {
  for (uint64_t &s : s_) s = splitMix64(seed);
}

uint64_t Rng::next() {
  uint64_t result = rotl(s_[1] * 5, 7) * 9;
  uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

double Rng::uniform(double lo, double hi) { return std::fma(hi - lo, uniform(), lo); }

double Rng::normal(double mean, double std) {
  double z;
  if (hasCached_) {
    z = cached_;
    hasCached_ = false;
  } else {
    double u, v, s;
    do {
      u = uniform(-1.0, 1.0);
      v = uniform(-1.0, 1.0);
      s = std::fma(u, u, v * v);
    } while (!(s > 0.0 && s < 1.0));
    double f = std::sqrt(-2.0 * std::log(s) / s);
    cached_ = v * f;
    hasCached_ = true;
    z = u * f;
  }
  return std::fma(std, z, mean);
}

std::vector<double> initParams(const Program &program, uint64_t seed) {
  std::vector<double> flat(static_cast<size_t>(program.paramCount()), 0.0);
  Rng rng(seed);
  for (const Decl &p : program.params) {
    double *out = flat.data() + p.offset;
    int64_t n = p.shape.numel();
    const Init &init = p.init;
    switch (init.kind) {
    case Init::Constant:
      for (int64_t i = 0; i < n; ++i) out[i] = init.a;
      break;
    case Init::Normal:
      for (int64_t i = 0; i < n; ++i) out[i] = rng.normal(init.a, init.b);
      break;
    case Init::Uniform:
      for (int64_t i = 0; i < n; ++i) out[i] = rng.uniform(init.a, init.b);
      break;
    case Init::Glorot: {
      // [out, in, k...]: uniform in ±sqrt(6 / (fan_in + fan_out)) with fan_in = in·Πk and
      // fan_out = out·Πk (PyTorch's xavier_uniform_ for convolution kernels too).
      if (p.shape.rank() < 2)
        throw InternalError("glorot init of param \"" + p.name + "\" of shape " +
                            p.shape.describe() + " (needs rank 2 or more)");
      double field = 1;
      for (int k = 2; k < p.shape.rank(); ++k) field *= static_cast<double>(p.shape[k]);
      double limit = std::sqrt(6.0 / (static_cast<double>(p.shape[0] + p.shape[1]) * field));
      for (int64_t i = 0; i < n; ++i) out[i] = rng.uniform(-limit, limit);
      break;
    }
    }
  }
  return flat;
}

} // namespace nabla
