// LowerToLoops: from the simplified forward and gradient graphs to Loop IR. Elementwise chains
// fuse into the kernel that consumes them; matrix products and reductions become loop nests with
// constant trip counts; the batch is the one run-time loop; the workspace is planned so that
// buffers whose lifetimes do not overlap share memory.
#pragma once
#include "LoopIR.h"
#include "Pipeline.h"

namespace nabla {

// `d` may be null for a program without a loss (then the gradient function is empty).
loops::Program lowerToLoops(const Program &p, const std::vector<NodeId> &outputs,
                            const Derivation *d);

} // namespace nabla
