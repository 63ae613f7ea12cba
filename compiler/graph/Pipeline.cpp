// The symbolic pipeline: simplify the forward graph (stable forms first, so that the gradient is
// stable too), differentiate it, and simplify every gradient.
#include "Pipeline.h"

namespace nabla {

Expected<Derivation> derive(Program &p) {
  if (!p.loss) throw InternalError("derive: the program has no loss");
  Derivation d;
  d.simplifier = std::make_unique<Simplifier>(p.graph);
  Simplifier &S = *d.simplifier;
  d.loss = S.simplify(p.loss->node);
  for (auto &o : p.outputs) d.outputs.push_back(S.simplify(o.node));
  for (auto &v : p.values) d.values.push_back(S.simplify(v.node));
  Expected<Gradient> g = differentiate(p.graph, d.loss);
  if (!g) return g.error();
  d.gradient = std::move(*g);
  for (auto &param : p.params) {
    NodeId adj = static_cast<size_t>(param.node) < d.gradient.adjoint.size()
                     ? d.gradient.adjoint[static_cast<size_t>(param.node)]
                     : kNoNode;
    d.paramGrads.push_back(adj == kNoNode ? p.graph.zeros(param.shape) : S.simplify(adj));
  }
  return d;
}

std::vector<NodeId> simplifiedOutputs(Program &p) {
  Simplifier S(p.graph);
  std::vector<NodeId> out;
  for (auto &o : p.outputs) out.push_back(S.simplify(o.node));
  return out;
}

} // namespace nabla
