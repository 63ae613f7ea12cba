// Trainer: the training loop as a library. Mini-batch gradient descent on a compiled Model, in the
// model's own dtype (the JIT's raw entry points, no allocation per step), with seeded shuffling,
// a seeded held-out split, a deterministic multi-threaded batch split and per-epoch statistics.
//
// Reproducibility: for a given data set, options (seed and threads included), model and machine,
// the trained params are the same bit for bit. Randomness comes from the project's Rng only:
//   - the held-out split draws from Rng(seed ^ kSplitStream), the epoch shuffles from
//     Rng(seed ^ kShuffleStream) (one stream for the whole run), both with splitRows/shuffleRows;
//   - each batch is split into min(threads, batch rows) contiguous parts, part k holding rows
//     [n*k/parts, n*(k+1)/parts); the parts' mean gradients are combined in part order as
//     g = sum_k (n_k / n) * g_k, in the model's dtype, and the loss likewise in double.
// The interpreter engine (Engine::Interp) goes through Model::lossAndGradient's f64 interface
// instead, keeping the params in f64 between steps, in one part whatever `threads` says.
#pragma once
#include "DataIO.h"
#include "Expected.h"
#include "Optimizer.h"

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace nabla {

class Model;
class Rng;

inline constexpr uint64_t kSplitStream = 0x73706c6974ull;   // "split"
inline constexpr uint64_t kShuffleStream = 0x73687566ull;   // "shuf"

// A uniform integer in [0, n), n >= 1, without bias (Lemire's multiply-and-reject).
uint64_t uniformBelow(Rng &rng, uint64_t n);

// Fisher-Yates with rng: for i = size-1 down to 1, swap element i with element uniformBelow(i+1).
void shuffleRows(std::vector<int64_t> &rows, Rng &rng);

// The held-out split of rows 0..n-1: a Fisher-Yates permutation from Rng(seed ^ kSplitStream);
// its first round(n * validFraction) rows are held out (at least 1 when validFraction > 0).
// Both parts are returned in increasing row order.
struct RowSplit {
  std::vector<int64_t> train, valid;
};
RowSplit splitRows(int64_t n, double validFraction, uint64_t seed);

// The rows `rows` of d (inputs, targets, flags), in that order.
Dataset selectRows(const Dataset &d, const std::vector<int64_t> &rows, int64_t inputCount,
                   int64_t targetCount);

// How accuracy is measured, if at all. Class: the data gave class indices; the prediction is the
// argmax of the first output shaped like the target (as `predict` does). Binary: one target of
// one element whose values are all 0 or 1 and an output of the same shape; the prediction is
// output >= 0.5. (`predict` prints `loss:` for binary targets; LANGUAGE.md reserves `accuracy:`
// for class targets.)
enum class AccuracyKind { None, Class, Binary };
struct AccuracyRule {
  AccuracyKind kind = AccuracyKind::None;
  int64_t outputOffset = 0; // of the predicting output within one example's outputs
  int64_t width = 0;        // elements compared (K for Class, 1 for Binary)
};
AccuracyRule accuracyRule(const Model &m, const Dataset &d);
// The fraction of the n examples predicted right from their outputs (n * outputCount values).
double accuracyOf(const AccuracyRule &r, const double *outputs, int64_t outputCount,
                  const double *targets, int64_t targetCount, int64_t n);

constexpr double kNoValue = std::numeric_limits<double>::quiet_NaN();

// While an epoch runs: after every batch.
struct BatchProgress {
  int epoch = 0, epochs = 0;         // 1-based
  int64_t batch = 0, batches = 0;    // 1-based, batches in this epoch
  int64_t examples = 0;              // trained on in this epoch so far
  int64_t examplesPerEpoch = 0;
  double trainLoss = 0;              // mean over this epoch's examples so far
  double examplesPerSecond = 0;      // this epoch so far
  double secondsLeft = 0;            // estimate for the whole run
};

// At the end of every epoch, validation included.
struct EpochStats {
  int epoch = 0, epochs = 0;
  double trainLoss = 0;               // mean over the epoch's examples, as they were trained on
  double validLoss = kNoValue;        // with the epoch's final params; NaN without a split
  double validAccuracy = kNoValue;    // NaN without a split or without an accuracy rule
  double testLoss = kNoValue;         // on TrainOptions::test, with the epoch's final params
  double testAccuracy = kNoValue;     // NaN without test data or without an accuracy rule
  double seconds = 0;                 // this epoch, validation included
  double elapsed = 0;                 // since training started
  double examplesPerSecond = 0;       // training steps only
  double secondsLeft = 0;
  double lr = 0;                      // the learning rate of the epoch's last step
};

struct TrainOptions {
  int epochs = 10;
  int64_t batch = 32;
  OptimizerConfig optimizer; // kind and lr (see defaultLearningRate)
  LrSchedule schedule = LrSchedule::Constant; // over all epochs' steps (scheduledLearningRate)
  uint64_t seed = 0;
  int threads = 1;
  double validFraction = 0; // in [0, 1)
  // A separate test set (`train --test-data`), evaluated after every epoch (loss and, where the
  // accuracy rule applies to it, accuracy) and never trained on; it must have targets.
  const Dataset *test = nullptr;
  std::function<void(const BatchProgress &)> onBatch;
  std::function<void(const EpochStats &)> onEpoch;
};

struct TrainResult {
  std::vector<double> params; // the trained params (values of the model's dtype)
  std::vector<EpochStats> history;
  int64_t trainRows = 0, validRows = 0;
  AccuracyRule accuracy;
  double trainLoss = kNoValue;      // final params, over the training rows (evaluated at the end)
  double trainAccuracy = kNoValue;  // final params, over the training rows
  double validLoss = kNoValue, validAccuracy = kNoValue; // final params, held-out rows
  int64_t testRows = 0;
  double testLoss = kNoValue, testAccuracy = kNoValue;   // final params, TrainOptions::test
  double seconds = 0;               // training and per-epoch validation
  double examplesPerSecond = 0;     // training steps only, over the whole run
  bool lossOnly = false;            // the losses were evaluated by Model::lossRaw, not the gradient
};

// Checks the options (with messages naming the option as on the command line) and trains from
// `init` (Model::paramCount values). Errors: bad options, a model without a loss, data without
// targets, too few rows for the split, and a non-finite loss or gradient, which stops training
// with "FILE: error: training stopped at epoch E, batch B of N: the loss is nan ...".
Expected<TrainResult> train(const Model &m, const Dataset &data, const std::vector<double> &init,
                            const TrainOptions &o);

// The option checks alone: an empty string when they are fine, else the message (no prefix).
std::string checkTrainOptions(const TrainOptions &o);

} // namespace nabla
