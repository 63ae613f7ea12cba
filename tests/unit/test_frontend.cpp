// Tests of the front end: the lexer (token kinds, locations, numbers, dotted names, line breaks,
// errors at their line:col), the parser (precedence and associativity through dumpAst, error
// recovery, depth bounds) and sema (the shapes of every form, dense's params and the flat layout,
// the name rules). The golden tests pin whole messages; these pin the structure behind them.
#include <catch2/catch.hpp>

#include "AST.h"
#include "Diagnostics.h"
#include "Lexer.h"
#include "Parser.h"
#include "Program.h"
#include "Sema.h"

#include <memory>
#include <string>
#include <vector>

using namespace nabla;

namespace {

// Lexes `text`; the file must outlive the tokens (they view into it), so the helper owns both.
struct Lexed {
  SourceFile file;
  DiagnosticEngine diags;
  std::vector<Token> tokens;
  explicit Lexed(std::string text) : file{"t.nn", std::move(text)}, diags(file) {
    tokens = lex(file, diags);
  }
  std::vector<Tok> kinds() const {
    std::vector<Tok> k;
    for (auto &t : tokens) k.push_back(t.kind);
    return k;
  }
};

// Lexes and parses; the AST dump (empty when there are errors) and the diagnostics.
struct Parsed {
  SourceFile file;
  DiagnosticEngine diags;
  std::vector<Token> tokens;
  Module module;
  explicit Parsed(std::string text) : file{"t.nn", std::move(text)}, diags(file) {
    tokens = lex(file, diags);
    module = parse(tokens, diags);
  }
  std::string ast() const { return dumpAst(module); }
  std::vector<DiagId> errors() const {
    std::vector<DiagId> ids;
    for (auto &d : diags.diagnostics())
      if (d.severity == Severity::Error) ids.push_back(d.id);
    return ids;
  }
};

// The whole front end as the driver runs it: lex, parse, and sema only without syntax errors.
struct Checked {
  SourceFile file;
  DiagnosticEngine diags;
  Program program;
  bool ok = false;
  explicit Checked(std::string text) : file{"t.nn", std::move(text)}, diags(file) {
    std::vector<Token> tokens = lex(file, diags);
    Module m = parse(tokens, diags);
    if (!diags.hasErrors()) ok = analyze(m, program, diags);
  }
  std::vector<DiagId> errors() const {
    std::vector<DiagId> ids;
    for (auto &d : diags.diagnostics())
      if (d.severity == Severity::Error) ids.push_back(d.id);
    return ids;
  }
  std::string rendered() const { return diags.render(); }
};

// The AST of one expression, as dumpAst prints the right-hand side of `y = EXPR`.
std::string exprAst(const std::string &expr) {
  Parsed p("y = " + expr + "\n");
  INFO(p.diags.render());
  REQUIRE_FALSE(p.diags.hasErrors());
  std::string ast = p.ast();
  REQUIRE(ast.rfind("1:1 y = ", 0) == 0);
  return ast.substr(8, ast.size() - 9); // without the prefix and the final newline
}

// Compiles through compileSource (the library entry point) and requires success.
Program compiled(const std::string &text) {
  std::string diags;
  std::optional<Program> p = compileSource(SourceFile{"t.nn", text}, diags);
  INFO(diags);
  REQUIRE(p.has_value());
  CHECK(diags.empty());
  return std::move(*p);
}

const NamedValue &value(const Program &p, const std::string &name) {
  for (auto &v : p.values)
    if (v.name == name) return v;
  FAIL("no value " << name);
  throw std::logic_error("unreachable");
}
Shape shapeOf(const Program &p, const std::string &name) {
  return p.graph.shape(value(p, name).node);
}

// The first line:col of an error in compileSource's rendered text, e.g. "t.nn:3:7".
std::string firstErrorPlace(const std::string &text) {
  std::string diags;
  std::optional<Program> p = compileSource(SourceFile{"t.nn", text}, diags);
  REQUIRE_FALSE(p.has_value());
  auto colon = diags.find(": error:");
  REQUIRE(colon != std::string::npos);
  return diags.substr(0, colon);
}

} // namespace

// --- lexer ------------------------------------------------------------------------------------

TEST_CASE("lexer: token kinds of every statement form", "[lexer]") {
  Lexed l("input x[3, 4]\nparam W ~ normal(-1, 2)\ny = a @ B * c / d + e - f ^ 2\n");
  REQUIRE_FALSE(l.diags.hasErrors());
  std::vector<Tok> want = {
      Tok::KwInput, Tok::Name, Tok::LBracket, Tok::Number, Tok::Comma, Tok::Number,
      Tok::RBracket, Tok::Newline,
      Tok::KwParam, Tok::Name, Tok::Tilde, Tok::Name, Tok::LParen, Tok::Minus, Tok::Number,
      Tok::Comma, Tok::Number, Tok::RParen, Tok::Newline,
      Tok::Name, Tok::Equal, Tok::Name, Tok::At, Tok::Name, Tok::Star, Tok::Name, Tok::Slash,
      Tok::Name, Tok::Plus, Tok::Name, Tok::Minus, Tok::Name, Tok::Caret, Tok::Number,
      Tok::Newline, Tok::Eof};
  CHECK(l.kinds() == want);
}

