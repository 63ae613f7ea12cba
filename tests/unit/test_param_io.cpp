// Tests of the parameter-file reader (every error names the param or the line:col) and writer
// (declaration order, exact round trip), and of the JSON number and nested-array printers.
#include <catch2/catch.hpp>

#include "ParamIO.h"
#include "Program.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>

using namespace nabla;

namespace {
Program withParams(std::vector<std::pair<std::string, Shape>> params) {
  Program p;
  int64_t offset = 0;
  for (auto &[name, shape] : params) {
    p.params.push_back(Decl{name, shape, {}, kNoNode, offset, {}});
    offset += shape.numel();
  }
  return p;
}
// W_i[3, 2], b_i[3], h.W[1, 1], s (scalar): 3*2 + 3 + 1 + 1 = 11 values.
Program sample() { return withParams({{"W_i", {3, 2}}, {"b_i", {3}}, {"h.W", {1, 1}}, {"s", {}}}); }

std::string errorOf(std::string_view text, const Program &p = sample()) {
  Expected<std::vector<double>> r = parseParams(text, "P.json", p);
  return r ? "OK" : r.error().message;
}
const std::string kValid = R"({"W_i": [[1, 2], [3, 4], [5, 6]], "b_i": [7, 8, 9], "h.W": [[10]], "s": 11})";

bool sameBits(const std::vector<double> &a, const std::vector<double> &b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}
} // namespace

TEST_CASE("params: a valid file fills the flat layout", "[params]") {
  Expected<std::vector<double>> r = parseParams(kValid, "P.json", sample());
  REQUIRE(r);
  CHECK(*r == std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  // Key order does not matter; numbers in every JSON form are accepted.
  r = parseParams(R"({"s": -1.5e-3, "h.W": [[-0]], "b_i": [1E2, 0.25, 18446744073709551615],
                      "W_i": [[1, 2], [3, 4], [5, 6]]})",
                  "P.json", sample());
  REQUIRE(r);
  CHECK((*r)[10] == -1.5e-3);
  CHECK((*r)[6] == 100);
  CHECK((*r)[8] == 18446744073709551615.0);
  CHECK(parseParams("{}", "P.json", withParams({}))->empty());
}

TEST_CASE("params: content errors name the param", "[params]") {
  CHECK(errorOf(R"({"W_i": [[1, 2], [3, 4]], "b_i": [7, 8, 9], "h.W": [[10]], "s": 11})") ==
        "P.json: error: param \"W_i\": expected 3 rows, found 2");
  CHECK(errorOf(R"({"W_i": [[1, 2], [3, 4], [5, 6], [7, 8]]})") ==
        "P.json: error: param \"W_i\": expected 3 rows, found 4");
  CHECK(errorOf(R"({"W_i": [[1, 2], [3, 4, 5], [5, 6]]})") ==
        "P.json: error: param \"W_i\": row 1 has 3 numbers; expected 2");
  CHECK(errorOf(R"({"b_i": [1, 2]})") == "P.json: error: param \"b_i\": expected 3 numbers, found 2");
  CHECK(errorOf(R"({"b_i": [1, 2, 3, 4]})") == "P.json: error: param \"b_i\": expected 3 numbers, found 4");
  CHECK(errorOf(R"({"W_i": 3})") ==
        "P.json: error: param \"W_i\" is a number; expected 3 rows of 2 numbers (shape [3, 2])");
  CHECK(errorOf(R"({"W_i": [1, 2]})") ==
        "P.json: error: param \"W_i\": row 0 is a number; expected an array of 2 numbers");
  CHECK(errorOf(R"({"W_i": [[[1]]]})") ==
        "P.json: error: param \"W_i\": element [0][0] is an array; expected a number");
  CHECK(errorOf(R"({"W_i": [[1, null]]})") ==
        "P.json: error: param \"W_i\": element [0][1] is null; expected a number");
  CHECK(errorOf(R"({"b_i": [1, "2", 3]})") ==
        "P.json: error: param \"b_i\": element [1] is a string; expected a number");
  CHECK(errorOf(R"({"b_i": [true]})") ==
        "P.json: error: param \"b_i\": element [0] is a boolean; expected a number");
  CHECK(errorOf(R"({"b_i": [[1]]})") ==
        "P.json: error: param \"b_i\": element [0] is an array; expected a number");
  CHECK(errorOf(R"({"b_i": {"a": 1}})") ==
        "P.json: error: param \"b_i\" is an object; expected an array of 3 numbers");
  CHECK(errorOf(R"({"s": [0.5]})") == "P.json: error: param \"s\" is an array; expected a number");
  CHECK(errorOf(R"({"s": null})") == "P.json: error: param \"s\" is null; expected a number");
  CHECK(errorOf(R"({"W": 1})") ==
        "P.json: error: unknown param \"W\"; the program's params are W_i, b_i, h.W, s");
  CHECK(errorOf(R"({"x\u0001": 1})", withParams({})) ==
        "P.json: error: unknown param \"x\\u0001\"; the program has no params");
  CHECK(errorOf(R"({"s": 1, "s": 2})") == "P.json: error: param \"s\" is given twice");
  CHECK(errorOf(R"({"s": 1, "b_i": [1, 2, 3]})") ==
        "P.json: error: missing params \"W_i\" (shape [3, 2]), \"h.W\" (shape [1, 1])");
  CHECK(errorOf(R"({"W_i": [[1, 2], [3, 4], [5, 6]], "b_i": [7, 8, 9], "h.W": [[10]]})") ==
        "P.json: error: missing param \"s\" (scalar)");
}

