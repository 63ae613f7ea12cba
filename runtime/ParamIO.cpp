// ParamIO: reads parameter files with a SAX handler over nlohmann's iterative parser, so that the
// nesting it accepts is bounded (an object, then at most four levels of arrays, no deeper than
// the param's rank) whatever the input.
#include "ParamIO.h"

#include "DataIO.h"
#include "Program.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace nabla {

namespace {

using Json = nlohmann::json;

std::string expectedShape(const Shape &s) {
  if (s.rank() == 0) return "a number";
  if (s.rank() == 1) return fmt::format("an array of {} numbers", s[0]);
  if (s.rank() == 2) return fmt::format("{} rows of {} numbers (shape {})", s[0], s[1], s.str());
  return fmt::format("nested arrays of shape {}", s.str());
}

// The shape of the dims from axis k on: "[3, 4]".
Shape tailShape(const Shape &s, int k) {
  return Shape(std::vector<int64_t>(s.dims.begin() + k, s.dims.end()));
}

// Builds the flat array from SAX events. depth_: 0 outside the top object, 1 inside it, 2 + k
// inside an array of axis k of a param (k < rank, at most 4). Anything deeper than the param's
// rank is refused before it is entered, so the nesting is bounded by 1 + 4 whatever the input.
class ParamReader final : public nlohmann::json_sax<Json> {
public:
  // `store` false: only validate (a text too short to hold every number cannot be complete, and
  // the flat array of a huge program is not allocated for it).
  ParamReader(const Program &p, bool store)
      : flat(store ? static_cast<size_t>(p.paramCount()) : 0, 0.0), program_(p), seen_(p.params.size()) {}

  std::vector<double> flat;
  std::string error;       // content or syntax message, without the "FILE...: error: " prefix
  size_t errorPos = 0;     // 1-based byte position of a syntax error, 0 for a content error

  bool seen(size_t i) const { return seen_[i]; }

  bool null() override { return mismatch("null"); }
  bool boolean(bool) override { return mismatch("a boolean"); }
  bool number_integer(number_integer_t v) override { return number(static_cast<double>(v)); }
  bool number_unsigned(number_unsigned_t v) override { return number(static_cast<double>(v)); }
  bool number_float(number_float_t v, const string_t &) override { return number(v); }
  bool string(string_t &) override { return mismatch("a string"); }
  bool binary(binary_t &) override { return mismatch("binary data"); }