TEST_CASE("lexer: keywords are exact words; function names are names", "[lexer]") {
  Lexed l("input target param output loss inputs Loss sum dense normal");
  REQUIRE_FALSE(l.diags.hasErrors());
  std::vector<Tok> want = {Tok::KwInput, Tok::KwTarget, Tok::KwParam, Tok::KwOutput,
                           Tok::KwLoss,  Tok::Name,     Tok::Name,    Tok::Name,
                           Tok::Name,    Tok::Name,     Tok::Newline, Tok::Eof};
  CHECK(l.kinds() == want);
}

TEST_CASE("lexer: locations are 1-based lines and byte columns", "[lexer]") {
  Lexed l("input x[3]\n\n  y = x  # comment\nloss E = sum(y)");
  REQUIRE_FALSE(l.diags.hasErrors());
  auto find = [&](std::string_view text, int nth = 0) -> const Token & {
    for (auto &t : l.tokens)
      if (t.text == text && nth-- == 0) return t;
    FAIL("no token " << text);
    throw std::logic_error("unreachable");
  };
  CHECK(find("x").loc.line == 1);
  CHECK(find("x").loc.col == 7);
  CHECK(find("[").loc.col == 8);
  CHECK(find("y").loc.line == 3);
  CHECK(find("y").loc.col == 3);
  CHECK(find("x", 1).loc.line == 3);
  CHECK(find("x", 1).loc.col == 7);
  CHECK(find("E").loc.line == 4);
  CHECK(find("E").loc.col == 6);
  CHECK(find("sum").length == 3);
  CHECK(find("sum").loc.offset == l.file.text.find("sum"));
}

TEST_CASE("lexer: numbers and their values", "[lexer]") {
  Lexed l("3 0.5 1e-3 2.5E+2 007 1.7976931348623157e308 1e-400");
  REQUIRE_FALSE(l.diags.hasErrors());
  REQUIRE(l.tokens.size() == 9);
  for (int i = 0; i < 7; ++i) CHECK(l.tokens[i].kind == Tok::Number);
  CHECK(l.tokens[0].value == 3);
  CHECK(l.tokens[1].value == 0.5);
  CHECK(l.tokens[2].value == 1e-3);
  CHECK(l.tokens[3].value == 250);
  CHECK(l.tokens[3].text == "2.5E+2");
  CHECK(l.tokens[4].value == 7);
  CHECK(l.tokens[5].value == 1.7976931348623157e308);
  CHECK(l.tokens[6].value == 0); // underflow is not an error
}

TEST_CASE("lexer: bad numbers are errors at their place", "[lexer]") {
  struct Case {
    const char *text;
    DiagId id;
  } cases[] = {
      {"y = 1.", DiagId::BadNumberDot},         {"y = 1.e3", DiagId::BadNumberDot},
      {"y = 1e", DiagId::BadNumberExponent},    {"y = 2.5E+", DiagId::BadNumberExponent},
      {"y = 1.5.2", DiagId::BadNumber},         {"y = 3x", DiagId::BadNumber},
      {"y = .5", DiagId::BadNumber},            {"y = 1e400", DiagId::NumberOutOfRange},
      {"y = 99e99999", DiagId::NumberOutOfRange},
  };
  for (auto &c : cases) {
    INFO(c.text);
    Lexed l(c.text);
    REQUIRE(l.diags.diagnostics().size() == 1);
    const Diagnostic &d = l.diags.diagnostics()[0];
    CHECK(d.id == c.id);
    CHECK(d.range.begin.line == 1);
    CHECK(d.range.begin.col == 5);
    CHECK(d.range.length == std::string_view(c.text).size() - 4); // the whole bad number
    // The parser still sees a number in its place.
    CHECK(l.tokens[2].kind == Tok::Number);
  }
}

TEST_CASE("lexer: dotted names are one token; only .W and .b exist", "[lexer]") {
  Lexed ok("h.W h.b layer_1.W");
  REQUIRE_FALSE(ok.diags.hasErrors());
  REQUIRE(ok.tokens.size() == 5);
  CHECK(ok.tokens[0].kind == Tok::Name);
  CHECK(ok.tokens[0].text == "h.W");
  CHECK(ok.tokens[1].text == "h.b");
  CHECK(ok.tokens[2].text == "layer_1.W");

  for (const char *bad : {"h.w", "h.B", "h.bias", "h.", "h.Wx"}) {
    INFO(bad);
    Lexed l(std::string("y = ") + bad);
    REQUIRE(l.diags.diagnostics().size() == 1);
    CHECK(l.diags.diagnostics()[0].id == DiagId::BadDottedName);
    CHECK(l.diags.diagnostics()[0].range.begin.col == 5);
  }
}

