// Lexer: source text to tokens, each with its location. Newlines are tokens (one statement a
// line); the parser skips them inside brackets. Bad bytes are reported and skipped, never fatal.
#pragma once
#include "Diagnostics.h"

#include <string_view>
#include <vector>

namespace nabla {

enum class Tok {
  Name,     // x, W_i, h.W, block2.inner.W
  Number,   // 3, 0.5, 1e-3
  KwInput,  // input
  KwTarget, // target
  KwParam,  // param
  KwOutput, // output
  KwLoss,   // loss
  KwLayer,  // layer
  KwReturn, // return
  LParen, RParen, LBracket, RBracket, LBrace, RBrace, Comma, Colon, Equal, Tilde,
  Plus, Minus, Star, Slash, At, Caret,
  Newline,
  Eof,
};

struct Token {
  Tok kind;
  SourceLoc loc;
  uint32_t length = 0;
  std::string_view text; // view into the SourceFile
  double value = 0;      // Number only

  SourceRange range() const { return {loc, length ? length : 1}; }
};

// "name 'x'", "number '3'", "'('", "end of line", "end of file": how a token is named in messages.
std::string describeToken(const Token &t);
const char *tokName(Tok k);

// Always ends with Eof; the last statement gets a Newline before Eof.
std::vector<Token> lex(const SourceFile &file, DiagnosticEngine &diags);

// The tokens as stable text, one a line: `LINE:COL KIND 'text'` (for `check --emit tokens`).
std::string dumpTokens(const std::vector<Token> &tokens);

} // namespace nabla
