// DataIO: the strict CSV reader (one pass over the bytes, no recursion, every error a value with
// FILE:LINE) and the atomic file writer.
#include "DataIO.h"

#include "Limits.h"
#include "Program.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <limits>
#include <optional>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

namespace nabla {

namespace {

bool isDigit(char c) { return c >= '0' && c <= '9'; }
bool isBlank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && isBlank(s.front())) s.remove_prefix(1);
  while (!s.empty() && isBlank(s.back())) s.remove_suffix(1);
  return s;
}

// A field as it may be shown in a message: quoted, at most 40 bytes, unprintable bytes as \xNN.
std::string quoteField(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < 40; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') out += {'\\', static_cast<char>(c)};
    else if (c >= 0x20 && c < 0x7f) out += static_cast<char>(c);
    else out += fmt::format("\\x{:02x}", c);
  }
  out += s.size() > 40 ? "...\"" : "\"";
  return out;
}

enum class Num { Ok, NotNumber, Overflow };

// number ::= [+-]? digit+ ('.' digit+)? ([eE] [+-]? digit+)?   (the language's, plus a sign)
// On failure `why` says what is wrong, for the message.
Num scanNumber(std::string_view f, double &out, std::string &why) {
  size_t i = 0, n = f.size();
  bool neg = i < n && f[i] == '-';
  if (i < n && (f[i] == '+' || f[i] == '-')) ++i;
  size_t start = i;
  if (i == n || !isDigit(f[i])) {
    std::string rest;
    for (size_t k = i; k < n && k < i + 9; ++k) rest += static_cast<char>(f[k] | 0x20);
    if (f.empty()) why = "is empty";
    else if (rest == "nan" || rest == "inf" || rest == "infinity")
      why = "is not a number: NaN and infinity are not allowed";
    else if (i < n && f[i] == '.') why = "is not a number: a leading digit is required";
    else why = "is not a number";
    return Num::NotNumber;
  }
  while (i < n && isDigit(f[i])) ++i;
  size_t intEnd = i;
  if (i < n && f[i] == '.') {
    if (++i == n || !isDigit(f[i])) {
      why = "is not a number: a '.' must be followed by digits";
      return Num::NotNumber;
    }
    while (i < n && isDigit(f[i])) ++i;
  }
  size_t mantEnd = i;
  int64_t exponent = 0;
  if (i < n && (f[i] == 'e' || f[i] == 'E')) {
    ++i;
    bool expNeg = i < n && f[i] == '-';
    if (i < n && (f[i] == '+' || f[i] == '-')) ++i;
    if (i == n || !isDigit(f[i])) {
      why = "is not a number: an exponent must be followed by digits";
      return Num::NotNumber;
    }
    for (; i < n && isDigit(f[i]); ++i)
      exponent = std::min<int64_t>(exponent * 10 + (f[i] - '0'), 1000000000);
    if (expNeg) exponent = -exponent;
  }
  if (i != n) {
    why = "is not a number";
    return Num::NotNumber;
  }
  double v = 0;
  auto [ptr, ec] = std::from_chars(f.data() + start, f.data() + n, v);
  if (ec == std::errc::result_out_of_range) {
    // from_chars says this for underflow too: find the decimal exponent of the first nonzero
    // digit; a value that big overflows, a smaller one underflows to zero.
    int64_t mag = 0;
    size_t k = start;
    while (k < mantEnd && (f[k] == '0' || f[k] == '.')) ++k;
    mag = k < intEnd ? static_cast<int64_t>(intEnd - k) - 1 : -static_cast<int64_t>(k - intEnd);
    if (mag + exponent >= 0) {
      why = "is out of the double range";
      return Num::Overflow;
    }
    v = 0;
  } else if (ec != std::errc() || ptr != f.data() + n) {
    why = "is not a number";
    return Num::NotNumber;
  }
  out = neg ? -v : v;
  return Num::Ok;
}

// "nan", "-inf", "Infinity" and the like: not numbers in a data file, but not a header's name
// either (a first row `nan,1,2` is a row with an error, not a header to skip).
bool isNanOrInfSpelling(std::string_view f) {
  if (!f.empty() && (f[0] == '+' || f[0] == '-')) f.remove_prefix(1);
  if (f.size() > 8) return false;
  std::string lower;
  for (char c : f) lower += static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
  return lower == "nan" || lower == "inf" || lower == "infinity";
}

// A line without a ',' whose fields are separated by tabs or ';' instead (splitting there gives at
// least two fields): that separator, else 0.
char wrongSeparator(std::string_view line) {
  if (line.find(',') != line.npos) return 0;
  std::string_view t = trim(line);
  for (char sep : {'\t', ';'}) {
    size_t at = t.find(sep);
    if (at != t.npos && at > 0 && at + 1 < t.size()) return sep;
  }
  return 0;
}

// "x[4]", or "s" for a scalar.
std::string declName(const Decl &d) { return d.shape.isScalar() ? d.name : d.name + d.shape.str(); }

