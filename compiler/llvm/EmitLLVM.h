// EmitLLVM: prints Loop IR as LLVM IR (the first of the two backends). One module a program (or
// several, to compile in parallel; see emitLLVM), with the two entry points of the flat layout
// (DESIGN.md):
//   void nabla_forward(const T *params, const T *inputs, int64_t n, T *outputs, T *workspace)
//   T nabla_loss_and_gradient(const T *params, const T *inputs, const T *targets, int64_t n,
//                             T *grads, T *workspace)          (returns the mean loss)
// This header stays free of LLVM's headers: only the backend and the JIT session see them.
#pragma once
#include "LoopIR.h"

#include <memory>
#include <string>

namespace llvm {
class LLVMContext;
class Module;
} // namespace llvm

namespace nabla {

inline constexpr const char *kForwardSymbol = "nabla_forward";
inline constexpr const char *kGradientSymbol = "nabla_loss_and_gradient";

struct LLVMEmitOptions {
  bool f64 = false;
  std::string targetCpu, targetFeatures; // function attributes; empty: none
  bool wideVectors = false;               // "prefer-vector-width"="512" (AVX-512 hosts)
};

// Module `module` of `modules`. With one module (the default), the whole program. With more, so
// that they compile in parallel, the kernels are cut into parts of about equal estimated cost, each
// an external function "nabla_forward.partK" / "nabla_loss_and_gradient.partK" in one of the
// modules; module 0 also has both entry points, which call their parts in order. Every module
// must be emitted (each in its own context) and linked together.
std::unique_ptr<llvm::Module> emitLLVM(const loops::Program &p, llvm::LLVMContext &ctx,
                                       const LLVMEmitOptions &opts, int module = 0, int modules = 1);

// Whether the entry points of f begin with a body for one example (n = 1) with every loop
// unrolled and the kernels merged into one run of arithmetic: small programs only (see
// EmitLLVM.cpp, Emitter::oneExample).
bool unrollsForOneExample(const loops::Function &f);

// How many modules (at most `most`) are worth compiling in parallel for this program: one for
// small programs, where a thread costs more than it saves.
int llvmModuleCount(const loops::Program &p, int most);

} // namespace nabla
