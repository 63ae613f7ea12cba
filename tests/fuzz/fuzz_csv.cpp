// fuzz_csv: the bytes as a CSV data file against one of the fixed programs of FuzzCommon.h (class
// targets, rank-2 inputs, a scalar target, no targets). The first byte picks the program (low two
// bits) and whether targets are optional (bit 2, as `predict` reads data); the rest is the file.
// Findings: a crash or sanitizer report, an error without "FILE:LINE: error: ", and accepted data
// that breaks the Dataset contract (sizes, finite numbers, one-hot class targets). Accepted data
// also goes through the interpreter (forward and, with a loss, the gradient), a few rows of it.
#include "DataIO.h"
#include "Evaluate.h"
#include "FuzzCommon.h"
#include "Pipeline.h"

#include <cmath>

using namespace nabla;
using nabla::fuzz::bug;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0 || size > (1 << 20)) return 0;
  const size_t which = data[0] & 3;
  const bool targetsOptional = (data[0] & 4) != 0;
  const Program &P = fuzz::fixedProgram(which);
  std::string_view text = fuzz::asText(data + 1, size - 1);
  Expected<Dataset> ds = parseCsv(text, "fuzz.csv", P, targetsOptional);
  if (!ds) {
    const std::string &m = ds.error().message;
    size_t colon = m.find(':', 9); // "fuzz.csv:LINE: error: "
    if (m.rfind("fuzz.csv:", 0) != 0 || colon == std::string::npos ||
        m.compare(colon, 9, ": error: ") != 0 || m.find('\n') != std::string::npos)
      bug("a CSV error not in the form FILE:LINE: error: MESSAGE (one line)", m);
    return 0;
  }
  const Dataset &D = *ds;
  if (D.rows <= 0) bug("accepted a file without examples");
  if (static_cast<int64_t>(D.inputs.size()) != D.rows * P.inputCount()) bug("inputs: wrong size");
  const int64_t nt = D.hasTargets ? P.targetCount() : 0;
  if (!D.hasTargets && !targetsOptional) bug("accepted rows without targets");
  if (static_cast<int64_t>(D.targets.size()) != D.rows * nt) bug("targets: wrong size");
  for (double v : D.inputs)
    if (!std::isfinite(v)) bug("a number that is not finite was accepted");
  for (double v : D.targets)
    if (!std::isfinite(v)) bug("a number that is not finite was accepted");
  if (D.classTargets) {
    if (P.targets.size() != 1) bug("class targets for a program with several targets");
    for (int64_t r = 0; r < D.rows; ++r) {
      int ones = 0;
      for (int64_t k = 0; k < nt; ++k) {
        double v = D.targets[static_cast<size_t>(r * nt + k)];
        if (v != 0 && v != 1) bug("a class target that is not one-hot");
        ones += v == 1;
      }
      if (ones != 1) bug("a class target that is not one-hot");
    }
  }

  // A few rows through the interpreter: the data's numbers reach the kernels.
  static std::vector<std::optional<Derivation>> derived(fuzz::kFixedProgramCount);
  static std::vector<std::vector<NodeId>> outputs(fuzz::kFixedProgramCount);
  Program &mp = fuzz::fixedProgram(which); // derive grows its graph: once a program
  if (outputs[which].empty()) {
    if (mp.loss) {
      Expected<Derivation> d = derive(mp);
      if (!d) bug("derive failed", d.error().message);
      derived[which] = std::move(*d);
      outputs[which] = derived[which]->outputs;
    } else {
      outputs[which] = simplifiedOutputs(mp);
    }
  }
  const int64_t rows = std::min<int64_t>(D.rows, 4);
  std::vector<double> params(static_cast<size_t>(P.paramCount()), 0.25);
  std::vector<double> y = interpretForward(P, outputs[which], DType::F64, params, D.inputs.data(), rows);
  if (static_cast<int64_t>(y.size()) != rows * P.outputCount()) bug("interpretForward: wrong size");
  if (derived[which] && D.hasTargets)
    (void)interpretLossAndGradient(P, *derived[which], DType::F32, params, D.inputs.data(),
                                   D.targets.data(), rows);
  return 0;
}