// "4 for input x[4], 1 for input s"
std::string describeDecls(const std::vector<Decl> &ds, const char *kind) {
  std::string out;
  for (const Decl &d : ds)
    out += fmt::format("{}{} for {} {}", out.empty() ? "" : ", ", d.shape.numel(), kind, declName(d));
  return out;
}

// The column layouts a file may use, the first one that fits the column count wins.
struct Form {
  enum Kind { Full, ClassIndex, InputsOnly } kind;
  int64_t cols;
  std::string description; // "6 (4 for input x[4], 2 for target t[2])"
};

std::vector<Form> formsFor(const Program &p, bool targetsOptional) {
  std::vector<Form> forms;
  std::string in = describeDecls(p.inputs, "input"), tg = describeDecls(p.targets, "target");
  auto join = [](const std::string &a, const std::string &b) {
    return a.empty() ? b : b.empty() ? a : a + ", " + b;
  };
  int64_t nIn = p.inputCount(), nT = p.targetCount();
  forms.push_back({Form::Full, nIn + nT, fmt::format("{} ({})", nIn + nT, join(in, tg))});
  if (p.targets.size() == 1 && p.targets[0].shape.rank() == 1 && p.targets[0].shape[0] > 1)
    forms.push_back({Form::ClassIndex, nIn + 1,
                     fmt::format("{} ({})", nIn + 1,
                                 join(in, fmt::format("1 class index 0..{} for target {}",
                                                      nT - 1, declName(p.targets[0]))))});
  if (targetsOptional && nT > 0)
    forms.push_back({Form::InputsOnly, nIn, fmt::format("{} (inputs only: {})", nIn, in)});
  return forms;
}

std::string listForms(const std::vector<Form> &forms) {
  std::string out;
  for (size_t i = 0; i < forms.size(); ++i)
    out += (i == 0 ? "" : i + 1 == forms.size() ? " or " : ", ") + forms[i].description;
  return out;
}

// A file to read is a regular file, a pipe or FIFO, a socket or a terminal. Another character
// device (/dev/zero, /dev/urandom, a disk's raw node) is refused before reading it: it never ends,
// or is not data; /dev/null, which ends at once, reads as empty.
Expected<bool> readableKind(int fd, const struct stat &st, const std::string &path) {
  if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode)) return true;
  if (S_ISCHR(st.st_mode) && ::isatty(fd)) return true;
  struct stat null {};
  if (S_ISCHR(st.st_mode) && ::stat("/dev/null", &null) == 0 && S_ISCHR(null.st_mode) &&
      null.st_rdev == st.st_rdev)
    return true;
  return Error{fmt::format("{}: error: cannot read: it is a {} device, not a file", path,
                           S_ISCHR(st.st_mode) ? "character" : "block")};
}

} // namespace

Expected<std::string> readFile(const std::string &path, size_t maxBytes, const std::string &reason) {
  auto fail = [&](const char *what) {
    return Error{fmt::format("{}: error: {}: {}", path, what, std::strerror(errno))};
  };
  auto tooBig = [&](double size) { // 0: not known, more than maxBytes
    const std::string max = formatBytes(static_cast<double>(maxBytes)),
                      why = reason.empty() ? "" : " (" + reason + ")";
    return Error{size > 0 ? fmt::format("{}: error: file is {}; at most {} can be read{}", path,
                                        formatBytes(size), max, why)
                          : fmt::format("{}: error: file is larger than {}, the most that can be read{}",
                                        path, max, why)};
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail("cannot open");
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    ::close(fd);
    errno = EISDIR;
    return fail("cannot open");
  }
  if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) > maxBytes) {
    ::close(fd);
    return tooBig(static_cast<double>(st.st_size));
  }
  if (Expected<bool> file = readableKind(fd, st, path); !file) {
    ::close(fd);
    return file.error();
  }
  // Memory never passes maxBytes while reading: a regular file's string is reserved at its size
  // (exactly); anything else (a pipe, a terminal) is gathered in a vector whose capacity grows by
  // doubling but is capped at maxBytes (a string's growth is at least doubling, which would cost
  // up to twice the budget for an endless pipe), and copied into the string once it has ended.
  const bool regular = S_ISREG(st.st_mode);
  std::string text;
  std::vector<char> stream;
  if (regular && st.st_size > 0) text.reserve(static_cast<size_t>(st.st_size));
  char buf[65536];
  for (;;) {
    ssize_t got = ::read(fd, buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      int e = errno;
      ::close(fd);
      errno = e;
      return fail("cannot read");
    }
    if (got == 0) break;
    const size_t n = static_cast<size_t>(got), have = regular ? text.size() : stream.size();
    if (n > maxBytes - have) { // a file that grew, a device, a pipe
      ::close(fd);
      return tooBig(0);
    }
    if (regular) {
      text.append(buf, n);
    } else {
      if (have + n > stream.capacity())
        stream.reserve(std::min(maxBytes, std::max(have + n, std::max<size_t>(2 * stream.capacity(), 1 << 16))));
      stream.insert(stream.end(), buf, buf + n);
    }
  }
  ::close(fd);
  if (!regular) text.assign(stream.data(), stream.size());
  return text;
}

