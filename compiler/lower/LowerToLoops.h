// LowerToLoops: from the simplified forward and gradient graphs to Loop IR. Elementwise chains
// fuse into the kernel that consumes them; matrix products and reductions become loop nests with
// constant trip counts; the batch is the one run-time loop; the workspace is planned so that
// buffers whose lifetimes do not overlap share memory.
#pragma once
#include "LoopIR.h"
#include "Pipeline.h"

#include <stdexcept>

namespace nabla {

// A program whose values are too large to lay out: a value (of the forward or the gradient
// graph) of more than kMaxElements, or a workspace of more than kMaxWorkspace reals. A user
// error, whose what() is the complete message ("FILE:LINE:COL: error: ...").
struct SizeLimitError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The workspace of one example plus the shared part, in reals: far beyond any memory, far below
// int64's range even when multiplied by a batch of 2^24 examples.
inline constexpr int64_t kMaxWorkspace = int64_t(1) << 36;

// `d` may be null for a program without a loss (then the gradient function is empty). With
// `lossOnly` (and a loss), no forward function, and a gradient function that computes the mean
// loss and the outputs, no gradient: its entry point has the gradient's signature and writes the
// outputs (n examples in the forward function's layout) where the gradient would go. The
// trainer's evaluations (loss and accuracy) at the cost of a forward pass instead of a gradient
// step and a forward pass. Throws SizeLimitError (see above).
loops::Program lowerToLoops(const Program &p, const std::vector<NodeId> &outputs,
                            const Derivation *d, bool lossOnly = false);

} // namespace nabla
