// TrainReport: progress lines, the CSV log and the hand-written SVG chart of a training run.
#include "TrainReport.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace nabla {

std::string formatDuration(double s) {
  if (!std::isfinite(s) || s < 0) s = 0;
  if (s < 1) return fmt::format("{:.2f} s", s);
  if (s < 10) return fmt::format("{:.1f} s", s);
  if (s < 60) return fmt::format("{:.0f} s", s);
  const long total = std::lround(s);
  if (total < 3600) return fmt::format("{} min {:02} s", total / 60, total % 60);
  return fmt::format("{} h {:02} min", total / 3600, (total % 3600) / 60);
}

std::string formatRate(double r) {
  if (!std::isfinite(r) || r < 0) r = 0;
  if (r < 1e3) return fmt::format("{:.0f}", r);
  if (r < 1e5) return fmt::format("{:.1f}k", r / 1e3);
  if (r < 1e6) return fmt::format("{:.0f}k", r / 1e3);
  return fmt::format("{:.2f}M", r / 1e6);
}

namespace {

int digitsOf(int v) { return static_cast<int>(std::to_string(v).size()); }

std::string epochField(int epoch, int epochs) {
  return fmt::format("epoch {:>{}}/{}", epoch, digitsOf(epochs), epochs);
}

std::string lossText(double v) { return fmt::format("{:.4f}", v); }

} // namespace

std::string formatBatchLine(const BatchProgress &p) {
  constexpr int kWidth = 20;
  const double f = p.examplesPerEpoch > 0 ? static_cast<double>(p.examples) / static_cast<double>(p.examplesPerEpoch) : 0;
  const int filled = std::clamp(static_cast<int>(f * kWidth), 0, kWidth);
  return fmt::format("{} [{}{}] {:3.0f}%  loss {}  {} ex/s  {} left", epochField(p.epoch, p.epochs),
                     std::string(static_cast<size_t>(filled), '#'),
                     std::string(static_cast<size_t>(kWidth - filled), ' '), 100 * f,
                     lossText(p.trainLoss), formatRate(p.examplesPerSecond), formatDuration(p.secondsLeft));
}

std::string formatEpochLine(const EpochStats &s, bool showLr) {
  std::string line = fmt::format("{}  loss {}", epochField(s.epoch, s.epochs), lossText(s.trainLoss));
  if (std::isfinite(s.validLoss)) line += "  valid loss " + lossText(s.validLoss);
  if (std::isfinite(s.validAccuracy)) line += fmt::format("  valid accuracy {:.2f}%", 100 * s.validAccuracy);
  if (std::isfinite(s.testLoss)) line += "  test loss " + lossText(s.testLoss);
  if (std::isfinite(s.testAccuracy)) line += fmt::format("  test accuracy {:.2f}%", 100 * s.testAccuracy);
  if (showLr) line += fmt::format("  lr {:.3g}", s.lr);
  line += fmt::format("  {} ex/s", formatRate(s.examplesPerSecond));
  line += s.epoch < s.epochs ? "  " + formatDuration(s.secondsLeft) + " left"
                             : "  " + formatDuration(s.elapsed) + " in all";
  return line;
}

std::string formatTrainingLog(const std::vector<EpochStats> &h) {
  auto num = [](double v) { return std::isfinite(v) ? fmt::format("{}", v) : std::string(); };
  std::string out = "epoch,train_loss,valid_loss,valid_accuracy,seconds,elapsed_seconds,examples_per_second\n";
  for (const EpochStats &s : h)
    out += fmt::format("{},{},{},{},{},{},{}\n", s.epoch, num(s.trainLoss), num(s.validLoss),
                       num(s.validAccuracy), num(s.seconds), num(s.elapsed), num(s.examplesPerSecond));
  return out;
}

// --- the SVG chart ---------------------------------------------------------------------------

