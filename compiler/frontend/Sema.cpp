// Sema: resolves names, infers shapes and builds the forward graph (see Sema.h). Errors never
// cascade: a statement that fails marks its name as poisoned, and later uses stay silent.
//
// Layers are instantiated at each call: the body is checked again in a scope of its own whose
// names carry the call's prefix (`h1.` for `h1 = residual(...)`), so that its params and values
// enter the program with their dotted names, in call order. Every shape error of the user is
// reported here with its place, so that Graph::make never sees operands it would reject.
#include "Sema.h"

#include "Lexer.h"
#include "Parser.h"
#include "Recurrence.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <unordered_map>
#include <unordered_set>

namespace nabla {

namespace {

// The kinds of an option's value: an integer (stride=2, axis=-1), a real (slope=0.1), a flag.
enum class OptKind : uint8_t { Int, Real, Bool };
struct OptionSpec {
  std::string_view name;
  OptKind kind;
};

struct FunctionInfo {
  std::string_view name;
  int minArgs, maxArgs; // maxArgs -1: no limit
  std::vector<OptionSpec> options = {};
};

// Every function a call can name. `dense`, `conv`, the recurrences and `scan` are sugar: only the
// whole right-hand side of an assignment (Sema::sugar).
const std::vector<FunctionInfo> &functions() {
  static const std::vector<FunctionInfo> kFunctions = {
      {"logistic", 1, 1},    {"sigmoid", 1, 1},      {"tanh", 1, 1},      {"relu", 1, 1},
      {"softplus", 1, 1},    {"exp", 1, 1},          {"log", 1, 1},       {"sqrt", 1, 1},
      {"abs", 1, 1},         {"gelu", 1, 1},         {"elu", 1, 1},       {"erf", 1, 1},
      {"sin", 1, 1},         {"cos", 1, 1},          {"leaky_relu", 1, 1, {{"slope", OptKind::Real}}},
      {"sum", 1, 2, {{"keepdims", OptKind::Bool}}},  {"mean", 1, 2, {{"keepdims", OptKind::Bool}}},
      {"max", 1, 2, {{"keepdims", OptKind::Bool}}},  {"min", 1, 2, {{"keepdims", OptKind::Bool}}},
      {"maximum", 2, 2},     {"minimum", 2, 2},      {"softmax", 1, 1},   {"log_softmax", 1, 1},
      {"transpose", 1, 1},   {"dot", 2, 2},          {"cross_entropy", 2, 2},
      {"bce", 2, 2},         {"mse", 2, 2},          {"concat", 2, -1, {{"axis", OptKind::Int}}},
      {"reshape", 2, 2},     {"flatten", 1, 1},      {"zeros", 1, 1},     {"ones", 1, 1},
      {"dim", 2, 2},
      {"conv2d", 2, 3, {{"stride", OptKind::Int}, {"padding", OptKind::Int}}},
      {"maxpool2d", 2, 2, {{"stride", OptKind::Int}}},
      {"avgpool2d", 2, 2, {{"stride", OptKind::Int}}},
      {"dense", 3, 3},
      {"conv", 4, 4, {{"stride", OptKind::Int}, {"padding", OptKind::Int}}},
      {"rnn", 2, 3},         {"gru", 2, 2},          {"lstm", 2, 2},      {"scan", 3, 3},
  };
  return kFunctions;
}
constexpr std::string_view kSugar[] = {"dense", "conv", "rnn", "gru", "lstm", "scan"};
constexpr std::string_view kActivations[] = {"logistic", "sigmoid", "tanh",        "relu",
                                             "softplus", "softmax", "log_softmax", "linear"};
constexpr std::string_view kDistributions[] = {"normal", "uniform", "glorot"};

const FunctionInfo *findFunction(std::string_view name) {
  for (auto &f : functions())
    if (f.name == name) return &f;
  return nullptr;
}

bool isSugarName(std::string_view name) {
  return std::find(std::begin(kSugar), std::end(kSugar), name) != std::end(kSugar);
}

const char *reservedKind(std::string_view name) {
  if (name == "dense" || name == "conv") return "the layer sugar";
  if (name == "true" || name == "false") return "an option value";
  if (isSugarName(name)) return "a recurrence";
  if (findFunction(name)) return "a function";
  for (auto a : kActivations)
    if (a == name) return "an activation";
  for (auto d : kDistributions)
    if (d == name) return "an initializer";
  return nullptr;
}

std::string argCount(int lo, int hi) {
  if (hi < 0) return fmt::format("{} or more arguments", lo);
  if (lo == hi) return fmt::format("{} argument{}", lo, lo == 1 ? "" : "s");
  if (hi == lo + 1) return fmt::format("{} or {} arguments", lo, hi);
  return fmt::format("{} to {} arguments", lo, hi);
}

// "0", "0 or 1", "0 to 3": the axes of a rank-r value.
std::string axesPhrase(int r) {
  if (r <= 1) return "0";
  if (r == 2) return "0 or 1";
  return fmt::format("0 to {}", r - 1);
}

// How a message says what a value is: "is a scalar" or "has shape [3]".
std::string shapePhrase(const Shape &s) {
  return s.isScalar() ? "is a scalar" : "has shape " + s.str();
}

// Edit distance with transpositions (`tahn` is one step from `tanh`), for "did you mean".
size_t editDistance(std::string_view a, std::string_view b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i)
    for (size_t j = 1; j <= m; ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[n][m];
}

// "; did you mean 'tanh'?" for the closest candidate near enough, else "".
std::string didYouMean(std::string_view name, const std::vector<std::string> &candidates) {
  // Bounded work: a program of thousands of names with many misspellings stays fast.
  if (name.size() > 64 || candidates.size() > 5000) return "";
  std::string best;
  size_t bestD = 0;
  for (const std::string &c : candidates) {
    if (c == name || c.size() > 64) continue;
    // Lengths that differ more than the allowed distance cannot be near.
    size_t gap = c.size() > name.size() ? c.size() - name.size() : name.size() - c.size();
    if (3 * gap > std::max(name.size(), c.size()) + 1) continue;
    size_t d = editDistance(name, c);
    // Near enough: about one edit in three characters (so `x` never suggests `y`).
    if (3 * d > std::max(name.size(), c.size()) + 1) continue;
    if (best.empty() || d < bestD || (d == bestD && c < best)) best = c, bestD = d;
  }
  return best.empty() ? "" : fmt::format("; did you mean '{}'?", best);
}

using Value = std::optional<NodeId>;

// An integer where the language expects an integer literal: the value, or why there is none.
struct IntResult {
  enum Status { Ok, NotInt, Reported } status = NotInt;
  int64_t v = 0;
  bool ok() const { return status == Ok; }
};

// The value of one option after checking.
struct OptionValue {
  bool given = false;
  int64_t i = 0;
  double real = 0;
  bool flag = false;
  SourceRange range;
};
using Options = std::map<std::string_view, OptionValue>;

struct LayerDef {
  const LayerAst *ast = nullptr;
  int stmt = 0;                // the top-level statement that defines it
  std::vector<char> isSize;    // per argument: a size (an integer) rather than a value
  bool bad = false;            // its definition has errors: calls are silent
  bool called = false;
  size_t visibleParams = 0;    // top-level params declared before the first call
};

class Sema {
public:
  Sema(Program &p, DiagnosticEngine &d) : P(p), G(p.graph), D(d) { cur_ = &top_; }

  void run(const Module &m) {
    // Where each name is first defined, so that a use above its definition can say so.
    top_.definitions = definitionsOf(m.stmts);
    for (size_t i = 0; i < m.stmts.size(); ++i) {
      topStmt_ = top_.stmt = static_cast<int>(i);
      const Stmt &s = m.stmts[i];
      switch (s.kind) {
      case Stmt::Input:
      case Stmt::Target:
      case Stmt::Param: declaration(s); break;
      case Stmt::Assign:
      case Stmt::Loss: assignment(s); break;
      case Stmt::Output: output(s); break;
      case Stmt::Layer: defineLayer(s); break;
      }
    }
  }

private:
  struct Symbol {
    enum Kind { Input, Target, Param, Value, Size, Layer } kind;
    NodeId node = kNoNode; // kNoNode: poisoned by an earlier error
    SourceLoc loc;
    int64_t size = 0; // Size
  };
  using Definitions = std::unordered_map<std::string, std::pair<int, SourceRange>>;

  // The top level, or the body of one layer call.
  struct Scope {
    std::unordered_map<std::string, Symbol> syms;
    std::vector<std::string> order; // params and values declared here (dotted ones too), in order
    std::string prefix;             // "" at top level, "h1." in the body of h1 = L(...)
    const LayerDef *layer = nullptr;
    Definitions definitions;
    int stmt = 0; // the statement being checked
  };

  static Definitions definitionsOf(const std::vector<Stmt> &stmts) {
    Definitions defs;
    for (size_t i = 0; i < stmts.size(); ++i) {
      const Stmt &s = stmts[i];
      if (s.kind == Stmt::Output) continue;
      defs.try_emplace(std::string(s.name), static_cast<int>(i), s.nameRange);
    }
    return defs;
  }

  // --- names --------------------------------------------------------------------------------