TEST_CASE("lexer: line breaks, comments, CRLF and the final newline", "[lexer]") {
  SECTION("a comment produces no token, its line break does") {
    Lexed l("# only a comment\nx # trailing\n");
    std::vector<Tok> want = {Tok::Newline, Tok::Name, Tok::Newline, Tok::Eof};
    CHECK(l.kinds() == want);
  }
  SECTION("a missing final newline is supplied") {
    Lexed l("x");
    std::vector<Tok> want = {Tok::Name, Tok::Newline, Tok::Eof};
    CHECK(l.kinds() == want);
  }
  SECTION("an empty file is a newline and the end") {
    Lexed l("");
    std::vector<Tok> want = {Tok::Newline, Tok::Eof};
    CHECK(l.kinds() == want);
  }
  SECTION("CRLF: the \\r is whitespace, lines and columns as with LF") {
    Lexed l("a\r\n  b\r\n");
    REQUIRE_FALSE(l.diags.hasErrors());
    std::vector<Tok> want = {Tok::Name, Tok::Newline, Tok::Name, Tok::Newline, Tok::Eof};
    CHECK(l.kinds() == want);
    CHECK(l.tokens[2].loc.line == 2);
    CHECK(l.tokens[2].loc.col == 3);
  }
  SECTION("tabs are whitespace") {
    Lexed l("\tx\t=\ty");
    REQUIRE_FALSE(l.diags.hasErrors());
    CHECK(l.tokens[0].loc.col == 2);
  }
}

TEST_CASE("lexer: bad characters and bytes are reported at their line:col", "[lexer]") {
  SECTION("stray ASCII characters, every one of them") {
    Lexed l("x = 1\ny = x $ 2 ? 3\n");
    auto &ds = l.diags.diagnostics();
    REQUIRE(ds.size() == 2);
    CHECK(ds[0].id == DiagId::StrayCharacter);
    CHECK(ds[0].range.begin.line == 2);
    CHECK(ds[0].range.begin.col == 7);
    CHECK(ds[1].range.begin.col == 11);
    CHECK(ds[0].message == "unexpected character '$'");
  }
  SECTION("a non-ASCII letter is one error over its bytes") {
    Lexed l("y = \xC3\xA9");
    auto &ds = l.diags.diagnostics();
    REQUIRE(ds.size() == 1);
    CHECK(ds[0].id == DiagId::StrayCharacter);
    CHECK(ds[0].range.begin.col == 5);
    CHECK(ds[0].range.length == 2);
  }
  SECTION("UTF-8 in a comment is fine") {
    Lexed l("x # caf\xC3\xA9 \xE2\x88\x87\n");
    CHECK_FALSE(l.diags.hasErrors());
  }
  SECTION("a NUL byte, in code and in a comment") {
    Lexed l(std::string("x \0 y\n# \0\n", 10));
    auto &ds = l.diags.diagnostics();
    REQUIRE(ds.size() == 2);
    CHECK(ds[0].id == DiagId::NulByte);
    CHECK(ds[0].range.begin.col == 3);
    CHECK(ds[1].id == DiagId::NulByte);
    CHECK(ds[1].range.begin.line == 2);
  }
  SECTION("bytes that are not UTF-8") {
    Lexed l("x \xFF\n\xC3 y\n");
    auto &ds = l.diags.diagnostics();
    REQUIRE(ds.size() == 2);
    CHECK(ds[0].id == DiagId::InvalidUtf8);
    CHECK(ds[0].message.find("0xFF") != std::string::npos);
    CHECK(ds[0].range.begin.col == 3);
    CHECK(ds[1].range.begin.line == 2);
    CHECK(ds[1].range.begin.col == 1);
  }
  SECTION("rendered as FILE:LINE:COL: error: with the line and a caret") {
    Lexed l("x = 1\ny = x $ 2\n");
    CHECK(l.diags.render() ==
          "t.nn:2:7: error: unexpected character '$'\n"
          "y = x $ 2\n"
          "      ^\n");
  }
}

TEST_CASE("lexer: dumpTokens is one LINE:COL KIND a line", "[lexer]") {
  Lexed l("y = h.W @ 2\n");
  CHECK(dumpTokens(l.tokens) == "1:1 name 'y'\n1:3 =\n1:5 name 'h.W'\n1:9 @\n"
                                "1:11 number '2'\n1:12 newline\n2:1 eof\n");
}

// --- parser -----------------------------------------------------------------------------------

