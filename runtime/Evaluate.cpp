// Batch evaluation over the interpreter: examples one at a time, sums in double, then the mean.
#include "Evaluate.h"

#include "Interpreter.h"

namespace nabla {

namespace {

template <class T> std::vector<T> cast(const double *p, size_t n) { return std::vector<T>(p, p + n); }

template <class T>
LossAndGradient lossAndGradient(const Program &p, const Derivation &d,
                                const std::vector<double> &params, const double *inputs,
                                const double *targets, int64_t rows) {
  std::vector<NodeId> roots{d.loss};
  roots.insert(roots.end(), d.paramGrads.begin(), d.paramGrads.end());
  Interpreter<T> interp(p, p.graph, roots);
  std::vector<T> P = cast<T>(params.data(), params.size());
  const size_t ni = static_cast<size_t>(p.inputCount()), nt = static_cast<size_t>(p.targetCount());
  LossAndGradient r;
  r.grads.assign(params.size(), 0.0);
  for (int64_t e = 0; e < rows; ++e) {
    std::vector<T> x = cast<T>(inputs + static_cast<size_t>(e) * ni, ni);
    std::vector<T> t = cast<T>(targets + static_cast<size_t>(e) * nt, nt);
    interp.run(P.data(), x.data(), t.data());
    r.loss += static_cast<double>(interp.value(d.loss)[0]);
    for (size_t k = 0; k < p.params.size(); ++k) {
      const auto &g = interp.value(d.paramGrads[k]);
      for (size_t j = 0; j < g.size(); ++j) r.grads[static_cast<size_t>(p.params[k].offset) + j] += static_cast<double>(g[j]);
    }
  }
  double inv = rows > 0 ? 1.0 / static_cast<double>(rows) : 0.0;
  r.loss *= inv;
  for (double &g : r.grads) g *= inv;
  return r;
}

template <class T>
std::vector<double> forward(const Program &p, const std::vector<NodeId> &outputs,
                            const std::vector<double> &params, const double *inputs, int64_t rows) {
  Interpreter<T> interp(p, p.graph, outputs);
  std::vector<T> P = cast<T>(params.data(), params.size());
  const size_t ni = static_cast<size_t>(p.inputCount());
  std::vector<double> out;
  for (int64_t e = 0; e < rows; ++e) {
    std::vector<T> x = cast<T>(inputs + static_cast<size_t>(e) * ni, ni);
    interp.run(P.data(), x.data(), nullptr);
    for (NodeId o : outputs)
      for (T v : interp.value(o)) out.push_back(static_cast<double>(v));
  }
  return out;
}

} // namespace

LossAndGradient interpretLossAndGradient(const Program &p, const Derivation &d, DType dtype,
                                         const std::vector<double> &params, const double *inputs,
                                         const double *targets, int64_t rows) {
  return dtype == DType::F32 ? lossAndGradient<float>(p, d, params, inputs, targets, rows)
                             : lossAndGradient<double>(p, d, params, inputs, targets, rows);
}

double interpretLoss(const Program &p, NodeId loss, const std::vector<double> &params,
                     const double *inputs, const double *targets, int64_t rows) {
  Interpreter<double> interp(p, p.graph, {loss});
  const size_t ni = static_cast<size_t>(p.inputCount()), nt = static_cast<size_t>(p.targetCount());
  double sum = 0;
  for (int64_t e = 0; e < rows; ++e) {
    interp.run(params.data(), inputs + static_cast<size_t>(e) * ni, targets + static_cast<size_t>(e) * nt);
    sum += interp.value(loss)[0];
  }
  return rows > 0 ? sum / static_cast<double>(rows) : 0.0;
}

std::vector<double> interpretForward(const Program &p, const std::vector<NodeId> &outputs,
                                     DType dtype, const std::vector<double> &params,
                                     const double *inputs, int64_t rows) {
  return dtype == DType::F32 ? forward<float>(p, outputs, params, inputs, rows)
                             : forward<double>(p, outputs, params, inputs, rows);
}

} // namespace nabla