  // Reports reserved, dotted and repeated names; returns false when `name` cannot be declared.
  bool declarable(std::string_view name, SourceRange range, bool dottedAllowed = false) {
    if (const char *kind = reservedKind(name)) {
      D.report(DiagId::ReservedName, range, name, kind);
      return false;
    }
    if (!dottedAllowed && name.find('.') != std::string_view::npos) {
      D.report(DiagId::DottedDeclaration, range, name);
      return false;
    }
    auto it = cur_->syms.find(std::string(name));
    if (it != cur_->syms.end()) {
      D.report(DiagId::Redefinition, range, name);
      D.report(DiagId::PreviousDefinition, it->second.loc, name);
      return false;
    }
    return true;
  }

  // The symbol `name` stands for here, or null (reported unless `quiet`). A layer body sees its
  // own scope and the top-level params declared before the layer's first call.
  const Symbol *lookup(std::string_view name, SourceRange range, bool quiet = false) {
    auto it = cur_->syms.find(std::string(name));
    if (it != cur_->syms.end()) return &it->second;
    if (cur_ != &top_) {
      auto t = top_.syms.find(std::string(name));
      if (t != top_.syms.end()) {
        const Symbol &s = t->second;
        if (s.kind == Symbol::Param &&
            (s.node == kNoNode ||
             static_cast<size_t>(G.node(s.node).iattr) < cur_->layer->visibleParams))
          return &s;
        if (s.kind == Symbol::Layer) return &s;
        if (!quiet) {
          const char *what = s.kind == Symbol::Input    ? "a top-level input"
                             : s.kind == Symbol::Target ? "a top-level target"
                             : s.kind == Symbol::Param  ? "a top-level param declared after the layer's first call"
                                                        : "a top-level value";
          D.report(DiagId::NotVisibleInLayer, range, name, what, cur_->layer->ast->name);
        }
        return nullptr;
      }
      // A top-level name defined below: not visible now, whatever it will be.
      auto later = top_.definitions.find(std::string(name));
      if (later != top_.definitions.end() && later->second.first > topStmt_) {
        if (!quiet) {
          D.report(DiagId::UsedBeforeDefinition, range, name);
          D.report(DiagId::LaterDefinition, later->second.second, name);
        }
        return nullptr;
      }
    }
    if (!quiet) unknownName(name, range);
    return nullptr;
  }

  // Names a message may suggest for a misspelt one.
  std::vector<std::string> nameCandidates() const {
    std::vector<std::string> c;
    for (auto &[n, s] : cur_->syms)
      if (s.kind != Symbol::Layer) c.push_back(n);
    if (cur_ != &top_)
      for (auto &[n, s] : top_.syms)
        if (s.kind == Symbol::Param && s.node != kNoNode &&
            static_cast<size_t>(G.node(s.node).iattr) < cur_->layer->visibleParams)
          c.push_back(n);
    return c;
  }
  std::vector<std::string> functionCandidates() const {
    std::vector<std::string> c;
    for (auto &f : functions()) c.emplace_back(f.name);
    for (auto &[n, l] : layers_) c.push_back(n);
    return c;
  }

  void unknownName(std::string_view name, SourceRange range) {
    const Definitions &defs = cur_->definitions;
    std::string key(name);
    size_t dot = name.find('.');
    // h1.W before `h1 = ...`: the name its prefix defines.
    auto later = defs.find(dot == std::string_view::npos ? key : key.substr(0, dot));
    if (later != defs.end() && later->second.first >= cur_->stmt) {
      D.report(DiagId::UsedBeforeDefinition, range, name);
      D.report(DiagId::LaterDefinition, later->second.second, later->first);
      return;
    }
    if (findFunction(name) && !isSugarName(name)) {
      D.report(DiagId::FunctionAsValue, range, name, name);
      return;
    }
    if (layers_.count(key)) {
      D.report(DiagId::LayerAsValue, range, name, name);
      return;
    }
    std::string hint = didYouMean(name, nameCandidates());
    if (dot != std::string_view::npos && hint.empty()) {
      // h.bias where h = dense(...): say what h does declare.
      std::string prefix = key.substr(0, key.rfind('.') + 1), members;
      int count = 0;
      for (const std::string &n : cur_->order)
        if (n.size() > prefix.size() && n.compare(0, prefix.size(), prefix) == 0 &&
            n.find('.', prefix.size()) == std::string::npos && count++ < 8)
          members += (members.empty() ? "" : ", ") + n;
      if (!members.empty()) {
        D.report(DiagId::UnknownMember, range, name, prefix.substr(0, prefix.size() - 1), members);
        return;
      }
    }
    if (dot != std::string_view::npos && hint.empty())
      D.report(DiagId::UnknownNameDense, range, name, name.substr(0, dot));
    else
      D.report(DiagId::UnknownName, range, name, hint);
  }

  // --- integers where the language expects an integer literal ---------------------------------

  // A number literal (optionally negated), a size argument, or dim(x, k).
  IntResult evalInt(const Expr &e) {
    switch (e.kind) {
    case Expr::Number: {
      if (e.value != std::floor(e.value)) return {};
      // Literals beyond any shape are kept large (dimension checks report them), never wrapped.
      double v = std::min(e.value, 4.0e18);
      return {IntResult::Ok, static_cast<int64_t>(v)};
    }
    case Expr::Neg: {
      IntResult r = evalInt(*e.args[0]);
      if (r.ok()) r.v = -r.v;
      return r;
    }
    case Expr::Name: {
      auto it = cur_->syms.find(std::string(e.text));
      if (it != cur_->syms.end() && it->second.kind == Symbol::Size)
        return {IntResult::Ok, it->second.size};
      return {};
    }
    case Expr::Call:
      if (e.text == "dim") return dimCall(e);
      return {};
    default: return {};
    }
  }

  // dim(x, k): the size of axis k of the value x.
  IntResult dimCall(const Expr &e) {
    if (e.args.size() != 2 || !e.options.empty()) {
      if (e.args.size() != 2)
        D.report(DiagId::WrongArity, e.opRange, "dim", argCount(2, 2), e.args.size());
      else
        D.report(DiagId::NoOptions, e.options[0].nameRange, "dim");
      return {IntResult::Reported};
    }
    Value x = expr(*e.args[0]);
    if (!x) return {IntResult::Reported};
    const Shape s = G.shape(*x);
    const Expr &k = *e.args[1];
    IntResult r = evalInt(k);
    if (r.status == IntResult::Reported) return r;
    if (s.rank() == 0) {
      D.report(DiagId::AxisOfScalar, k.range, "dim");
      return {IntResult::Reported};
    }
    if (!r.ok() || r.v < 0 || r.v >= s.rank()) {
      D.report(DiagId::BadAxis, k.range, "dim", axesPhrase(s.rank()), s.str(), describeExpr(k));
      return {IntResult::Reported};
    }
    return {IntResult::Ok, s[static_cast<int>(r.v)]};
  }

  std::string describeExpr(const Expr &e) const {
    switch (e.kind) {
    case Expr::Number: return fmt::format("number '{}'", e.text);
    case Expr::Name: {
      auto it = cur_->syms.find(std::string(e.text));
      if (it != cur_->syms.end() && it->second.kind == Symbol::Size)
        return fmt::format("size '{}' = {}", e.text, it->second.size);
      return fmt::format("name '{}'", e.text);
    }
    case Expr::Neg:
      if (e.args[0]->kind == Expr::Number)
        return fmt::format("negative number '-{}'", e.args[0]->text);
      if (e.args[0]->kind == Expr::Name) return "-" + describeExpr(*e.args[0]);
      return "an expression";
    case Expr::Call: return fmt::format("a call of '{}'", e.text);
    case Expr::List: return "a list";
    default: return "an expression";
    }
  }

  // A positive integer where a size is expected (a dimension, dense's N, a pool's k).
  std::optional<int64_t> positiveInt(const Expr &e, DiagId notInt) {
    IntResult r = evalInt(e);
    if (r.status == IntResult::Reported) return std::nullopt;
    if (!r.ok() || r.v < 1) {
      D.report(notInt, e.range, describeExpr(e));
      return std::nullopt;
    }
    if (r.v > kMaxElements) {
      D.report(DiagId::DimensionTooLarge, e.range,
               e.kind == Expr::Number ? std::string(e.text) : std::to_string(r.v), kMaxElements);
      return std::nullopt;
    }
    return r.v;
  }

  // --- options --------------------------------------------------------------------------------

