// The JIT session: host target machine, the new pass manager at the chosen level (with libmvec
// registered so that exp vectorizes), the LLVM verifier on every module, and ORC LLJIT.
#include "JitSession.h"

#include <llvm/Support/ErrorHandling.h>
#include <new>
#include <unistd.h>

#include "EmitLLVM.h"
#include "ObjectCache.h"

#include <llvm/Analysis/TargetLibraryInfo.h>
#include <llvm/Bitcode/BitcodeWriter.h>
#include <llvm/ExecutionEngine/Orc/CompileUtils.h>
#include <llvm/ExecutionEngine/Orc/ExecutionUtils.h>
#include <llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h>
#include <llvm/ExecutionEngine/Orc/LLJIT.h>
#include <llvm/ExecutionEngine/Orc/ThreadSafeModule.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/Module.h>
#include <llvm/IR/Verifier.h>
#include <llvm/Passes/PassBuilder.h>
#include <llvm/Transforms/InstCombine/InstCombine.h>
#include <llvm/Transforms/Scalar/EarlyCSE.h>
#include <llvm/Transforms/Scalar/LICM.h>
#include <llvm/Transforms/Scalar/LoopPassManager.h>
#include <llvm/Transforms/Scalar/SimplifyCFG.h>
#include <llvm/Transforms/Utils/InjectTLIMappings.h>
#include <llvm/Transforms/Utils/LCSSA.h>
#include <llvm/Transforms/Utils/LoopSimplify.h>
#include <llvm/Transforms/Utils/Mem2Reg.h>
#include <llvm/Transforms/Vectorize/LoopVectorize.h>
#include <llvm/Transforms/Scalar/LoopUnrollPass.h>
#include <llvm/Support/DynamicLibrary.h>
#include <llvm/Support/TargetSelect.h>
#include <llvm/Support/raw_ostream.h>
#include <llvm/Config/llvm-config.h>
#include <llvm/Target/TargetMachine.h>
#include <llvm/TargetParser/Host.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <vector>

namespace nabla {

using namespace llvm;

namespace {

bool haveLibmvec = false;

[[noreturn]] void outOfMemoryWhileCompiling() {
  static const char kMessage[] = "nabla: error: out of memory while compiling\n";
  [[maybe_unused]] ssize_t ignored = ::write(STDERR_FILENO, kMessage, sizeof kMessage - 1);
  ::_exit(1);
}

// While LLVM builds and compiles code, an allocation that fails ends the process with nabla's
// message and status 1. std::bad_alloc cannot be thrown through LLVM: it is built without
// exceptions, and unwinding out of a half-built module crashed in the module's destructor (found
// by sweeping `ulimit -v`). The previous new-handler is restored afterwards.
class CompileMemoryGuard {
public:
  CompileMemoryGuard() : previous_(std::set_new_handler(outOfMemoryWhileCompiling)) {}
  ~CompileMemoryGuard() { std::set_new_handler(previous_); }
  CompileMemoryGuard(const CompileMemoryGuard &) = delete;
  CompileMemoryGuard &operator=(const CompileMemoryGuard &) = delete;

private:
  std::new_handler previous_;
};

void initializeOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    // An allocation LLVM itself cannot make (its safe_malloc, under `ulimit -v` or a cgroup's
    // memory limit) printed "LLVM ERROR: out of memory" and aborted. Now nabla's message and exit
    // status 1, at once: throwing std::bad_alloc instead would unwind through LLVM code built
    // without exceptions and crash in the destructor of its half-built module. No allocation here.
    install_bad_alloc_error_handler([](void *, const char *, bool) { outOfMemoryWhileCompiling(); });
    InitializeNativeTarget();
    InitializeNativeTargetAsmPrinter();
    // libmvec provides the vector exp/log that the loop vectorizer calls; without it, scalar.
    haveLibmvec = !sys::DynamicLibrary::LoadLibraryPermanently("libmvec.so.1");
  });
}

std::string message(llvm::Error e) { return toString(std::move(e)); }

