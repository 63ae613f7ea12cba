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
  // IDX images: the pixels (0..255), rows * inputCount bytes, in place of `inputs`, which stays
  // empty: 60,000 images of 28 x 28 take 47 MB so, not the 376 MB of doubles; the trainer converts
  // them once to its dtype. Code that needs doubles calls expandInputBytes() first.
  std::vector<uint8_t> inputBytes;

  // Moves inputBytes into `inputs` as doubles (and frees the bytes); nothing when there are none.
  void expandInputBytes();
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
// must then have that count. A first line with a field that is neither empty nor a number nor a
// spelling of NaN or infinity is a header and is skipped (`nan,1` is a row, and an error). A line
// of numbers separated by tabs or ';' instead of ',' is an error that says so. Any rank of input
// or target is one column an element, row-major. Fields are numbers as in the language with an optional sign (+ or -),
// surrounded by optional spaces or tabs; CRLF, blank lines and a leading UTF-8 BOM are fine.
// Errors: "FILE:LINE: error: MESSAGE", LINE 1-based, columns named 1-based. With float32 (the
// data is for --dtype f32), a number beyond the f32 range (about 3.4e38) is an error too, where it
// stands, instead of an infinity that would end training later.
Expected<Dataset> parseCsv(std::string_view text, const std::string &fileName,
                           const Program &program, bool targetsOptional = false,
                           bool float32 = false);
Expected<Dataset> loadCsv(const std::string &path, const Program &program,
                          bool targetsOptional = false, bool float32 = false);

// --- IDX (the MNIST file format; LANGUAGE.md, "Image data (IDX files)") ---------------------------
//
// An idx3-ubyte image file: the magic 00 00 08 03, then three big-endian 32-bit sizes (count, rows,
// columns), then count * rows * columns bytes, image after image, row-major. An idx1-ubyte label
// file: 00 00 08 01, the count, then count bytes. Either may be gzip-compressed (found by its
// magic bytes 1f 8b, not by the name). Errors name the file and the byte offset:
//   "FILE: error: at byte 0: wrong magic number 00 00 08 01; expected 00 00 08 03 (idx3-ubyte images)"
// (offsets count in the decompressed bytes of a .gz file, which the message says).

// The bytes of the file, decompressed if they are gzip, at most `maxBytes` of them either way
// and of a quarter of the memory budget (a file or a decompressed stream beyond that is an error,
// never an allocation of its size).
// `compressed`, if given, says whether they were.
Expected<std::string> readMaybeGzip(const std::string &path, size_t maxBytes = SIZE_MAX,
                                    bool *compressed = nullptr);
// The same from bytes in memory (the fuzz target and the tests); `fileName` names them.
Expected<std::string> gunzipIfGzip(std::string bytes, const std::string &fileName, size_t maxBytes,
                                   bool *compressed = nullptr);

// True when the bytes start like an IDX file (00 00 08) or a gzip stream (1f 8b): `predict`
// reads such a --data file as images without --labels.
bool looksLikeIdx(std::string_view firstBytes);

struct IdxImages {
  int64_t count = 0, rows = 0, cols = 0;
  std::vector<uint8_t> pixels; // count * rows * cols
};
// `compressed` only says, in messages, that offsets count in the decompressed bytes.
Expected<IdxImages> parseIdxImages(std::string_view bytes, const std::string &fileName,
                                   bool compressed = false);
Expected<std::vector<uint8_t>> parseIdxLabels(std::string_view bytes, const std::string &fileName,
                                              bool compressed = false);

// The data set of images (and labels, unless `labelsPath` is empty) for `program`, which must have
// one input whose element count is the image size and at most one target, declared [K] with K > 1
// and every label in 0..K-1 (one-hot encoded, classTargets). The images stay bytes (inputBytes).
// Both files must hold the same count. Without labels the data set has no targets.
Expected<Dataset> makeIdxDataset(IdxImages images, const std::vector<uint8_t> *labels,
                                 const std::string &imagesName, const std::string &labelsName,
                                 const Program &program);
Expected<Dataset> loadIdx(const std::string &imagesPath, const std::string &labelsPath,
                          const Program &program);

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
