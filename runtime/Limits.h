// Limits: what evaluating or training a model will take in memory, checked before anything big is
// allocated, so that a program with huge shapes (sema admits values of up to 2^28 elements, and any
// number of them) gets a clear error ("'train' needs about 70 GiB of memory ...") instead of an
// allocation failure or the kernel's OOM killer.
#pragma once
#include "Expected.h"

#include <cstdint>
#include <string>

namespace nabla {

class Model;

enum class Workload { Eval, Gradcheck, Train, Predict };

// Bytes, estimated from above within a small factor: the copies of the params that the workload
// keeps (f64 at the interface, the model's dtype inside, one gradient per thread, the optimizer's
// state), the data as loaded and converted, and the work space (the JIT's, for `batch` examples at
// a time, or the interpreter's values of one example).
struct MemoryUse {
  double params = 0, data = 0, work = 0;
  double total() const { return params + data + work; }
};
MemoryUse estimateMemory(const Model &m, Workload w, int64_t rows, int64_t batch, int threads);

// (memoryBudget and formatBytes live in nabla_io, MemoryBudget.cpp: the data readers use them.)
// What may be used: NABLA_MEMORY_LIMIT (bytes, or with a K, M, G or T suffix: "512M", "2G") when
// set; otherwise the memory available now (MemAvailable in /proc/meminfo, else the physical
// memory), and no more than RLIMIT_AS or RLIMIT_DATA. `from` says which, for the message.
struct MemoryBudget {
  double bytes = 0;
  std::string from;
};
MemoryBudget memoryBudget();

// "FILE: error: 'COMMAND' needs about 6.0 GiB of memory (...), more than the 4.0 GiB available
// (...)" when the estimate exceeds the budget.
Expected<bool> checkMemory(const Model &m, const std::string &command, Workload w, int64_t rows,
                           int64_t batch, int threads);

// "512 bytes", "1.5 KiB", "6.0 GiB".
std::string formatBytes(double bytes);

} // namespace nabla
