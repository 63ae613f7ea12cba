// _nabla: the compiled half of the Python module `nabla` (python/nabla/__init__.py is the other).
// It binds runtime/Model.h and runtime/Trainer.h to NumPy:
//   - arrays of the model's dtype that are C-contiguous and already in the flat layout (one input,
//     or params that are views of one buffer as init_params returns them) are passed to the
//     compiled code as they are; anything else is converted once into a buffer of that dtype;
//   - results (gradients, outputs, params) are views of one fresh NumPy buffer each;
//   - the GIL is released while compiled code, the interpreter or the trainer runs, so that other
//     Python threads (another call on the same model included: the compiled functions keep no
//     state, each call has its own work space) go on meanwhile.
#include "Model.h"
#include "ParamIO.h"
#include "TrainReport.h"
#include "Trainer.h"

#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cmath>
#include <exception>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>
#include <unistd.h>

namespace py = pybind11;
using namespace nabla;

namespace {

using ModelPtr = std::shared_ptr<Model>;

// nabla.CompileError is a Python class (it parses FILE:LINE:COL out of the message);
// __init__.py hands it over as _nabla._CompileError.
[[noreturn]] void raiseCompileError(const std::string &message) {
  py::object cls = py::module_::import("nabla._nabla").attr("_CompileError");
  py::object e = cls(message);
  PyErr_SetObject(cls.ptr(), e.ptr());
  throw py::error_already_set();
}

std::string shapeText(const std::vector<int64_t> &dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

std::string shapeText(const py::array &a) {
  std::vector<int64_t> d(a.shape(), a.shape() + a.ndim());
  return shapeText(d);
}

std::string batchShapeText(const Shape &s) {
  std::string t = "(n";
  for (int64_t d : s.dims) t += ", " + std::to_string(d);
  return t + (s.dims.empty() ? ",)" : ")");
}

std::string names(const std::vector<TensorInfo> &infos) {
  std::string s;
  for (auto &i : infos) s += (s.empty() ? "" : ", ") + i.name;
  return s;
}

py::dict infoDict(const std::vector<TensorInfo> &infos) {
  py::dict d;
  for (auto &i : infos) d[py::str(i.name)] = py::tuple(py::cast(i.shape.dims));
  return d;
}

// The compiled code's workspace for this thread, kept from call to call and grown when a call
// needs more (its contents need no initial value: the trainer also reuses one). A fresh vector a
// call was, for a convnet batch of 64 (tens of MB), an mmap that page-faulted in every page and
// a memset of every element: a third of the step's time.
template <class T> T *threadWorkspace(int64_t size) {
  thread_local std::vector<T> w;
  if (w.size() < static_cast<size_t>(size)) w.resize(static_cast<size_t>(size));
  return w.data();
}

// A NumPy array view of `dims` (row-major, with `strideElems` between batch rows when batched)
// into `base`'s buffer at element `offset`.
template <class T>
py::array viewOf(const py::array_t<T> &base, int64_t offset, std::vector<int64_t> dims,
                 std::optional<std::pair<int64_t, int64_t>> batch = std::nullopt) {
  std::vector<py::ssize_t> shape, strides;
  if (batch) shape.push_back(batch->first);
  for (int64_t d : dims) shape.push_back(d);
  strides.assign(shape.size(), sizeof(T));
  for (size_t i = shape.size(); i-- > (batch ? 1u : 0u);)
    if (i + 1 < shape.size()) strides[i] = strides[i + 1] * shape[i + 1];
  if (batch) strides[0] = static_cast<py::ssize_t>(batch->second * static_cast<int64_t>(sizeof(T)));
  T *p = const_cast<T *>(base.data()) + offset;
  return py::array_t<T>(shape, strides, p, base);
}

// The value of one input, target or param as an array the compiled code can read: `obj` itself
// when it is a C-contiguous array of T, else a converted copy. Raises ValueError for a kind of
// element that is no number (strings, objects, complex numbers).
template <class T> py::array_t<T> asArray(py::handle obj, const std::string &what) {
  py::array a;
  if (py::isinstance<py::array>(obj)) a = py::reinterpret_borrow<py::array>(obj);
  else {
    try {
      a = py::array::ensure(obj);
    } catch (...) {
    }
    if (!a) throw py::type_error(what + ": expected an array of numbers, got " +
                                 std::string(py::str(py::type::of(obj).attr("__name__"))));
  }
  char kind = a.dtype().kind();
  if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b')
    throw py::value_error(what + ": expected an array of numbers, got dtype " + std::string(py::str(a.dtype())));
  if (py::isinstance<py::array_t<T, py::array::c_style>>(a) && a.dtype().is(py::dtype::of<T>()))
    return py::reinterpret_borrow<py::array_t<T>>(a);
  return py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(a);
}

// Inputs or targets of n examples in the model's flat layout (example after example, each the
// declared tensors in order). `data` points either into the caller's array (one tensor, C-contiguous,
// the model's dtype: no copy) or into `buf`.
template <class T> struct Batch {
  const T *data = nullptr;
  std::vector<T> buf;
  std::vector<py::object> keep; // the arrays read, alive until the call is done
  bool copied = false;
  bool classTargets = false;    // given as class indices (one-hot in buf)
};

// `obj`: a dict name -> array, or a single array when there is one tensor of this kind, or None
// when there are none. Every array has the batch first; `n` is set from the first one (-1: unset)
// and checked against the rest.
template <class T>
Batch<T> gather(py::handle obj, const std::vector<TensorInfo> &infos, int64_t perExample,
                const char *kind, int64_t &n, bool allowClassIndices) {
  Batch<T> b;
  if (infos.empty()) {
    if (!obj.is_none() && !(py::isinstance<py::dict>(obj) && py::len(obj) == 0))
      throw py::value_error(std::string("the program has no ") + kind + "s, but some were given");
    return b;
  }
  std::vector<py::object> values;
  if (py::isinstance<py::dict>(obj)) {
    py::dict d = py::reinterpret_borrow<py::dict>(obj);
    for (auto item : d) {
      std::string key = py::str(item.first);
      bool known = false;
      for (auto &i : infos) known = known || i.name == key;
      if (!known)
        throw py::value_error(std::string("unknown ") + kind + " '" + key + "' (the program's " + kind +
                              "s: " + names(infos) + ")");
    }
    for (auto &i : infos) {
      if (!d.contains(i.name)) throw py::value_error(std::string("missing ") + kind + " '" + i.name + "'");
      values.push_back(d[py::str(i.name)]);
    }
  } else if (obj.is_none()) {
    throw py::value_error(std::string("missing ") + kind + (infos.size() == 1 ? " '" : "s '") + names(infos) + "'");
  } else {
    if (infos.size() != 1)
      throw py::type_error(std::string("the program has ") + std::to_string(infos.size()) + " " + kind +
                           "s (" + names(infos) + "): give a dict of arrays");
    values.push_back(py::reinterpret_borrow<py::object>(obj));
  }
  std::vector<py::array_t<T>> arrays;
  for (size_t k = 0; k < infos.size(); ++k) {
    const TensorInfo &info = infos[k];
    const std::string what = std::string(kind) + " '" + info.name + "'";
    py::array raw = py::isinstance<py::array>(values[k]) ? py::reinterpret_borrow<py::array>(values[k])
                                                         : py::array(asArray<T>(values[k], what));
    // Class indices: one integer a row for a target declared as K classes (as the data files may
    // give them), made one-hot here.
    if (allowClassIndices && infos.size() == 1 && info.shape.rank() == 1 && raw.ndim() == 1 &&
        (raw.dtype().kind() == 'i' || raw.dtype().kind() == 'u')) {
      auto idx = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(raw);
      int64_t rows = idx.shape(0), K = info.shape[0];
      if (n >= 0 && rows != n)
        throw py::value_error(what + ": " + std::to_string(rows) + " class indices for a batch of " + std::to_string(n));
      n = rows;
      b.buf.assign(static_cast<size_t>(rows * K), T(0));
      for (int64_t r = 0; r < rows; ++r) {
        int64_t c = idx.data()[r];
        if (c < 0 || c >= K)
          throw py::value_error(what + ": class index " + std::to_string(c) + " in row " + std::to_string(r) +
                                " is outside 0.." + std::to_string(K - 1));
        b.buf[static_cast<size_t>(r * K + c)] = T(1);
      }
      b.data = b.buf.data();
      b.copied = b.classTargets = true;
      b.keep.push_back(idx);
      return b;
    }
    py::array_t<T> a = asArray<T>(raw, what);
    bool ok = a.ndim() == info.shape.rank() + 1;
    for (int d = 0; ok && d < info.shape.rank(); ++d) ok = a.shape(d + 1) == info.shape[d];
    if (!ok)
      throw py::value_error(what + ": expected shape " + batchShapeText(info.shape) + " (a batch of " +
                            shapeText(info.shape.dims) + "), got " + shapeText(raw));
    if (n >= 0 && a.shape(0) != n)
      throw py::value_error(what + ": a batch of " + std::to_string(a.shape(0)) + ", but the others have " +
                            std::to_string(n) + " (shape " + shapeText(raw) + ")");
    n = a.shape(0);
    if (!a.is(values[k])) b.copied = true; // converted (dtype, order, or not an ndarray)
    arrays.push_back(a);
    b.keep.push_back(a);
  }
  if (arrays.size() == 1) {
    b.data = arrays[0].data();
    return b;
  }
  b.copied = true; // several tensors: interleaved example by example
  b.buf.resize(static_cast<size_t>(n * perExample));
  for (size_t k = 0; k < infos.size(); ++k) {
    int64_t size = infos[k].shape.numel();
    const T *src = arrays[k].data();
    for (int64_t r = 0; r < n; ++r)
      std::copy(src + r * size, src + (r + 1) * size, b.buf.data() + r * perExample + infos[k].offset);
  }
  b.data = b.buf.data();
  return b;
}

// The params (a dict name -> array of the declared shape) as one flat array of T. No copy when
// they are C-contiguous arrays of T lying one after another at their offsets in one buffer (as
// init_params, train and load_params return them): then that buffer is the flat array.
template <class T> struct Params {
  const T *data = nullptr;
  std::vector<T> buf;
  std::vector<py::object> keep;
  bool copied = false;
};

template <class T> Params<T> gatherParams(py::handle obj, const Model &m) {
  Params<T> p;
  auto infos = m.params();
  if (infos.empty() && (obj.is_none() || (py::isinstance<py::dict>(obj) && py::len(obj) == 0))) return p;
  if (!py::isinstance<py::dict>(obj))
    throw py::type_error("params: expected a dict of arrays (name -> array), as init_params returns");
  py::dict d = py::reinterpret_borrow<py::dict>(obj);
  for (auto item : d) {
    std::string key = py::str(item.first);
    bool known = false;
    for (auto &i : infos) known = known || i.name == key;
    if (!known) throw py::value_error("unknown param '" + key + "' (the program's params: " + names(infos) + ")");
  }
  std::vector<py::array_t<T>> arrays;
  bool adjacent = true;
  const T *base = nullptr;
  for (auto &info : infos) {
    if (!d.contains(info.name)) throw py::value_error("missing param '" + info.name + "'");
    py::object v = d[py::str(info.name)];
    const std::string what = "param '" + info.name + "'";
    py::array_t<T> a = asArray<T>(v, what);
    bool ok = a.ndim() == info.shape.rank();
    for (int k = 0; ok && k < info.shape.rank(); ++k) ok = a.shape(k) == info.shape[k];
    if (!ok)
      throw py::value_error(what + ": expected shape " + shapeText(info.shape.dims) + ", got " +
                            shapeText(py::array(a)));
    if (!a.is(v)) adjacent = false;
    if (adjacent) {
      if (!base) base = a.data() - info.offset;
      else if (a.data() != base + info.offset) adjacent = false;
    }
    arrays.push_back(a);
    p.keep.push_back(a);
  }
  if (adjacent) {
    p.data = base;
    return p;
  }
  p.copied = true;
  p.buf.resize(static_cast<size_t>(m.paramCount()));
  for (size_t k = 0; k < infos.size(); ++k)
    std::copy(arrays[k].data(), arrays[k].data() + infos[k].shape.numel(), p.buf.data() + infos[k].offset);
  p.data = p.buf.data();
  return p;
}

// A flat buffer of T and a dict of views into it, one per tensor.
template <class T> py::dict paramDict(const Model &m, const py::array_t<T> &flat) {
  py::dict d;
  for (auto &i : m.params()) d[py::str(i.name)] = viewOf<T>(flat, i.offset, i.shape.dims);
  return d;
}

template <class T> py::array_t<T> flatFrom(const std::vector<double> &v) {
  py::array_t<T> a(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), a.mutable_data());
  return a;
}

bool isF64(const Model &m) { return m.dtype() == DType::F64; }

// Calls f<float> or f<double> by the model's dtype.
template <class F> auto byDtype(const Model &m, F &&f) {
  return isF64(m) ? f(0.0) : f(0.0f);
}

template <class T> std::vector<double> toDouble(const T *p, int64_t n) {
  return p ? std::vector<double>(p, p + n) : std::vector<double>(static_cast<size_t>(std::max<int64_t>(n, 0)), 0.0);
}

// n when neither inputs nor targets gave one: a program without inputs and targets is one example.
int64_t batchOf(int64_t n) { return n < 0 ? 1 : n; }

py::tuple lossAndGrad(const ModelPtr &mp, py::handle params, py::handle inputs, py::handle targets, int threads,
                      bool stats) {
  const Model &m = *mp;
  if (!m.hasLoss()) throw py::value_error("loss_and_grad: the program has no loss");
  if (threads < 1) throw py::value_error("threads must be at least 1, got " + std::to_string(threads));
  return byDtype(m, [&](auto zero) -> py::tuple {
    using T = decltype(zero);
    int64_t n = -1;
    Params<T> P = gatherParams<T>(params, m);
    Batch<T> X = gather<T>(inputs, m.inputs(), m.inputCount(), "input", n, false);
    Batch<T> Y = gather<T>(targets, m.targets(), m.targetCount(), "target", n, true);
    n = batchOf(n);
    const int64_t np = m.paramCount(), ni = m.inputCount(), nt = m.targetCount();
    py::array_t<T> G(static_cast<py::ssize_t>(np));
    T *g = G.mutable_data();
    double loss = 0;
    std::string error;
    {
      py::gil_scoped_release release;
      if (m.engine() == Engine::Interp) {
        std::vector<double> grads;
        loss = m.lossAndGradient(toDouble(P.data, np), toDouble(X.data, n * ni).data(),
                                 toDouble(Y.data, n * nt).data(), n, grads);
        std::copy(grads.begin(), grads.end(), g);
      } else if (n == 0) { // as Model::lossAndGradient: no examples, loss and gradient 0
        std::fill(g, g + np, T(0));
      } else {
        // As Model::lossAndGradient: contiguous parts, the parts' means weighted by their share.
        int parts = static_cast<int>(std::min<int64_t>(threads, n));
        std::vector<std::vector<T>> Gk(static_cast<size_t>(parts - 1), std::vector<T>(static_cast<size_t>(np)));
        std::vector<double> L(static_cast<size_t>(parts));
        std::vector<std::string> errors(static_cast<size_t>(parts));
        auto work = [&](int k) {
          int64_t b = n * k / parts, e = n * (k + 1) / parts;
          T *gk = k == 0 ? g : Gk[static_cast<size_t>(k - 1)].data();
          try {
            T *W = threadWorkspace<T>(m.workspaceSize(e - b));
            auto r = m.tryLossAndGradientRaw<T>(P.data, X.data ? X.data + b * ni : nullptr,
                                                Y.data ? Y.data + b * nt : nullptr, e - b, gk, W);
            if (r) L[static_cast<size_t>(k)] = static_cast<double>(*r);
            else errors[static_cast<size_t>(k)] = r.error().message;
          } catch (const std::exception &ex) {
            errors[static_cast<size_t>(k)] = ex.what();
          }
        };
        std::vector<std::thread> pool;
        for (int k = 1; k < parts; ++k) pool.emplace_back(work, k);
        work(0);
        for (auto &t : pool) t.join();
        for (auto &e : errors)
          if (!e.empty() && error.empty()) error = e;
        if (parts == 1) loss = L[0];
        else {
          std::vector<double> acc(static_cast<size_t>(np), 0.0);
          for (int k = 0; k < parts; ++k) {
            double w = static_cast<double>(n * (k + 1) / parts - n * k / parts) / static_cast<double>(n);
            loss += w * L[static_cast<size_t>(k)];
            const T *gk = k == 0 ? g : Gk[static_cast<size_t>(k - 1)].data();
            for (int64_t j = 0; j < np; ++j) acc[static_cast<size_t>(j)] += w * static_cast<double>(gk[j]);
          }
          for (int64_t j = 0; j < np; ++j) g[j] = static_cast<T>(acc[static_cast<size_t>(j)]);
        }
      }
    }
    if (!error.empty()) throw std::runtime_error(error);
    py::tuple r = stats ? py::make_tuple(loss, paramDict<T>(m, G), py::make_tuple(P.copied, X.copied, Y.copied))
                        : py::make_tuple(loss, paramDict<T>(m, G));
    return r;
  });
}

py::object forward(const ModelPtr &mp, py::handle params, py::handle inputs, bool stats) {
  const Model &m = *mp;
  return byDtype(m, [&](auto zero) -> py::object {
    using T = decltype(zero);
    int64_t n = -1;
    Params<T> P = gatherParams<T>(params, m);
    Batch<T> X = gather<T>(inputs, m.inputs(), m.inputCount(), "input", n, false);
    n = batchOf(n);
    const int64_t np = m.paramCount(), ni = m.inputCount(), no = m.outputCount();
    py::array_t<T> Y(static_cast<py::ssize_t>(n * no));
    T *y = Y.mutable_data();
    std::string error;
    {
      py::gil_scoped_release release;
      try {
        if (m.engine() == Engine::Interp) {
          std::vector<double> out = m.forward(toDouble(P.data, np), toDouble(X.data, n * ni).data(), n);
          std::copy(out.begin(), out.end(), y);
        } else if (n > 0) {
          // In chunks whose work space stays under 256 MiB (a convnet's test set in one piece is
          // gigabytes), as Model::forward.
          const int64_t chunk = m.chunkRows(n);
          T *W = threadWorkspace<T>(m.workspaceSize(std::min(n, chunk)));
          for (int64_t b = 0; b < n && error.empty(); b += chunk) {
            auto r = m.tryForwardRaw<T>(P.data, X.data ? X.data + b * ni : nullptr, std::min(chunk, n - b), y + b * no, W);
            if (!r) error = r.error().message;
          }
        }
      } catch (const std::exception &ex) {
        error = ex.what();
      }
    }
    if (!error.empty()) throw std::runtime_error(error);
    py::dict out;
    for (auto &o : m.outputs()) out[py::str(o.name)] = viewOf<T>(Y, o.offset, o.shape.dims, std::make_pair(n, no));
    if (stats) return py::make_tuple(out, py::make_tuple(P.copied, X.copied));
    return out;
  });
}

// A statistic that was not computed (NaN) as None.
py::object opt(double v) { return std::isnan(v) ? py::none() : py::object(py::float_(v)); }

py::dict statsDict(const EpochStats &s) {
  py::dict d;
  d["epoch"] = s.epoch;
  d["train_loss"] = s.trainLoss;
  d["valid_loss"] = opt(s.validLoss);
  d["valid_accuracy"] = opt(s.validAccuracy);
  d["test_loss"] = opt(s.testLoss);
  d["test_accuracy"] = opt(s.testAccuracy);
  d["seconds"] = s.seconds;
  d["elapsed"] = s.elapsed;
  d["examples_per_second"] = s.examplesPerSecond;
  d["lr"] = s.lr;
  return d;
}

void writeStderr(const std::string &s) {
  py::module_::import("sys").attr("stderr").attr("write")(s);
  py::module_::import("sys").attr("stderr").attr("flush")();
}

// Raised from a callback to stop training (Ctrl-C, an exception in on_epoch).
struct Stop {};

Dataset toDataset(const Model &m, py::handle inputs, py::handle targets, const char *what) {
  int64_t n = -1;
  Dataset d;
  Batch<double> X = gather<double>(inputs, m.inputs(), m.inputCount(), "input", n, false);
  Batch<double> Y = gather<double>(targets, m.targets(), m.targetCount(), "target", n, true);
  if (m.targets().empty() && m.inputs().empty()) n = 1;
  if (n < 0) n = 0;
  (void)what;
  d.rows = n;
  d.inputs = toDouble(X.data, n * m.inputCount());
  d.targets = toDouble(Y.data, n * m.targetCount());
  d.classTargets = Y.classTargets;
  return d;
}

py::tuple trainModel(const ModelPtr &mp, py::handle inputs, py::handle targets, py::handle params, int epochs,
                int64_t batch, const std::string &optimizer, std::optional<double> lr,
                const std::string &schedule, uint64_t seed,
                int threads, double validFraction, py::handle testInputs, py::handle testTargets,
                bool verbose, py::object onEpoch) {
  const Model &m = *mp;
  if (!m.hasLoss()) throw py::value_error("train: the program has no loss");
  auto kind = parseOptimizer(optimizer);
  if (!kind) throw py::value_error("optimizer: expected 'sgd', 'momentum' or 'adam', got '" + optimizer + "'");
  TrainOptions o;
  o.epochs = epochs;
  o.batch = batch;
  o.optimizer.kind = *kind;
  o.optimizer.lr = lr ? *lr : defaultLearningRate(*kind);
  auto sched = parseLrSchedule(schedule);
  if (!sched) throw py::value_error("lr_schedule: expected 'constant', 'cosine' or 'linear', got '" + schedule + "'");
  o.schedule = *sched;
  o.seed = seed;
  o.threads = threads;
  o.validFraction = validFraction;
  std::string bad = checkTrainOptions(o);
  if (!bad.empty()) throw py::value_error(bad);
  Dataset data = toDataset(m, inputs, targets, "data");
  std::optional<Dataset> test;
  if (!testInputs.is_none() || !testTargets.is_none()) {
    test = toDataset(m, testInputs, testTargets, "test");
    o.test = &*test;
  }
  std::vector<double> init;
  if (params.is_none()) init = m.initParams(seed);
  else
    init = byDtype(m, [&](auto zero) {
      using T = decltype(zero);
      Params<T> P = gatherParams<T>(params, m);
      return toDouble(P.data, m.paramCount());
    });

  // The CLI's progress: an epoch line for every epoch up to 100 of them, beyond that for the
  // first, the last and every k-th (k 1, 2 or 5 times a power of ten); the live batch line only
  // on a terminal.
  int64_t stride = 1;
  for (int64_t power = 1; epochs / stride > 100; power *= 10)
    for (int64_t k : {1, 2, 5})
      if (epochs / stride > 100) stride = k * power;
  bool tty = false;
  if (verbose) {
    try {
      tty = py::module_::import("sys").attr("stderr").attr("isatty")().cast<bool>();
    } catch (...) {
    }
    const RowSplit split = splitRows(data.rows, o.validFraction, o.seed);
    const int64_t b = std::min<int64_t>(o.batch, std::max<int64_t>(1, static_cast<int64_t>(split.train.size())));
    std::ostringstream s;
    s << "training on " << split.train.size() << " examples";
    if (!split.valid.empty()) s << " (" << split.valid.size() << " held out)";
    s << ": " << optimizerName(*kind) << ", lr " << o.optimizer.lr;
    if (o.schedule != LrSchedule::Constant) s << " (" << lrScheduleName(o.schedule) << " decay)";
    s << ", batch " << b << ", " << epochs
      << " epoch" << (epochs == 1 ? "" : "s") << ", seed " << seed << ", " << threads << " thread"
      << (threads == 1 ? "" : "s") << ", " << (m.engine() == Engine::Jit ? "jit" : "interp") << " "
      << (isF64(m) ? "f64" : "f32") << "\n";
    writeStderr(s.str());
  }
  std::optional<py::error_already_set> pending;
  auto lastDraw = std::chrono::steady_clock::time_point{};
  o.onBatch = [&](const BatchProgress &b) {
    auto now = std::chrono::steady_clock::now();
    if (now - lastDraw < std::chrono::milliseconds(100) && b.batch != 1) return;
    lastDraw = now;
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) {
      pending.emplace();
      throw Stop{};
    }
    if (verbose && tty) writeStderr("\r\033[K" + formatBatchLine(b));
  };
  o.onEpoch = [&](const EpochStats &s) {
    py::gil_scoped_acquire gil;
    try {
      if (verbose && (s.epoch == 1 || s.epoch == s.epochs || s.epoch % stride == 0))
        writeStderr(std::string(tty ? "\r\033[K" : "") + formatEpochLine(s, o.schedule != LrSchedule::Constant) + "\n");
      if (!onEpoch.is_none()) onEpoch(statsDict(s));
    } catch (py::error_already_set &e) {
      pending.emplace(std::move(e));
      throw Stop{};
    }
  };
  std::optional<Expected<TrainResult>> r;
  {
    py::gil_scoped_release release;
    try {
      r.emplace(nabla::train(m, data, init, o));
    } catch (const Stop &) {
    }
  }
  if (pending) throw std::move(*pending);
  if (!*r) throw std::runtime_error(r->error().message);
  TrainResult &res = **r;
  py::list history;
  for (auto &s : res.history) history.append(statsDict(s));
  py::dict result = byDtype(m, [&](auto zero) {
    using T = decltype(zero);
    return paramDict<T>(m, flatFrom<T>(res.params));
  });
  py::dict summary;
  summary["train_rows"] = res.trainRows;
  summary["valid_rows"] = res.validRows;
  summary["train_loss"] = opt(res.trainLoss);
  summary["train_accuracy"] = opt(res.trainAccuracy);
  summary["valid_loss"] = opt(res.validLoss);
  summary["valid_accuracy"] = opt(res.validAccuracy);
  summary["test_loss"] = opt(res.testLoss);
  summary["test_accuracy"] = opt(res.testAccuracy);
  summary["seconds"] = res.seconds;
  summary["examples_per_second"] = res.examplesPerSecond;
  return py::make_tuple(result, history, summary);
}

} // namespace

