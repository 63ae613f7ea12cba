// Random: the project's own deterministic generator and param initialization. Same seed, same
// numbers on every machine and compiler: no std distributions, only exact integer arithmetic,
// correctly rounded IEEE operations (std::fma, std::sqrt) and std::log.
#pragma once
#include <cstdint>
#include <vector>

namespace nabla {

struct Program;

// The algorithm, exactly (emitted C++ reproduces it bit for bit; all arithmetic on uint64_t wraps):
//
//   Seeding, SplitMix64 (Steele, Lea, Flood 2014) with x = seed, called four times for s[0..3]:
//     x += 0x9E3779B97F4A7C15; z = x;
//     z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
//     return z ^ (z >> 31);
//   next(), xoshiro256** 1.0 (Blackman, Vigna 2018), rotl(v, k) = (v << k) | (v >> (64 - k)):
//     result = rotl(s[1] * 5, 7) * 9; t = s[1] << 17;
//     s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl(s[3], 45);
//     return result;
//   uniform()         = double(next() >> 11) * 0x1.0p-53              in [0, 1), 53 random bits
//   uniform(lo, hi)   = std::fma(hi - lo, uniform(), lo)               (may round to hi)
//   normal(mean, std) = std::fma(std, z, mean), z a standard normal from the Marsaglia polar method:
//     if a cached z exists: take it and clear the cache. Otherwise repeat
//       u = uniform(-1, 1); v = uniform(-1, 1); s = std::fma(u, u, v * v);
//     until 0 < s < 1; then f = std::sqrt(-2.0 * std::log(s) / s); cache z2 = v * f; z = u * f.
//     The cache belongs to the generator: it survives uniform() calls and changes of (mean, std).
// std::fma is written out so that no compiler flag (-ffp-contract, -march) can change a result.
// std::log is the one libm function used; glibc's is accurate to < 1 ulp and identical across
// x86-64 machines, which is what "every machine" means here.
class Rng {
public:
  explicit Rng(uint64_t seed);
  uint64_t next();
  double uniform();
  double uniform(double lo, double hi);
  double normal(double mean, double std);

private:
  uint64_t s_[4];
  double cached_ = 0;
  bool hasCached_ = false;
};

// Initial params for `seed`: one Rng(seed) stream; params in declaration order (Program::params),
// each one's elements row-major. `= c` (Init::Constant) writes c and draws nothing;
// normal(a, b) draws normal(a, b); uniform(a, b) draws uniform(a, b); glorot (rank 2, [out, in])
// draws uniform(-L, L) with L = std::sqrt(6.0 / double(in + out)).
// Returns the flat array: size Program::paramCount(), each param at its Decl::offset.
// Throws InternalError for glorot on a param that is not rank 2 (sema rejects that).
std::vector<double> initParams(const Program &program, uint64_t seed);

} // namespace nabla
