// emit_compare: the JIT side of the emit-cpp tests (tests/emit/run.sh). Through the library API
// (Model), it writes the data that the compiled emitted code runs on, and compares what that code
// computed with the JIT on the same data.
//
//   emit_compare data OUT PROG.nn...            OUT/STEM/nN/{params,inputs,targets}.txt for
//                                               N in 1, 3, 6, 37 (params from initParams(7 + N),
//                                               inputs in [0.5, 1.5], targets in [0, 1])
//   emit_compare check OUT f32|f64 TAG[,TAG] PROG.nn...  reads OUT/STEM/nN/result_DTYPE_TAG.txt and
//                                               compares loss, gradient and forward outputs with
//                                               the JIT in that dtype: max |a - b| <= tol * max |b|
//                                               per array, tol 1e-12 (f64) or 1e-4 (f32)
//                                               (max |b| at least 1e-12 or 1e-6: see compareArrays)
//   emit_compare init PROG.nn SEED              initParams(SEED), one a line, %.17g
//   emit_compare params PROG.nn SEED            initParams(SEED) as a JSON params file
//
// Exit status 0 when everything agrees, 1 on a mismatch or an error (each printed).
#include "Model.h"
#include "ParamIO.h"
#include "Random.h"

#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace nabla;
namespace fs = std::filesystem;

namespace {

const int64_t kBatches[] = {1, 3, 6, 37};

std::string stem(const std::string &path) { return fs::path(path).stem().string(); }

Model compile(const std::string &path, DType dtype, Engine engine = Engine::Jit) {
  CompileOptions o;
  o.dtype = dtype;
  o.engine = engine;
  auto m = Model::compileFile(path, o);
  if (!m) {
    std::fprintf(stderr, "%s\n", m.error().message.c_str());
    std::exit(1);
  }
  return std::move(*m);
}

void writeNumbers(const fs::path &p, const std::vector<double> &v) {
  std::FILE *f = std::fopen(p.c_str(), "w");
  if (!f) {
    std::fprintf(stderr, "emit_compare: cannot write %s\n", p.c_str());
    std::exit(1);
  }
  std::fprintf(f, "%zu\n", v.size());
  for (double x : v) std::fprintf(f, "%.17g\n", x);
  std::fclose(f);
}

bool readNumbers(std::istream &in, std::vector<double> &v) {
  size_t count = 0;
  if (!(in >> count)) return false;
  v.resize(count);
  for (double &x : v) {
    std::string t;
    if (!(in >> t)) return false;
    x = std::strtod(t.c_str(), nullptr); // "nan", "inf" too
  }
  return true;
}

std::vector<double> readFileNumbers(const fs::path &p) {
  std::ifstream in(p);
  std::vector<double> v;
  if (!readNumbers(in, v)) {
    std::fprintf(stderr, "emit_compare: cannot read %s\n", p.c_str());
    std::exit(1);
  }
  return v;
}

// max |a - b| <= tol * max(max |b|, floor) (b the JIT), or <= noise; positions where both are
// the same non-finite value are left out. The floor (1e-6 in f32) and `noise` (a few units of
// rounding of the largest value of the whole result, see noiseOf) accept arrays whose every value
// is rounding noise around zero: a gradient that is 0 in exact arithmetic, like that of the
// weights before a softmax whose outputs are summed, comes out as 1e-8 in f32 from one side and
// as 0 from the other. Returns "" or what differs; `worst` gets the relative difference.
double gFloor = 0;
std::string compareArrays(const double *a, const double *b, size_t n, double tol, const std::string &what,
                          double &worst, double noise = 0) {
  double maxDiff = 0, maxRef = 0;
  size_t at = 0;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(a[i]) && std::isnan(b[i])) continue;
    if (std::isinf(a[i]) && a[i] == b[i]) continue;
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) {
      char buf[200];
      std::snprintf(buf, sizeof buf, "%s[%zu]: %.17g vs JIT %.17g", what.c_str(), i, a[i], b[i]);
      worst = INFINITY;
      return buf;
    }
    maxRef = std::max(maxRef, std::abs(b[i]));
    double d = std::abs(a[i] - b[i]);
    if (d > maxDiff) maxDiff = d, at = i;
  }
  double scale = std::max(maxRef, gFloor);
  double rel = scale > 0 ? maxDiff / scale : maxDiff > 0 ? INFINITY : 0;
  worst = std::max(worst, rel);
  if (maxDiff <= tol * scale || maxDiff <= noise) return "";
  char buf[300];
  std::snprintf(buf, sizeof buf, "%s: relative difference %.3g > %.0e; worst at [%zu]: %.17g vs JIT %.17g", what.c_str(),
                rel, tol, at, a[at], b[at]);
  return buf;
}

// 16 units of rounding of the dtype at the largest magnitude among `values`.
double noiseOf(DType dt, const std::vector<double> &values) {
  double m = 0;
  for (double v : values)
    if (std::isfinite(v)) m = std::max(m, std::abs(v));
  return 16 * (dt == DType::F64 ? DBL_EPSILON : FLT_EPSILON) * m;
}

