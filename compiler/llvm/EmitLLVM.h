// EmitLLVM: prints Loop IR as LLVM IR (the first of the two backends). One module a program,
// with the two entry points of the flat layout (DESIGN.md):
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

std::unique_ptr<llvm::Module> emitLLVM(const loops::Program &p, llvm::LLVMContext &ctx,
                                       const LLVMEmitOptions &opts);

} // namespace nabla
