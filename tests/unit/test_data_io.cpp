// Tests of the CSV reader (every accepted form and every error with its line and message) and of
// the atomic file writer.
#include <catch2/catch.hpp>

#include "DataIO.h"
#include "Program.h"

#include <filesystem>
#include <fstream>
#include <random>

using namespace nabla;

namespace {
Decl decl(std::string name, Shape shape) {
  return Decl{std::move(name), std::move(shape), {}, kNoNode, 0, {}};
}
void layout(std::vector<Decl> &ds) {
  int64_t offset = 0;
  for (Decl &d : ds) d.offset = offset, offset += d.shape.numel();
}
Program program(std::vector<Decl> inputs, std::vector<Decl> targets) {
  Program p;
  layout(inputs);
  layout(targets);
  p.inputs = std::move(inputs);
  p.targets = std::move(targets);
  return p;
}
Program lecture() { return program({decl("x", {4})}, {decl("t", {2})}); }

// The error message of parsing `text` as d.csv, or "OK".
std::string errorOf(std::string_view text, const Program &p, bool targetsOptional = false) {
  Expected<Dataset> d = parseCsv(text, "d.csv", p, targetsOptional);
  return d ? "OK" : d.error().message;
}

std::filesystem::path tempDir() {
  auto dir = std::filesystem::temp_directory_path() /
             ("nabla_test_data_io_" + std::to_string(std::random_device{}()));
  std::filesystem::create_directories(dir);
  return dir;
}
} // namespace

TEST_CASE("CSV: full form with header, CRLF, blank lines, spaces and signs", "[csv]") {
  Expected<Dataset> d = parseCsv("c0,c1,c2,c3,c4,c5\r\n"
                                 "1, 2.5 ,\t-3e2,+4,0.5,1\r\n"
                                 "\r\n"
                                 "   \n"
                                 "0,0,0,1E-3,2.5E+2,-0.0\n",
                                 "d.csv", lecture());
  REQUIRE(d);
  CHECK(d->rows == 2);
  CHECK(d->inputs == std::vector<double>{1, 2.5, -300, 4, 0, 0, 0, 0.001});
  CHECK(d->targets == std::vector<double>{0.5, 1, 250, 0});
  CHECK_FALSE(d->classTargets);
  CHECK(d->hasTargets);
}

TEST_CASE("CSV: a numeric first line is data, not a header", "[csv]") {
  Expected<Dataset> d = parseCsv("1,2,3,4,5,6\n7,8,9,10,11,12", "d.csv", lecture());
  REQUIRE(d);
  CHECK(d->rows == 2);
  CHECK(d->inputs.front() == 1);
  CHECK(d->targets.back() == 12);
  // A header is recognised by any non-numeric field, even alongside numbers and empty names.
  d = parseCsv(",a,2,3,4,5\n1,2,3,4,5,6\n", "d.csv", lecture());
  REQUIRE(d);
  CHECK(d->rows == 1);
  // A UTF-8 byte order mark does not turn the first row into a header.
  d = parseCsv("\xEF\xBB\xBF" "1,2,3,4,5,6\n", "d.csv", lecture());
  REQUIRE(d);
  CHECK(d->rows == 1);
}

TEST_CASE("CSV: class-index column is one-hot encoded", "[csv]") {
  Program p = program({decl("x", {2})}, {decl("t", {3})});
  Expected<Dataset> d = parseCsv("a,b,label\n1,2,2\n3,4,0.0\n5,6,1e0\n", "d.csv", p);
  REQUIRE(d);
  CHECK(d->classTargets);
  CHECK(d->rows == 3);
  CHECK(d->inputs == std::vector<double>{1, 2, 3, 4, 5, 6});
  CHECK(d->targets == std::vector<double>{0, 0, 1, 1, 0, 0, 0, 1, 0});

  // The full form of the same program is still accepted.
  d = parseCsv("1,2,0,1,0\n", "d.csv", p);
  REQUIRE(d);
  CHECK_FALSE(d->classTargets);
  CHECK(d->targets == std::vector<double>{0, 1, 0});
}

TEST_CASE("CSV: bad class indices", "[csv]") {
  const std::string expect = "d.csv:2: error: column 5: class index ";
  CHECK(errorOf("1,2,3,4,0\n1,2,3,4,2\n", lecture()) == expect + "\"2\" for target t[2] is not an integer in 0..1");
  CHECK(errorOf("1,2,3,4,0\n1,2,3,4,0.5\n", lecture()) == expect + "\"0.5\" for target t[2] is not an integer in 0..1");
  CHECK(errorOf("1,2,3,4,0\n1,2,3,4,-1\n", lecture()) == expect + "\"-1\" for target t[2] is not an integer in 0..1");
  CHECK(errorOf("1,2,3,4,0\n1,2,3,4,1e300\n", lecture()) == expect + "\"1e300\" for target t[2] is not an integer in 0..1");
}

