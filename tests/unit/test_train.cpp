// Tests of training: optimizer updates against hand-computed steps, the seeded shuffle and split,
// the trainer's semantics (one full-batch sgd step is init - lr * gradient), bit-for-bit
// reproducibility with a fixed seed and thread count, saved params reproducing the reported
// held-out accuracy, divergence messages, option checks, the log and the plot. The throughput
// comparison with the bare JIT gradient is the hidden test "[bench]":
//   build/tests/nabla_tests "[bench]"
#include <catch2/catch.hpp>

#include "Model.h"
#include "Optimizer.h"
#include "ParamIO.h"
#include "Random.h"
#include "TrainReport.h"
#include "Trainer.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <set>
#include <time.h>

using namespace nabla;

namespace {

const std::string kSource = NABLA_SOURCE_DIR;

Model compileSample(const std::string &name, DType dt = DType::F32, Engine e = Engine::Jit) {
  CompileOptions o;
  o.dtype = dt;
  o.engine = e;
  auto m = Model::compileFile(kSource + "/samples/" + name, o);
  if (!m) FAIL(m.error().message);
  return std::move(*m);
}

Model compileText(const std::string &src, DType dt = DType::F64) {
  CompileOptions o;
  o.dtype = dt;
  auto m = Model::compileString(src, "test.nn", o);
  if (!m) FAIL(m.error().message);
  return std::move(*m);
}

Dataset loadSampleData(const Model &m, const std::string &csv) {
  auto d = loadCsv(kSource + "/samples/data/" + csv, m.program());
  if (!d) FAIL(d.error().message);
  return std::move(*d);
}

template <class T> std::vector<T> steps(OptimizerConfig c, T p0, std::vector<T> grads) {
  Optimizer<T> opt(c, 1);
  std::vector<T> out;
  T p = p0;
  for (T g : grads) {
    opt.step(&p, &g);
    out.push_back(p);
  }
  return out;
}

bool sameBits(const std::vector<double> &a, const std::vector<double> &b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

} // namespace

TEST_CASE("optimizers: hand-computed steps", "[train][optimizer]") {
  SECTION("sgd: p -= lr * g") {
    OptimizerConfig c{OptimizerKind::Sgd, 0.1};
    auto d = steps<double>(c, 1.0, {0.5, 0.5, -2.0});
    CHECK(d[0] == Approx(0.95).epsilon(1e-15));
    CHECK(d[1] == Approx(0.90).epsilon(1e-15));
    CHECK(d[2] == Approx(1.10).epsilon(1e-15));
    auto f = steps<float>(c, 1.0f, {0.5f, 0.5f, -2.0f});
    CHECK(f[2] == Approx(1.10).epsilon(1e-6));
  }
  SECTION("momentum 0.9: v = 0.9 v + g, p -= lr * v") {
    // v1 = 0.5, p1 = 0.95; v2 = 0.45 + 0.25 = 0.7, p2 = 0.88; v3 = 0.63 - 1 = -0.37, p3 = 0.917.
    OptimizerConfig c{OptimizerKind::Momentum, 0.1};
    auto d = steps<double>(c, 1.0, {0.5, 0.25, -1.0});
    CHECK(d[0] == Approx(0.95).epsilon(1e-15));
    CHECK(d[1] == Approx(0.88).epsilon(1e-15));
    CHECK(d[2] == Approx(0.917).epsilon(1e-15));
    auto f = steps<float>(c, 1.0f, {0.5f, 0.25f, -1.0f});
    CHECK(f[2] == Approx(0.917).epsilon(1e-6));
  }
  SECTION("adam 0.9, 0.999, 1e-8 with bias correction") {
    // Step 1: m = 0.05, v = 0.00025, m^ = 0.5, v^ = 0.25: p = 1 - 0.1 * 0.5 / (0.5 + 1e-8).
    // Step 2: m = -0.055, v = 0.00124975, m^ = -0.055 / 0.19, v^ = 0.00124975 / 0.001999.
    // Step 3: m = -0.0245, v = 0.00131100025, corrections 1 - 0.9^3 and 1 - 0.999^3.
    OptimizerConfig c{OptimizerKind::Adam, 0.1};
    auto d = steps<double>(c, 1.0, {0.5, -1.0, 0.25});
    CHECK(d[0] == Approx(0.9000000019999999).epsilon(1e-15));
    CHECK(d[1] == Approx(0.9366103542405653).epsilon(1e-14));
    CHECK(d[2] == Approx(0.950279420338976).epsilon(1e-14));
    auto f = steps<float>(c, 1.0f, {0.5f, -1.0f, 0.25f});
    CHECK(f[2] == Approx(0.950279420338976).epsilon(1e-6));
    // The first step has length lr whatever the gradient's scale.
    CHECK(steps<double>(c, 0.0, {1e-3})[0] == Approx(-0.1 * 1e-3 / (1e-3 + 1e-8)).epsilon(1e-15));
    CHECK(steps<double>(c, 0.0, {-250.0})[0] == Approx(0.1 * 250 / (250 + 1e-8)).epsilon(1e-15));
  }
  SECTION("many params at once, each independent") {
    OptimizerConfig c{OptimizerKind::Adam, 0.01};
    std::vector<double> p = {1, 2, 3}, g = {0.1, -0.2, 0};
    Optimizer<double> opt(c, 3);
    opt.step(p.data(), g.data());
    CHECK(p[0] == Approx(1 - 0.01 * 0.1 / (0.1 + 1e-8)).epsilon(1e-15));
    CHECK(p[1] == Approx(2 + 0.01 * 0.2 / (0.2 + 1e-8)).epsilon(1e-15));
    CHECK(p[2] == 3); // a zero gradient: m = v = 0, no move
    CHECK(opt.steps() == 1);
  }
  CHECK(parseOptimizer("adam") == OptimizerKind::Adam);
  CHECK(!parseOptimizer("Adam"));
  CHECK(defaultLearningRate(OptimizerKind::Sgd) == 0.1);
  CHECK(defaultLearningRate(OptimizerKind::Adam) == 0.001);
}

TEST_CASE("shuffle and split: seeded Fisher-Yates with the project's Rng", "[train]") {
  Rng a(5), b(5);
  for (uint64_t n : {1ull, 2ull, 3ull, 10ull, 1000ull, (1ull << 63) + 1}) {
    for (int i = 0; i < 50; ++i) {
      uint64_t x = uniformBelow(a, n);
      REQUIRE(x < n);
      REQUIRE(x == uniformBelow(b, n));
    }
  }
  // Uniform enough: each of 6 values about 1/6 of 60000 draws.
  Rng r(1);
  int counts[6] = {};
  for (int i = 0; i < 60000; ++i) ++counts[uniformBelow(r, 6)];
  for (int c : counts) CHECK(std::abs(c - 10000) < 400);

  std::vector<int64_t> rows(100);
  for (int i = 0; i < 100; ++i) rows[static_cast<size_t>(i)] = i;
  std::vector<int64_t> s1 = rows, s2 = rows;
  Rng r1(9), r2(9);
  shuffleRows(s1, r1);
  shuffleRows(s2, r2);
  CHECK(s1 == s2);
  CHECK(s1 != rows);
  std::vector<int64_t> sorted = s1;
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted == rows);
  // Pinned against an independent Python model of Rng, Lemire's method and Fisher-Yates.
  std::vector<int64_t> ten = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  Rng r0(0);
  shuffleRows(ten, r0);
  CHECK(ten == std::vector<int64_t>{7, 8, 3, 1, 5, 4, 2, 0, 9, 6});

