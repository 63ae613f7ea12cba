// The lexer of LANGUAGE.md's lexical rules (see grammar/nabla.ebnf): comments, names and dotted
// `dense` names, numbers with a strict syntax, punctuation, and newlines as statement ends.
#include "Lexer.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace nabla {

const char *tokName(Tok k) {
  switch (k) {
  case Tok::Name: return "name";
  case Tok::Number: return "number";
  case Tok::KwInput: return "input";
  case Tok::KwTarget: return "target";
  case Tok::KwParam: return "param";
  case Tok::KwOutput: return "output";
  case Tok::KwLoss: return "loss";
  case Tok::KwLayer: return "layer";
  case Tok::KwReturn: return "return";
  case Tok::LParen: return "(";
  case Tok::RParen: return ")";
  case Tok::LBracket: return "[";
  case Tok::RBracket: return "]";
  case Tok::LBrace: return "{";
  case Tok::RBrace: return "}";
  case Tok::Colon: return ":";
  case Tok::Comma: return ",";
  case Tok::Equal: return "=";
  case Tok::Tilde: return "~";
  case Tok::Plus: return "+";
  case Tok::Minus: return "-";
  case Tok::Star: return "*";
  case Tok::Slash: return "/";
  case Tok::At: return "@";
  case Tok::Caret: return "^";
  case Tok::Newline: return "newline";
  case Tok::Eof: return "eof";
  }
  return "?";
}

std::string describeToken(const Token &t) {
  switch (t.kind) {
  case Tok::Name: return fmt::format("name '{}'", t.text);
  case Tok::Number: return fmt::format("number '{}'", t.text);
  case Tok::KwInput: case Tok::KwTarget: case Tok::KwParam: case Tok::KwOutput: case Tok::KwLoss:
  case Tok::KwLayer: case Tok::KwReturn:
    return fmt::format("keyword '{}'", t.text);
  case Tok::Newline: return "end of line";
  case Tok::Eof: return "end of file";
  default: return fmt::format("'{}'", t.text);
  }
}

