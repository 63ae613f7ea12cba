// fuzz_source: the bytes as a .nn source file through the whole JIT-free pipeline: lex and parse
// (the token and AST dumps), sema, the program listing and graph dump, the symbolic gradient and
// both notations of its printer, lowering to Loop IR (checked by LoopCheck.h) and its dump, the
// C++ emitter, and, when the program is small, the interpreter on a tiny random batch in f32 and
// f64. Findings: a crash or sanitizer report, an internal error (a bug, never a user error), a
// rejection without a diagnostic, a derivation that fails, Loop IR that would access memory out
// of bounds, results of the wrong size.
#include "AST.h"
#include "EmitCpp.h"
#include "Evaluate.h"
#include "FuzzCommon.h"
#include "GradPrinter.h"
#include "Lexer.h"
#include "LoopCheck.h"
#include "LowerToLoops.h"
#include "Parser.h"
#include "Pipeline.h"
#include "ProgramPrinter.h"
#include "Random.h"

#include <cmath>

using namespace nabla;
using nabla::fuzz::bug;

namespace {

// Larger inputs only slow the fuzzer down (the CLI takes 16 MiB; robust.sh covers big files).
constexpr size_t kMaxInputBytes = 1 << 16;
// Interpret only programs whose graph holds at most this many scalars in all.
constexpr int64_t kMaxInterpretedScalars = 1 << 15;

int64_t graphScalars(const Graph &g) {
  int64_t n = 0;
  for (size_t i = 0; i < g.size(); ++i) n += g.shape(static_cast<NodeId>(i)).numel();
  return n;
}

void run(std::string_view text) {
  SourceFile src{"fuzz.nn", std::string(text)};
  { // `check --emit tokens` and `check --emit ast`
    DiagnosticEngine diags(src);
    std::vector<Token> tokens = lex(src, diags);
    if (tokens.empty() || tokens.back().kind != Tok::Eof) bug("the tokens do not end with Eof");
    (void)dumpTokens(tokens);
    Module m = parse(tokens, diags);
    if (!diags.hasErrors()) (void)dumpAst(m);
    (void)diags.render();
  }
  std::string diags;
  std::optional<Program> p = compileSource(src, diags);
  if (!p) {
    if (diags.find("error: ") == std::string::npos) bug("rejected without an error message", diags);
    return;
  }
  Program &P = *p;
  (void)describeProgram(P);
  std::vector<std::pair<std::string, NodeId>> roots;
  for (auto &o : P.outputs) roots.emplace_back("output " + o.name, o.node);
  if (P.loss) roots.emplace_back("loss " + P.loss->name, P.loss->node);
  (void)dumpGraph(P.graph, roots, &P);

  std::optional<Derivation> d;
  if (P.loss) {
    if (!P.graph.shape(P.loss->node).isScalar()) bug("a loss that is not a scalar passed sema");
    Expected<Derivation> e = derive(P);
    if (!e) bug("derive failed", e.error().message);
    d = std::move(*e);
    if (d->paramGrads.size() != P.params.size()) bug("one gradient per param expected");
    for (size_t k = 0; k < P.params.size(); ++k)
      if (!(P.graph.shape(d->paramGrads[k]) == P.params[k].shape))
        bug("a gradient's shape differs from its param's", P.params[k].name);
    (void)printGradient(P, *d, GradPrintOptions{false});
    (void)printGradient(P, *d, GradPrintOptions{true});
    std::vector<std::pair<std::string, NodeId>> groots{{"loss", d->loss}};
    for (size_t k = 0; k < P.params.size(); ++k) groots.emplace_back(P.params[k].name, d->paramGrads[k]);
    (void)dumpGraph(P.graph, groots, &P);
  }
  std::vector<NodeId> outs = d ? d->outputs : simplifiedOutputs(P);
  loops::Program L = lowerToLoops(P, outs, d ? &*d : nullptr);
  (void)loops::dump(L);
  if (std::string why = fuzz::checkLoops(L, {P.paramCount(), P.inputCount(), P.targetCount(), P.outputCount()});
      !why.empty())
    bug("Loop IR out of bounds", why + "\n" + loops::dump(L));
  CppEmitOptions co;
  co.name = "fuzz";
  co.withMain = P.loss.has_value();
  (void)emitCpp(P, L, co);
  co.f64 = true;
  (void)emitCpp(P, L, co);

  if (graphScalars(P.graph) > kMaxInterpretedScalars) return;
  const int64_t rows = 2;
  Rng rng(text.size());
  std::vector<double> params = initParams(P, 7);
  if (static_cast<int64_t>(params.size()) != P.paramCount()) bug("initParams: wrong size");
  std::vector<double> inputs, targets;
  for (int64_t i = 0; i < rows * P.inputCount(); ++i) inputs.push_back(rng.uniform(-2, 2));
  for (int64_t i = 0; i < rows * P.targetCount(); ++i) targets.push_back(rng.uniform(0, 1));
  for (DType dt : {DType::F32, DType::F64}) {
    std::vector<double> y = interpretForward(P, outs, dt, params, inputs.data(), rows);
    if (static_cast<int64_t>(y.size()) != rows * P.outputCount()) bug("interpretForward: wrong size");
    if (d) {
      LossAndGradient r = interpretLossAndGradient(P, *d, dt, params, inputs.data(), targets.data(), rows);
      if (static_cast<int64_t>(r.grads.size()) != P.paramCount()) bug("interpretLossAndGradient: wrong size");
    }
  }
  if (d) (void)interpretLoss(P, d->loss, params, inputs.data(), targets.data(), rows);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > kMaxInputBytes) return 0;
  try {
    run(fuzz::asText(data, size));
  } catch (const SizeLimitError &) { // a program too large to lay out: its user error
  } catch (const InternalError &e) {
    bug("internal error", e.what());
  } catch (const std::bad_alloc &) {
    bug("allocation failure (a limit is missing)");
  }
  return 0;
}