  RowSplit s = splitRows(1797, 0.2, 0);
  CHECK(s.valid.size() == 359);
  CHECK(s.train.size() == 1438);
  CHECK(std::is_sorted(s.train.begin(), s.train.end()));
  CHECK(std::is_sorted(s.valid.begin(), s.valid.end()));
  CHECK(std::vector<int64_t>(s.valid.begin(), s.valid.begin() + 8) == std::vector<int64_t>{1, 7, 10, 12, 14, 29, 32, 34});
  std::set<int64_t> all(s.train.begin(), s.train.end());
  all.insert(s.valid.begin(), s.valid.end());
  CHECK(all.size() == 1797);
  CHECK(splitRows(1797, 0.2, 0).valid == s.valid); // fixed by the seed
  CHECK(splitRows(1797, 0.2, 1).valid != s.valid);
  CHECK(splitRows(10, 0, 0).valid.empty());
  CHECK(splitRows(10, 0.01, 0).valid.size() == 1); // at least one row when asked for a split
  CHECK(splitRows(4, 0.99, 0).train.empty());
}

TEST_CASE("trainer: one full-batch sgd epoch is init - lr * gradient", "[train]") {
  Model m = compileSample("hinton.nn", DType::F64);
  Dataset d = loadSampleData(m, "hinton.csv");
  std::vector<double> init = m.initParams(3), grads;
  m.lossAndGradient(init, d.inputs.data(), d.targets.data(), d.rows, grads);
  TrainOptions o;
  o.epochs = 1;
  o.batch = 100; // more than the rows: one batch of all of them
  o.optimizer = {OptimizerKind::Sgd, 0.5};
  auto r = train(m, d, init, o);
  REQUIRE(r);
  REQUIRE(r->history.size() == 1);
  for (size_t i = 0; i < init.size(); ++i) CHECK(r->params[i] == Approx(init[i] - 0.5 * grads[i]).epsilon(1e-13));
  CHECK(r->trainRows == d.rows);
  CHECK(r->validRows == 0);
  CHECK(std::isnan(r->history[0].validLoss));
}

