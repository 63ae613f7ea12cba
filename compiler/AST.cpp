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
  case Expr::Call: out += fmt::format("(call {} ", e.text); break;
  }
  for (size_t i = 0; i < e.args.size(); ++i) {
    if (i) out += ' ';
    dumpExpr(*e.args[i], out);
  }
  out += ')';
}

static std::string formatNumber(double v) { return fmt::format("{}", v); }

std::string dumpAst(const Module &m) {
  std::string out;
  for (const Stmt &s : m.stmts) {
    out += fmt::format("{}:{} ", s.loc.line, s.loc.col);
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
    }
    out += '\n';
  }
  return out;
}

} // namespace nabla