TEST_CASE("params: the top level must be an object", "[params]") {
  const std::string msg = "P.json: error: expected an object {\"NAME\": value, ...} at the top, found ";
  CHECK(errorOf("[1, 2]") == msg + "an array");
  CHECK(errorOf("3") == msg + "a number");
  CHECK(errorOf("\"W_i\"") == msg + "a string");
  CHECK(errorOf("null") == msg + "null");
}

TEST_CASE("params: syntax errors point at line and column", "[params]") {
  CHECK(errorOf("{\n  \"s\": 1.}") ==
        "P.json:2:10: error: syntax error while parsing value - invalid number; expected digit "
        "after '.'; last read: '1.}'");
  CHECK(errorOf("{\"s\": 1,\n\n   \"b_i\": [1 2]}").starts_with("P.json:3:14: error: syntax error"));
  CHECK(errorOf("{\"s\":\n 1e999}") == "P.json:2:2: error: number overflow parsing '1e999'");
  CHECK(errorOf("").starts_with("P.json:1:1: error: syntax error while parsing value - unexpected end of input"));
  CHECK(errorOf(kValid + " {}").starts_with("P.json:1:" + std::to_string(kValid.size() + 2) + ": error: syntax error"));
  CHECK(errorOf("{\"s\": NaN}").starts_with("P.json:1:7: error: syntax error"));
  CHECK(errorOf("{\"s\": 1,\n\"b_i\": [1, 2,\n").starts_with("P.json:3:1: error: syntax error"));
  // Bytes that are not printable ASCII are escaped in the message.
  CHECK(errorOf("\"\xff\"") == "P.json:1:2: error: syntax error while parsing value - invalid "
                               "string: ill-formed UTF-8 byte; last read: '\"\\xff'");
  CHECK(errorOf(std::string("{\"s\": \0}", 8)).starts_with("P.json:1:7: error: syntax error"));
}

TEST_CASE("params: deep nesting and random bytes are refused without recursion", "[params]") {
  std::string deep(100000, '[');
  CHECK(errorOf(deep) == "P.json: error: expected an object {\"NAME\": value, ...} at the top, found an array");
  CHECK(errorOf("{\"W_i\": " + deep) ==
        "P.json: error: param \"W_i\": element [0][0] is an array; expected a number");
  CHECK(errorOf(std::string(100000, '{')).starts_with("P.json:1:2: error: syntax error"));
  CHECK(errorOf("{\"s\": " + std::string(100000, '{')) ==
        "P.json: error: param \"s\" is an object; expected a number");

  std::mt19937 gen(2);
  static const char chars[] = "{}[]\",:0123456789.-e nulltrW_ibsh\0\xff";
  const std::string alphabet(chars, sizeof chars - 1);
  for (int i = 0; i < 3000; ++i) {
    std::string text(gen() % 40, ' ');
    for (char &c : text) c = alphabet[gen() % alphabet.size()];
    std::string message = errorOf(text);
    CHECK((message == "OK" || message.starts_with("P.json:")));
  }
}

