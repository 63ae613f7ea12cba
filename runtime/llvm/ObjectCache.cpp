// The object cache's files: a header (magic, key, content size, content digest) and the object.
#include "ObjectCache.h"

#include <llvm/Support/BLAKE3.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

namespace nabla {

struct CacheKeyBuilder::Impl {
  llvm::BLAKE3 hasher;
};

CacheKeyBuilder::CacheKeyBuilder() : impl_(new Impl) {}
CacheKeyBuilder::~CacheKeyBuilder() { delete impl_; }

CacheKeyBuilder &CacheKeyBuilder::add(std::string_view part) {
  add(static_cast<int64_t>(part.size()));
  impl_->hasher.update(llvm::StringRef(part.data(), part.size()));
  return *this;
}

CacheKeyBuilder &CacheKeyBuilder::add(int64_t value) {
  uint8_t bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(static_cast<uint64_t>(value) >> (8 * i));
  impl_->hasher.update(llvm::ArrayRef<uint8_t>(bytes, 8));
  return *this;
}

CacheKey CacheKeyBuilder::finish() { return impl_->hasher.final(); }

namespace {

// The file layout, all of it checked on reading. The version changes with the layout.
constexpr char kMagic[8] = {'n', 'a', 'b', 'l', 'a', 'o', 'b', '1'};
constexpr size_t kHeaderBytes = 8 + 32 + 8 + 32; // magic, key, content size, content digest
// Larger than any object nabla compiles (wide's is well under a megabyte): a larger file is not ours.
constexpr uint64_t kMaxObjectBytes = uint64_t{1} << 30;

bool disabledByEnvironment() {
  const char *v = std::getenv("NABLA_CACHE");
  if (!v) return false;
  std::string s(v);
  return s == "0" || s == "off" || s == "OFF" || s == "no" || s == "false";
}

void putU64(std::string &out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}

uint64_t getU64(const char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

// mkdir -p with mode 0700 (compiled code of one user is nobody else's business).
bool makeDirectories(const std::string &dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) return S_ISDIR(st.st_mode);
  const size_t slash = dir.find_last_of('/');
  if (slash != std::string::npos && slash > 0 && !makeDirectories(dir.substr(0, slash))) return false;
  return ::mkdir(dir.c_str(), 0700) == 0 || errno == EEXIST;
}

// The objects are code that nabla runs: a folder or file that someone else could have written is
// not used (as ssh treats its keys). The folder must be this user's and writable by nobody else.
bool folderIsPrivate(const std::string &dir) {
  struct stat st;
  return ::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == ::geteuid() &&
         (st.st_mode & (S_IWGRP | S_IWOTH)) == 0;
}

bool writeAll(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

} // namespace

std::string ObjectCache::defaultDirectory() {
  if (disabledByEnvironment()) return {};
  // XDG base directories: a relative XDG_CACHE_HOME is invalid and ignored.
  if (const char *x = std::getenv("XDG_CACHE_HOME"); x && x[0] == '/') return std::string(x) + "/nabla";
  if (const char *h = std::getenv("HOME"); h && h[0] == '/') return std::string(h) + "/.cache/nabla";
  return {};
}

std::string ObjectCache::path(const CacheKey &key) const {
  static const char kHex[] = "0123456789abcdef";
  std::string name;
  for (uint8_t b : key) {
    name.push_back(kHex[b >> 4]);
    name.push_back(kHex[b & 15]);
  }
  return dir_ + "/" + name + ".o";
}

std::optional<std::string> ObjectCache::load(const CacheKey &key) const {
  if (!enabled() || !folderIsPrivate(dir_)) return std::nullopt;
  const int fd = ::open(path(key).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return std::nullopt;
  std::string data;
  struct stat st;
  bool ok = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == ::geteuid() &&
            st.st_size >= static_cast<off_t>(kHeaderBytes) &&
            static_cast<uint64_t>(st.st_size) <= kMaxObjectBytes + kHeaderBytes;
  if (ok) {
    data.resize(static_cast<size_t>(st.st_size));
    size_t got = 0;
    while (got < data.size()) {
      ssize_t r = ::read(fd, data.data() + got, data.size() - got);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
    ok = got == data.size();
  }
  // Marks the file used (its modification time is the last use, for trim()); a failure is harmless.
  if (ok) ::futimens(fd, nullptr);
  ::close(fd);
  if (!ok) return std::nullopt;
  // Magic, key, size, then the content's digest: a file of another version or key, a truncated
  // or extended one, or one with a changed byte anywhere, is a miss.
  if (std::memcmp(data.data(), kMagic, 8) != 0) return std::nullopt;
  if (std::memcmp(data.data() + 8, key.data(), 32) != 0) return std::nullopt;
  const uint64_t size = getU64(data.data() + 40);
  if (size != data.size() - kHeaderBytes) return std::nullopt;
  const auto digest = llvm::BLAKE3::hash(
      llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(data.data()) + kHeaderBytes, size));
  if (std::memcmp(data.data() + 48, digest.data(), 32) != 0) return std::nullopt;
  data.erase(0, kHeaderBytes);
  return data;
}

bool ObjectCache::store(const CacheKey &key, std::string_view object) const {
  if (!enabled() || object.size() > kMaxObjectBytes || !makeDirectories(dir_) || !folderIsPrivate(dir_)) return false;
  std::string header(kMagic, 8);
  header.append(reinterpret_cast<const char *>(key.data()), 32);
  putU64(header, object.size());
  const auto digest = llvm::BLAKE3::hash(
      llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(object.data()), object.size()));
  header.append(reinterpret_cast<const char *>(digest.data()), 32);
  // A file larger than the process may write (ulimit -f) would end it with SIGXFSZ halfway:
  // such an object is not stored (the signal's disposition is the whole process's, not ours).
  struct rlimit limit;
  if (::getrlimit(RLIMIT_FSIZE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY &&
      header.size() + object.size() > limit.rlim_cur)
    return false;
  // A temporary name of our own in the same folder, then an atomic rename: readers (other nabla
  // processes compiling the same program) see the old file, the new one or none, never half.
  const std::string target = path(key);
  std::string tmp = target + ".tmp.XXXXXX";
  const int fd = ::mkostemp(tmp.data(), O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = writeAll(fd, header.data(), header.size()) && writeAll(fd, object.data(), object.size());
  ok = ::close(fd) == 0 && ok;
  ok = ok && ::rename(tmp.c_str(), target.c_str()) == 0;
  if (!ok) ::unlink(tmp.c_str());
  if (ok) trim();
  return ok;
}

void ObjectCache::trim() const {
  // Only after a store, which followed a compile of ~100 ms: a scan of the folder costs little
  // beside it. Objects are "<64 hex digits>.o"; a temporary file more than an hour old is a
  // writer's that died and goes too. Nothing else in the folder is touched.
  struct Entry {
    std::string path;
    timespec used;
    uint64_t bytes;
  };
  std::vector<Entry> objects;
  uint64_t total = 0;
  std::error_code ec;
  const auto now = std::chrono::system_clock::now();
  for (auto it = std::filesystem::directory_iterator(dir_, ec); !ec && it != std::filesystem::directory_iterator();
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    struct stat st;
    if (::lstat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (name.size() == 64 + 2 && name.compare(64, 2, ".o") == 0) {
      objects.push_back({it->path().string(), st.st_mtim, static_cast<uint64_t>(st.st_size)});
      total += static_cast<uint64_t>(st.st_size);
    } else if (name.size() == 64 + 2 + 11 && name.compare(64, 7, ".o.tmp.") == 0 &&
               now - std::chrono::system_clock::from_time_t(st.st_mtim.tv_sec) > std::chrono::hours(1)) {
      ::unlink(it->path().c_str());
    }
  }
  if (total <= maxBytes_) return;
  std::sort(objects.begin(), objects.end(), [](const Entry &a, const Entry &b) {
    return a.used.tv_sec != b.used.tv_sec ? a.used.tv_sec < b.used.tv_sec : a.used.tv_nsec < b.used.tv_nsec;
  });
  for (const Entry &e : objects) {
    if (total <= maxBytes_ / 4 * 3) break;
    if (::unlink(e.path.c_str()) == 0) total -= e.bytes;
  }
}

} // namespace nabla