CodeGenOptLevel codeGenLevel(int level) {
  switch (level) {
  case 0: return CodeGenOptLevel::None;
  case 1: return CodeGenOptLevel::Less;
  case 3: return CodeGenOptLevel::Aggressive;
  default: return CodeGenOptLevel::Default;
  }
}

// libmvec's AVX-512 functions ('e' in the vector ABI's mangling), in LLVM's VecFuncs.def form.
const VecDesc kLibmvecAvx512[] = {
    {"expf", "_ZGVeN16v_expf", ElementCount::getFixed(16), false, "_ZGV_LLVM_N16v"},
    {"llvm.exp.f32", "_ZGVeN16v_expf", ElementCount::getFixed(16), false, "_ZGV_LLVM_N16v"},
    {"logf", "_ZGVeN16v_logf", ElementCount::getFixed(16), false, "_ZGV_LLVM_N16v"},
    {"llvm.log.f32", "_ZGVeN16v_logf", ElementCount::getFixed(16), false, "_ZGV_LLVM_N16v"},
    {"exp", "_ZGVeN8v_exp", ElementCount::getFixed(8), false, "_ZGV_LLVM_N8v"},
    {"llvm.exp.f64", "_ZGVeN8v_exp", ElementCount::getFixed(8), false, "_ZGV_LLVM_N8v"},
    {"log", "_ZGVeN8v_log", ElementCount::getFixed(8), false, "_ZGV_LLVM_N8v"},
    {"llvm.log.f64", "_ZGVeN8v_log", ElementCount::getFixed(8), false, "_ZGV_LLVM_N8v"},
};

// Emits and verifies module `module` of `modules` for `tm`.
nabla::Expected<std::unique_ptr<Module>> emitModule(const loops::Program &p, const JitOptions &o,
                                                    LLVMContext &ctx, TargetMachine &tm,
                                                    int module = 0, int modules = 1) {
  LLVMEmitOptions eo;
  eo.f64 = o.f64;
  eo.targetCpu = tm.getTargetCPU().str();
  eo.targetFeatures = tm.getTargetFeatureString().str();
  eo.wideVectors = eo.targetFeatures.find("+avx512f") != std::string::npos;
  std::unique_ptr<Module> m;
  try {
    m = emitLLVM(p, ctx, eo, module, modules);
  } catch (const InternalError &e) {
    return nabla::Error{std::string("internal error in the LLVM backend: ") + e.what()};
  }
  m->setDataLayout(tm.createDataLayout());
  m->setTargetTriple(tm.getTargetTriple().str());
  std::string problems;
  raw_string_ostream os(problems);
  if (verifyModule(*m, &os))
    return nabla::Error{"internal error: the LLVM verifier rejected the generated module:\n" + problems};
  return m;
}

