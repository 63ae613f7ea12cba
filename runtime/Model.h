// Model: the library API that the CLI and embedding programs use. Compile a `.nn` file or string
// into a model (dtype, optimization level, engine), query its params, inputs, targets and
// outputs (names, shapes, offsets in the flat layout), initialize params from a seed, run
// forward and loss-and-gradient on a batch. Errors are values.
#pragma once
#include "DataIO.h"
#include "Evaluate.h"
#include "Expected.h"
#include "JitSession.h"
#include "LoopIR.h"
#include "Program.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace nabla {

enum class Engine { Jit, Interp };

struct CompileOptions {
  DType dtype = DType::F32;
  int optLevel = 2;          // 0..3
  Engine engine = Engine::Jit;
  // JIT: how many modules the code is cut into, compiled on threads side by side; 0 chooses by
  // the program's size and the machine's cores (tests set it to check that cutting changes nothing).
  int jitModules = 0;
  // JIT: the on-disk cache of compiled objects (runtime/llvm/ObjectCache.h), which makes every
  // compile of a program after the first skip LLVM's passes and code generation. Unset: the
  // environment's (NABLA_CACHE=0 turns it off; else $XDG_CACHE_HOME/nabla or ~/.cache/nabla);
  // an empty string: no cache.
  std::optional<std::string> cacheDir;
};

// Where a compile's time went (milliseconds of wall time): front end (parse, sema), autodiff and
// simplifier, lowering to Loop IR, then the JIT's modules (each stage's CPU time) and linking
// (JitSession.h). Printed to standard error after each compile when NABLA_TIME is set (and not 0).
struct CompileTimes {
  double frontend = 0, derive = 0, lower = 0, total = 0;
  JitTimes jit;
};
std::string formatCompileTimes(const CompileTimes &t, const char *what = "compile time");

struct TensorInfo {
  std::string name;
  Shape shape;
  int64_t offset = 0; // first scalar in the flat array of its kind
};

class Model {
public:
  static Expected<Model> compileFile(const std::string &path, const CompileOptions &o = {});
  static Expected<Model> compileString(std::string source, std::string name = "<string>",
                                       const CompileOptions &o = {});
  Model(Model &&) noexcept;
  Model &operator=(Model &&) noexcept;
  ~Model();

  std::vector<TensorInfo> params() const, inputs() const, targets() const, outputs() const;
  int64_t paramCount() const, inputCount() const, targetCount() const, outputCount() const;
  bool hasLoss() const;
  DType dtype() const;
  Engine engine() const;
  const Program &program() const;
  const loops::Program &loops() const;
  const CompileTimes &compileTimes() const;

  // Deterministic initialization (the project's own generator): the same on every machine.
  std::vector<double> initParams(uint64_t seed) const;

  // In f64 at the interface, computed in the model's dtype. `inputs` and `targets` hold n
  // examples in the flat layout. With threads > 1, the batch is split into contiguous parts whose
  // partial gradients are summed in a fixed order (the same result for the same threads).
  std::vector<double> forward(const std::vector<double> &params, const double *inputs, int64_t n) const;
  double lossAndGradient(const std::vector<double> &params, const double *inputs,
                         const double *targets, int64_t n, std::vector<double> &grads,
                         int threads = 1) const;

  // The compiled entry points in the model's own dtype (JIT engine only), for the hot loop of
  // training: no conversion, no allocation. `workspace` holds workspaceSize(n) reals. T must be
  // the model's dtype (float for F32, double for F64): the compiled code reads the arrays as that
  // type, so another T would give garbage; these throw InternalError instead (as for the wrong
  // engine), a programming error of the caller.
  int64_t workspaceSize(int64_t n) const;
  // How many examples one call may take so that its work space stays under 256 MiB (at least 1,
  // at most `cap`): forward, lossAndGradient and the trainer's evaluations go through the data
  // in chunks of this size (a convnet's im2col copies take about a megabyte an example).
  int64_t chunkRows(int64_t cap) const;
  template <class T> void forwardRaw(const T *params, const T *inputs, int64_t n, T *outputs, T *workspace) const;
  template <class T>
  T lossAndGradientRaw(const T *params, const T *inputs, const T *targets, int64_t n, T *grads,
                       T *workspace) const;
  // The same with those preconditions (the JIT engine, a loss, T the model's dtype) checked into
  // an error value ("nabla: error: forwardRaw<double> on a model compiled for f32 ..."), for
  // callers that choose T at run time (the Python module). forward: true on success.
  template <class T>
  Expected<bool> tryForwardRaw(const T *params, const T *inputs, int64_t n, T *outputs, T *workspace) const;
  template <class T>
  Expected<T> tryLossAndGradientRaw(const T *params, const T *inputs, const T *targets, int64_t n, T *grads,
                                    T *workspace) const;

  // The mean loss and the outputs, without the gradient: a second program (lowerToLoops'
  // lossOnly) that runs the forward pass and the loss, about a third of a gradient step's work,
  // for evaluations of held-out and test data (loss and accuracy in one pass). prepareLossOnly
  // compiles it (JIT engine and a loss only; the first call compiles, later ones return its
  // result at once, from any thread); then lossRaw runs it, writing n * outputCount() outputs as
  // forwardRaw does, with `workspace` holding lossWorkspaceSize(n) reals. Its loss agrees with
  // lossAndGradientRaw's and its outputs with forwardRaw's to rounding (kernels may fuse
  // differently).
  Expected<bool> prepareLossOnly() const;
  int64_t lossWorkspaceSize(int64_t n) const;
  template <class T>
  T lossRaw(const T *params, const T *inputs, const T *targets, int64_t n, T *outputs, T *workspace) const;
  // The work of a gradient step per example, in iterations of its kernels' loops (the batch loop
  // counted once): what an evaluation through lossAndGradientRaw costs, to weigh against
  // compiling the loss alone.
  double gradientWorkPerExample() const;

private:
  Model();
  struct State;
  std::unique_ptr<State> s_;
};

} // namespace nabla
