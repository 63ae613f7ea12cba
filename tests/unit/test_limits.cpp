// Limits and the regressions of tests/fuzz and tests/limits at the library level: memory estimates
// refuse huge programs before anything is allocated, a params file for a huge program is checked
// without allocating its params, the CSV scanner stays inside a field, and lowering keeps fused
// expressions shallow however long a chain of statements is. (tests/limits/run.sh checks the same
// through the nabla binary; the fuzz findings' inputs are replayed by the fuzz_replay_* tests.)
#include <catch2/catch.hpp>

#include "DataIO.h"
#include "Limits.h"
#include "LowerToLoops.h"
#include "Model.h"
#include "ParamIO.h"
#include "Sema.h"

#include <fmt/format.h>

#include <cstdlib>
#include <unistd.h>
#include <functional>
#include <optional>
#include <string>

using namespace nabla;

namespace {

// Sets an environment variable for the scope of one test, then puts back what was there.
class ScopedEnv {
public:
  ScopedEnv(const char *name, const char *value) : name_(name) {
    if (const char *old = std::getenv(name)) old_ = old;
    if (value) ::setenv(name, value, 1);
    else ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }

private:
  const char *name_;
  std::optional<std::string> old_;
};

Program compile(const std::string &src) {
  std::string diags;
  std::optional<Program> p = compileSource(SourceFile{"limits.nn", src}, diags);
  if (!p) FAIL(diags);
  return std::move(*p);
}

Model model(const std::string &src, Engine engine = Engine::Interp) {
  CompileOptions o;
  o.engine = engine;
  Expected<Model> m = Model::compileString(src, "limits.nn", o);
  if (!m) FAIL(m.error().message);
  return std::move(*m);
}

// 64 params of 2^28 elements: 2^34 scalars, 128 GiB in f64.
std::string giantSource() {
  std::string s = "input x[2]\ntarget t\n";
  for (int i = 1; i <= 64; ++i) s += fmt::format("param w{}[268435456]\n", i);
  s += "y = sum(x)";
  for (int i = 1; i <= 64; ++i) s += fmt::format(" + sum(w{})", i);
  return s + "\noutput y\nloss E = (y - t) ^ 2\n";
}

} // namespace

TEST_CASE("limits: memory estimates refuse huge programs before allocating", "[limits]") {
  ScopedEnv unset("NABLA_MEMORY_LIMIT", nullptr);
  Model giant = model(giantSource());
  for (Workload w : {Workload::Eval, Workload::Gradcheck, Workload::Train, Workload::Predict}) {
    MemoryUse u = estimateMemory(giant, w, 10, 10, 2);
    CHECK(u.params >= 128.0 * (1ull << 30));
    Expected<bool> ok = checkMemory(giant, "eval", w, 10, 10, 2);
    REQUIRE_FALSE(ok);
    CHECK_THAT(ok.error().message, Catch::StartsWith("limits.nn: error: 'eval' needs about "));
    CHECK_THAT(ok.error().message, Catch::Matches(".* [GT]iB for the params and their gradients.*"));
  }
  // A small program fits.
  Model small = model("input x[3]\ntarget t\nparam w[3]\nloss E = (dot(w, x) - t) ^ 2\n");
  CHECK(checkMemory(small, "train", Workload::Train, 1000, 32, 1));
  {
    ScopedEnv tiny("NABLA_MEMORY_LIMIT", "1K");
    Expected<bool> ok = checkMemory(small, "train", Workload::Train, 100000, 32, 1);
    REQUIRE_FALSE(ok);
    CHECK_THAT(ok.error().message, Catch::EndsWith("more than the 1.0 KiB allowed by NABLA_MEMORY_LIMIT=1K"));
  }
  {
    ScopedEnv big("NABLA_MEMORY_LIMIT", "2T");
    CHECK(memoryBudget().bytes == 2.0 * (1ull << 40));
    CHECK(checkMemory(small, "train", Workload::Train, 100000, 32, 1));
  }
  {
    ScopedEnv bad("NABLA_MEMORY_LIMIT", "lots");
    CHECK(memoryBudget().from == "available now");
  }
  // The work space: a per-example [16384, 16384] value, 1 GiB an example in f32.
  Model wide = model("param c[16384, 1]\ninput x[16384]\ny = tanh(c * x)\nloss E = mean(y)\n", Engine::Jit);
  // eval goes through its examples in chunks of at most 256 MiB of work space (here one example
  // a chunk, which is larger), train needs its whole batch at once.
  CHECK(wide.chunkRows(4) == 1);
  MemoryUse u = estimateMemory(wide, Workload::Eval, 4, 4, 1);
  CHECK(u.work >= 1.0 * (1ull << 30));
  CHECK(u.work < 2.0 * (1ull << 30));
  CHECK(u.params < 1.0 * (1ull << 20));
  CHECK(estimateMemory(wide, Workload::Train, 4, 4, 1).work >= 4.0 * (1ull << 30));
}

