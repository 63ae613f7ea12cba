// nabla: the command-line tool. A thin layer over the library: parses options, calls the
// pipeline, prints results. Every error is a message and exit status 1.
#include "DataIO.h"
#include "EmitCpp.h"
#include "Explain.h"
#include "Evaluate.h"
#include "ExplainHtml.h"
#include "GradPrinter.h"
#include "GraphDot.h"
#include "Graphviz.h"
#include "Explain.h"
#include "JitSession.h"
#include "Lexer.h"
#include "Model.h"
#include "Limits.h"
#include "LowerToLoops.h"
#include "ParamIO.h"
#include "Parser.h"
#include "Pipeline.h"
#include "ProgramPrinter.h"
#include "Random.h"
#include "Sema.h"
#include "TrainReport.h"
#include "Trainer.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <csignal>
#include <cstdint>
#include <chrono>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <system_error>
#include <thread>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace nabla;

namespace {

struct Failure {
  std::string message; // complete, printable
};

void fail(std::string message) { throw Failure{std::move(message)}; }

template <class T> T unwrap(Expected<T> e) {
  if (!e) fail(e.error().message);
  return std::move(*e);
}

constexpr size_t kMaxSourceBytes = size_t(16) << 20;

SourceFile readSource(const std::string &path) {
  std::string text = unwrap(readFile(path, kMaxSourceBytes)); // never all of /dev/zero
  if (text.size() > kMaxSourceBytes)
    fail(fmt::format("{}: error: source file is {} bytes; at most {} are supported", path,
                     text.size(), kMaxSourceBytes));
  return SourceFile{path, std::move(text)};
}

Program compileFile(const std::string &path) {
  std::string diags;
  std::optional<Program> p = compileSource(readSource(path), diags);
  if (!p) fail(diags);
  if (!diags.empty()) std::fputs(diags.c_str(), stderr); // warnings
  return std::move(*p);
}

void requireLoss(const Program &p, const char *command) {
  if (!p.loss)
    fail(fmt::format("{}: error: '{}' needs a loss, but the program declares none (add 'loss NAME = EXPR')",
                     p.source.name, command));
}

Derivation deriveOrFail(Program &p) { return unwrap(derive(p)); }

DType parseDType(const std::string &s) { return s == "f64" ? DType::F64 : DType::F32; }

Model compileModel(const std::string &file, const std::string &engine, DType dtype, int optLevel = 2) {
  CompileOptions o;
  o.dtype = dtype;
  o.engine = engine == "interp" ? Engine::Interp : Engine::Jit;
  o.optLevel = optLevel;
  // The front end's diagnostics come first, in the same form as for `check`.
  Program p = compileFile(file);
  (void)p;
  return unwrap(Model::compileFile(file, o));
}

// Params from a file (checked against the f32 range when they are for f32), else initialized.
std::vector<double> loadParamsFor(const Program &p, const std::string &paramsPath, bool f32) {
  std::vector<double> P = unwrap(loadParams(paramsPath, p));
  if (f32) unwrap(checkParamsFitFloat32(P, paramsPath, p));
  return P;
}

std::vector<double> paramsFor(const Program &p, const std::string &paramsPath, uint64_t seed, bool f32) {
  if (!paramsPath.empty()) return loadParamsFor(p, paramsPath, f32);
  return initParams(p, seed);
}

// --- data -----------------------------------------------------------------------------------

// A program without inputs and targets (params and a loss alone: a function to minimize) is one
// example with nothing to read (LANGUAGE.md, "Options, indexing and more functions").
bool takesNoData(const Program &p) { return p.inputs.empty() && p.targets.empty(); }

// The first bytes of a file say whether it is IDX (or gzip): such a --data file is read as images.
bool fileLooksLikeIdx(const std::string &path) {
  char head[4] = {};
  std::FILE *f = std::fopen(path.c_str(), "rb");
  if (!f) return false; // the reader that follows reports it
  size_t n = std::fread(head, 1, sizeof head, f);
  std::fclose(f);
  return looksLikeIdx(std::string_view(head, n));
}

// The data of a command: one empty example for a program without inputs and targets (where
// --data is an error), IDX images when --labels is given or the file is IDX, else CSV. The
// names of the options are those of the command line (--data/--labels, --test-data/--test-labels).
Dataset loadData(const Program &p, const std::string &command, const std::string &data,
                 const std::string &labels, bool targetsOptional, bool f32,
                 const char *dataOption = "--data", const char *labelsOption = "--labels") {
  if (takesNoData(p)) {
    const std::string &given = !data.empty() ? data : labels;
    if (!given.empty())
      fail(fmt::format("{}: error: '{}' takes no {}: the program has no inputs and no targets, so it "
                       "is evaluated as one example with nothing to read",
                       p.source.name, command, data.empty() ? labelsOption : dataOption));
    Dataset one;
    one.rows = 1;
    return one;
  }
  if (data.empty())
    fail(fmt::format("{}: error: '{}' needs {} (a CSV file, or IDX images with {})", p.source.name,
                     command, dataOption, labelsOption));
  if (!labels.empty()) return unwrap(loadIdx(data, labels, p));
  if (fileLooksLikeIdx(data)) {
    if (!targetsOptional && !p.targets.empty())
      fail(fmt::format("{}: error: this is an IDX image file (or gzip): give the labels of its images "
                       "with {} LABELS", data, labelsOption));
    return unwrap(loadIdx(data, "", p));
  }
  return unwrap(loadCsv(data, p, targetsOptional, f32));
}

// --- commands -------------------------------------------------------------------------------

int cmdCheck(const std::string &file, const std::string &emit) {
  if (emit == "tokens" || emit == "ast") {
    SourceFile src = readSource(file);
    DiagnosticEngine diags(src);
    std::vector<Token> tokens = lex(src, diags);
    std::string out;
    if (emit == "tokens") out = dumpTokens(tokens);
    else if (!diags.hasErrors()) out = dumpAst(parse(tokens, diags));
    if (diags.hasErrors()) fail(diags.render());
    std::fputs(out.c_str(), stdout);
    return 0;
  }
  Program p = compileFile(file);
  if (emit.empty()) {
    std::fputs(describeProgram(p).c_str(), stdout);
    return 0;
  }
  std::vector<std::pair<std::string, NodeId>> roots;
  if (emit == "graph") {
    for (auto &o : p.outputs) roots.emplace_back("output " + o.name, o.node);
    if (p.loss) roots.emplace_back("loss " + p.loss->name, p.loss->node);
    std::fputs(dumpGraph(p.graph, roots, &p).c_str(), stdout);
    return 0;
  }
  if (emit == "loops") {
    std::optional<Derivation> d;
    if (p.loss) d = deriveOrFail(p);
    std::vector<NodeId> outs = d ? d->outputs : simplifiedOutputs(p);
    std::fputs(loops::dump(lowerToLoops(p, outs, d ? &*d : nullptr)).c_str(), stdout);
    return 0;
  }
  requireLoss(p, ("check --emit " + emit).c_str());
  Derivation d = deriveOrFail(p);
  if (emit == "grad") {
    // The gradient as autodiff built it, before simplification.
    for (size_t k = 0; k < p.params.size(); ++k) {
      NodeId raw = d.gradient.adjoint.size() > static_cast<size_t>(p.params[k].node)
                       ? d.gradient.adjoint[static_cast<size_t>(p.params[k].node)]
                       : kNoNode;
      roots.emplace_back("d" + p.loss->name + "/d" + p.params[k].name,
                         raw == kNoNode ? d.paramGrads[k] : raw);
    }
  } else {
    roots.emplace_back("loss " + p.loss->name, d.loss);
    for (size_t k = 0; k < p.params.size(); ++k)
      roots.emplace_back("d" + p.loss->name + "/d" + p.params[k].name, d.paramGrads[k]);
  }
  std::fputs(dumpGraph(p.graph, roots, &p).c_str(), stdout);
  return 0;
}

int cmdGrad(const std::string &file, bool ascii, bool parseable = false) {
  Program p = compileFile(file);
  requireLoss(p, "grad");
  Derivation d = deriveOrFail(p);
  std::fputs(printGradient(p, d, GradPrintOptions{ascii || parseable, parseable}).c_str(), stdout);
  return 0;
}

// graph: the forward graph (and with --grad the gradient graph beside it) as dot text on standard
// output, or written atomically to OUT: dot text for .dot/.gv, laid out by Graphviz's dot for .svg,
// .png and .pdf.
int cmdGraph(const std::string &file, const std::string &out, bool withGrad, const std::string &detail) {
  std::string format = "dot";
  if (!out.empty()) {
    const std::string ext = std::filesystem::path(out).extension().string();
    if (ext == ".svg" || ext == ".png" || ext == ".pdf") format = ext.substr(1);
    else if (ext != ".dot" && ext != ".gv")
      fail(fmt::format("{}: error: 'graph' writes .svg, .png or .pdf (laid out by Graphviz's dot) or "
                       ".dot/.gv (dot text); the name ends in none of them", out));
  }
  Program p = compileFile(file);
  std::optional<Derivation> d;
  std::optional<Explanation> e;
  if (withGrad) {
    requireLoss(p, "graph --grad");
    d = deriveOrFail(p);
    ExplainOptions o;
    o.maxUnits = 0; // the terms alone: the picture has no per-element form
    e = unwrap(explain(p, *d, o));
  }
  const std::string dot = graphToDot(p, e ? &*e : nullptr, file,
                                     detail == "ops" ? GraphDetail::Ops
                                     : detail == "values" ? GraphDetail::Values
                                                          : GraphDetail::Auto).text;
  if (out.empty()) {
    std::fputs(dot.c_str(), stdout);
    return 0;
  }
  if (format == "dot") unwrap(writeFileAtomically(out, dot));
  else unwrap(writeFileAtomically(out, unwrap(runDot(dot, format))));
  std::printf("wrote %s\n", out.c_str());
  return 0;
}

std::string evalJson(const Program &p, const LossAndGradient &r) {
  std::string out = "{\n \"loss\": " + formatNumberJson(r.loss) + ",\n \"grads\": {";
  for (size_t k = 0; k < p.params.size(); ++k) {
    const Decl &d = p.params[k];
    out += (k ? ",\n  " : "\n  ") + quoteJson(d.name) + ": ";
    appendNested(out, r.grads.data() + d.offset, d.shape, 2);
  }
  out += "\n }\n}\n";
  return out;
}

int cmdEval(const std::string &file, const std::string &data, const std::string &labels,
            const std::string &params, uint64_t seed, const std::string &engine,
            const std::string &dtype, bool json, int threads) {
  Model m = compileModel(file, engine, parseDType(dtype));
  const Program &p = m.program();
  requireLoss(p, "eval");
  const bool f32 = dtype == "f32";
  Dataset ds = loadData(p, "eval", data, labels, false, f32);
  if (!ds.hasTargets) fail(fmt::format("{}: error: 'eval' needs targets: give the labels with --labels", data));
  ds.expandInputBytes(); // the f64 interface
  unwrap(checkMemory(m, "eval", Workload::Eval, ds.rows, ds.rows, threads));
  std::vector<double> P = paramsFor(p, params, seed, f32);
  LossAndGradient r;
  r.loss = m.lossAndGradient(P, ds.inputs.data(), ds.targets.data(), ds.rows, r.grads, threads);
  if (json) {
    std::fputs(evalJson(p, r).c_str(), stdout);
    return 0;
  }
  std::string out = fmt::format("loss {} = {}   (mean over {} example{}, {}, {})\n", p.loss->name,
                                formatNumber(r.loss), ds.rows, ds.rows == 1 ? "" : "s", dtype, engine);
  for (const Decl &decl : p.params) {
    double norm = 0, maxAbs = 0;
    for (int64_t i = 0; i < decl.shape.numel(); ++i) {
      double g = r.grads[static_cast<size_t>(decl.offset + i)];
      norm += g * g;
      maxAbs = std::max(maxAbs, std::abs(g));
    }
    out += fmt::format("d{}/d{} {}: |g| = {:.6g}, max |g_i| = {:.6g}\n", p.loss->name, decl.name,
                       decl.shape.describe(), std::sqrt(norm), maxAbs);
  }
  out += "(use --json for every number)\n";
  std::fputs(out.c_str(), stdout);
  return 0;
}

// Random inputs in [0.5, 1.5] and targets in [0, 1], from the seed, when no data is given.
Dataset randomData(const Program &p, uint64_t seed, int64_t rows) {
  constexpr int64_t kMaxScalars = int64_t(1) << 24;
  if ((p.inputCount() + p.targetCount()) * rows > kMaxScalars)
    fail(fmt::format("{}: error: one example has {} input and target scalars, too many for random "
                     "test data; give a small data set with --data", p.source.name,
                     p.inputCount() + p.targetCount()));
  Rng rng(seed ^ 0x5eedda7aull);
  Dataset ds;
  ds.rows = rows;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < p.inputCount(); ++i) ds.inputs.push_back(rng.uniform(0.5, 1.5));
    for (int64_t i = 0; i < p.targetCount(); ++i) ds.targets.push_back(rng.uniform(0, 1));
  }
  return ds;
}

