// Memory estimates and the budget they are checked against (see Limits.h).
#include "Limits.h"

#include "Model.h"

#include <fmt/format.h>

#include <algorithm>

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
  // Eval and predict go through the data in chunks (Model::chunkRows), each part of eval too.
  const double chunk = jit ? static_cast<double>(m.chunkRows(rows)) : n;
  MemoryUse u;
  switch (w) {
  case Workload::Eval:
  case Workload::Gradcheck:
    // params and grads in f64; params and one gradient a part in the dtype; gradcheck: a params
    // copy, a scratch gradient and the list of the indices it may check
    u.params = P * 8 * (w == Workload::Gradcheck ? 5 : 2) + P * t * (1 + parts);
    u.data = n * (I + T) * (8 + t);
    u.work = work(std::min(n, parts * chunk), parts) + n * O * 8;
    break;
  case Workload::Predict:
    u.params = P * (8 + t);
    u.data = n * I * (8 + t);
    u.work = work(std::min(n, chunk), 1) + n * O * (8 + t);
    break;
  case Workload::Train: {
    // f64: the initial, the evaluated and the returned params; in the dtype: params, gradients
    // (one a part), the optimizer's two moments. Data: loaded, split, converted. The work space
    // for a batch, and for the evaluation chunks (Model::chunkRows, at most 8192 examples).
    u.params = P * 8 * 3 + P * t * (3 + parts);
    u.data = n * (I + T) * (8 * 2 + t);
    const double evalRows = std::min(n, std::max(b, jit ? static_cast<double>(m.chunkRows(8192)) : 8192.0));
    u.work = work(evalRows, 1) + work(b, parts) + evalRows * O * (8 + t);
    break;
  }
  }
  return u;
}

Expected<bool> checkMemory(const Model &m, const std::string &command, Workload w, int64_t rows,
                           int64_t batch, int threads) {
  const MemoryUse u = estimateMemory(m, w, rows, batch, threads);
  const MemoryBudget budget = memoryBudget();
  if (u.total() <= budget.bytes) return true;
  int64_t at = std::clamp<int64_t>(batch, 1, std::max<int64_t>(rows, 1));
  if ((w == Workload::Eval || w == Workload::Predict) && m.engine() == Engine::Jit) at = std::min(at, m.chunkRows(rows));
  return Error{fmt::format("{}: error: '{}' needs about {} of memory ({} for the params and their "
                           "gradients, {} for the data, {} of work space for {} example{} at a "
                           "time), more than the {} {}",
                           m.program().source.name, command, formatBytes(u.total()),
                           formatBytes(u.params), formatBytes(u.data), formatBytes(u.work), at,
                           at == 1 ? "" : "s", formatBytes(budget.bytes),
                           budget.from == "available now" ? "available now" : "allowed by " + budget.from)};
}

} // namespace nabla
