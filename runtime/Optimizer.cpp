// Optimizer: sgd, momentum and adam updates exactly as documented in Optimizer.h.
#include "Optimizer.h"

#include <cmath>
#include <cstring>

namespace nabla {

std::optional<OptimizerKind> parseOptimizer(std::string_view name) {
  if (name == "sgd") return OptimizerKind::Sgd;
  if (name == "momentum") return OptimizerKind::Momentum;
  if (name == "adam") return OptimizerKind::Adam;
  return std::nullopt;
}

const char *optimizerName(OptimizerKind k) {
  switch (k) {
  case OptimizerKind::Sgd: return "sgd";
  case OptimizerKind::Momentum: return "momentum";
  case OptimizerKind::Adam: return "adam";
  }
  return "?";
}

double defaultLearningRate(OptimizerKind k) {
  switch (k) {
  case OptimizerKind::Sgd: return 0.1;
  case OptimizerKind::Momentum: return 0.01; // the velocity sums ~1/(1 - 0.9) = 10 gradients
  case OptimizerKind::Adam: return 0.001;
  }
  return 0.01;
}

std::optional<LrSchedule> parseLrSchedule(std::string_view name) {
  if (name == "constant") return LrSchedule::Constant;
  if (name == "cosine") return LrSchedule::Cosine;
  if (name == "linear") return LrSchedule::Linear;
  return std::nullopt;
}

const char *lrScheduleName(LrSchedule s) {
  switch (s) {
  case LrSchedule::Constant: return "constant";
  case LrSchedule::Cosine: return "cosine";
  case LrSchedule::Linear: return "linear";
  }
  return "?";
}

double scheduledLearningRate(LrSchedule s, double lr, int64_t t, int64_t steps) {
  const double x = steps > 0 ? static_cast<double>(t) / static_cast<double>(steps) : 0;
  switch (s) {
  case LrSchedule::Constant: return lr;
  case LrSchedule::Cosine: return lr * 0.5 * (1 + std::cos(M_PI * x));
  case LrSchedule::Linear: return lr * (1 - x);
  }
  return lr;
}

template <class T>
Optimizer<T>::Optimizer(const OptimizerConfig &c, int64_t paramCount) : c_(c), n_(paramCount) {
  const size_t n = static_cast<size_t>(paramCount);
  if (c.kind == OptimizerKind::Momentum) v_.assign(n, T(0));
  if (c.kind == OptimizerKind::Adam) m_.assign(n, T(0)), v_.assign(n, T(0));
}

namespace {
// 1 when the exponent bits of v are all ones (inf or NaN): integer operations, so that the
// count vectorizes together with the update.
inline uint32_t nonFinite(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return (b & 0x7f800000u) == 0x7f800000u;
}
inline uint64_t nonFinite(double v) {
  uint64_t b;
  std::memcpy(&b, &v, sizeof b);
  return (b & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
}
} // namespace

template <class T> bool Optimizer<T>::step(T *__restrict p, const T *__restrict g) {
  ++t_;
  const T lr = static_cast<T>(c_.lr);
  decltype(nonFinite(T(0))) bad = 0;
  switch (c_.kind) {
  case OptimizerKind::Sgd:
    for (int64_t i = 0; i < n_; ++i) {
      bad += nonFinite(g[i]);
      p[i] -= lr * g[i];
    }
    break;
  case OptimizerKind::Momentum: {
    const T mu = static_cast<T>(c_.momentum);
    T *__restrict v = v_.data();
    for (int64_t i = 0; i < n_; ++i) {
      bad += nonFinite(g[i]);
      v[i] = mu * v[i] + g[i];
      p[i] -= lr * v[i];
    }
    break;
  }
  case OptimizerKind::Adam: {
    const T b1 = static_cast<T>(c_.beta1), b2 = static_cast<T>(c_.beta2);
    const T c1 = static_cast<T>(1 - c_.beta1), c2 = static_cast<T>(1 - c_.beta2);
    const double td = static_cast<double>(t_);
    const T bc1 = static_cast<T>(1 - std::pow(c_.beta1, td));
    const T bc2 = static_cast<T>(1 - std::pow(c_.beta2, td));
    const T eps = static_cast<T>(c_.eps);
    T *__restrict m = m_.data();
    T *__restrict v = v_.data();
    for (int64_t i = 0; i < n_; ++i) {
      bad += nonFinite(g[i]);
      m[i] = b1 * m[i] + c1 * g[i];
      v[i] = b2 * v[i] + c2 * (g[i] * g[i]);
      p[i] -= lr * (m[i] / bc1) / (std::sqrt(v[i] / bc2) + eps);
    }
    break;
  }
  }
  return bad == 0;
}

template class Optimizer<float>;
template class Optimizer<double>;

} // namespace nabla
