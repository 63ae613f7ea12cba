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