namespace {

// 1, 2 or 5 times a power of ten, at least x.
double niceStep(double x) {
  if (!(x > 0)) return 1;
  const double p = std::pow(10.0, std::floor(std::log10(x)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * p >= x * (1 - 1e-9)) return m * p;
  return 10 * p;
}

std::string tickLabel(double v, double step) {
  if (std::abs(v) < step * 1e-9) v = 0;
  const int decimals = std::max(0, -static_cast<int>(std::floor(std::log10(step) + 1e-9)));
  return fmt::format("{:.{}f}", v, decimals);
}

// Text for XML: the five markup characters escaped, and whatever is not a character XML 1.0
// allows in well-formed UTF-8 (a byte of a file name that is not UTF-8, an overlong or surrogate
// form, a control character) replaced by U+FFFD, one for each such byte, so that every plot
// parses as XML whatever the source file's name.
std::string escapeXml(const std::string &s) {
  static const char kReplacement[] = "\xEF\xBF\xBD";
  std::string r;
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      switch (b) {
      case '&': r += "&amp;"; break;
      case '<': r += "&lt;"; break;
      case '>': r += "&gt;"; break;
      case '"': r += "&quot;"; break;
      default:
        if (b < 0x20 && b != '\t' && b != '\n' && b != '\r') r += kReplacement;
        else r += static_cast<char>(b);
      }
      ++i;
      continue;
    }
    // A multi-byte sequence: its length from the lead byte, each continuation byte 10xxxxxx,
    // and the value in the range of that length (no overlong forms), not a surrogate, at most
    // U+10FFFF and not U+FFFE or U+FFFF.
    const size_t len = b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xF0 && b <= 0xF4 ? 4 : 0;
    uint32_t cp = len == 2 ? b & 0x1Fu : len == 3 ? b & 0x0Fu : b & 0x07u;
    bool ok = len != 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      ok = (c & 0xC0) == 0x80;
      cp = cp << 6 | (c & 0x3Fu);
    }
    ok = ok && (len != 3 || (cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF) && cp != 0xFFFE && cp != 0xFFFF)) &&
         (len != 4 || (cp >= 0x10000 && cp <= 0x10FFFF));
    if (ok) {
      r.append(s, i, len);
      i += len;
    } else {
      r += kReplacement;
      ++i;
    }
  }
  return r;
}

struct Axis {
  double lo = 0, hi = 1;
  bool log = false;
  std::vector<std::pair<double, std::string>> ticks;
  // 0 at lo, 1 at hi.
  double frac(double v) const {
    if (log) return (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo));
    return (v - lo) / (hi - lo);
  }
};

Axis linearAxis(double lo, double hi, int wanted, bool fromZero) {
  Axis a;
  if (fromZero) lo = std::min(lo, 0.0);
  if (!(hi > lo)) hi = lo + (lo == 0 ? 1 : std::abs(lo) * 0.1);
  const double step = niceStep((hi - lo) / wanted);
  a.lo = std::floor(lo / step + 1e-9) * step;
  a.hi = std::ceil(hi / step - 1e-9) * step;
  for (double v = a.lo; v <= a.hi + step * 1e-6; v += step) a.ticks.emplace_back(v, tickLabel(v, step));
  return a;
}

Axis logAxis(double lo, double hi) {
  Axis a;
  a.log = true;
  const double p0 = std::floor(std::log10(lo)), p1 = std::ceil(std::log10(hi));
  // The tightest 1-2-5 bounds around the data.
  a.lo = std::pow(10.0, p0);
  for (double m : {2.0, 5.0})
    if (m * std::pow(10.0, p0) <= lo) a.lo = m * std::pow(10.0, p0);
  a.hi = std::pow(10.0, p1);
  for (double m : {5.0, 2.0})
    if (m * std::pow(10.0, p1 - 1) >= hi) a.hi = m * std::pow(10.0, p1 - 1);
  const bool dense = p1 - p0 <= 3;
  for (double p = p0; p <= p1; ++p)
    for (double m : {1.0, 2.0, 5.0}) {
      if (m != 1 && !dense) continue;
      const double v = m * std::pow(10.0, p);
      if (v < a.lo * (1 - 1e-9) || v > a.hi * (1 + 1e-9)) continue;
      a.ticks.emplace_back(v, fmt::format("{:g}", v));
    }
  return a;
}

} // namespace

