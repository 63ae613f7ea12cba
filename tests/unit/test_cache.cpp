// The JIT's on-disk object cache (runtime/llvm/ObjectCache.h): a warm compile (every module from
// the cache) gives bit-identical results to a cold one and to no cache at all; a truncated,
// corrupted, foreign or swapped cache file is a miss and is replaced, never a crash; a cache
// folder that cannot be created means no cache; the environment's switches. Every test uses a
// temporary folder of its own.
#include <catch2/catch.hpp>

#include "Model.h"
#include "ObjectCache.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace nabla;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    std::string t = (fs::temp_directory_path() / "nabla-cache-test-XXXXXX").string();
    REQUIRE(mkdtemp(t.data()));
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::vector<fs::path> objects() const {
    std::vector<fs::path> r;
    if (!fs::exists(path)) return r;
    for (auto &e : fs::directory_iterator(path)) r.push_back(e.path());
    std::sort(r.begin(), r.end());
    return r;
  }
};

// Sets an environment variable for one scope and restores it.
struct EnvVar {
  std::string name;
  std::optional<std::string> old;
  EnvVar(const char *n, const char *value) : name(n) {
    if (const char *v = std::getenv(n)) old = v;
    if (value) setenv(n, value, 1);
    else unsetenv(n);
  }
  ~EnvVar() {
    if (old) setenv(name.c_str(), old->c_str(), 1);
    else unsetenv(name.c_str());
  }
};