namespace {

// What a data file may take: a quarter of the memory budget, and the reason for messages.
std::pair<size_t, std::string> dataFileLimit() {
  MemoryBudget b = memoryBudget();
  double limit = b.bytes / 4;
  if (!(limit < static_cast<double>(SIZE_MAX))) return {SIZE_MAX, {}};
  return {static_cast<size_t>(limit),
          fmt::format("a quarter of the {} {}", formatBytes(b.bytes),
                      b.from == "available now" ? "of memory available now" : "allowed by " + b.from)};
}

} // namespace

Expected<std::string> readDataFile(const std::string &path) {
  auto [limit, reason] = dataFileLimit();
  return readFile(path, limit, reason);
}

Expected<Dataset> parseCsv(std::string_view text, const std::string &fileName,
                           const Program &program, bool targetsOptional, bool float32) {
  const int64_t nIn = program.inputCount(), nT = program.targetCount();
  const std::vector<Form> forms = formsFor(program, targetsOptional);
  const Form *form = nullptr; // chosen by the first data row
  int64_t formLine = 0, headerLine = 0, lineNo = 0;
  auto error = [&](const std::string &msg) {
    return Error{fmt::format("{}:{}: error: {}", fileName, lineNo, msg)};
  };

  Dataset data;
  std::vector<std::string_view> fields;
  size_t pos = text.substr(0, 3) == "\xEF\xBB\xBF" ? 3 : 0; // UTF-8 byte order mark
  bool firstLine = true;
  while (pos < text.size()) {
    size_t end = std::min(text.find('\n', pos), text.size());
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++lineNo;
    if (trim(line).empty()) continue;

    fields.clear();
    for (size_t start = 0;;) {
      size_t comma = std::min(line.find(',', start), line.size());
      fields.push_back(trim(line.substr(start, comma - start)));
      if (comma == line.size()) break;
      start = comma + 1;
    }

    if (char sep = wrongSeparator(line); sep && (firstLine || fields.size() == 1)) {
      // One field that holds several: the file is not comma-separated. The first line is refused
      // when its parts are numbers (else it may be a header of one column named "a;b"); a later
      // row, which the column count would refuse anyway, always.
      bool numbers = true;
      std::string_view rest = trim(line);
      for (size_t start = 0;;) {
        size_t at = std::min(rest.find(sep, start), rest.size());
        std::string_view f = trim(rest.substr(start, at - start));
        double v;
        std::string why;
        numbers &= f.empty() || scanNumber(f, v, why) == Num::Ok || isNanOrInfSpelling(f);
        if (at == rest.size()) break;
        start = at + 1;
      }
      if (numbers || !firstLine)
        return error(fmt::format("the fields are separated by {}; a data file separates them "
                                 "with ',' (CSV)", sep == '\t' ? "tabs" : "semicolons"));
    }

    if (firstLine) {
      // A header has a field that is neither empty nor a number nor a spelling of NaN or
      // infinity (those are errors in a data row, reported below, not a reason to skip it).
      firstLine = false;
      bool header = false;
      for (std::string_view f : fields) {
        double v;
        std::string why;
        if (!f.empty() && scanNumber(f, v, why) == Num::NotNumber && !isNanOrInfSpelling(f))
          header = true;
      }
      if (header) {
        headerLine = lineNo;
        continue;
      }
    }

    const int64_t count = static_cast<int64_t>(fields.size());
    const char *trailing = fields.back().empty() && count > 1
                               ? " (the last field is empty: a trailing comma?)"
                               : "";
    if (!form) {
      for (const Form &f : forms)
        if (f.cols == count) {
          form = &f;
          break;
        }
      if (!form)
        return error(fmt::format("row has {} field{}{}; expected {}", count,
                                 count == 1 ? "" : "s", trailing, listForms(forms)));
      formLine = lineNo;
      data.classTargets = form->kind == Form::ClassIndex;
      data.hasTargets = form->kind != Form::InputsOnly;
    } else if (count != form->cols) {
      return error(fmt::format("row has {} field{}{}; expected {} like the first row (line {})",
                               count, count == 1 ? "" : "s", trailing, form->description,
                               formLine));
    }

    for (int64_t c = 0; c < count; ++c) {
      std::string_view f = fields[static_cast<size_t>(c)];
      double v = 0;
      std::string why;
      if (scanNumber(f, v, why) != Num::Ok)
        return error(fmt::format("column {}: {} {}", c + 1, f.empty() ? "the field" : quoteField(f),
                                 why));
      if (float32 && std::fabs(v) > static_cast<double>(std::numeric_limits<float>::max()))
        return error(fmt::format("column {}: {} is out of the f32 range (at most about 3.4e38 in "
                                 "magnitude); --dtype f64 reads it",
                                 c + 1, quoteField(f)));
      if (c < nIn) {
        data.inputs.push_back(v);
      } else if (form->kind == Form::Full) {
        data.targets.push_back(v);
      } else { // ClassIndex
        if (!(v >= 0 && v < static_cast<double>(nT) && v == static_cast<double>(int64_t(v))))
          return error(fmt::format("column {}: class index {} for target {} is not an integer "
                                   "in 0..{}",
                                   c + 1, quoteField(f), declName(program.targets[0]), nT - 1));
        for (int64_t k = 0; k < nT; ++k) data.targets.push_back(k == int64_t(v) ? 1.0 : 0.0);
      }
    }
    ++data.rows;
  }

  if (data.rows == 0) {
    lineNo = headerLine ? headerLine : 1;
    return error(headerLine       ? "no examples: the file has only a header line"
                 : text.empty() ? "no examples: the file is empty"
                                : "no examples: the file has only blank lines");
  }
  return data;
}