TEST_CASE("CSV: the class form exists only for one target [K], K > 1", "[csv]") {
  Program two = program({decl("x", {2})}, {decl("t", {2}), decl("u", {2})});
  CHECK(errorOf("1,2,1\n", two) ==
        "d.csv:1: error: row has 3 fields; expected 6 (2 for input x[2], 2 for target t[2], "
        "2 for target u[2])");
  Program matrix = program({decl("x", {2})}, {decl("t", {2, 2})});
  CHECK(errorOf("1,2,1\n", matrix) ==
        "d.csv:1: error: row has 3 fields; expected 6 (2 for input x[2], 4 for target t[2, 2])");
}

TEST_CASE("CSV: wrong column counts name the line and what is expected", "[csv]") {
  CHECK(errorOf("h\n1,2,3\n", lecture()) ==
        "d.csv:2: error: row has 3 fields; expected 6 (4 for input x[4], 2 for target t[2]) or 5 "
        "(4 for input x[4], 1 class index 0..1 for target t[2])");
  CHECK(errorOf("1,2,3,4,5,6\n\n1,2,3,4,5\n", lecture()) ==
        "d.csv:3: error: row has 5 fields; expected 6 (4 for input x[4], 2 for target t[2]) like "
        "the first row (line 1)");
  CHECK(errorOf("1,2,3,4,1\n1,2,3,4,5,6\n", lecture()) ==
        "d.csv:2: error: row has 6 fields; expected 5 (4 for input x[4], 1 class index 0..1 for "
        "target t[2]) like the first row (line 1)");
  CHECK(errorOf("1,2,3,4,5,6,\n", lecture()).starts_with(
        "d.csv:1: error: row has 7 fields (the last field is empty: a trailing comma?); expected 6"));
  Program scalars = program({decl("a", {}), decl("m", {2, 2})}, {decl("y", {})});
  CHECK(errorOf("1,2\n", scalars) ==
        "d.csv:1: error: row has 2 fields; expected 6 (1 for input a, 4 for input m[2, 2], 1 for "
        "target y)");
}

TEST_CASE("CSV: bad fields name the line, the column and the value", "[csv]") {
  auto bad = [](std::string field) {
    return errorOf("x0,x1,x2,x3,t0,t1\n1,2,3,4,5,6\n1,2," + field + ",4,5,6\n", lecture());
  };
  const std::string at = "d.csv:3: error: column 3: ";
  CHECK(bad("abc") == at + "\"abc\" is not a number");
  CHECK(bad("1.") == at + "\"1.\" is not a number: a '.' must be followed by digits");
  CHECK(bad("1e") == at + "\"1e\" is not a number: an exponent must be followed by digits");
  CHECK(bad("2E+") == at + "\"2E+\" is not a number: an exponent must be followed by digits");
  CHECK(bad(".5") == at + "\".5\" is not a number: a leading digit is required");
  CHECK(bad("0x10") == at + "\"0x10\" is not a number");
  CHECK(bad("1 2") == at + "\"1 2\" is not a number");
  CHECK(bad("--1") == at + "\"--1\" is not a number");
  CHECK(bad("nan") == at + "\"nan\" is not a number: NaN and infinity are not allowed");
  CHECK(bad("-Inf") == at + "\"-Inf\" is not a number: NaN and infinity are not allowed");
  CHECK(bad("infinity") == at + "\"infinity\" is not a number: NaN and infinity are not allowed");
  CHECK(bad("1e999") == at + "\"1e999\" is out of the double range");
  CHECK(bad("-0.00001e314") == at + "\"-0.00001e314\" is out of the double range");
  CHECK(bad("-0.00001e310") == "OK");
  CHECK(bad(std::string(400, '9')) ==
        at + "\"" + std::string(40, '9') + "...\" is out of the double range");
  CHECK(bad("") == at + "the field is empty");
  CHECK(bad(" \t ") == at + "the field is empty");
  CHECK(bad(std::string("\0\xff", 2)) == at + "\"\\x00\\xff\" is not a number");
}

TEST_CASE("CSV: underflow is zero, not an error", "[csv]") {
  Expected<Dataset> d = parseCsv("1e-400,-1e-400,4e-320,0.0e999,1,1\n", "d.csv", lecture());
  REQUIRE(d);
  CHECK(d->inputs[0] == 0);
  CHECK(std::signbit(d->inputs[1]));
  CHECK(d->inputs[2] == 4e-320);
  CHECK(d->inputs[3] == 0);
}