// `nabla explain`: the options of one explanation (see Explain.h).
struct ExplainCommand {
  std::string file, data, labels, params, latex;
  std::vector<std::string> names;
  uint64_t seed = 0;
  int64_t row = -1; // -1: none given
  bool seedGiven = false, ascii = false, markdown = false;
  int maxUnits = 8;
  std::string html; // --html F.html: the page (writeExplainHtml)
};

// The data file a sample ships with: data/STEM.csv beside the program (samples/data/hinton.csv for
// samples/hinton.nn), so that `nabla explain samples/hinton.nn --row 0` reads the lecture's example.
std::string dataBeside(const std::string &file) {
  namespace fs = std::filesystem;
  fs::path p(file);
  fs::path csv = p.parent_path() / "data" / (p.stem().string() + ".csv");
  std::error_code ec;
  return fs::is_regular_file(csv, ec) ? csv.string() : std::string();
}

// explain --html F.html: the forward graph laid out by dot, the explanation beside it, one file.
int writeExplainHtml(const std::string &path, const Program &p, const Explanation &e) {
  // The picture without the consumers' colours (the page colours a value's consumers when it is
  // clicked), the same nodes as the coloured graph whose consumers the page lists.
  const DotGraph plain = graphToDot(p, nullptr, p.source.name, GraphDetail::Auto, false);
  const DotGraph g = graphToDot(p, &e, p.source.name, GraphDetail::Auto, false);
  unwrap(writeFileAtomically(path, explainHtml(e, g, unwrap(runDot(plain.text, "svg")))));
  std::printf("wrote %s\n", path.c_str());
  return 0;
}

