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
#include "Random.h"
#include "Sema.h"

#include <cmath>
#include <set>

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

TEST_CASE("lexer: dotted names are one token; a dot is followed by a name", "[lexer]") {
  Lexed ok("h.W h.b layer_1.W block2.inner.W h1.h_2");
  REQUIRE_FALSE(ok.diags.hasErrors());
  REQUIRE(ok.tokens.size() == 7);
  CHECK(ok.tokens[0].kind == Tok::Name);
  CHECK(ok.tokens[0].text == "h.W");
  CHECK(ok.tokens[1].text == "h.b");
  CHECK(ok.tokens[2].text == "layer_1.W");
  CHECK(ok.tokens[3].text == "block2.inner.W");
  CHECK(ok.tokens[4].text == "h1.h_2");

  for (const char *bad : {"h.", "h.1", "h.W.", "h..W", "a.b.2c"}) {
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
  CHECK(exprAst("g()") == "(call g)");
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
  Checked c("input a[0]\ninput b[2.5]\ninput c[n]\ninput d[2, 3, 4, 1, 1]\ninput e[100000, 100000]\n"
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

// --- the grown-up language: ranks 0-4, options, indexing, new functions, layers, images --------

namespace {

// The errors of a program, each with its line:col, e.g. {"BadAxis@3:12"} is too opaque; the
// rendered first line of each error is clearer: "t.nn:3:12: error: ...".
std::vector<std::string> errorLines(const std::string &text) {
  std::string diags;
  std::optional<Program> p = compileSource(SourceFile{"t.nn", text}, diags);
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < diags.size()) {
    size_t end = diags.find('\n', pos);
    if (end == std::string::npos) end = diags.size();
    std::string line = diags.substr(pos, end - pos);
    if (line.rfind("t.nn:", 0) == 0) out.push_back(line);
    pos = end + 1;
  }
  return out;
}

bool hasLine(const std::vector<std::string> &lines, const std::string &prefix) {
  for (auto &l : lines)
    if (l.rfind(prefix, 0) == 0) return true;
  return false;
}

} // namespace

TEST_CASE("lexer: layer and return are keywords; braces and colons are tokens", "[lexer]") {
  Lexed l("layer f(x) {\n return x[1:]\n}");
  REQUIRE_FALSE(l.diags.hasErrors());
  CHECK(l.kinds() == std::vector<Tok>{Tok::KwLayer, Tok::Name, Tok::LParen, Tok::Name,
                                      Tok::RParen, Tok::LBrace, Tok::Newline, Tok::KwReturn,
                                      Tok::Name, Tok::LBracket, Tok::Number, Tok::Colon,
                                      Tok::RBracket, Tok::Newline, Tok::RBrace, Tok::Newline,
                                      Tok::Eof});
}

TEST_CASE("lexer: a UTF-8 byte-order mark at the start is skipped; columns start after it",
          "[lexer]") {
  Lexed l("\xEF\xBB\xBFinput x[3]\n");
  REQUIRE_FALSE(l.diags.hasErrors());
  CHECK(l.tokens[0].kind == Tok::KwInput);
  CHECK(l.tokens[0].loc.col == 1);
  CHECK(l.tokens[1].loc.col == 7);
  // Only at the start: elsewhere it is a stray character.
  Lexed mid("input x[3]\n\xEF\xBB\xBFy = x\n");
  CHECK(mid.diags.hasErrors());
  // The caret of an error on line 1 lines up with the text after the mark.
  CHECK(errorLines("\xEF\xBB\xBFy = q\n") == std::vector<std::string>{"t.nn:1:5: error: unknown name 'q'"});
  std::string diags;
  compileSource(SourceFile{"t.nn", "\xEF\xBB\xBFy = q\n"}, diags);
  CHECK(diags.find("y = q\n    ^\n") != std::string::npos);
}

TEST_CASE("diagnostics: a caret under a multi-byte character is one column wide", "[parser]") {
  std::string diags;
  compileSource(SourceFile{"t.nn", "c = é + x\ny = \"é\" ü\n"}, diags);
  // LINE:COL count bytes; the caret counts characters.
  CHECK(diags.find("t.nn:1:5: error: unexpected character 'é'\nc = é + x\n    ^\n") !=
        std::string::npos);
  CHECK(diags.find("t.nn:2:10: error: unexpected character 'ü'\ny = \"é\" ü\n        ^\n") !=
        std::string::npos);
  // A range after a multi-byte character starts at its character column.
  compileSource(SourceFile{"t.nn", "# é\ninput x[3]\nz = \"é\"\n"}, diags);
  CHECK(diags.find("t.nn:3:8: error: unexpected character '\"'\nz = \"é\"\n      ^\n") != std::string::npos);
}

TEST_CASE("parser: options, lists and index postfixes", "[parser]") {
  CHECK(exprAst("sum(x, 1, keepdims=true)") == "(call sum x 1 keepdims=true)");
  CHECK(exprAst("conv2d(x, K, stride=2, padding=-1)") ==
        "(call conv2d x K stride=2 padding=(neg 1))");
  CHECK(exprAst("concat(a, b, c, axis=1)") == "(call concat a b c axis=1)");
  CHECK(exprAst("reshape(x, [2, 3])") == "(call reshape x (list 2 3))");
  CHECK(exprAst("zeros([])") == "(call zeros (list))");
  CHECK(exprAst("x[1]") == "(index x 1)");
  CHECK(exprAst("x[a:b]") == "(index x (: a b))");
  CHECK(exprAst("x[:, 0]") == "(index x (: _ _) 0)");
  CHECK(exprAst("x[1, 2:5]") == "(index x 1 (: 2 5))");
  CHECK(exprAst("x[-1, :-2]") == "(index x (neg 1) (: _ (neg 2)))");
  CHECK(exprAst("x[2:]") == "(index x (: 2 _))");
  CHECK(exprAst("x[0][1]") == "(index (index x 0) 1)");
  CHECK(exprAst("f(x)[0]") == "(index (call f x) 0)");
  CHECK(exprAst("(a + b)[0]") == "(index (+ a b) 0)");
  // Indexing binds tightest: -x[0]^2 is -((x[0])^2).
  CHECK(exprAst("-x[0]^2") == "(neg (^ (index x 0) 2))");
  CHECK(exprAst("a @ B[0]") == "(@ a (index B 0))");
}

TEST_CASE("parser: layer definitions", "[parser]") {
  Parsed p("layer res(x, n) {\n  param W[n, n]\n\n  h = W @ x  # c\n  return h + x\n}\n"
           "y = res(x, 3)\nlayer id(x) {\nreturn x }\n");
  INFO(p.diags.render());
  REQUIRE_FALSE(p.diags.hasErrors());
  CHECK(p.ast() == "1:1 layer res(x, n)\n"
                   "  2:3 param W [n, n]\n"
                   "  4:3 h = (@ W x)\n"
                   "  5:3 return (+ h x)\n"
                   "7:1 y = (call res x 3)\n"
                   "8:1 layer id(x)\n"
                   "  9:1 return x\n");
}

TEST_CASE("parser: layer, option and hint errors at their place", "[parser]") {
  auto first = [](const std::string &text) {
    Parsed p(text);
    REQUIRE(p.diags.hasErrors());
    const Diagnostic &d = p.diags.diagnostics()[0];
    return std::make_tuple(d.id, d.range.begin.line, d.range.begin.col);
  };
  CHECK(first("y = sum(x, keepdims=true, 1)\n") == std::make_tuple(DiagId::PositionalAfterOption, 1u, 27u));
  CHECK(first("y = x ** 2\n") == std::make_tuple(DiagId::PowerHint, 1u, 7u));
  CHECK(first("def f(x):\n") == std::make_tuple(DiagId::DefHint, 1u, 1u));
  CHECK(first("return x\n") == std::make_tuple(DiagId::ReturnOutsideLayer, 1u, 1u));
  CHECK(first("layer f(x) {\n  h = x\n}\n") == std::make_tuple(DiagId::LayerWithoutReturn, 3u, 1u));
  CHECK(first("layer f(x) {\n  return x\n  h = x\n}\n") == std::make_tuple(DiagId::AfterReturn, 3u, 3u));
  CHECK(first("layer f(x) {\n  input y\n  return x\n}\n") == std::make_tuple(DiagId::NotInLayerBody, 2u, 3u));
  CHECK(first("layer f(x) {\n  return x\n") == std::make_tuple(DiagId::UnclosedLayer, 2u, 11u));
  CHECK(first("layer f(x) {\n  + 1\n  return x\n}\n") == std::make_tuple(DiagId::ExpectedBodyStatement, 2u, 3u));
  // A body error does not end the body: the rest is still parsed, and so is the next line.
  Parsed p("layer f(x) {\n  h = x +\n  g = x ^ y\n  return x\n}\ny = )\n");
  CHECK(p.errors() == std::vector<DiagId>{DiagId::Expected, DiagId::BadExponent, DiagId::Expected});
  // `x = 3`, `stride = 2` stay assignments; `def` alone is a name.
  Parsed ok("def = 1\nstride = 2\n");
  CHECK_FALSE(ok.diags.hasErrors());
}

TEST_CASE("sema: rank 0 to 4 values and reductions along any axis", "[sema]") {
  Program p = compiled("input x[2, 3, 4]\ninput q[2, 3, 4, 5]\ninput s\n"
                       "a = sum(x, 1)\nb = mean(q, 3)\nc = sum(q, 0)\nd = softmax(x)\n"
                       "e = log_softmax(q)\nf = x * s + q[0, :, :, 0]\ng = mean(x, 2, keepdims=true)\n"
                       "h = x - mean(x, 1, keepdims=true)\nk = sum(s)\nm = sum(x[0, 0], 0, keepdims=true)\n");
  CHECK(shapeOf(p, "a") == Shape{2, 4});
  CHECK(shapeOf(p, "b") == Shape{2, 3, 4});
  CHECK(shapeOf(p, "c") == Shape{3, 4, 5});
  CHECK(shapeOf(p, "d") == Shape{2, 3, 4});
  CHECK(shapeOf(p, "e") == Shape{2, 3, 4, 5});
  CHECK(shapeOf(p, "f") == Shape{2, 3, 4});
  CHECK(shapeOf(p, "g") == Shape{2, 3, 1});
  CHECK(shapeOf(p, "h") == Shape{2, 3, 4});
  CHECK(shapeOf(p, "k") == Shape{});
  CHECK(shapeOf(p, "m") == Shape{1});
  CHECK(p.graph.op(value(p, "a").node) == Op::SumAxis);
  CHECK(p.graph.node(value(p, "a").node).iattr == 1);
  // keepdims: the reduction, then a Reshape that puts the size-1 axis back.
  const Node &g = p.graph.node(value(p, "g").node);
  CHECK(g.op == Op::Reshape);
  CHECK(p.graph.op(g.a()) == Op::Div);

  auto lines = errorLines("input x[2, 3, 4]\na = sum(x, 3)\nb = mean(x, keepdims=true)\n"
                          "c = sum(x, 1, keepdims=1)\nd = x @ x\ne = transpose(x)\n");
  CHECK(lines == std::vector<std::string>{
                     "t.nn:2:12: error: the axis of sum(a, AXIS) must be the integer literal 0 to 2 for a of shape [2, 3, 4], found number '3'",
                     "t.nn:3:13: error: keepdims needs an axis: mean(a, AXIS, keepdims=true)",
                     "t.nn:4:24: error: option 'keepdims' takes true or false, found number '1'",
                     "t.nn:5:7: error: '@' needs vectors or matrices, but its left operand has shape [2, 3, 4]",
                     "t.nn:6:15: error: 'transpose' needs a matrix, but the argument has shape [2, 3, 4]"});
}

TEST_CASE("sema: options are checked at the option", "[sema]") {
  auto lines = errorLines("input x[3]\na = sum(x, 0, keep=true)\nb = relu(x, slope=1)\n"
                          "c = leaky_relu(x, slope=0.1, slope=0.2)\nd = leaky_relu(x, slope=true)\n"
                          "e = concat(x, x, axis=0.5)\n");
  CHECK(lines == std::vector<std::string>{
                     "t.nn:2:15: error: 'keep' is not an option of 'sum' (its options: keepdims)",
                     "t.nn:3:13: error: 'relu' takes no options",
                     "t.nn:4:30: error: option 'slope' is given twice",
                     "t.nn:4:19: note: 'slope' was first given here",
                     "t.nn:5:25: error: option 'slope' takes a number, found name 'true'",
                     "t.nn:6:23: error: option 'axis' takes an integer, found number '0.5'"});
  Program p = compiled("input x[3]\na = leaky_relu(x)\nb = leaky_relu(x, slope=-0.5)\nc = sum(x, 0, keepdims=false)\n");
  CHECK(p.graph.node(value(p, "a").node).op == Op::LeakyRelu);
  CHECK(p.graph.node(value(p, "a").node).fattr == 0.01);
  CHECK(p.graph.node(value(p, "b").node).fattr == -0.5);
  CHECK(shapeOf(p, "c") == Shape{});
}

TEST_CASE("sema: max, min, maximum, minimum and the new elementwise functions", "[sema]") {
  Program p = compiled("input x[2, 3]\ninput v[3]\na = max(x)\nb = min(x, 1)\nc = max(x, 0, keepdims=true)\n"
                       "d = maximum(x, v)\ne = minimum(v, 0)\nf = gelu(x) + elu(x) + erf(x) + sin(x) + cos(x)\n"
                       "g = max(v, 0)\n");
  CHECK(shapeOf(p, "a") == Shape{});
  CHECK(shapeOf(p, "b") == Shape{2});
  CHECK(shapeOf(p, "c") == Shape{1, 3});
  CHECK(shapeOf(p, "d") == Shape{2, 3});
  CHECK(shapeOf(p, "e") == Shape{3});
  CHECK(shapeOf(p, "f") == Shape{2, 3});
  const Node &a = p.graph.node(value(p, "a").node);
  CHECK(a.op == Op::Max);
  CHECK(a.iattr == -1);
  const Node &b = p.graph.node(value(p, "b").node);
  CHECK(b.op == Op::Min);
  CHECK(b.iattr == 1);
  // Along the only axis of a vector is all of it.
  CHECK(p.graph.node(value(p, "g").node).iattr == -1);
  CHECK(p.graph.op(value(p, "d").node) == Op::Maximum);
  CHECK(p.graph.op(value(p, "e").node) == Op::Minimum);
  auto lines = errorLines("input x[2, 3]\ninput v[4]\na = maximum(x, v)\nb = max(x, 2)\n");
  CHECK(lines == std::vector<std::string>{
                     "t.nn:3:5: error: cannot broadcast shapes [2, 3] and [4] in 'maximum'",
                     "t.nn:4:12: error: the axis of max(a, AXIS) must be the integer literal 0 or 1 for a of shape [2, 3], found number '2'"});
}

TEST_CASE("sema: concat, reshape, flatten, zeros and ones", "[sema]") {
  Program p = compiled("input x[2, 3]\ninput v[3]\na = concat(x, x, x)\nb = concat(x, x, axis=1)\n"
                       "c = reshape(x, [3, 2])\nd = flatten(x)\ne = zeros([2, 3]) + ones([3])\n"
                       "f = zeros([])\ng = reshape(v, [1, 3, 1, 1])\nh = flatten(v)\nk = reshape(sum(v), [1])\n");
  CHECK(shapeOf(p, "a") == Shape{6, 3});
  CHECK(shapeOf(p, "b") == Shape{2, 6});
  CHECK(shapeOf(p, "c") == Shape{3, 2});
  CHECK(shapeOf(p, "d") == Shape{6});
  CHECK(shapeOf(p, "e") == Shape{2, 3});
  CHECK(shapeOf(p, "f") == Shape{});
  CHECK(shapeOf(p, "g") == Shape{1, 3, 1, 1});
  CHECK(shapeOf(p, "k") == Shape{1});
  // concat(a, b, c) is concat(concat(a, b), c).
  const Node &a = p.graph.node(value(p, "a").node);
  CHECK(a.op == Op::Concat);
  CHECK(p.graph.op(a.a()) == Op::Concat);
  CHECK(p.graph.node(value(p, "b").node).iattr == 1);
  CHECK(p.graph.isConst(value(p, "f").node, 0));
  CHECK(value(p, "h").node == p.inputs[1].node); // flatten of a vector is the vector
  auto lines = errorLines("input x[2, 3]\ninput v[3]\na = concat(x, v)\nb = concat(x, x, axis=2)\n"
                          "c = reshape(x, [4, 2])\nd = reshape(x, 6)\ne = zeros([0])\nf = concat(sum(v), v)\n"
                          "g = tanh([1, 2])\n");
  CHECK(lines == std::vector<std::string>{
                     "t.nn:3:15: error: concat needs values of one rank whose dimensions agree except along the axis, but this one has shape [3] while the first has shape [2, 3] (axis 0)",
                     "t.nn:4:18: error: option 'axis' must be an axis 0 or 1 of [2, 3], found 2",
                     "t.nn:5:16: error: cannot reshape a value of shape [2, 3] (6 elements) to [4, 2] (8 elements)",
                     "t.nn:6:16: error: 'reshape' needs a list of sizes [d1, ...], found number '6'",
                     "t.nn:7:12: error: a dimension must be a positive integer literal, found number '0'",
                     "t.nn:8:12: error: 'concat' needs values of rank 1 or more, but the argument is a scalar",
                     "t.nn:9:10: error: a list [d1, ...] is not a value; lists give the sizes of reshape, zeros and ones"});
}

TEST_CASE("sema: indexing and slicing", "[sema]") {
  Program p = compiled("input x[4, 5, 6]\ninput v[5]\na = x[1]\nb = x[:, 0]\nc = x[1, 2:5]\n"
                       "d = x[-1, :, -2:]\ne = v[:2]\nf = v[-1]\ng = x[:]\nh = (v * 2)[1:4][0]\n"
                       "k = x[0, 0, 0]\n");
  CHECK(shapeOf(p, "a") == Shape{5, 6});
  CHECK(shapeOf(p, "b") == Shape{4, 6});
  CHECK(shapeOf(p, "c") == Shape{3, 6});
  CHECK(shapeOf(p, "d") == Shape{5, 2});
  CHECK(shapeOf(p, "e") == Shape{2});
  CHECK(shapeOf(p, "f") == Shape{});
  CHECK(shapeOf(p, "g") == Shape{4, 5, 6});
  CHECK(shapeOf(p, "h") == Shape{});
  CHECK(shapeOf(p, "k") == Shape{});
  CHECK(value(p, "g").node == p.inputs[0].node); // a whole slice is the value itself
  // x[-1, :, -2:]: Slice at [3, 0, 4] of shape [1, 5, 2], then a Reshape to [5, 2].
  const Node &d = p.graph.node(value(p, "d").node);
  REQUIRE(d.op == Op::Reshape);
  const Node &s = p.graph.node(d.a());
  REQUIRE(s.op == Op::Slice);
  CHECK(s.attrs == std::vector<int64_t>{3, 0, 4});
  CHECK(s.shape == Shape{1, 5, 2});
  // A slice keeps its axis: no Reshape.
  CHECK(p.graph.op(value(p, "e").node) == Op::Slice);
  auto lines = errorLines("input x[4, 5]\ninput s\na = x[4]\nb = x[-5]\nc = x[1, 3:3]\nd = x[0, 0, 0]\n"
                          "e = s[0]\nf = x[q]\ng = x[1:9]\nh = x[0.5]\n");
  CHECK(lines == std::vector<std::string>{
                     "t.nn:3:7: error: index 4 is out of range for axis 0 of size 4 (indices run from 0 to 3, or from -4 to -1 counting from the end)",
                     "t.nn:4:7: error: index -5 is out of range for axis 0 of size 4 (indices run from 0 to 3, or from -4 to -1 counting from the end)",
                     "t.nn:5:10: error: slice 3:3 of axis 1 (size 5) is empty or out of range: it needs 0 <= a < b <= 5, here a = 3 and b = 3",
                     "t.nn:6:6: error: 3 indices for a value of shape [4, 5], which has 2 axes",
                     "t.nn:7:6: error: a scalar cannot be indexed",
                     "t.nn:8:7: error: an index must be an integer literal, found name 'q'",
                     "t.nn:9:7: error: slice 1:9 of axis 0 (size 4) is empty or out of range: it needs 0 <= a < b <= 4, here a = 1 and b = 9",
                     "t.nn:10:7: error: an index must be an integer literal, found number '0.5'"});
}

TEST_CASE("sema: conv2d, pools and the conv sugar", "[sema]") {
  Program p = compiled("input img[3, 8, 8]\nparam K[4, 3, 3, 3]\nparam b[4]\n"
                       "a = conv2d(img, K)\nc = conv2d(img, K, b, stride=2, padding=1)\n"
                       "m = maxpool2d(a, 2)\nv = avgpool2d(a, 3, stride=1)\nh = conv(img, 5, 3, relu, padding=1)\n"
                       "g = conv(img, 2, 8, linear)\n");
  CHECK(shapeOf(p, "a") == Shape{4, 6, 6});
  CHECK(shapeOf(p, "c") == Shape{4, 4, 4});
  CHECK(shapeOf(p, "m") == Shape{4, 3, 3});
  CHECK(shapeOf(p, "v") == Shape{4, 4, 4});
  CHECK(shapeOf(p, "h") == Shape{5, 8, 8});
  CHECK(shapeOf(p, "g") == Shape{2, 1, 1});
  const Node &a = p.graph.node(value(p, "a").node);
  CHECK(a.op == Op::Conv2d);
  CHECK(a.attrs == std::vector<int64_t>{1, 0});
  // The bias [F] is reshaped to [F, 1, 1] and broadcast.
  const Node &c = p.graph.node(value(p, "c").node);
  REQUIRE(c.op == Op::Add);
  CHECK(p.graph.node(c.a()).attrs == std::vector<int64_t>{2, 1});
  CHECK(p.graph.shape(c.b()) == Shape{4, 1, 1});
  CHECK(p.graph.node(value(p, "m").node).attrs == std::vector<int64_t>{2, 2});
  CHECK(p.graph.node(value(p, "v").node).attrs == std::vector<int64_t>{3, 1});
  REQUIRE(p.params.size() == 6);
  CHECK(p.params[2].name == "h.K");
  CHECK(p.params[2].shape == Shape{5, 3, 3, 3});
  CHECK(p.params[2].init.kind == Init::Glorot);
  CHECK(p.params[3].name == "h.b");
  CHECK(p.params[3].shape == Shape{5});
  CHECK(p.params[3].init.kind == Init::Constant);

  auto lines = errorLines("input img[3, 8, 8]\ninput v[8]\nparam K[4, 2, 3, 3]\nparam K3[4, 3, 3, 3]\nparam b[3]\n"
                          "a = conv2d(img, K)\nc = conv2d(img, K3, b)\nd = conv2d(v, K3)\ne = maxpool2d(img, 9)\n"
                          "f = conv2d(img, K3, stride=0)\ng = conv(img, 4, 11, relu, padding=1)\nh = conv(v, 4, 3, relu)\n"
                          "k = avgpool2d(img, 0)\nm = conv(img, 4, 3, relu) + 1\n");
  CHECK(lines == std::vector<std::string>{
                     "t.nn:6:17: error: the kernel of shape [4, 2, 3, 3] expects 2 input channels, but the image of shape [3, 8, 8] has 3",
                     "t.nn:7:21: error: the bias of conv2d must have shape [4] (one per filter), but it has shape [3]",
                     "t.nn:8:12: error: 'conv2d' needs an image [C, H, W], but the argument has shape [8]",
                     "t.nn:9:20: error: the maxpool2d window (9 × 9) is larger than the image (8 × 8)",
                     "t.nn:10:21: error: option 'stride' must be a positive integer, found 0",
                     "t.nn:11:18: error: the conv window (11 × 11) is larger than the padded image (10 × 10, padding 1)",
                     "t.nn:12:10: error: the input of 'conv' must be an image [C, H, W], but it has shape [8]",
                     "t.nn:13:20: error: the window of a pool must be a positive integer literal, found number '0'",
                     "t.nn:14:5: error: 'conv' is only allowed as the whole right-hand side of 'NAME = conv(IN, F, k, ACT)'"});
}

TEST_CASE("sema: layers instantiate their bodies with dotted names", "[sema]") {
  Program p = compiled("layer residual(x, n) {\n  param W[n, n]\n  param b[n]\n  h = relu(W @ x + b)\n"
                       "  return h + x\n}\ninput x[4]\nh1 = residual(x, 4)\nh2 = residual(h1, dim(x, 0))\n"
                       "y = h2.h + h1.W @ h1\noutput h1.h, y\n");
  REQUIRE(p.params.size() == 4);
  CHECK(p.params[0].name == "h1.W");
  CHECK(p.params[0].shape == Shape{4, 4});
  CHECK(p.params[0].loc.line == 2);
  CHECK(p.params[1].name == "h1.b");
  CHECK(p.params[2].name == "h2.W");
  CHECK(p.params[3].name == "h2.b");
  CHECK(p.params[3].offset == 16 + 4 + 16);
  std::vector<std::string> names;
  for (auto &v : p.values) names.push_back(v.name);
  CHECK(names == std::vector<std::string>{"h1.h", "h1", "h2.h", "h2", "y"});
  CHECK(value(p, "h1.h").loc.line == 4); // the body's line
  CHECK(value(p, "h1").loc.line == 8);   // the call's line
  CHECK(value(p, "h1.h").statement == value(p, "h1").statement);
  REQUIRE(p.outputs.size() == 2);
  CHECK(p.outputs[0].name == "h1.h");
  // Each call makes new params: the two instances do not share nodes.
  CHECK(value(p, "h1.h").node != value(p, "h2.h").node);
}

TEST_CASE("sema: nested layers, size arguments, dim and shared top-level params", "[sema]") {
  Program p = compiled("param S[3, 3]\n"
                       "layer lin(x, m) {\n  param W[m, dim(x, 0)]\n  return W @ x\n}\n"
                       "layer block(x, k) {\n  a = lin(x, k)\n  z = dense(a, 3, tanh)\n  s = S @ z\n"
                       "  return s[0:k]\n}\ninput x[5]\nb1 = block(x, 2)\nb2 = block(x, 3)\n"
                       "layer scale(x, c) {\n  return x * c\n}\nq = scale(x, 2)\n");
  std::vector<std::string> params;
  for (auto &d : p.params) params.push_back(d.name);
  CHECK(params == std::vector<std::string>{"S", "b1.a.W", "b1.z.W", "b1.z.b", "b2.a.W", "b2.z.W", "b2.z.b"});
  CHECK(p.params[1].shape == Shape{2, 5});
  CHECK(p.params[4].shape == Shape{3, 5});
  CHECK(shapeOf(p, "b1") == Shape{2});
  CHECK(shapeOf(p, "b2") == Shape{3});
  CHECK(shapeOf(p, "b1.a") == Shape{2});
  // S is shared: both instances use the one param node.
  const Node &s1 = p.graph.node(value(p, "b1.s").node), &s2 = p.graph.node(value(p, "b2.s").node);
  CHECK(s1.a() == p.params[0].node);
  CHECK(s2.a() == p.params[0].node);
  // c is used as a value, not a size: 2 is a constant operand.
  CHECK(shapeOf(p, "q") == Shape{5});
}

TEST_CASE("sema: layer errors, with a note at the call", "[sema]") {
  SECTION("an error in the body is reported at the body's line, once, with the call") {
    std::string diags;
    auto p = compileSource(SourceFile{"t.nn", "layer f(x) {\n  h = x @ x @ x\n  return h\n}\n"
                                              "input v[3]\na = f(v)\nb = f(v)\n"},
                           diags);
    CHECK_FALSE(p.has_value());
    CHECK(diags == "t.nn:2:13: error: '@' needs vectors or matrices, but its left operand is a scalar (use '*' to scale)\n"
                   "  h = x @ x @ x\n"
                   "            ^\n"
                   "t.nn:6:5: note: in layer 'f' called here\n"
                   "a = f(v)\n"
                   "    ^\n");
  }
  SECTION("nested calls give one note a level, innermost first") {
    auto lines = errorLines("layer g(x) {\n  return x + q\n}\nlayer f(x) {\n  y = g(x)\n  return y\n}\n"
                            "input v[3]\na = f(v)\n");
    CHECK(lines == std::vector<std::string>{"t.nn:2:14: error: unknown name 'q'",
                                            "t.nn:5:7: note: in layer 'g' called here",
                                            "t.nn:9:5: note: in layer 'f' called here"});
  }
  SECTION("recursion, arity, sizes, visibility, whole right-hand sides") {
    auto lines = errorLines("input v[3]\nparam late[3]\n"
                            "layer r(x) {\n  y = r(x)\n  return y\n}\n"
                            "layer f(x, n) {\n  param W[n, 3]\n  return W @ x + late\n}\n"
                            "a = f(v)\nb = f(v, v)\nc = f(v, 3) + 1\n"
                            "layer g(x) {\n  return x + v\n}\nd = g(v)\nloss E = f(v, 2)\n");
    CHECK(lines == std::vector<std::string>{
                       "t.nn:4:7: error: layer 'r' calls itself; recursion is not allowed",
                       "t.nn:11:5: error: 'f' takes 2 arguments, but was given 1",
                       "t.nn:12:10: error: argument 'n' of layer 'f' is a size (its body uses it where an integer is expected), so the call must give an integer literal, found name 'v'",
                       "t.nn:13:5: error: 'f' is only allowed as the whole right-hand side of 'NAME = f(x, n)'",
                       "t.nn:15:14: error: 'v' is a top-level input; the body of layer 'g' sees its arguments, its own names and the top-level params declared before its first call (pass it as an argument)",
                       "t.nn:17:5: note: in layer 'g' called here",
                       "t.nn:18:10: error: 'f' declares params and cannot be the loss; name the layer first"});
  }
  SECTION("a top-level param declared after the first call is not visible") {
    auto lines = errorLines("layer f(x) {\n  return x * P\n}\ninput v[3]\nparam P[3]\na = f(v)\nparam Q[3]\n"
                            "layer g(x) {\n  return x * Q\n}\nb = g(v)\nparam R\nlayer h(x) {\n  return x * R\n}\n"
                            "c = h(v)\nparam Late\nd = h(v)\n");
    CHECK(lines.empty());
    auto late = errorLines("layer f(x) {\n  return x * P\n}\ninput v[3]\na = f(v)\nparam P[3]\nb = f(v)\n");
    CHECK(late == std::vector<std::string>{
                      "t.nn:2:14: error: 'P' is used before its definition; every name must be defined above its uses",
                      "t.nn:6:7: note: 'P' is defined here", "t.nn:5:5: note: in layer 'f' called here",
                      "t.nn:2:14: error: 'P' is a top-level param declared after the layer's first call; the body of layer 'f' sees its arguments, its own names and the top-level params declared before its first call (pass it as an argument)",
                      "t.nn:7:5: note: in layer 'f' called here"});
  }
  SECTION("names: layers are defined once, before use; instance names after the call") {
    auto lines = errorLines("input v[3]\na = f(v)\nlayer f(x) {\n  return x\n}\nlayer f(y) {\n  return y\n}\n"
                            "layer sum(x) {\n  return x\n}\nlayer k(x, x) {\n  return x\n}\nb = c.h\nc = f(v)\n"
                            "d = f\n");
    CHECK(lines == std::vector<std::string>{
                       "t.nn:2:5: error: 'f' is used before its definition; every name must be defined above its uses",
                       "t.nn:3:7: note: 'f' is defined here",
                       "t.nn:6:7: error: 'f' is already defined",
                       "t.nn:3:7: note: 'f' was defined here",
                       "t.nn:9:7: error: 'sum' is a reserved name (a function) and cannot be declared",
                       "t.nn:12:12: error: argument 'x' of layer 'k' is named twice",
                       "t.nn:15:5: error: 'c.h' is used before its definition; every name must be defined above its uses",
                       "t.nn:16:1: note: 'c' is defined here",
                       "t.nn:17:5: error: 'f' is a layer; call it as NAME = f(...)"});
  }
  SECTION("a body's names hide top-level ones") {
    Program p = compiled("input x[3]\nparam W[2, 2]\nlayer f(x) {\n  param W[3, 3]\n  h = W @ x\n  return h\n}\n"
                         "a = f(x)\nh = a + 1\n");
    CHECK(p.params[1].name == "a.W");
    CHECK(p.params[1].shape == Shape{3, 3});
  }
}

TEST_CASE("sema: programs without input or target (a function to minimize)", "[sema]") {
  Program p = compiled("param x = -1.2\nparam y = 1\nloss f = (1 - x)^2 + 100 * (y - x^2)^2\n");
  CHECK(p.inputs.empty());
  CHECK(p.targets.empty());
  REQUIRE(p.loss.has_value());
  CHECK(p.params.size() == 2);
  CHECK(p.params[0].init.a == -1.2);
}

TEST_CASE("sema: true, false and the new functions are reserved", "[sema]") {
  auto lines = errorLines("input true\nparam false[2]\nconcat = 1\nlayer dim(x) {\n  return x\n}\ngru = 2\n");
  CHECK(lines == std::vector<std::string>{
                     "t.nn:1:7: error: 'true' is a reserved name (an option value) and cannot be declared",
                     "t.nn:2:7: error: 'false' is a reserved name (an option value) and cannot be declared",
                     "t.nn:3:1: error: 'concat' is a reserved name (a function) and cannot be declared",
                     "t.nn:4:7: error: 'dim' is a reserved name (a function) and cannot be declared",
                     "t.nn:7:1: error: 'gru' is a reserved name (a recurrence) and cannot be declared"});
}

TEST_CASE("sema: did you mean, for names and functions", "[sema]") {
  auto lines = errorLines("input x[3]\nparam weight[3]\na = tahn(x)\nb = wieght * x\nc = sofmax(x)\n"
                          "d = q * x\ne = maxpool(x, 2)\n");
  CHECK(lines == std::vector<std::string>{
                     "t.nn:3:5: error: unknown function 'tahn'; did you mean 'tanh'?",
                     "t.nn:4:5: error: unknown name 'wieght'; did you mean 'weight'?",
                     "t.nn:5:5: error: unknown function 'sofmax'; did you mean 'softmax'?",
                     "t.nn:6:5: error: unknown name 'q'",
                     "t.nn:7:5: error: unknown function 'maxpool'; did you mean 'maxpool2d'?"});
}

TEST_CASE("sema: no user error reaches Graph::make", "[sema]") {
  // Each of these once could pass sema with operands the shape rules reject.
  for (const char *text : {"input x[2, 3, 4]\ny = x @ x\n", "input x[2, 3, 4]\ny = dot(x, x)\n",
                           "input x[3]\ny = x[3]\n", "input x[3, 3]\ny = conv2d(x, x)\n",
                           "input x[1, 2, 2]\nparam K[1, 1, 3, 3]\ny = conv2d(x, K)\n",
                           "input x[1, 2, 2]\ny = maxpool2d(x, 3)\n", "input x[3]\ny = concat(x, x, axis=1)\n",
                           "input x[3]\ny = reshape(x, [2])\n", "input x[2, 2, 2, 2]\ny = concat(x, x, axis=4)\n",
                           "input x[1, 1, 1, 1]\ny = x + zeros([2, 1, 1, 1, 1])\n"}) {
    INFO(text);
    std::string diags;
    std::optional<Program> p;
    REQUIRE_NOTHROW(p = compileSource(SourceFile{"t.nn", text}, diags));
    CHECK_FALSE(p.has_value());
    CHECK(diags.find(": error: ") != std::string::npos);
  }
}

TEST_CASE("params: glorot of rank 3 and 4 uses fan_in = in·Πk and fan_out = out·Πk", "[sema]") {
  Program p = compiled("param K[4, 2, 3, 3]\nparam W[5, 7]\nparam D ~ normal(0, 1)\n");
  CHECK(p.params[0].init.kind == Init::Glorot); // the default for rank 2 or more
  std::vector<double> flat = initParams(p, 3);
  const double limitK = std::sqrt(6.0 / ((4 + 2) * 9.0)), limitW = std::sqrt(6.0 / 12.0);
  double maxK = 0, maxW = 0;
  for (int64_t i = 0; i < 72; ++i) maxK = std::max(maxK, std::abs(flat[static_cast<size_t>(i)]));
  for (int64_t i = 72; i < 72 + 35; ++i) maxW = std::max(maxW, std::abs(flat[static_cast<size_t>(i)]));
  CHECK(maxK <= limitK);
  CHECK(maxK > 0.8 * limitK); // 72 uniform draws reach near the bound
  CHECK(maxW <= limitW);
  CHECK(maxW > 0.8 * limitW);
}

TEST_CASE("sema: layer calls that double at every level are bounded", "[sema]") {
  // L_k calls L_(k-1) twice: 2^40 instantiations if unbounded.
  std::string text = "input x[2]\nlayer L0(x) {\n  return x * 2\n}\n";
  for (int i = 1; i < 40; ++i)
    text += fmt::format("layer L{}(x) {{\n  a = L{}(x)\n  b = L{}(a)\n  return b\n}}\n", i, i - 1, i - 1);
  text += "y = L39(x)\nloss E = sum(y)\n";
  Checked c(text);
  CHECK(c.errors() == std::vector<DiagId>{DiagId::LayersTooLarge});
  // 2^11 calls of 3 statements are fine, and their names are distinct.
  std::string ok = "input x[2]\nlayer L0(x) {\n  return x * 2\n}\n";
  for (int i = 1; i < 12; ++i)
    ok += fmt::format("layer L{}(x) {{\n  a = L{}(x)\n  b = L{}(a)\n  return b\n}}\n", i, i - 1, i - 1);
  ok += "y = L11(x)\n";
  Program p = compiled(ok);
  std::set<std::string> names;
  for (auto &v : p.values) names.insert(v.name);
  CHECK(names.size() == p.values.size());
  CHECK(names.count("y.b.a.b.a.b.a.b.a.b.a"));
}
