// JitSession: compiles a program's Loop IR through the LLVM backend and ORC LLJIT into callable
// machine code for the host (AVX-512, FMA and SIMD exp where the CPU has them). Errors are values;
// nothing here aborts. LLVM's headers stay inside JitSession.cpp.
#pragma once
#include "Expected.h"
#include "LoopIR.h"

#include <memory>
#include <string>
#include <vector>

namespace nabla {

// Where a compile's time went, in milliseconds (JitOptions::times). Per module (each on a thread
// of its own), the CPU time of each stage (not inflated, as wall time is, by other processes on a
// busy machine): LLVM IR emitted and verified, the object cache's key and look-up (the IR written
// and digested, the file read), the pass pipeline, code generation (and storing the object).
struct JitModuleTimes {
  double emit = 0, cache = 0, optimize = 0, codegen = 0; // CPU time
  double wall = 0;     // the module from start to end
  bool cached = false; // the object came from the cache: no passes, no code generation
  size_t objectBytes = 0;
};
struct JitTimes {
  std::vector<JitModuleTimes> modules;
  double modulesWall = 0; // every module, from the first thread's start to the last one's end
  double link = 0;        // the JIT created, the objects linked, the entry points looked up
};

struct JitOptions {
  bool f64 = false;
  int optLevel = 2; // 0..3: the LLVM pass pipeline and code generation level
  int modules = 0;  // the modules compiled in parallel (EmitLLVM.h); 0: by size, one a core at most
  std::string cacheDir;       // the object cache's folder (ObjectCache.h); empty: no cache
  JitTimes *times = nullptr;  // filled in when not null
};

class JitSession {
public:
  static Expected<std::unique_ptr<JitSession>> create(const loops::Program &p, const JitOptions &o);
  ~JitSession();

  // The entry points of EmitLLVM.h, or null when the program lacks that function.
  void *forward() const { return forward_; }
  void *gradient() const { return gradient_; }

private:
  JitSession();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  void *forward_ = nullptr, *gradient_ = nullptr;
};

// The optimized LLVM IR of the program's module, as `nabla ir` prints it.
Expected<std::string> optimizedIR(const loops::Program &p, const JitOptions &o);

} // namespace nabla
