// Trainer: mini-batch training on the JIT's raw entry points (or, for the interpreter engine,
// the f64 Model API), with a persistent pool of worker threads for the batch split. Everything a
// step needs is allocated before the first step.
#include "Trainer.h"

#include "Model.h"
#include "Program.h"
#include "Random.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <system_error>
#include <thread>
#include <tuple>

namespace nabla {

__extension__ typedef unsigned __int128 Uint128;

uint64_t uniformBelow(Rng &rng, uint64_t n) {
  // D. Lemire, "Fast random integer generation in an interval" (2019): the high word of
  // next() * n, rejecting the 2^64 mod n low words that would make some results more likely.
  Uint128 m = static_cast<Uint128>(rng.next()) * n;
  uint64_t low = static_cast<uint64_t>(m);
  if (low < n) {
    const uint64_t threshold = (0 - n) % n;
    while (low < threshold) {
      m = static_cast<Uint128>(rng.next()) * n;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

void shuffleRows(std::vector<int64_t> &rows, Rng &rng) {
  for (size_t i = rows.size(); i > 1; --i) {
    size_t j = static_cast<size_t>(uniformBelow(rng, i));
    std::swap(rows[i - 1], rows[j]);
  }
}

RowSplit splitRows(int64_t n, double validFraction, uint64_t seed) {
  RowSplit s;
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[static_cast<size_t>(i)] = i;
  if (!(validFraction > 0) || n == 0) {
    s.train = std::move(perm);
    return s;
  }
  Rng rng(seed ^ kSplitStream);
  shuffleRows(perm, rng);
  int64_t held = std::llround(static_cast<double>(n) * validFraction);
  held = std::clamp<int64_t>(held, 1, n);
  s.valid.assign(perm.begin(), perm.begin() + held);
  s.train.assign(perm.begin() + held, perm.end());
  std::sort(s.valid.begin(), s.valid.end());
  std::sort(s.train.begin(), s.train.end());
  return s;
}

Dataset selectRows(const Dataset &d, const std::vector<int64_t> &rows, int64_t ni, int64_t nt) {
  Dataset r;
  r.rows = static_cast<int64_t>(rows.size());
  r.classTargets = d.classTargets;
  r.hasTargets = d.hasTargets;
  // IDX pixels stay bytes (Dataset::inputBytes), the other data doubles.
  const bool bytes = !d.inputBytes.empty();
  (bytes ? r.inputBytes.reserve(rows.size() * static_cast<size_t>(ni))
         : r.inputs.reserve(rows.size() * static_cast<size_t>(ni)));
  if (d.hasTargets) r.targets.reserve(rows.size() * static_cast<size_t>(nt));
  for (int64_t i : rows) {
    if (bytes)
      r.inputBytes.insert(r.inputBytes.end(), d.inputBytes.begin() + i * ni, d.inputBytes.begin() + (i + 1) * ni);
    else
      r.inputs.insert(r.inputs.end(), d.inputs.begin() + i * ni, d.inputs.begin() + (i + 1) * ni);
    if (d.hasTargets)
      r.targets.insert(r.targets.end(), d.targets.begin() + i * nt, d.targets.begin() + (i + 1) * nt);
  }
  return r;
}

AccuracyRule accuracyRule(const Model &m, const Dataset &d) {
  AccuracyRule r;
  const Program &p = m.program();
  if (!d.hasTargets || p.targets.size() != 1) return r;
  const Shape &t = p.targets[0].shape;
  const TensorInfo *out = nullptr;
  std::vector<TensorInfo> outs = m.outputs();
  for (const TensorInfo &o : outs)
    if (o.shape == t) {
      out = &o;
      break;
    }
  if (!out) return r;
  if (d.classTargets) {
    r = {AccuracyKind::Class, out->offset, t.numel()};
    return r;
  }
  if (t.numel() != 1) return r;
  for (double v : d.targets)
    if (v != 0 && v != 1) return r;
  r = {AccuracyKind::Binary, out->offset, 1};
  return r;
}

namespace {

template <class T>
int64_t countCorrect(const AccuracyRule &r, const T *outputs, int64_t no, const T *targets,
                     int64_t nt, int64_t n) {
  int64_t hits = 0;
  for (int64_t e = 0; e < n; ++e) {
    const T *y = outputs + e * no + r.outputOffset;
    const T *t = targets + e * nt;
    if (r.kind == AccuracyKind::Class)
      hits += std::max_element(y, y + r.width) - y == std::max_element(t, t + r.width) - t;
    else if (r.kind == AccuracyKind::Binary)
      hits += (y[0] >= T(0.5)) == (t[0] >= T(0.5));
  }
  return hits;
}

using Clock = std::chrono::steady_clock;
double secondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// A fixed set of worker threads that run parts 1..N of a job while the caller runs part 0.
// A thread the system refuses (a process limit, `ulimit -u`; a pids cgroup; address space for its
// stack) is not an error: the pool keeps the threads that did start, threads() says how many, and
// the caller splits its work among that many parts (possibly just its own).
class PartPool {
public:
  PartPool(int workers, std::function<void(int)> job) : job_(std::move(job)) {
    for (int k = 1; k <= workers; ++k) {
      try {
        threads_.emplace_back([this, k] { loop(k); });
      } catch (const std::system_error &) {
        break; // the threads started so far wait for run() or for the destructor, as usual
      }
    }
  }
  int threads() const { return static_cast<int>(threads_.size()); }
  ~PartPool() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    start_.notify_all();
    for (auto &t : threads_) t.join();
  }
  void run() {
    if (threads_.empty()) return job_(0);
    {
      std::lock_guard<std::mutex> l(mu_);
      pending_ = static_cast<int>(threads_.size());
      ++generation_;
    }
    start_.notify_all();
    job_(0);
    std::unique_lock<std::mutex> l(mu_);
    done_.wait(l, [&] { return pending_ == 0; });
  }

private:
  void loop(int k) {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> l(mu_);
        start_.wait(l, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
      }
      job_(k);
      bool last;
      {
        std::lock_guard<std::mutex> l(mu_);
        last = --pending_ == 0;
      }
      if (last) done_.notify_one();
    }
  }
  std::function<void(int)> job_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable start_, done_;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

std::string describeNumber(double v) {
  return std::isnan(v) ? "nan" : v > 0 ? "inf" : v < 0 ? "-inf" : fmt::format("{}", v);
}

// See Run's constructor: about a second of evaluation work.
constexpr double kLossOnlyWork = 4e9;

template <class T> class Run {
public:
  Run(const Model &m, const Dataset &train, const Dataset &valid, const Dataset *test,
      const std::vector<double> &init, const TrainOptions &o, const AccuracyRule &acc,
      const AccuracyRule &testAcc)
      : m_(m), o_(o), acc_(acc), testAcc_(testAcc), jit_(m.engine() == Engine::Jit), ni_(m.inputCount()),
        nt_(m.targetCount()), no_(m.outputCount()), np_(m.paramCount()), nTrain_(train.rows),
        nValid_(valid.rows), nTest_(test ? test->rows : 0), opt_(o.optimizer, np_) {
    auto conv = [](const auto &v) { return std::vector<T>(v.begin(), v.end()); };
    // The data in the model's dtype, converted once (IDX pixels straight from their bytes).
    auto convInputs = [&](const Dataset &d) { return d.inputBytes.empty() ? conv(d.inputs) : conv(d.inputBytes); };
    P_ = conv(init);
    G_.assign(static_cast<size_t>(np_), T(0));
    Xtr_ = convInputs(train), Ytr_ = conv(train.targets);
    Xva_ = convInputs(valid), Yva_ = conv(valid.targets);
    if (test) Xte_ = convInputs(*test), Yte_ = conv(test->targets);
    const int64_t nEval = std::max({nTrain_, nValid_, nTest_});
    const int64_t batch = std::min<int64_t>(o.batch, nTrain_);
    bx_.assign(static_cast<size_t>(batch * ni_), T(0));
    by_.assign(static_cast<size_t>(batch * nt_), T(0));
    parts_ = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(o.threads, batch)));
    // Losses and accuracies over the whole data are computed in chunks whose work space stays
    // under 256 MiB (a convnet's im2col copies take about a megabyte an example, so chunks of
    // 8192 examples had train holding 14 GB); never below the batch, which training needs anyway.
    evalChunk_ = std::max<int64_t>(batch, jit_ ? m.chunkRows(8192) : 8192);
    if (jit_ && parts_ > 1) {
      // The threads first: the parts are as many as the threads that could be started, and each
      // part's work space is sized for its share of the batch.
      pool_ = std::make_unique<PartPool>(parts_ - 1, [this](int k) { part(k); });
      parts_ = pool_->threads() + 1;
      if (parts_ == 1) pool_.reset();
    }
    if (jit_) {
      const int64_t partRows = (batch + parts_ - 1) / parts_;
      for (int k = 0; k < parts_; ++k) {
        int64_t rows = k == 0 ? std::max(partRows, std::min(evalChunk_, nEval)) : partRows;
        W_.emplace_back(static_cast<size_t>(m.workspaceSize(rows)), T(0));
        if (parts_ > 1) Gk_.emplace_back(static_cast<size_t>(np_), T(0));
      }
      L_.assign(static_cast<size_t>(parts_), T(0));
    }
    // Evaluating a loss through the gradient costs a gradient step an example. When the run's
    // evaluations (held-out and test data every epoch, the training rows at the end) come to
    // more than kLossOnlyWork loop iterations, seconds of work against the 0.1-0.5 s that
    // compiling the loss alone takes, they go through the loss-only program (compiled at the
    // first evaluation, so that training starts as soon as before).
    if (jit_) {
      const double rows = static_cast<double>(nValid_ + nTest_) * o.epochs + static_cast<double>(nTrain_);
      wantLossOnly_ = rows * m.gradientWorkPerExample() > kLossOnlyWork;
    }
    if (acc_.kind != AccuracyKind::None || testAcc_.kind != AccuracyKind::None)
      out_.assign(static_cast<size_t>(std::min(evalChunk_, nEval) * no_), T(0));
    order_.resize(static_cast<size_t>(nTrain_));
    for (int64_t i = 0; i < nTrain_; ++i) order_[static_cast<size_t>(i)] = i;
  }

  Expected<TrainResult> run() {
    TrainResult r;
    r.trainRows = nTrain_;
    r.validRows = nValid_;
    r.accuracy = acc_;
    Rng shuffler(o_.seed ^ kShuffleStream);
    const int64_t batch = std::min<int64_t>(o_.batch, nTrain_);
    const int64_t batches = (nTrain_ + batch - 1) / batch;
    const Clock::time_point start = Clock::now();
    double trainSeconds = 0;
    int64_t trained = 0;
    for (int epoch = 1; epoch <= o_.epochs; ++epoch) {
      const Clock::time_point epochStart = Clock::now();
      shuffleRows(order_, shuffler);
      double lossSum = 0; // sum over examples of the loss
      int64_t done = 0;
      for (int64_t b = 0; b < batches; ++b) {
        const int64_t n = std::min(batch, nTrain_ - done);
        gather(done, n);
        const double loss = lossAndGradient(bx_.data(), by_.data(), n);
        if (o_.schedule != LrSchedule::Constant)
          opt_.setLearningRate(scheduledLearningRate(o_.schedule, o_.optimizer.lr,
                                                     (epoch - 1) * batches + b, o_.epochs * batches));
        // The gradient's check is part of the update's pass; a non-finite one ends the run
        // (the params it touched are not returned).
        if (!std::isfinite(loss) || !opt_.step(P_.data(), G_.data()))
          return Error{divergence(epoch, b + 1, batches, loss)};
        lossSum += loss * static_cast<double>(n);
        done += n;
        if (o_.onBatch) {
          BatchProgress p;
          p.epoch = epoch, p.epochs = o_.epochs, p.batch = b + 1, p.batches = batches;
          p.examples = done, p.examplesPerEpoch = nTrain_;
          p.trainLoss = lossSum / static_cast<double>(done);
          const double t = secondsSince(epochStart);
          p.examplesPerSecond = t > 0 ? static_cast<double>(done) / t : 0;
          const double elapsed = secondsSince(start);
          const double fraction = (epoch - 1 + static_cast<double>(done) / static_cast<double>(nTrain_)) / o_.epochs;
          p.secondsLeft = elapsed / fraction - elapsed;
          o_.onBatch(p);
        }
      }
      // An update that made a param non-finite shows in the next batch's loss, except the last
      // update of all: the params are checked after each epoch's last update, so that no epoch
      // reports on, and no run returns, params that cannot be used (or saved: JSON has no inf).
      if (std::string bad = nonFiniteParam(); !bad.empty())
        return Error{divergenceAfterUpdate(epoch, batches, bad)};
      const double stepSeconds = secondsSince(epochStart);
      trainSeconds += stepSeconds;
      trained += nTrain_;
      EpochStats s;
      s.epoch = epoch, s.epochs = o_.epochs;
      s.trainLoss = lossSum / static_cast<double>(nTrain_);
      s.lr = opt_.config().lr;
      if (nValid_ > 0) std::tie(s.validLoss, s.validAccuracy) = evaluate(acc_, Xva_.data(), Yva_.data(), nValid_);
      if (nTest_ > 0) std::tie(s.testLoss, s.testAccuracy) = evaluate(testAcc_, Xte_.data(), Yte_.data(), nTest_);
      s.seconds = secondsSince(epochStart);
      s.elapsed = secondsSince(start);
      s.examplesPerSecond = stepSeconds > 0 ? static_cast<double>(nTrain_) / stepSeconds : 0;
      s.secondsLeft = s.elapsed / epoch * (o_.epochs - epoch);
      r.history.push_back(s);
      if (o_.onEpoch) o_.onEpoch(s);
    }
    r.seconds = secondsSince(start);
    r.examplesPerSecond = trainSeconds > 0 ? static_cast<double>(trained) / trainSeconds : 0;
    std::tie(r.trainLoss, r.trainAccuracy) = evaluate(acc_, Xtr_.data(), Ytr_.data(), nTrain_);
    if (!r.history.empty()) {
      r.validLoss = r.history.back().validLoss;
      r.validAccuracy = r.history.back().validAccuracy;
      r.testLoss = r.history.back().testLoss;
      r.testAccuracy = r.history.back().testAccuracy;
    }
    r.testRows = nTest_;
    r.lossOnly = wantLossOnly_ && lossReady_;
    r.params.assign(P_.begin(), P_.end());
    return r;
  }

private:
  void gather(int64_t first, int64_t n) {
    for (int64_t e = 0; e < n; ++e) {
      const int64_t row = order_[static_cast<size_t>(first + e)];
      // (A program without inputs or targets has empty, null, arrays: no memcpy from null.)
      if (ni_) std::memcpy(bx_.data() + e * ni_, Xtr_.data() + row * ni_, static_cast<size_t>(ni_) * sizeof(T));
      if (nt_) std::memcpy(by_.data() + e * nt_, Ytr_.data() + row * nt_, static_cast<size_t>(nt_) * sizeof(T));
    }
  }

  // The mean loss over the n examples at X, Y and its gradient in G_, the batch split into
  // contiguous parts summed in part order (see Trainer.h).
  double lossAndGradient(const T *X, const T *Y, int64_t n) {
    if (!jit_) {
      Pd_.assign(P_.begin(), P_.end());
      Xd_.assign(X, X + n * ni_);
      Yd_.assign(Y, Y + n * nt_);
      double loss = m_.lossAndGradient(Pd_, Xd_.data(), Yd_.data(), n, Gd_);
      std::copy(Gd_.begin(), Gd_.end(), G_.begin());
      return loss;
    }
    const int parts = static_cast<int>(std::min<int64_t>(parts_, n));
    if (parts == 1 && parts_ == 1)
      return static_cast<double>(m_.lossAndGradientRaw<T>(P_.data(), X, Y, n, G_.data(), W_[0].data()));
    curX_ = X, curY_ = Y, curN_ = n, curParts_ = parts;
    pool_->run();
    double loss = 0;
    T *__restrict g = G_.data();
    for (int k = 0; k < parts; ++k) {
      const int64_t rows = n * (k + 1) / parts - n * k / parts;
      const T w = static_cast<T>(rows) / static_cast<T>(n);
      const T *__restrict gk = Gk_[static_cast<size_t>(k)].data();
      if (k == 0)
        for (int64_t j = 0; j < np_; ++j) g[j] = w * gk[j];
      else
        for (int64_t j = 0; j < np_; ++j) g[j] += w * gk[j];
      loss += static_cast<double>(rows) / static_cast<double>(n) * static_cast<double>(L_[static_cast<size_t>(k)]);
    }
    return loss;
  }

  void part(int k) {
    if (k >= curParts_) return;
    const int64_t b = curN_ * k / curParts_, e = curN_ * (k + 1) / curParts_;
    L_[static_cast<size_t>(k)] = m_.lossAndGradientRaw<T>(P_.data(), curX_ + b * ni_, curY_ + b * nt_, e - b,
                                                          Gk_[static_cast<size_t>(k)].data(),
                                                          W_[static_cast<size_t>(k)].data());
  }

  // Whether evaluations go through the loss-only program: compiled on the first call that wants
  // it, its work space fitted into part 0's; if it cannot be compiled, the gradient serves.
  bool lossOnly() {
    if (!wantLossOnly_) return false;
    if (!lossReady_) {
      lossReady_ = true;
      if (!m_.prepareLossOnly()) {
        wantLossOnly_ = false;
        return false;
      }
      const int64_t rows = std::min(evalChunk_, std::max({nTrain_, nValid_, nTest_}));
      const size_t need = static_cast<size_t>(m_.lossWorkspaceSize(rows));
      if (W_[0].size() < need) W_[0].resize(need, T(0));
      out_.resize(static_cast<size_t>(rows * no_));
    }
    return true;
  }

  // The loss over n examples and, with a rule, the accuracy (else NaN): one pass of the loss-only
  // program, or the gradient's loss and a forward pass.
  std::pair<double, double> evaluate(const AccuracyRule &rule, const T *X, const T *Y, int64_t n) {
    const bool acc = rule.kind != AccuracyKind::None;
    if (!(jit_ && lossOnly()))
      return {evalLoss(X, Y, n), acc ? evalAccuracy(rule, X, Y, n) : kNoValue};
    double sum = 0;
    int64_t hits = 0;
    for (int64_t first = 0; first < n; first += evalChunk_) {
      const int64_t c = std::min(evalChunk_, n - first);
      sum += static_cast<double>(m_.lossRaw<T>(P_.data(), X + first * ni_, Y + first * nt_, c, out_.data(),
                                               W_[0].data())) * static_cast<double>(c);
      if (acc) hits += countCorrect<T>(rule, out_.data(), no_, Y + first * nt_, nt_, c);
    }
    return {sum / static_cast<double>(n), acc ? static_cast<double>(hits) / static_cast<double>(n) : kNoValue};
  }

  // The mean loss over n examples, in chunks, single-threaded (uses G_ as scratch).
  double evalLoss(const T *X, const T *Y, int64_t n) {
    double sum = 0;
    for (int64_t first = 0; first < n; first += evalChunk_) {
      const int64_t c = std::min(evalChunk_, n - first);
      double l;
      if (jit_) {
        l = static_cast<double>(m_.lossAndGradientRaw<T>(P_.data(), X + first * ni_, Y + first * nt_, c,
                                                         G_.data(), W_[0].data()));
      } else {
        Pd_.assign(P_.begin(), P_.end());
        Xd_.assign(X + first * ni_, X + (first + c) * ni_);
        Yd_.assign(Y + first * nt_, Y + (first + c) * nt_);
        l = m_.lossAndGradient(Pd_, Xd_.data(), Yd_.data(), c, Gd_);
      }
      sum += l * static_cast<double>(c);
    }
    return sum / static_cast<double>(n);
  }

  double evalAccuracy(const AccuracyRule &rule, const T *X, const T *Y, int64_t n) {
    int64_t hits = 0;
    for (int64_t first = 0; first < n; first += evalChunk_) {
      const int64_t c = std::min(evalChunk_, n - first);
      if (jit_) {
        m_.forwardRaw<T>(P_.data(), X + first * ni_, c, out_.data(), W_[0].data());
      } else {
        Pd_.assign(P_.begin(), P_.end());
        Xd_.assign(X + first * ni_, X + (first + c) * ni_);
        std::vector<double> y = m_.forward(Pd_, Xd_.data(), c);
        std::copy(y.begin(), y.end(), out_.begin());
      }
      hits += countCorrect<T>(rule, out_.data(), no_, Y + first * nt_, nt_, c);
    }
    return static_cast<double>(hits) / static_cast<double>(n);
  }

  std::string divergence(int epoch, int64_t batch, int64_t batches, double loss) {
    const Program &p = m_.program();
    std::string what;
    if (!std::isfinite(loss)) {
      what = fmt::format("the loss is {}", describeNumber(loss));
    } else {
      for (const Decl &d : p.params) {
        const T *g = G_.data() + d.offset;
        for (int64_t i = 0; i < d.shape.numel() && what.empty(); ++i)
          if (!std::isfinite(g[i]))
            what = fmt::format("the gradient of {} is {} (element {}; the loss is {})", d.name,
                               describeNumber(static_cast<double>(g[i])), i, loss);
        if (!what.empty()) break;
      }
    }
    return fmt::format("{}: error: training stopped at epoch {}, batch {} of {}: {}; the params "
                       "diverged or the data has extreme values (try a smaller learning rate)",
                       p.source.name, epoch, batch, batches, what);
  }

  // "w is inf (element 3)" for the first param element that is not finite, else "".
  std::string nonFiniteParam() const {
    for (const Decl &d : m_.program().params) {
      const T *p = P_.data() + d.offset;
      for (int64_t i = 0; i < d.shape.numel(); ++i)
        if (!std::isfinite(p[i]))
          return fmt::format("{} is {}{}", d.name, describeNumber(static_cast<double>(p[i])),
                             d.shape.numel() == 1 ? "" : fmt::format(" (element {})", i));
    }
    return "";
  }

  std::string divergenceAfterUpdate(int epoch, int64_t batches, const std::string &what) const {
    return fmt::format("{}: error: training stopped at epoch {}, batch {} of {}: after the update, "
                       "param {}; the params diverged or the data has extreme values (try a smaller "
                       "learning rate)",
                       m_.program().source.name, epoch, batches, batches, what);
  }

  const Model &m_;
  const TrainOptions &o_;
  AccuracyRule acc_, testAcc_;
  bool jit_;
  int64_t ni_, nt_, no_, np_, nTrain_, nValid_, nTest_;
  Optimizer<T> opt_;
  std::vector<T> P_, G_, Xtr_, Ytr_, Xva_, Yva_, Xte_, Yte_, bx_, by_, out_, L_;
  std::vector<std::vector<T>> W_, Gk_;
  std::vector<int64_t> order_;
  int parts_ = 1;
  int64_t evalChunk_ = 8192;
  bool wantLossOnly_ = false, lossReady_ = false;
  std::unique_ptr<PartPool> pool_;
  // The job of the parts.
  const T *curX_ = nullptr, *curY_ = nullptr;
  int64_t curN_ = 0;
  int curParts_ = 1;
  // The interpreter engine's f64 interface.
  std::vector<double> Pd_, Xd_, Yd_, Gd_;
};

} // namespace

double accuracyOf(const AccuracyRule &r, const double *outputs, int64_t outputCount,
                  const double *targets, int64_t targetCount, int64_t n) {
  if (n == 0 || r.kind == AccuracyKind::None) return kNoValue;
  return static_cast<double>(countCorrect<double>(r, outputs, outputCount, targets, targetCount, n)) /
         static_cast<double>(n);
}

std::string checkTrainOptions(const TrainOptions &o) {
  if (o.epochs < 1) return fmt::format("--epochs must be at least 1, got {}", o.epochs);
  if (o.batch < 1) return fmt::format("--batch must be at least 1, got {}", o.batch);
  if (!(o.optimizer.lr > 0) || !std::isfinite(o.optimizer.lr))
    return fmt::format("--lr must be a positive number, got {}", o.optimizer.lr);
  if (!(o.validFraction >= 0 && o.validFraction < 1))
    return fmt::format("--valid must be a fraction in [0, 1), got {}", o.validFraction);
  if (o.threads < 1 || o.threads > 1024)
    return fmt::format("--threads must be between 1 and 1024, got {}", o.threads);
  return "";
}

Expected<TrainResult> train(const Model &m, const Dataset &data, const std::vector<double> &init,
                            const TrainOptions &o) {
  const std::string &name = m.program().source.name;
  if (std::string bad = checkTrainOptions(o); !bad.empty()) return Error{"error: " + bad};
  if (!m.hasLoss())
    return Error{fmt::format("{}: error: training needs a loss, but the program declares none "
                             "(add 'loss NAME = EXPR')", name)};
  if (!data.hasTargets)
    return Error{fmt::format("{}: error: the data has no target columns; training needs targets", name)};
  if (static_cast<int64_t>(init.size()) != m.paramCount())
    return Error{fmt::format("{}: error: {} initial params given; the program has {}", name,
                             init.size(), m.paramCount())};
  RowSplit split = splitRows(data.rows, o.validFraction, o.seed);
  if (split.train.empty())
    return Error{fmt::format("{}: error: --valid {} holds out all {} example{}, leaving none to "
                             "train on", name, o.validFraction, data.rows, data.rows == 1 ? "" : "s")};
  const int64_t ni = m.inputCount(), nt = m.targetCount();
  Dataset selected, va = selectRows(data, split.valid, ni, nt);
  if (!split.valid.empty()) selected = selectRows(data, split.train, ni, nt);
  const Dataset &tr = split.valid.empty() ? data : selected;
  AccuracyRule acc = accuracyRule(m, data);
  AccuracyRule testAcc;
  if (o.test) {
    if (!o.test->hasTargets)
      return Error{fmt::format("{}: error: the test data has no targets", name)};
    testAcc = accuracyRule(m, *o.test);
  }
  try {
    if (m.engine() == Engine::Interp || m.dtype() == DType::F64)
      return Run<double>(m, tr, va, o.test, init, o, acc, testAcc).run();
    return Run<float>(m, tr, va, o.test, init, o, acc, testAcc).run();
  } catch (const std::bad_alloc &) {
    return Error{fmt::format("{}: error: out of memory for {} examples", name, data.rows)};
  }
}

} // namespace nabla
