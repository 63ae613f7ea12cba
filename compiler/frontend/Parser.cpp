// Recursive-descent parser for grammar/nabla.ebnf: one function a production, quoted above it.
// Nesting is bounded (kMaxNesting, kMaxExprDepth), so hostile input cannot exhaust the stack.
#include "Parser.h"

#include <cmath>
#include <unordered_set>

namespace nabla {

bool SignedNumber::integral() const {
  return std::isfinite(value) && value == std::floor(value);
}

namespace {

struct ParseError {}; // unwinds to the statement loop after a diagnostic

class Parser {
public:
  Parser(const std::vector<Token> &t, DiagnosticEngine &d) : toks_(t), diags_(d) {
    // The diagnostics so far are the lexer's. A syntax error on a line with a bad character or
    // number is usually its consequence, so such lines report only the lexer's errors.
    for (const Diagnostic &g : d.diagnostics()) lexErrorLines_.insert(g.range.begin.line);
  }

  // program = { line } ;
  // line    = [ statement ] , newline ;
  Module program() {
    Module m;
    while (peek().kind != Tok::Eof) {
      if (diags_.errorCount() >= DiagnosticEngine::kMaxErrors) break;
      if (peek().kind == Tok::Newline) {
        ++pos_;
        continue;
      }
      try {
        nesting_ = brackets_ = 0;
        Stmt s = statement();
        if (peek().kind != Tok::Newline && peek().kind != Tok::Eof)
          error(DiagId::ExtraAfterStatement, peek().range(), describeToken(peek()));
        m.stmts.push_back(std::move(s));
      } catch (ParseError &) {
        nesting_ = brackets_ = 0;
        while (peek().kind != Tok::Newline && peek().kind != Tok::Eof) ++pos_;
      }
    }
    return m;
  }

private:
  // Inside brackets, newlines continue the statement and are skipped.
  const Token &peek() {
    if (brackets_ > 0)
      while (toks_[pos_].kind == Tok::Newline) ++pos_;
    return toks_[pos_];
  }
  const Token &take() {
    const Token &t = peek();
    if (t.kind != Tok::Eof) ++pos_;
    return t;
  }
  bool accept(Tok k) {
    if (peek().kind != k) return false;
    take();
    return true;
  }
  template <class... Args> bool report(DiagId id, SourceRange r, const Args &...args) {
    if (lexErrorLines_.count(r.begin.line)) return false;
    diags_.report(id, r, args...);
    return true;
  }
  template <class... Args> [[noreturn]] void error(DiagId id, SourceRange r, const Args &...args) {
    report(id, r, args...);
    throw ParseError{};
  }
  // Where "found TOKEN" points: an end of line or of file is shown just after the token before
  // it, where the missing part belongs, not after a comment or on the empty last line.
  SourceRange at(const Token &t) const {
    if (t.kind != Tok::Newline && t.kind != Tok::Eof) return t.range();
    size_t i = static_cast<size_t>(&t - toks_.data());
    while (i > 0 && toks_[i - 1].kind == Tok::Newline) --i;
    if (i == 0) return t.range();
    const Token &p = toks_[i - 1];
    return {{p.loc.line, p.loc.col + p.length, p.loc.offset + p.length}, 1};
  }
  const Token &expect(Tok k, const char *what) {
    if (peek().kind != k) error(DiagId::Expected, at(peek()), what, describeToken(peek()));
    return take();
  }
  // Closing bracket: on failure, also points at the opening one.
  void expectClose(Tok k, const Token &open) {
    if (peek().kind == k) {
      take();
      return;
    }
    const char *what = k == Tok::RParen ? "')'" : "']'";
    if (report(DiagId::Expected, at(peek()), what, describeToken(peek())))
      diags_.report(DiagId::UnclosedBracket, open.range(), open.text);
    throw ParseError{};
  }
  // Bounds the nesting of brackets and unary minus. Only inside brackets do line breaks
  // continue the statement (`y = -x` ends at its line break).
  struct Nest {
    Parser &p;
    bool bracket;
    Nest(Parser &p, SourceRange r, bool bracket = true) : p(p), bracket(bracket) {
      p.brackets_ += bracket;
      if (++p.nesting_ > kMaxNesting) p.error(DiagId::TooDeep, r, kMaxNesting);
    }
    ~Nest() {
      --p.nesting_;
      p.brackets_ -= bracket;
    }
  };