TEST_CASE("parser: precedence and associativity", "[parser]") {
  CHECK(exprAst("-x ^ 2") == "(neg (^ x 2))");          // -(x ^ 2)
  CHECK(exprAst("a @ B @ c") == "(@ (@ a B) c)");        // (a @ B) @ c
  CHECK(exprAst("a - b - c") == "(- (- a b) c)");        // left-associative
  CHECK(exprAst("a / b * c") == "(* (/ a b) c)");
  CHECK(exprAst("a + b * c") == "(+ a (* b c))");        // * binds tighter than +
  CHECK(exprAst("a * b + c") == "(+ (* a b) c)");
  CHECK(exprAst("2 * a @ B") == "(@ (* 2 a) B)");        // * and @ are one level
  CHECK(exprAst("-a * b") == "(* (neg a) b)");           // unary minus above * /
  CHECK(exprAst("a * -b") == "(* a (neg b))");
  CHECK(exprAst("--a") == "(neg (neg a))");
  CHECK(exprAst("x ^ -1") == "(^ x -1)");
  CHECK(exprAst("x ^ 0.5") == "(^ x 0.5)");
  CHECK(exprAst("(x ^ 2) ^ 3") == "(^ (^ x 2) 3)");
  CHECK(exprAst("(a + b) * c") == "(* (+ a b) c)");
  CHECK(exprAst("f(a, b + c)") == "(call f a (+ b c))");
  CHECK(exprAst("sum(x ^ 2, 0)") == "(call sum (^ x 2) 0)");
  CHECK(exprAst("g()") == "(call g )");
}

TEST_CASE("parser: every statement kind", "[parser]") {
  Parsed p("input s\ninput x[3]\ntarget t[2, 3]\nparam W[2, 3] ~ normal(-1, 2)\n"
           "param b[2] = -0.5\nparam c ~ glorot\ny = x\noutput y, x\nloss E = sum(y)\n");
  INFO(p.diags.render());
  REQUIRE_FALSE(p.diags.hasErrors());
  CHECK(p.ast() == "1:1 input s\n"
                   "2:1 input x [3]\n"
                   "3:1 target t [2, 3]\n"
                   "4:1 param W [2, 3] ~ normal(-1, 2)\n"
                   "5:1 param b [2] = -0.5\n"
                   "6:1 param c ~ glorot()\n"
                   "7:1 y = x\n"
                   "8:1 output y, x\n"
                   "9:1 loss E = (call sum y)\n");
  REQUIRE(p.module.stmts.size() == 9);
  CHECK(p.module.stmts[0].shape.present == false);
  CHECK(p.module.stmts[3].init.kind == InitAst::Distribution);
  CHECK(p.module.stmts[3].init.args.size() == 2);
  CHECK(p.module.stmts[3].init.args[0].value == -1);
  CHECK(p.module.stmts[4].init.kind == InitAst::Value);
  CHECK(p.module.stmts[4].init.value.value == -0.5);
  CHECK(p.module.stmts[5].init.parens == false);
}

TEST_CASE("parser: line breaks end statements except inside brackets", "[parser]") {
  SECTION("inside ( ) and [ ] a line break continues the statement") {
    Parsed p("input M[2,\n  3]\ny = sum(\n  M,   # comment\n  0\n)\nz = (y\n + 1)\n");
    INFO(p.diags.render());
    REQUIRE_FALSE(p.diags.hasErrors());
    CHECK(p.ast() == "1:1 input M [2, 3]\n3:1 y = (call sum M 0)\n7:1 z = (+ y 1)\n");
  }
  SECTION("a unary minus at the end of a line does not continue it") {
    Parsed p("y = -x\nz = - - y\nw = -x ^ 2\nv = w\n");
    INFO(p.diags.render());
    REQUIRE_FALSE(p.diags.hasErrors());
    CHECK(p.ast() == "1:1 y = (neg x)\n2:1 z = (neg (neg y))\n3:1 w = (neg (^ x 2))\n4:1 v = w\n");
  }
  SECTION("outside brackets, an operator at the end of a line is an error") {
    Parsed p("y = x +\n  1\n");
    CHECK(p.errors() == std::vector<DiagId>{DiagId::Expected, DiagId::ExpectedStatement});
  }
}

TEST_CASE("parser: errors at their place, and recovery at the next line", "[parser]") {
  Parsed p("a = x ^ 2 ^ 3\nb = x ^ y\ninput x[]\nc = (x\nd = x x\ne = x x\n");
  auto &ds = p.diags.diagnostics();
  REQUIRE(ds.size() == 6);
  CHECK(ds[0].id == DiagId::ChainedPower);
  CHECK(ds[0].range.begin.line == 1);
  CHECK(ds[0].range.begin.col == 11);
  CHECK(ds[1].id == DiagId::BadExponent);
  CHECK(ds[1].range.begin.line == 2);
  CHECK(ds[1].range.begin.col == 9);
  CHECK(ds[2].id == DiagId::EmptyShape);
  CHECK(ds[2].range.begin.line == 3);
  CHECK(ds[2].range.begin.col == 8);
  // `c = (x` continues over the line break and fails at `d`, pointing back at the '('.
  CHECK(ds[3].id == DiagId::Expected);
  CHECK(ds[3].range.begin.line == 5);
  CHECK(ds[3].range.begin.col == 1);
  CHECK(ds[4].id == DiagId::UnclosedBracket);
  CHECK(ds[4].severity == Severity::Note);
  CHECK(ds[4].range.begin.line == 4);
  CHECK(ds[4].range.begin.col == 5);
  // The rest of the line where the error was found is skipped; the next line is parsed normally.
  CHECK(ds[5].id == DiagId::ExtraAfterStatement);
  CHECK(ds[5].range.begin.line == 6);
  CHECK(ds[5].range.begin.col == 7);
}