  bool start_object(size_t) override {
    if (depth_ != 0) return mismatch("an object");
    depth_ = 1;
    return true;
  }
  bool key(string_t &k) override {
    cur_ = program_.findParam(k);
    if (!cur_) {
      std::string names;
      for (const Decl &p : program_.params) names += (names.empty() ? "" : ", ") + p.name;
      return fail(fmt::format("unknown param {}; {}", quoteJson(k),
                              names.empty() ? "the program has no params"
                                            : "the program's params are " + names));
    }
    auto seen = seen_.begin() + (cur_ - program_.params.data());
    if (*seen) return fail(fmt::format("param \"{}\" is given twice", cur_->name));
    *seen = true;
    return true;
  }
  bool end_object() override {
    depth_ = 0;
    return true;
  }
  bool start_array(size_t) override {
    // An array of axis k = depth_ - 1 may open while k < rank.
    if (depth_ == 0 || depth_ - 1 >= cur_->shape.rank()) return mismatch("an array");
    const int k = depth_ - 1;
    if (k > 0) index_[k - 1] = count_[k - 1]++;
    count_[k] = 0;
    ++depth_;
    return true;
  }
  bool end_array() override {
    const Shape &s = cur_->shape;
    const int k = depth_ - 2, rank = s.rank();
    if (count_[k] != s[k]) {
      const std::string name = fmt::format("param \"{}\"", cur_->name);
      if (k == 0 && rank <= 2)
        return fail(fmt::format("{}: expected {} {}, found {}", name, s[0],
                                rank == 1 ? "numbers" : "rows", count_[0]));
      if (k == 1 && rank == 2)
        return fail(fmt::format("{}: row {} has {} numbers; expected {}", name, index_[0],
                                count_[1], s[1]));
      if (k == 0)
        return fail(fmt::format("{}: expected {} arrays of shape {}, found {} (shape {})", name,
                                s[0], tailShape(s, 1).str(), count_[0], s.str()));
      return fail(fmt::format("{}: {} has {} {}; expected {} (shape {})", name, position(k),
                              count_[k], k + 1 == rank ? "numbers" : "arrays", s[k], s.str()));
    }
    --depth_;
    return true;
  }
  bool parse_error(size_t position, const std::string &token,
                   const nlohmann::detail::exception &ex) override {
    // A syntax error points at the byte that broke it; an overflowing number at its start.
    if (ex.id == 406 && !token.empty() && token.size() <= position) position -= token.size() - 1;
    // what() is "[json.exception.KIND.ID] parse error at line L, column C: MESSAGE"; keep MESSAGE.
    std::string_view what = ex.what();
    if (size_t p = what.find("] "); p != what.npos) what.remove_prefix(p + 2);
    if (what.substr(0, 15) == "parse error at ") {
      if (size_t p = what.find(": "); p != what.npos) what.remove_prefix(p + 2);
    }
    error.clear();
    for (char c : what) { // the "last read: '...'" part may hold any byte
      auto u = static_cast<unsigned char>(c);
      if (u < 0x20 || u >= 0x7f) error += fmt::format("\\x{:02x}", u);
      else error += c;
    }
    errorPos = std::max<size_t>(position, 1);
    return false;
  }

private:
  bool fail(std::string message) {
    error = std::move(message);
    return false;
  }
  // "[1][0]": the indices of the enclosing arrays of axis 0 .. k-1 (the array of axis k).
  std::string position(int k) const {
    std::string out;
    for (int a = 0; a < k; ++a) out += fmt::format("[{}]", index_[a]);
    return out;
  }
  bool number(double v) {
    const Shape *s = cur_ ? &cur_->shape : nullptr;
    const bool store = !flat.empty();
    if (depth_ == 1 && s->rank() == 0) {
      if (store) flat[static_cast<size_t>(cur_->offset)] = v;
      return true;
    }
    const int k = depth_ - 2;
    if (depth_ < 2 || k + 1 != s->rank()) return mismatch("a number");
    // Row-major: the enclosing indices, then this one; out-of-range ones are reported at the
    // array's end and never stored.
    bool inRange = count_[k] < (*s)[k];
    int64_t at = 0;
    for (int a = 0; a < k; ++a) {
      inRange &= index_[a] < (*s)[a];
      at = at * (*s)[a] + index_[a];
    }
    at = at * (*s)[k] + count_[k];
    if (store && inRange) flat[static_cast<size_t>(cur_->offset + at)] = v;
    ++count_[k];
    return true;
  }
  // The value about to be read is `found`, which does not fit where it stands.
  bool mismatch(const char *found) {
    if (depth_ == 0)
      return fail(fmt::format("expected an object {{\"NAME\": value, ...}} at the top, found {}",
                              found));
    const std::string name = fmt::format("param \"{}\"", cur_->name);
    const Shape &s = cur_->shape;
    if (depth_ == 1)
      return fail(fmt::format("{} is {}; expected {}", name, found, expectedShape(s)));
    const int k = depth_ - 2; // the value is element count_[k] of an array of axis k
    const std::string at = position(k) + fmt::format("[{}]", count_[k]);
    if (k + 1 < s.rank()) {
      if (s.rank() == 2)
        return fail(fmt::format("{}: row {} is {}; expected an array of {} numbers", name,
                                count_[0], found, s[1]));
      return fail(fmt::format("{}: {} is {}; expected {}", name, at, found,
                              expectedShape(tailShape(s, k + 1))));
    }
    return fail(fmt::format("{}: element {} is {}; expected a number", name, at, found));
  }

  const Program &program_;
  std::vector<bool> seen_;
  const Decl *cur_ = nullptr;
  int depth_ = 0;
  int64_t count_[4] = {0, 0, 0, 0}; // elements read so far in the open array of each axis
  int64_t index_[4] = {0, 0, 0, 0}; // the index, within axis k, of the open array of axis k + 1
};

} // namespace

