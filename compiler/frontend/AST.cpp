// The stable text form of the AST (`check --emit ast`): one statement a line, expressions as
// S-expressions, each statement with its line and column.
#include "AST.h"

#include <fmt/format.h>

namespace nabla {

static void dumpExpr(const Expr &e, std::string &out) {
  switch (e.kind) {
  case Expr::Number: out += e.text; return;
  case Expr::Name: out += e.text; return;
  case Expr::Neg: out += "(neg "; break;
  case Expr::Binary: out += fmt::format("({} ", e.op); break;
  case Expr::Power:
    out += "(^ ";
    dumpExpr(*e.args[0], out);
    out += fmt::format(" {})", e.value);
    return;
  case Expr::Call:
    out += fmt::format("(call {}", e.text);
    for (auto &a : e.args) {
      out += ' ';
      dumpExpr(*a, out);
    }
    for (auto &o : e.options) {
      out += fmt::format(" {}=", o.name);
      dumpExpr(*o.value, out);
    }
    out += ')';
    return;
  case Expr::List: out += "(list"; break;
  case Expr::Index:
    // (index x 1 (: 2 5) (: _ _)): an index, or a slice with `_` for a missing bound.
    out += "(index ";
    dumpExpr(*e.args[0], out);
    for (auto &ix : e.indices) {
      out += ' ';
      if (!ix.slice) {
        dumpExpr(*ix.lo, out);
        continue;
      }
      out += "(: ";
      if (ix.lo) dumpExpr(*ix.lo, out);
      else out += '_';
      out += ' ';
      if (ix.hi) dumpExpr(*ix.hi, out);
      else out += '_';
      out += ')';
    }
    out += ')';
    return;
  }
  for (size_t i = 0; i < e.args.size(); ++i) {
    if (i || e.kind == Expr::List) out += ' ';
    dumpExpr(*e.args[i], out);
  }
  out += ')';
}

static std::string formatNumber(double v) { return fmt::format("{}", v); }

static void dumpStmts(const std::vector<Stmt> &stmts, const std::string &indent, std::string &out);

std::string dumpAst(const Module &m) {
  std::string out;
  dumpStmts(m.stmts, "", out);
  return out;
}

static void dumpStmts(const std::vector<Stmt> &stmts, const std::string &indent, std::string &out) {
  for (const Stmt &s : stmts) {
    out += fmt::format("{}{}:{} ", indent, s.loc.line, s.loc.col);
    switch (s.kind) {
    case Stmt::Input:
    case Stmt::Target:
    case Stmt::Param: {
      out += s.kind == Stmt::Input ? "input " : s.kind == Stmt::Target ? "target " : "param ";
      out += s.name;
      if (s.shape.present) {
        out += " [";
        for (size_t i = 0; i < s.shape.dims.size(); ++i) {
          if (i) out += ", ";
          dumpExpr(*s.shape.dims[i], out);
        }
        out += "]";
      }
      if (s.init.kind == InitAst::Value) out += " = " + formatNumber(s.init.value.value);
      if (s.init.kind == InitAst::Distribution) {
        out += fmt::format(" ~ {}(", s.init.dist);
        for (size_t i = 0; i < s.init.args.size(); ++i)
          out += (i ? ", " : "") + formatNumber(s.init.args[i].value);
        out += ")";
      }
      break;
    }
    case Stmt::Assign:
    case Stmt::Loss:
      out += fmt::format("{}{} = ", s.kind == Stmt::Loss ? "loss " : "", s.name);
      dumpExpr(*s.expr, out);
      break;
    case Stmt::Output:
      out += "output";
      for (size_t i = 0; i < s.outputs.size(); ++i)
        out += fmt::format("{} {}", i ? "," : "", s.outputs[i].first);
      break;
    case Stmt::Layer: {
      const LayerAst &L = *s.layer;
      out += fmt::format("layer {}(", L.name);
      for (size_t i = 0; i < L.args.size(); ++i) out += (i ? ", " : "") + std::string(L.args[i].first);
      out += ")\n";
      dumpStmts(L.body, indent + "  ", out);
      out += fmt::format("{}  {}:{} return ", indent, L.returnLoc.line, L.returnLoc.col);
      if (L.result) dumpExpr(*L.result, out);
      break;
    }
    }
    out += '\n';
  }
}

} // namespace nabla