std::string mnistSource() {
  std::ifstream in(std::string(NABLA_SOURCE_DIR) + "/tests/bench/mnist.nn");
  REQUIRE(in);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A compile of mnist with the given cache folder (nullopt: the environment's), cut into two
// modules so that both of them go through the cache.
Model compileMnist(std::optional<std::string> cacheDir, DType dtype = DType::F32, int optLevel = 2) {
  CompileOptions o;
  o.dtype = dtype;
  o.optLevel = optLevel;
  o.jitModules = 2;
  o.cacheDir = std::move(cacheDir);
  auto m = Model::compileString(mnistSource(), "mnist.nn", o);
  INFO((m ? std::string() : m.error().message));
  REQUIRE(m);
  return std::move(*m);
}

int cachedModules(const Model &m) {
  int n = 0;
  for (const JitModuleTimes &t : m.compileTimes().jit.modules) n += t.cached;
  return n;
}

// The loss, every gradient and every output of a batch of 5, in the model's dtype, as bytes
// (compared exactly: the same object code gives the same bits).
std::vector<double> results(const Model &m) {
  const int64_t n = 5;
  std::vector<double> p = m.initParams(7), x(static_cast<size_t>(n * m.inputCount())),
                      t(static_cast<size_t>(n * m.targetCount()), 0.0), g;
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> u(0, 1);
  for (double &v : x) v = u(rng);
  for (int64_t i = 0; i < n; ++i) t[static_cast<size_t>(i * m.targetCount() + i % m.targetCount())] = 1;
  std::vector<double> r{m.lossAndGradient(p, x.data(), t.data(), n, g)};
  r.insert(r.end(), g.begin(), g.end());
  std::vector<double> y = m.forward(p, x.data(), n);
  r.insert(r.end(), y.begin(), y.end());
  return r;
}

void requireBitIdentical(const std::vector<double> &a, const std::vector<double> &b) {
  REQUIRE(a.size() == b.size());
  REQUIRE(std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0);
}

} // namespace

TEST_CASE("object cache: a warm compile gives the cold compile's bits", "[cache]") {
  TempDir dir;
  for (DType dtype : {DType::F32, DType::F64}) {
    const std::vector<double> reference = results(compileMnist(std::string(), dtype)); // no cache
    Model cold = compileMnist(dir.path.string(), dtype);
    CHECK(cachedModules(cold) == 0);
    Model warm = compileMnist(dir.path.string(), dtype);
    CHECK(cachedModules(warm) == 2);
    for (const JitModuleTimes &t : warm.compileTimes().jit.modules) {
      CHECK(t.optimize == 0);
      CHECK(t.codegen == 0);
      CHECK(t.objectBytes > 0);
    }
    requireBitIdentical(results(cold), reference);
    requireBitIdentical(results(warm), reference);
  }
  // Two modules a dtype, each its own file, and nothing else (no temporary files left).
  std::vector<fs::path> files = dir.objects();
  CHECK(files.size() == 4);
  for (auto &f : files) CHECK(f.extension() == ".o");
}

TEST_CASE("object cache: every level, cold and warm, gives the uncached bits", "[cache]") {
  TempDir dir;
  for (int level : {0, 1, 3}) {
    INFO("-O" << level);
    const std::vector<double> reference = results(compileMnist(std::string(), DType::F32, level));
    Model cold = compileMnist(dir.path.string(), DType::F32, level);
    CHECK(cachedModules(cold) == 0);
    Model warm = compileMnist(dir.path.string(), DType::F32, level);
    CHECK(cachedModules(warm) == 2);
    requireBitIdentical(results(cold), reference);
    requireBitIdentical(results(warm), reference);
  }
  CHECK(dir.objects().size() == 6);
}

TEST_CASE("object cache: another level or program is another key", "[cache]") {
  TempDir dir;
  compileMnist(dir.path.string(), DType::F32, 2);
  CHECK(cachedModules(compileMnist(dir.path.string(), DType::F32, 1)) == 0);
  CHECK(cachedModules(compileMnist(dir.path.string(), DType::F32, 2)) == 2);
  // A changed constant changes the IR: a miss, and the changed result.
  CompileOptions o;
  o.jitModules = 2;
  o.cacheDir = dir.path.string();
  std::string source = mnistSource();
  const std::string from = "256, logistic", to = "256, tanh";
  REQUIRE(source.find(from) != std::string::npos);
  source.replace(source.find(from), from.size(), to);
  auto changed = Model::compileString(source, "mnist.nn", o);
  REQUIRE(changed);
  CHECK(cachedModules(*changed) == 0);
  CHECK(results(*changed) != results(compileMnist(dir.path.string())));
}

TEST_CASE("object cache: damaged files are misses, recompiled and replaced", "[cache]") {
  TempDir dir;
  const std::vector<double> reference = results(compileMnist(std::string()));
  compileMnist(dir.path.string());
  std::vector<fs::path> files = dir.objects();
  REQUIRE(files.size() == 2);

  // Each damage applied to the first file; the second stays good (one hit, one miss).
  const std::vector<std::pair<const char *, std::function<void(const fs::path &)>>> damages = {
      {"truncated to half", [](const fs::path &f) { fs::resize_file(f, fs::file_size(f) / 2); }},
      {"truncated into the header", [](const fs::path &f) { fs::resize_file(f, 20); }},
      {"empty", [](const fs::path &f) { fs::resize_file(f, 0); }},
      {"a byte of the code flipped",
       [](const fs::path &f) {
         std::fstream s(f, std::ios::in | std::ios::out | std::ios::binary);
         s.seekg(static_cast<std::streamoff>(fs::file_size(f) - 100));
         char c;
         s.read(&c, 1);
         s.seekp(static_cast<std::streamoff>(fs::file_size(f) - 100));
         c = static_cast<char>(c ^ 0x10);
         s.write(&c, 1);
       }},
      {"a byte of the header flipped",
       [](const fs::path &f) {
         std::fstream s(f, std::ios::in | std::ios::out | std::ios::binary);
         s.seekp(3);
         s.write("X", 1);
       }},
      {"extended by garbage", [](const fs::path &f) { std::ofstream(f, std::ios::app | std::ios::binary) << "trailing"; }},
      {"someone else's file", [](const fs::path &f) { std::ofstream(f, std::ios::trunc | std::ios::binary) << "#!/bin/sh\necho hello\n"; }},
      {"random bytes of the right size",
       [](const fs::path &f) {
         const auto size = fs::file_size(f);
         std::mt19937 rng(5);
         std::ofstream s(f, std::ios::trunc | std::ios::binary);
         for (uintmax_t i = 0; i < size; ++i) s.put(static_cast<char>(rng()));
       }},
      {"the other module's file (a valid file under the wrong key)",
       [&files](const fs::path &f) { fs::copy_file(files[1], f, fs::copy_options::overwrite_existing); }},
      {"a folder", [](const fs::path &f) { fs::remove(f), fs::create_directory(f); }},
  };
  for (auto &[what, damage] : damages) {
    INFO(what);
    damage(files[0]);
    Model m = compileMnist(dir.path.string());
    CHECK(cachedModules(m) == 1);
    requireBitIdentical(results(m), reference);
    if (fs::is_directory(files[0])) fs::remove(files[0]); // a folder is not replaced: removed here
    else {
      // Replaced by a good file: the next compile is all hits.
      Model again = compileMnist(dir.path.string());
      CHECK(cachedModules(again) == 2);
      requireBitIdentical(results(again), reference);
    }
    compileMnist(dir.path.string()); // a good file again for the next damage
  }
  CHECK(dir.objects().size() == 2); // no temporary files left behind
}

TEST_CASE("object cache: a folder that cannot be used means no cache", "[cache]") {
  TempDir dir;
  const std::vector<double> reference = results(compileMnist(std::string()));
  // Below a regular file: neither created nor written (root may write anywhere, so no chmod).
  const fs::path file = dir.path / "a-file";
  std::ofstream(file) << "x";
  Model m = compileMnist((file / "nabla").string());
  CHECK(cachedModules(m) == 0);
  requireBitIdentical(results(m), reference);
  CHECK(cachedModules(compileMnist((file / "nabla").string())) == 0);
  // A folder that group or others may write, or another user's: not used (its objects could be
  // anyone's code); a file of another user is a miss.
  const fs::path shared = dir.path / "shared";
  compileMnist(shared.string());
  REQUIRE(cachedModules(compileMnist(shared.string())) == 2);
  fs::permissions(shared, fs::perms::group_write, fs::perm_options::add);
  CHECK(cachedModules(compileMnist(shared.string())) == 0);
  fs::permissions(shared, fs::perms::group_write, fs::perm_options::remove);
  CHECK(cachedModules(compileMnist(shared.string())) == 2);
  if (geteuid() == 0) { // only root may give a file away
    const std::vector<fs::path> files = [&] {
      std::vector<fs::path> r;
      for (auto &e : fs::directory_iterator(shared)) r.push_back(e.path());
      return r;
    }();
    REQUIRE(files.size() == 2);
    REQUIRE(chown(files[0].c_str(), 1, 1) == 0);
    CHECK(cachedModules(compileMnist(shared.string())) == 1);
    REQUIRE(chown(shared.c_str(), 1, 1) == 0);
    CHECK(cachedModules(compileMnist(shared.string())) == 0);
  }
  // A folder that does not exist yet is created, parents and all.
  const fs::path deep = dir.path / "x" / "y" / "nabla";
  compileMnist(deep.string());
  CHECK(cachedModules(compileMnist(deep.string())) == 2);
}

TEST_CASE("object cache: the environment chooses the folder or turns it off", "[cache]") {
  TempDir dir;
  {
    EnvVar off("NABLA_CACHE", nullptr), xdg("XDG_CACHE_HOME", dir.path.c_str()), home("HOME", "/home/someone");
    CHECK(ObjectCache::defaultDirectory() == dir.path.string() + "/nabla");
    // Through the Model API without a folder of its own: the environment's.
    compileMnist(std::nullopt);
    CHECK(cachedModules(compileMnist(std::nullopt)) == 2);
    CHECK(fs::is_directory(dir.path / "nabla"));
  }
  {
    EnvVar off("NABLA_CACHE", nullptr), xdg("XDG_CACHE_HOME", "relative/path"), home("HOME", "/home/someone");
    CHECK(ObjectCache::defaultDirectory() == "/home/someone/.cache/nabla"); // a relative XDG path is ignored
  }
  {
    EnvVar off("NABLA_CACHE", nullptr), xdg("XDG_CACHE_HOME", nullptr), home("HOME", nullptr);
    CHECK(ObjectCache::defaultDirectory().empty());
  }
  for (const char *value : {"0", "off", "no", "false"}) {
    EnvVar off("NABLA_CACHE", value), xdg("XDG_CACHE_HOME", dir.path.c_str());
    CHECK(ObjectCache::defaultDirectory().empty());
    fs::remove_all(dir.path / "nabla");
    Model m = compileMnist(std::nullopt);
    CHECK(cachedModules(m) == 0);
    CHECK(!fs::exists(dir.path / "nabla")); // off: nothing written
  }
  {
    EnvVar on("NABLA_CACHE", "1"), xdg("XDG_CACHE_HOME", dir.path.c_str());
    CHECK(ObjectCache::defaultDirectory() == dir.path.string() + "/nabla");
  }
  // An empty folder in the options: no cache whatever the environment says.
  {
    EnvVar off("NABLA_CACHE", nullptr), xdg("XDG_CACHE_HOME", dir.path.c_str());
    fs::remove_all(dir.path / "nabla");
    compileMnist(std::string());
    CHECK(!fs::exists(dir.path / "nabla"));
  }
}

TEST_CASE("object cache: files by key, checked on reading", "[cache]") {
  TempDir dir;
  ObjectCache cache(dir.path.string());
  CacheKey a = CacheKeyBuilder().add("a").add(1).finish(), b = CacheKeyBuilder().add("a").add(2).finish();
  CHECK(a != b);
  // Length-prefixed parts: ("ab", "c") is not ("a", "bc").
  CHECK(CacheKeyBuilder().add("ab").add("c").finish() != CacheKeyBuilder().add("a").add("bc").finish());
  CHECK(!cache.load(a));
  const std::string object("\x7f" "ELF and then some bytes\0with a zero", 36);
  REQUIRE(cache.store(a, object));
  REQUIRE(cache.load(a));
  CHECK(*cache.load(a) == object);
  CHECK(!cache.load(b));
  // a's file under b's name: a miss (the key inside the file is a's).
  fs::copy_file(cache.path(a), cache.path(b));
  CHECK(!cache.load(b));
  // The empty object round-trips too.
  REQUIRE(cache.store(b, ""));
  REQUIRE(cache.load(b));
  CHECK(cache.load(b)->empty());
  // Disabled: nothing stored, nothing loaded.
  ObjectCache none("");
  CHECK(!none.enabled());
  CHECK(!none.store(a, object));
  CHECK(!none.load(a));
}

TEST_CASE("object cache: compiles on several threads share one folder", "[cache]") {
  TempDir dir;
  const std::vector<double> reference = results(compileMnist(std::string()));
  std::vector<std::vector<double>> got(3);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < got.size(); ++i)
    threads.emplace_back([&, i] { got[i] = results(compileMnist(dir.path.string())); });
  for (auto &t : threads) t.join();
  for (auto &r : got) requireBitIdentical(r, reference);
  CHECK(dir.objects().size() == 2);
}