PYBIND11_MODULE(_nabla, mod) {
  mod.doc() = "nabla's compiled models (see the package nabla)";

  py::class_<Model, ModelPtr>(mod, "Model")
      .def_property_readonly("params", [](const Model &m) { return infoDict(m.params()); })
      .def_property_readonly("inputs", [](const Model &m) { return infoDict(m.inputs()); })
      .def_property_readonly("targets", [](const Model &m) { return infoDict(m.targets()); })
      .def_property_readonly("outputs", [](const Model &m) { return infoDict(m.outputs()); })
      .def_property_readonly("has_loss", &Model::hasLoss)
      .def_property_readonly("dtype", [](const Model &m) { return isF64(m) ? py::dtype::of<double>() : py::dtype::of<float>(); })
      .def_property_readonly("engine", [](const Model &m) { return m.engine() == Engine::Jit ? "jit" : "interp"; })
      .def_property_readonly("name", [](const Model &m) { return m.program().source.name; })
      .def("init_params", [](const Model &m, uint64_t seed) {
             return byDtype(m, [&](auto zero) {
               using T = decltype(zero);
               return paramDict<T>(m, flatFrom<T>(m.initParams(seed)));
             });
           }, py::arg("seed") = 0)
      .def("loss_and_grad", [](const ModelPtr &m, py::handle p, py::handle x, py::handle t, int threads) {
             return lossAndGrad(m, p, x, t, threads, false);
           }, py::arg("params"), py::arg("inputs") = py::none(), py::arg("targets") = py::none(), py::arg("threads") = 1)
      .def("_loss_and_grad_stats", [](const ModelPtr &m, py::handle p, py::handle x, py::handle t) {
             return lossAndGrad(m, p, x, t, 1, true);
           })
      .def("forward", [](const ModelPtr &m, py::handle p, py::handle x) { return forward(m, p, x, false); },
           py::arg("params"), py::arg("inputs") = py::none())
      .def("_forward_stats", [](const ModelPtr &m, py::handle p, py::handle x) { return forward(m, p, x, true); })
      .def("load_params", [](const Model &m, const std::string &path) {
             Expected<std::vector<double>> r = [&] {
               py::gil_scoped_release release;
               return loadParams(path, m.program());
             }();
             if (!r) throw py::value_error(r.error().message);
             if (!isF64(m)) {
               auto fits = checkParamsFitFloat32(*r, path, m.program());
               if (!fits) throw py::value_error(fits.error().message);
             }
             return byDtype(m, [&](auto zero) {
               using T = decltype(zero);
               return paramDict<T>(m, flatFrom<T>(*r));
             });
           }, py::arg("path"))
      .def("_format_params", [](const Model &m, py::handle params) {
             std::vector<double> flat = byDtype(m, [&](auto zero) {
               using T = decltype(zero);
               Params<T> P = gatherParams<T>(params, m);
               return toDouble(P.data, m.paramCount());
             });
             return formatParams(m.program(), flat);
           })
      .def("_train", &trainModel);

  mod.def("_compile", [](const std::string &pathOrSource, bool isFile, const std::string &name,
                         const std::string &dtype, const std::string &engine, int optLevel) {
    CompileOptions o;
    if (dtype == "f32" || dtype == "float32") o.dtype = DType::F32;
    else if (dtype == "f64" || dtype == "float64") o.dtype = DType::F64;
    else throw py::value_error("dtype: expected 'f32' or 'f64', got '" + dtype + "'");
    if (engine == "jit") o.engine = Engine::Jit;
    else if (engine == "interp") o.engine = Engine::Interp;
    else throw py::value_error("engine: expected 'jit' or 'interp', got '" + engine + "'");
    if (optLevel < 0 || optLevel > 3) throw py::value_error("opt_level: expected 0 to 3, got " + std::to_string(optLevel));
    std::optional<Expected<Model>> r;
    {
      py::gil_scoped_release release;
      r.emplace(isFile ? Model::compileFile(pathOrSource, o) : Model::compileString(pathOrSource, name, o));
    }
    if (!*r) raiseCompileError(r->error().message);
    return std::make_shared<Model>(std::move(**r));
  });
}
