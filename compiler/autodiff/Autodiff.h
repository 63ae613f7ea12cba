// Autodiff: reverse mode on the graph. The adjoint of a node is the SUM over its consumers of
// each consumer's vector-Jacobian product (the multivariate chain rule); every contribution is
// kept, so `nabla grad` can show the terms of that sum. The gradient is built from the same ops,
// so it can itself be differentiated.
#pragma once
#include "Expected.h"
#include "Graph.h"

#include <vector>

namespace nabla {

struct Contribution {
  NodeId consumer; // the forward node whose VJP this is
  NodeId term;     // the gradient that flows from `consumer` into the node
};

struct Gradient {
  NodeId loss = kNoNode;
  // For each forward node (indexed by id, sized to the graph before differentiation): the
  // contributions of its consumers, in the order they were found (from the loss backwards).
  std::vector<std::vector<Contribution>> contributions;
  // The adjoint of each forward node that the loss depends on through a param (kNoNode if none).
  std::vector<NodeId> adjoint;
};

// Differentiates the scalar `loss` with respect to every node that depends on a Param. Fails
// with a message naming the op when an op has no derivative rule.
Expected<Gradient> differentiate(Graph &g, NodeId loss);

// The vector-Jacobian product of node `n` for its operand `k`, given the adjoint `adj` of `n`.
// Returns kNoNode when the op has no rule (the caller reports it).
NodeId vectorJacobianProduct(Graph &g, NodeId n, int k, NodeId adj);

} // namespace nabla
