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
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

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

Expected<std::string> readDataFile(const std::string &path) {
  MemoryBudget b = memoryBudget();
  double limit = b.bytes / 4;
  if (!(limit < static_cast<double>(SIZE_MAX))) return readFile(path);
  return readFile(path, static_cast<size_t>(limit),
                  fmt::format("a quarter of the {} {}", formatBytes(b.bytes),
                              b.from == "available now" ? "of memory available now" : "allowed by " + b.from));
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

    if (firstLine) { // a header has a field that is neither empty nor (syntactically) a number
      firstLine = false;
      bool header = false;
      for (std::string_view f : fields) {
        double v;
        std::string why;
        if (!f.empty() && scanNumber(f, v, why) == Num::NotNumber) header = true;
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
