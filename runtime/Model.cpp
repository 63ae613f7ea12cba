// Model: compiles through the whole pipeline (front end, autodiff, simplifier, Loop IR, JIT) and
// runs the result; the interpreter engine runs the same simplified graphs without compiling.
#include "Model.h"

#include "JitSession.h"
#include "LowerToLoops.h"
#include "ObjectCache.h"
#include "Pipeline.h"
#include "Random.h"
#include "Sema.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fmt/format.h>
#include <mutex>
#include <optional>
#include <type_traits>
#include <system_error>
#include <thread>

namespace nabla {

struct Model::State {
  CompileOptions opts;
  std::unique_ptr<Program> program; // stable address: the derivation refers into its graph
  std::optional<Derivation> derivation;
  std::vector<NodeId> outputs;
  loops::Program loops;
  std::unique_ptr<JitSession> jit;
  CompileTimes times;
  // The loss-only program (prepareLossOnly), built once on first use.
  std::once_flag lossOnce;
  loops::Program lossLoops;
  std::unique_ptr<JitSession> lossJit;
  std::optional<Error> lossError;
};

Model::Model() : s_(std::make_unique<State>()) {}
Model::Model(Model &&) noexcept = default;
Model &Model::operator=(Model &&) noexcept = default;
Model::~Model() = default;

Expected<Model> Model::compileFile(const std::string &path, const CompileOptions &o) {
  auto text = readFile(path, kMaxSourceFileBytes);
  if (!text) return text.error();
  return compileString(std::move(*text), path, o);
}

// The JIT's messages ("cannot compile the module: ...") say what failed, not that it is nabla's
// error: they get the prefix every other message has.
static Error withErrorPrefix(Error e) {
  if (e.message.rfind("internal error", 0) == 0) e.message = "nabla: " + e.message;
  else if (e.message.find("error: ") == std::string::npos && e.message.find("error (") == std::string::npos)
    e.message = "nabla: error: " + e.message;
  return e;
}

static double millisecondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

std::string formatCompileTimes(const CompileTimes &t, const char *what) {
  std::string s = fmt::format("nabla: {} {:.1f} ms (wall): front end {:.1f}, autodiff and simplify {:.1f}, "
                              "lowering {:.1f}",
                              what, t.total, t.frontend, t.derive, t.lower);
  if (!t.jit.modules.empty()) {
    s += fmt::format(", JIT modules {:.1f} ({} on threads side by side), linking {:.1f}\n", t.jit.modulesWall,
                     t.jit.modules.size(), t.jit.link);
    for (size_t k = 0; k < t.jit.modules.size(); ++k) {
      const JitModuleTimes &m = t.jit.modules[k];
      s += fmt::format("nabla:   module {}: {:.1f} ms; CPU: LLVM IR {:.1f}, cache {:.1f} ({}), passes {:.1f}, "
                       "code generation {:.1f}; object {} bytes\n",
                       k, m.wall, m.emit, m.cache, m.cached ? "hit" : "miss or off", m.optimize, m.codegen,
                       m.objectBytes);
    }
  } else {
    s += "\n";
  }
  return s;
}

static bool timesWanted() {
  const char *v = std::getenv("NABLA_TIME");
  return v && *v && std::string(v) != "0";
}

Expected<Model> Model::compileString(std::string source, std::string name, const CompileOptions &o) {
  const auto start = std::chrono::steady_clock::now();
  CompileTimes times;
  auto t0 = start;
  std::string diags;
  std::optional<Program> p = compileSource(SourceFile{std::move(name), std::move(source)}, diags);
  if (!p) return Error{diags};
  times.frontend = millisecondsSince(t0);
  Model m;
  m.s_->opts = o;
  m.s_->program = std::make_unique<Program>(std::move(*p));
  Program &prog = *m.s_->program;
  try {
    t0 = std::chrono::steady_clock::now();
    if (prog.loss) {
      auto d = derive(prog);
      if (!d) return d.error();
      m.s_->derivation = std::move(*d);
      m.s_->outputs = m.s_->derivation->outputs;
    } else {
      m.s_->outputs = simplifiedOutputs(prog);
    }
    times.derive = millisecondsSince(t0);
    t0 = std::chrono::steady_clock::now();
    m.s_->loops = lowerToLoops(prog, m.s_->outputs, m.s_->derivation ? &*m.s_->derivation : nullptr);
    times.lower = millisecondsSince(t0);
  } catch (const SizeLimitError &e) { // values too large to lay out: the program's error
    return Error{e.what()};
  } catch (const InternalError &e) {
    return Error{std::string("internal error (a bug in nabla, please report it): ") + e.what()};
  }
  if (o.engine == Engine::Jit) {
    JitOptions jo{o.dtype == DType::F64, o.optLevel, o.jitModules};
    jo.cacheDir = o.cacheDir ? *o.cacheDir : ObjectCache::defaultDirectory();
    jo.times = &times.jit;
    auto jit = JitSession::create(m.s_->loops, jo);
    if (!jit) return withErrorPrefix(jit.error());
    m.s_->jit = std::move(*jit);
  }
  times.total = millisecondsSince(start);
  m.s_->times = times;
  if (timesWanted()) {
    const std::string text = formatCompileTimes(times);
    std::fwrite(text.data(), 1, text.size(), stderr);
  }
  return m;
}

static std::vector<TensorInfo> infos(const std::vector<Decl> &ds) {
  std::vector<TensorInfo> r;
  for (auto &d : ds) r.push_back({d.name, d.shape, d.offset});
  return r;
}

std::vector<TensorInfo> Model::params() const { return infos(s_->program->params); }
std::vector<TensorInfo> Model::inputs() const { return infos(s_->program->inputs); }
std::vector<TensorInfo> Model::targets() const { return infos(s_->program->targets); }
std::vector<TensorInfo> Model::outputs() const {
  std::vector<TensorInfo> r;
  int64_t off = 0;
  for (auto &o : s_->program->outputs) {
    Shape s = s_->program->graph.shape(o.node);
    r.push_back({o.name, s, off});
    off += s.numel();
  }
  return r;
}
int64_t Model::paramCount() const { return s_->program->paramCount(); }
int64_t Model::inputCount() const { return s_->program->inputCount(); }
int64_t Model::targetCount() const { return s_->program->targetCount(); }
int64_t Model::outputCount() const { return s_->program->outputCount(); }
bool Model::hasLoss() const { return s_->program->loss.has_value(); }
DType Model::dtype() const { return s_->opts.dtype; }
Engine Model::engine() const { return s_->opts.engine; }
const Program &Model::program() const { return *s_->program; }
const loops::Program &Model::loops() const { return s_->loops; }
const CompileTimes &Model::compileTimes() const { return s_->times; }
std::vector<double> Model::initParams(uint64_t seed) const { return nabla::initParams(*s_->program, seed); }

int64_t Model::workspaceSize(int64_t n) const {
  return s_->loops.workspaceFixed + s_->loops.workspacePerExample * n;
}

int64_t Model::chunkRows(int64_t cap) const {
  const int64_t bytes = std::max<int64_t>(1, s_->loops.workspacePerExample) *
                        static_cast<int64_t>(s_->opts.dtype == DType::F64 ? 8 : 4);
  return std::clamp<int64_t>((int64_t{256} << 20) / bytes, 1, std::max<int64_t>(cap, 1));
}

Expected<bool> Model::prepareLossOnly() const {
  State &st = *s_;
  std::call_once(st.lossOnce, [&] {
    if (!st.jit || !st.derivation) {
      st.lossError = Error{"nabla: error: the loss alone needs the JIT engine and a program with a loss"};
      return;
    }
    const auto start = std::chrono::steady_clock::now();
    CompileTimes times;
    try {
      st.lossLoops = lowerToLoops(*st.program, st.outputs, &*st.derivation, /*lossOnly=*/true);
    } catch (const std::exception &e) { // the full program lowered, so this is nabla's bug
      st.lossError = Error{std::string("nabla: internal error (a bug in nabla, please report it): ") + e.what()};
      return;
    }
    times.lower = millisecondsSince(start);
    JitOptions jo{st.opts.dtype == DType::F64, st.opts.optLevel, st.opts.jitModules};
    jo.cacheDir = st.opts.cacheDir ? *st.opts.cacheDir : ObjectCache::defaultDirectory();
    jo.times = &times.jit;
    auto jit = JitSession::create(st.lossLoops, jo);
    if (!jit) st.lossError = withErrorPrefix(jit.error());
    else st.lossJit = std::move(*jit);
    times.total = millisecondsSince(start);
    if (jit && timesWanted()) {
      const std::string text = formatCompileTimes(times, "the loss alone: compile time");
      std::fwrite(text.data(), 1, text.size(), stderr);
    }
  });
  if (st.lossError) return *st.lossError;
  return true;
}

int64_t Model::lossWorkspaceSize(int64_t n) const {
  if (!s_->lossJit) throw InternalError("lossWorkspaceSize before prepareLossOnly");
  return s_->lossLoops.workspaceFixed + s_->lossLoops.workspacePerExample * n;
}

template <class T>
T Model::lossRaw(const T *params, const T *inputs, const T *targets, int64_t n, T *outputs, T *workspace) const {
  using Fn = T (*)(const T *, const T *, const T *, int64_t, T *, T *);
  if (!s_->lossJit || !s_->lossJit->gradient()) throw InternalError("lossRaw before prepareLossOnly");
  if (std::is_same_v<T, double> != (s_->opts.dtype == DType::F64)) throw InternalError("lossRaw: T is not the model's dtype");
  return reinterpret_cast<Fn>(s_->lossJit->gradient())(params, inputs, targets, n, outputs, workspace);
}
template float Model::lossRaw<float>(const float *, const float *, const float *, int64_t, float *, float *) const;
template double Model::lossRaw<double>(const double *, const double *, const double *, int64_t, double *, double *) const;

double Model::gradientWorkPerExample() const {
  double work = 0;
  for (const loops::Kernel &k : s_->loops.gradient.kernels) {
    double w = 1;
    bool batch = false;
    for (const loops::Loop &l : k.loops) {
      if (l.batch) batch = true;
      else w *= static_cast<double>(l.extent);
    }
    if (batch) work += w;
  }
  return work;
}

// Why a raw entry point cannot run, or an empty string: the engine, the loss, and T against the
// dtype the code was compiled for (a float* read as double* is garbage, not an error, otherwise).
template <class T> static std::string rawProblem(const char *fn, bool jit, bool hasEntry, DType dtype, bool gradient) {
  constexpr bool isDouble = std::is_same_v<T, double>;
  const char *t = isDouble ? "double" : "float";
  if (!jit) return fmt::format("{}<{}> needs the JIT engine (the model uses the interpreter)", fn, t);
  if (!hasEntry) return fmt::format("{}<{}> needs a program with a loss", fn, t);
  if (isDouble != (dtype == DType::F64))
    return fmt::format("{}<{}> on a model compiled for {}: use {}<{}>", fn, t,
                       dtype == DType::F64 ? "f64" : "f32", fn, dtype == DType::F64 ? "double" : "float");
  (void)gradient;
  return {};
}

template <class T>
void Model::forwardRaw(const T *params, const T *inputs, int64_t n, T *outputs, T *workspace) const {
  using Fn = void (*)(const T *, const T *, int64_t, T *, T *);
  std::string p = rawProblem<T>("forwardRaw", s_->jit != nullptr, s_->jit && s_->jit->forward(), s_->opts.dtype, false);
  if (!p.empty()) throw InternalError(p);
  reinterpret_cast<Fn>(s_->jit->forward())(params, inputs, n, outputs, workspace);
}

template <class T>
T Model::lossAndGradientRaw(const T *params, const T *inputs, const T *targets, int64_t n, T *grads,
                            T *workspace) const {
  using Fn = T (*)(const T *, const T *, const T *, int64_t, T *, T *);
  std::string p = rawProblem<T>("lossAndGradientRaw", s_->jit != nullptr, s_->jit && s_->jit->gradient(),
                                s_->opts.dtype, true);
  if (!p.empty()) throw InternalError(p);
  return reinterpret_cast<Fn>(s_->jit->gradient())(params, inputs, targets, n, grads, workspace);
}

template <class T>
Expected<bool> Model::tryForwardRaw(const T *params, const T *inputs, int64_t n, T *outputs, T *workspace) const {
  std::string p = rawProblem<T>("forwardRaw", s_->jit != nullptr, s_->jit && s_->jit->forward(), s_->opts.dtype, false);
  if (!p.empty()) return Error{"nabla: error: " + p};
  forwardRaw<T>(params, inputs, n, outputs, workspace);
  return true;
}

template <class T>
Expected<T> Model::tryLossAndGradientRaw(const T *params, const T *inputs, const T *targets, int64_t n, T *grads,
                                         T *workspace) const {
  std::string p = rawProblem<T>("lossAndGradientRaw", s_->jit != nullptr, s_->jit && s_->jit->gradient(),
                                s_->opts.dtype, true);
  if (!p.empty()) return Error{"nabla: error: " + p};
  return lossAndGradientRaw<T>(params, inputs, targets, n, grads, workspace);
}

template void Model::forwardRaw<float>(const float *, const float *, int64_t, float *, float *) const;
template void Model::forwardRaw<double>(const double *, const double *, int64_t, double *, double *) const;
template float Model::lossAndGradientRaw<float>(const float *, const float *, const float *, int64_t, float *, float *) const;
template double Model::lossAndGradientRaw<double>(const double *, const double *, const double *, int64_t, double *, double *) const;
template Expected<bool> Model::tryForwardRaw<float>(const float *, const float *, int64_t, float *, float *) const;
template Expected<bool> Model::tryForwardRaw<double>(const double *, const double *, int64_t, double *, double *) const;
template Expected<float> Model::tryLossAndGradientRaw<float>(const float *, const float *, const float *, int64_t, float *, float *) const;
template Expected<double> Model::tryLossAndGradientRaw<double>(const double *, const double *, const double *, int64_t, double *, double *) const;

namespace {

template <class T> std::vector<T> convert(const double *p, size_t n) { return std::vector<T>(p, p + n); }

} // namespace

std::vector<double> Model::forward(const std::vector<double> &params, const double *inputs, int64_t n) const {
  if (s_->opts.engine == Engine::Interp)
    return interpretForward(*s_->program, s_->outputs, s_->opts.dtype, params, inputs, n);
  auto run = [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> P = convert<T>(params.data(), params.size());
    std::vector<T> X = convert<T>(inputs, static_cast<size_t>(n * inputCount()));
    const int64_t chunk = chunkRows(n);
    std::vector<T> Y(static_cast<size_t>(n * outputCount())), W(static_cast<size_t>(workspaceSize(std::min(n, chunk))));
    for (int64_t b = 0; b < n; b += chunk)
      forwardRaw<T>(P.data(), X.data() + b * inputCount(), std::min(chunk, n - b), Y.data() + b * outputCount(), W.data());
    return std::vector<double>(Y.begin(), Y.end());
  };
  return s_->opts.dtype == DType::F64 ? run(0.0) : run(0.0f);
}

double Model::lossAndGradient(const std::vector<double> &params, const double *inputs,
                              const double *targets, int64_t n, std::vector<double> &grads,
                              int threads) const {
  if (!s_->derivation) throw InternalError("lossAndGradient: the program has no loss");
  if (s_->opts.engine == Engine::Interp) {
    LossAndGradient r = interpretLossAndGradient(*s_->program, *s_->derivation, s_->opts.dtype,
                                                 params, inputs, targets, n);
    grads = std::move(r.grads);
    return r.loss;
  }
  if (n <= 0) { // as the interpreter: no examples, loss and gradient 0 (the compiled code divides by n)
    grads.assign(static_cast<size_t>(paramCount()), 0.0);
    return 0.0;
  }
  auto run = [&](auto zero) {
    using T = decltype(zero);
    const int64_t ni = inputCount(), nt = targetCount(), np = paramCount();
    std::vector<T> P = convert<T>(params.data(), params.size());
    std::vector<T> X = convert<T>(inputs, static_cast<size_t>(n * ni));
    std::vector<T> Y = convert<T>(targets, static_cast<size_t>(n * nt));
    int parts = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n)));
    std::vector<std::vector<T>> G(static_cast<size_t>(parts), std::vector<T>(static_cast<size_t>(np)));
    std::vector<double> L(static_cast<size_t>(parts));
    std::vector<int64_t> begin(static_cast<size_t>(parts) + 1);
    for (int k = 0; k <= parts; ++k) begin[static_cast<size_t>(k)] = n * k / parts;
    // A part larger than a chunk goes through its rows chunk by chunk, its means weighted by the
    // chunks' shares (one chunk: exactly the compiled result).
    const int64_t chunk = chunkRows(n);
    auto work = [&](int k) {
      const int64_t b = begin[static_cast<size_t>(k)], m = begin[static_cast<size_t>(k) + 1] - b;
      std::vector<T> W(static_cast<size_t>(workspaceSize(std::min(m, chunk))));
      T *g = G[static_cast<size_t>(k)].data();
      if (m <= chunk) {
        L[static_cast<size_t>(k)] = lossAndGradientRaw<T>(P.data(), X.data() + b * ni, Y.data() + b * nt, m, g, W.data());
        return;
      }
      std::vector<T> Gc(static_cast<size_t>(np));
      std::vector<double> sum(static_cast<size_t>(np), 0.0);
      double loss = 0;
      for (int64_t c = b; c < b + m; c += chunk) {
        const int64_t r = std::min(chunk, b + m - c);
        const double w = static_cast<double>(r) / static_cast<double>(m);
        loss += w * static_cast<double>(lossAndGradientRaw<T>(P.data(), X.data() + c * ni, Y.data() + c * nt, r, Gc.data(), W.data()));
        for (int64_t j = 0; j < np; ++j) sum[static_cast<size_t>(j)] += w * static_cast<double>(Gc[static_cast<size_t>(j)]);
      }
      L[static_cast<size_t>(k)] = loss;
      for (int64_t j = 0; j < np; ++j) g[j] = static_cast<T>(sum[static_cast<size_t>(j)]);
    };
    if (parts == 1) work(0);
    else {
      // Parts 1.. on threads, part 0 here. A thread the system refuses (a process limit, a pids
      // cgroup, no address space for its stack) is not an error: its part runs here too, after
      // part 0; a throwing emplace_back must not leave started threads joinable (std::terminate).
      // An exception in a part (its work space: bad_alloc) is rethrown here after every join.
      std::vector<std::exception_ptr> failed(static_cast<size_t>(parts));
      auto guarded = [&](int k) {
        try {
          work(k);
        } catch (...) {
          failed[static_cast<size_t>(k)] = std::current_exception();
        }
      };
      std::vector<std::thread> pool;
      std::vector<int> here = {0};
      for (int k = 1; k < parts; ++k) {
        try {
          pool.emplace_back(guarded, k);
        } catch (const std::system_error &) {
          here.push_back(k);
        }
      }
      for (int k : here) guarded(k);
      for (auto &t : pool) t.join();
      for (auto &e : failed)
        if (e) std::rethrow_exception(e);
    }
    // Each part returns means over its examples: weight them by their share of the batch.
    double loss = 0;
    grads.assign(static_cast<size_t>(np), 0.0);
    for (int k = 0; k < parts; ++k) {
      double w = static_cast<double>(begin[static_cast<size_t>(k) + 1] - begin[static_cast<size_t>(k)]) /
                 static_cast<double>(n);
      loss += w * L[static_cast<size_t>(k)];
      for (int64_t j = 0; j < np; ++j) grads[static_cast<size_t>(j)] += w * static_cast<double>(G[static_cast<size_t>(k)][static_cast<size_t>(j)]);
    }
    if (parts == 1) { // exactly the compiled result, without the weighting's rounding
      loss = L[0];
      for (int64_t j = 0; j < np; ++j) grads[static_cast<size_t>(j)] = static_cast<double>(G[0][static_cast<size_t>(j)]);
    }
    return loss;
  };
  return s_->opts.dtype == DType::F64 ? run(0.0) : run(0.0f);
}

} // namespace nabla