TEST_CASE("learning-rate schedules: the documented formulas, applied before each step", "[train][optimizer]") {
  CHECK(parseLrSchedule("cosine") == LrSchedule::Cosine);
  CHECK(parseLrSchedule("linear") == LrSchedule::Linear);
  CHECK(parseLrSchedule("constant") == LrSchedule::Constant);
  CHECK(!parseLrSchedule("Cosine"));
  CHECK(!parseLrSchedule(""));
  CHECK(std::string(lrScheduleName(LrSchedule::Cosine)) == "cosine");
  // cosine: lr (1 + cos(pi t / T)) / 2; linear: lr (1 - t / T)
  CHECK(scheduledLearningRate(LrSchedule::Cosine, 0.1, 0, 4) == Approx(0.1).epsilon(1e-15));
  CHECK(scheduledLearningRate(LrSchedule::Cosine, 0.1, 1, 4) == Approx(0.1 * (1 + std::sqrt(0.5)) / 2).epsilon(1e-15));
  CHECK(scheduledLearningRate(LrSchedule::Cosine, 0.1, 2, 4) == Approx(0.05).epsilon(1e-15));
  CHECK(scheduledLearningRate(LrSchedule::Cosine, 0.1, 3, 4) == Approx(0.1 * (1 - std::sqrt(0.5)) / 2).epsilon(1e-14));
  CHECK(scheduledLearningRate(LrSchedule::Linear, 0.1, 3, 4) == Approx(0.025).epsilon(1e-15));
  CHECK(scheduledLearningRate(LrSchedule::Constant, 0.1, 3, 4) == 0.1);

  // Three full-batch sgd epochs of hinton (one step each, T = 3): each step is the previous
  // params minus the scheduled rate times their gradient, computed here step by step.
  Model m = compileSample("hinton.nn", DType::F64);
  Dataset d = loadSampleData(m, "hinton.csv");
  for (LrSchedule s : {LrSchedule::Cosine, LrSchedule::Linear}) {
    INFO(lrScheduleName(s));
    std::vector<double> p = m.initParams(5), grads;
    const std::vector<double> init = p;
    const double lr = 0.5;
    const double rates[2][3] = {{lr, lr * 0.75, lr * 0.25}, {lr, lr * 2 / 3, lr / 3}};
    const double *rate = rates[s == LrSchedule::Cosine ? 0 : 1];
    for (int t = 0; t < 3; ++t) {
      m.lossAndGradient(p, d.inputs.data(), d.targets.data(), d.rows, grads);
      for (size_t i = 0; i < p.size(); ++i) p[i] -= rate[t] * grads[i];
    }
    TrainOptions o;
    o.epochs = 3;
    o.batch = 100;
    o.optimizer = {OptimizerKind::Sgd, lr};
    o.schedule = s;
    auto r = train(m, d, init, o);
    REQUIRE(r);
    REQUIRE(r->history.size() == 3);
    for (int t = 0; t < 3; ++t) CHECK(r->history[static_cast<size_t>(t)].lr == Approx(rate[t]).epsilon(1e-15));
    for (size_t i = 0; i < p.size(); ++i) CHECK(r->params[i] == Approx(p[i]).epsilon(1e-13));
    o.schedule = LrSchedule::Constant; // and the constant rate moves the params elsewhere
    auto c = train(m, d, init, o);
    REQUIRE(c);
    CHECK(c->history[2].lr == lr);
    CHECK(!sameBits(c->params, r->params));
  }
  EpochStats e;
  e.epoch = 2, e.epochs = 3, e.trainLoss = 0.5, e.lr = 0.000512, e.examplesPerSecond = 100;
  CHECK(formatEpochLine(e, true).find("  lr 0.000512  ") != std::string::npos);
  CHECK(formatEpochLine(e).find("lr") == std::string::npos);
}