TEST_CASE("parser: a missing part at the end of a line points just after the last token",
          "[parser]") {
  Parsed p("y = x +     # comment\n");
  REQUIRE(p.diags.diagnostics().size() == 1);
  CHECK(p.diags.diagnostics()[0].range.begin.col == 8);
  Parsed eof("input x[3, 4\n\n");
  REQUIRE(eof.diags.diagnostics().size() == 2);
  CHECK(eof.diags.diagnostics()[0].range.begin.line == 1);
  CHECK(eof.diags.diagnostics()[0].range.begin.col == 13);
}

TEST_CASE("parser: a line with a lexer error reports only that error", "[parser]") {
  Parsed p("y = x $ 1\nz = x + * 2\n");
  CHECK(p.errors() == std::vector<DiagId>{DiagId::StrayCharacter, DiagId::Expected});
}

TEST_CASE("parser: nesting is bounded, so hostile input cannot exhaust the stack", "[parser]") {
  SECTION("100000 nested parentheses: one error") {
    std::string text = "y = " + std::string(100000, '(') + "x" + std::string(100000, ')');
    Parsed p(text);
    CHECK(p.errors() == std::vector<DiagId>{DiagId::TooDeep});
  }
  SECTION("deep unary minus and calls") {
    Parsed minus("y = " + std::string(100000, '-') + "x");
    CHECK(minus.errors() == std::vector<DiagId>{DiagId::TooDeep});
    std::string calls = "y = ";
    for (int i = 0; i < 5000; ++i) calls += "tanh(";
    calls += "x" + std::string(5000, ')');
    Parsed c(calls);
    CHECK(c.errors() == std::vector<DiagId>{DiagId::TooDeep});
  }
  SECTION("a long chain of binary operators") {
    std::string text = "y = x";
    for (int i = 0; i < 100000; ++i) text += " + x";
    Parsed p(text);
    CHECK(p.errors() == std::vector<DiagId>{DiagId::TooDeep});
  }
  SECTION("exactly at the limit is fine") {
    std::string text = "y = " + std::string(kMaxNesting, '(') + "x" + std::string(kMaxNesting, ')');
    Parsed p(text);
    CHECK_FALSE(p.diags.hasErrors());
  }
}

TEST_CASE("diagnostics: at most kMaxErrors errors, then a note", "[parser]") {
  std::string text;
  for (int i = 0; i < 80; ++i) text += "$\n";
  Lexed l(text);
  CHECK(l.diags.errorCount() == DiagnosticEngine::kMaxErrors);
  std::string r = l.diags.render();
  CHECK(r.find("t.nn:50:1: error:") != std::string::npos);
  CHECK(r.find("t.nn:51:1:") == std::string::npos);
  CHECK(r.find("stopped after 50 errors") != std::string::npos);
}

// --- sema -------------------------------------------------------------------------------------

TEST_CASE("sema: the four forms of @", "[sema]") {
  Program p = compiled("input a[3]\ninput B[3, 4]\ninput C[4, 2]\ninput c[4]\n"
                       "mm = B @ C\nmv = B @ c\nvm = a @ B\nvv = c @ c\nchain = a @ B @ c\n");
  CHECK(shapeOf(p, "mm") == Shape{3, 2});
  CHECK(shapeOf(p, "mv") == Shape{3});
  CHECK(shapeOf(p, "vm") == Shape{4});
  CHECK(shapeOf(p, "vv") == Shape{});
  CHECK(shapeOf(p, "chain") == Shape{});
  CHECK(p.graph.op(value(p, "mm").node) == Op::MatMul);
}

TEST_CASE("sema: @ shape errors", "[sema]") {
  for (const char *bad : {"y = B @ B", "y = B @ a", "y = a @ C", "y = a @ c"}) {
    INFO(bad);
    Checked c(std::string("input a[3]\ninput B[3, 4]\ninput C[2, 2]\ninput c[4]\n") + bad);
    CHECK(c.errors() == std::vector<DiagId>{DiagId::MatMulMismatch});
    REQUIRE_FALSE(c.diags.diagnostics().empty());
    CHECK(c.diags.diagnostics()[0].range.begin.line == 5);
    CHECK(c.diags.diagnostics()[0].range.begin.col == 7); // the '@'
  }
  Checked s("input s\ninput a[3]\ny = s @ a\nz = a @ 2\n");
  CHECK(s.errors() == std::vector<DiagId>{DiagId::MatMulScalar, DiagId::MatMulScalar});
}