int cmdExplain(const ExplainCommand &c) {
  if (!c.html.empty() && (!c.latex.empty() || c.markdown || c.ascii))
    fail(fmt::format("nabla: error: 'explain --html' writes a page; it takes no {}",
                     !c.latex.empty() ? "--latex" : c.markdown ? "--markdown" : "--ascii"));
  Program p = compileFile(c.file);
  requireLoss(p, "explain");
  Derivation d = deriveOrFail(p);
  ExplainOptions o;
  o.names = c.names;
  o.ascii = c.ascii;
  o.maxUnits = c.maxUnits;
  o.withNumbers = !c.params.empty() || !c.data.empty() || c.row >= 0 || c.seedGiven;
  if (o.withNumbers) {
    // The example: row K of --data (or of the data file the program ships with), else one random
    // example from the seed (inputs in [0.5, 1.5], targets in [0, 1]).
    std::string data = c.data;
    if (data.empty() && c.row >= 0 && !takesNoData(p)) {
      data = dataBeside(c.file);
      if (data.empty())
        fail(fmt::format("{}: error: '--row' needs --data (no data/{}.csv beside the program)", c.file,
                         std::filesystem::path(c.file).stem().string()));
    }
    Dataset ds = data.empty() && c.labels.empty() ? (takesNoData(p) ? loadData(p, "explain", "", "", false, false)
                                                                     : randomData(p, c.seed, 1))
                                                  : loadData(p, "explain", data, c.labels, false, false);
    if (!ds.hasTargets) fail(fmt::format("{}: error: 'explain' needs targets: give the labels with --labels", data));
    ds.expandInputBytes();
    const int64_t row = c.row < 0 ? 0 : c.row;
    if (row >= ds.rows && takesNoData(p))
      fail(fmt::format("{}: error: --row {}: the program has no inputs and no targets, so it is one "
                       "example, row 0", c.file, row));
    if (row >= ds.rows)
      fail(fmt::format("{}: error: --row {} is beyond the data's {} row{} (rows count from 0)", data, row,
                       ds.rows, ds.rows == 1 ? "" : "s"));
    const size_t ni = static_cast<size_t>(p.inputCount()), nt = static_cast<size_t>(p.targetCount());
    o.inputs.assign(ds.inputs.begin() + static_cast<ptrdiff_t>(row * ni), ds.inputs.begin() + static_cast<ptrdiff_t>((row + 1) * ni));
    o.targets.assign(ds.targets.begin() + static_cast<ptrdiff_t>(row * nt), ds.targets.begin() + static_cast<ptrdiff_t>((row + 1) * nt));
    o.params = paramsFor(p, c.params, c.seed, false);
    std::string source = takesNoData(p) ? "no data" : data.empty() ? fmt::format("a random example from seed {}", c.seed)
                                                                   : fmt::format("row {} of {}", row, data);
    o.example = fmt::format("{}, params {}", source,
                            c.params.empty() ? fmt::format("initialized from seed {}", c.seed) : "from " + c.params);
  }
  Expected<Explanation> ex = explain(p, d, o);
  if (!ex && ex.error().message.rfind("internal error", 0) == 0) { // the chain rule did not add up
    std::fprintf(stderr, "nabla: %s (a bug in nabla, please report it)\n", ex.error().message.c_str());
    return 2;
  }
  Explanation e = unwrap(std::move(ex));
  if (o.withNumbers) {
    // Every param's gradient, checked against the compiled one (the JIT in f64, the interpreter
    // where the JIT cannot take the program): the worked example is the gradient nabla trains with.
    CompileOptions co;
    co.dtype = DType::F64;
    Expected<Model> m = Model::compileString(p.source.text, p.source.name, co);
    if (!m) {
      co.engine = Engine::Interp;
      m = Model::compileString(p.source.text, p.source.name, co);
    }
    if (!m) fail(m.error().message);
    std::vector<double> grads;
    const double loss = m->lossAndGradient(o.params, o.inputs.data(), o.targets.data(), 1, grads);
    auto close = [](double a, double b) { // (the same infinity or NaN where the program overflows)
      return a == b || (std::isnan(a) && std::isnan(b)) || std::abs(a - b) <= 1e-7 * std::max({1.0, std::abs(a), std::abs(b)});
    };
    std::string mismatch;
    if (e.lossValue && !close(loss, *e.lossValue))
      mismatch = fmt::format("the loss {} is {} by the interpreter but {} compiled", p.loss->name, *e.lossValue, loss);
    for (const ExplainEntry &en : e.entries) {
      const Decl *decl = en.isParam ? p.findParam(en.name) : nullptr;
      if (!decl || !en.numbers || !mismatch.empty()) continue;
      for (int64_t k = 0; k < decl->shape.numel(); ++k) {
        const double want = grads[static_cast<size_t>(decl->offset + k)], got = (*en.numbers)[static_cast<size_t>(k)];
        if (!close(want, got)) {
          mismatch = fmt::format("{}[{}] is {} by the terms but {} compiled", en.gradient, k, got, want);
          break;
        }
      }
    }
    if (!mismatch.empty()) {
      std::fprintf(stderr, "nabla: internal error (a bug in nabla, please report it): explain: %s\n", mismatch.c_str());
      return 2;
    }
  }
  if (!c.html.empty()) return writeExplainHtml(c.html, p, e);
  std::string out = !c.latex.empty() ? renderLatex(e, c.latex != "fragment")
                    : c.markdown     ? renderMarkdown(e)
                                     : renderText(e, c.ascii);
  std::fputs(out.c_str(), stdout);
  return 0;
}