TEST_CASE("the loss-only program: the gradient's loss and the forward's outputs, without the gradient", "[train]") {
  // f64, a few examples of random data: lossRaw against lossAndGradientRaw and forwardRaw on the
  // same params.
  for (const char *name : {"hinton.nn", "digits.nn", "fashion_cnn.nn", "adding.nn", "attention.nn", "residual_digits.nn"}) {
    INFO(name);
    Model m = compileSample(name, DType::F64);
    REQUIRE(m.prepareLossOnly());
    REQUIRE(m.prepareLossOnly()); // once
    for (int64_t n : {1, 3, 17}) {
      Rng rng(static_cast<uint64_t>(n));
      std::vector<double> P = m.initParams(2), X(static_cast<size_t>(n * m.inputCount())),
                          Y(static_cast<size_t>(n * m.targetCount()), 0.0), G(static_cast<size_t>(m.paramCount()));
      for (double &x : X) x = rng.uniform() * (std::string(name) == "fashion_cnn.nn" ? 255 : 1);
      // targets: one-hot rows where the loss is a cross-entropy, else values in [0, 1)
      const int64_t t = m.targetCount();
      for (int64_t e = 0; e < n; ++e)
        for (int64_t j = 0; j < t; ++j) Y[static_cast<size_t>(e * t + j)] = j == e % t ? 1 : 0;
      std::vector<double> W(static_cast<size_t>(m.workspaceSize(n))), WL(static_cast<size_t>(m.lossWorkspaceSize(n)));
      std::vector<double> out(static_cast<size_t>(n * m.outputCount()), -7.0), want(out.size());
      const double full = m.lossAndGradientRaw<double>(P.data(), X.data(), Y.data(), n, G.data(), W.data());
      const std::vector<double> G0 = G;
      const double alone = m.lossRaw<double>(P.data(), X.data(), Y.data(), n, out.data(), WL.data());
      CHECK(std::isfinite(full));
      CHECK(alone == Approx(full).epsilon(1e-12));
      CHECK(G == G0);
      m.forwardRaw<double>(P.data(), X.data(), n, want.data(), W.data());
      for (size_t i = 0; i < out.size(); ++i) CHECK(out[i] == Approx(want[i]).epsilon(1e-12).margin(1e-300));
    }
    CHECK(m.gradientWorkPerExample() > 0);
  }
  Model interp = compileSample("hinton.nn", DType::F64, Engine::Interp);
  CHECK(!interp.prepareLossOnly());

  // A convnet's evaluations are worth the loss-only program: the reported held-out loss is the
  // trained params' loss over the held-out rows.
  Model m = compileSample("fashion_cnn.nn", DType::F64);
  Dataset d;
  d.rows = 192;
  Rng rng(7);
  for (int64_t i = 0; i < d.rows * m.inputCount(); ++i) d.inputs.push_back(std::floor(rng.uniform() * 256));
  for (int64_t i = 0; i < d.rows; ++i)
    for (int64_t j = 0; j < 10; ++j) d.targets.push_back(j == i % 10 ? 1 : 0);
  d.classTargets = true;
  TrainOptions o;
  o.epochs = 1;
  o.batch = 64;
  o.optimizer = {OptimizerKind::Adam, 0.001};
  o.validFraction = 0.5;
  auto r = train(m, d, m.initParams(0), o);
  REQUIRE(r);
  CHECK(r->lossOnly);
  RowSplit split = splitRows(d.rows, 0.5, 0);
  Dataset va = selectRows(d, split.valid, m.inputCount(), m.targetCount());
  std::vector<double> g;
  const double want = m.lossAndGradient(r->params, va.inputs.data(), va.targets.data(), va.rows, g);
  CHECK(r->validLoss == Approx(want).epsilon(1e-12));
  // and the accuracy is the saved params' (the forward pass's argmax)
  std::vector<double> y = m.forward(r->params, va.inputs.data(), va.rows);
  AccuracyRule rule = accuracyRule(m, va);
  CHECK(r->validAccuracy == accuracyOf(rule, y.data(), m.outputCount(), va.targets.data(), m.targetCount(), va.rows));
  Model small = compileSample("hinton.nn", DType::F64); // a few microseconds of evaluation
  Dataset hd = loadSampleData(small, "hinton.csv");
  o.validFraction = 0;
  auto h = train(small, hd, small.initParams(0), o);
  REQUIRE(h);
  CHECK(!h->lossOnly);
}

