// Interpreter: evaluates graph nodes for one example at a time, in f32 or f64. It is the oracle
// that every backend is tested against, so it favours obviousness over speed.
#pragma once
#include "Program.h"

#include <vector>

namespace nabla {

template <class T> class Interpreter {
public:
  // Plans the evaluation of `roots` (and what they need) over graph `g` of program `p`.
  Interpreter(const Program &p, const Graph &g, const std::vector<NodeId> &roots);

  // Evaluates every planned node for one example. `inputs`/`targets` point at that example's
  // values in the flat layout; `targets` may be null when no planned node reads a target.
  void run(const T *params, const T *inputs, const T *targets);

  const std::vector<T> &value(NodeId id) const { return values_[static_cast<size_t>(id)]; }

private:
  void evalNode(NodeId id, const T *params, const T *inputs, const T *targets);
  const Program &p_;
  const Graph &g_;
  std::vector<NodeId> order_;
  std::vector<std::vector<T>> values_;
};

extern template class Interpreter<float>;
extern template class Interpreter<double>;

} // namespace nabla