  // statement = input_decl | target_decl | param_decl | output_stmt | loss_stmt | assignment
  //           | layer_def ;
  Stmt statement() {
    const Token &t = peek();
    switch (t.kind) {
    case Tok::KwInput: return declaration(Stmt::Input);
    case Tok::KwTarget: return declaration(Stmt::Target);
    case Tok::KwParam: return declaration(Stmt::Param);
    case Tok::KwOutput: return outputStmt();
    case Tok::KwLoss: return lossStmt();
    case Tok::KwLayer: return layerDef();
    case Tok::KwReturn: error(DiagId::ReturnOutsideLayer, t.range());
    case Tok::Name:
      // Python's `def f(x):` is nabla's `layer f(x) { ... }`.
      if ((t.text == "def" || t.text == "function" || t.text == "fn") &&
          toks_[pos_ + 1].kind == Tok::Name)
        error(DiagId::DefHint, t.range(), t.text);
      return assignment();
    default: break;
    }
    error(DiagId::ExpectedStatement, at(t), describeToken(t));
  }

  // layer_def = "layer" , name , "(" , [ name , { "," , name } ] , ")" , "{" ,
  //             { [ body_stmt ] , newline } , "return" , expr , { newline } , "}" ;
  // body_stmt = param_decl | assignment ;
  Stmt layerDef() {
    const Token &kw = take();
    Stmt s{Stmt::Layer, kw.loc, {}, {}, {}, {}, {}, {}, {}};
    auto L = std::make_shared<LayerAst>();
    try {
      layerHeader(*L, s);
    } catch (ParseError &) {
      // A broken header: skip its body too (up to the '}' before the next layer), so that the
      // body's lines are not read as top-level statements.
      size_t p = pos_;
      while (toks_[p].kind != Tok::Eof && toks_[p].kind != Tok::RBrace && toks_[p].kind != Tok::KwLayer) ++p;
      if (toks_[p].kind == Tok::RBrace) pos_ = p + 1;
      throw;
    }
    const Token &brace = toks_[pos_ - 1];
    // The body, a line at a time; an error skips to the end of its line (or to the '}').
    bool returned = false;
    for (;;) {
      if (diags_.errorCount() >= DiagnosticEngine::kMaxErrors) throw ParseError{};
      const Token &t = peek();
      if (t.kind == Tok::Newline) {
        take();
        continue;
      }
      if (t.kind == Tok::Eof) {
        if (report(DiagId::UnclosedLayer, at(t), L->name))
          diags_.report(DiagId::UnclosedBracket, brace.range(), brace.text);
        throw ParseError{};
      }
      if (t.kind == Tok::RBrace) {
        take();
        if (!returned) error(DiagId::LayerWithoutReturn, t.range(), L->name);
        break;
      }
      try {
        nesting_ = brackets_ = 0;
        if (returned) error(DiagId::AfterReturn, t.range(), describeToken(t));
        if (t.kind == Tok::KwReturn) {
          take();
          L->returnLoc = t.loc;
          L->result = expr();
          returned = true;
          if (peek().kind != Tok::Newline && peek().kind != Tok::RBrace && peek().kind != Tok::Eof)
            error(DiagId::ExtraAfterStatement, peek().range(), describeToken(peek()));
          continue;
        }
        Stmt b = bodyStatement();
        if (peek().kind != Tok::Newline && peek().kind != Tok::Eof)
          error(DiagId::ExtraAfterStatement, peek().range(), describeToken(peek()));
        L->body.push_back(std::move(b));
      } catch (ParseError &) {
        nesting_ = brackets_ = 0;
        while (peek().kind != Tok::Newline && peek().kind != Tok::Eof && peek().kind != Tok::RBrace)
          ++pos_;
      }
    }
    s.layer = std::move(L);
    return s;
  }

  // The header `NAME(ARG, ...) {`.
  void layerHeader(LayerAst &L, Stmt &s) {
    const Token &n = expect(Tok::Name, "the layer's name");
    s.name = L.name = n.text;
    s.nameRange = L.nameRange = n.range();
    const Token &open = expect(Tok::LParen, "'(' and the layer's arguments");
    {
      Nest nest(*this, open.range());
      if (peek().kind != Tok::RParen) {
        do {
          const Token &a = expect(Tok::Name, "an argument name");
          L.args.emplace_back(a.text, a.range());
        } while (accept(Tok::Comma));
      }
      expectClose(Tok::RParen, open);
    }
    expect(Tok::LBrace, "'{'");
  }