TEST_CASE("trainer: a fixed seed and thread count reproduce the params bit for bit", "[train]") {
  for (DType dt : {DType::F32, DType::F64}) {
    Model m = compileSample("digits.nn", dt);
    Dataset d = loadSampleData(m, "digits.csv");
    std::vector<double> init = m.initParams(4);
    for (int threads : {1, 2, 3}) {
      INFO((dt == DType::F32 ? "f32" : "f64") << ", threads " << threads);
      TrainOptions o;
      o.epochs = 2;
      o.batch = 50; // the last batch of the 1438 training rows has 38 (parts of unequal size)
      o.optimizer = {OptimizerKind::Adam, 0.01};
      o.seed = 11;
      o.threads = threads;
      o.validFraction = 0.2;
      auto a = train(m, d, init, o), b = train(m, d, init, o);
      REQUIRE(a);
      REQUIRE(b);
      CHECK(sameBits(a->params, b->params));
      CHECK(a->validAccuracy == b->validAccuracy);
      CHECK(a->history[1].trainLoss == b->history[1].trainLoss);
      CHECK(a->validAccuracy > 0.8);
      o.seed = 12; // another seed, another run
      auto c = train(m, d, init, o);
      REQUIRE(c);
      CHECK(!sameBits(a->params, c->params));
    }
  }
}

