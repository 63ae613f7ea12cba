// TrainReport: what people see of a training run: the progress lines, the CSV log and the SVG
// plot of the loss (and accuracy) curves. Plain text, no dependencies.
#pragma once
#include "Trainer.h"

#include <string>
#include <vector>

namespace nabla {

// "0.4 s", "12 s", "3 min 05 s", "1 h 02 min".
std::string formatDuration(double seconds);
// "950", "12.3k", "1.24M" (examples per second and the like).
std::string formatRate(double perSecond);

// The live line while an epoch runs (no line end), for a terminal:
//   "epoch  3/20 [########            ]  41%  loss 0.2345  51.2k ex/s  2.1 s left"
std::string formatBatchLine(const BatchProgress &p);
// The line that ends an epoch (no line end):
//   "epoch  3/20  loss 0.2345  valid loss 0.2567  valid accuracy 95.82%  51.2k ex/s  2.1 s left"
// (with test data, "test loss 0.2601  test accuracy 95.10%" follow the valid numbers; with
// showLr, as under a learning-rate schedule, "lr 0.000512" follows them)
std::string formatEpochLine(const EpochStats &s, bool showLr = false);

// The CSV log, a header and one row an epoch:
//   epoch,train_loss,valid_loss,valid_accuracy,seconds,elapsed_seconds,examples_per_second
// Numbers read back to the same doubles; a value that does not exist (no split) is empty.
std::string formatTrainingLog(const std::vector<EpochStats> &history);

// An SVG chart: training and validation loss per epoch against a left axis (logarithmic when the
// loss spans more than a factor of 30), validation accuracy against a right axis in percent,
// with ticks, grid lines, axis labels, a legend and `title` on top.
std::string plotTrainingSvg(const std::vector<EpochStats> &history, const std::string &title);

} // namespace nabla
