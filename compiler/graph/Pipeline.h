// Pipeline: from a checked program to its simplified forward and gradient graphs, the one
// symbolic path that every engine, printer and emitter starts from.
#pragma once
#include "Autodiff.h"
#include "Program.h"
#include "Simplify.h"

#include <memory>

namespace nabla {

struct Derivation {
  // The forward graph after the stable rewrites (log(softmax) and friends), differentiated.
  Gradient gradient;
  NodeId loss = kNoNode;               // simplified forward loss
  std::vector<NodeId> outputs;         // simplified, one per Program::outputs
  std::vector<NodeId> values;          // simplified, one per Program::values
  std::vector<NodeId> paramGrads;      // simplified per-example dLOSS/dPARAM, one per param
  std::unique_ptr<Simplifier> simplifier; // the memo that produced the above, for printers
};

// Requires program.loss. Grows program.graph with the gradient's nodes.
Expected<Derivation> derive(Program &program);

// Forward only (outputs), for programs without a loss.
std::vector<NodeId> simplifiedOutputs(Program &program);

} // namespace nabla