TEST_CASE("sema: NumPy broadcasting", "[sema]") {
  Program p = compiled("input col[3, 1]\ninput row[4]\ninput r1[1, 4]\ninput M[3, 4]\ninput s\n"
                       "a = col + row\nb = col * r1\nc = M - row\nd = s / M\ne = 2 * row\n"
                       "f = r1 + 1\ng = s + s\nh = M / col\n");
  CHECK(shapeOf(p, "a") == Shape{3, 4});
  CHECK(shapeOf(p, "b") == Shape{3, 4});
  CHECK(shapeOf(p, "c") == Shape{3, 4});
  CHECK(shapeOf(p, "d") == Shape{3, 4});
  CHECK(shapeOf(p, "e") == Shape{4});
  CHECK(shapeOf(p, "f") == Shape{1, 4});
  CHECK(shapeOf(p, "g") == Shape{});
  CHECK(shapeOf(p, "h") == Shape{3, 4});

  Checked bad("input a[3]\ninput M[2, 3]\ninput N[3, 2]\n"
              "x = a + N\ny = M * N\nz = a - M\n");
  CHECK(bad.errors() == std::vector<DiagId>{DiagId::BroadcastMismatch, DiagId::BroadcastMismatch});
  CHECK(bad.diags.diagnostics()[0].message == "cannot broadcast shapes [3] and [3, 2] in '+'");
}

TEST_CASE("sema: reductions, with and without an axis", "[sema]") {
  Program p = compiled("input v[4]\ninput M[3, 4]\n"
                       "a = sum(v)\nb = mean(M)\nc = sum(v, 0)\nd = sum(M, 0)\ne = mean(M, 1)\n"
                       "f = softmax(M)\ng = log_softmax(v)\nh = transpose(M)\nk = dot(v, v)\n"
                       "l = cross_entropy(v, v) + bce(v, v) + mse(M, M)\n");
  CHECK(shapeOf(p, "a") == Shape{});
  CHECK(shapeOf(p, "b") == Shape{});
  CHECK(shapeOf(p, "c") == Shape{});
  CHECK(shapeOf(p, "d") == Shape{4});
  CHECK(shapeOf(p, "e") == Shape{3});
  CHECK(shapeOf(p, "f") == Shape{3, 4});
  CHECK(shapeOf(p, "g") == Shape{4});
  CHECK(shapeOf(p, "h") == Shape{4, 3});
  CHECK(shapeOf(p, "k") == Shape{});
  CHECK(shapeOf(p, "l") == Shape{});
  CHECK(p.graph.op(value(p, "d").node) == Op::SumAxis);
  CHECK(p.graph.node(value(p, "d").node).iattr == 0);

  Checked bad("input s\ninput v[4]\ninput M[3, 4]\n"
              "a = sum(M, 2)\nb = mean(v, 1)\nc = sum(M, -1)\nd = sum(M, 0.5)\ne = sum(s, 0)\n");
  CHECK(bad.errors() == std::vector<DiagId>{DiagId::BadAxis, DiagId::BadAxis, DiagId::BadAxis,
                                            DiagId::BadAxis, DiagId::AxisOfScalar});
  auto &ds = bad.diags.diagnostics();
  for (size_t i = 0; i < ds.size(); ++i) {
    CHECK(ds[i].range.begin.line == 4 + i);
    CHECK(ds[i].range.begin.col == (i == 1 ? 13u : 12u)); // the axis argument
  }
}

TEST_CASE("sema: dense declares NAME.W [N, K] and NAME.b [N] in the flat layout", "[sema]") {
  Program p = compiled("input x[5]\ninput y[2]\ntarget t[3]\nparam a[2]\n"
                       "h = dense(x, 4, tanh)\nparam c\no = dense(h, 3, softmax)\n");
  REQUIRE(p.params.size() == 6);
  struct Want {
    const char *name;
    Shape shape;
    int64_t offset;
    Init::Kind init;
  } want[] = {
      {"a", Shape{2}, 0, Init::Constant},         {"h.W", Shape{4, 5}, 2, Init::Glorot},
      {"h.b", Shape{4}, 22, Init::Constant},      {"c", Shape{}, 26, Init::Constant},
      {"o.W", Shape{3, 4}, 27, Init::Glorot},     {"o.b", Shape{3}, 39, Init::Constant},
  };
  for (size_t i = 0; i < 6; ++i) {
    INFO(want[i].name);
    CHECK(p.params[i].name == want[i].name);
    CHECK(p.params[i].shape == want[i].shape);
    CHECK(p.params[i].offset == want[i].offset);
    CHECK(p.params[i].init.kind == want[i].init);
    CHECK(p.graph.op(p.params[i].node) == Op::Param);
    CHECK(p.graph.node(p.params[i].node).iattr == static_cast<int64_t>(i));
  }
  CHECK(p.params[2].init.a == 0);
  CHECK(p.paramCount() == 42);
  CHECK(p.inputs[1].offset == 5);
  CHECK(p.inputCount() == 7);
  CHECK(p.targetCount() == 3);
  CHECK(shapeOf(p, "h") == Shape{4});
  CHECK(shapeOf(p, "o") == Shape{3});
  CHECK(p.findParam("o.b") == &p.params[5]);
  // h = tanh(h.W @ x + h.b)
  const Node &h = p.graph.node(value(p, "h").node);
  CHECK(h.op == Op::Tanh);
  const Node &z = p.graph.node(h.a());
  CHECK(z.op == Op::Add);
  CHECK(z.b() == p.params[2].node);
  CHECK(p.graph.node(z.a()).op == Op::MatMul);
  CHECK(p.graph.node(z.a()).a() == p.params[1].node);
}