std::string plotTrainingSvg(const std::vector<EpochStats> &h, const std::string &title) {
  constexpr double W = 760, H = 440, left = 78, right = 690, top = 78, bottom = 378;
  const char *kTrain = "#1f77b4", *kValid = "#ff7f0e", *kAcc = "#2ca02c", *kInk = "#333333",
             *kGrid = "#e6e6e6";
  const int E = h.empty() ? 1 : h.back().epoch;

  // Scales.
  double lossLo = INFINITY, lossHi = -INFINITY, accLo = INFINITY;
  bool hasValid = false, hasAcc = false;
  for (const EpochStats &s : h) {
    for (double v : {s.trainLoss, s.validLoss})
      if (std::isfinite(v)) lossLo = std::min(lossLo, v), lossHi = std::max(lossHi, v);
    hasValid |= std::isfinite(s.validLoss);
    if (std::isfinite(s.validAccuracy)) hasAcc = true, accLo = std::min(accLo, s.validAccuracy);
  }
  if (!std::isfinite(lossLo)) lossLo = 0, lossHi = 1;
  const bool useLog = lossLo > 0 && lossHi / lossLo > 30;
  Axis ly = useLog ? logAxis(lossLo, lossHi) : linearAxis(lossLo, lossHi, 5, lossLo < 0.5 * lossHi);
  Axis ay;
  if (hasAcc) {
    const double step = niceStep(std::max(1 - accLo, 0.02) / 5);
    ay.lo = std::max(0.0, std::floor((accLo - step * 0.25) / step) * step);
    ay.hi = 1;
    const int places = std::max(0, -static_cast<int>(std::floor(std::log10(step * 100) + 1e-9)));
    for (double v = ay.lo; v <= 1 + 1e-9; v += step)
      ay.ticks.emplace_back(v, fmt::format("{:.{}f}%", 100 * v, places));
  }
  Axis ax;
  if (E <= 1) {
    ax.lo = 0.5, ax.hi = 1.5, ax.ticks = {{1, "1"}};
  } else {
    ax.lo = 1, ax.hi = E;
    const double step = std::max(1.0, niceStep((E - 1) / 8.0));
    ax.ticks.emplace_back(1, "1");
    for (double v = step; v <= E + 1e-9; v += step)
      if (v - 1 >= step * 0.4) ax.ticks.emplace_back(v, fmt::format("{:.0f}", v));
  }
  auto X = [&](double e) { return left + ax.frac(e) * (right - left); };
  auto YL = [&](double v) { return bottom - ly.frac(v) * (bottom - top); };
  auto YA = [&](double v) { return bottom - ay.frac(v) * (bottom - top); };

  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\" fill=\"{2}\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      W, H, kInk);
  svg += fmt::format("<text x=\"{}\" y=\"30\" font-size=\"16\" font-weight=\"bold\">{}</text>\n", left,
                     escapeXml(title));

  // Legend, one row under the title.
  {
    double x = left;
    auto item = [&](const char *color, const char *dash, const std::string &label) {
      svg += fmt::format("<line x1=\"{:.1f}\" y1=\"52\" x2=\"{:.1f}\" y2=\"52\" stroke=\"{}\" "
                         "stroke-width=\"2.5\"{}/>\n", x, x + 24, color,
                         *dash ? fmt::format(" stroke-dasharray=\"{}\"", dash) : "");
      svg += fmt::format("<text x=\"{:.1f}\" y=\"56\">{}</text>\n", x + 30, label);
      x += 30 + 7.0 * static_cast<double>(label.size()) + 26;
    };
    item(kTrain, "", "training loss");
    if (hasValid) item(kValid, "", "validation loss");
    if (hasAcc) {
      double last = kNoValue;
      for (const EpochStats &s : h)
        if (std::isfinite(s.validAccuracy)) last = s.validAccuracy;
      item(kAcc, "6 4", fmt::format("validation accuracy (right axis), final {:.2f}%", 100 * last));
    }
  }

  // Grid and ticks.
  svg += "<g stroke-width=\"1\">\n";
  for (auto &[v, label] : ly.ticks) {
    const double y = YL(v);
    svg += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"{}\"/>\n", left, y, right, y, kGrid);
    svg += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"{}\"/>\n", left - 5, y, left, y, kInk);
    svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\" stroke=\"none\">{}</text>\n", left - 8, y + 4, label);
  }
  for (auto &[v, label] : ax.ticks) {
    const double x = X(v);
    svg += fmt::format("<line x1=\"{:.1f}\" y1=\"{}\" x2=\"{:.1f}\" y2=\"{}\" stroke=\"{}\"/>\n", x, top, x, bottom, kGrid);
    svg += fmt::format("<line x1=\"{:.1f}\" y1=\"{}\" x2=\"{:.1f}\" y2=\"{}\" stroke=\"{}\"/>\n", x, bottom, x, bottom + 5, kInk);
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\" stroke=\"none\">{}</text>\n", x, bottom + 19, label);
  }
  for (auto &[v, label] : ay.ticks) {
    const double y = YA(v);
    svg += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"{}\"/>\n", right, y, right + 5, y, kAcc);
    svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" fill=\"{}\" stroke=\"none\">{}</text>\n", right + 8, y + 4, kAcc, label);
  }
  svg += "</g>\n";

  // The frame and the axis labels.
  svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"{}\"/>\n",
                     left, top, right - left, bottom - top, kInk);
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\">epoch</text>\n",
                     (left + right) / 2, H - 22);
  svg += fmt::format("<text transform=\"translate(22 {}) rotate(-90)\" text-anchor=\"middle\" "
                     "font-size=\"13\">{}</text>\n", (top + bottom) / 2,
                     useLog ? "loss (log scale)" : "loss");
  if (hasAcc)
    svg += fmt::format("<text transform=\"translate({} {}) rotate(90)\" text-anchor=\"middle\" "
                       "font-size=\"13\" fill=\"{}\">validation accuracy</text>\n", W - 14,
                       (top + bottom) / 2, kAcc);

  // The curves; a point that does not exist breaks the line.
  const bool markers = E <= 40;
  auto series = [&](auto value, auto Y, bool onLog, const char *color, const char *dash) {
    std::string path, dots;
    bool pen = false;
    for (const EpochStats &s : h) {
      const double v = value(s);
      if (!std::isfinite(v) || (onLog && v <= 0)) {
        pen = false;
        continue;
      }
      const double x = X(s.epoch), y = Y(v);
      path += fmt::format("{}{:.1f},{:.1f} ", pen ? "L" : "M", x, y);
      pen = true;
      if (markers) dots += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"2.8\"/>", x, y);
    }
    if (path.empty()) return;
    svg += fmt::format("<path d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2.2\" "
                       "stroke-linejoin=\"round\"{}/>\n", path, color,
                       *dash ? fmt::format(" stroke-dasharray=\"{}\"", dash) : "");
    if (!dots.empty()) svg += fmt::format("<g fill=\"{}\">{}</g>\n", color, dots);
  };
  series([](const EpochStats &s) { return s.trainLoss; }, YL, useLog, kTrain, "");
  series([](const EpochStats &s) { return s.validLoss; }, YL, useLog, kValid, "");
  if (hasAcc) {
    series([](const EpochStats &s) { return s.validAccuracy; }, YA, false, kAcc, "6 4");
  }
  svg += "</svg>\n";
  return svg;
}

} // namespace nabla