TEST_CASE("limits: files are read up to a limit, never to the end of an endless one", "[limits]") {
  // A character device that is not a terminal is refused before reading (it never ends).
  Expected<std::string> zero = readFile("/dev/zero", 1000);
  REQUIRE_FALSE(zero);
  CHECK(zero.error().message == "/dev/zero: error: cannot read: it is a character device, not a file");
  CHECK(*readFile("/dev/null", 1000) == ""); // ends at once
  // An endless pipe is read up to the limit.
  {
    FILE *endless = ::popen("cat /dev/zero", "r");
    REQUIRE(endless);
    const std::string path = fmt::format("/dev/fd/{}", ::fileno(endless));
    Expected<std::string> piped = readFile(path, 100000);
    REQUIRE_FALSE(piped);
    CHECK(piped.error().message == path + ": error: file is larger than 97.7 KiB, the most that can be read");
    ::pclose(endless);
  }
  char path[] = "/tmp/nabla-limits-XXXXXX";
  int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, "0123456789", 10) == 10);
  ::close(fd);
  CHECK(*readFile(path, 10) == "0123456789");
  Expected<std::string> r = readFile(path, 9, "why");
  REQUIRE_FALSE(r);
  CHECK(r.error().message == fmt::format("{}: error: file is 10 bytes; at most 9 bytes can be read (why)", path));
  {
    ScopedEnv limit("NABLA_MEMORY_LIMIT", "36");
    Expected<std::string> d = readDataFile(path);
    REQUIRE_FALSE(d);
    CHECK(d.error().message ==
          fmt::format("{}: error: file is 10 bytes; at most 9 bytes can be read (a quarter of the 36 "
                      "bytes allowed by NABLA_MEMORY_LIMIT=36)", path));
  }
  ::unlink(path);
}

TEST_CASE("limits: formatBytes", "[limits]") {
  CHECK(formatBytes(0) == "0 bytes");
  CHECK(formatBytes(1023) == "1023 bytes");
  CHECK(formatBytes(1536) == "1.5 KiB");
  CHECK(formatBytes(6.0 * (1ull << 30)) == "6.0 GiB");
  CHECK(formatBytes(2.0 * (1ull << 40)) == "2.0 TiB");
}

TEST_CASE("limits: a params file for a huge program is read without allocating its params", "[limits]") {
  Program p = compile(giantSource());
  // 2^34 doubles would be 128 GiB: a text shorter than the param count cannot hold them all.
  for (const char *text : {"{}", "{\"w1\": [1, 2, 3]}", "{\"w1\": 1}", "[[[[", "{\"nope\": 1}"}) {
    Expected<std::vector<double>> r = parseParams(text, "p.json", p);
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().message, Catch::StartsWith("p.json"));
  }
  Expected<std::vector<double>> r = parseParams("{}", "p.json", p);
  CHECK_THAT(r.error().message, Catch::StartsWith("p.json: error: missing params \"w1\" (shape [268435456])"));
}