TEST_CASE("trainer: saved params reproduce the reported held-out accuracy", "[train]") {
  for (DType dt : {DType::F32, DType::F64}) {
    Model m = compileSample("digits.nn", dt);
    Dataset d = loadSampleData(m, "digits.csv");
    TrainOptions o;
    o.epochs = 5;
    o.optimizer = {OptimizerKind::Adam, 0.01};
    o.validFraction = 0.2;
    auto r = train(m, d, m.initParams(0), o);
    REQUIRE(r);
    CHECK(r->accuracy.kind == AccuracyKind::Class);
    CHECK(r->validRows == 359);
    CHECK(r->validAccuracy > 0.9);
    auto reread = parseParams(formatParams(m.program(), r->params), "p.json", m.program());
    REQUIRE(reread);
    CHECK(sameBits(*reread, r->params));
    RowSplit s = splitRows(d.rows, 0.2, 0);
    Dataset held = selectRows(d, s.valid, m.inputCount(), m.targetCount());
    std::vector<double> y = m.forward(*reread, held.inputs.data(), held.rows);
    CHECK(accuracyOf(r->accuracy, y.data(), m.outputCount(), held.targets.data(), m.targetCount(),
                     held.rows) == r->validAccuracy);
    std::vector<double> g;
    CHECK(m.lossAndGradient(*reread, held.inputs.data(), held.targets.data(), held.rows, g) ==
          Approx(r->validLoss).epsilon(1e-6));
  }
}

TEST_CASE("trainer: the interpreter engine trains the same way", "[train]") {
  Model jit = compileSample("hinton.nn", DType::F64, Engine::Jit);
  Model interp = compileSample("hinton.nn", DType::F64, Engine::Interp);
  Dataset d = loadSampleData(jit, "hinton.csv");
  TrainOptions o;
  o.epochs = 20;
  o.batch = 1;
  o.optimizer = {OptimizerKind::Momentum, 0.1};
  auto a = train(jit, d, jit.initParams(1), o), b = train(interp, d, interp.initParams(1), o);
  REQUIRE(a);
  REQUIRE(b);
  for (size_t i = 0; i < a->params.size(); ++i) CHECK(a->params[i] == Approx(b->params[i]).epsilon(1e-9));
  CHECK(a->history.back().trainLoss < a->history.front().trainLoss);
}

TEST_CASE("trainer: binary targets get an accuracy; xor trains to 100%", "[train]") {
  Model m = compileSample("xor.nn");
  Dataset d = loadSampleData(m, "xor.csv");
  TrainOptions o;
  o.epochs = 200;
  o.batch = 4;
  o.optimizer = {OptimizerKind::Adam, 0.1};
  auto r = train(m, d, m.initParams(0), o);
  REQUIRE(r);
  CHECK(r->accuracy.kind == AccuracyKind::Binary);
  CHECK(r->trainAccuracy == 1.0);
}

TEST_CASE("trainer: a non-finite loss or gradient stops training, naming epoch and batch", "[train]") {
  Model m = compileText("input x\ntarget t\nparam w = 1\nloss E = (w * x - t) ^ 2\n");
  Dataset d;
  d.rows = 8;
  for (int i = 0; i < 8; ++i) d.inputs.push_back(1 + i), d.targets.push_back(0);
  TrainOptions o;
  o.batch = 2;
  o.optimizer = {OptimizerKind::Sgd, 1e30};
  auto r = train(m, d, {1.0}, o);
  REQUIRE(!r);
  INFO(r.error().message);
  // w = 1 - 2e30 * mean(x (x w - t)) is about -1e31 after the first batch; the second overflows.
  CHECK(r.error().message.rfind("test.nn: error: training stopped at epoch ", 0) == 0);
  CHECK(r.error().message.find(", batch ") != std::string::npos);
  CHECK(r.error().message.find(" of 4: the ") != std::string::npos);

  Model logOfNegative = compileText("input x\ntarget t\nparam w = 1\nloss E = log(w * x - t)\n");
  d.targets.assign(8, 100);
  auto q = train(logOfNegative, d, {1.0}, o);
  REQUIRE(!q);
  CHECK(q.error().message.find("epoch 1, batch 1 of 4: the loss is nan") != std::string::npos);
}

