// Parser: a hand-written recursive-descent parser, one function a production of
// grammar/nabla.ebnf. Errors are reported and the parser resumes at the next line.
#pragma once
#include "AST.h"
#include "Lexer.h"

namespace nabla {

// Parentheses, unary minus and calls may nest this deep; an expression tree may be this deep.
inline constexpr int kMaxNesting = 200;
inline constexpr int kMaxExprDepth = 2000;

Module parse(const std::vector<Token> &tokens, DiagnosticEngine &diags);

} // namespace nabla