int cmdGradcheck(const std::string &file, const std::string &data, const std::string &labels,
                 uint64_t seed, const std::string &engine, int64_t maxChecks) {
  Model m = compileModel(file, engine, DType::F64);
  const Program &p = m.program();
  requireLoss(p, "gradcheck");
  Dataset ds = data.empty() && labels.empty() && !takesNoData(p)
                   ? randomData(p, seed, 4)
                   : loadData(p, "gradcheck", data, labels, false, false);
  if (!ds.hasTargets) fail(fmt::format("{}: error: 'gradcheck' needs targets: give the labels with --labels", data));
  ds.expandInputBytes(); // the f64 interface
  unwrap(checkMemory(m, "gradcheck", Workload::Gradcheck, ds.rows, ds.rows, 1));
  std::vector<double> P = initParams(p, seed);
  std::vector<double> grads, scratch;
  double loss0 = m.lossAndGradient(P, ds.inputs.data(), ds.targets.data(), ds.rows, grads);
  auto loss = [&](const std::vector<double> &q) {
    return m.lossAndGradient(q, ds.inputs.data(), ds.targets.data(), ds.rows, scratch);
  };
  std::printf("gradcheck %s: loss %s over %lld example%s, %s engine, central differences in f64\n",
              file.c_str(), formatNumber(loss0).c_str(), static_cast<long long>(ds.rows),
              ds.rows == 1 ? "" : "s", engine.c_str());
  bool ok = true;
  constexpr double kTolerance = 1e-6;
  Rng pick(seed ^ 0xc0ffeeull);
  for (const Decl &decl : p.params) {
    double maxDiff = 0, maxRef = 0;
    int64_t worst = 0, count = decl.shape.numel();
    // Every element, or a seeded sample of maxChecks of them for large params.
    std::vector<int64_t> which;
    for (int64_t i = 0; i < count; ++i) which.push_back(i);
    if (maxChecks > 0 && count > maxChecks) {
      for (int64_t i = 0; i < maxChecks; ++i)
        std::swap(which[static_cast<size_t>(i)], which[static_cast<size_t>(i + static_cast<int64_t>(pick.next() % static_cast<uint64_t>(count - i)))]);
      which.resize(static_cast<size_t>(maxChecks));
    }
    for (int64_t i : which) {
      size_t at = static_cast<size_t>(decl.offset + i);
      double h = 1e-6 * std::max(1.0, std::abs(P[at]));
      std::vector<double> q = P;
      q[at] = P[at] + h;
      double up = loss(q);
      q[at] = P[at] - h;
      double down = loss(q);
      double fd = (up - down) / (2 * h);
      double diff = std::abs(fd - grads[at]);
      if (diff > maxDiff || std::isnan(diff)) maxDiff = std::isnan(diff) ? INFINITY : diff, worst = i;
      maxRef = std::max({maxRef, std::abs(fd), std::abs(grads[at])});
    }
    // Relative to the largest magnitude in this gradient; tiny gradients are compared absolutely.
    double rel = maxDiff / std::max(maxRef, 1e-6);
    bool good = rel <= kTolerance;
    ok &= good;
    std::string checked = static_cast<int64_t>(which.size()) < count
                              ? fmt::format(", {} of {} elements checked", which.size(), count) : "";
    std::printf("  %-12s %-10s worst relative error %.3g (element %lld%s)  %s\n", decl.name.c_str(),
                decl.shape.describe().c_str(), rel, static_cast<long long>(worst), checked.c_str(),
                good ? "ok" : "FAILED");
  }
  std::printf(ok ? "all gradients agree to %g\n" : "gradients differ by more than %g\n", kTolerance);
  return ok ? 0 : 1;
}

int cmdPredict(const std::string &file, const std::string &paramsPath, const std::string &data,
               const std::string &labels, const std::string &engine, const std::string &dtype) {
  Model m = compileModel(file, engine, parseDType(dtype));
  const Program &p = m.program();
  if (p.outputs.empty())
    fail(fmt::format("{}: error: 'predict' needs outputs, but the program declares none (add "
                     "'output NAME, ...')", p.source.name));
  unwrap(checkMemory(m, "predict", Workload::Predict, 1, 1, 1));
  const bool f32 = dtype == "f32";
  std::vector<double> P = loadParamsFor(p, paramsPath, f32);
  Dataset ds = loadData(p, "predict", data, labels, /*targetsOptional=*/true, f32);
  unwrap(checkMemory(m, "predict", Workload::Predict, ds.rows, ds.rows, 1));
  ds.expandInputBytes(); // the f64 interface
  DType dt = parseDType(dtype);
  std::vector<double> y = m.forward(P, ds.inputs.data(), ds.rows);
  const size_t width = static_cast<size_t>(p.outputCount());
  std::string out;
  for (int64_t r = 0; r < ds.rows; ++r) {
    for (size_t j = 0; j < width; ++j) {
      double v = y[static_cast<size_t>(r) * width + j];
      out += j ? "," : "";
      out += dt == DType::F32 ? fmt::format("{}", static_cast<float>(v)) : formatNumber(v);
    }
    out += '\n';
  }
  std::fputs(out.c_str(), stdout);
  if (!ds.hasTargets) return 0;
  if (ds.classTargets) {
    // The first output shaped like the target is the prediction; argmax against the class.
    const Decl &t = p.targets[0];
    int64_t at = -1, off = 0;
    for (auto &o : p.outputs) {
      if (at < 0 && p.graph.shape(o.node) == t.shape) at = off;
      off += p.graph.shape(o.node).numel();
    }
    if (at < 0) return 0;
    int64_t k = t.shape.numel(), hits = 0;
    for (int64_t r = 0; r < ds.rows; ++r) {
      const double *pr = y.data() + r * static_cast<int64_t>(width) + at;
      const double *tr = ds.targets.data() + r * k;
      hits += std::max_element(pr, pr + k) - pr == std::max_element(tr, tr + k) - tr;
    }
    std::fprintf(stderr, "accuracy: %.4f\n", static_cast<double>(hits) / static_cast<double>(ds.rows));
  } else if (p.loss) {
    std::vector<double> grads;
    double loss = m.lossAndGradient(P, ds.inputs.data(), ds.targets.data(), ds.rows, grads);
    std::fprintf(stderr, "loss: %s\n", formatNumber(loss).c_str());
  }
  return 0;
}

// --- train ----------------------------------------------------------------------------------

struct TrainCommand {
  std::string file, data, labels, testData, testLabels, save, init, plot, log, optimizer = "sgd",
      engine = "jit", dtype = "f32", schedule = "constant";
  int epochs = 10, threads = 1;
  int64_t batch = 32;
  double lr = 0, valid = 0; // lr 0: the optimizer's default
  bool lrGiven = false;
  uint64_t seed = 0;
};

// The directory of an output file must exist before training starts, not after.
void requireWritableDir(const std::string &path, const char *option) {
  if (path.empty()) return;
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    fail(fmt::format("{}: error: cannot write the {} file: directory '{}': {}", path, option, dir,
                     std::strerror(errno)));
}

// Whether two names are one file: by device and inode where both exist, else by their absolute,
// normalized paths (symbolic links in the existing part resolved).
bool sameFile(const std::string &a, const std::string &b) {
  struct stat sa {}, sb {};
  const bool ea = ::stat(a.c_str(), &sa) == 0, eb = ::stat(b.c_str(), &sb) == 0;
  if (ea || eb) return ea && eb && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
  std::error_code e1, e2;
  auto ca = std::filesystem::weakly_canonical(std::filesystem::absolute(a, e1), e1);
  auto cb = std::filesystem::weakly_canonical(std::filesystem::absolute(b, e2), e2);
  return !e1 && !e2 && ca == cb;
}