  Stmt bodyStatement() {
    const Token &t = peek();
    switch (t.kind) {
    case Tok::KwParam: return declaration(Stmt::Param);
    case Tok::Name: return assignment();
    case Tok::KwInput:
    case Tok::KwTarget:
    case Tok::KwOutput:
    case Tok::KwLoss:
    case Tok::KwLayer: error(DiagId::NotInLayerBody, t.range(), t.text);
    default: break;
    }
    error(DiagId::ExpectedBodyStatement, at(t), describeToken(t));
  }

  // input_decl  = "input" , name , [ shape ] ;
  // target_decl = "target" , name , [ shape ] ;
  // param_decl  = "param" , name , [ shape ] , [ init ] ;
  Stmt declaration(Stmt::Kind kind) {
    const Token &t = take();
    Stmt s{kind, t.loc, {}, {}, {}, {}, {}, {}, {}};
    const Token &n = expect(Tok::Name, "a name");
    s.name = n.text;
    s.nameRange = n.range();
    if (peek().kind == Tok::LBracket) s.shape = shape(t.text, n.text);
    if (kind == Stmt::Param && (peek().kind == Tok::Tilde || peek().kind == Tok::Equal))
      s.init = init();
    return s;
  }

  // shape = "[" , number , { "," , number } , "]" ;
  ShapeAst shape(std::string_view keyword, std::string_view name) {
    ShapeAst sh;
    sh.present = true;
    const Token &open = take();
    Nest nest(*this, open.range());
    if (peek().kind == Tok::RBracket)
      error(DiagId::EmptyShape, SourceRange{open.loc, 2}, keyword, name);
    do {
      sh.dims.push_back(expr());
    } while (accept(Tok::Comma));
    const Token &close = peek();
    expectClose(Tok::RBracket, open);
    sh.range = {open.loc, close.loc.offset + 1 - open.loc.offset};
    return sh;
  }

  // signed = [ "-" ] , number ;
  SignedNumber signedNumber(const char *what) {
    SourceLoc begin = peek().loc;
    bool neg = accept(Tok::Minus);
    const Token &n = peek();
    if (n.kind != Tok::Number) error(DiagId::Expected, at(n), what, describeToken(n));
    take();
    return {neg ? -n.value : n.value, {begin, n.loc.offset + n.length - begin.offset}};
  }

  // init = "~" , name , [ "(" , [ signed , { "," , signed } ] , ")" ] | "=" , signed ;
  InitAst init() {
    InitAst in;
    if (accept(Tok::Equal)) {
      in.kind = InitAst::Value;
      in.value = signedNumber("a number");
      return in;
    }
    take(); // '~'
    in.kind = InitAst::Distribution;
    const Token &d = expect(Tok::Name, "an initializer (normal, uniform or glorot)");
    in.dist = d.text;
    in.distRange = d.range();
    if (peek().kind == Tok::LParen) {
      const Token &open = take();
      Nest nest(*this, open.range());
      in.parens = true;
      if (peek().kind != Tok::RParen) {
        do {
          in.args.push_back(signedNumber("a number"));
        } while (accept(Tok::Comma));
      }
      expectClose(Tok::RParen, open);
    }
    return in;
  }

  // output_stmt = "output" , name , { "," , name } ;
  Stmt outputStmt() {
    Stmt s{Stmt::Output, take().loc, {}, {}, {}, {}, {}, {}, {}};
    do {
      const Token &n = expect(Tok::Name, "a name");
      s.outputs.emplace_back(n.text, n.range());
    } while (accept(Tok::Comma));
    return s;
  }

  // loss_stmt = "loss" , name , "=" , expr ;
  Stmt lossStmt() {
    Stmt s{Stmt::Loss, take().loc, {}, {}, {}, {}, {}, {}, {}};
    const Token &n = expect(Tok::Name, "the loss's name");
    s.name = n.text;
    s.nameRange = n.range();
    expect(Tok::Equal, "'='");
    s.expr = expr();
    return s;
  }

  // assignment = name , "=" , expr ;
  Stmt assignment() {
    const Token &n = take();
    Stmt s{Stmt::Assign, n.loc, n.text, n.range(), {}, {}, {}, {}, {}};
    expect(Tok::Equal, "'='");
    s.expr = expr();
    return s;
  }