TEST_CASE("params: formatParams round-trips exactly, in declaration order", "[params]") {
  Program p = withParams({{"z", {2, 3}}, {"a", {4}}, {"m.W", {1, 2}}, {"s", {}}});
  std::mt19937_64 gen(3);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<double> flat(static_cast<size_t>(p.paramCount()));
    for (double &v : flat) {
      do v = std::bit_cast<double>(gen());
      while (!std::isfinite(v));
    }
    if (trial == 0) flat = {0.1, -0.0, 5e-324, 1e300, -1.7976931348623157e308, 1e20,
                            123456789, 0.30000000000000004, 2.2250738585072014e-308, 1, -2, 0.5, 3};
    std::string text = formatParams(p, flat);
    Expected<std::vector<double>> back = parseParams(text, "P.json", p);
    REQUIRE(back);
    REQUIRE(sameBits(*back, flat));
  }
  std::string text = formatParams(p, std::vector<double>(13, 0.5));
  CHECK(text.find("\"z\"") < text.find("\"a\""));
  CHECK(text.find("\"a\"") < text.find("\"m.W\""));
  CHECK(text.find("\"m.W\"") < text.find("\"s\""));
  CHECK(text == "{\n"
                "  \"z\": [\n"
                "    [0.5, 0.5, 0.5],\n"
                "    [0.5, 0.5, 0.5]\n"
                "  ],\n"
                "  \"a\": [0.5, 0.5, 0.5, 0.5],\n"
                "  \"m.W\": [\n"
                "    [0.5, 0.5]\n"
                "  ],\n"
                "  \"s\": 0.5\n"
                "}\n");
  CHECK(formatParams(withParams({}), {}) == "{}\n");
}

TEST_CASE("formatNumberJson and appendNested", "[params][json]") {
  CHECK(formatNumberJson(0.1) == "0.1");
  CHECK(formatNumberJson(3) == "3");
  CHECK(formatNumberJson(-2.5) == "-2.5");
  CHECK(formatNumberJson(1e20) == "1e+20");
  CHECK(formatNumberJson(0.30000000000000004) == "0.30000000000000004");
  CHECK(formatNumberJson(-0.0) == "-0.0");
  CHECK(formatNumberJson(std::numeric_limits<double>::quiet_NaN()) == "null");
  CHECK(formatNumberJson(std::numeric_limits<double>::infinity()) == "null");
  CHECK(formatNumberJson(-std::numeric_limits<double>::infinity()) == "null");

  const double data[] = {1, 2, 3, std::nan(""), 5, 6};
  std::string out;
  appendNested(out, data, Shape{}, 0);
  CHECK(out == "1");
  out.clear();
  appendNested(out, data, Shape{3}, 4);
  CHECK(out == "[1, 2, 3]");
  out = "    \"g\": ";
  appendNested(out, data, Shape{2, 3}, 4);
  CHECK(out == "    \"g\": [\n"
               "      [1, 2, 3],\n"
               "      [null, 5, 6]\n"
               "    ]");
  CHECK(quoteJson("a\"b\\c\n") == "\"a\\\"b\\\\c\\u000a\"");
}

TEST_CASE("params: files", "[params][file]") {
  std::string missing = (std::filesystem::temp_directory_path() / "nabla_no_such_params.json").string();
  Expected<std::vector<double>> r = loadParams(missing, sample());
  REQUIRE_FALSE(r);
  CHECK(r.error().message == missing + ": error: cannot open: No such file or directory");
}