// Every output of a training run is checked before the run, not after it is lost: an output may
// not be one of the inputs (the source, the data, the initial params) or another output, and each
// must be a place a file can be written (not a directory, a writable directory, a name the file
// system takes). Devices and FIFOs (/dev/stdout, a pipe) are written in place and may be shared.
void checkTrainFiles(const TrainCommand &c) {
  const std::vector<std::pair<const char *, const std::string *>> inputs = {
      {"source", &c.file}, {"--data", &c.data}, {"--params", &c.init}};
  const std::vector<std::pair<const char *, const std::string *>> outputs = {
      {"--save", &c.save}, {"--log", &c.log}, {"--plot", &c.plot}};
  for (size_t k = 0; k < outputs.size(); ++k) {
    const auto &[option, path] = outputs[k];
    if (path->empty()) continue;
    struct stat st {};
    const bool replaced = ::stat(path->c_str(), &st) != 0 || S_ISREG(st.st_mode);
    if (replaced) {
      for (const auto &[input, in] : inputs)
        if (!in->empty() && sameFile(*path, *in))
          fail(fmt::format("{}: error: the {} file would overwrite the {} file '{}'; choose another name",
                           *path, option, input, *in));
      for (size_t j = 0; j < k; ++j)
        if (!outputs[j].second->empty() && sameFile(*path, *outputs[j].second))
          fail(fmt::format("{}: error: the {} file and the {} file are the same file; choose another name",
                           *path, option, outputs[j].first));
    }
    unwrap(checkOutputFile(*path, option));
  }
}

int cmdTrain(const TrainCommand &c) {
  TrainOptions o;
  std::optional<OptimizerKind> kind = parseOptimizer(c.optimizer);
  if (!kind)
    fail(fmt::format("nabla: error: unknown optimizer '{}' (expected sgd, momentum or adam)", c.optimizer));
  o.optimizer.kind = *kind;
  o.optimizer.lr = c.lrGiven ? c.lr : defaultLearningRate(*kind);
  std::optional<LrSchedule> schedule = parseLrSchedule(c.schedule);
  if (!schedule)
    fail(fmt::format("nabla: error: unknown --lr-schedule '{}' (expected constant, cosine or linear)", c.schedule));
  o.schedule = *schedule;
  o.epochs = c.epochs, o.batch = c.batch, o.seed = c.seed, o.threads = c.threads, o.validFraction = c.valid;
  if (std::string bad = checkTrainOptions(o); !bad.empty()) fail("nabla: error: " + bad);
  requireWritableDir(c.save, "--save");
  requireWritableDir(c.plot, "--plot");
  requireWritableDir(c.log, "--log");
  checkTrainFiles(c);

  const auto t0 = std::chrono::steady_clock::now();
  Model m = compileModel(c.file, c.engine, parseDType(c.dtype));
  const double compileSeconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const Program &p = m.program();
  requireLoss(p, "train");
  const bool f32 = c.dtype == "f32";
  if (!c.testLabels.empty() && c.testData.empty())
    fail("nabla: error: --test-labels needs --test-data (the test images)");
  Dataset ds = loadData(p, "train", c.data, c.labels, false, f32);
  if (!ds.hasTargets) fail(fmt::format("{}: error: 'train' needs targets: give the labels with --labels", c.data));
  std::optional<Dataset> test;
  if (!c.testData.empty()) {
    if (takesNoData(p))
      fail(fmt::format("{}: error: 'train' takes no --test-data: the program has no inputs and no "
                       "targets", p.source.name));
    test = loadData(p, "train", c.testData, c.testLabels, false, f32, "--test-data", "--test-labels");
    if (!test->hasTargets)
      fail(fmt::format("{}: error: the test data needs targets: give the labels with --test-labels", c.testData));
    o.test = &*test;
  }
  unwrap(checkMemory(m, "train", Workload::Train, ds.rows + (test ? test->rows : 0), c.batch, c.threads));
  std::vector<double> init = paramsFor(p, c.init, c.seed, f32);

  // Progress: an epoch line for every epoch up to 100 of them; beyond (a program without inputs
  // trains one example an epoch, thousands of them) for the first, the last and every k-th, k
  // 1, 2 or 5 times a power of ten, so that about 100 lines at most are printed, the same
  // whatever the speed. --log keeps every epoch.
  int64_t stride = 1;
  for (int64_t power = 1; c.epochs / stride > 100; power *= 10)
    for (int64_t k : {1, 2, 5})
      if (c.epochs / stride > 100) stride = k * power;
  const bool manyEpochs = stride > 1;
  const bool tty = ::isatty(::fileno(stderr)) != 0;
  auto lastDraw = std::chrono::steady_clock::time_point{};
  if (tty)
    o.onBatch = [&](const BatchProgress &b) {
      auto now = std::chrono::steady_clock::now();
      if ((b.batch != 1 || manyEpochs) && now - lastDraw < std::chrono::milliseconds(100)) return;
      lastDraw = now;
      std::fprintf(stderr, "\r\033[K%s", formatBatchLine(b).c_str());
      std::fflush(stderr);
    };
  o.onEpoch = [&](const EpochStats &s) {
    if (s.epoch != 1 && s.epoch != s.epochs && s.epoch % stride != 0) return;
    std::fprintf(stderr, "%s%s\n", tty ? "\r\033[K" : "",
                 formatEpochLine(s, o.schedule != LrSchedule::Constant).c_str());
    std::fflush(stderr);
  };
  const RowSplit split = splitRows(ds.rows, o.validFraction, o.seed);
  const int64_t batch = std::min<int64_t>(o.batch, std::max<int64_t>(1, static_cast<int64_t>(split.train.size())));
  const std::string lrText = o.schedule == LrSchedule::Constant
                                 ? fmt::format("lr {:g}", o.optimizer.lr)
                                 : fmt::format("lr {:g} ({} decay)", o.optimizer.lr, lrScheduleName(o.schedule));
  std::fprintf(stderr, "training %s on %lld examples%s: %s, %s, batch %lld, %d epoch%s, seed %llu, "
               "%d thread%s, %s %s\n", c.file.c_str(), static_cast<long long>(split.train.size()),
               split.valid.empty() ? "" : fmt::format(" ({} held out)", split.valid.size()).c_str(),
               optimizerName(*kind), lrText.c_str(), static_cast<long long>(batch), o.epochs,
               o.epochs == 1 ? "" : "s", static_cast<unsigned long long>(o.seed), o.threads,
               o.threads == 1 ? "" : "s", c.engine.c_str(), c.dtype.c_str());
  TrainResult r = unwrap(train(m, ds, init, o));

  std::string out = fmt::format(
      "trained in {} (+ {} compiling): {} epoch{} of {} example{}, {} examples/s\n",
      formatDuration(r.seconds), formatDuration(compileSeconds), o.epochs, o.epochs == 1 ? "" : "s",
      r.trainRows, r.trainRows == 1 ? "" : "s", formatRate(r.examplesPerSecond));
  const bool acc = r.accuracy.kind != AccuracyKind::None;
  if (r.validRows > 0) {
    out += fmt::format("held-out loss {:.4f}", r.validLoss);
    if (acc)
      out += fmt::format(", held-out accuracy: {:.4f} ({} of {})", r.validAccuracy,
                         std::llround(r.validAccuracy * static_cast<double>(r.validRows)), r.validRows);
    out += "\n";
  }
  if (r.testRows > 0) {
    out += fmt::format("test loss {:.4f}", r.testLoss);
    if (std::isfinite(r.testAccuracy))
      out += fmt::format(", test accuracy: {:.4f} ({} of {})", r.testAccuracy,
                         std::llround(r.testAccuracy * static_cast<double>(r.testRows)), r.testRows);
    out += "\n";
  }
  out += fmt::format("training loss {:.4f}", r.trainLoss);
  if (acc)
    out += fmt::format(", training accuracy: {:.4f} ({} of {})", r.trainAccuracy,
                       std::llround(r.trainAccuracy * static_cast<double>(r.trainRows)), r.trainRows);
  out += "\n";
  // A function to minimize: where it ended is the answer (a few params are shown; --save has all).
  // (Shortest text of the dtype's value: "0.9124394" in f32; a tensor flat, row-major.)
  if (takesNoData(p) && p.paramCount() <= 16) {
    auto num = [&](double v) { return f32 ? fmt::format("{}", static_cast<float>(v)) : formatNumber(v); };
    std::string at;
    for (const Decl &d : p.params) {
      std::string v;
      for (int64_t i = 0; i < d.shape.numel(); ++i)
        v += (i ? ", " : "") + num(r.params[static_cast<size_t>(d.offset + i)]);
      at += fmt::format("{}{} = {}", at.empty() ? "" : ", ", d.shape.isScalar() ? d.name : d.name + d.shape.str(),
                        d.shape.isScalar() ? v : "[" + v + "]");
    }
    if (!at.empty()) out += "params: " + at + "\n";
  }
  if (!c.save.empty()) {
    unwrap(writeFileAtomically(c.save, formatParams(p, r.params)));
    out += fmt::format("saved the params to {}\n", c.save);
  }
  if (!c.log.empty()) {
    unwrap(writeFileAtomically(c.log, formatTrainingLog(r.history)));
    out += fmt::format("wrote the log to {}\n", c.log);
  }
  if (!c.plot.empty()) {
    std::string title = fmt::format("{}: {}, lr {:g}, batch {}", c.file, optimizerName(*kind),
                                    o.optimizer.lr, batch);
    unwrap(writeFileAtomically(c.plot, plotTrainingSvg(r.history, title)));
    out += fmt::format("wrote the plot to {}\n", c.plot);
  }
  std::fputs(out.c_str(), stdout);
  return 0;
}

