// Memory estimates and the budget they are checked against (see Limits.h).
#include "Limits.h"

#include "Model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <sys/resource.h>
#include <unistd.h>

namespace nabla {

MemoryUse estimateMemory(const Model &m, Workload w, int64_t rows, int64_t batch, int threads) {
  const double t = m.dtype() == DType::F64 || w == Workload::Gradcheck ? 8 : 4;
  const double P = static_cast<double>(m.paramCount()), I = static_cast<double>(m.inputCount()),
               T = static_cast<double>(m.targetCount()), O = static_cast<double>(m.outputCount());
  const double n = static_cast<double>(std::max<int64_t>(rows, 1));
  const double b = static_cast<double>(std::clamp<int64_t>(batch, 1, std::max<int64_t>(rows, 1)));
  const double parts = std::clamp<double>(threads, 1, b);
  const bool jit = m.engine() == Engine::Jit;
  const loops::Program &L = m.loops();
  // The JIT's work space for `rows` examples split into `k` parts; the interpreter's values of
  // every node of one example (the whole graph: an upper bound).
  auto work = [&](double r, double k) {
    if (jit) return (k * static_cast<double>(L.workspaceFixed) + static_cast<double>(L.workspacePerExample) * r) * t;
    double scalars = 0;
    const Graph &g = m.program().graph;
    for (size_t i = 0; i < g.size(); ++i) scalars += static_cast<double>(g.shape(static_cast<NodeId>(i)).numel());
    return scalars * t;
  };
  MemoryUse u;
  switch (w) {
  case Workload::Eval:
  case Workload::Gradcheck:
    // params and grads in f64; params and one gradient a part in the dtype; gradcheck: a params
    // copy, a scratch gradient and the list of the indices it may check
    u.params = P * 8 * (w == Workload::Gradcheck ? 5 : 2) + P * t * (1 + parts);
    u.data = n * (I + T) * (8 + t);
    u.work = work(n, parts) + n * O * 8;
    break;
  case Workload::Predict:
    u.params = P * (8 + t);
    u.data = n * I * (8 + t);
    u.work = work(n, 1) + n * O * (8 + t);
    break;
  case Workload::Train: {
    // f64: the initial, the evaluated and the returned params; in the dtype: params, gradients
    // (one a part), the optimizer's two moments. Data: loaded, split, converted. The work space
    // for a batch, and for the evaluation chunks of up to 8192 examples.
    u.params = P * 8 * 3 + P * t * (3 + parts);
    u.data = n * (I + T) * (8 * 2 + t);
    u.work = work(std::min(n, std::max(b, 8192.0)), 1) + work(b, parts) + std::min(n, 8192.0) * O * (8 + t);
    break;
  }
  }
  return u;
}

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

Expected<bool> checkMemory(const Model &m, const std::string &command, Workload w, int64_t rows,
                           int64_t batch, int threads) {
  const MemoryUse u = estimateMemory(m, w, rows, batch, threads);
  const MemoryBudget budget = memoryBudget();
  if (u.total() <= budget.bytes) return true;
  const int64_t at = std::clamp<int64_t>(batch, 1, std::max<int64_t>(rows, 1));
  return Error{fmt::format("{}: error: '{}' needs about {} of memory ({} for the params and their "
                           "gradients, {} for the data, {} of work space for {} example{} at a "
                           "time), more than the {} {}",
                           m.program().source.name, command, formatBytes(u.total()),
                           formatBytes(u.params), formatBytes(u.data), formatBytes(u.work), at,
                           at == 1 ? "" : "s", formatBytes(budget.bytes),
                           budget.from == "available now" ? "available now" : "allowed by " + budget.from)};
}

} // namespace nabla