TEST_CASE("CSV: a file without examples is an error", "[csv]") {
  CHECK(errorOf("", lecture()) == "d.csv:1: error: no examples: the file is empty");
  CHECK(errorOf("\n \r\n\t\n", lecture()) == "d.csv:1: error: no examples: the file has only blank lines");
  CHECK(errorOf("\n\nx0,x1\n\n", lecture()) == "d.csv:3: error: no examples: the file has only a header line");
}

TEST_CASE("CSV: targets may be absent when the caller allows it", "[csv]") {
  Expected<Dataset> d = parseCsv("a,b,c,d\n1,2,3,4\n5,6,7,8\n", "d.csv", lecture(), true);
  REQUIRE(d);
  CHECK_FALSE(d->hasTargets);
  CHECK(d->targets.empty());
  CHECK(d->rows == 2);
  CHECK(d->inputs.size() == 8);
  CHECK(errorOf("1,2,3,4\n", lecture()).starts_with("d.csv:1: error: row has 4 fields; expected 6"));
  CHECK(errorOf("1,2,3,4\n1,2,3,4,5,6\n", lecture(), true) ==
        "d.csv:2: error: row has 6 fields; expected 4 (inputs only: 4 for input x[4]) like the first "
        "row (line 1)");
  // With targets present the flag changes nothing.
  d = parseCsv("1,2,3,4,5,6\n", "d.csv", lecture(), true);
  REQUIRE(d);
  CHECK(d->hasTargets);
}

TEST_CASE("CSV: arbitrary bytes never crash the reader", "[csv]") {
  std::mt19937 gen(1);
  static const char chars[] = "0123456789.,eE+- \t\r\n\0\xffnai";
  const std::string alphabet(chars, sizeof chars - 1);
  for (int i = 0; i < 3000; ++i) {
    std::string text(gen() % 60, ' ');
    for (char &c : text) c = alphabet[gen() % alphabet.size()];
    Expected<Dataset> d = parseCsv(text, "f.csv", lecture(), i % 2 == 0);
    if (d) {
      CHECK(d->rows > 0);
      CHECK(d->inputs.size() == static_cast<size_t>(d->rows * 4));
    } else {
      CHECK(d.error().message.starts_with("f.csv:"));
    }
  }
  std::string huge(3'000'000, '1');
  CHECK(errorOf(huge, lecture()).starts_with("d.csv:1: error: row has 1 field;"));
}

TEST_CASE("CSV: files", "[csv][file]") {
  auto dir = tempDir();
  std::string path = (dir / "d.csv").string();
  std::ofstream(path) << "x0,x1,x2,x3,label\n0.5,1,2,3,1\n";
  Expected<Dataset> d = loadCsv(path, lecture());
  REQUIRE(d);
  CHECK(d->targets == std::vector<double>{0, 1});

  std::string missing = (dir / "missing.csv").string();
  d = loadCsv(missing, lecture());
  REQUIRE_FALSE(d);
  CHECK(d.error().message == missing + ": error: cannot open: No such file or directory");
  d = loadCsv(dir.string(), lecture());
  REQUIRE_FALSE(d);
  CHECK(d.error().message == dir.string() + ": error: cannot open: Is a directory");
  std::filesystem::remove_all(dir);
}

TEST_CASE("writeFileAtomically replaces the file and leaves no temp file", "[file]") {
  auto dir = tempDir();
  std::string path = (dir / "p.json").string();
  std::ofstream(path) << "old contents that are longer";
  Expected<bool> ok = writeFileAtomically(path, "new");
  REQUIRE(ok);
  Expected<std::string> text = readFile(path);
  REQUIRE(text);
  CHECK(*text == "new");
  CHECK(std::distance(std::filesystem::directory_iterator(dir), {}) == 1);

  std::string bad = (dir / "no_such_dir" / "p.json").string();
  ok = writeFileAtomically(bad, "x");
  REQUIRE_FALSE(ok);
  CHECK(ok.error().message == bad + ": error: cannot write: No such file or directory");
  // The target is a directory: the rename fails, and the temp file is removed.
  std::filesystem::create_directory(dir / "sub");
  ok = writeFileAtomically((dir / "sub").string(), "x");
  REQUIRE_FALSE(ok);
  CHECK(ok.error().message.starts_with((dir / "sub").string() + ": error: cannot write: "));
  CHECK(std::distance(std::filesystem::directory_iterator(dir), {}) == 2);
  std::filesystem::remove_all(dir);
}
