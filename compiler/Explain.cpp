// Explain: see Explain.h. (First cut: the interface; the derivation follows.)
#include "Explain.h"

namespace nabla {

Expected<Explanation> explain(Program &program, Derivation &, const ExplainOptions &) {
  if (!program.loss) return Error{"error: 'explain' needs a program with a loss"};
  Explanation e;
  e.file = program.source.name;
  e.loss = program.loss->name;
  return e;
}

std::string renderText(const Explanation &, bool) { return ""; }
std::string renderLatex(const Explanation &, bool) { return ""; }
std::string renderMarkdown(const Explanation &) { return ""; }
std::string formulaToLatex(const std::string &formula) { return formula; }

} // namespace nabla
