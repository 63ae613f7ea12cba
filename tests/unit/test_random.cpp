// Tests of the project's generator and initParams: pinned values from an independent Python model of
// Random.h's algorithm (exact fma via fractions), determinism, statistics and init kinds.
#include <catch2/catch.hpp>

#include "Program.h"
#include "Random.h"

#include <cmath>

using namespace nabla;

namespace {
Decl param(std::string name, Shape shape, Init init) {
  return Decl{std::move(name), std::move(shape), {}, kNoNode, 0, init};
}
Program withParams(std::vector<Decl> params) {
  Program p;
  int64_t offset = 0;
  for (Decl &d : params) {
    d.offset = offset;
    offset += d.shape.numel();
  }
  p.params = std::move(params);
  return p;
}
} // namespace

TEST_CASE("Rng reproduces the documented algorithm bit for bit", "[random]") {
  Rng r0(0);
  CHECK(r0.next() == 0x99ec5f36cb75f2b4ull);
  CHECK(r0.next() == 0xbf6e1f784956452aull);
  CHECK(r0.next() == 0x1a5f849d4933e6e0ull);
  CHECK(r0.next() == 0x6aa594f1262d2d2cull);

  Rng r(42);
  CHECK(r.uniform() == 0.08386297105988216);
  CHECK(r.uniform() == 0.3789802506626686);
  CHECK(r.uniform() == 0.6800434110281394);
  CHECK(r.uniform(-2.5, 0.5) == 0.2740788359761628);
  CHECK(r.uniform(-2.5, 0.5) == 0.4754117428463084);
  const double normals[] = {1.4678604152461876, 1.3803018257955546, 1.294459116421127,
                            1.219892035820863, 1.3971108654831592};
  for (double expected : normals) CHECK(r.normal(1.0, 0.5) == expected);
}

TEST_CASE("Rng is deterministic per seed and differs across seeds", "[random]") {
  Rng a(123), b(123), c(124);
  bool anyDiffers = false;
  for (int i = 0; i < 100; ++i) {
    uint64_t x = a.next();
    CHECK(x == b.next());
    anyDiffers |= x != c.next();
  }
  CHECK(anyDiffers);
}

TEST_CASE("uniform has the right range, mean and variance", "[random]") {
  Rng r(7);
  const int n = 100000;
  double sum = 0, sum2 = 0, lo = 1, hi = 0;
  for (int i = 0; i < n; ++i) {
    double u = r.uniform();
    REQUIRE(u >= 0.0);
    REQUIRE(u < 1.0);
    sum += u, sum2 += u * u, lo = std::min(lo, u), hi = std::max(hi, u);
  }
  double mean = sum / n, var = sum2 / n - mean * mean;
  CHECK(mean == Approx(0.5).margin(0.005));
  CHECK(var == Approx(1.0 / 12).margin(0.002));
  CHECK(lo < 0.001);
  CHECK(hi > 0.999);

  for (int i = 0; i < 1000; ++i) {
    double u = r.uniform(-3.0, -1.0);
    REQUIRE(u >= -3.0);
    REQUIRE(u <= -1.0);
  }
}

TEST_CASE("normal has the right mean and standard deviation", "[random]") {
  Rng r(11);
  const int n = 100000;
  double sum = 0, sum2 = 0;
  for (int i = 0; i < n; ++i) {
    double z = r.normal(2.0, 3.0);
    REQUIRE(std::isfinite(z));
    sum += z, sum2 += z * z;
  }
  double mean = sum / n, sd = std::sqrt(sum2 / n - mean * mean);
  CHECK(mean == Approx(2.0).margin(0.05));
  CHECK(sd == Approx(3.0).margin(0.05));
}

TEST_CASE("the polar method's second value is cached across (mean, std) changes", "[random]") {
  Rng a(5), b(5);
  double z1 = a.normal(0, 1), z2 = a.normal(0, 1);
  CHECK(b.normal(10, 2) == std::fma(2.0, z1, 10.0));
  b.uniform(); // a uniform draw in between does not drop the cached value
  a.uniform();
  CHECK(b.normal(-1, 0.5) == std::fma(0.5, z2, -1.0));
  CHECK(a.next() == b.next());
}

TEST_CASE("initParams draws one stream in declaration order", "[random][init]") {
  Program p = withParams({param("W", {2, 3}, {Init::Normal, 0.0, 0.5}),
                          param("b", {2}, {Init::Constant, 0.25, 0}),
                          param("U", {4, 6}, {Init::Glorot, 0, 0}),
                          param("s", {}, {Init::Uniform, -1.0, 2.0})});
  std::vector<double> flat = initParams(p, 9);
  REQUIRE(flat.size() == static_cast<size_t>(p.paramCount()));

  Rng r(9);
  for (int i = 0; i < 6; ++i) CHECK(flat[static_cast<size_t>(i)] == r.normal(0.0, 0.5));
  CHECK(flat[6] == 0.25); // a constant draws nothing
  CHECK(flat[7] == 0.25);
  double limit = std::sqrt(6.0 / 10.0);
  for (int i = 8; i < 32; ++i) CHECK(flat[static_cast<size_t>(i)] == r.uniform(-limit, limit));
  CHECK(flat[32] == r.uniform(-1.0, 2.0));
}

TEST_CASE("initParams is deterministic for a seed and differs across seeds", "[random][init]") {
  Program p = withParams({param("W", {5, 4}, {Init::Normal, 0, 1}), param("h.W", {3, 5}, {})});
  p.params[1].init.kind = Init::Glorot;
  CHECK(initParams(p, 0) == initParams(p, 0));
  CHECK(initParams(p, 0) != initParams(p, 1));
  CHECK(initParams(p, 1ull << 63) != initParams(p, 0));
}

TEST_CASE("glorot stays within +-sqrt(6 / (in + out)) and fills the range", "[random][init]") {
  Program p = withParams({param("W", {30, 20}, {Init::Glorot, 0, 0})});
  double limit = std::sqrt(6.0 / 50.0), maxAbs = 0;
  for (double w : initParams(p, 3)) {
    REQUIRE(std::abs(w) <= limit);
    maxAbs = std::max(maxAbs, std::abs(w));
  }
  CHECK(maxAbs > 0.95 * limit);

  Program bad = withParams({param("v", {4}, {Init::Glorot, 0, 0})});
  CHECK_THROWS_AS(initParams(bad, 0), InternalError);
}

TEST_CASE("zero and constant init", "[random][init]") {
  Program p = withParams({param("b", {3}, {}), param("c", {2, 2}, {Init::Constant, -1.5, 0}),
                          param("s", {}, {Init::Constant, 7, 0})});
  std::vector<double> expected = {0, 0, 0, -1.5, -1.5, -1.5, -1.5, 7};
  CHECK(initParams(p, 0) == expected);
  CHECK(initParams(p, 99) == expected);
}