Expected<Dataset> loadCsv(const std::string &path, const Program &program, bool targetsOptional,
                          bool float32) {
  Expected<std::string> text = readDataFile(path);
  if (!text) return text.error();
  return parseCsv(*text, path, program, targetsOptional, float32);
}

void Dataset::expandInputBytes() {
  if (inputBytes.empty()) return;
  inputs.assign(inputBytes.begin(), inputBytes.end());
  std::vector<uint8_t>().swap(inputBytes);
}

// --- IDX ----------------------------------------------------------------------------------------

namespace {

constexpr unsigned char kGzipMagic[2] = {0x1f, 0x8b};

bool isGzip(std::string_view b) {
  return b.size() >= 2 && static_cast<unsigned char>(b[0]) == kGzipMagic[0] &&
         static_cast<unsigned char>(b[1]) == kGzipMagic[1];
}

uint32_t bigEndian32(std::string_view b, size_t at) {
  auto u = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(b[at + i])); };
  return u(0) << 24 | u(1) << 16 | u(2) << 8 | u(3);
}

std::string hexBytes(std::string_view b, size_t at, size_t n) {
  std::string out;
  for (size_t i = at; i < at + n && i < b.size(); ++i)
    out += fmt::format("{}{:02x}", out.empty() ? "" : " ", static_cast<unsigned char>(b[i]));
  return out;
}

const char *idxTypeName(unsigned char t) {
  switch (t) {
  case 0x08: return "unsigned byte";
  case 0x09: return "signed byte";
  case 0x0B: return "16-bit integer";
  case 0x0C: return "32-bit integer";
  case 0x0D: return "float";
  case 0x0E: return "double";
  default: return nullptr;
  }
}

// The shared checks of an IDX header: the magic (00 00 08 DIMS), the whole header present.
// `kind` names the file type for messages ("idx3-ubyte images").
std::string checkIdxHeader(std::string_view b, unsigned char dims, const char *kind, const std::string &at0) {
  const size_t header = 4 + 4 * size_t(dims);
  if (b.size() < 4 || b[0] != 0 || b[1] != 0 || static_cast<unsigned char>(b[2]) != 0x08 ||
      static_cast<unsigned char>(b[3]) != dims) {
    if (b.size() < 4)
      return fmt::format("at byte {}{}: the file ends inside the magic number ({} byte{}); an "
                         "{} file starts with 00 00 08 {:02x}",
                         b.size(), at0, b.size(), b.size() == 1 ? "" : "s", kind, dims);
    std::string what;
    const auto type = static_cast<unsigned char>(b[2]);
    const auto d = static_cast<unsigned char>(b[3]);
    if (b[0] == 0 && b[1] == 0 && d == 1 && dims == 3 && type == 0x08) what = " (idx1-ubyte labels: are the images and the labels swapped?)";
    else if (b[0] == 0 && b[1] == 0 && d == 3 && dims == 1 && type == 0x08) what = " (idx3-ubyte images: are the images and the labels swapped?)";
    else if (b[0] == 0 && b[1] == 0 && type != 0x08 && idxTypeName(type))
      what = fmt::format(" (elements of type {}; only unsigned bytes are read)", idxTypeName(type));
    else if (b[0] == 0 && b[1] == 0 && type == 0x08 && d != dims)
      what = fmt::format(" ({} dimensions)", d);
    return fmt::format("at byte 0{}: wrong magic number {}{}; expected 00 00 08 {:02x} ({})", at0,
                       hexBytes(b, 0, 4), what, dims, kind);
  }
  if (b.size() < header)
    return fmt::format("at byte {}{}: the file ends inside the {}-byte header of {}", b.size(), at0,
                       header, kind);
  return {};
}

} // namespace

bool looksLikeIdx(std::string_view b) {
  return isGzip(b) || (b.size() >= 3 && b[0] == 0 && b[1] == 0 && static_cast<unsigned char>(b[2]) == 0x08);
}