int cmdData(const fs::path &out, int argc, char **argv) {
  for (int i = 0; i < argc; ++i) {
    Model m = compile(argv[i], DType::F64, Engine::Interp); // counts and initParams only
    for (int64_t n : kBatches) {
      fs::path dir = out / stem(argv[i]) / ("n" + std::to_string(n));
      fs::create_directories(dir);
      Rng rng(8 + static_cast<uint64_t>(n));
      std::vector<double> x(static_cast<size_t>(n * m.inputCount())), t(static_cast<size_t>(n * m.targetCount()));
      for (double &v : x) v = rng.uniform(0.5, 1.5);
      for (double &v : t) v = rng.uniform();
      writeNumbers(dir / "params.txt", m.initParams(7 + static_cast<uint64_t>(n)));
      writeNumbers(dir / "inputs.txt", x);
      writeNumbers(dir / "targets.txt", t);
    }
  }
  return 0;
}

int cmdCheck(const fs::path &out, const std::string &dtype, const std::string &tagList, int argc, char **argv) {
  const DType dt = dtype == "f64" ? DType::F64 : DType::F32;
  const double tol = dt == DType::F64 ? 1e-12 : 1e-4;
  gFloor = dt == DType::F64 ? 1e-12 : 1e-6;
  std::vector<std::string> tags;
  for (size_t start = 0;;) {
    size_t comma = tagList.find(',', start);
    tags.push_back(tagList.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  std::vector<int> failures(tags.size(), 0);
  std::vector<double> worstAll(tags.size(), 0);
  int checks = 0;
  for (int i = 0; i < argc; ++i) {
    Model m = compile(argv[i], dt);
    for (int64_t n : kBatches) {
      fs::path dir = out / stem(argv[i]) / ("n" + std::to_string(n));
      std::vector<double> params = readFileNumbers(dir / "params.txt"), x = readFileNumbers(dir / "inputs.txt"),
                          t = readFileNumbers(dir / "targets.txt");
      std::vector<double> y = m.forward(params, x.data(), n), g;
      double l = m.hasLoss() ? m.lossAndGradient(params, x.data(), t.data(), n, g) : 0;
      ++checks;
      for (size_t ti = 0; ti < tags.size(); ++ti) {
        fs::path resultPath = dir / ("result_" + dtype + "_" + tags[ti] + ".txt");
        std::ifstream in(resultPath);
        std::string word, problems;
        std::vector<double> loss, grads, outputs;
        while (in >> word) {
          if (word == "loss") readNumbers(in, loss);
          else if (word == "grads") readNumbers(in, grads);
          else if (word == "outputs") readNumbers(in, outputs);
          else if (word == "error") {
            std::string rest;
            std::getline(in, rest);
            problems += "the emitted code:" + rest + "\n";
          }
        }
        if (!in.eof()) problems += "cannot read " + resultPath.string() + "\n";
        auto note = [&](const std::string &s) {
          if (!s.empty()) problems += s + "\n";
        };
        double worst = 0;
        if (outputs.size() != y.size()) note("forward: " + std::to_string(outputs.size()) + " outputs vs " + std::to_string(y.size()));
        else
          for (const TensorInfo &o : m.outputs()) {
            std::vector<double> a, b;
            for (int64_t e = 0; e < n; ++e)
              for (int64_t j = 0; j < o.shape.numel(); ++j) {
                a.push_back(outputs[static_cast<size_t>(e * m.outputCount() + o.offset + j)]);
                b.push_back(y[static_cast<size_t>(e * m.outputCount() + o.offset + j)]);
              }
            note(compareArrays(a.data(), b.data(), a.size(), tol, "output " + o.name, worst));
          }
        if (m.hasLoss()) {
          if (loss.size() != 1) note("no loss");
          else note(compareArrays(loss.data(), &l, 1, tol, "loss", worst));
          if (grads.size() != g.size()) note("gradient: " + std::to_string(grads.size()) + " values vs " + std::to_string(g.size()));
          else {
            std::vector<double> all = g;
            all.push_back(l);
            const double noise = noiseOf(dt, all);
            for (const TensorInfo &p : m.params())
              note(compareArrays(grads.data() + p.offset, g.data() + p.offset, static_cast<size_t>(p.shape.numel()), tol,
                                 "d/d" + p.name, worst, noise));
          }
        }
        worstAll[ti] = std::max(worstAll[ti], worst);
        if (!problems.empty()) {
          ++failures[ti];
          std::printf("FAIL %s (%s, %s, batch %lld):\n%s", argv[i], dtype.c_str(), tags[ti].c_str(),
                      static_cast<long long>(n), problems.c_str());
        }
      }
    }
  }
  int total = 0;
  for (size_t ti = 0; ti < tags.size(); ++ti) {
    std::printf("emit-cpp %s %s against the JIT: %d of %d runs agree to %g (worst relative difference %.3g)\n",
                dtype.c_str(), tags[ti].c_str(), checks - failures[ti], checks, tol, worstAll[ti]);
    total += failures[ti];
  }
  return total ? 1 : 0;
}

} // namespace

int main(int argc, char **argv) {
  const std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "data" && argc >= 3) return cmdData(argv[2], argc - 3, argv + 3);
  if (cmd == "check" && argc >= 5) return cmdCheck(argv[2], argv[3], argv[4], argc - 5, argv + 5);
  if ((cmd == "init" || cmd == "params") && argc == 4) {
    Model m = compile(argv[2], DType::F64);
    std::vector<double> p = m.initParams(std::strtoull(argv[3], nullptr, 10));
    if (cmd == "params") {
      std::fputs(formatParams(m.program(), p).c_str(), stdout);
      return 0;
    }
    for (double v : p) std::printf("%.17g\n", v);
    return 0;
  }
  std::fprintf(stderr, "usage: emit_compare data OUT PROG.nn... | check OUT f32|f64 TAG PROG.nn... | init PROG.nn SEED | "
                       "params PROG.nn SEED\n");
  return 1;
}