// The pass pipeline of a level for `tm`, with its analyses; printable (the object cache's key
// holds the printed pipeline, so a changed pipeline never reuses objects of the old one).
class Optimizer {
public:
  Optimizer(const JitOptions &o, TargetMachine &tm) : pb_(&tm, PipelineTuningOptions(), std::nullopt, &pic_),
                                                      tlii_(tm.getTargetTriple()) {
    if (o.optLevel <= 0) return; // -O0: no passes (and no analyses to run them with)
    active_ = true;
    const bool wideVectors = tm.getTargetFeatureString().contains("+avx512f");
    if (haveLibmvec) {
      tlii_.addVectorizableFunctionsFromVecLib(TargetLibraryInfoImpl::LIBMVEC_X86, tm.getTargetTriple());
      // LLVM 19's libmvec table stops at AVX2 (8 floats); libmvec has the AVX-512 versions too.
      if (wideVectors) tlii_.addVectorizableFunctions(kLibmvecAvx512);
    }
    fam_.registerPass([&] { return TargetLibraryAnalysis(tlii_); });
    pb_.registerModuleAnalyses(mam_);
    pb_.registerCGSCCAnalyses(cgam_);
    pb_.registerFunctionAnalyses(fam_);
    pb_.registerLoopAnalyses(lam_);
    pb_.crossRegisterProxies(lam_, fam_, cgam_, mam_);
    // The lean pipeline: what this straight-line loop code needs (registers for the
    // accumulators, loop-invariant code out of loops, vectorized inner loops) and nothing
    // that only costs compile time (no inliner: there are no calls; at -O1 and -O2 no
    // unroller: the loops have long constant trip counts already). Each level runs the
    // passes of the level below and more.
    FunctionPassManager fpm;
    fpm.addPass(PromotePass());
    fpm.addPass(EarlyCSEPass());
    fpm.addPass(InstCombinePass());
    fpm.addPass(SimplifyCFGPass());
    fpm.addPass(LoopSimplifyPass());
    fpm.addPass(LCSSAPass());
    fpm.addPass(createFunctionToLoopPassAdaptor(LICMPass(LICMOptions()), /*UseMemorySSA=*/true));
    if (o.optLevel >= 2) {
      // The vector variants of libm calls (libmvec's exp) are attached to the calls first, as
      // the default pipelines do: without them the vectorizer widened exp to llvm.exp.v16f32,
      // which code generation splits into 16 scalar expf calls (tanh layers ran 1.6x slower).
      fpm.addPass(InjectTLIMappings());
      fpm.addPass(LoopVectorizePass());
      fpm.addPass(EarlyCSEPass());
      fpm.addPass(InstCombinePass());
      fpm.addPass(SimplifyCFGPass());
    }
    if (o.optLevel >= 3) {
      // -O3: -O2, then loops of a small constant trip count unrolled fully. Not
      // LLVM's default -O3 pipeline: that one unrolled, re-vectorized and interleaved the
      // register-tiled products again and ran 6-19% slower than -O2 (wide 37.0 ms against
      // 32.6, deep 57.0 µs against 51.5), for 4-5x the compile time. The tiled loops are marked
      // against any transformation (EmitLLVM's keepAsWritten). No partial or run-time unrolling
      // and no SLP vectorizer: they summed the batch's losses in another order (a cancelling
      // f32 loss moved by 3e-5 relative) for no measured gain.
      fpm.addPass(LoopUnrollPass(LoopUnrollOptions(3).setPartial(false).setRuntime(false)));
      fpm.addPass(InstCombinePass());
    }
    mpm_.addPass(createModuleToFunctionPassAdaptor(std::move(fpm)));
  }
  Optimizer(const Optimizer &) = delete;
  Optimizer &operator=(const Optimizer &) = delete;

  void run(Module &m) {
    if (active_) mpm_.run(m, mam_);
  }
  std::string describe() {
    std::string s;
    raw_string_ostream os(s);
    mpm_.printPipeline(os, [this](StringRef className) {
      StringRef name = pic_.getPassNameForClassName(className);
      return name.empty() ? className : name;
    });
    return os.str();
  }

private:
  PassInstrumentationCallbacks pic_;
  LoopAnalysisManager lam_;
  FunctionAnalysisManager fam_;
  CGSCCAnalysisManager cgam_;
  ModuleAnalysisManager mam_;
  PassBuilder pb_;
  TargetLibraryInfoImpl tlii_;
  ModulePassManager mpm_;
  bool active_ = false;
};

nabla::Expected<std::unique_ptr<TargetMachine>> hostMachine(const JitOptions &o) {
  auto jtmb = orc::JITTargetMachineBuilder::detectHost();
  if (!jtmb) return nabla::Error{"cannot target this machine: " + message(jtmb.takeError())};
  jtmb->setCodeGenOptLevel(codeGenLevel(o.optLevel));
  auto tm = jtmb->createTargetMachine();
  if (!tm) return nabla::Error{"cannot create a target machine: " + message(tm.takeError())};
  return std::move(*tm);
}

} // namespace

struct JitSession::Impl {
  std::unique_ptr<orc::LLJIT> jit;
};