  ExprPtr make(Expr::Kind k, SourceRange r) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->range = r;
    return e;
  }
  static SourceRange span(const Expr &a, const Expr &b) {
    uint32_t end = b.range.begin.offset + b.range.length;
    // Ranges that cross lines are cut at the first line by the printer.
    return {a.range.begin, end > a.range.begin.offset ? end - a.range.begin.offset : 1};
  }
  ExprPtr binary(char op, const Token &opTok, ExprPtr lhs, ExprPtr rhs) {
    auto e = make(Expr::Binary, span(*lhs, *rhs));
    e->op = op;
    e->opRange = opTok.range();
    int depth = 1 + std::max(lhs->depth, rhs->depth);
    if (depth > kMaxExprDepth) error(DiagId::TooDeep, e->opRange, kMaxExprDepth);
    e->args.push_back(std::move(lhs));
    e->args.push_back(std::move(rhs));
    e->depth = depth;
    return e;
  }

  // expr = term , { ( "+" | "-" ) , term } ;
  ExprPtr expr() {
    ExprPtr lhs = term();
    while (peek().kind == Tok::Plus || peek().kind == Tok::Minus) {
      const Token &op = take();
      lhs = binary(op.kind == Tok::Plus ? '+' : '-', op, std::move(lhs), term());
    }
    return lhs;
  }

  // term = unary , { ( "*" | "/" | "@" ) , unary } ;
  ExprPtr term() {
    ExprPtr lhs = unary();
    while (peek().kind == Tok::Star || peek().kind == Tok::Slash || peek().kind == Tok::At) {
      const Token &op = take();
      // Python's `x ** 2` is nabla's `x ^ 2`.
      if (op.kind == Tok::Star && peek().kind == Tok::Star && peek().loc.offset == op.loc.offset + 1)
        error(DiagId::PowerHint, SourceRange{op.loc, 2});
      char c = op.kind == Tok::Star ? '*' : op.kind == Tok::Slash ? '/' : '@';
      lhs = binary(c, op, std::move(lhs), unary());
    }
    return lhs;
  }

  // unary = "-" , unary | power ;
  ExprPtr unary() {
    if (peek().kind != Tok::Minus) return power();
    const Token &minus = take();
    Nest nest(*this, minus.range(), /*bracket=*/false);
    ExprPtr operand = unary();
    auto e = make(Expr::Neg, {minus.loc, operand->range.begin.offset + operand->range.length -
                                             minus.loc.offset});
    e->opRange = minus.range();
    e->depth = operand->depth + 1;
    e->args.push_back(std::move(operand));
    return e;
  }

  // power = postfix , [ "^" , signed ] ;
  ExprPtr power() {
    ExprPtr base = postfix();
    if (peek().kind != Tok::Caret) return base;
    const Token &caret = take();
    const Token &first = peek();
    bool neg = first.kind == Tok::Minus;
    const Token &num = neg ? toks_[pos_ + 1] : first;
    if (num.kind != Tok::Number) {
      // `x ^ y`, `x ^ (2)`: name the whole exponent token.
      error(DiagId::BadExponent, at(num), describeToken(num));
    }
    SignedNumber exp = signedNumber("a number");
    auto e = make(Expr::Power, {base->range.begin,
                                exp.range.begin.offset + exp.range.length - base->range.begin.offset});
    e->opRange = caret.range();
    e->value = exp.value;
    e->depth = base->depth + 1;
    e->args.push_back(std::move(base));
    if (peek().kind == Tok::Caret) error(DiagId::ChainedPower, peek().range());
    return e;
  }

  // postfix = primary , { "[" , index , { "," , index } , "]" } ;   (* not after a number *)
  // index   = expr | [ expr ] , ":" , [ expr ] ;
  ExprPtr postfix() {
    ExprPtr e = primary();
    if (e->kind == Expr::Number) return e;
    while (peek().kind == Tok::LBracket) {
      const Token &open = take();
      Nest nest(*this, open.range());
      auto ix = make(Expr::Index, e->range);
      int depth = e->depth;
      do {
        IndexAst entry;
        SourceLoc begin = peek().loc;
        if (peek().kind != Tok::Colon) {
          entry.lo = expr();
          depth = std::max(depth, entry.lo->depth);
        }
        if (accept(Tok::Colon)) {
          entry.slice = true;
          if (peek().kind != Tok::Comma && peek().kind != Tok::RBracket) {
            entry.hi = expr();
            depth = std::max(depth, entry.hi->depth);
          }
        }
        entry.range = through(begin);
        ix->indices.push_back(std::move(entry));
      } while (accept(Tok::Comma));
      const Token &close = peek();
      expectClose(Tok::RBracket, open);
      ix->opRange = {open.loc, close.loc.offset + 1 - open.loc.offset};
      ix->range.length = close.loc.offset + 1 - e->range.begin.offset;
      ix->depth = depth + 1;
      if (ix->depth > kMaxExprDepth) error(DiagId::TooDeep, ix->opRange, kMaxExprDepth);
      ix->args.push_back(std::move(e));
      e = std::move(ix);
    }
    return e;
  }

