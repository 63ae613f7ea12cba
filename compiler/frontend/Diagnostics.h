// Diagnostics: clang-style messages (`FILE:LINE:COL: error: MESSAGE`, the source line, a caret or
// range under the place). Every message text lives in Diagnostics.def; the engine collects them
// so that one run reports every independent error of a file.
#pragma once
#include "Source.h"

#include <fmt/format.h>

#include <string>
#include <vector>

namespace nabla {

enum class DiagId {
#define DIAG(Id, Severity, Format) Id,
#include "Diagnostics.def"
};
enum class Severity { Error, Warning, Note };

// A layer call whose body is being checked: errors inside the body get a note at each call.
struct CallContext {
  SourceRange call;
  std::string layer;
};

struct Diagnostic {
  DiagId id;
  Severity severity;
  SourceRange range;
  std::string message;
  std::vector<CallContext> context; // errors only: the layer calls around it, innermost first
};

class DiagnosticEngine {
public:
  explicit DiagnosticEngine(const SourceFile &file) : file_(file) {}

  template <class... Args> void report(DiagId id, SourceRange range, const Args &...args) {
    std::string message;
    try {
      message = fmt::format(fmt::runtime(formatOf(id)), args...);
    } catch (const fmt::format_error &) {
      message = formatOf(id); // a message with the wrong arguments (a bug) still says something
    }
    add(id, range, std::move(message));
  }
  template <class... Args> void report(DiagId id, SourceLoc loc, const Args &...args) {
    report(id, SourceRange{loc, 1}, args...);
  }

  // While a layer body is checked for a call, errors get a note `in layer 'NAME' called here`
  // at the call; an error identical to one already reported (another call of the same body)
  // is dropped with its notes.
  void pushContext(SourceRange call, std::string layer);
  void popContext();

  bool hasErrors() const { return errors_ > 0; }
  int errorCount() const { return errors_; }
  const std::vector<Diagnostic> &diagnostics() const { return diags_; }
  const SourceFile &file() const { return file_; }

  // All diagnostics, each as `FILE:LINE:COL: error: MESSAGE`, the source line and a caret line.
  std::string render() const;

  // Stop collecting after this many errors (later ones are usually follow-on noise).
  static constexpr int kMaxErrors = 50;

private:
  static const char *formatOf(DiagId id);
  void add(DiagId id, SourceRange range, std::string message);
  const SourceFile &file_;
  std::vector<Diagnostic> diags_;
  std::vector<CallContext> context_; // innermost first
  bool suppressNotes_ = false;
  int errors_ = 0;
};

} // namespace nabla
