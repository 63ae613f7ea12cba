// Sema: resolves names, infers shapes and builds the forward graph (see Sema.h). Errors never
// cascade: a statement that fails marks its name as poisoned, and later uses stay silent.
#include "Sema.h"

#include "Lexer.h"
#include "Parser.h"

#include <cmath>
#include <unordered_map>

namespace nabla {

namespace {

struct FunctionInfo {
  std::string_view name;
  int minArgs, maxArgs;
};

constexpr FunctionInfo kFunctions[] = {
    {"logistic", 1, 1}, {"sigmoid", 1, 1},     {"tanh", 1, 1},          {"relu", 1, 1},
    {"softplus", 1, 1}, {"exp", 1, 1},         {"log", 1, 1},           {"sqrt", 1, 1},
    {"abs", 1, 1},      {"sum", 1, 2},         {"mean", 1, 2},          {"softmax", 1, 1},
    {"log_softmax", 1, 1}, {"transpose", 1, 1}, {"dot", 2, 2},          {"cross_entropy", 2, 2},
    {"bce", 2, 2},      {"mse", 2, 2},         {"dense", 3, 3},
};
constexpr std::string_view kActivations[] = {"logistic", "sigmoid", "tanh",        "relu",
                                             "softplus", "softmax", "log_softmax", "linear"};
constexpr std::string_view kDistributions[] = {"normal", "uniform", "glorot"};

const FunctionInfo *findFunction(std::string_view name) {
  for (auto &f : kFunctions)
    if (f.name == name) return &f;
  return nullptr;
}

const char *reservedKind(std::string_view name) {
  if (name == "dense") return "the layer sugar";
  if (findFunction(name)) return "a function";
  for (auto a : kActivations)
    if (a == name) return "an activation";
  for (auto d : kDistributions)
    if (d == name) return "an initializer";
  return nullptr;
}

std::string argCount(int lo, int hi) {
  if (lo == hi) return fmt::format("{} argument{}", lo, lo == 1 ? "" : "s");
  return fmt::format("{} or {} arguments", lo, hi);
}

std::string describeExpr(const Expr &e) {
  switch (e.kind) {
  case Expr::Number: return fmt::format("number '{}'", e.text);
  case Expr::Name: return fmt::format("name '{}'", e.text);
  case Expr::Neg:
    if (e.args[0]->kind == Expr::Number)
      return fmt::format("negative number '-{}'", e.args[0]->text);
    return "an expression";
  case Expr::Call: return fmt::format("a call of '{}'", e.text);
  default: return "an expression";
  }
}

// How a message says what a value is: "is a scalar" or "has shape [3]".
std::string shapePhrase(const Shape &s) {
  return s.isScalar() ? "is a scalar" : "has shape " + s.str();
}

using Value = std::optional<NodeId>;

class Sema {
public:
  Sema(Program &p, DiagnosticEngine &d) : P(p), G(p.graph), D(d) {}

  void run(const Module &m) {
    // Where each name is first defined, so that a use above its definition can say so.
    for (size_t i = 0; i < m.stmts.size(); ++i) {
      const Stmt &s = m.stmts[i];
      if (s.kind == Stmt::Output) continue;
      definitions_.try_emplace(std::string(s.name), static_cast<int>(i), s.nameRange);
      if (s.kind == Stmt::Assign && s.expr->kind == Expr::Call && s.expr->text == "dense") {
        definitions_.try_emplace(std::string(s.name) + ".W", static_cast<int>(i), s.nameRange);
        definitions_.try_emplace(std::string(s.name) + ".b", static_cast<int>(i), s.nameRange);
      }
    }
    for (size_t i = 0; i < m.stmts.size(); ++i) {
      stmtIndex_ = static_cast<int>(i);
      const Stmt &s = m.stmts[i];
      switch (s.kind) {
      case Stmt::Input:
      case Stmt::Target:
      case Stmt::Param: declaration(s); break;
      case Stmt::Assign:
      case Stmt::Loss: assignment(s); break;
      case Stmt::Output: output(s); break;
      }
    }
  }

private:
  struct Symbol {
    enum Kind { Input, Target, Param, Value } kind;
    NodeId node = kNoNode; // kNoNode: poisoned by an earlier error
    SourceLoc loc;
  };

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
    auto it = syms_.find(std::string(name));
    if (it != syms_.end()) {
      D.report(DiagId::Redefinition, range, name);
      D.report(DiagId::PreviousDefinition, it->second.loc, name);
      return false;
    }
    return true;
  }