Expected<std::string> gunzipIfGzip(std::string bytes, const std::string &fileName, size_t maxBytes,
                                   bool *compressed) {
  if (compressed) *compressed = isGzip(bytes);
  if (!isGzip(bytes)) {
    if (bytes.size() > maxBytes)
      return Error{fmt::format("{}: error: file is {}; at most {} can be read", fileName,
                               formatBytes(static_cast<double>(bytes.size())),
                               formatBytes(static_cast<double>(maxBytes)))};
    return bytes;
  }
  z_stream z{};
  if (inflateInit2(&z, 15 + 16) != Z_OK) // 15: the largest window; + 16: gzip, not zlib, framing
    return Error{fmt::format("{}: error: cannot start decompressing: {}", fileName,
                             z.msg ? z.msg : "zlib failed")};
  std::string out;
  size_t inAt = 0; // bytes of `bytes` consumed
  auto error = [&](const std::string &msg) {
    inflateEnd(&z);
    return Error{fmt::format("{}: error: at byte {} of the compressed file: {}", fileName, inAt, msg)};
  };
  // The gzip trailer's size (mod 2^32) of the last member, trusted only as far as deflate can
  // expand (1032:1) and the limit allow: one allocation for the usual file, no reallocations.
  if (bytes.size() >= 18) {
    const auto *t = reinterpret_cast<const unsigned char *>(bytes.data() + bytes.size() - 4);
    const size_t isize = size_t(t[0]) | size_t(t[1]) << 8 | size_t(t[2]) << 16 | size_t(t[3]) << 24;
    out.reserve(std::min({isize, maxBytes, bytes.size() * 1032}));
  }
  for (;;) {
    if (z.avail_in == 0) {
      const size_t n = std::min<size_t>(bytes.size() - inAt, size_t(1) << 30);
      z.next_in = reinterpret_cast<Bytef *>(bytes.data() + inAt);
      z.avail_in = static_cast<uInt>(n);
    }
    if (out.size() == maxBytes)
      return error(fmt::format("the data decompresses to more than {}, the most that can be read",
                               formatBytes(static_cast<double>(maxBytes))));
    // Room for at least as much again as there is (64 KiB at first), within the limit.
    const size_t room = std::min(std::max<size_t>(size_t(1) << 16, out.capacity() - out.size()),
                                 maxBytes - out.size());
    const size_t before = out.size();
    out.resize(before + room);
    z.next_out = reinterpret_cast<Bytef *>(out.data() + before);
    z.avail_out = static_cast<uInt>(room);
    const uInt availIn = z.avail_in;
    const int rc = inflate(&z, Z_NO_FLUSH);
    inAt += availIn - z.avail_in;
    out.resize(before + (room - z.avail_out));
    if (rc == Z_STREAM_END) {
      // Several gzip members one after the other are one file (as gzip -d reads them).
      if (inAt == bytes.size()) break;
      if (!isGzip(std::string_view(bytes).substr(inAt)))
        return error(fmt::format("{} bytes after the end of the gzip data",
                                 bytes.size() - inAt));
      inflateReset(&z);
      z.avail_in = 0;
      continue;
    }
    if (rc == Z_OK) continue; // progress; the next call says whether more is possible
    if (rc == Z_BUF_ERROR && inAt == bytes.size()) return error("the gzip data ends early (a truncated file)");
    if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT)
      return error(fmt::format("corrupt gzip data ({})", z.msg ? z.msg : "invalid data"));
    if (rc == Z_MEM_ERROR) return error("out of memory");
    return error(fmt::format("cannot decompress (zlib error {})", rc));
  }
  inflateEnd(&z);
  std::string().swap(bytes);
  return out;
}

Expected<std::string> readMaybeGzip(const std::string &path, size_t maxBytes, bool *compressed) {
  auto [limit, reason] = dataFileLimit();
  limit = std::min(limit, maxBytes);
  Expected<std::string> raw = readFile(path, limit, reason);
  if (!raw) return raw.error();
  Expected<std::string> out = gunzipIfGzip(std::move(*raw), path, limit, compressed);
  if (!out && !reason.empty() && out.error().message.find("the most that can be read") != std::string::npos)
    return Error{out.error().message + " (" + reason + ")"};
  return out;
}