int cmdIr(const std::string &file, int optLevel, const std::string &dtype) {
  Model m = compileModel(file, "interp", parseDType(dtype));
  std::string ir = unwrap(optimizedIR(m.loops(), JitOptions{dtype == "f64", optLevel}));
  std::fputs(ir.c_str(), stdout);
  return 0;
}

// emit-cpp: DIR/NAME.hpp and DIR/NAME.cpp (and NAME_main.cpp), written atomically, all or none.
int cmdEmitCpp(const std::string &file, const std::string &dir, const std::string &dtype,
               const std::string &paramsPath, bool withMain) {
  Program p = compileFile(file);
  if (withMain) requireLoss(p, "emit-cpp --main");
  std::optional<Derivation> d;
  if (p.loss) d = deriveOrFail(p);
  std::vector<NodeId> outs = d ? d->outputs : simplifiedOutputs(p);
  loops::Program lp = lowerToLoops(p, outs, d ? &*d : nullptr);
  std::optional<std::vector<double>> trained;
  if (!paramsPath.empty()) trained = loadParamsFor(p, paramsPath, dtype == "f32");
  CppEmitOptions o;
  o.f64 = dtype == "f64";
  o.trainedParams = trained ? &*trained : nullptr;
  o.withMain = withMain;
  CppFiles files = emitCpp(p, lp, o);
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    fail(fmt::format("{}: error: cannot write the C++ files there: not a directory", dir));
  fs::create_directories(dir, ec);
  if (ec) fail(fmt::format("{}: error: cannot create the directory: {}", dir, ec.message()));
  std::vector<std::pair<std::string, const std::string *>> out = {{files.name + ".hpp", &files.header},
                                                                  {files.name + ".cpp", &files.source}};
  if (withMain) out.push_back({files.name + "_main.cpp", &files.main});
  // All the files or none (a directory in the way of one, a name too long for the file system).
  std::vector<std::pair<std::string, std::string_view>> writes;
  for (auto &[name, text] : out) writes.emplace_back((fs::path(dir) / name).string(), *text);
  unwrap(writeFilesAtomically(writes));
  for (auto &w : writes) std::printf("wrote %s\n", w.first.c_str());
  return 0;
}

// An integer option read exactly: decimal digits, a '-' only where min < 0, within [min, max].
// (CLI11 alone turns "-1" into the seed 2^64 - 1 and a number beyond the type into its largest.)
template <class T> CLI::Validator integerIn(T min, T max) {
  return CLI::Validator(
      [=](std::string &v) -> std::string {
        T x{};
        const bool negative = !v.empty() && v[0] == '-';
        if (negative && min >= 0)
          return fmt::format("{} is negative; expected an integer in {}..{}", v, min, max);
        auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
        const bool whole = end == v.data() + v.size();
        if (ec == std::errc() && whole && x >= min && x <= max) return {};
        if (ec == std::errc::result_out_of_range || (ec == std::errc() && whole))
          return negative ? fmt::format("{} is too small (at least {})", v, min)
                          : fmt::format("{} is too large (at most {})", v, max);
        return fmt::format("'{}' is not an integer", v);
      },
      "INT", "integer");
}

// The optimal string alignment distance (Levenshtein plus a swap of two neighbours: "trian" is one
// edit from "train").
size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

// The candidate closest to `word`, if it is close enough to be a slip (at most 2 edits, and fewer
// than half the word), else "".
std::string closest(std::string_view word, const std::vector<std::string> &candidates) {
  std::string best;
  size_t bestDistance = SIZE_MAX;
  for (const std::string &c : candidates) {
    size_t dd = editDistance(word, c);
    if (dd < bestDistance) bestDistance = dd, best = c;
  }
  if (word.size() > 64 || bestDistance > 2 || 2 * bestDistance >= word.size()) return "";
  return best;
}

// After a parse error: a misspelt command or option gets its own message with a suggestion
// ("unknown command 'trian'; did you mean 'train'?"), or "" when the error is another one.
std::string misspelling(CLI::App &app, int argc, char **argv) {
  std::vector<std::string> commands;
  CLI::App *sub = nullptr;
  for (CLI::App *c : app.get_subcommands([](CLI::App *) { return true; })) {
    commands.push_back(c->get_name());
    if (argc >= 2 && c->get_name() == argv[1]) sub = c;
  }
  if (argc < 2)
    return fmt::format("nabla: error: no command given; the commands are {}", fmt::join(commands, ", "));
  if (argv[1][0] == '-') return {};
  const std::string command = argv[1];
  if (!sub) {
    std::string near = closest(command, commands);
    return fmt::format("nabla: error: unknown command '{}'{}", command,
                       near.empty() ? "; the commands are " + fmt::format("{}", fmt::join(commands, ", "))
                                    : "; did you mean '" + near + "'?");
  }
  std::vector<std::string> names = {"--help"};
  for (const CLI::Option *o : sub->get_options())
    for (const std::string &n : o->get_lnames()) names.push_back("--" + n);
  for (int i = 2; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg.size() < 3 || arg.substr(0, 2) != "--") continue;
    std::string name(arg.substr(0, arg.find('=')));
    if (sub->get_option_no_throw(name) || name == "--help") continue;
    std::string near = closest(name, names);
    return fmt::format("nabla: error: unknown option '{}' for '{}'{}", name, command,
                       near.empty() ? "" : "; did you mean '" + near + "'?");
  }
  return {};
}

} // namespace

