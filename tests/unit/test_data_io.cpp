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

TEST_CASE("CSV: rank 3 and 4 inputs and targets are columns, row-major", "[csv][rank]") {
  // x[2, 1, 2] (4 columns), m[1, 1, 1, 2] (2), target t[1, 2, 1] (2).
  Program p = program({decl("x", {2, 1, 2}), decl("m", {1, 1, 1, 2})}, {decl("t", {1, 2, 1})});
  Expected<Dataset> d = parseCsv("1,2,3,4,5,6,7,8\n9,10,11,12,13,14,15,16\n", "d.csv", p);
  REQUIRE(d);
  CHECK(d->rows == 2);
  CHECK(d->inputs == std::vector<double>{1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 14});
  CHECK(d->targets == std::vector<double>{7, 8, 15, 16});
  CHECK(errorOf("1,2,3\n", p) == "d.csv:1: error: row has 3 fields; expected 8 (4 for input "
                                 "x[2, 1, 2], 2 for input m[1, 1, 1, 2], 2 for target t[1, 2, 1])");
  // The class form is for a target [K] only: a rank-3 target has none.
  Program img = program({decl("img", {1, 2, 2})}, {decl("label", {3})});
  d = parseCsv("0,1,2,3,2\n", "d.csv", img);
  REQUIRE(d);
  CHECK(d->classTargets);
  CHECK(d->targets == std::vector<double>{0, 0, 1});
}

TEST_CASE("CSV: nan or inf in the first row is an error there, not a header", "[csv][defects]") {
  // Before: the row was taken for a header and dropped without a word.
  CHECK(errorOf("nan,2,3,4,5,6\n1,2,3,4,5,6\n", lecture()) ==
        "d.csv:1: error: column 1: \"nan\" is not a number: NaN and infinity are not allowed");
  CHECK(errorOf("1,2,3,4,5,-Inf\n", lecture()) ==
        "d.csv:1: error: column 6: \"-Inf\" is not a number: NaN and infinity are not allowed");
  CHECK(errorOf("1,2,+infinity,4,5,6\n", lecture()) ==
        "d.csv:1: error: column 3: \"+infinity\" is not a number: NaN and infinity are not allowed");
  // A field that is not a number (nor such a spelling) still makes a header, beside a nan.
  Expected<Dataset> d = parseCsv("nan,x1,x2,x3,t0,t1\n1,2,3,4,5,6\n", "d.csv", lecture());
  REQUIRE(d);
  CHECK(d->rows == 1);
  CHECK(errorOf("x,nan\n", lecture()) == "d.csv:1: error: no examples: the file has only a header line");
}

TEST_CASE("CSV: tabs or semicolons as separators are named", "[csv][defects]") {
  // Before: a one-row tab-separated file read "no examples: the file has only a header line".
  CHECK(errorOf("1\t2\t3\t4\t5\t6\n", lecture()) ==
        "d.csv:1: error: the fields are separated by tabs; a data file separates them with ',' (CSV)");
  CHECK(errorOf("1;2;3;4;5;6\n", lecture()) ==
        "d.csv:1: error: the fields are separated by semicolons; a data file separates them with ',' (CSV)");
  CHECK(errorOf("\n 1 \t 2.5\t3\t4\t5\t6 \r\n", lecture()) ==
        "d.csv:2: error: the fields are separated by tabs; a data file separates them with ',' (CSV)");
  // A tab-separated header is skipped like any header; the first row after it is then refused.
  CHECK(errorOf("x0\tx1\tx2\tx3\tt0\tt1\n1\t2\t3\t4\t5\t6\n", lecture()) ==
        "d.csv:2: error: the fields are separated by tabs; a data file separates them with ',' (CSV)");
  // Tabs around fields and inside a comma-separated line are still fine.
  Expected<Dataset> d = parseCsv("1\t,2,3,4,5,\t6\n", "d.csv", lecture());
  REQUIRE(d);
  CHECK(d->targets == std::vector<double>{5, 6});
}

// --- IDX ------------------------------------------------------------------------------------------

