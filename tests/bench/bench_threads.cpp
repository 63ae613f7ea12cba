// Two cores (issue 14, item 6): one training step (loss and full gradient, f32) on one thread
// against the same step split across two, the way `nabla train --threads 2` splits a batch: two
// contiguous halves of the batch, each through the compiled gradient with its own work space and
// gradient, the second half on a worker thread, then the two mean gradients combined in part order
// (g = n0/n g0 + n1/n g1). Wall time (UseRealTime): CPU time would count one thread's share only.
//
//   build-bench/tests/bench/nabla_threads --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//
// /B/T: batch B on T threads. The speedup is the T=1 time over the T=2 time of the same B, in one
// run; it means something only on a machine whose second core is idle (tests/bench/README.md).
#include "Model.h"

#include <benchmark/benchmark.h>

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace nabla;

namespace {

Model compile(const std::string &name) {
  auto m = Model::compileFile(std::string(NABLA_BENCH_DIR) + "/" + name + ".nn");
  if (!m) throw std::runtime_error(m.error().message);
  return std::move(*m);
}

// A worker that runs one job a step while the calling thread runs its own, started once so that
// thread creation is not in the measured time.
class Worker {
public:
  explicit Worker(std::function<void()> job) : job_(std::move(job)), t_([this] { loop(); }) {}
  ~Worker() {
    {
      std::lock_guard<std::mutex> l(m_);
      quit_ = true;
    }
    cv_.notify_all();
    t_.join();
  }
  void start() {
    {
      std::lock_guard<std::mutex> l(m_);
      ++started_;
    }
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock<std::mutex> l(m_);
    cv_.wait(l, [&] { return finished_ == started_; });
  }

private:
  void loop() {
    std::unique_lock<std::mutex> l(m_);
    for (;;) {
      cv_.wait(l, [&] { return quit_ || started_ > finished_; });
      if (quit_) return;
      l.unlock();
      job_();
      l.lock();
      ++finished_;
      cv_.notify_all();
    }
  }
  std::function<void()> job_;
  std::mutex m_;
  std::condition_variable cv_;
  long started_ = 0, finished_ = 0;
  bool quit_ = false;
  std::thread t_;
};

void BM_Threads(benchmark::State &state, const char *name, double inputScale) {
  const int64_t batch = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  Model m = compile(name);
  std::vector<double> p0 = m.initParams(1);
  std::vector<float> P(p0.begin(), p0.end());
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(0, 1);
  std::vector<float> X(static_cast<size_t>(batch * m.inputCount())), Y(static_cast<size_t>(batch * m.targetCount()), 0);
  for (float &x : X) x = u(rng) * static_cast<float>(inputScale);
  const int64_t k = m.targetCount();
  for (int64_t i = 0; i < batch; ++i) Y[static_cast<size_t>(i * k + i % k)] = 1;
  const int64_t n0 = threads == 1 ? batch : batch / 2, n1 = batch - n0;
  std::vector<float> G0(static_cast<size_t>(m.paramCount())), G1(G0.size());
  std::vector<float> W0(static_cast<size_t>(m.workspaceSize(n0))), W1(static_cast<size_t>(m.workspaceSize(std::max<int64_t>(n1, 1))));
  float loss1 = 0;
  auto second = [&] {
    loss1 = m.lossAndGradientRaw<float>(P.data(), X.data() + n0 * m.inputCount(), Y.data() + n0 * k, n1,
                                        G1.data(), W1.data());
  };
  std::unique_ptr<Worker> worker;
  if (threads == 2) worker = std::make_unique<Worker>(second);
  const float w0 = static_cast<float>(n0) / static_cast<float>(batch), w1 = 1 - w0;
  for (auto _ : state) {
    if (worker) worker->start();
    float loss = m.lossAndGradientRaw<float>(P.data(), X.data(), Y.data(), n0, G0.data(), W0.data());
    if (worker) {
      worker->wait();
      for (size_t i = 0; i < G0.size(); ++i) G0[i] = w0 * G0[i] + w1 * G1[i];
      loss = w0 * loss + w1 * loss1;
    }
    benchmark::DoNotOptimize(loss);
    benchmark::DoNotOptimize(G0.data());
  }
}

} // namespace

BENCHMARK_CAPTURE(BM_Threads, wide, "wide", 1.0)
    ->Args({256, 1})->Args({256, 2})->Args({1024, 1})->Args({1024, 2})
    ->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Threads, convnet, "convnet", 255.0)
    ->Args({64, 1})->Args({64, 2})->Args({256, 1})->Args({256, 2})
    ->UseRealTime()->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
