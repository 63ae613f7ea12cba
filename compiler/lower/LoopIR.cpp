// Loop IR helpers and its stable text form (`check --emit loops`).
#include "LoopIR.h"

#include "ProgramPrinter.h"

#include <fmt/format.h>

namespace nabla::loops {

Affine &Affine::add(int var, int64_t coef) {
  if (coef == 0) return *this;
  for (auto &t : terms)
    if (t.first == var) {
      t.second += coef;
      if (t.second == 0) terms.erase(terms.begin() + (&t - terms.data()));
      return *this;
    }
  terms.emplace_back(var, coef);
  return *this;
}

int64_t Affine::coef(int var) const {
  for (auto &[v, c] : terms)
    if (v == var) return c;
  return 0;
}

Affine Affine::without(int var) const {
  Affine r = *this;
  std::erase_if(r.terms, [&](const auto &t) { return t.first == var; });
  return r;
}

Affine Affine::scaled(int64_t k) const {
  Affine r;
  if (k == 0) return r;
  r.constant = constant * k;
  for (auto &t : terms) r.terms.emplace_back(t.first, t.second * k);
  return r;
}

Affine Affine::plus(const Affine &o) const {
  Affine r = *this;
  r.constant += o.constant;
  for (auto &t : o.terms) r.add(t.first, t.second);
  return r;
}

static std::string varName(const Kernel &k, int v) {
  for (auto &l : k.loops)
    if (l.var == v && l.batch) return "b";
  return fmt::format("i{}", v);
}

static std::string affine(const Kernel &k, const Affine &a) {
  std::string s;
  for (auto &[v, c] : a.terms) {
    if (!s.empty()) s += " + ";
    s += c == 1 ? varName(k, v) : fmt::format("{}*{}", c, varName(k, v));
  }
  if (a.constant || s.empty()) s += (s.empty() ? "" : " + ") + std::to_string(a.constant);
  return s;
}

static std::string bufRef(const Kernel &k, const Program &p, int b, const Affine &idx) {
  return fmt::format("{}{}[{}]", p.buffers[static_cast<size_t>(b)].space == Space::Workspace ? "%" : "",
                     p.buffers[static_cast<size_t>(b)].name, affine(k, idx));
}

// " if 0 <= i1 + -1 < 28 and ...", or "" without bounds.
static std::string bounds(const Kernel &k, const std::vector<Bound> &bs) {
  std::string s;
  for (auto &b : bs) s += fmt::format("{} 0 <= {} < {}", s.empty() ? " if" : " and", affine(k, b.index), b.extent);
  return s;
}

static std::string expr(const Kernel &k, const Program &p, int e) {
  const Expr &x = k.pool[static_cast<size_t>(e)];
  switch (x.kind) {
  case Expr::Const: return formatNumber(x.value);
  case Expr::Load:
    if (!x.bounds.empty()) return "(" + bufRef(k, p, x.buffer, x.index) + bounds(k, x.bounds) + " else 0)";
    return bufRef(k, p, x.buffer, x.index);
  case Expr::Index: return "real(" + affine(k, x.index) + ")";
  case Expr::Select:
    return fmt::format("({} {} {} ? {} : {})", expr(k, p, x.a), x.cmp == Expr::Ge ? ">=" : x.cmp == Expr::Gt ? ">" : "==",
                       expr(k, p, x.b), expr(k, p, x.c), expr(k, p, x.d));
  case Expr::Acc: return "acc";
  case Expr::BatchSize: return "n";
  case Expr::Max: return fmt::format("max({}, {})", expr(k, p, x.a), expr(k, p, x.b));
  case Expr::Unary:
    if (x.op == Op::Pow) return fmt::format("pow({}, {})", expr(k, p, x.a), formatNumber(x.value));
    if (x.op == Op::LeakyRelu) return fmt::format("leaky_relu({}, {})", expr(k, p, x.a), formatNumber(x.value));
    return fmt::format("{}({})", opSpelling(x.op), expr(k, p, x.a));
  case Expr::Binary: {
    if (x.op != Op::Add && x.op != Op::Sub && x.op != Op::Mul && x.op != Op::Div)
      return fmt::format("{}({}, {})", opSpelling(x.op), expr(k, p, x.a), expr(k, p, x.b));
    const char *o = x.op == Op::Add ? "+" : x.op == Op::Sub ? "-" : x.op == Op::Mul ? "*" : "/";
    return fmt::format("({} {} {})", expr(k, p, x.a), o, expr(k, p, x.b));
  }
  }
  return "?";
}

int64_t Radix::size() const {
  int64_t n = 1;
  for (int64_t e : extents) n *= e;
  return n;
}

int64_t Radix::at(int64_t t) const {
  int64_t v = 0;
  for (size_t i = extents.size(); i-- > 0;) {
    v += t % extents[i] * coefs[i];
    t /= extents[i];
  }
  return v;
}

int64_t Radix::max() const {
  int64_t v = 0;
  for (size_t i = 0; i < extents.size(); ++i) v += (extents[i] - 1) * coefs[i];
  return v;
}

// "(14·36, 14·2)": each digit's extent and coefficient.
static std::string radixText(const Radix &r) {
  std::string s = "(";
  for (size_t i = 0; i < r.extents.size(); ++i) s += fmt::format("{}{}·{}", i ? ", " : "", r.extents[i], r.coefs[i]);
  return s + ")";
}

std::string dump(const Kernel &k, const Program &p) {
  std::string out;
  if (!k.comment.empty()) out += "  # " + k.comment + "\n";
  std::string indent = "  ";
  if (k.minBatch > 0 || k.maxBatch > 0) {
    out += indent + "when " + (k.minBatch > 0 ? fmt::format("n >= {}", k.minBatch) : "") +
           (k.minBatch > 0 && k.maxBatch > 0 ? " and " : "") +
           (k.maxBatch > 0 ? fmt::format("n < {}", k.maxBatch) : "") + ":\n";
    indent += "  ";
  }
  const std::string base = indent;
  for (auto &l : k.loops) {
    out += indent + (!l.reduction ? "for " : k.combine == Kernel::Sum ? "sum " : k.combine == Kernel::Max ? "max " : "min ") + varName(k, l.var) + " in " +
           (l.batch ? std::string("0..n") : fmt::format("0..{}", l.extent)) + ":\n";
    indent += "  ";
  }
  switch (k.mode) {
  case Kernel::Assign:
    out += indent + bufRef(k, p, k.out, k.outIndex) + " = " + expr(k, p, k.body) + "\n";
    break;
  case Kernel::Accumulate:
    out += indent + bufRef(k, p, k.out, k.outIndex) + " += " + expr(k, p, k.body) + bounds(k, k.outBounds) + "\n";
    break;
  case Kernel::Reduce:
    out += indent + (k.combine == Kernel::Sum ? "acc += " : k.combine == Kernel::Max ? "acc max= " : "acc min= ") +
           expr(k, p, k.body) + "\n";
    out += base + bufRef(k, p, k.out, k.outIndex) + " = " + expr(k, p, k.epilogue) +
           (k.dotTiles ? "   (register-tiled dot products)" : "") + "\n";
    break;
  case Kernel::Gemm:
    out += indent + bufRef(k, p, k.out, k.outIndex) + (k.accumulate ? " += " : " = ") +
           expr(k, p, k.body) + "   (tiled matrix product; " + (k.accumulate ? "accumulates" : "k-sum starts at 0") +
           (k.divideByBatch ? ", divided by n" : "") +
           (k.epilogue >= 0 ? ", stored as " + expr(k, p, k.epilogue) : std::string()) +
           (k.aRows.empty() ? std::string()
                            : "; A's row m at + " + radixText(k.aRows) + " of m's digits, its k at + " +
                                  radixText(k.aCols) + " of k's digits") +
           ")\n";
    break;
  case Kernel::Softmax:
    out += indent + fmt::format("{}({}, {} values) -> {}\n", k.logSoftmax ? "log_softmax" : "softmax",
                                bufRef(k, p, k.in, k.inIndex), k.cols, bufRef(k, p, k.out, k.outIndex));
    break;
  }
  return out;
}

std::string dump(const Program &p) {
  std::string out;
  out += fmt::format("workspace: {} + {} * n reals\n", p.workspaceFixed, p.workspacePerExample);
  for (auto &b : p.buffers)
    if (b.space == Space::Workspace)
      out += fmt::format("buffer %{}: {} reals{} at ws + {}{}\n", b.name, b.size,
                         b.batchStride ? " per example" : "", b.offset,
                         b.offsetPerN ? fmt::format(" + {} * n", b.offsetPerN) : "");
  for (const Function *f : {&p.forward, &p.gradient}) {
    if (f->name.empty()) continue;
    out += fmt::format("\nfunc {}:\n", f->name);
    for (auto &k : f->kernels) out += dump(k, p);
    if (f->result >= 0) out += fmt::format("  return %{}[0]\n", p.buffers[static_cast<size_t>(f->result)].name);
  }
  return out;
}

} // namespace nabla::loops