int runCommand(int argc, char **argv) {
  CLI::App app{"nabla: a compiler for neural networks: parse, differentiate symbolically, "
               "evaluate, train."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "nabla 0.1");
  std::string file, emit, data, labels, params, engine = "jit", dtype = "f32", save, out, optimizer = "sgd";
  uint64_t seed = 0;
  bool json = false, ascii = false;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int64_t maxChecks = 200;

  const CLI::Validator kSeed = integerIn<uint64_t>(0, UINT64_MAX);
  // Every file and directory name: '' is an error, not a file that is silently not written.
  const CLI::Validator named(
      [](std::string &v) { return v.empty() ? std::string("an empty name is not a file") : std::string(); },
      "", "named");
  auto addFile = [&](CLI::App *c) { c->add_option("FILE", file, "the .nn program")->required()->check(named); };
  auto *check = app.add_subcommand("check", "parse and check names and shapes; print every value with its shape");
  addFile(check);
  check->add_option("--emit", emit, "print a stage instead")
      ->check(CLI::IsMember({"tokens", "ast", "graph", "grad", "simplified", "loops"}));
  auto *grad = app.add_subcommand("grad", "print dLOSS/dNAME for every value and param, as formulas");
  addFile(grad);
  grad->add_flag("--ascii", ascii, "ASCII notation only (no ᵀ, ⊗, Σ)");
  bool parseable = false;
  grad->add_flag("--parseable", parseable,
                 "ASCII whose every formula is a nabla expression (outer products as reshapes, "
                 "broadcast constants at full shape), for checking the formulas as code");
  ExplainCommand xc;
  auto *explainCmd = app.add_subcommand(
      "explain", "the chain rule value by value: each gradient as its consumers' terms with their source "
                 "lines, small layers element by element, and with an example the numbers of every term");
  explainCmd->add_option("FILE", xc.file, "the .nn program")->required()->check(named);
  explainCmd->add_option("NAME", xc.names, "the values and params to explain (default: all, from the loss backwards)");
  explainCmd->add_option("--params", xc.params, "JSON params (default: initialized from --seed)")->check(named);
  explainCmd->add_option("--data", xc.data, "CSV data, or IDX images with --labels: the example is its row --row")->check(named);
  explainCmd->add_option("--labels", xc.labels, "IDX labels of the --data images")->check(named);
  explainCmd->add_option("--row", xc.row, "the example: row K of --data, counting from 0 (without --data: of data/STEM.csv beside the program)")
      ->check(integerIn<int64_t>(0, INT64_MAX));
  auto *explainSeed = explainCmd->add_option("--seed", xc.seed, "seed of the params (without --params) and of a random example (without --data); default 0")->check(kSeed);
  explainCmd->add_flag("--ascii", xc.ascii, "ASCII notation only (no ᵀ, ⊗, Σ, ·, ←)");
  explainCmd->add_flag("--latex{standalone}", xc.latex, "LaTeX: a standalone document, or with --latex=fragment one to \\input")
      ->check(CLI::IsMember({"standalone", "fragment"}));
  explainCmd->add_flag("--markdown", xc.markdown, "GitHub-flavoured Markdown, math in $...$");
  explainCmd->add_option("--html", xc.html, "write a page (one self-contained file): the graph, and a click on a value shows its terms (needs Graphviz's dot)")
      ->check(named);
  explainCmd->add_option("--max-units", xc.maxUnits, "write gradients element by element for values of at most N units (default 8; 0: never)")
      ->check(CLI::Range(0, 64));
  auto *graph = app.add_subcommand("graph", "draw the graph (and with --grad the chain rule's terms) as SVG or dot");
  addFile(graph);
  graph->add_option("-o", out, "write FILE.svg, .png or .pdf (laid out by Graphviz's dot) or FILE.dot; default: dot text on standard output")->check(named);
  bool withGrad = false;
  std::string detail = "auto";
  graph->add_option("--detail", detail, "ops (every op), values (the named values, each with its expression) or auto (ops up to 200, default)")
      ->check(CLI::IsMember({"auto", "ops", "values"}));
  graph->add_flag("--grad", withGrad, "the gradient graph beside the forward one, an edge per consumer term, coloured by consumer");
  auto *eval = app.add_subcommand("eval", "the loss and its gradient on a data set");
  addFile(eval);
  eval->add_option("--data", data, "CSV data, or IDX images with --labels (none for a program without inputs and targets)")->check(named);
  eval->add_option("--labels", labels, "IDX labels (idx1-ubyte, or .gz) of the --data images")->check(named);
  eval->add_option("--params", params, "JSON params (default: initialized from --seed)")->check(named);
  eval->add_option("--seed", seed, "initialization seed (default 0)")->check(kSeed);
  eval->add_option("--engine", engine, "interp or jit (default jit)")->check(CLI::IsMember({"interp", "jit"}));
  eval->add_option("--dtype", dtype, "f32 or f64 (default f32)")->check(CLI::IsMember({"f32", "f64"}));
  eval->add_flag("--json", json, "print {\"loss\": X, \"grads\": {...}}");
  eval->add_option("--threads", threads, "split the batch across N threads (default: all cores)")->check(CLI::Range(1, 1024));
  auto *gradcheck = app.add_subcommand("gradcheck", "compare the gradient with central finite differences");
  addFile(gradcheck);
  gradcheck->add_option("--data", data, "CSV data, or IDX images with --labels (default: random inputs and targets)")->check(named);
  gradcheck->add_option("--labels", labels, "IDX labels of the --data images")->check(named);
  gradcheck->add_option("--seed", seed, "seed of params and random data (default 0)")->check(kSeed);
  gradcheck->add_option("--engine", engine, "interp or jit (default jit)")->check(CLI::IsMember({"interp", "jit"}));
  gradcheck->add_option("--max-checks", maxChecks, "check at most this many elements of each param, chosen by the seed (default 200; 0: all)")->check(CLI::Range(int64_t(0), int64_t(1) << 40));
  TrainCommand tc;
  auto *train = app.add_subcommand("train", "train with the JIT-compiled gradient (see README.md, \"Training\")");
  train->add_option("FILE", tc.file, "the .nn program")->required()->check(named);
  train->add_option("--data", tc.data, "CSV data, or IDX images with --labels (none for a program without inputs and targets)")->check(named);
  train->add_option("--labels", tc.labels, "IDX labels (idx1-ubyte, or .gz) of the --data images")->check(named);
  train->add_option("--test-data", tc.testData, "test data (CSV, or IDX images with --test-labels), never trained on: its loss and accuracy are reported each epoch")->check(named);
  train->add_option("--test-labels", tc.testLabels, "IDX labels of the --test-data images")->check(named);
  train->add_option("--epochs", tc.epochs, "passes over the training rows (default 10)")->check(integerIn<int>(INT_MIN, INT_MAX));
  train->add_option("--batch", tc.batch, "examples a step (default 32)")->check(integerIn<int64_t>(INT64_MIN, INT64_MAX));
  auto *lrOption = train->add_option("--lr", tc.lr, "learning rate (default: sgd 0.1, momentum 0.01, adam 0.001)");
  train->add_option("--lr-schedule", tc.schedule, "constant (default), cosine or linear: the rate decays over all the run's steps from --lr towards 0");
  train->add_option("--optimizer", tc.optimizer, "sgd, momentum (0.9) or adam (0.9, 0.999, 1e-8); default sgd");
  train->add_option("--seed", tc.seed, "seed of the initial params, the held-out split and the shuffles (default 0)")->check(kSeed);
  train->add_option("--save", tc.save, "write the trained params here (JSON, atomically)")->check(named);
  train->add_option("--params,--init", tc.init, "start from these params (JSON) instead of the seed's")->check(named);
  train->add_option("--threads", tc.threads, "split each batch across N threads (default 1)")->check(integerIn<int>(INT_MIN, INT_MAX));
  train->add_option("--valid", tc.valid, "hold out this fraction of the rows, chosen by the seed, and report on it each epoch (default 0)");
  train->add_option("--plot", tc.plot, "write the loss and accuracy curves here (SVG)")->check(named);
  train->add_option("--log", tc.log, "write the per-epoch numbers here (CSV)")->check(named);
  train->add_option("--engine", tc.engine, "jit or interp (default jit)")->check(CLI::IsMember({"interp", "jit"}));
  train->add_option("--dtype", tc.dtype, "f32 or f64 (default f32)")->check(CLI::IsMember({"f32", "f64"}));
  auto *predict = app.add_subcommand("predict", "print the outputs for every example");
  addFile(predict);
  predict->add_option("--params", params)->required()->check(named);
  predict->add_option("--data", data, "CSV data, or IDX images (with --labels for the accuracy)")->check(named);
  predict->add_option("--labels", labels, "IDX labels of the --data images: prints the accuracy too")->check(named);
  predict->add_option("--engine", engine, "interp or jit (default jit)")->check(CLI::IsMember({"interp", "jit"}));
  predict->add_option("--dtype", dtype, "f32 or f64 (default f32)")->check(CLI::IsMember({"f32", "f64"}));
  auto *ir = app.add_subcommand("ir", "print the LLVM IR of forward and gradient");
  addFile(ir);
  int optLevel = 2;
  ir->add_option("-O", optLevel, "optimization level, -O0 to -O3 (default -O2)")->check(CLI::Range(0, 3));
  ir->add_option("--dtype", dtype, "f32 or f64 (default f32)")->check(CLI::IsMember({"f32", "f64"}));
  auto *emitCpp = app.add_subcommand("emit-cpp", "write standalone C++");
  addFile(emitCpp);
  emitCpp->add_option("-o", out, "output directory (created if missing)")->required()->check(named);
  emitCpp->add_option("--dtype", dtype, "f32 or f64: the type `real` (default f32)")->check(CLI::IsMember({"f32", "f64"}));
  emitCpp->add_option("--params", params, "JSON params: also emit kTrainedParams")->check(named);
  bool withMain = false;
  emitCpp->add_flag("--main", withMain, "also NAME_main.cpp: trains from a CSV file with SGD");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    if (e.get_exit_code() == 0) return app.exit(e); // --help, --version
    if (std::string m = misspelling(app, argc, argv); !m.empty())
      std::fprintf(stderr, "%s\n", m.c_str());
    else
      std::fprintf(stderr, "nabla: error: %s\n", e.what());
    std::fprintf(stderr, "run 'nabla --help' or 'nabla COMMAND --help' for usage\n");
    return 1;
  }
  try {
    if (check->parsed()) return cmdCheck(file, emit);
    if (grad->parsed()) return cmdGrad(file, ascii, parseable);
    if (graph->parsed()) return cmdGraph(file, out, withGrad, detail);
    if (explainCmd->parsed()) return xc.seedGiven = explainSeed->count() > 0, cmdExplain(xc);
    if (eval->parsed()) return cmdEval(file, data, labels, params, seed, engine, dtype, json, threads);
    if (gradcheck->parsed()) return cmdGradcheck(file, data, labels, seed, engine, maxChecks);
    if (train->parsed()) return tc.lrGiven = lrOption->count() > 0, cmdTrain(tc);
    if (predict->parsed()) return cmdPredict(file, params, data, labels, engine, dtype);
    if (ir->parsed()) return cmdIr(file, optLevel, dtype);
    if (emitCpp->parsed()) return cmdEmitCpp(file, out, dtype, params, withMain);
  } catch (const Failure &f) {
    std::string m = f.message;
    if (!m.empty() && m.back() != '\n') m += '\n';
    std::fputs(m.c_str(), stderr);
    return 1;
  } catch (const SizeLimitError &e) { // values too large to lay out: the program's error
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  } catch (const InternalError &e) {
    std::fprintf(stderr, "nabla: internal error (a bug in nabla, please report it): %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc &) {
    std::fprintf(stderr, "nabla: error: out of memory\n");
    return 1;
  } catch (const std::system_error &e) { // the system refused a resource (threads: ulimit -u)
    std::fprintf(stderr, "nabla: error: %s\n", e.what());
    return 1;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "nabla: internal error (a bug in nabla, please report it): %s\n", e.what());
    return 1;
  }
  return 1;
}

