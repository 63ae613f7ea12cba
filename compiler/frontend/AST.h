// AST: the parsed program, one node a production of grammar/nabla.ebnf, every node with its
// source range. Owned by unique_ptr; the parser bounds the depth so that no walk can overflow.
#pragma once
#include "Source.h"

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace nabla {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

// `NAME=VALUE` after a call's positional arguments; VALUE is checked by sema (a number with an
// optional '-', true, false, or inside a layer a size argument or dim(x, k)).
struct OptionAst {
  std::string_view name;
  SourceRange nameRange;
  SourceRange range; // NAME=VALUE
  ExprPtr value;
};

// One entry of an index postfix: `i` (selects, drops the axis) or `a:b` with either bound missing.
struct IndexAst {
  bool slice = false;
  ExprPtr lo, hi; // lo alone for an index; either may be null in a slice
  SourceRange range;
};

struct Expr {
  enum Kind {
    Number, // value, text
    Name,   // text
    Neg,    // -args[0]
    Binary, // args[0] op args[1], op one of + - * / @
    Power,  // args[0] ^ value
    Call,   // text(args..., options...)
    List,   // [args...], a list of sizes (reshape, zeros, ones)
    Index,  // args[0][indices...]
  } kind;
  SourceRange range;  // the whole expression
  SourceRange opRange; // the operator, or the callee name, or the index brackets
  std::string_view text;
  double value = 0;
  char op = 0;
  int depth = 1; // height of the tree below, bounded by kMaxExprDepth
  std::vector<std::unique_ptr<Expr>> args;
  std::vector<OptionAst> options; // Call
  std::vector<IndexAst> indices;  // Index
};

struct SignedNumber {
  double value = 0;
  SourceRange range;
  bool integral() const;
};

struct DimAst {
  const Expr *expr = nullptr; // owned by ShapeAst::exprs; must be a positive integer Number
};

struct ShapeAst {
  bool present = false; // `input s` has none: a scalar
  SourceRange range;    // from '[' to ']'
  std::vector<ExprPtr> dims;
};

struct InitAst {
  enum Kind { None, Distribution, Value } kind = None;
  std::string_view dist; // normal, uniform, glorot, or whatever the user wrote
  SourceRange distRange;
  bool parens = false;
  std::vector<SignedNumber> args;
  SignedNumber value;
};

struct LayerAst;

struct Stmt {
  enum Kind { Input, Target, Param, Assign, Output, Loss, Layer } kind;
  SourceLoc loc;
  std::string_view name; // Input, Target, Param, Assign, Loss
  SourceRange nameRange;
  ShapeAst shape; // Input, Target, Param
  InitAst init;   // Param
  ExprPtr expr;   // Assign, Loss
  std::vector<std::pair<std::string_view, SourceRange>> outputs; // Output
  std::shared_ptr<const LayerAst> layer; // Layer
};

// `layer NAME(ARG, ...) { BODY return EXPR }`: the body holds param declarations and assignments.
struct LayerAst {
  std::string_view name;
  SourceRange nameRange;
  std::vector<std::pair<std::string_view, SourceRange>> args;
  std::vector<Stmt> body;
  ExprPtr result; // the return expression
  SourceLoc returnLoc;
};

struct Module {
  std::vector<Stmt> stmts;
};

// Stable text form for `check --emit ast`.
std::string dumpAst(const Module &m);

} // namespace nabla