JitSession::JitSession() : impl_(std::make_unique<Impl>()) {}
JitSession::~JitSession() = default;

namespace {

// What the object cache's key holds besides the module's IR and the printed pipeline: the parts
// of the compile that neither shows. Change the revision whenever code outside the IR and the
// pipeline's text changes the object (the libmvec table above, code generation options, the
// way objects are linked), so that no object of the old build is reused.
constexpr const char *kCacheRevision = "nabla-jit-1";

double millisecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

double threadCpuMilliseconds() {
  timespec t{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) * 1e3 + static_cast<double>(t.tv_nsec) * 1e-6;
}

// Sets `wall` to the wall time since construction, however the scope is left; lap() is the
// calling thread's CPU time since the last lap.
struct ModuleTimer {
  double &wall;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  double cpu = threadCpuMilliseconds();
  explicit ModuleTimer(double &w) : wall(w) {}
  ~ModuleTimer() { wall = millisecondsSince(start); }
  double lap() {
    const double previous = cpu;
    cpu = threadCpuMilliseconds();
    return cpu - previous;
  }
};

// Module `module` of `modules` (EmitLLVM.h) as an object file: emitted, optimized and compiled
// with a target machine and context of its own, so that modules compile on threads side by side;
// with a cache, looked up first and stored after compiling.
nabla::Expected<std::unique_ptr<MemoryBuffer>> compileModule(const loops::Program &p, const JitOptions &o,
                                                              int module, int modules, JitModuleTimes &times) {
  ModuleTimer timer(times.wall);
  auto tm = hostMachine(o);
  if (!tm) return tm.error();
  LLVMContext ctx;
  auto m = emitModule(p, o, ctx, **tm, module, modules);
  if (!m) return m.error();
  Optimizer optimizer(o, **tm);
  times.emit = timer.lap();

  const ObjectCache cache(o.cacheDir);
  std::optional<CacheKey> key;
  const std::string name = "nabla" + std::to_string(module) + ".o";
  if (cache.enabled()) {
    // The key: everything the object depends on. The IR before optimization says what the
    // program is (shapes, kernels, the entry points, the CPU and features as attributes).
    // The IR as bitcode: as complete as its text and 3x faster to write (mnist: 0.9 ms against
    // 2.6 for the whole program), and deterministic (ThinLTO's caches key on it too).
    std::string ir;
    raw_string_ostream os(ir);
    WriteBitcodeToFile(**m, os);
    CacheKeyBuilder k;
    k.add(kCacheRevision).add(LLVM_VERSION_STRING).add((*tm)->getTargetTriple().str());
    k.add((*tm)->getTargetCPU()).add((*tm)->getTargetFeatureString());
    k.add(o.optLevel).add(static_cast<int64_t>((*tm)->getOptLevel())).add(o.f64 ? 1 : 0).add(haveLibmvec ? 1 : 0);
    k.add(optimizer.describe()).add(os.str());
    key = k.finish();
    if (std::optional<std::string> object = cache.load(*key)) {
      times.cache = timer.lap();
      times.cached = true;
      times.objectBytes = object->size();
      return MemoryBuffer::getMemBufferCopy(*object, name);
    }
  }
  times.cache = timer.lap();

  optimizer.run(**m);
  times.optimize = timer.lap();
  orc::SimpleCompiler compile(**tm);
  auto object = compile(**m);
  if (!object) return nabla::Error{"cannot compile the module: " + message(object.takeError())};
  times.objectBytes = (*object)->getBufferSize();
  if (key) cache.store(*key, std::string_view((*object)->getBufferStart(), (*object)->getBufferSize()));
  times.codegen = timer.lap();
  return std::move(*object);
}

} // namespace

