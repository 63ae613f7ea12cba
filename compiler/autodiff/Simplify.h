// Simplifier: readable local rewrite rules applied as nodes are rebuilt bottom-up: constant
// folding, algebraic identities, broadcast elimination, and the stable forms of DESIGN.md
// (log(softmax z) -> log_softmax z, log(logistic z) -> -softplus(-z),
// log(1 - logistic z) -> -softplus(z)). CSE is free from hash-consing; dead nodes are never
// visited because only what the roots reach is rebuilt.
#pragma once
#include "Graph.h"

#include <unordered_map>

namespace nabla {

class Simplifier {
public:
  explicit Simplifier(Graph &g) : g_(g) {}

  // The simplified equivalent of `id` (memoized; ids are stable for the Simplifier's life).
  NodeId simplify(NodeId id);

  // Builds a node, applying the rules to it (its operands must already be simplified).
  NodeId make(Op op, NodeId a = kNoNode, NodeId b = kNoNode, double fattr = 0, int64_t iattr = 0,
              const Shape &shape = {}, const std::vector<int64_t> &attrs = {});

private:
  NodeId rewrite(const Node &n, NodeId a, NodeId b);
  NodeId rewriteUnary(Op op, NodeId a, double fattr);
  NodeId rewriteBinary(Op op, NodeId a, NodeId b, const Shape &out);
  NodeId rewriteOther(Op op, NodeId a, NodeId b, double fattr, int64_t iattr, const Shape &shape,
                      const std::vector<int64_t> &attrs);
  NodeId raw(Op op, NodeId a, NodeId b, double fattr, int64_t iattr, const Shape &shape,
             const std::vector<int64_t> &attrs = {});
  NodeId zeros(const Shape &s);
  NodeId logisticPair(NodeId a, NodeId b, double signB, const Shape &out);
  bool isZero(NodeId id) const;
  bool isOne(NodeId id) const;
  bool scalarConst(NodeId id, double &v) const; // a rank-0 Const

  Graph &g_;
  std::unordered_map<NodeId, NodeId> memo_;
};

} // namespace nabla
