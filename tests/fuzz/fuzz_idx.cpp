// fuzz_idx: bytes as an IDX image file and a label file, raw or gzip, through the IDX reader.
// Byte 0: bits 0-1 pick what the rest is (0: images alone, 1: labels alone, 2 and 3: images and
// labels, split where bytes 1-2 (big-endian) say); bits 2-5 pick the target's K (2..17); bit 6
// makes the program's input one element too large (the image-size error). Each part goes through
// gunzipIfGzip with a 1 MiB limit (a gzip bomb must stop there), then the parsers, then
// makeIdxDataset against a program built around the images (one input, one target [K]).
// Findings: a crash or sanitizer report, an error that is not one line "NAME: error: ..." (with
// "at byte " for a malformed file), and accepted data that breaks the contract (sizes, one-hot
// targets, a label beyond K, the pixels not those of the file).
#include "DataIO.h"
#include "FuzzCommon.h"
#include "Program.h"

#include <cstring>

using namespace nabla;
using nabla::fuzz::bug;

namespace {

constexpr size_t kLimit = size_t(1) << 20;

void checkError(const std::string &m, const std::string &name, bool malformed) {
  if (m.rfind(name + ": error: ", 0) != 0 || m.find('\n') != std::string::npos)
    bug("an IDX error not in the form NAME: error: MESSAGE (one line)", m);
  if (malformed && m.find("at byte ") == std::string::npos) bug("an IDX format error without its byte offset", m);
}

Program imageProgram(int64_t elements, int64_t k) {
  Program p;
  p.source.name = "fixed.nn";
  p.inputs.push_back(Decl{"img", Shape{elements}, {}, kNoNode, 0, {}});
  p.targets.push_back(Decl{"label", Shape{k}, {}, kNoNode, 0, {}});
  return p;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3 || size > (1 << 20)) return 0;
  const int mode = data[0] & 3;
  const int64_t K = 2 + ((data[0] >> 2) & 15);
  const bool wrongSize = (data[0] & 64) != 0;
  std::string_view rest = fuzz::asText(data + 3, size - 3), images = rest, labels;
  if (mode == 1) images = {}, labels = rest;
  if (mode >= 2) {
    const size_t split = std::min<size_t>(rest.size(), size_t(data[1]) << 8 | data[2]);
    images = rest.substr(0, split), labels = rest.substr(split);
  }

  auto unpack = [&](std::string_view bytes, const std::string &name, bool &gz) -> std::optional<std::string> {
    Expected<std::string> r = gunzipIfGzip(std::string(bytes), name, kLimit, &gz);
    if (!r) {
      checkError(r.error().message, name, true);
      return std::nullopt;
    }
    if (r->size() > kLimit) bug("gunzipIfGzip returned more than its limit");
    if (!gz && *r != bytes) bug("gunzipIfGzip changed bytes that are not gzip");
    return std::move(*r);
  };

  std::optional<IdxImages> im;
  std::string imageBytes;
  if (mode != 1) {
    bool gz = false;
    std::optional<std::string> b = unpack(images, "i.idx", gz);
    if (!b) return 0;
    Expected<IdxImages> r = parseIdxImages(*b, "i.idx", gz);
    if (!r) {
      checkError(r.error().message, "i.idx", true);
      return 0;
    }
    if (r->count <= 0 || r->rows <= 0 || r->cols <= 0) bug("accepted images of no pixels");
    if (static_cast<int64_t>(r->pixels.size()) != r->count * r->rows * r->cols) bug("pixels: wrong size");
    if (b->size() != 16 + r->pixels.size() || std::memcmp(b->data() + 16, r->pixels.data(), r->pixels.size()) != 0)
      bug("the pixels are not the file's bytes after the header");
    imageBytes = std::move(*b);
    im = std::move(*r);
  }
  std::optional<std::vector<uint8_t>> lab;
  if (mode != 0) {
    bool gz = false;
    std::optional<std::string> b = unpack(labels, "l.idx", gz);
    if (!b) return 0;
    Expected<std::vector<uint8_t>> r = parseIdxLabels(*b, "l.idx", gz);
    if (!r) {
      checkError(r.error().message, "l.idx", true);
      return 0;
    }
    if (r->empty() || b->size() != 8 + r->size()) bug("labels: wrong size");
    lab = std::move(*r);
  }
  if (!im) return 0;

  const int64_t elements = im->rows * im->cols + (wrongSize ? 1 : 0);
  const Program p = imageProgram(elements, K);
  const int64_t count = im->count;
  Expected<Dataset> d = makeIdxDataset(std::move(*im), lab ? &*lab : nullptr, "i.idx", "l.idx", p);
  if (!d) {
    const std::string &m = d.error().message;
    checkError(m, m.rfind("l.idx", 0) == 0 ? "l.idx" : "i.idx", true);
    if (!wrongSize && m.find("pixels; input") != std::string::npos) bug("the image size was refused", m);
    return 0;
  }
  if (wrongSize) bug("images of the wrong size were accepted");
  if (d->rows != count || static_cast<int64_t>(d->inputBytes.size()) != count * elements || !d->inputs.empty())
    bug("dataset: wrong size");
  if (std::memcmp(d->inputBytes.data(), imageBytes.data() + 16, d->inputBytes.size()) != 0)
    bug("dataset: the pixels changed");
  if (lab) {
    if (!d->classTargets || !d->hasTargets || static_cast<int64_t>(d->targets.size()) != count * K)
      bug("dataset: targets of the wrong form");
    for (int64_t r = 0; r < count; ++r) {
      const uint8_t l = (*lab)[static_cast<size_t>(r)];
      if (l >= K) bug("a label beyond K was accepted");
      for (int64_t k = 0; k < K; ++k)
        if (d->targets[static_cast<size_t>(r * K + k)] != (k == l ? 1.0 : 0.0)) bug("a target that is not one-hot of its label");
    }
  } else if (d->hasTargets || !d->targets.empty()) {
    bug("images alone gave targets");
  }
  d->expandInputBytes();
  if (!d->inputBytes.empty() || static_cast<int64_t>(d->inputs.size()) != count * elements)
    bug("expandInputBytes: wrong size");
  return 0;
}