TEST_CASE("limits: a field that is only a sign (fuzz_csv: read past the field)", "[limits]") {
  Program p = compile("input x[2]\ntarget t\nparam w[2]\nloss E = (dot(w, x) - t) ^ 2\n");
  for (const char *field : {"-", "+", "+e", "-e5"}) {
    Expected<Dataset> d = parseCsv(fmt::format("1,2,0\n1,{},0", field), "d.csv", p);
    REQUIRE_FALSE(d);
    CHECK(d.error().message == fmt::format("d.csv:2: error: column 2: \"{}\" is not a number", field));
  }
  Expected<Dataset> dot = parseCsv("1,2,0\n1,-.5,0", "d.csv", p);
  REQUIRE_FALSE(dot);
  CHECK(dot.error().message == "d.csv:2: error: column 2: \"-.5\" is not a number: a leading digit is required");
  // At the very end of the text, with nothing after the sign.
  Expected<Dataset> d = parseCsv("1,2,0\n1,2,-", "d.csv", p);
  REQUIRE_FALSE(d);
  CHECK(d.error().message == "d.csv:2: error: column 3: \"-\" is not a number");
}

TEST_CASE("limits: numbers beyond the f32 range are errors where they stand for f32", "[limits]") {
  Program p = compile("input x[2]\ntarget t\nparam w[2, 2]\nloss E = (sum(w @ x) - t) ^ 2\n");
  const char *text = "1,2,0\n1,-3.5e38,0\n";
  Expected<Dataset> d64 = parseCsv(text, "d.csv", p);
  REQUIRE(d64);
  CHECK(d64->inputs[3] == -3.5e38);
  Expected<Dataset> d32 = parseCsv(text, "d.csv", p, false, /*float32=*/true);
  REQUIRE_FALSE(d32);
  CHECK_THAT(d32.error().message, Catch::StartsWith("d.csv:2: error: column 2: \"-3.5e38\" is out of the f32 range"));
  // FLT_MAX itself fits.
  CHECK(parseCsv("1,3.4028234e38,0\n", "d.csv", p, false, true));

  Expected<std::vector<double>> P = parseParams("{\"w\": [[1, 2], [3, 1e39]]}", "p.json", p);
  REQUIRE(P);
  Expected<bool> fits = checkParamsFitFloat32(*P, "p.json", p);
  REQUIRE_FALSE(fits);
  CHECK_THAT(fits.error().message, Catch::StartsWith("p.json: error: param \"w\" element [1][1] is 1e+39, out of the f32 range"));
  (*P)[3] = 3e38;
  CHECK(checkParamsFitFloat32(*P, "p.json", p));
}

TEST_CASE("limits: lowering keeps fused expressions shallow on long chains of statements", "[limits]") {
  // 20,000 single-use elementwise statements fuse into one expression; lowering recursed once a
  // level and overflowed the stack. Now a buffer every 64 levels.
  std::string src = "input x[3]\nparam w[3]\nv0 = x * w\n";
  for (int k = 1; k < 20000; ++k) src += fmt::format("v{} = tanh(v{})\n", k, k - 1);
  src += "output v19999\nloss E = sum(v19999)\n";
  Program p = compile(src);
  Expected<Derivation> d = derive(p);
  REQUIRE(d);
  loops::Program L = lowerToLoops(p, d->outputs, &*d);
  size_t deepest = 0;
  for (const loops::Function *f : {&L.forward, &L.gradient})
    for (const loops::Kernel &k : f->kernels) {
      std::function<size_t(int)> depth = [&](int e) -> size_t {
        if (e < 0) return 0;
        const loops::Expr &x = k.pool[static_cast<size_t>(e)];
        return 1 + std::max(depth(x.a), depth(x.b));
      };
      deepest = std::max({deepest, depth(k.body), depth(k.epilogue)});
    }
  CHECK(deepest <= 66); // 64 fused levels, a load below and a store's operand above
  CHECK(L.forward.kernels.size() >= 20000 / 65);
}
