// Optimizer: the parameter updates of training, in the model's own dtype, on flat arrays, with
// no allocation after construction. The update rules (g the gradient of the mean loss, t the
// 1-based step count, all arithmetic in T):
//
//   sgd       p -= lr * g
//   momentum  v = mu * v + g;  p -= lr * v                      (mu = 0.9; v starts at 0)
//   adam      m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g * g
//             p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
//                                                  (b1 = 0.9, b2 = 0.999, eps = 1e-8; m, v start at 0)
//
// These are the textbook forms (momentum as in PyTorch's SGD with momentum and no dampening, Adam
// as in Kingma & Ba 2015, Algorithm 1). The bias corrections 1 - b^t are computed in double once
// a step and rounded to T.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nabla {

enum class OptimizerKind { Sgd, Momentum, Adam };

// "sgd", "momentum", "adam"; nullopt for anything else.
std::optional<OptimizerKind> parseOptimizer(std::string_view name);
const char *optimizerName(OptimizerKind k);
// The learning rate used when none is given: sgd 0.1, momentum 0.01, adam 0.001.
double defaultLearningRate(OptimizerKind k);

// The learning rate over a run of T steps (t = 0 .. T-1, one step a batch), lr the rate given:
//   constant  lr
//   cosine    lr * (1 + cos(pi * t / T)) / 2      (from lr down towards 0; Loshchilov & Hutter's
//                                                   SGDR without restarts)
//   linear    lr * (1 - t / T)
// Neither reaches 0: the last step's rate is lr / T (linear) or about lr (pi / 2T)^2 (cosine).
enum class LrSchedule { Constant, Cosine, Linear };
std::optional<LrSchedule> parseLrSchedule(std::string_view name);
const char *lrScheduleName(LrSchedule s);
double scheduledLearningRate(LrSchedule s, double lr, int64_t t, int64_t steps);

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::Sgd;
  double lr = 0.1;
  double momentum = 0.9;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
};

template <class T> class Optimizer {
public:
  Optimizer(const OptimizerConfig &c, int64_t paramCount);
  // One update of params[0..n) from grads[0..n). Returns false when a gradient value is inf or
  // NaN (checked in the same pass; the params are updated all the same, so stop there).
  bool step(T *params, const T *grads);
  int64_t steps() const { return t_; }
  // The rate of the next steps (a schedule changes it before each step).
  void setLearningRate(double lr) { c_.lr = lr; }
  const OptimizerConfig &config() const { return c_; }

private:
  OptimizerConfig c_;
  int64_t n_;
  int64_t t_ = 0;
  std::vector<T> m_, v_; // momentum: v_ only; adam: both
};

extern template class Optimizer<float>;
extern template class Optimizer<double>;

} // namespace nabla