Expected<std::vector<double>> parseParams(std::string_view text, const std::string &fileName,
                                          const Program &program) {
  // Every number takes a byte at least: a shorter text cannot be complete.
  ParamReader reader(program, static_cast<uint64_t>(program.paramCount()) <= text.size());
  bool ok = false;
  try {
    ok = Json::sax_parse(text.begin(), text.end(), &reader);
  } catch (const std::exception &e) { // not expected: errors come through parse_error
    return Error{fmt::format("{}: error: {}", fileName, e.what())};
  }
  if (!ok && reader.errorPos > 0) {
    size_t at = std::min(reader.errorPos - 1, text.size());
    std::string_view before = text.substr(0, at);
    size_t line = 1 + static_cast<size_t>(std::count(before.begin(), before.end(), '\n'));
    size_t lineStart = before.rfind('\n');
    size_t col = at - (lineStart == before.npos ? 0 : lineStart + 1) + 1;
    return Error{fmt::format("{}:{}:{}: error: {}", fileName, line, col, reader.error)};
  }
  if (!ok) return Error{fmt::format("{}: error: {}", fileName, reader.error)};

  std::string missing;
  int nMissing = 0;
  for (size_t i = 0; i < program.params.size(); ++i) {
    const Decl &p = program.params[i];
    if (!reader.seen(i))
      missing += fmt::format("{}\"{}\" ({})", nMissing++ ? ", " : "", p.name,
                             p.shape.isScalar() ? "scalar" : "shape " + p.shape.str());
  }
  if (nMissing)
    return Error{fmt::format("{}: error: missing param{} {}", fileName, nMissing > 1 ? "s" : "",
                             missing)};
  if (static_cast<int64_t>(reader.flat.size()) != program.paramCount())
    throw InternalError("parseParams: every param was read from a text shorter than their numbers");
  return std::move(reader.flat);
}

Expected<bool> checkParamsFitFloat32(const std::vector<double> &params, const std::string &fileName,
                                     const Program &program) {
  const double max = static_cast<double>(std::numeric_limits<float>::max());
  for (const Decl &d : program.params)
    for (int64_t i = 0; i < d.shape.numel(); ++i) {
      const double v = params.at(static_cast<size_t>(d.offset + i));
      if (!(std::fabs(v) > max)) continue;
      // " element [1][0][2]": i's row-major indices.
      std::string at;
      for (int64_t a = d.shape.rank() - 1, rest = i; a >= 0; --a) {
        at = fmt::format("[{}]", rest % d.shape[static_cast<int>(a)]) + at;
        rest /= d.shape[static_cast<int>(a)];
      }
      if (!at.empty()) at = " element " + at;
      return Error{fmt::format("{}: error: param \"{}\"{} is {}, out of the f32 range (at most "
                               "about 3.4e38 in magnitude); --dtype f64 reads it",
                               fileName, d.name, at, v)};
    }
  return true;
}

Expected<std::vector<double>> loadParams(const std::string &path, const Program &program) {
  Expected<std::string> text = readDataFile(path);
  if (!text) return text.error();
  return parseParams(*text, path, program);
}

std::string formatNumberJson(double v) {
  if (!std::isfinite(v)) return "null";
  if (v == 0 && std::signbit(v)) return "-0.0"; // "-0" would read back as the integer 0
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general);
  return std::string(buf, end);
}

std::string quoteJson(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += {'\\', c};
    else if (static_cast<unsigned char>(c) < 0x20) out += fmt::format("\\u{:04x}", int(c));
    else out += c;
  }
  return out + "\"";
}

void appendNested(std::string &out, const double *data, const Shape &shape, int indent) {
  if (shape.rank() == 0) {
    out += formatNumberJson(*data);
  } else if (shape.rank() == 1) {
    out += '[';
    for (int64_t i = 0; i < shape[0]; ++i) out += (i ? ", " : "") + formatNumberJson(data[i]);
    out += ']';
  } else {
    // One sub-array a line, each indented two more; the recursion is as deep as the rank (<= 4).
    const Shape sub = Shape(std::vector<int64_t>(shape.dims.begin() + 1, shape.dims.end()));
    const int64_t step = sub.numel();
    out += "[\n";
    for (int64_t r = 0; r < shape[0]; ++r) {
      out.append(static_cast<size_t>(indent + 2), ' ');
      appendNested(out, data + r * step, sub, indent + 2);
      out += r + 1 < shape[0] ? ",\n" : "\n";
    }
    out.append(static_cast<size_t>(indent), ' ');
    out += ']';
  }
}

std::string formatParams(const Program &program, const std::vector<double> &flat) {
  std::string out = "{";
  for (size_t i = 0; i < program.params.size(); ++i) {
    const Decl &p = program.params[i];
    out += (i ? ",\n  " : "\n  ") + quoteJson(p.name) + ": ";
    appendNested(out, flat.data() + p.offset, p.shape, 2);
  }
  return out + (program.params.empty() ? "}\n" : "\n}\n");
}

} // namespace nabla
