// Evaluate: the loss (mean over a batch) and its gradient (the mean of the per-example param
// gradients), and forward outputs, computed by the interpreter in f32 or f64.
#pragma once
#include "Pipeline.h"

#include <vector>

namespace nabla {

struct LossAndGradient {
  double loss = 0;
  std::vector<double> grads; // flat, the params' layout
};

enum class DType { F32, F64 };

// `inputs` and `targets` hold `rows` examples in the flat layout.
LossAndGradient interpretLossAndGradient(const Program &p, const Derivation &d, DType dtype,
                                         const std::vector<double> &params, const double *inputs,
                                         const double *targets, int64_t rows);

// The mean loss alone (for finite differences), in f64.
double interpretLoss(const Program &p, NodeId loss, const std::vector<double> &params,
                     const double *inputs, const double *targets, int64_t rows);

// Outputs of `rows` examples, example after example.
std::vector<double> interpretForward(const Program &p, const std::vector<NodeId> &outputs,
                                     DType dtype, const std::vector<double> &params,
                                     const double *inputs, int64_t rows);

} // namespace nabla