  // Checks the options of a call against `f`'s; false (reported) on an unknown, repeated or
  // ill-kinded one.
  bool options(const Expr &call, const FunctionInfo &f, Options &out) {
    bool ok = true;
    for (const OptionAst &o : call.options) {
      const OptionSpec *spec = nullptr;
      for (auto &s : f.options)
        if (s.name == o.name) spec = &s;
      if (!spec) {
        if (f.options.empty()) {
          D.report(DiagId::NoOptions, o.nameRange, f.name);
        } else {
          std::string names;
          for (auto &s : f.options) names += (names.empty() ? "" : ", ") + std::string(s.name);
          D.report(DiagId::UnknownOption, o.nameRange, o.name, f.name, names);
        }
        ok = false;
        continue;
      }
      OptionValue &v = out[spec->name];
      if (v.given) {
        D.report(DiagId::RepeatedOption, o.nameRange, o.name);
        D.report(DiagId::PreviousOption, v.range, o.name);
        ok = false;
        continue;
      }
      v.given = true;
      v.range = o.range;
      const Expr &e = *o.value;
      switch (spec->kind) {
      case OptKind::Bool:
        if (e.kind == Expr::Name && (e.text == "true" || e.text == "false")) {
          v.flag = e.text == "true";
          break;
        }
        D.report(DiagId::OptionKind, e.range, o.name, "true or false", describeExpr(e));
        ok = false;
        break;
      case OptKind::Int: {
        IntResult r = evalInt(e);
        if (r.ok()) {
          v.i = r.v;
          break;
        }
        if (r.status == IntResult::NotInt)
          D.report(DiagId::OptionKind, e.range, o.name, "an integer", describeExpr(e));
        ok = false;
        break;
      }
      case OptKind::Real: {
        const Expr *num = e.kind == Expr::Neg ? e.args[0].get() : &e;
        if (num->kind == Expr::Number) {
          v.real = e.kind == Expr::Neg ? -num->value : num->value;
          break;
        }
        IntResult r = evalInt(e);
        if (r.ok()) {
          v.real = static_cast<double>(r.v);
          break;
        }
        if (r.status == IntResult::NotInt)
          D.report(DiagId::OptionKind, e.range, o.name, "a number", describeExpr(e));
        ok = false;
        break;
      }
      }
    }
    return ok;
  }

  // --- declarations -------------------------------------------------------------------------

  // A shape's dims: positive integers, rank <= 4, a bounded number of elements.
  std::optional<Shape> shape(const ShapeAst &sh) {
    if (!sh.present) return Shape{};
    std::vector<int64_t> dims;
    bool ok = true;
    for (auto &d : sh.dims) {
      std::optional<int64_t> v = positiveInt(*d, DiagId::BadDimension);
      if (!v) ok = false;
      else dims.push_back(*v);
    }
    if (!ok) return std::nullopt;
    if (dims.size() > kMaxRank) {
      D.report(DiagId::RankTooHigh, sh.range, dims.size());
      return std::nullopt;
    }
    return checkedShape(Shape(std::move(dims)), sh.range);
  }

  std::optional<Shape> checkedShape(Shape s, SourceRange range) {
    if (static_cast<size_t>(s.rank()) > kMaxRank) {
      D.report(DiagId::ResultRankTooHigh, range, s.str());
      return std::nullopt;
    }
    long double n = 1;
    for (int64_t d : s.dims) n *= static_cast<long double>(d);
    if (n > static_cast<long double>(kMaxElements)) {
      D.report(DiagId::ShapeTooLarge, range, s.str(), fmt::format("{:.0f}", n), kMaxElements);
      return std::nullopt;
    }
    return s;
  }

  // glorot for [out, in, k...]: uniform in ±sqrt(6 / (fan_in + fan_out)), fan_in = in·Πk,
  // fan_out = out·Πk; the engines compute the bound from the param's shape.
  static Init glorot(const Shape &) { return Init{Init::Glorot}; }

  std::optional<Init> init(const Stmt &s, const Shape &shape) {
    const InitAst &in = s.init;
    Init out;
    switch (in.kind) {
    case InitAst::None:
      if (shape.rank() >= 2) return glorot(shape);
      out.kind = Init::Constant;
      return out;
    case InitAst::Value:
      out.kind = Init::Constant;
      out.a = in.value.value;
      return out;
    case InitAst::Distribution: break;
    }
    int want = 2;
    if (in.dist == "normal") out.kind = Init::Normal;
    else if (in.dist == "uniform") out.kind = Init::Uniform;
    else if (in.dist == "glorot") out.kind = Init::Glorot, want = 0;
    else {
      D.report(DiagId::BadDistribution, in.distRange, in.dist);
      return std::nullopt;
    }
    if (static_cast<int>(in.args.size()) != want) {
      D.report(DiagId::DistributionArity, in.distRange, in.dist, argCount(want, want),
               in.args.size());
      return std::nullopt;
    }
    if (out.kind == Init::Glorot) {
      if (shape.rank() < 2) {
        D.report(DiagId::GlorotRank, in.distRange, s.name, shapePhrase(shape));
        return std::nullopt;
      }
      return glorot(shape);
    }
    out.a = in.args[0].value;
    out.b = in.args[1].value;
    if (out.kind == Init::Normal && out.b < 0) {
      D.report(DiagId::BadStd, in.args[1].range, "standard deviation", "normal", "at least 0",
               in.args[1].value);
      return std::nullopt;
    }
    if (out.kind == Init::Uniform && out.b < out.a) {
      D.report(DiagId::BadStd, in.args[1].range, "upper bound", "uniform",
               fmt::format("at least the lower bound {}", out.a), in.args[1].value);
      return std::nullopt;
    }
    return out;
  }

  void declaration(const Stmt &s) {
    bool ok = declarable(s.name, s.nameRange);
    std::optional<Shape> sh = shape(s.shape);
    std::optional<Init> in;
    if (sh && s.kind == Stmt::Param) in = init(s, *sh);
    if (!ok) return;
    Symbol::Kind kind = s.kind == Stmt::Input    ? Symbol::Input
                        : s.kind == Stmt::Target ? Symbol::Target
                                                 : Symbol::Param;
    if (!sh || (s.kind == Stmt::Param && !in)) {
      cur_->syms[std::string(s.name)] = {kind, kNoNode, s.nameRange.begin};
      cur_->order.emplace_back(s.name);
      return;
    }
    declare(kind, std::string(s.name), *sh, s.nameRange.begin, in ? *in : Init{});
  }

  // Declares `local` in the current scope; the program knows it by its full (prefixed) name.
  NodeId declare(Symbol::Kind kind, const std::string &local, const Shape &sh, SourceLoc loc, Init in) {
    std::vector<Decl> &list = kind == Symbol::Input    ? P.inputs
                              : kind == Symbol::Target ? P.targets
                                                       : P.params;
    Op op = kind == Symbol::Input ? Op::Input : kind == Symbol::Target ? Op::Target : Op::Param;
    // In the steps of a scan after the first, the cell's params are step 0's: one instance.
    if (kind == Symbol::Param && scan_ && scan_->t > 0)
      if (const Decl *shared = P.findParam(cur_->prefix + local)) {
        cur_->syms[local] = {kind, shared->node, loc};
        cur_->order.push_back(local);
        return shared->node;
      }
    Decl d;
    d.name = cur_->prefix + local;
    d.shape = sh;
    d.loc = loc;
    d.init = in;
    d.offset = list.empty() ? 0 : list.back().offset + list.back().shape.numel();
    d.node = G.make(op, {}, 0, static_cast<int64_t>(list.size()), sh);
    list.push_back(d);
    cur_->syms[local] = {kind, d.node, loc};
    cur_->order.push_back(local);
    return d.node;
  }

  void assignment(const Stmt &s) {
    bool isLoss = s.kind == Stmt::Loss;
    // The first loss statement counts even when its expression has errors.
    if (isLoss && firstLoss_) {
      D.report(DiagId::SecondLoss, s.nameRange, s.name);
      D.report(DiagId::PreviousLoss, firstLoss_->nameRange.begin, firstLoss_->name);
    } else if (isLoss) {
      firstLoss_ = &s;
    }
    bool ok = declarable(s.name, s.nameRange);
    Value v;
    const Expr &e = *s.expr;
    if (e.kind == Expr::Call && isSugar(e.text)) {
      if (isLoss) D.report(DiagId::DenseInLoss, e.opRange, e.text);
      else if (ok) v = sugar(s, e);
    } else {
      v = expr(e);
    }
    if (!ok) return;
    cur_->syms[std::string(s.name)] = {Symbol::Value, v ? *v : kNoNode, s.nameRange.begin};
    cur_->order.emplace_back(s.name);
    if (!v) return;
    NamedValue nv{cur_->prefix + std::string(s.name), s.nameRange.begin, *v, topStmt_};
    if (isLoss) {
      if (!G.shape(*v).isScalar()) {
        D.report(DiagId::NonScalarLoss, e.range, s.name, G.shape(*v).str());
        return;
      }
      if (!P.loss) P.loss = nv;
    }
    // A value of a scan's cell is one of a step (NAME.V[t]), not a statement.
    if (scan_) scan_->steps->values.push_back({nv.name.substr(scan_->prefix.size()), scan_->t, *v});
    else P.values.push_back(nv);
  }

  bool isSugar(std::string_view name) const {
    if (isSugarName(name)) return true;
    return isLayer(name);
  }
  // A layer's name, unless a name of the current body hides it.
  bool isLayer(std::string_view name) const {
    if (!layers_.count(std::string(name))) return false;
    auto it = cur_->syms.find(std::string(name));
    return it == cur_->syms.end() || it->second.kind == Symbol::Layer;
  }

  Value sugar(const Stmt &s, const Expr &call) {
    std::string_view f = call.text;
    if (f == "dense") return dense(s, call);
    if (f == "conv") return conv(s, call);
    if (f == "rnn" || f == "gru" || f == "lstm") return recurrence(s, call);
    if (f == "scan") return scan(s, call);
    if (isSugarName(f)) {
      D.report(DiagId::NotSupported, call.opRange, f);
      return std::nullopt;
    }
    return layerCall(s, call);
  }

