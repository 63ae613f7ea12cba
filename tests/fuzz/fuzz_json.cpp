// fuzz_json: the bytes as a params JSON file against one of the fixed programs of FuzzCommon.h
// (dotted dense params, rank-0, rank-1 and rank-2 params, no loss). The first byte picks the
// program; the rest is the file. Findings: a crash or sanitizer report (deep nesting included), an
// error not in the form "fuzz.json[:LINE:COL]: error: ...", and accepted params that are of the
// wrong size, not finite, or do not survive formatParams -> parseParams bit for bit.
#include "FuzzCommon.h"
#include "ParamIO.h"

#include <cmath>
#include <cstring>

using namespace nabla;
using nabla::fuzz::bug;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0 || size > (1 << 20)) return 0;
  const Program &P = fuzz::fixedProgram(data[0] % fuzz::kFixedProgramCount);
  Expected<std::vector<double>> r = parseParams(fuzz::asText(data + 1, size - 1), "fuzz.json", P);
  if (!r) {
    const std::string &m = r.error().message;
    if (m.rfind("fuzz.json", 0) != 0 || m.find(": error: ") == std::string::npos)
      bug("a params error not in the form FILE[:LINE:COL]: error: MESSAGE", m);
    return 0;
  }
  const std::vector<double> &x = *r;
  if (static_cast<int64_t>(x.size()) != P.paramCount()) bug("params: wrong size");
  for (double v : x)
    if (!std::isfinite(v)) bug("a param that is not finite was accepted");
  std::string text = formatParams(P, x);
  Expected<std::vector<double>> back = parseParams(text, "formatted.json", P);
  if (!back) bug("formatParams wrote what parseParams rejects", back.error().message + "\n" + text);
  if (back->size() != x.size() || std::memcmp(back->data(), x.data(), x.size() * sizeof(double)) != 0)
    bug("formatParams -> parseParams changed a number", text);
  return 0;
}
