// GradPrinter: `nabla grad`, the derivative of the loss with respect to every named value and
// param, as formulas in the source's own names, from the loss backwards. A value with several
// consumers shows one term per consumer, labelled by the statement it comes from, then the sum:
// the multivariate chain rule, dE/dy_i = Σ_j dE/dz_j dz_j/dy_i, made visible.
#pragma once
#include "Pipeline.h"

#include <string>
#include <unordered_map>

namespace nabla {

struct GradPrintOptions {
  bool ascii = false; // `@`, `transpose(A)`, `outer(a, b)` instead of juxtaposition, ᵀ and ⊗
  // With ascii: every formula is a nabla expression that computes the printed value at its full
  // shape (outer(a, b) as reshape(a, [n, 1]) * reshape(b, [1, m]); every broadcast explicit,
  // `C + zeros([n])`), so that a test can parse the printout back as code.
  bool parseable = false;
};

std::string printGradient(Program &p, Derivation &d, const GradPrintOptions &opts);

// One expression in the printer's notation, with decls and `names` substituted (for tests and
// for the comments of lowered code); output beyond about `budget` characters is elided.
std::string printExpression(const Program &p, NodeId id, const GradPrintOptions &opts,
                            const std::unordered_map<NodeId, std::string> &names = {},
                            size_t budget = 20000);

} // namespace nabla