namespace {

bool isNameStart(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
bool isDigit(char c) { return c >= '0' && c <= '9'; }
bool isNameChar(char c) { return isNameStart(c) || isDigit(c); }

class Lexer {
public:
  Lexer(const SourceFile &f, DiagnosticEngine &d) : src_(f.text), diags_(d) {}

  std::vector<Token> run() {
    // A UTF-8 byte-order mark at the start is not part of the text (editors on Windows write
    // one); columns on line 1 count from after it, as SourceFile::lineText shows the line.
    if (src_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = lineStart_ = 3;
    while (pos_ < src_.size()) step();
    if (toks_.empty() || toks_.back().kind != Tok::Newline) push(Tok::Newline, pos_, 0);
    push(Tok::Eof, pos_, 0);
    return std::move(toks_);
  }

private:
  SourceLoc locAt(size_t p) const {
    return {line_, static_cast<uint32_t>(p - lineStart_ + 1), static_cast<uint32_t>(p)};
  }
  Token &push(Tok k, size_t begin, size_t len) {
    Token t{k, locAt(begin), static_cast<uint32_t>(len), std::string_view(src_).substr(begin, len)};
    toks_.push_back(t);
    return toks_.back();
  }

  // Checks the bytes at pos_ (outside ASCII) and reports NUL / invalid UTF-8; returns the length
  // of the character there (at least 1).
  size_t checkByte(bool inComment) {
    unsigned char c = static_cast<unsigned char>(src_[pos_]);
    if (c == 0) {
      diags_.report(DiagId::NulByte, locAt(pos_));
      return 1;
    }
    if (c < 0x80) return 1;
    size_t n = utf8Length(src_, pos_);
    if (n == 0) {
      diags_.report(DiagId::InvalidUtf8, locAt(pos_), c);
      return 1;
    }
    if (!inComment)
      diags_.report(DiagId::StrayCharacter, SourceRange{locAt(pos_), static_cast<uint32_t>(n)},
                    src_.substr(pos_, n));
    return n;
  }

  void step() {
    char c = src_[pos_];
    size_t start = pos_;
    if (c == '\n') {
      push(Tok::Newline, pos_, 1);
      ++pos_;
      ++line_;
      lineStart_ = pos_;
      return;
    }
    if (c == ' ' || c == '\t' || c == '\r') {
      ++pos_;
      return;
    }
    if (c == '#') {
      while (pos_ < src_.size() && src_[pos_] != '\n') {
        unsigned char b = static_cast<unsigned char>(src_[pos_]);
        pos_ += (b == 0 || b >= 0x80) ? checkByte(true) : 1;
      }
      return;
    }
    if (isNameStart(c)) return lexName(start);
    if (isDigit(c)) return lexNumber(start);
    // `.5`: a number without its leading digit, reported as a bad number.
    if (c == '.' && pos_ + 1 < src_.size() && isDigit(src_[pos_ + 1])) return lexNumber(start);
    Tok k;
    switch (c) {
    case '(': k = Tok::LParen; break;
    case ')': k = Tok::RParen; break;
    case '[': k = Tok::LBracket; break;
    case ']': k = Tok::RBracket; break;
    case '{': k = Tok::LBrace; break;
    case '}': k = Tok::RBrace; break;
    case ':': k = Tok::Colon; break;
    case ',': k = Tok::Comma; break;
    case '=': k = Tok::Equal; break;
    case '~': k = Tok::Tilde; break;
    case '+': k = Tok::Plus; break;
    case '-': k = Tok::Minus; break;
    case '*': k = Tok::Star; break;
    case '/': k = Tok::Slash; break;
    case '@': k = Tok::At; break;
    case '^': k = Tok::Caret; break;
    default: {
      unsigned char b = static_cast<unsigned char>(c);
      if (b == 0 || b >= 0x80) {
        pos_ += checkByte(false);
      } else {
        std::string shown = b < 0x20 || b == 0x7f ? fmt::format("\\x{:02X}", b) : std::string(1, c);
        diags_.report(DiagId::StrayCharacter, locAt(pos_), shown);
        ++pos_;
      }
      return;
    }
    }
    push(k, pos_, 1);
    ++pos_;
  }

  // name ::= word { "." word }: a dotted name is what `dense`, `conv` or a layer call declares
  // (h.W, h1.inner.W); whether it exists is sema's question. Each part after a dot is a word.
  void lexName(size_t start) {
    while (pos_ < src_.size() && isNameChar(src_[pos_])) ++pos_;
    bool bad = false;
    while (pos_ < src_.size() && src_[pos_] == '.') {
      ++pos_;
      if (pos_ >= src_.size() || !isNameStart(src_[pos_])) bad = true;
      while (pos_ < src_.size() && isNameChar(src_[pos_])) ++pos_;
    }
    if (bad)
      diags_.report(DiagId::BadDottedName,
                    SourceRange{locAt(start), static_cast<uint32_t>(pos_ - start)},
                    src_.substr(start, pos_ - start));
    std::string_view text = std::string_view(src_).substr(start, pos_ - start);
    Tok k = Tok::Name;
    if (text == "input") k = Tok::KwInput;
    else if (text == "target") k = Tok::KwTarget;
    else if (text == "param") k = Tok::KwParam;
    else if (text == "output") k = Tok::KwOutput;
    else if (text == "loss") k = Tok::KwLoss;
    else if (text == "layer") k = Tok::KwLayer;
    else if (text == "return") k = Tok::KwReturn;
    push(k, start, pos_ - start);
  }

  // number ::= digit { digit } [ "." digit { digit } ] [ ("e" | "E") [ "+" | "-" ] digit { digit } ]
  void lexNumber(size_t start) {
    auto digits = [&] {
      size_t n = 0;
      while (pos_ < src_.size() && isDigit(src_[pos_])) ++pos_, ++n;
      return n;
    };
    bool ok = true;
    DiagId problem = DiagId::BadNumberDot;
    bool leading = digits() > 0;
    if (pos_ < src_.size() && src_[pos_] == '.') {
      ++pos_;
      if (digits() == 0) ok = false, problem = DiagId::BadNumberDot;
    }
    if (ok && pos_ < src_.size() && (src_[pos_] == 'e' || src_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < src_.size() && (src_[pos_] == '+' || src_[pos_] == '-')) ++pos_;
      if (digits() == 0) ok = false, problem = DiagId::BadNumberExponent;
    }
    // A number glued to letters (`1ex`, `2.5e3a`) is reported as one bad token.
    size_t end = pos_;
    while (end < src_.size() && (isNameChar(src_[end]) || src_[end] == '.')) ++end;
    std::string text(src_.substr(start, end - start));
    SourceRange range{locAt(start), static_cast<uint32_t>(end - start)};
    if (!ok || end != pos_ || !leading) {
      if (ok || !leading) problem = DiagId::BadNumber;
      diags_.report(problem, range, text);
      pos_ = end;
      Token &t = push(Tok::Number, start, end - start);
      t.value = 0;
      return;
    }
    errno = 0;
    double v = std::strtod(text.c_str(), nullptr);
    if (errno == ERANGE && std::isinf(v)) diags_.report(DiagId::NumberOutOfRange, range, text);
    Token &t = push(Tok::Number, start, end - start);
    t.value = std::isinf(v) ? 0 : v;
  }

  std::string_view src_;
  DiagnosticEngine &diags_;
  std::vector<Token> toks_;
  size_t pos_ = 0, lineStart_ = 0;
  uint32_t line_ = 1;
};

} // namespace

std::vector<Token> lex(const SourceFile &file, DiagnosticEngine &diags) {
  return Lexer(file, diags).run();
}

std::string dumpTokens(const std::vector<Token> &tokens) {
  std::string out;
  for (const Token &t : tokens) {
    out += fmt::format("{}:{} {}", t.loc.line, t.loc.col, tokName(t.kind));
    if (t.kind == Tok::Name || t.kind == Tok::Number) out += fmt::format(" '{}'", t.text);
    out += '\n';
  }
  return out;
}

} // namespace nabla