  // Arity and options of sugar calls.
  bool checkCall(const Expr &call, Options &opts) {
    const FunctionInfo &f = *findFunction(call.text);
    int n = static_cast<int>(call.args.size());
    if (n < f.minArgs || (f.maxArgs >= 0 && n > f.maxArgs)) {
      D.report(DiagId::WrongArity, call.opRange, call.text, argCount(f.minArgs, f.maxArgs), n);
      return false;
    }
    return options(call, f, opts);
  }

  // ACT of dense and conv; `act` must name one.
  bool activation(const Expr &act, std::string_view sugar) {
    for (auto a : kActivations)
      if (act.kind == Expr::Name && act.text == a) return true;
    D.report(DiagId::DenseActivation, act.range, sugar, describeExpr(act));
    return false;
  }
  NodeId applyActivation(std::string_view a, NodeId z) {
    if (a == "linear") return z;
    if (a == "softmax") return G.unary(Op::Softmax, z);
    if (a == "log_softmax") return G.unary(Op::LogSoftmax, z);
    return G.unary(elementwiseOp(a), z);
  }

  // NAME = dense(IN, N, ACT) declares NAME.W[N, K] ~ glorot and NAME.b[N] = 0 and means
  // NAME = ACT(NAME.W @ IN + NAME.b).
  Value dense(const Stmt &s, const Expr &call) {
    Options opts;
    if (!checkCall(call, opts)) return std::nullopt;
    Value in = expr(*call.args[0]);
    const Expr &n = *call.args[1], &act = *call.args[2];
    bool ok = true;
    if (in && G.shape(*in).rank() != 1) {
      D.report(DiagId::DenseInputRank, call.args[0]->range, shapePhrase(G.shape(*in)));
      ok = false;
    }
    std::optional<int64_t> outN = positiveInt(n, DiagId::DenseSize);
    ok &= outN.has_value();
    ok &= activation(act, "dense");
    if (!in || !ok) return std::nullopt;
    int64_t k = G.shape(*in)[0];
    std::optional<Shape> wShape = checkedShape(Shape{*outN, k}, n.range);
    if (!wShape) return std::nullopt;
    std::string name(s.name);
    NodeId W = declare(Symbol::Param, name + ".W", *wShape, s.nameRange.begin, glorot(*wShape));
    NodeId b = declare(Symbol::Param, name + ".b", Shape{*outN}, s.nameRange.begin, Init{});
    NodeId z = G.binary(Op::Add, G.binary(Op::MatMul, W, *in), b);
    return applyActivation(act.text, z);
  }

  // NAME = conv(IN, F, k, ACT, stride=S, padding=P) declares NAME.K[F, C, k, k] ~ glorot and
  // NAME.b[F] = 0 and means ACT(conv2d(IN, NAME.K, NAME.b, stride=S, padding=P)).
  Value conv(const Stmt &s, const Expr &call) {
    Options opts;
    if (!checkCall(call, opts)) return std::nullopt;
    Value in = expr(*call.args[0]);
    bool ok = true;
    if (in && G.shape(*in).rank() != 3) {
      D.report(DiagId::ImageRank, call.args[0]->range, "conv", shapePhrase(G.shape(*in)));
      ok = false;
    }
    std::optional<int64_t> F = positiveInt(*call.args[1], DiagId::ConvSize);
    std::optional<int64_t> k = positiveInt(*call.args[2], DiagId::ConvSize);
    ok &= F && k;
    ok &= activation(*call.args[3], "conv");
    std::optional<std::pair<int64_t, int64_t>> sp = strideAndPadding(opts);
    if (!in || !ok || !sp) return std::nullopt;
    const Shape x = G.shape(*in);
    if (!windowFits(call, x, *k, *k, sp->second, "conv", call.args[2]->range)) return std::nullopt;
    std::optional<Shape> kShape = checkedShape(Shape{*F, x[0], *k, *k}, call.args[1]->range);
    if (!kShape) return std::nullopt;
    std::string name(s.name);
    NodeId K = declare(Symbol::Param, name + ".K", *kShape, s.nameRange.begin, glorot(*kShape));
    NodeId b = declare(Symbol::Param, name + ".b", Shape{*F}, s.nameRange.begin, Init{});
    Value y = conv2dNode(call, *in, K, b, sp->first, sp->second);
    if (!y) return std::nullopt;
    return applyActivation(call.args[3]->text, *y);
  }

  // NAME = rnn(XS, H[, relu]), gru(XS, H), lstm(XS, H): PyTorch's one-layer recurrences over the
  // sequence XS [T, d], unrolled into the graph (Recurrence.h). Declares NAME.W_ih, NAME.W_hh,
  // NAME.b_ih, NAME.b_hh (PyTorch's names, shapes and gate order) ~ uniform(±1/sqrt(H)) and means
  // every state, [T, H].
  Value recurrence(const Stmt &s, const Expr &call) {
    Options opts;
    if (!checkCall(call, opts)) return std::nullopt;
    const std::string_view f = call.text;
    Value xs = expr(*call.args[0]);
    bool ok = true;
    if (xs && G.shape(*xs).rank() != 2) {
      D.report(DiagId::SequenceRank, call.args[0]->range, f, shapePhrase(G.shape(*xs)));
      ok = false;
    }
    std::optional<int64_t> H = positiveInt(*call.args[1], DiagId::HiddenSize);
    ok &= H.has_value();
    CellKind kind = f == "gru" ? CellKind::Gru : f == "lstm" ? CellKind::Lstm : CellKind::RnnTanh;
    if (call.args.size() == 3) {
      const Expr &act = *call.args[2];
      if (act.kind == Expr::Name && act.text == "relu") kind = CellKind::RnnRelu;
      else if (!(act.kind == Expr::Name && act.text == "tanh")) {
        D.report(DiagId::RnnActivation, act.range, describeExpr(act));
        ok = false;
      }
    }
    if (!xs || !ok) return std::nullopt;
    const int64_t d = G.shape(*xs)[1], T = G.shape(*xs)[0];
    // Each step is ~30 nodes and its own kernels: a bound keeps check, grad and the JIT finite.
    steps_ += T;
    if (steps_ > kMaxSteps) {
      D.report(DiagId::TooManySteps, call.args[0]->range, kMaxSteps, T);
      return std::nullopt;
    }
    std::array<Shape, 4> shapes = recurrenceParamShapes(kind, d, *H);
    for (const Shape &sh : shapes)
      if (!checkedShape(sh, call.args[1]->range)) return std::nullopt;
    const std::string name(s.name);
    std::array<NodeId, 4> p;
    for (size_t i = 0; i < 4; ++i)
      p[i] = declare(Symbol::Param, name + "." + std::string(kRecurrenceParamNames[i]), shapes[i],
                     s.nameRange.begin, recurrenceInit(*H));
    Unrolled u = unrollRecurrence(G, kind, *xs, *H, RecurrenceParams{p[0], p[1], p[2], p[3]});
    if (!scan_ || scan_->t == 0) // inside a scan's cell: recorded once, at step 0
      addSteps({cur_->prefix + name, topStmt_, G.shape(*xs)[0], std::move(u.values)}, s.nameRange.begin);
    return u.states;
  }

  // A recurrence's per-step values, also as named values FAMILY[t] ("hs.r[3]") for the printers.
  void addSteps(RecurrenceSteps steps, SourceLoc loc) {
    for (const StepValue &v : steps.values)
      P.values.push_back({fmt::format("{}.{}[{}]", steps.name, v.name, v.t), loc, v.node, topStmt_});
    P.recurrences.push_back(std::move(steps));
  }

  // stride (default 1, at least 1) and padding (default 0, not negative).
  std::optional<std::pair<int64_t, int64_t>> strideAndPadding(const Options &opts) {
    int64_t stride = 1, padding = 0;
    bool ok = true;
    if (auto it = opts.find("stride"); it != opts.end() && it->second.given) {
      stride = it->second.i;
      if (stride < 1 || stride > kMaxElements) {
        D.report(DiagId::BadOptionValue, it->second.range, "stride", "a positive integer", stride);
        ok = false;
      }
    }
    if (auto it = opts.find("padding"); it != opts.end() && it->second.given) {
      padding = it->second.i;
      if (padding < 0 || padding > kMaxElements) {
        D.report(DiagId::BadOptionValue, it->second.range, "padding", "an integer, 0 or more", padding);
        ok = false;
      }
    }
    if (!ok) return std::nullopt;
    return std::make_pair(stride, padding);
  }

  // The kh × kw window must fit the image padded by `pad` on every side.
  bool windowFits(const Expr &call, const Shape &x, int64_t kh, int64_t kw, int64_t pad,
                  std::string_view what, SourceRange at) {
    (void)call;
    if (x[1] + 2 * pad < kh || x[2] + 2 * pad < kw) {
      D.report(DiagId::WindowTooLarge, at, what, fmt::format("{} × {}", kh, kw),
               pad ? fmt::format("the padded image ({} × {}, padding {})", x[1] + 2 * pad,
                                 x[2] + 2 * pad, pad)
                   : fmt::format("the image ({} × {})", x[1], x[2]));
      return false;
    }
    return true;
  }

