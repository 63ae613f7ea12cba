// ObjectCache: compiled object files on disk, one file a key, so that compiling a program again
// skips the LLVM pass pipeline and code generation (most of the JIT's compile time). The key is a
// digest of everything the object depends on (JitSession.cpp: the module's IR before
// optimization, the pass pipeline, the target, the levels, LLVM's version).
//
// Robust by construction: a file is written to a temporary name and renamed, so a reader sees a
// whole file or none; every file holds its key, its size and a digest of its content, and a file
// that does not match (truncated, corrupted, another version's, someone else's) is a miss, the
// object is compiled again and replaces it. A folder that cannot be created or written means no
// cache, silently; so does one that another user owns or that group or others may write (the
// objects are code that nabla runs), and a file that another user owns is a miss. Plain C++ at
// the interface; the digests are LLVM's BLAKE3.
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

  // At most this many bytes of objects in the folder: storing one past it removes the files used
  // least recently (a hit marks its file used) until three quarters of it are left.
  static constexpr uint64_t kDefaultMaxBytes = uint64_t{256} << 20;

  explicit ObjectCache(std::string directory, uint64_t maxBytes = kDefaultMaxBytes)
      : dir_(std::move(directory)), maxBytes_(maxBytes) {}
  bool enabled() const { return !dir_.empty(); }
  const std::string &directory() const { return dir_; }

  // The object stored under `key`, or nothing (no such file, or one that fails any check).
  std::optional<std::string> load(const CacheKey &key) const;
  // Stores `object` under `key` (creating the folder, then trimming it to the size limit); false
  // when it could not, which callers ignore: the cache is an optimization, never a reason to fail.
  bool store(const CacheKey &key, std::string_view object) const;
  // The file that holds `key`'s object (for tests).
  std::string path(const CacheKey &key) const;

private:
  void trim() const;
  std::string dir_;
  uint64_t maxBytes_;
};

} // namespace nabla
