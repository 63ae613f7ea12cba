// The memory budget and byte counts for messages (see Limits.h). JIT-free: part of nabla_io, where
// the data and params readers use the budget to stop reading a file that cannot fit.
#include "Limits.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <sys/resource.h>
#include <unistd.h>

namespace nabla {

namespace {

// "2G" -> 2^31; -1 when the text is not a size.
double parseSize(const std::string &s) {
  char *end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || !(v >= 0) || !std::isfinite(v)) return -1;
  std::string unit(end);
  if (!unit.empty() && (unit.back() == 'B' || unit.back() == 'b')) unit.pop_back();
  if (!unit.empty() && (unit.back() == 'i')) unit.pop_back();
  if (unit.empty()) return v;
  if (unit.size() != 1) return -1;
  switch (unit[0]) {
  case 'k': case 'K': return v * 1024;
  case 'm': case 'M': return v * 1024 * 1024;
  case 'g': case 'G': return v * 1024 * 1024 * 1024;
  case 't': case 'T': return v * 1024 * 1024 * 1024 * 1024;
  default: return -1;
  }
}

double memAvailable() {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("MemAvailable:", 0) == 0) {
      std::istringstream ss(line.substr(13));
      double kib = 0;
      if (ss >> kib) return kib * 1024;
    }
  long pages = ::sysconf(_SC_PHYS_PAGES), size = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && size > 0 ? static_cast<double>(pages) * static_cast<double>(size) : 0;
}

} // namespace

MemoryBudget memoryBudget() {
  if (const char *env = std::getenv("NABLA_MEMORY_LIMIT"); env && *env) {
    double v = parseSize(env);
    if (v >= 0) return {v, fmt::format("NABLA_MEMORY_LIMIT={}", env)};
  }
  MemoryBudget b{memAvailable(), "available now"};
  for (int which : {RLIMIT_AS, RLIMIT_DATA}) {
    struct rlimit r {};
    if (::getrlimit(which, &r) == 0 && r.rlim_cur != RLIM_INFINITY &&
        static_cast<double>(r.rlim_cur) < b.bytes)
      b = {static_cast<double>(r.rlim_cur), which == RLIMIT_AS ? "the address space limit (ulimit -v)"
                                                               : "the data size limit (ulimit -d)"};
  }
  if (b.bytes <= 0) b = {INFINITY, "unknown"}; // nothing to go by: do not refuse
  return b;
}

std::string formatBytes(double bytes) {
  if (bytes < 1024) return fmt::format("{:.0f} bytes", bytes);
  const char *units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  bytes /= 1024;
  while (bytes >= 1024 && u < 5) bytes /= 1024, ++u;
  return fmt::format("{:.1f} {}", bytes, units[u]);
}

} // namespace nabla