namespace {

// Standard output is a result like a file: a write that failed (a full disk, /dev/full, a closed
// descriptor) is an error, exit status 1 with a message, never a silent exit 0. A reader that went
// away (`nabla predict ... | head -1`) is no error of ours: status 1, quietly. SIGPIPE is ignored so
// that such a write returns EPIPE instead of killing nabla with status 141 mid-message.
int finishStandardOutput(int status) {
  errno = 0;
  int e = std::fflush(stdout) != 0 ? errno : 0;
  if (e == 0 && !std::ferror(stdout)) return status;
  // A write that failed earlier left only the stream's error flag (its errno is long gone): ask
  // the descriptor again. An empty write reports a closed descriptor (EBADF) or a full device
  // (ENOSPC); a pipe whose reader is gone polls as POLLERR.
  if (e == 0 && ::write(STDOUT_FILENO, "", 0) < 0) e = errno;
  if (e == 0) {
    struct pollfd p {STDOUT_FILENO, POLLOUT, 0};
    if (::poll(&p, 1, 0) == 1 && (p.revents & POLLERR)) e = EPIPE;
  }
  if (e == EPIPE) return status == 0 ? 1 : status;
  std::fprintf(stderr, "nabla: error: cannot write the standard output: %s\n", std::strerror(e ? e : EIO));
  return 1;
}

} // namespace

int main(int argc, char **argv) {
  std::signal(SIGPIPE, SIG_IGN);
  int status = runCommand(argc, argv);
  return finishStandardOutput(status);
}