TEST_CASE("trainer: option and input errors", "[train]") {
  auto bad = [](auto change) {
    TrainOptions o;
    change(o);
    return checkTrainOptions(o);
  };
  CHECK(bad([](TrainOptions &) {}) == "");
  CHECK(bad([](TrainOptions &o) { o.epochs = -3; }) == "--epochs must be at least 1, got -3");
  CHECK(bad([](TrainOptions &o) { o.batch = 0; }) == "--batch must be at least 1, got 0");
  CHECK(bad([](TrainOptions &o) { o.optimizer.lr = 0; }) == "--lr must be a positive number, got 0");
  CHECK(bad([](TrainOptions &o) { o.optimizer.lr = NAN; }).rfind("--lr must be", 0) == 0);
  CHECK(bad([](TrainOptions &o) { o.validFraction = 1; }) == "--valid must be a fraction in [0, 1), got 1");
  CHECK(bad([](TrainOptions &o) { o.validFraction = -0.5; }).rfind("--valid must be", 0) == 0);
  CHECK(bad([](TrainOptions &o) { o.threads = 0; }) == "--threads must be between 1 and 1024, got 0");

  Model m = compileSample("xor.nn");
  Dataset d = loadSampleData(m, "xor.csv");
  TrainOptions o;
  o.validFraction = 0.9;
  auto r = train(m, d, m.initParams(0), o);
  REQUIRE(!r);
  CHECK(r.error().message.find("holds out all 4 examples") != std::string::npos);
  o.validFraction = 0;
  auto wrongInit = train(m, d, {1.0, 2.0}, o);
  REQUIRE(!wrongInit);
  CHECK(wrongInit.error().message.find("2 initial params given") != std::string::npos);
}

TEST_CASE("training log and plot", "[train]") {
  std::vector<EpochStats> h;
  for (int e = 1; e <= 12; ++e) {
    EpochStats s;
    s.epoch = e, s.epochs = 12;
    s.trainLoss = 2.0 / e, s.validLoss = 2.2 / e + 0.05, s.validAccuracy = 0.5 + 0.04 * e;
    s.seconds = 0.01, s.elapsed = 0.01 * e, s.examplesPerSecond = 1e5;
    h.push_back(s);
  }
  std::string log = formatTrainingLog(h);
  CHECK(log.rfind("epoch,train_loss,valid_loss,valid_accuracy,seconds,elapsed_seconds,examples_per_second\n1,2,2.25,0.54,0.01,0.01,100000\n", 0) == 0);
  CHECK(std::count(log.begin(), log.end(), '\n') == 13);
  std::string svg = plotTrainingSvg(h, "a <title> & more");
  CHECK(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0) == 0);
  CHECK(svg.find("a &lt;title&gt; &amp; more") != std::string::npos);
  CHECK(svg.find(">training loss</text>") != std::string::npos);
  CHECK(svg.find(">validation loss</text>") != std::string::npos);
  CHECK(svg.find(">epoch</text>") != std::string::npos);
  CHECK(svg.find("98.00%") != std::string::npos); // the final accuracy, labelled
  CHECK(svg.find("nan") == std::string::npos);
  CHECK(svg.find("inf") == std::string::npos);
  CHECK(svg.substr(svg.size() - 7) == "</svg>\n");
  // Without a split: no validation curves, no accuracy axis; a single epoch still draws.
  for (auto &s : h) s.validLoss = s.validAccuracy = kNoValue;
  std::string plain = formatTrainingLog({h[0]});
  CHECK(plain.find("\n1,2,,,0.01,") != std::string::npos);
  std::string one = plotTrainingSvg({h[0]}, "one");
  CHECK(one.find("validation") == std::string::npos);
  CHECK(one.find("nan") == std::string::npos);

  EpochStats s = h[2];
  s.validLoss = 0.25, s.validAccuracy = 0.9583, s.secondsLeft = 2.1, s.examplesPerSecond = 51234;
  CHECK(formatEpochLine(s) ==
        "epoch  3/12  loss 0.6667  valid loss 0.2500  valid accuracy 95.83%  51.2k ex/s  2.1 s left");
  BatchProgress b;
  b.epoch = 3, b.epochs = 12, b.examples = 500, b.examplesPerEpoch = 1000, b.trainLoss = 0.5,
  b.examplesPerSecond = 2e6, b.secondsLeft = 125;
  CHECK(formatBatchLine(b) ==
        "epoch  3/12 [##########          ]  50%  loss 0.5000  2.00M ex/s  2 min 05 s left");
}