namespace {
std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}
// count images of rows x cols whose pixel k of image i is (i * 7 + k) % 256.
std::string idxImages(uint32_t count, uint32_t rows, uint32_t cols) {
  std::string s = std::string("\0\0\x08\x03", 4) + be32(count) + be32(rows) + be32(cols);
  for (uint32_t i = 0; i < count; ++i)
    for (uint32_t k = 0; k < rows * cols; ++k) s += static_cast<char>((i * 7 + k) % 256);
  return s;
}
std::string idxLabels(std::vector<uint8_t> labels) {
  std::string s = std::string("\0\0\x08\x01", 4) + be32(static_cast<uint32_t>(labels.size()));
  for (uint8_t l : labels) s += static_cast<char>(l);
  return s;
}
std::string gzip(const std::string &bytes, const std::filesystem::path &dir) {
  auto raw = dir / "raw.bin";
  std::ofstream(raw, std::ios::binary) << bytes;
  std::string cmd = "gzip -n -c '" + raw.string() + "' > '" + (dir / "raw.bin.gz").string() + "'";
  REQUIRE(std::system(cmd.c_str()) == 0);
  std::ifstream in(dir / "raw.bin.gz", std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void write(const std::filesystem::path &p, const std::string &bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}
Program imageProgram(Shape in, int64_t k) { return program({decl("img", std::move(in))}, {decl("label", {k})}); }
std::string idxError(const std::filesystem::path &images, const std::filesystem::path &labels, const Program &p) {
  Expected<Dataset> d = loadIdx(images.string(), labels.empty() ? "" : labels.string(), p);
  return d ? "OK" : d.error().message;
}
} // namespace

TEST_CASE("IDX: raw and gzip files give the same bytes, one-hot labels", "[idx]") {
  auto dir = tempDir();
  const std::string images = idxImages(3, 2, 4), labels = idxLabels({2, 0, 1});
  write(dir / "i.idx", images);
  write(dir / "l.idx", labels);
  write(dir / "i.gz", gzip(images, dir));
  write(dir / "l.gz", gzip(labels, dir));
  // [8] and [1, 2, 4] both fit images of 2 x 4.
  for (Shape in : {Shape{8}, Shape{1, 2, 4}})
    for (auto [i, l] : {std::pair{"i.idx", "l.idx"}, std::pair{"i.gz", "l.gz"}, std::pair{"i.gz", "l.idx"}}) {
      Expected<Dataset> d = loadIdx((dir / i).string(), (dir / l).string(), imageProgram(in, 3));
      REQUIRE(d);
      CHECK(d->rows == 3);
      CHECK(d->inputs.empty()); // the pixels stay bytes
      REQUIRE(d->inputBytes.size() == 24);
      CHECK(d->inputBytes[0] == 0);
      CHECK(d->inputBytes[9] == 8); // image 1, pixel 1: 7 + 1
      CHECK(d->classTargets);
      CHECK(d->hasTargets);
      CHECK(d->targets == std::vector<double>{0, 0, 1, 1, 0, 0, 0, 1, 0});
      d->expandInputBytes();
      CHECK(d->inputBytes.empty());
      REQUIRE(d->inputs.size() == 24);
      CHECK(d->inputs[9] == 8.0);
    }
  // Images alone (predict): no targets.
  Expected<Dataset> d = loadIdx((dir / "i.gz").string(), "", imageProgram({8}, 3));
  REQUIRE(d);
  CHECK_FALSE(d->hasTargets);
  CHECK(d->targets.empty());
  CHECK(looksLikeIdx(images));
  CHECK(looksLikeIdx(gzip(images, dir)));
  CHECK_FALSE(looksLikeIdx("1,2,3\n"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("IDX: malformed files name the file and the byte offset", "[idx]") {
  auto dir = tempDir();
  const Program p = imageProgram({4}, 3);
  const auto I = dir / "i", L = dir / "l";
  const std::string i = I.string(), l = L.string();
  write(L, idxLabels({0, 1}));
  auto images = [&](const std::string &bytes) {
    write(I, bytes);
    return idxError(I, L, p);
  };
  const std::string good = idxImages(2, 2, 2);
  CHECK(images(good) == "OK");
  // Wrong magic: another type, the labels given as images, nothing like IDX.
  CHECK(images(idxLabels({0, 1})) ==
        i + ": error: at byte 0: wrong magic number 00 00 08 01 (idx1-ubyte labels: are the images "
            "and the labels swapped?); expected 00 00 08 03 (idx3-ubyte images)");
  CHECK(images("P5\n28 28\n") == i + ": error: at byte 0: wrong magic number 50 35 0a 32; expected "
                                     "00 00 08 03 (idx3-ubyte images)");
  CHECK(images(std::string("\0\0\x0d\x03", 4) + good.substr(4)) ==
        i + ": error: at byte 0: wrong magic number 00 00 0d 03 (elements of type float; only "
            "unsigned bytes are read); expected 00 00 08 03 (idx3-ubyte images)");
  // Truncated: in the magic, in the header, in an image.
  CHECK(images(std::string("\0\0", 2)) == i + ": error: at byte 2: the file ends inside the magic "
                                              "number (2 bytes); an idx3-ubyte images file starts with 00 00 08 03");
  CHECK(images(good.substr(0, 10)) == i + ": error: at byte 10: the file ends inside the 16-byte "
                                          "header of idx3-ubyte images");
  CHECK(images(good.substr(0, 21)) == i + ": error: at byte 21: the file ends in image 2 of 2 (2 "
                                          "images of 2 x 2 take 8 bytes after the 16-byte header; the file has 21 in all)");
  CHECK(images(good + "xy") == i + ": error: at byte 24: 2 bytes after the last of the 2 images of 2 x 2");
  // A count so large its bytes overflow 64 bits: still the plain message.
  CHECK(images(std::string("\0\0\x08\x03", 4) + be32(0xffffffff) + be32(0xffffffff) + be32(0xffffffff)).starts_with(
        i + ": error: at byte 16: the file ends in image 1 of 4294967295"));
  CHECK(images(std::string("\0\0\x08\x03", 4) + be32(0) + be32(2) + be32(2)) ==
        i + ": error: at byte 4: the file holds no images (count 0)");
  CHECK(images(std::string("\0\0\x08\x03", 4) + be32(1) + be32(2) + be32(0)) ==
        i + ": error: at byte 12: images of 2 x 0 pixels are empty");
  // The image size must be the input's element count.
  CHECK(images(idxImages(2, 3, 3)) ==
        i + ": error: at byte 8: the images are 3 x 3 = 9 pixels; input img[4] has 4 elements");

  write(I, good);
  auto labels = [&](const std::string &bytes) {
    write(L, bytes);
    return idxError(I, L, p);
  };
  CHECK(labels(idxLabels({0, 1, 2})) == l + ": error: at byte 4: 3 labels for the 2 images of " + i);
  CHECK(labels(idxLabels({0, 3})) == l + ": error: at byte 9: label 3 of image 1 is not a class index 0..2 of target label[3]");
  CHECK(labels(idxLabels({0, 1}).substr(0, 9)) == l + ": error: at byte 9: the file ends after 1 of its 2 labels");
  CHECK(labels(idxLabels({0, 1}) + "z") == l + ": error: at byte 10: 1 byte after the last of the 2 labels");
  CHECK(labels(good) == l + ": error: at byte 0: wrong magic number 00 00 08 03 (idx3-ubyte images: "
                            "are the images and the labels swapped?); expected 00 00 08 01 (idx1-ubyte labels)");

  // gzip: a truncated stream, corrupt data, garbage after it; offsets in the compressed file.
  write(L, idxLabels({0, 1}));
  const std::string gz = gzip(good, dir);
  CHECK(images(gz) == "OK");
  CHECK(images(gz.substr(0, gz.size() - 12)) ==
        i + ": error: at byte " + std::to_string(gz.size() - 12) + " of the compressed file: the gzip data ends early (a truncated file)");
  std::string corrupt = gz;
  corrupt[3] = '\xff'; // reserved flag bits
  CHECK(images(corrupt).starts_with(i + ": error: at byte "));
  CHECK(images(corrupt).find("corrupt gzip data") != std::string::npos);
  CHECK(images(gz + "junk") == i + ": error: at byte " + std::to_string(gz.size()) +
                                   " of the compressed file: 4 bytes after the end of the gzip data");
  CHECK(images(gz + gzip(std::string(), dir)) == "OK"); // a second (empty) member is fine
  // Offsets inside a decompressed file say so.
  CHECK(images(gzip(good.substr(0, 10), dir)) == i + ": error: at byte 10 of the decompressed data: the "
                                                     "file ends inside the 16-byte header of idx3-ubyte images");

  // The program: one input; a target [K] for labels (the message names the program, here "").
  write(I, good);
  CHECK(idxError(I, L, program({decl("a", {2}), decl("b", {2})}, {decl("t", {3})})) ==
        ": error: IDX images are the one input of a program; this one has 2 inputs (a[2], b[2])");
  CHECK(idxError(I, L, program({decl("img", {4})}, {decl("t", {})})) ==
        ": error: --labels gives a class index for one target [K] with K > 1; the program's target is t");
  CHECK(idxError(I, L, program({decl("img", {4})}, {})) ==
        ": error: --labels gives a class index for one target [K] with K > 1; the program has no target");
  std::filesystem::remove_all(dir);
}

TEST_CASE("IDX: a decompressed stream beyond the limit is refused, not allocated", "[idx]") {
  // 64 KiB of zeros compress to a few hundred bytes; a 1000-byte limit stops the inflation.
  auto dir = tempDir();
  const std::string bomb = gzip(std::string(65536, '\0'), dir);
  Expected<std::string> r = gunzipIfGzip(bomb, "b.gz", 1000);
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("b.gz: error: at byte ") == 0);
  CHECK(r.error().message.find("decompresses to more than 1000 bytes, the most that can be read") != std::string::npos);
  r = gunzipIfGzip(bomb, "b.gz", 65536);
  REQUIRE(r);
  CHECK(r->size() == 65536);
  std::filesystem::remove_all(dir);
}
