// ParamIO: parameter files (JSON) in and out, and the JSON number and nested-array printers that
// `eval --json` reuses. Reading never throws, never recurses on input depth, and names the param.
#pragma once
#include "Expected.h"
#include "Shape.h"

#include <string>
#include <string_view>
#include <vector>

namespace nabla {

struct Program;

// `{"W_i": [[...], ...], "b_i": [...], "h.W": [[...]], "s": 0.5}`: an object with exactly one key
// per param, each value nested arrays in the declared shape (rank 0: a number; rank 1: an array of
// numbers; rank 2: an array of rows; rank 3 and 4: arrays of those). Returns the flat array
// (Program::paramCount(), each param at its Decl::offset, row-major). Errors: "FILE:LINE:COL: error: ..." for JSON syntax (and numbers
// that overflow), "FILE: error: param "W_i": expected 3 rows, found 2" and the like for content:
// a missing, unknown or repeated param, a wrong shape, a non-number element (null included).
Expected<std::vector<double>> parseParams(std::string_view text, const std::string &fileName,
                                          const Program &program);
Expected<std::vector<double>> loadParams(const std::string &path, const Program &program);

// For --dtype f32: an element beyond the f32 range (about 3.4e38) would become an infinity.
// "FILE: error: param "w": element [0][1] is 1e+300, out of the f32 range ..." for the first one.
Expected<bool> checkParamsFitFloat32(const std::vector<double> &params, const std::string &fileName,
                                     const Program &program);

// Pretty JSON of the params in declaration order, one row of a matrix a line, numbers that read
// back to the same bits (see formatNumberJson). parseParams(formatParams(p, x)) == x exactly.
std::string formatParams(const Program &program, const std::vector<double> &flat);

// The shortest text that reads back to exactly `v` ("0.1", "1e+20", "-0.0" for negative zero);
// `null` for NaN and infinities, which JSON cannot express.
std::string formatNumberJson(double v);

// `s` as a JSON string literal, quotes included.
std::string quoteJson(std::string_view s);

// Appends the value at `data` (shape.numel() doubles, row-major) as a number (rank 0), an array on
// one line (rank 1) or an array of sub-arrays, one a line, each indented two more (rank 2 to 4: a
// matrix is one row a line); `indent` is the indentation of the line the value starts on, closing
// bracket included.
void appendNested(std::string &out, const double *data, const Shape &shape, int indent);

} // namespace nabla