TEST_CASE("sema: dense's params can be used in expressions (weight sharing)", "[sema]") {
  Program p = compiled("input x[3]\nh = dense(x, 2, linear)\nr = transpose(h.W) @ h + h.b @ h.W\n");
  CHECK(shapeOf(p, "r") == Shape{3});
  // `linear` is the identity: h is the affine map itself.
  CHECK(p.graph.op(value(p, "h").node) == Op::Add);
}

TEST_CASE("sema: dense errors", "[sema]") {
  Checked c("input x[3]\ninput M[2, 3]\n"
            "a = dense(M, 2, tanh)\nb = dense(x, 0, tanh)\nc = dense(x, 2, exp)\n"
            "d = 1 + dense(x, 2, tanh)\nloss E = dense(x, 1, linear)\n");
  CHECK(c.errors() == std::vector<DiagId>{DiagId::DenseInputRank, DiagId::DenseSize,
                                          DiagId::DenseActivation, DiagId::DenseNotWhole,
                                          DiagId::DenseInLoss});
}

TEST_CASE("sema: params' initializers", "[sema]") {
  Program p = compiled("param a[3] ~ normal(-1, 2)\nparam b = -0.5\nparam c[2] ~ uniform(-1, 1)\n"
                       "param D[2, 3] ~ glorot\nparam E[2, 2]\nparam f[2]\n");
  REQUIRE(p.params.size() == 6);
  CHECK(p.params[0].init.kind == Init::Normal);
  CHECK(p.params[0].init.a == -1);
  CHECK(p.params[0].init.b == 2);
  CHECK(p.params[1].init.kind == Init::Constant);
  CHECK(p.params[1].init.a == -0.5);
  CHECK(p.params[2].init.kind == Init::Uniform);
  CHECK(p.params[2].init.a == -1);
  CHECK(p.params[2].init.b == 1);
  CHECK(p.params[3].init.kind == Init::Glorot);
  CHECK(p.params[4].init.kind == Init::Glorot);   // the default for rank 2
  CHECK(p.params[5].init.kind == Init::Constant); // the default otherwise
  CHECK(p.params[5].init.a == 0);

  Checked bad("param a[3] ~ gaussian(0, 1)\nparam b[3] ~ normal(0)\nparam c[3] ~ glorot\n"
              "param d[3] ~ normal(0, -1)\nparam e[3] ~ uniform(1, 0)\n");
  CHECK(bad.errors() == std::vector<DiagId>{DiagId::BadDistribution, DiagId::DistributionArity,
                                            DiagId::GlorotRank, DiagId::BadStd, DiagId::BadStd});
}

TEST_CASE("sema: shapes of declarations", "[sema]") {
  Checked c("input a[0]\ninput b[2.5]\ninput c[n]\ninput d[2, 3, 4]\ninput e[100000, 100000]\n"
            "input f[1000000000]\n");
  CHECK(c.errors() == std::vector<DiagId>{DiagId::BadDimension, DiagId::BadDimension,
                                          DiagId::BadDimension, DiagId::RankTooHigh,
                                          DiagId::ShapeTooLarge, DiagId::DimensionTooLarge});
  Checked big("input c[100000, 1]\ninput r[1, 100000]\ny = c + r\n");
  CHECK(big.errors() == std::vector<DiagId>{DiagId::ShapeTooLarge});
}

TEST_CASE("sema: reserved names cannot be declared", "[sema]") {
  const char *decls[] = {"input sum[3]",   "target softmax", "param normal[2]", "param glorot",
                         "tanh = 1",       "linear = 1",     "dense = 1",       "uniform = 1",
                         "loss mse = 1",   "input relu",     "input log_softmax[2]",
                         "input cross_entropy"};
  for (const char *d : decls) {
    INFO(d);
    Checked c(d);
    CHECK(c.errors() == std::vector<DiagId>{DiagId::ReservedName});
    CHECK(c.rendered().find("reserved") != std::string::npos);
  }
  for (const char *name : {"sum", "dense", "linear", "normal", "glorot", "sigmoid", "bce", "abs"})
    CHECK(isReservedName(name));
  for (const char *name : {"x", "W_i", "Sum", "dense_1", "h.W", "input"})
    CHECK_FALSE(isReservedName(name));
}