  // A shape's dims: positive integer literals, rank <= 2, a bounded number of elements.
  std::optional<Shape> shape(const ShapeAst &sh) {
    if (!sh.present) return Shape{};
    std::vector<int64_t> dims;
    bool ok = true;
    for (auto &d : sh.dims) {
      if (d->kind != Expr::Number || d->value < 1 || d->value != std::floor(d->value) ||
          d->value > double(kMaxElements)) {
        if (d->kind == Expr::Number && d->value > double(kMaxElements) &&
            d->value == std::floor(d->value)) {
          D.report(DiagId::DimensionTooLarge, d->range, d->text, kMaxElements);
        } else {
          D.report(DiagId::BadDimension, d->range, describeExpr(*d));
        }
        ok = false;
        continue;
      }
      dims.push_back(static_cast<int64_t>(d->value));
    }
    if (!ok) return std::nullopt;
    if (dims.size() > 2) {
      D.report(DiagId::RankTooHigh, sh.range, dims.size());
      return std::nullopt;
    }
    return checkedShape(Shape(std::move(dims)), sh.range);
  }

  std::optional<Shape> checkedShape(Shape s, SourceRange range) {
    int64_t n = 1;
    for (int64_t d : s.dims) {
      if (d > kMaxElements / n) {
        D.report(DiagId::ShapeTooLarge, range, s.str(), s.dims[0] * (s.rank() > 1 ? s.dims[1] : 1),
                 kMaxElements);
        return std::nullopt;
      }
      n *= d;
    }
    return s;
  }