  // conv2d(x, K[, b]): PyTorch's conv2d; a bias [F] is reshaped to [F, 1, 1] and broadcast.
  Value conv2dNode(const Expr &call, NodeId x, NodeId K, std::optional<NodeId> b, int64_t stride,
                   int64_t pad) {
    const Shape xs = G.shape(x), ks = G.shape(K); // copies: G.make below may grow the node vector
    Shape y{ks[0], (xs[1] + 2 * pad - ks[2]) / stride + 1, (xs[2] + 2 * pad - ks[3]) / stride + 1};
    if (!checkedShape(y, call.range)) return std::nullopt;
    NodeId r = G.make(Op::Conv2d, {x, K}, 0, 0, {}, {stride, pad});
    if (b) r = G.binary(Op::Add, r, G.reshape(*b, Shape{ks[0], 1, 1}));
    return r;
  }

  // --- layers ---------------------------------------------------------------------------------

  void defineLayer(const Stmt &s) {
    const LayerAst &L = *s.layer;
    bool ok = declarable(L.name, L.nameRange);
    LayerDef def;
    def.ast = &L;
    def.stmt = topStmt_;
    std::unordered_set<std::string_view> seen;
    for (auto &[a, range] : L.args) {
      if (const char *kind = reservedKind(a)) {
        D.report(DiagId::ReservedName, range, a, kind);
        def.bad = true;
      } else if (!seen.insert(a).second) {
        D.report(DiagId::DuplicateArgument, range, a, L.name);
        def.bad = true;
      }
    }
    // An argument used where an integer literal is expected is a size.
    std::unordered_set<std::string_view> sizes;
    for (const Stmt &b : L.body) {
      for (auto &d : b.shape.dims) sizesIn(*d, true, sizes, def);
      if (b.expr) sizesIn(*b.expr, false, sizes, def);
    }
    if (L.result) sizesIn(*L.result, false, sizes, def);
    for (auto &[a, range] : L.args) def.isSize.push_back(sizes.count(a) ? 1 : 0);
    if (!ok) return;
    top_.syms[std::string(L.name)] = {Symbol::Layer, kNoNode, L.nameRange.begin};
    layers_[std::string(L.name)] = std::move(def);
  }

  // Collects the names used in integer positions of `e` (intPos: `e` itself is one), and reports
  // a call of the layer being defined (recursion).
  void sizesIn(const Expr &e, bool intPos, std::unordered_set<std::string_view> &out, LayerDef &def) {
    switch (e.kind) {
    case Expr::Number: return;
    case Expr::Name:
      if (intPos) out.insert(e.text);
      return;
    case Expr::Neg: sizesIn(*e.args[0], intPos, out, def); return;
    case Expr::Binary:
    case Expr::Power:
      for (auto &a : e.args) sizesIn(*a, false, out, def);
      return;
    case Expr::List:
      for (auto &a : e.args) sizesIn(*a, true, out, def);
      return;
    case Expr::Index:
      sizesIn(*e.args[0], false, out, def);
      for (auto &ix : e.indices) {
        if (ix.lo) sizesIn(*ix.lo, true, out, def);
        if (ix.hi) sizesIn(*ix.hi, true, out, def);
      }
      return;
    case Expr::Call: break;
    }
    std::string_view f = e.text;
    if (f == def.ast->name) {
      D.report(DiagId::Recursion, e.opRange, f);
      def.bad = true;
    }
    // Which positional arguments are integers.
    std::vector<char> ints(e.args.size(), 0);
    auto mark = [&](size_t i) {
      if (i < ints.size()) ints[i] = 1;
    };
    if (f == "sum" || f == "mean" || f == "max" || f == "min" || f == "dense" || f == "dim" ||
        f == "maxpool2d" || f == "avgpool2d" || f == "rnn" || f == "gru" || f == "lstm")
      mark(1);
    if (f == "conv") mark(1), mark(2);
    if (auto it = layers_.find(std::string(f)); it != layers_.end())
      for (size_t i = 0; i < it->second.isSize.size(); ++i)
        if (it->second.isSize[i]) mark(i);
    for (size_t i = 0; i < e.args.size(); ++i) {
      // The activation of dense/conv/rnn and the cell of scan are names, not values.
      if (((f == "dense" || f == "rnn") && i == 2) || (f == "conv" && i == 3) || (f == "scan" && i == 0))
        continue;
      sizesIn(*e.args[i], ints[i] != 0, out, def);
    }
    for (auto &o : e.options) sizesIn(*o.value, o.name != "keepdims" && o.name != "slope", out, def);
  }

  // NAME = L(ARGS): checks L's body in a scope of its own; its params and values become NAME.P
  // and NAME.V, in the program and in the caller's scope.
  Value layerCall(const Stmt &s, const Expr &call) {
    LayerDef &L = layers_.at(std::string(call.text));
    const LayerAst &A = *L.ast;
    if (L.stmt > (cur_ == &top_ ? topStmt_ : cur_->layer->stmt)) {
      D.report(DiagId::UsedBeforeDefinition, call.opRange, call.text);
      D.report(DiagId::LaterDefinition, A.nameRange, call.text);
      return std::nullopt;
    }
    if (!call.options.empty()) {
      D.report(DiagId::NoOptions, call.options[0].nameRange, call.text);
      return std::nullopt;
    }
    if (call.args.size() != A.args.size()) {
      D.report(DiagId::WrongArity, call.opRange, call.text,
               argCount(static_cast<int>(A.args.size()), static_cast<int>(A.args.size())),
               call.args.size());
      return std::nullopt;
    }
    if (L.bad) return std::nullopt;
    if (depth_ >= kMaxLayerDepth) {
      D.report(DiagId::LayersTooDeep, call.opRange, kMaxLayerDepth);
      return std::nullopt;
    }
    // Calls that call layers twice, nested, double at each level: bound the whole expansion so
    // that no program makes sema run (or allocate) without end.
    instantiated_ += A.body.size() + 1;
    if (instantiated_ > kMaxInstantiated) {
      if (!expansionReported_) D.report(DiagId::LayersTooLarge, call.opRange, kMaxInstantiated);
      expansionReported_ = true;
      return std::nullopt;
    }
    // The arguments, in the caller's scope.
    Scope body;
    body.prefix = cur_->prefix + std::string(s.name) + ".";
    body.layer = &L;
    body.definitions = definitionsOf(A.body);
    bool ok = true;
    for (size_t i = 0; i < A.args.size(); ++i) {
      const Expr &arg = *call.args[i];
      std::string name(A.args[i].first);
      if (L.isSize[i]) {
        IntResult r = evalInt(arg);
        if (r.status == IntResult::NotInt)
          D.report(DiagId::SizeArgument, arg.range, A.args[i].first, call.text, describeExpr(arg));
        if (!r.ok()) ok = false;
        body.syms[name] = {Symbol::Size, kNoNode, A.args[i].second.begin, r.v};
        continue;
      }
      if (arg.kind == Expr::List) {
        D.report(DiagId::ListNotValue, arg.range);
        ok = false;
        continue;
      }
      Value v = expr(arg);
      if (!v) ok = false;
      body.syms[name] = {Symbol::Value, v ? *v : kNoNode, A.args[i].second.begin};
    }
    if (!ok) return std::nullopt;
    if (!L.called) {
      L.called = true;
      L.visibleParams = P.params.size();
    }
    int errors = D.errorCount();
    Value result = runBody(call, A, body);
    // Its names, for the caller: h1.W, h1.h, h1.inner.W.
    for (const std::string &n : body.order) {
      std::string full = std::string(s.name) + "." + n;
      if (!cur_->syms.count(full)) {
        cur_->syms[full] = body.syms[n];
        cur_->order.push_back(full);
      }
    }
    if (D.errorCount() != errors) return std::nullopt;
    return result;
  }

  // The body of layer A in scope `body` (its arguments bound), with a note at `call` on every
  // error inside it; the returned value.
  Value runBody(const Expr &call, const LayerAst &A, Scope &body) {
    Scope *caller = cur_;
    cur_ = &body;
    ++depth_;
    D.pushContext(call.opRange, std::string(A.name));
    for (size_t i = 0; i < A.body.size(); ++i) {
      body.stmt = static_cast<int>(i);
      const Stmt &b = A.body[i];
      if (b.kind == Stmt::Param) declaration(b);
      else assignment(b);
    }
    body.stmt = static_cast<int>(A.body.size());
    Value result = A.result ? expr(*A.result) : std::nullopt;
    D.popContext();
    --depth_;
    cur_ = caller;
    return result;
  }