Expected<IdxImages> parseIdxImages(std::string_view b, const std::string &fileName, bool compressed) {
  const std::string at0 = compressed ? " of the decompressed data" : "";
  auto error = [&](const std::string &msg) { return Error{fmt::format("{}: error: {}", fileName, msg)}; };
  if (std::string bad = checkIdxHeader(b, 3, "idx3-ubyte images", at0); !bad.empty()) return error(bad);
  IdxImages im;
  im.count = bigEndian32(b, 4), im.rows = bigEndian32(b, 8), im.cols = bigEndian32(b, 12);
  if (im.count == 0) return error(fmt::format("at byte 4{}: the file holds no images (count 0)", at0));
  if (im.rows == 0 || im.cols == 0)
    return error(fmt::format("at byte {}{}: images of {} x {} pixels are empty", im.rows == 0 ? 8 : 12,
                             at0, im.rows, im.cols));
  // Each size is below 2^32: the image size fits, the total may not (in 128 bits it does).
  const uint64_t image = static_cast<uint64_t>(im.rows) * static_cast<uint64_t>(im.cols);
  __extension__ typedef unsigned __int128 U128;
  const U128 need = static_cast<U128>(image) * static_cast<uint64_t>(im.count) + 16;
  const uint64_t have = b.size();
  if (need > have) {
    const uint64_t complete = (have - 16) / image;
    return error(fmt::format("at byte {}{}: the file ends in image {} of {} ({} images of {} x {} "
                             "take {} bytes after the 16-byte header; the file has {} in all)",
                             have, at0, complete + 1, im.count, im.count, im.rows, im.cols,
                             static_cast<double>(need - 16) < 1e19 ? fmt::format("{}", static_cast<uint64_t>(need - 16))
                                                                   : std::string("more than 2^64"),
                             have));
  }
  if (need < have)
    return error(fmt::format("at byte {}{}: {} byte{} after the last of the {} images of {} x {}",
                             static_cast<uint64_t>(need), at0, have - static_cast<uint64_t>(need),
                             have - static_cast<uint64_t>(need) == 1 ? "" : "s", im.count, im.rows, im.cols));
  im.pixels.assign(reinterpret_cast<const uint8_t *>(b.data()) + 16,
                   reinterpret_cast<const uint8_t *>(b.data()) + b.size());
  return im;
}

Expected<std::vector<uint8_t>> parseIdxLabels(std::string_view b, const std::string &fileName,
                                              bool compressed) {
  const std::string at0 = compressed ? " of the decompressed data" : "";
  auto error = [&](const std::string &msg) { return Error{fmt::format("{}: error: {}", fileName, msg)}; };
  if (std::string bad = checkIdxHeader(b, 1, "idx1-ubyte labels", at0); !bad.empty()) return error(bad);
  const uint64_t count = bigEndian32(b, 4), have = b.size() - 8;
  if (count == 0) return error(fmt::format("at byte 4{}: the file holds no labels (count 0)", at0));
  if (count > have)
    return error(fmt::format("at byte {}{}: the file ends after {} of its {} labels", b.size(), at0,
                             have, count));
  if (count < have)
    return error(fmt::format("at byte {}{}: {} byte{} after the last of the {} labels", count + 8,
                             at0, have - count, have - count == 1 ? "" : "s", count));
  return std::vector<uint8_t>(reinterpret_cast<const uint8_t *>(b.data()) + 8,
                              reinterpret_cast<const uint8_t *>(b.data()) + b.size());
}

Expected<Dataset> makeIdxDataset(IdxImages images, const std::vector<uint8_t> *labels,
                                 const std::string &imagesName, const std::string &labelsName,
                                 const Program &p) {
  const std::string &prog = p.source.name;
  auto names = [](const std::vector<Decl> &ds) {
    std::string out;
    for (const Decl &d : ds) out += (out.empty() ? "" : ", ") + declName(d);
    return out;
  };
  if (p.inputs.size() != 1)
    return Error{fmt::format("{}: error: IDX images are the one input of a program; this one has {} "
                             "inputs{}", prog, p.inputs.size(),
                             p.inputs.empty() ? "" : " (" + names(p.inputs) + ")")};
  const Decl &in = p.inputs[0];
  const int64_t size = images.rows * images.cols;
  if (in.shape.numel() != size)
    return Error{fmt::format("{}: error: at byte 8: the images are {} x {} = {} pixels; input {} has "
                             "{} element{}", imagesName, images.rows, images.cols, size,
                             declName(in), in.shape.numel(), in.shape.numel() == 1 ? "" : "s")};
  Dataset d;
  d.rows = images.count;
  if (labels) {
    if (p.targets.size() != 1 || p.targets[0].shape.rank() != 1 || p.targets[0].shape[0] < 2)
      return Error{fmt::format("{}: error: --labels gives a class index for one target [K] with "
                               "K > 1; {}", prog,
                               p.targets.empty() ? std::string("the program has no target")
                               : p.targets.size() == 1 ? "the program's target is " + names(p.targets)
                                                       : "the program's targets are " + names(p.targets))};
    const Decl &t = p.targets[0];
    const int64_t K = t.shape[0];
    if (static_cast<int64_t>(labels->size()) != images.count)
      return Error{fmt::format("{}: error: at byte 4: {} label{} for the {} image{} of {}", labelsName,
                               labels->size(), labels->size() == 1 ? "" : "s", images.count,
                               images.count == 1 ? "" : "s", imagesName)};
    d.targets.assign(static_cast<size_t>(images.count * K), 0.0);
    for (int64_t i = 0; i < images.count; ++i) {
      const int64_t v = (*labels)[static_cast<size_t>(i)];
      if (v >= K)
        return Error{fmt::format("{}: error: at byte {}: label {} of image {} is not a class index "
                                 "0..{} of target {}", labelsName, 8 + i, v, i, K - 1, declName(t))};
      d.targets[static_cast<size_t>(i * K + v)] = 1.0;
    }
    d.classTargets = true;
  } else {
    d.hasTargets = p.targets.empty();
  }
  d.inputBytes = std::move(images.pixels);
  return d;
}