  std::optional<Init> init(const Stmt &s, const Shape &shape) {
    const InitAst &in = s.init;
    Init out;
    switch (in.kind) {
    case InitAst::None:
      out.kind = shape.rank() == 2 ? Init::Glorot : Init::Constant;
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
    if (out.kind == Init::Glorot && shape.rank() != 2) {
      D.report(DiagId::GlorotRank, in.distRange, s.name, shapePhrase(shape));
      return std::nullopt;
    }
    if (want == 2) {
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
      syms_[std::string(s.name)] = {kind, kNoNode, s.nameRange.begin};
      return;
    }
    declare(kind, std::string(s.name), *sh, s.nameRange.begin, in ? *in : Init{});
  }

  NodeId declare(Symbol::Kind kind, std::string name, const Shape &sh, SourceLoc loc, Init in) {
    std::vector<Decl> &list = kind == Symbol::Input    ? P.inputs
                              : kind == Symbol::Target ? P.targets
                                                       : P.params;
    Op op = kind == Symbol::Input ? Op::Input : kind == Symbol::Target ? Op::Target : Op::Param;
    Decl d;
    d.name = name;
    d.shape = sh;
    d.loc = loc;
    d.init = in;
    d.offset = list.empty() ? 0 : list.back().offset + list.back().shape.numel();
    d.node = G.make(op, {}, 0, static_cast<int64_t>(list.size()), sh);
    list.push_back(d);
    syms_[name] = {kind, d.node, loc};
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
    if (e.kind == Expr::Call && e.text == "dense") {
      if (isLoss) D.report(DiagId::DenseInLoss, e.opRange);
      else if (ok) v = dense(s, e);
    } else {
      v = expr(e);
    }
    if (!ok) return;
    syms_[std::string(s.name)] = {Symbol::Value, v ? *v : kNoNode, s.nameRange.begin};
    if (!v) return;
    NamedValue nv{std::string(s.name), s.nameRange.begin, *v, stmtIndex_};
    if (isLoss) {
      if (!G.shape(*v).isScalar()) {
        D.report(DiagId::NonScalarLoss, e.range, s.name, G.shape(*v).str());
        return;
      }
      if (!P.loss) P.loss = nv;
    }
    P.values.push_back(nv);
  }

  // NAME = dense(IN, N, ACT) declares NAME.W[N, K] ~ glorot and NAME.b[N] = 0 and means
  // NAME = ACT(NAME.W @ IN + NAME.b).
  Value dense(const Stmt &s, const Expr &call) {
    if (call.args.size() != 3) {
      D.report(DiagId::WrongArity, call.opRange, "dense", argCount(3, 3), call.args.size());
      return std::nullopt;
    }
    Value in = expr(*call.args[0]);
    const Expr &n = *call.args[1], &act = *call.args[2];
    bool ok = true;
    if (in && G.shape(*in).rank() != 1) {
      D.report(DiagId::DenseInputRank, call.args[0]->range, shapePhrase(G.shape(*in)));
      ok = false;
    }
    if (n.kind != Expr::Number || n.value < 1 || n.value != std::floor(n.value)) {
      D.report(DiagId::DenseSize, n.range, describeExpr(n));
      ok = false;
    } else if (n.value > double(kMaxElements)) {
      D.report(DiagId::DimensionTooLarge, n.range, n.text, kMaxElements);
      ok = false;
    }
    bool knownAct = false;
    for (auto a : kActivations) knownAct |= act.kind == Expr::Name && act.text == a;
    if (!knownAct) {
      D.report(DiagId::DenseActivation, act.range, describeExpr(act));
      ok = false;
    }
    if (!in || !ok) return std::nullopt;
    int64_t k = G.shape(*in)[0], outN = static_cast<int64_t>(n.value);
    std::optional<Shape> wShape = checkedShape(Shape{outN, k}, n.range);
    if (!wShape) return std::nullopt;
    std::string name(s.name);
    NodeId W = declare(Symbol::Param, name + ".W", *wShape, s.nameRange.begin, Init{Init::Glorot});
    NodeId b = declare(Symbol::Param, name + ".b", Shape{outN}, s.nameRange.begin, Init{});
    NodeId z = G.binary(Op::Add, G.binary(Op::MatMul, W, *in), b);
    std::string_view a = act.text;
    if (a == "linear") return z;
    if (a == "softmax") return G.unary(Op::Softmax, z);
    if (a == "log_softmax") return G.unary(Op::LogSoftmax, z);
    return G.unary(elementwiseOp(a), z);
  }

  static Op elementwiseOp(std::string_view f) {
    if (f == "logistic" || f == "sigmoid") return Op::Logistic;
    if (f == "tanh") return Op::Tanh;
    if (f == "relu") return Op::Relu;
    if (f == "softplus") return Op::Softplus;
    if (f == "exp") return Op::Exp;
    if (f == "log") return Op::Log;
    if (f == "sqrt") return Op::Sqrt;
    if (f == "abs") return Op::Abs;
    return Op::Neg; // not reached: callers pass an elementwise function
  }

  void output(const Stmt &s) {
    for (auto &[name, range] : s.outputs) {
      auto it = syms_.find(std::string(name));
      if (it == syms_.end()) {
        unknownName(name, range);
        continue;
      }
      if (it->second.kind == Symbol::Target) {
        D.report(DiagId::TargetAsOutput, range, name);
        continue;
      }
      if (it->second.node == kNoNode) continue;
      // forward and predict run without targets: a value computed from one cannot be an output.
      if (const Decl *t = targetUnder(it->second.node)) {
        D.report(DiagId::OutputNeedsTarget, range, name, t->name);
        continue;
      }
      P.outputs.push_back({std::string(name), range.begin, it->second.node, stmtIndex_});
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

  void unknownName(std::string_view name, SourceRange range) {
    auto later = definitions_.find(std::string(name));
    if (later != definitions_.end() && later->second.first >= stmtIndex_) {
      D.report(DiagId::UsedBeforeDefinition, range, name);
      D.report(DiagId::LaterDefinition, later->second.second, name);
      return;
    }
    size_t dot = name.find('.');
    if (dot != std::string_view::npos)
      D.report(DiagId::UnknownNameDense, range, name, name.substr(0, dot));
    else if (findFunction(name))
      D.report(DiagId::FunctionAsValue, range, name, name);
    else
      D.report(DiagId::UnknownName, range, name);
  }

  Value binaryOp(Op op, const char *spelling, const Expr &e, NodeId a, NodeId b) {
    Shape out;
    if (!broadcastShapes(G.shape(a), G.shape(b), out)) {
      D.report(DiagId::BroadcastMismatch, e.opRange, G.shape(a).describe(), G.shape(b).describe(),
               spelling);
      return std::nullopt;
    }
    if (!checkedShape(out, e.opRange)) return std::nullopt;
    return G.binary(op, a, b);
  }

  Value matmul(const Expr &e, NodeId a, NodeId b) {
    const Shape &sa = G.shape(a), &sb = G.shape(b);
    if (sa.rank() == 0 || sb.rank() == 0) {
      D.report(DiagId::MatMulScalar, e.opRange, sa.rank() == 0 ? "left" : "right");
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
      auto it = syms_.find(std::string(e.text));
      if (it == syms_.end()) {
        unknownName(e.text, e.range);
        return std::nullopt;
      }
      if (it->second.node == kNoNode) return std::nullopt;
      return it->second.node;
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
      case '+': return binaryOp(Op::Add, "+", e, *a, *b);
      case '-': return binaryOp(Op::Sub, "-", e, *a, *b);
      case '*': return binaryOp(Op::Mul, "*", e, *a, *b);
      case '/': return binaryOp(Op::Div, "/", e, *a, *b);
      default: return matmul(e, *a, *b);
      }
    }
    case Expr::Call: return call(e);
    }
    return std::nullopt;
  }

  // sum(a), sum(a, AXIS); mean is sum divided by the number of summed elements.
  Value reduce(const Expr &e, NodeId a, bool mean) {
    const Shape &s = G.shape(a);
    int64_t count = s.numel();
    NodeId r;
    if (e.args.size() == 2) {
      const Expr &ax = *e.args[1];
      if (s.rank() == 0) {
        D.report(DiagId::AxisOfScalar, ax.range, e.text);
        return std::nullopt;
      }
      if (ax.kind != Expr::Number || ax.value != std::floor(ax.value) || ax.value < 0 ||
          ax.value >= s.rank()) {
        D.report(DiagId::BadAxis, ax.range, e.text, s.rank() == 1 ? "0" : "0 or 1", s.str(),
                 describeExpr(ax));
        return std::nullopt;
      }
      int axis = static_cast<int>(ax.value);
      count = s[axis];
      r = s.rank() == 1 ? G.unary(Op::Sum, a) : G.make(Op::SumAxis, {a}, 0, axis);
    } else {
      r = G.unary(Op::Sum, a);
    }
    if (!mean) return r;
    return G.binary(Op::Div, r, G.constant(static_cast<double>(count)));
  }

  Value call(const Expr &e) {
    const FunctionInfo *f = findFunction(e.text);
    if (!f) {
      const char *kind = reservedKind(e.text);
      if (syms_.count(std::string(e.text)))
        D.report(DiagId::NotAFunction, e.opRange, e.text);
      else if (kind && std::string_view(kind) == "an activation")
        D.report(DiagId::ActivationCall, e.opRange, e.text);
      else if (kind && std::string_view(kind) == "an initializer")
        D.report(DiagId::InitializerCall, e.opRange, e.text);
      else
        D.report(DiagId::UnknownFunction, e.opRange, e.text);
      return std::nullopt;
    }
    int n = static_cast<int>(e.args.size());
    if (n < f->minArgs || n > f->maxArgs) {
      D.report(DiagId::WrongArity, e.opRange, e.text, argCount(f->minArgs, f->maxArgs), n);
      return std::nullopt;
    }
    if (e.text == "dense") {
      D.report(DiagId::DenseNotWhole, e.opRange);
      return std::nullopt;
    }
    // The axis of sum/mean is a literal, not a value.
    bool axisArg = e.text == "sum" || e.text == "mean";
    std::vector<NodeId> args;
    bool ok = true;
    for (int i = 0; i < n; ++i) {
      if (axisArg && i == 1) break;
      Value v = expr(*e.args[static_cast<size_t>(i)]);
      if (!v) ok = false;
      else args.push_back(*v);
    }
    if (!ok) return std::nullopt;
    std::string_view name = e.text;
    const Shape &s0 = G.shape(args[0]);
    auto needRank = [&](bool good, const char *what) {
      if (!good) D.report(DiagId::RankMismatch, e.args[0]->range, name, what, shapePhrase(s0));
      return good;
    };
    if (name == "sum" || name == "mean") return reduce(e, args[0], name == "mean");
    if (name == "softmax" || name == "log_softmax") {
      if (!needRank(s0.rank() >= 1, "a vector or a matrix")) return std::nullopt;
      return G.unary(name == "softmax" ? Op::Softmax : Op::LogSoftmax, args[0]);
    }
    if (name == "transpose") {
      if (!needRank(s0.rank() == 2, "a matrix")) return std::nullopt;
      return G.unary(Op::Transpose, args[0]);
    }
    if (name == "dot") {
      const Shape &s1 = G.shape(args[1]);
      if (s0.rank() != 1 || s1.rank() != 1 || s0[0] != s1[0]) {
        D.report(DiagId::DotMismatch, e.opRange, s0.describe(), s1.describe());
        return std::nullopt;
      }
      return G.binary(Op::MatMul, args[0], args[1]);
    }
    if (name == "cross_entropy") {
      // -sum(t * log(p))
      NodeId p = args[0], t = args[1];
      Value prod = binaryOp(Op::Mul, "cross_entropy", e, t, G.unary(Op::Log, p));
      if (!prod) return std::nullopt;
      return G.unary(Op::Neg, G.unary(Op::Sum, *prod));
    }
    if (name == "bce") {
      // -sum(t * log(p) + (1 - t) * log(1 - p))
      NodeId p = args[0], t = args[1], one = G.constant(1);
      Value a = binaryOp(Op::Mul, "bce", e, t, G.unary(Op::Log, p));
      if (!a) return std::nullopt;
      NodeId b = G.binary(Op::Mul, G.binary(Op::Sub, one, t),
                          G.unary(Op::Log, G.binary(Op::Sub, one, p)));
      return G.unary(Op::Neg, G.unary(Op::Sum, G.binary(Op::Add, *a, b)));
    }
    if (name == "mse") {
      // mean((a - b)^2)
      Value d = binaryOp(Op::Sub, "mse", e, args[0], args[1]);
      if (!d) return std::nullopt;
      NodeId sq = G.make(Op::Pow, {*d}, 2.0);
      return G.binary(Op::Div, G.unary(Op::Sum, sq),
                      G.constant(static_cast<double>(G.shape(sq).numel())));
    }
    return G.unary(elementwiseOp(name), args[0]);
  }

  Program &P;
  Graph &G;
  DiagnosticEngine &D;
  std::unordered_map<std::string, Symbol> syms_;
  int stmtIndex_ = 0;
  const Stmt *firstLoss_ = nullptr;
  std::unordered_map<std::string, std::pair<int, SourceRange>> definitions_;
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

} // namespace nabla