  // NAME = scan(CELL, INIT, XS): state_t = CELL(state_(t-1), XS[t]) from state_(-1) = INIT,
  // unrolled (Recurrence.h); the value stacks state_0 .. state_(T-1). The cell's body is
  // instantiated once a step in the scope NAME (its params NAME.W, its values NAME.V), and the
  // params that step 0 declares are the ones every later step uses: one instance shared by all
  // steps, so their gradient is the sum of the T steps' terms. The cell's named values become the
  // per-step values NAME.V[t] (Program::recurrences), not statements.
  Value scan(const Stmt &s, const Expr &call) {
    Options opts;
    if (!checkCall(call, opts)) return std::nullopt;
    const Expr &cellArg = *call.args[0];
    if (cellArg.kind != Expr::Name || !isLayer(cellArg.text)) {
      D.report(DiagId::ScanCell, cellArg.range, describeExpr(cellArg));
      return std::nullopt;
    }
    LayerDef &L = layers_.at(std::string(cellArg.text));
    const LayerAst &A = *L.ast;
    if (L.stmt > (cur_ == &top_ ? topStmt_ : cur_->layer->stmt)) {
      D.report(DiagId::UsedBeforeDefinition, cellArg.range, cellArg.text);
      D.report(DiagId::LaterDefinition, A.nameRange, cellArg.text);
      return std::nullopt;
    }
    bool ok = true;
    if (A.args.size() != 2) {
      D.report(DiagId::ScanCellArguments, cellArg.range, A.name,
               fmt::format("takes {}", argCount(static_cast<int>(A.args.size()), static_cast<int>(A.args.size()))));
      ok = false;
    } else if (L.isSize[0] || L.isSize[1]) {
      D.report(DiagId::ScanCellArguments, cellArg.range, A.name,
               fmt::format("uses its argument '{}' as a size", A.args[L.isSize[0] ? 0 : 1].first));
      ok = false;
    }
    Value init = expr(*call.args[1]);
    Value xs = expr(*call.args[2]);
    if (xs && G.shape(*xs).isScalar()) {
      D.report(DiagId::ScanSequence, call.args[2]->range);
      ok = false;
    }
    if (!init || !xs || !ok || L.bad) return std::nullopt;
    if (depth_ >= kMaxLayerDepth) {
      D.report(DiagId::LayersTooDeep, call.opRange, kMaxLayerDepth);
      return std::nullopt;
    }
    // The stacked states' shape [T, ...] must be a value's.
    std::vector<int64_t> stacked = G.shape(*init).dims;
    stacked.insert(stacked.begin(), G.shape(*xs)[0]);
    if (stacked.size() > 4) {
      D.report(DiagId::ResultRankTooHigh, call.range, Shape(stacked).str());
      return std::nullopt;
    }
    if (!checkedShape(Shape(stacked), call.range)) return std::nullopt;
    if (!L.called) {
      L.called = true;
      L.visibleParams = P.params.size();
    }
    const std::string name(s.name);
    RecurrenceSteps steps{cur_->prefix + name, topStmt_, G.shape(*xs)[0], {}};
    Scope first; // step 0's scope: its params and values are NAME.P, NAME.V for the caller
    bool failed = false;
    const int errors = D.errorCount();
    auto cell = [&](NodeId state, NodeId x, int64_t t) -> NodeId {
      if (failed) return state;
      // Every step instantiates the cell's body: it counts toward the bound on expansion.
      instantiated_ += A.body.size() + 1;
      if (instantiated_ > kMaxInstantiated) {
        if (!expansionReported_) D.report(DiagId::LayersTooLarge, call.opRange, kMaxInstantiated);
        expansionReported_ = true;
        failed = true;
        return state;
      }
      Scope body;
      body.prefix = cur_->prefix + name + ".";
      body.layer = &L;
      body.definitions = definitionsOf(A.body);
      body.syms[std::string(A.args[0].first)] = {Symbol::Value, state, A.args[0].second.begin};
      body.syms[std::string(A.args[1].first)] = {Symbol::Value, x, A.args[1].second.begin};
      steps.values.push_back({"x", t, x});
      ScanStep step{body.prefix, t, &steps, scan_};
      scan_ = &step;
      Value next = runBody(call, A, body);
      scan_ = step.outer;
      if (!next || D.errorCount() != errors) {
        failed = true;
        return state;
      }
      if (G.shape(*next) != G.shape(state)) {
        D.report(DiagId::ScanStateShape, cellArg.range, A.name, G.shape(state).str(),
                 G.shape(*next).str());
        failed = true;
        return state;
      }
      steps.values.push_back({"h", t, *next});
      if (t == 0) first = std::move(body);
      return *next;
    };
    Unrolled u = unrollScan(G, *init, *xs, cell);
    if (failed) return std::nullopt;
    for (const std::string &n : first.order) {
      const Symbol &sym = first.syms[n];
      if (sym.kind != Symbol::Param) continue; // the values are per step: NAME.V[t]
      std::string full = name + "." + n;
      if (!cur_->syms.count(full)) {
        cur_->syms[full] = sym;
        cur_->order.push_back(full);
      }
    }
    if (!scan_ || scan_->t == 0) addSteps(std::move(steps), s.nameRange.begin);
    return u.states;
  }

  // --- elementwise, outputs -------------------------------------------------------------------

  static Op elementwiseOp(std::string_view f) {
    if (f == "logistic" || f == "sigmoid") return Op::Logistic;
    if (f == "tanh") return Op::Tanh;
    if (f == "relu") return Op::Relu;
    if (f == "softplus") return Op::Softplus;
    if (f == "exp") return Op::Exp;
    if (f == "log") return Op::Log;
    if (f == "sqrt") return Op::Sqrt;
    if (f == "abs") return Op::Abs;
    if (f == "gelu") return Op::Gelu;
    if (f == "elu") return Op::Elu;
    if (f == "erf") return Op::Erf;
    if (f == "sin") return Op::Sin;
    if (f == "cos") return Op::Cos;
    return Op::Neg; // not reached: callers pass an elementwise function
  }

  void output(const Stmt &s) {
    for (auto &[name, range] : s.outputs) {
      const Symbol *sym = lookup(name, range);
      if (!sym) continue;
      if (sym->kind == Symbol::Target) {
        D.report(DiagId::TargetAsOutput, range, name);
        continue;
      }
      if (sym->kind == Symbol::Layer) {
        D.report(DiagId::LayerAsValue, range, name, name);
        continue;
      }
      if (sym->node == kNoNode) continue;
      // forward and predict run without targets: a value computed from one cannot be an output.
      if (const Decl *t = targetUnder(sym->node)) {
        D.report(DiagId::OutputNeedsTarget, range, name, t->name);
        continue;
      }
      P.outputs.push_back({std::string(name), range.begin, sym->node, topStmt_});
    }
  }

  // The first target (in declaration order) that `node` is computed from, or null.
  const Decl *targetUnder(NodeId node) const {
    const Decl *first = nullptr;
    for (NodeId id : G.reachable({node}))
      if (G.op(id) == Op::Target) {
        const Decl *d = &P.targets[static_cast<size_t>(G.node(id).iattr)];
        if (!first || d->offset < first->offset) first = d;
      }
    return first;
  }

  // --- expressions ----------------------------------------------------------------------------

  Value binaryOp(Op op, std::string_view spelling, SourceRange at, NodeId a, NodeId b) {
    Shape out;
    if (!broadcastShapes(G.shape(a), G.shape(b), out)) {
      D.report(DiagId::BroadcastMismatch, at, G.shape(a).describe(), G.shape(b).describe(),
               spelling);
      return std::nullopt;
    }
    if (!checkedShape(out, at)) return std::nullopt;
    return G.binary(op, a, b);
  }

  Value matmul(const Expr &e, NodeId a, NodeId b) {
    const Shape sa = G.shape(a), &sb = G.shape(b);
    if (sa.rank() == 0 || sb.rank() == 0) {
      D.report(DiagId::MatMulScalar, e.opRange, sa.rank() == 0 ? "left" : "right");
      return std::nullopt;
    }
    if (sa.rank() > 2 || sb.rank() > 2) {
      D.report(DiagId::MatMulRank, e.opRange, sa.rank() > 2 ? "left" : "right",
               (sa.rank() > 2 ? sa : sb).str());
      return std::nullopt;
    }
    if (sa[sa.rank() - 1] != sb[0]) {
      D.report(DiagId::MatMulMismatch, e.opRange, sa.str(), sb.str());
      return std::nullopt;
    }
    return G.binary(Op::MatMul, a, b);
  }

  Value expr(const Expr &e) {
    switch (e.kind) {
    case Expr::Number: return G.constant(e.value);
    case Expr::Name: {
      const Symbol *sym = lookup(e.text, e.range);
      if (!sym) return std::nullopt;
      if (sym->kind == Symbol::Size) return G.constant(static_cast<double>(sym->size));
      if (sym->kind == Symbol::Layer) {
        D.report(DiagId::LayerAsValue, e.range, e.text, e.text);
        return std::nullopt;
      }
      if (sym->node == kNoNode) return std::nullopt;
      return sym->node;
    }
    case Expr::Neg: {
      Value a = expr(*e.args[0]);
      if (!a) return std::nullopt;
      return G.unary(Op::Neg, *a);
    }
    case Expr::Power: {
      Value a = expr(*e.args[0]);
      if (!a) return std::nullopt;
      return G.make(Op::Pow, {*a}, e.value);
    }
    case Expr::Binary: {
      Value a = expr(*e.args[0]);
      Value b = expr(*e.args[1]);
      if (!a || !b) return std::nullopt;
      switch (e.op) {
      case '+': return binaryOp(Op::Add, "+", e.opRange, *a, *b);
      case '-': return binaryOp(Op::Sub, "-", e.opRange, *a, *b);
      case '*': return binaryOp(Op::Mul, "*", e.opRange, *a, *b);
      case '/': return binaryOp(Op::Div, "/", e.opRange, *a, *b);
      default: return matmul(e, *a, *b);
      }
    }
    case Expr::Call: return call(e);
    case Expr::List: D.report(DiagId::ListNotValue, e.range); return std::nullopt;
    case Expr::Index: return index(e);
    }
    return std::nullopt;
  }

