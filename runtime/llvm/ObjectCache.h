// ObjectCache: compiled object files on disk, one file a key, so that compiling a program again
// skips the LLVM pass pipeline and code generation (most of the JIT's compile time). The key is a
// digest of everything the object depends on (JitSession.cpp: the module's IR before
// optimization, the pass pipeline, the target, the levels, LLVM's version).
//
// Robust by construction: a file is written to a temporary name and renamed, so a reader sees a
// whole file or none; every file holds its key, its size and a digest of its content, and a file
// that does not match (truncated, corrupted, another version's, someone else's) is a miss, the
// object is compiled again and replaces it. A folder that cannot be created or written means no
// cache, silently. Plain C++ at the interface; the digests are LLVM's BLAKE3.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace nabla {

using CacheKey = std::array<uint8_t, 32>;

// Builds a key from parts; each part is length-prefixed, so ("ab","c") and ("a","bc") differ.
class CacheKeyBuilder {
public:
  CacheKeyBuilder();
  ~CacheKeyBuilder();
  CacheKeyBuilder(const CacheKeyBuilder &) = delete;
  CacheKeyBuilder &operator=(const CacheKeyBuilder &) = delete;
  CacheKeyBuilder &add(std::string_view part);
  CacheKeyBuilder &add(int64_t value);
  CacheKey finish();

private:
  struct Impl;
  Impl *impl_;
};

class ObjectCache {
public:
  // The folder the environment asks for: none when NABLA_CACHE is "0" (or "off", "no", "false"),
  // else $XDG_CACHE_HOME/nabla when XDG_CACHE_HOME is an absolute path, else $HOME/.cache/nabla,
  // else none. An empty string means no cache.
  static std::string defaultDirectory();

  explicit ObjectCache(std::string directory) : dir_(std::move(directory)) {}
  bool enabled() const { return !dir_.empty(); }
  const std::string &directory() const { return dir_; }

  // The object stored under `key`, or nothing (no such file, or one that fails any check).
  std::optional<std::string> load(const CacheKey &key) const;
  // Stores `object` under `key` (creating the folder); false when it could not, which callers
  // ignore: the cache is an optimization, never a reason to fail.
  bool store(const CacheKey &key, std::string_view object) const;
  // The file that holds `key`'s object (for tests).
  std::string path(const CacheKey &key) const;

private:
  std::string dir_;
};

} // namespace nabla