Expected<Dataset> loadIdx(const std::string &imagesPath, const std::string &labelsPath,
                          const Program &program) {
  bool gz = false;
  Expected<std::string> raw = readMaybeGzip(imagesPath, SIZE_MAX, &gz);
  if (!raw) return raw.error();
  Expected<IdxImages> images = parseIdxImages(*raw, imagesPath, gz);
  std::string().swap(*raw); // the pixels are in `images` now
  if (!images) return images.error();
  std::optional<std::vector<uint8_t>> labels;
  if (!labelsPath.empty()) {
    Expected<std::string> lraw = readMaybeGzip(labelsPath, SIZE_MAX, &gz);
    if (!lraw) return lraw.error();
    Expected<std::vector<uint8_t>> l = parseIdxLabels(*lraw, labelsPath, gz);
    if (!l) return l.error();
    labels = std::move(*l);
  }
  return makeIdxDataset(std::move(*images), labels ? &*labels : nullptr, imagesPath, labelsPath, program);
}

namespace {

// Writes all of `contents` to fd, retrying short writes and EINTR; errno is set on failure.
bool writeAll(int fd, std::string_view contents) {
  for (size_t done = 0; done < contents.size();) {
    ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

} // namespace

namespace {

// Where a write to `requested` goes. A symbolic link: the file it points to is replaced, not the
// link. A device, a FIFO or a socket (/dev/stdout, /dev/null, a pipe) is written in place:
// renaming a file over it would replace the device node itself.
struct Target {
  std::string requested, path;
  bool exists = false, inPlace = false;
  struct stat st {};
};

Error writeError(const std::string &requested, int e) {
  return Error{fmt::format("{}: error: cannot write: {}", requested, std::strerror(e))};
}

Expected<Target> resolveTarget(const std::string &requested) {
  Target t;
  t.requested = t.path = requested;
  if (::lstat(t.path.c_str(), &t.st) == 0 && S_ISLNK(t.st.st_mode))
    if (char *real = ::realpath(t.path.c_str(), nullptr)) {
      t.path = real;
      std::free(real);
    }
  t.exists = ::stat(t.path.c_str(), &t.st) == 0;
  if (t.exists && S_ISDIR(t.st.st_mode)) return writeError(requested, EISDIR);
  if (!t.exists) { // a name the file system cannot take fails now, before any file is written
    const size_t slash = t.path.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : t.path.substr(0, slash);
    const long nameMax = ::pathconf(dir.c_str(), _PC_NAME_MAX);
    if (nameMax > 0 && t.path.size() - (slash == std::string::npos ? 0 : slash + 1) > static_cast<size_t>(nameMax))
      return writeError(requested, ENAMETOOLONG);
  }
  t.inPlace = t.exists && !S_ISREG(t.st.st_mode);
  return t;
}

// Opens a target that is written in place. A FIFO is opened without blocking: with no process
// reading it, open fails with ENXIO at once (instead of waiting for a reader forever).
Expected<int> openInPlace(const Target &t) {
  int fd = ::open(t.path.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0 && errno == ENXIO && S_ISFIFO(t.st.st_mode))
    return Error{fmt::format("{}: error: cannot write: it is a FIFO that no process is reading",
                             t.requested)};
  if (fd < 0) return writeError(t.requested, errno);
  int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK); // then write as usual, blocking
  return fd;
}

// Creates a new temporary file next to `path`, exclusively (O_EXCL | O_NOFOLLOW, as mkstemp
// does): a file or a symbolic link planted at the name is never opened, truncated or followed;
// another name is tried instead. PATH.tmp.<pid> first, then PATH.tmp.<pid>.<random>; for a PATH
// whose name fits the file system only without a suffix, DIR/.nabla-<pid>[.<random>].tmp.
int createTemp(const std::string &path, std::string &tmp) {
  static uint64_t counter = 0;
  uint64_t mix = static_cast<uint64_t>(::getpid()) * 0x9e3779b97f4a7c15ull ^
                 static_cast<uint64_t>(reinterpret_cast<uintptr_t>(&tmp));
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  bool shortName = false;
  for (int attempt = 0; attempt < 100; ++attempt) {
    std::string random;
    if (attempt > 0) {
      mix = (mix ^ ++counter ^ static_cast<uint64_t>(::time(nullptr))) * 0xbf58476d1ce4e5b9ull;
      random = fmt::format(".{:08x}", static_cast<uint32_t>(mix >> 32));
    }
    tmp = shortName ? fmt::format("{}.nabla-{}{}.tmp", dir, ::getpid(), random)
                    : fmt::format("{}.tmp.{}{}", path, ::getpid(), random);
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd < 0 && errno == ENAMETOOLONG && !shortName) {
      shortName = true;
      attempt = -1; // the short names from the start
      continue;
    }
    if (fd >= 0 || errno != EEXIST) return fd;
  }
  errno = EEXIST;
  return -1;
}

// One file of a write: its contents in place, or in a complete, synced temporary file that
// commit() renames over the target.
struct Pending {
  Target target;
  std::string_view contents;
  std::string tmp; // empty: written in place (or nothing created yet)
};

Expected<bool> writeInPlace(const Target &t, std::string_view contents) {
  Expected<int> fd = openInPlace(t);
  if (!fd) return fd.error();
  if (!writeAll(*fd, contents)) {
    int e = errno;
    ::close(*fd);
    return writeError(t.requested, e);
  }
  if (::close(*fd) != 0) return writeError(t.requested, errno);
  return true;
}

Expected<bool> prepare(Pending &p) {
  const Target &t = p.target;
  int fd = createTemp(t.path, p.tmp);
  if (fd < 0) {
    int e = errno;
    p.tmp.clear();
    return writeError(t.requested, e);
  }
  auto fail = [&] {
    int e = errno;
    ::close(fd);
    ::unlink(p.tmp.c_str());
    p.tmp.clear();
    return writeError(t.requested, e);
  };
  // The replaced file's permissions stay (params kept private stay private).
  if (t.exists && ::fchmod(fd, t.st.st_mode & 07777) != 0) return fail();
  if (!writeAll(fd, p.contents)) return fail();
  if (::fsync(fd) != 0) return fail();
  if (::close(fd) != 0) {
    int e = errno;
    ::unlink(p.tmp.c_str());
    p.tmp.clear();
    return writeError(t.requested, e);
  }
  return true;
}

void syncDirectoryOf(const std::string &path) { // best effort: make a rename durable
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  if (int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

// All of `files` or none: every temporary file is written and synced before the first rename; a
// failure before then removes them all and leaves every target as it was. Targets written in place
// (devices, FIFOs) are written last, after the renames.
Expected<bool> writeAllOrNone(std::vector<Pending> &files) {
  auto cleanup = [&] {
    for (Pending &p : files)
      if (!p.tmp.empty()) ::unlink(p.tmp.c_str());
  };
  for (Pending &p : files) {
    if (p.target.inPlace) continue;
    Expected<bool> ok = prepare(p);
    if (!ok) {
      cleanup();
      return ok.error();
    }
  }
  for (size_t i = 0; i < files.size(); ++i) {
    Pending &p = files[i];
    if (p.target.inPlace) continue;
    if (::rename(p.tmp.c_str(), p.target.path.c_str()) != 0) {
      int e = errno;
      cleanup();
      return writeError(p.target.requested, e);
    }
    p.tmp.clear();
    syncDirectoryOf(p.target.path);
  }
  for (Pending &p : files)
    if (p.target.inPlace)
      if (Expected<bool> ok = writeInPlace(p.target, p.contents); !ok) return ok.error();
  return true;
}

} // namespace

Expected<bool> writeFileAtomically(const std::string &requested, std::string_view contents) {
  return writeFilesAtomically({{requested, contents}});
}

Expected<bool> writeFilesAtomically(const std::vector<std::pair<std::string, std::string_view>> &files) {
  std::vector<Pending> pending;
  for (const auto &[path, contents] : files) {
    Expected<Target> t = resolveTarget(path);
    if (!t) return t.error();
    pending.push_back(Pending{std::move(*t), contents, {}});
  }
  return writeAllOrNone(pending);
}

Expected<bool> checkOutputFile(const std::string &path, const std::string &option) {
  auto error = [&](const std::string &why) {
    return Error{fmt::format("{}: error: cannot write the {} file: {}", path, option, why)};
  };
  errno = 0;
  Expected<Target> t = resolveTarget(path);
  if (!t) { // "PATH: error: cannot write: WHY" from resolveTarget, said for this option
    const std::string &m = t.error().message;
    return error(m.substr(m.find("cannot write: ") + 14));
  }
  if (t->inPlace) {
    // A FIFO is not opened now: opening and closing it would end its reader's input. A device
    // must be one that can be opened for writing.
    if (S_ISFIFO(t->st.st_mode) || S_ISSOCK(t->st.st_mode)) return true;
    int fd = ::open(t->path.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) return error(std::strerror(errno));
    ::close(fd);
    return true;
  }
  // A regular file or none yet: the name must fit the file system, and a temporary file must be
  // possible beside it (the directory exists and is writable).
  std::string tmp;
  int fd = createTemp(t->path, tmp);
  if (fd < 0) return error(std::strerror(errno));
  ::close(fd);
  ::unlink(tmp.c_str());
  return true;
}

} // namespace nabla