  // x[i, a:b, :]: a Slice of the kept ranges, then a Reshape that drops the indexed axes.
  Value index(const Expr &e) {
    Value base = expr(*e.args[0]);
    if (!base) return std::nullopt;
    const Shape s = G.shape(*base);
    if (s.rank() == 0) {
      D.report(DiagId::IndexScalar, e.opRange);
      return std::nullopt;
    }
    if (e.indices.size() > static_cast<size_t>(s.rank())) {
      D.report(DiagId::TooManyIndices, e.opRange, e.indices.size(), s.str(), s.rank());
      return std::nullopt;
    }
    std::vector<int64_t> start(static_cast<size_t>(s.rank()), 0), kept = s.dims, result;
    bool ok = true;
    for (size_t k = 0; k < e.indices.size(); ++k) {
      const IndexAst &ix = e.indices[k];
      const int64_t size = s[static_cast<int>(k)];
      // A bound: an integer, negative ones counting from the end.
      auto bound = [&](const Expr *b, int64_t dflt) -> std::optional<int64_t> {
        if (!b) return dflt;
        IntResult r = evalInt(*b);
        if (r.status == IntResult::NotInt)
          D.report(DiagId::BadIndex, b->range, describeExpr(*b));
        if (!r.ok()) return std::nullopt;
        return r.v < 0 ? r.v + size : r.v;
      };
      std::optional<int64_t> lo = bound(ix.lo.get(), 0);
      std::optional<int64_t> hi = ix.slice ? bound(ix.hi.get(), size) : std::nullopt;
      if (!lo || (ix.slice && !hi)) {
        ok = false;
        continue;
      }
      std::string_view text = sourceText(ix.range);
      if (!ix.slice) {
        if (*lo < 0 || *lo >= size) {
          D.report(DiagId::IndexOutOfRange, ix.range, text, k, size, size - 1, size);
          ok = false;
          continue;
        }
        start[k] = *lo;
        kept[k] = 1;
        continue;
      }
      if (*lo < 0 || *lo >= *hi || *hi > size) {
        D.report(DiagId::SliceOutOfRange, ix.range, text, k, size, size, *lo, *hi);
        ok = false;
        continue;
      }
      start[k] = *lo;
      kept[k] = *hi - *lo;
    }
    if (!ok) return std::nullopt;
    for (size_t k = 0; k < kept.size(); ++k)
      if (k >= e.indices.size() || e.indices[k].slice) result.push_back(kept[k]);
    NodeId r = *base;
    if (Shape(kept) != s) r = G.slice(r, start, Shape(kept));
    if (Shape(result) != G.shape(r)) r = G.reshape(r, Shape(result));
    return r;
  }

  std::string_view sourceText(SourceRange r) const {
    std::string_view t = D.file().text;
    if (r.begin.offset >= t.size()) return {};
    return t.substr(r.begin.offset, r.length);
  }

  // sum, mean, max, min: of all elements, or along an axis (keepdims leaves it with size 1).
  Value reduce(const Expr &e, NodeId a, const Options &opts) {
    const Shape s = G.shape(a);
    std::string_view f = e.text;
    const bool mean = f == "mean";
    const Op allOp = f == "max" ? Op::Max : f == "min" ? Op::Min : Op::Sum;
    const OptionValue &keep = opts.count("keepdims") ? opts.at("keepdims") : OptionValue{};
    if (e.args.size() == 1) {
      if (keep.given && keep.flag) {
        D.report(DiagId::KeepdimsWithoutAxis, keep.range, f);
        return std::nullopt;
      }
      NodeId r = allOp == Op::Sum ? G.unary(Op::Sum, a) : G.make(allOp, {a}, 0, -1);
      if (!mean) return r;
      return G.binary(Op::Div, r, G.constant(static_cast<double>(s.numel())));
    }
    const Expr &ax = *e.args[1];
    if (s.rank() == 0) {
      D.report(DiagId::AxisOfScalar, ax.range, f);
      return std::nullopt;
    }
    IntResult r = evalInt(ax);
    if (r.status == IntResult::Reported) return std::nullopt;
    // A literal `-1` is not an axis: the axis is 0-based and not negative.
    if (!r.ok() || r.v < 0 || r.v >= s.rank() || ax.kind == Expr::Neg) {
      D.report(DiagId::BadAxis, ax.range, f, axesPhrase(s.rank()), s.str(), describeExpr(ax));
      return std::nullopt;
    }
    const int axis = static_cast<int>(r.v);
    NodeId y;
    if (allOp == Op::Sum) y = s.rank() == 1 ? G.unary(Op::Sum, a) : G.make(Op::SumAxis, {a}, 0, axis);
    else y = G.make(allOp, {a}, 0, s.rank() == 1 ? -1 : axis);
    if (mean) y = G.binary(Op::Div, y, G.constant(static_cast<double>(s[axis])));
    if (keep.given && keep.flag) {
      std::vector<int64_t> d = s.dims;
      d[static_cast<size_t>(axis)] = 1;
      y = G.reshape(y, Shape(std::move(d)));
    }
    return y;
  }

  // A list of sizes: [d1, ...], each a positive integer.
  std::optional<Shape> sizeList(const Expr &e, std::string_view f) {
    if (e.kind != Expr::List) {
      D.report(DiagId::ExpectedList, e.range, f, describeExpr(e));
      return std::nullopt;
    }
    std::vector<int64_t> dims;
    bool ok = true;
    for (auto &d : e.args) {
      std::optional<int64_t> v = positiveInt(*d, DiagId::BadDimension);
      if (!v) ok = false;
      else dims.push_back(*v);
    }
    if (!ok) return std::nullopt;
    if (dims.size() > kMaxRank) {
      D.report(DiagId::RankTooHigh, e.range, dims.size());
      return std::nullopt;
    }
    return checkedShape(Shape(std::move(dims)), e.range);
  }