  // From `begin` to the end of the last token taken.
  SourceRange through(SourceLoc begin) const {
    const Token &last = toks_[pos_ > 0 ? pos_ - 1 : 0];
    uint32_t end = last.loc.offset + last.length;
    return {begin, end > begin.offset ? end - begin.offset : 1};
  }

  // list = "[" , [ expr , { "," , expr } ] , "]" ;     (* sizes: reshape, zeros, ones *)
  ExprPtr list() {
    const Token &open = take();
    Nest nest(*this, open.range());
    auto e = make(Expr::List, open.range());
    e->opRange = open.range();
    int depth = 0;
    if (peek().kind != Tok::RBracket) {
      do {
        e->args.push_back(expr());
        depth = std::max(depth, e->args.back()->depth);
      } while (accept(Tok::Comma));
    }
    const Token &close = peek();
    expectClose(Tok::RBracket, open);
    e->range.length = close.loc.offset + 1 - open.loc.offset;
    e->depth = depth + 1;
    return e;
  }

  // primary  = number | call | name | "(" , expr , ")" ;
  // call     = name , "(" , [ args ] , ")" ;
  // args     = argument , { "," , argument } , { "," , option } | option , { "," , option } ;
  // argument = expr | list ;
  // option   = name , "=" , expr ;      (* sema: a signed number, true or false, or a size *)
  ExprPtr primary() {
    const Token &t = peek();
    switch (t.kind) {
    case Tok::Number: {
      take();
      auto e = make(Expr::Number, t.range());
      e->text = t.text;
      e->value = t.value;
      return e;
    }
    case Tok::Name: {
      take();
      if (peek().kind != Tok::LParen) {
        auto e = make(Expr::Name, t.range());
        e->text = t.text;
        return e;
      }
      const Token &open = take();
      Nest nest(*this, open.range());
      auto e = make(Expr::Call, t.range());
      e->text = t.text;
      e->opRange = t.range();
      int depth = 0;
      if (peek().kind != Tok::RParen) {
        do {
          if (peek().kind == Tok::Name && toks_[pos_ + 1].kind == Tok::Equal) {
            const Token &name = take();
            take(); // '='
            OptionAst o;
            o.name = name.text;
            o.nameRange = name.range();
            o.value = expr();
            depth = std::max(depth, o.value->depth);
            o.range = through(name.loc);
            e->options.push_back(std::move(o));
            continue;
          }
          if (!e->options.empty())
            error(DiagId::PositionalAfterOption, peek().range(), e->options.back().name);
          e->args.push_back(peek().kind == Tok::LBracket ? list() : expr());
          depth = std::max(depth, e->args.back()->depth);
        } while (accept(Tok::Comma));
      }
      const Token &close = peek();
      expectClose(Tok::RParen, open);
      e->range.length = close.loc.offset + 1 - t.loc.offset;
      e->depth = depth + 1;
      return e;
    }
    case Tok::LParen: {
      const Token &open = take();
      Nest nest(*this, open.range());
      ExprPtr inner = expr();
      const Token &close = peek();
      expectClose(Tok::RParen, open);
      // The parenthesized expression's place includes its parentheses.
      inner->range = {open.loc, close.loc.offset + 1 - open.loc.offset};
      return inner;
    }
    default: break;
    }
    error(DiagId::Expected, at(t), "an expression", describeToken(t));
  }

  const std::vector<Token> &toks_;
  DiagnosticEngine &diags_;
  size_t pos_ = 0;
  int nesting_ = 0;  // brackets and unary minus around the current token
  int brackets_ = 0; // brackets only
  std::unordered_set<uint32_t> lexErrorLines_;
};

} // namespace

Module parse(const std::vector<Token> &tokens, DiagnosticEngine &diags) {
  return Parser(tokens, diags).program();
}

} // namespace nabla