TEST_CASE("params: rank 3 and 4 are nested arrays, row-major, both ways", "[params][rank]") {
  // K[2, 3, 2] and C[1, 2, 1, 2] beside a matrix and a scalar.
  Program p = withParams({{"K", {2, 3, 2}}, {"C", {1, 2, 1, 2}}, {"W", {2, 2}}, {"s", {}}});
  const std::string text = R"({"K": [[[0, 1], [2, 3], [4, 5]], [[6, 7], [8, 9], [10, 11]]],
                               "C": [[[[12, 13]], [[14, 15]]]], "W": [[16, 17], [18, 19]], "s": 20})";
  Expected<std::vector<double>> r = parseParams(text, "P.json", p);
  REQUIRE(r);
  std::vector<double> expect(21);
  for (size_t i = 0; i < expect.size(); ++i) expect[i] = static_cast<double>(i);
  CHECK(*r == expect);

  // The writer nests one sub-array a line, and reads back to the same bits.
  std::string out = formatParams(p, expect);
  CHECK(out.starts_with("{\n"
                        "  \"K\": [\n"
                        "    [\n"
                        "      [0, 1],\n"
                        "      [2, 3],\n"
                        "      [4, 5]\n"
                        "    ],\n"
                        "    [\n"
                        "      [6, 7],\n"));
  CHECK(out.find("  \"C\": [\n"
                 "    [\n"
                 "      [\n"
                 "        [12, 13]\n"
                 "      ],\n"
                 "      [\n"
                 "        [14, 15]\n"
                 "      ]\n"
                 "    ]\n"
                 "  ],\n") != std::string::npos);
  Expected<std::vector<double>> back = parseParams(out, "P.json", p);
  REQUIRE(back);
  CHECK(sameBits(*back, expect));
  std::mt19937_64 gen(5);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<double> flat(21);
    for (double &v : flat) {
      do v = std::bit_cast<double>(gen());
      while (!std::isfinite(v));
    }
    Expected<std::vector<double>> again = parseParams(formatParams(p, flat), "P.json", p);
    REQUIRE(again);
    REQUIRE(sameBits(*again, flat));
  }
}

TEST_CASE("params: rank 3 and 4 shape errors name the param, the place and the shape", "[params][rank]") {
  Program p = withParams({{"K", {2, 3, 2}}});
  auto err = [&](std::string_view value) { return errorOf(std::string(R"({"K": )") + std::string(value) + "}", p); };
  const std::string row = "[0, 1]", mat = "[" + row + ", " + row + ", " + row + "]";
  CHECK(err("[" + mat + ", " + mat + "]") == "OK");
  CHECK(err("[" + mat + "]") ==
        "P.json: error: param \"K\": expected 2 arrays of shape [3, 2], found 1 (shape [2, 3, 2])");
  CHECK(err("[" + mat + ", [" + row + ", " + row + "]]") ==
        "P.json: error: param \"K\": [1] has 2 arrays; expected 3 (shape [2, 3, 2])");
  CHECK(err("[" + mat + ", [" + row + ", [0, 1, 2], " + row + "]]") ==
        "P.json: error: param \"K\": [1][1] has 3 numbers; expected 2 (shape [2, 3, 2])");
  CHECK(err("3") == "P.json: error: param \"K\" is a number; expected nested arrays of shape [2, 3, 2]");
  CHECK(err("[" + mat + ", 7]") ==
        "P.json: error: param \"K\": [1] is a number; expected 3 rows of 2 numbers (shape [3, 2])");
  CHECK(err("[" + mat + ", [" + row + ", 7]]") ==
        "P.json: error: param \"K\": [1][1] is a number; expected an array of 2 numbers");
  CHECK(err("[" + mat + ", [" + row + ", [0, [1]]]]") ==
        "P.json: error: param \"K\": element [1][1][1] is an array; expected a number");
  CHECK(err("[[[0, null]]]") == "P.json: error: param \"K\": element [0][0][1] is null; expected a number");
  // Rank 4: the innermost rows are named by all three enclosing indices.
  Program q = withParams({{"C", {1, 1, 2, 2}}});
  CHECK(errorOf(R"({"C": [[[[1, 2], [3]]]]})", q) ==
        "P.json: error: param \"C\": [0][0][1] has 1 numbers; expected 2 (shape [1, 1, 2, 2])");
  CHECK(errorOf(R"({"C": [[[[1, 2], [3, 4]]]]})", q) == "OK");
  // Nesting deeper than the rank is refused where it starts, whatever follows.
  CHECK(errorOf(R"({"C": [[[[[[[[[[1]]]]]]]]]]})", q) ==
        "P.json: error: param \"C\": element [0][0][0][0] is an array; expected a number");
}

TEST_CASE("params: the f32 range check names a rank-3 element by its indices", "[params][rank]") {
  Program p = withParams({{"K", {2, 3, 2}}});
  std::vector<double> flat(12, 0.0);
  flat[9] = 1e300; // [1][1][1]
  Expected<bool> r = checkParamsFitFloat32(flat, "P.json", p);
  REQUIRE_FALSE(r);
  CHECK(r.error().message.starts_with("P.json: error: param \"K\" element [1][1][1] is 1e+300, out of the f32 range"));
}