  Value call(const Expr &e) {
    const FunctionInfo *f = findFunction(e.text);
    if (!f || isLayer(e.text)) {
      const char *kind = reservedKind(e.text);
      if (auto L = layers_.find(std::string(e.text)); isLayer(e.text)) {
        std::string form;
        for (auto &a : L->second.ast->args) form += (form.empty() ? "" : ", ") + std::string(a.first);
        D.report(DiagId::DenseNotWhole, e.opRange, e.text, e.text, form);
      }
      else if (cur_->syms.count(std::string(e.text)))
        D.report(DiagId::NotAFunction, e.opRange, e.text);
      else if (kind && std::string_view(kind) == "an activation")
        D.report(DiagId::ActivationCall, e.opRange, e.text);
      else if (kind && std::string_view(kind) == "an initializer")
        D.report(DiagId::InitializerCall, e.opRange, e.text);
      else if (auto later = cur_->definitions.find(std::string(e.text));
               later != cur_->definitions.end() && later->second.first >= cur_->stmt) {
        // A layer called above its definition.
        D.report(DiagId::UsedBeforeDefinition, e.opRange, e.text);
        D.report(DiagId::LaterDefinition, later->second.second, e.text);
      } else
        D.report(DiagId::UnknownFunction, e.opRange, e.text, didYouMean(e.text, functionCandidates()));
      return std::nullopt;
    }
    int n = static_cast<int>(e.args.size());
    if (n < f->minArgs || (f->maxArgs >= 0 && n > f->maxArgs)) {
      D.report(DiagId::WrongArity, e.opRange, e.text, argCount(f->minArgs, f->maxArgs), n);
      return std::nullopt;
    }
    std::string_view name = e.text;
    if (isSugarName(name)) {
      const char *form = name == "dense"  ? "IN, N, ACT"
                         : name == "conv" ? "IN, F, k, ACT"
                         : name == "scan" ? "CELL, INIT, XS"
                                          : "XS, H";
      D.report(DiagId::DenseNotWhole, e.opRange, name, name, form);
      return std::nullopt;
    }
    if (name == "dim") {
      IntResult r = dimCall(e);
      if (!r.ok()) return std::nullopt;
      return G.constant(static_cast<double>(r.v));
    }
    Options opts;
    bool ok = options(e, *f, opts);
    // Integer and list arguments are not values.
    auto isValueArg = [&](int i) {
      if (i == 0) return name != "zeros" && name != "ones";
      if (i == 1)
        return !(name == "sum" || name == "mean" || name == "max" || name == "min" ||
                 name == "reshape" || name == "maxpool2d" || name == "avgpool2d");
      return true;
    };
    std::vector<NodeId> args;
    for (int i = 0; i < n; ++i) {
      if (!isValueArg(i)) continue;
      const Expr &a = *e.args[static_cast<size_t>(i)];
      Value v = expr(a);
      if (!v) ok = false;
      else args.push_back(*v);
    }
    if (!ok) return std::nullopt;
    if (name == "zeros" || name == "ones") {
      std::optional<Shape> s = sizeList(*e.args[0], name);
      if (!s) return std::nullopt;
      NodeId c = G.constant(name == "ones" ? 1 : 0);
      return s->isScalar() ? c : G.broadcast(c, *s);
    }
    const Shape s0 = G.shape(args[0]);
    auto needRank = [&](bool good, const char *what) {
      if (!good) D.report(DiagId::RankMismatch, e.args[0]->range, name, what, shapePhrase(s0));
      return good;
    };
    if (name == "sum" || name == "mean" || name == "max" || name == "min")
      return reduce(e, args[0], opts);
    if (name == "softmax" || name == "log_softmax") {
      if (!needRank(s0.rank() >= 1, "a value of rank 1 or more (it works along the last axis)"))
        return std::nullopt;
      return G.unary(name == "softmax" ? Op::Softmax : Op::LogSoftmax, args[0]);
    }
    if (name == "transpose") {
      if (!needRank(s0.rank() == 2, "a matrix")) return std::nullopt;
      return G.unary(Op::Transpose, args[0]);
    }
    if (name == "dot") {
      const Shape s1 = G.shape(args[1]);
      if (s0.rank() != 1 || s1.rank() != 1 || s0[0] != s1[0]) {
        D.report(DiagId::DotMismatch, e.opRange, s0.describe(), s1.describe());
        return std::nullopt;
      }
      return G.binary(Op::MatMul, args[0], args[1]);
    }
    if (name == "cross_entropy") {
      // -sum(t * log(p))
      NodeId p = args[0], t = args[1];
      Value prod = binaryOp(Op::Mul, "cross_entropy", e.opRange, t, G.unary(Op::Log, p));
      if (!prod) return std::nullopt;
      return G.unary(Op::Neg, G.unary(Op::Sum, *prod));
    }
    if (name == "bce") {
      // -sum(t * log(p) + (1 - t) * log(1 - p))
      NodeId p = args[0], t = args[1], one = G.constant(1);
      Value a = binaryOp(Op::Mul, "bce", e.opRange, t, G.unary(Op::Log, p));
      if (!a) return std::nullopt;
      NodeId b = G.binary(Op::Mul, G.binary(Op::Sub, one, t),
                          G.unary(Op::Log, G.binary(Op::Sub, one, p)));
      return G.unary(Op::Neg, G.unary(Op::Sum, G.binary(Op::Add, *a, b)));
    }
    if (name == "mse") {
      // mean((a - b)^2)
      Value d = binaryOp(Op::Sub, "mse", e.opRange, args[0], args[1]);
      if (!d) return std::nullopt;
      NodeId sq = G.make(Op::Pow, {*d}, 2.0);
      return G.binary(Op::Div, G.unary(Op::Sum, sq),
                      G.constant(static_cast<double>(G.shape(sq).numel())));
    }
    if (name == "maximum" || name == "minimum")
      return binaryOp(name == "maximum" ? Op::Maximum : Op::Minimum, name, e.opRange, args[0], args[1]);
    if (name == "leaky_relu") {
      double slope = opts.count("slope") ? opts.at("slope").real : 0.01;
      return G.make(Op::LeakyRelu, {args[0]}, slope);
    }
    if (name == "concat") return concat(e, args, opts);
    if (name == "reshape") {
      std::optional<Shape> to = sizeList(*e.args[1], name);
      if (!to) return std::nullopt;
      if (to->numel() != s0.numel()) {
        D.report(DiagId::ReshapeCount, e.args[1]->range, s0.describe(), s0.numel(), to->describe(),
                 to->numel());
        return std::nullopt;
      }
      return *to == s0 ? args[0] : G.reshape(args[0], *to);
    }
    if (name == "flatten") {
      Shape to{s0.numel()};
      return to == s0 ? args[0] : G.reshape(args[0], to);
    }
    if (name == "conv2d") {
      const Shape k = G.shape(args[1]);
      if (!needRank(s0.rank() == 3, "an image [C, H, W]")) return std::nullopt;
      if (k.rank() != 4) {
        D.report(DiagId::RankMismatch, e.args[1]->range, name, "a kernel [F, C, kh, kw]",
                 shapePhrase(k));
        return std::nullopt;
      }
      if (k[1] != s0[0]) {
        D.report(DiagId::ChannelMismatch, e.args[1]->range, k.str(), k[1], s0.str(), s0[0]);
        return std::nullopt;
      }
      std::optional<NodeId> b;
      if (args.size() == 3) {
        const Shape bs = G.shape(args[2]);
        if (bs != Shape{k[0]}) {
          D.report(DiagId::BiasMismatch, e.args[2]->range, k[0], shapePhrase(bs));
          return std::nullopt;
        }
        b = args[2];
      }
      std::optional<std::pair<int64_t, int64_t>> sp = strideAndPadding(opts);
      if (!sp) return std::nullopt;
      if (!windowFits(e, s0, k[2], k[3], sp->second, "conv2d", e.args[1]->range))
        return std::nullopt;
      return conv2dNode(e, args[0], args[1], b, sp->first, sp->second);
    }
    if (name == "maxpool2d" || name == "avgpool2d") {
      if (!needRank(s0.rank() == 3, "an image [C, H, W]")) return std::nullopt;
      std::optional<int64_t> k = positiveInt(*e.args[1], DiagId::PoolSize);
      if (!k) return std::nullopt;
      int64_t stride = *k;
      if (auto it = opts.find("stride"); it != opts.end() && it->second.given) {
        stride = it->second.i;
        if (stride < 1 || stride > kMaxElements) {
          D.report(DiagId::BadOptionValue, it->second.range, "stride", "a positive integer", stride);
          return std::nullopt;
        }
      }
      if (!windowFits(e, s0, *k, *k, 0, name, e.args[1]->range)) return std::nullopt;
      return G.make(name == "maxpool2d" ? Op::MaxPool2d : Op::AvgPool2d, {args[0]}, 0, 0, {},
                    {*k, stride});
    }
    return G.unary(elementwiseOp(name), args[0]);
  }

  // concat(a, b, ..., axis=K): a chain of binary Concats.
  Value concat(const Expr &e, const std::vector<NodeId> &args, const Options &opts) {
    const Shape s0 = G.shape(args[0]);
    int64_t axis = 0;
    SourceRange axisAt = e.opRange;
    if (auto it = opts.find("axis"); it != opts.end() && it->second.given)
      axis = it->second.i, axisAt = it->second.range;
    if (s0.rank() == 0) {
      D.report(DiagId::RankMismatch, e.args[0]->range, "concat", "values of rank 1 or more",
               shapePhrase(s0));
      return std::nullopt;
    }
    if (axis < 0 || axis >= s0.rank()) {
      D.report(DiagId::BadOptionValue, axisAt, "axis", "an axis " + axesPhrase(s0.rank()) + " of " + s0.str(),
               axis);
      return std::nullopt;
    }
    NodeId r = args[0];
    int64_t total = s0[static_cast<int>(axis)];
    for (size_t i = 1; i < args.size(); ++i) {
      const Shape si = G.shape(args[i]);
      bool good = si.rank() == s0.rank();
      for (int k = 0; good && k < s0.rank(); ++k) good = k == axis || si[k] == s0[k];
      if (!good) {
        D.report(DiagId::ConcatMismatch, e.args[i]->range, shapePhrase(si), s0.str(), axis);
        return std::nullopt;
      }
      total += si[static_cast<int>(axis)];
      std::vector<int64_t> d = s0.dims;
      d[static_cast<size_t>(axis)] = total;
      if (!checkedShape(Shape(std::move(d)), e.range)) return std::nullopt;
      r = G.make(Op::Concat, {r, args[i]}, 0, axis);
    }
    return r;
  }

  static constexpr size_t kMaxRank = 4;
  static constexpr int kMaxLayerDepth = 64;
  static constexpr size_t kMaxInstantiated = 20000; // body statements over all layer calls

  Program &P;
  Graph &G;
  DiagnosticEngine &D;
  Scope top_;
  Scope *cur_;
  std::unordered_map<std::string, LayerDef> layers_;
  int topStmt_ = 0;
  int depth_ = 0;
  size_t instantiated_ = 0;
  bool expansionReported_ = false;
  static constexpr int64_t kMaxSteps = 20000; // rnn/gru/lstm steps over the whole program
  int64_t steps_ = 0;
  // The scan step whose cell body is being instantiated (innermost), or null.
  struct ScanStep {
    std::string prefix; // "hs."
    int64_t t = 0;
    RecurrenceSteps *steps = nullptr;
    ScanStep *outer = nullptr;
  };
  ScanStep *scan_ = nullptr;
  const Stmt *firstLoss_ = nullptr;
};

} // namespace

bool isReservedName(std::string_view name) { return reservedKind(name) != nullptr; }

bool analyze(const Module &module, Program &program, DiagnosticEngine &diags) {
  Sema(program, diags).run(module);
  return !diags.hasErrors();
}

std::optional<Program> compileSource(SourceFile file, std::string &diagnostics) {
  std::optional<Program> program(std::in_place);
  program->source = std::move(file);
  DiagnosticEngine diags(program->source);
  std::vector<Token> tokens = lex(program->source, diags);
  Module module = parse(tokens, diags);
  if (!diags.hasErrors()) analyze(module, *program, diags);
  diagnostics = diags.render();
  if (diags.hasErrors()) return std::nullopt;
  return program;
}

// For other tools' messages about names (`nabla explain NAME`): the same suggestion as sema's.
std::string suggestName(std::string_view name, const std::vector<std::string> &candidates) {
  return didYouMean(name, candidates);
}

} // namespace nabla
