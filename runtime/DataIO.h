// DataIO: reading CSV data files into the flat example-after-example layout, strictly and with
// FILE:LINE errors (never a crash or hang, whatever the bytes), and atomic file writes.
#pragma once
#include "Expected.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nabla {

struct Program;

struct Dataset {
  int64_t rows = 0;
  std::vector<double> inputs;  // rows * inputCount, example after example, declaration order
  std::vector<double> targets; // rows * targetCount; a class-index column arrives one-hot
  bool classTargets = false;   // the file gave the target as one class-index column
  bool hasTargets = true;      // false when targetsOptional and the file has input columns only
};

// The whole file. A missing or unreadable file: "FILE: error: cannot open: <strerror>". A file of
// more than maxBytes (or an endless one, like /dev/zero) is refused before, or as soon as, that
// many are read: "FILE: error: file is 20.0 MiB; at most 16.0 MiB can be read" (`reason`, if
// given, follows in parentheses).
Expected<std::string> readFile(const std::string &path, size_t maxBytes = SIZE_MAX,
                               const std::string &reason = {});

// A data or params file, which becomes numbers that take several times its size: at most a
// quarter of memoryBudget() (Limits.h) is read, so that an endless file (/dev/zero) or one that
// cannot fit is an error, not an allocation failure.
Expected<std::string> readDataFile(const std::string &path);

// The largest .nn source that nabla reads.
inline constexpr size_t kMaxSourceFileBytes = size_t(16) << 20;

// Rules (LANGUAGE.md, "Data files"): one example a row, fields separated by ','; columns are the
// inputs flattened row-major in declaration order, then the targets likewise. Alternatively, when
// the program has exactly one target, declared [K] with K > 1, one integer class-index column
// (0..K-1, `3` or `3.0`), one-hot encoded. With targetsOptional, rows of just the input columns are
// accepted too (hasTargets = false). The first data row's column count picks the form; every row
// must then have that count. A first line with a field that is neither empty nor a number is a
// header and is skipped. Fields are numbers as in the language with an optional sign (+ or -),
// surrounded by optional spaces or tabs; CRLF, blank lines and a leading UTF-8 BOM are fine.
// Errors: "FILE:LINE: error: MESSAGE", LINE 1-based, columns named 1-based. With float32 (the
// data is for --dtype f32), a number beyond the f32 range (about 3.4e38) is an error too, where it
// stands, instead of an infinity that would end training later.
Expected<Dataset> parseCsv(std::string_view text, const std::string &fileName,
                           const Program &program, bool targetsOptional = false,
                           bool float32 = false);
Expected<Dataset> loadCsv(const std::string &path, const Program &program,
                          bool targetsOptional = false, bool float32 = false);

// Writes a new temporary file in the same directory, created exclusively (O_EXCL | O_NOFOLLOW,
// PATH.tmp.<pid> or, if something is there already, PATH.tmp.<pid>.<random>: a file or symbolic
// link planted there is never followed, truncated or removed), fsyncs it and renames it over PATH,
// so readers see the old file or the new one, never a part; a file replaced keeps its
// permissions, and a symbolic link PATH keeps pointing where it did (the file it points to is the
// one replaced). PATH that is a device, a FIFO or a socket (/dev/stdout, /dev/null) is written in
// place, never replaced; a FIFO that no process reads is an error at once, not a wait. On failure
// the temp file is removed and the error reads "PATH: error: cannot write: <strerror>".
Expected<bool> writeFileAtomically(const std::string &path, std::string_view contents);

// Several files, all or none: every temporary file is written and synced before the first is
// renamed, so a failure (a directory where a file should go, a name too long, a full disk) leaves
// every target as it was.
Expected<bool> writeFilesAtomically(const std::vector<std::pair<std::string, std::string_view>> &files);

// Before long work whose result goes to PATH (train's --save, --log, --plot): whether a write there
// can succeed, without writing it. A directory, a directory that does not exist or cannot be
// written, a name too long, a device that cannot be opened for writing: "PATH: error: cannot write
// the OPTION file: <strerror>". A FIFO passes (it is opened only to write).
Expected<bool> checkOutputFile(const std::string &path, const std::string &option);

} // namespace nabla