TEST_CASE("object cache: past its size limit, the least recently used files go", "[cache]") {
  TempDir dir;
  // Objects of 300 bytes, 380 with the header: a limit of 1,100 bytes holds two, and trimming
  // to three quarters of it (825) leaves two.
  ObjectCache cache(dir.path.string(), 1100);
  const std::string object(300, 'x');
  auto key = [](int i) { return CacheKeyBuilder().add(i).finish(); };
  auto pause = [] { std::this_thread::sleep_for(std::chrono::milliseconds(20)); }; // file times' granularity
  REQUIRE(cache.store(key(1), object));
  pause();
  REQUIRE(cache.store(key(2), object));
  pause();
  REQUIRE(cache.load(key(1))); // 1 used after 2
  pause();
  REQUIRE(cache.store(key(3), object)); // over the limit: 2, the least recently used, goes
  CHECK(cache.load(key(1)));
  CHECK(!cache.load(key(2)));
  CHECK(cache.load(key(3)));
  // A writer's temporary file more than an hour old goes too; a fresh one and other files stay.
  const fs::path stale = cache.path(key(4)) + ".tmp.AAAAAA", fresh = cache.path(key(5)) + ".tmp.BBBBBB",
                 other = dir.path / "notes.txt";
  for (const fs::path &p : {stale, fresh, other}) std::ofstream(p) << "partial";
  fs::last_write_time(stale, fs::file_time_type::clock::now() - std::chrono::hours(2));
  pause();
  REQUIRE(cache.store(key(6), object));
  CHECK(!fs::exists(stale));
  CHECK(fs::exists(fresh));
  CHECK(fs::exists(other));
  size_t objects = 0;
  for (auto &e : fs::directory_iterator(dir.path)) objects += e.path().extension() == ".o";
  CHECK(objects == 2);
}