// Training throughput against the bare compiled gradient on the mnist-shaped benchmark network
// (784-256-10, f32, batch 64, one thread): the trainer's time an epoch (shuffle, gather,
// gradient, finiteness check, sgd update) against lossAndGradientRaw alone on the same number of
// batches. Times are CPU times of this thread (the machine may be busy with other work): the
// trainer's epoch is (time of a 4-epoch run - time of a 1-epoch run) / 3, so that the setup
// (copying the data into f32) and the final evaluation cancel out. Best of 7. Hidden; run with
// "[bench]".
TEST_CASE("bench: training throughput against bare lossAndGradientRaw (mnist)", "[.][bench]") {
  CompileOptions co;
  auto cm = Model::compileFile(kSource + "/tests/bench/mnist.nn", co);
  REQUIRE(cm);
  Model &m = *cm;
  const int64_t rows = 64 * 100, ni = m.inputCount(), nt = m.targetCount(), batch = 64;
  Dataset d;
  d.rows = rows;
  d.classTargets = true;
  Rng rng(1);
  for (int64_t i = 0; i < rows * ni; ++i) d.inputs.push_back(rng.uniform());
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t label = static_cast<int64_t>(uniformBelow(rng, 10));
    for (int64_t k = 0; k < nt; ++k) d.targets.push_back(k == label ? 1 : 0);
  }
  std::vector<double> init = m.initParams(0);
  auto cpu = [] {
    timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
  };
  auto trainFor = [&](int epochs) {
    TrainOptions o;
    o.epochs = epochs;
    o.batch = batch;
    o.optimizer = {OptimizerKind::Sgd, 0.01};
    double t0 = cpu();
    auto r = train(m, d, init, o);
    double t = cpu() - t0;
    REQUIRE(r);
    return t;
  };

  std::vector<float> P(init.begin(), init.end()), X(d.inputs.begin(), d.inputs.end()),
      Y(d.targets.begin(), d.targets.end()), G(P.size()), W(static_cast<size_t>(m.workspaceSize(batch)));
  double bare = INFINITY, trainer = INFINITY;
  for (int rep = 0; rep < 7; ++rep) {
    double t0 = cpu();
    float sink = 0;
    for (int64_t first = 0; first < rows; first += batch)
      sink += m.lossAndGradientRaw<float>(P.data(), X.data() + first * ni, Y.data() + first * nt, batch,
                                          G.data(), W.data());
    bare = std::min(bare, cpu() - t0);
    REQUIRE(std::isfinite(sink));
    const double one = trainFor(1), four = trainFor(4);
    trainer = std::min(trainer, (four - one) / 3);
  }
  WARN("mnist 784-256-10, f32, batch 64, 1 thread, an epoch of " << rows << " examples: bare lossAndGradientRaw "
       << bare * 1e3 << " ms (" << rows / bare << " examples/s); trainer " << trainer * 1e3 << " ms ("
       << rows / trainer << " examples/s); ratio " << trainer / bare);
  CHECK(trainer / bare < 1.2);
}