nabla::Expected<std::unique_ptr<JitSession>> JitSession::create(const loops::Program &p, const JitOptions &o) {
  initializeOnce();
  CompileMemoryGuard memory;
  // Code generation is most of the compile time: a program big enough is cut into modules that
  // compile on up to one thread a core (the calling thread compiles module 0).
  const int cores = static_cast<int>(std::max(1u, std::min(std::thread::hardware_concurrency(), 8u)));
  const int modules = o.modules > 0 ? o.modules : llvmModuleCount(p, cores);
  std::vector<std::optional<nabla::Expected<std::unique_ptr<MemoryBuffer>>>> objects(static_cast<size_t>(modules));
  std::vector<JitModuleTimes> times(static_cast<size_t>(modules));
  auto t0 = std::chrono::steady_clock::now();
  {
    std::vector<std::thread> workers;
    // Every module, module 0 on this thread too, under one guard: an exception must neither leave a
    // thread (std::terminate) nor leave this one while workers are joinable (std::terminate again).
    auto compileInto = [&](int k) {
      auto &slot = objects[static_cast<size_t>(k)];
      try {
        slot.emplace(compileModule(p, o, k, modules, times[static_cast<size_t>(k)]));
      } catch (const std::bad_alloc &) {
        slot.emplace(nabla::Error{"nabla: error: out of memory while compiling"});
      } catch (const std::exception &e) {
        slot.emplace(nabla::Error{std::string("nabla: internal error while compiling (a bug in nabla, please report it): ") + e.what()});
      }
    };
    for (int k = 1; k < modules; ++k) {
      try {
        workers.emplace_back(compileInto, k);
      } catch (const std::system_error &) { // no thread to be had (ulimit -u): compile it here
        compileInto(k);
      }
    }
    compileInto(0);
    for (std::thread &t : workers) t.join();
  }
  if (o.times) {
    o.times->modules = times;
    o.times->modulesWall = millisecondsSince(t0);
  }
  t0 = std::chrono::steady_clock::now();

  auto jtmb = orc::JITTargetMachineBuilder::detectHost();
  if (!jtmb) return nabla::Error{"cannot target this machine: " + message(jtmb.takeError())};
  jtmb->setCodeGenOptLevel(codeGenLevel(o.optLevel));
  auto jit = orc::LLJITBuilder().setJITTargetMachineBuilder(std::move(*jtmb)).create();
  if (!jit) return nabla::Error{"cannot start the JIT: " + message(jit.takeError())};
  auto gen = orc::DynamicLibrarySearchGenerator::GetForCurrentProcess((*jit)->getDataLayout().getGlobalPrefix());
  if (!gen) return nabla::Error{"cannot resolve libm symbols: " + message(gen.takeError())};
  (*jit)->getMainJITDylib().addGenerator(std::move(*gen));
  for (auto &object : objects) {
    if (!*object) return object->error();
    if (llvm::Error e = (*jit)->addObjectFile(std::move(**object)))
      return nabla::Error{"cannot add the compiled code to the JIT: " + message(std::move(e))};
  }

  std::unique_ptr<JitSession> s(new JitSession());
  for (auto [name, slot] : {std::pair{kForwardSymbol, &s->forward_}, std::pair{kGradientSymbol, &s->gradient_}}) {
    bool wanted = std::string(name) == kForwardSymbol ? !p.forward.name.empty() : !p.gradient.name.empty();
    if (!wanted) continue;
    auto sym = (*jit)->lookup(name);
    if (!sym) return nabla::Error{"cannot find a compiled function: " + message(sym.takeError())};
    *slot = sym->toPtr<void *>();
  }
  s->impl_->jit = std::move(*jit);
  if (o.times) o.times->link = millisecondsSince(t0);
  return s;
}

nabla::Expected<std::string> optimizedIR(const loops::Program &p, const JitOptions &o) {
  initializeOnce();
  CompileMemoryGuard memory;
  auto tm = hostMachine(o);
  if (!tm) return tm.error();
  LLVMContext ctx;
  auto m = emitModule(p, o, ctx, **tm);
  if (!m) return m.error();
  Optimizer(o, **tm).run(**m);
  std::string s;
  raw_string_ostream os(s);
  (*m)->print(os, nullptr);
  return os.str();
}

} // namespace nabla
