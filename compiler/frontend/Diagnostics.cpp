// Diagnostic rendering: one function prints the location, the message, the source line and the
// caret, so that every stage reports errors the same way.
#include "Diagnostics.h"

#include <algorithm>

namespace nabla {

std::string_view SourceFile::lineText(uint32_t line) const {
  size_t pos = 0;
  for (uint32_t l = 1; l < line; ++l) {
    pos = text.find('\n', pos);
    if (pos == std::string::npos) return {};
    ++pos;
  }
  size_t end = text.find('\n', pos);
  if (end == std::string::npos) end = text.size();
  std::string_view s(text.data() + pos, end - pos);
  if (!s.empty() && s.back() == '\r') s.remove_suffix(1);
  // A byte-order mark at the start of the file is not part of line 1 (the lexer skips it too).
  if (line == 1 && s.substr(0, 3) == "\xEF\xBB\xBF") s.remove_prefix(3);
  return s;
}

// Length of the valid UTF-8 sequence at s[i], or 0 when the bytes there are not valid UTF-8.
size_t utf8Length(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  size_t n;
  uint32_t min;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) n = 2, min = 0x80;
  else if ((c & 0xF0) == 0xE0) n = 3, min = 0x800;
  else if ((c & 0xF8) == 0xF0) n = 4, min = 0x10000;
  else return 0;
  if (i + n > s.size()) return 0;
  uint32_t cp = c & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

const char *DiagnosticEngine::formatOf(DiagId id) {
  switch (id) {
#define DIAG(Id, Severity, Format)                                                                 \
  case DiagId::Id:                                                                                 \
    return Format;
#include "Diagnostics.def"
  }
  return "?";
}

static Severity severityOf(DiagId id) {
  switch (id) {
#define DIAG(Id, Sev, Format)                                                                      \
  case DiagId::Id:                                                                                 \
    return Severity::Sev;
#include "Diagnostics.def"
  }
  return Severity::Error;
}

void DiagnosticEngine::add(DiagId id, SourceRange range, std::string message) {
  Severity sev = severityOf(id);
  if (sev == Severity::Error) {
    suppressNotes_ = false;
    // Inside a layer body, every call checks the body again: an error that one call has already
    // reported at the same place with the same words is not news (nor are its notes).
    if (!context_.empty())
      for (const Diagnostic &d : diags_)
        if (d.id == id && d.range.begin.offset == range.begin.offset && d.message == message) {
          suppressNotes_ = true;
          return;
        }
    if (errors_ >= kMaxErrors) return;
    ++errors_;
  } else if (errors_ >= kMaxErrors || suppressNotes_) {
    return;
  }
  diags_.push_back({id, sev, range, std::move(message), sev == Severity::Error ? context_
                                                                             : std::vector<CallContext>{}});
}

void DiagnosticEngine::pushContext(SourceRange call, std::string layer) {
  context_.insert(context_.begin(), CallContext{call, std::move(layer)});
}

void DiagnosticEngine::popContext() {
  if (!context_.empty()) context_.erase(context_.begin());
}

// Prints a source line safely: control bytes and bytes that would upset a terminal become spaces
// or '?', so the caret still lines up (the caret line counts characters, not bytes).
static std::string printableLine(std::string_view line) {
  std::string out;
  out.reserve(line.size());
  for (size_t i = 0; i < line.size();) {
    unsigned char c = static_cast<unsigned char>(line[i]);
    size_t n = c < 0x80 ? 1 : utf8Length(line, i);
    if (n == 0) out += '?', n = 1; // invalid UTF-8
    else if (c < 0x20 || c == 0x7f) out += ' ';
    else out.append(line.substr(i, n));
    i += n;
  }
  return out;
}

std::string DiagnosticEngine::render() const {
  // Errors in source order, each followed by its notes.
  std::vector<std::vector<const Diagnostic *>> groups;
  for (const Diagnostic &d : diags_) {
    if (d.severity != Severity::Note || groups.empty()) groups.emplace_back();
    groups.back().push_back(&d);
  }
  std::stable_sort(groups.begin(), groups.end(), [](auto &a, auto &b) {
    const SourceLoc &x = a.front()->range.begin, &y = b.front()->range.begin;
    return x.line != y.line ? x.line < y.line : x.col < y.col;
  });
  std::string out;
  // `FILE:LINE:COL: SEVERITY: MESSAGE`, the line, and a caret under the place. LINE:COL count
  // bytes (as clang does); the caret is placed by characters, so that it stands under a
  // multi-byte character, one column wide.
  auto print = [&](const char *sev, const SourceRange &range, const std::string &message) {
    const SourceLoc &loc = range.begin;
    if (!loc.valid()) {
      out += fmt::format("{}: {}: {}\n", file_.name, sev, message);
      return;
    }
    out += fmt::format("{}:{}:{}: {}: {}\n", file_.name, loc.line, loc.col, sev, message);
    std::string_view line = file_.lineText(loc.line);
    // Very long lines are shown as a window around the column.
    size_t start = 0;
    constexpr size_t kWindow = 160;
    if (line.size() > kWindow && loc.col > kWindow / 2) start = loc.col - kWindow / 2;
    // Do not start the window inside a multi-byte character.
    while (start > 0 && start < line.size() && (static_cast<unsigned char>(line[start]) & 0xC0) == 0x80)
      --start;
    std::string_view shown = line.substr(std::min(start, line.size()), kWindow);
    out += printableLine(shown) + "\n";
    size_t col = loc.col - 1 >= start ? loc.col - 1 - start : 0;
    size_t len = std::max<uint32_t>(1, range.length);
    if (col + len > shown.size()) len = shown.size() > col ? shown.size() - col : 1;
    // Characters (as printableLine prints them) before the place and under it.
    auto chars = [&](size_t from, size_t to) {
      size_t n = 0;
      for (size_t i = from; i < to && i < shown.size();) {
        unsigned char c = static_cast<unsigned char>(shown[i]);
        size_t k = c < 0x80 ? 1 : utf8Length(shown, i);
        i += k ? k : 1;
        ++n;
      }
      return n;
    };
    size_t ccol = chars(0, col) + (col > shown.size() ? col - shown.size() : 0);
    size_t clen = std::max<size_t>(1, chars(col, col + len));
    out += std::string(ccol, ' ') + "^" + std::string(clen - 1, '~') + "\n";
  };
  for (auto &group : groups) {
    for (const Diagnostic *dp : group) {
      const Diagnostic &d = *dp;
      const char *sev = d.severity == Severity::Error     ? "error"
                        : d.severity == Severity::Warning ? "warning"
                                                          : "note";
      print(sev, d.range, d.message);
    }
    // An error inside a layer body: where the body was instantiated, innermost call first.
    for (const CallContext &c : group.front()->context)
      print("note", c.call, fmt::format("in layer '{}' called here", c.layer));
  }
  if (errors_ >= kMaxErrors)
    out += fmt::format("{}: note: stopped after {} errors; fix these first\n", file_.name, kMaxErrors);
  return out;
}

} // namespace nabla