TEST_CASE("sema: names are defined once, before they are used", "[sema]") {
  SECTION("a value used before its definition is an error at the use, with a note") {
    Checked c("input x\ny = z + 1\nz = x\n");
    CHECK(c.errors() == std::vector<DiagId>{DiagId::UsedBeforeDefinition});
    auto &ds = c.diags.diagnostics();
    REQUIRE(ds.size() == 2);
    CHECK(ds[0].range.begin.line == 2);
    CHECK(ds[0].range.begin.col == 5);
    CHECK(ds[1].id == DiagId::LaterDefinition);
    CHECK(ds[1].range.begin.line == 3);
  }
  SECTION("in an output too") {
    Checked c("input x\noutput y\ny = x\n");
    CHECK(c.errors() == std::vector<DiagId>{DiagId::UsedBeforeDefinition});
  }
  SECTION("a name never defined") {
    Checked c("input x\ny = q + x\nz = h.W @ x\nw = tanh + x\n");
    CHECK(c.errors() == std::vector<DiagId>{DiagId::UnknownName, DiagId::UnknownNameDense,
                                            DiagId::FunctionAsValue});
  }
  SECTION("a second definition, with a note at the first") {
    Checked c("input x\nparam x\ny = x\ny = 2\n");
    CHECK(c.errors() == std::vector<DiagId>{DiagId::Redefinition, DiagId::Redefinition});
    auto &ds = c.diags.diagnostics();
    REQUIRE(ds.size() == 4);
    CHECK(ds[1].id == DiagId::PreviousDefinition);
    CHECK(ds[1].range.begin.line == 1);
    CHECK(ds[3].range.begin.line == 3);
  }
  SECTION("dotted names are only declared by dense") {
    Checked c("input h.W[3]\nk.b = 1\n");
    CHECK(c.errors() == std::vector<DiagId>{DiagId::DottedDeclaration, DiagId::DottedDeclaration});
  }
  SECTION("errors do not cascade through a poisoned name") {
    Checked c("input x[3]\ny = x + q\nz = y * 2\nw = sum(z)\n");
    CHECK(c.errors() == std::vector<DiagId>{DiagId::UnknownName});
  }
}

TEST_CASE("sema: calls, losses and outputs", "[sema]") {
  Checked calls("input x[3]\na = foo(x)\nb = x(1)\nc = tanh(x, x)\nd = softmax(sum(x))\n"
                "e = transpose(x)\nf = dot(x, sum(x))\ng = linear(x)\nh = normal(0, 1)\n");
  CHECK(calls.errors() == std::vector<DiagId>{DiagId::UnknownFunction, DiagId::NotAFunction,
                                              DiagId::WrongArity, DiagId::RankMismatch,
                                              DiagId::RankMismatch, DiagId::DotMismatch,
                                              DiagId::ActivationCall, DiagId::InitializerCall});
  Checked losses("input x[3]\ntarget t[3]\nloss E = x\nloss F = sum(x)\nloss G = sum(t)\n");
  // F is a second loss even though the first one, E, has an error.
  CHECK(losses.errors() ==
        std::vector<DiagId>{DiagId::NonScalarLoss, DiagId::SecondLoss, DiagId::SecondLoss});
  Checked outputs("input x[3]\ntarget t[3]\noutput t, x, nope\n");
  CHECK(outputs.errors() == std::vector<DiagId>{DiagId::TargetAsOutput, DiagId::UnknownName});

  Program p = compiled("input x[3]\nparam W[2, 3]\ny = W @ x\noutput x, W, y\nloss E = sum(y)\n");
  REQUIRE(p.outputs.size() == 3);
  CHECK(p.outputs[0].node == p.inputs[0].node);
  CHECK(p.outputs[1].node == p.params[0].node);
  CHECK(p.outputCount() == 3 + 6 + 2);
  REQUIRE(p.loss.has_value());
  CHECK(p.loss->name == "E");
  CHECK(p.graph.shape(p.loss->node) == Shape{});
  Program none = compiled("input x\ny = x\n");
  CHECK_FALSE(none.loss.has_value());
  CHECK(none.outputs.empty());
}

TEST_CASE("front end: errors are reported at the right line:col", "[sema]") {
  CHECK(firstErrorPlace("input x[3]\n\n  y = x @ x @ x\n") == "t.nn:3:13");
  CHECK(firstErrorPlace("input x[3]\nloss E = (x - 1) ^ 2\n") == "t.nn:2:10");
  CHECK(firstErrorPlace("input x[3]\r\ny = x +\r\n") == "t.nn:2:8");
  CHECK(firstErrorPlace("input x[3]\ny = sum(\n  x,\n  q)\n") == "t.nn:4:3");
  CHECK(firstErrorPlace("# comment\ninput x[3]\noutput y\n") == "t.nn:3:8");
  CHECK(firstErrorPlace("input x[3]\nparam p[3] ~ normal(0, -2)\n") == "t.nn:2:24");
}

TEST_CASE("front end: the diagnostics of compileSource are complete and in source order",
          "[sema]") {
  std::string diags;
  auto p = compileSource(SourceFile{"net.nn", "input x[3]\ny = q\nz = x @ 2\n"}, diags);
  CHECK_FALSE(p.has_value());
  CHECK(diags == "net.nn:2:5: error: unknown name 'q'\n"
                 "y = q\n"
                 "    ^\n"
                 "net.nn:3:7: error: '@' needs vectors or matrices, but its right operand is a "
                 "scalar (use '*' to scale)\n"
                 "z = x @ 2\n"
                 "      ^\n");
}
