// Unit tests of the C++ backend's text (the compiled and run tests are tests/emit/run.sh):
// NAME derivation, the declarations of the emitted API, kTrainedParams, --main's tables.
#include <catch2/catch.hpp>

#include "EmitCpp.h"
#include "LowerToLoops.h"
#include "Pipeline.h"
#include "Sema.h"

#include <optional>

using namespace nabla;

namespace {

struct Compiled {
  Program program;
  std::optional<Derivation> derivation;
  loops::Program loops;
};

std::unique_ptr<Compiled> compile(const std::string &src, const std::string &name) {
  std::string diags;
  std::optional<Program> p = compileSource(SourceFile{name, src}, diags);
  INFO(diags);
  REQUIRE(p);
  auto c = std::make_unique<Compiled>(Compiled{std::move(*p), std::nullopt, {}});
  if (c->program.loss) {
    auto d = derive(c->program);
    REQUIRE(d);
    c->derivation = std::move(*d);
  }
  std::vector<NodeId> outs = c->derivation ? c->derivation->outputs : simplifiedOutputs(c->program);
  c->loops = lowerToLoops(c->program, outs, c->derivation ? &*c->derivation : nullptr);
  return c;
}

bool contains(const std::string &text, const std::string &part) { return text.find(part) != std::string::npos; }

const char *kHinton = "input x[4]\ntarget t[2]\nparam W_i[3, 4] ~ normal(0, 0.5)\nparam b_i[3]\n"
                      "param W_j[2, 3] ~ normal(0, 0.5)\nparam b_j[2]\ny_i = logistic(W_i @ x + b_i)\n"
                      "y_j = logistic(W_j @ y_i + b_j)\noutput y_j\nloss E = 0.5 * sum((y_j - t)^2)\n";

} // namespace

TEST_CASE("emit-cpp: NAME from the file name", "[emit-cpp]") {
  CHECK(cppNameForPath("my-net.nn") == "my_net");
  CHECK(cppNameForPath("2layer.nn") == "nn_2layer");
  CHECK(cppNameForPath("class.nn") == "nn_class");
  CHECK(cppNameForPath("dir.d/sub/x.y.nn") == "x_y");
  CHECK(cppNameForPath("/abs/path/Digits_v2.nn") == "Digits_v2");
  CHECK(cppNameForPath("net") == "net");
  CHECK(cppName("xor") == "nn_xor");         // an alternative token is a keyword too
  CHECK(cppName("co_await") == "nn_co_await");
  CHECK(cppName("char8_t") == "nn_char8_t");
  CHECK(cppName("Class") == "Class");        // keywords are case-sensitive
  CHECK(cppName("net work+1") == "net_work_1");
  CHECK(cppName("_x") == "nn_x");          // a leading _ is reserved at global scope
  CHECK(cppName("a__b") == "a_b");         // and so is __ anywhere
  CHECK(cppName("NULL") == "nn_NULL");     // macros and global names of the headers
  CHECK(cppName("std") == "nn_std");
  CHECK(cppName("std12") == "nn_std12");
  CHECK(cppName("stdnet") == "stdnet");
  CHECK(cppName("index") == "nn_index");
  CHECK(cppName("real") == "nn_real");
  CHECK(cppName("") == "nn_");
  CHECK(cppName("é") == "nn_");              // two bytes, one underscore
  for (const char *k : {"alignas", "and_eq", "bitor", "compl", "concept", "consteval", "constinit",
                        "decltype", "export", "not_eq", "nullptr", "requires", "thread_local", "typeid",
                        "wchar_t", "xor_eq", "co_yield", "co_return"})
    CHECK(isCppKeyword(k));
  for (const char *w : {"main", "std", "final", "override", "real", "module", "import"}) CHECK_FALSE(isCppKeyword(w));
}

TEST_CASE("emit-cpp: the header declares the API and documents the layout", "[emit-cpp]") {
  auto c = compile(kHinton, "samples/hinton.nn");
  CppFiles f = emitCpp(c->program, c->loops);
  CHECK(f.name == "hinton");
  CHECK(contains(f.header, "namespace hinton {"));
  CHECK(contains(f.header, "using real = float;"));
  CHECK(contains(f.header, "inline constexpr std::size_t kParams = 23;"));
  CHECK(contains(f.header, "inline constexpr std::size_t kInputs = 4;"));
  CHECK(contains(f.header, "inline constexpr std::size_t kTargets = 2;"));
  CHECK(contains(f.header, "inline constexpr std::size_t kOutputs = 2;"));
  CHECK(contains(f.header, "std::size_t workspace_size(std::size_t n);"));
  CHECK(contains(f.header, "void forward(const real* params, const real* inputs, std::size_t n, real* outputs, real* workspace);"));
  CHECK(contains(f.header, "real loss_and_gradient(const real* params, const real* inputs, const real* targets, std::size_t n,"));
  CHECK(contains(f.header, "#include <cstddef>"));
  CHECK_FALSE(contains(f.header, "kTrainedParams"));
  // Every param's offset and shape.
  CHECK(contains(f.header, "       0  W_i   [3, 4]  ~ normal(0, 0.5), line 3"));
  CHECK(contains(f.header, "      21  b_j   [2]     = 0, line 6"));
  // Paths stay out of the text: the file name only.
  CHECK(contains(f.header, "from hinton.nn (f32)"));
  CHECK_FALSE(contains(f.header + f.source, "samples/"));
  // The source: the standard library only, formulas and .nn lines beside the kernels.
  CHECK(contains(f.source, "#include \"hinton.hpp\""));
  CHECK(contains(f.source, "// y_i = logistic(t6 + b_i)   (line 7)"));
  CHECK(contains(f.source, "//   hinton.nn:7: y_i = logistic(W_i @ x + b_i)"));
  CHECK(contains(f.source, "//   hinton.nn:3: param W_i[3, 4] ~ normal(0, 0.5)"));
  for (const std::string &text : {f.header, f.source})
    for (size_t at = text.find("#include"); at != std::string::npos; at = text.find("#include", at + 1)) {
      std::string inc = text.substr(at, text.find('\n', at) - at);
      CHECK((inc.find('<') != std::string::npos || inc == "#include \"hinton.hpp\""));
    }
  CHECK(f.main.empty());

  CppEmitOptions o64;
  o64.f64 = true;
  o64.name = "lecture";
  CppFiles g = emitCpp(c->program, c->loops, o64);
  CHECK(g.name == "lecture");
  CHECK(contains(g.header, "namespace lecture {"));
  CHECK(contains(g.header, "using real = double;"));
}

TEST_CASE("emit-cpp: kTrainedParams holds the values, in the dtype", "[emit-cpp]") {
  auto c = compile(kHinton, "hinton.nn");
  std::vector<double> v(23);
  for (size_t i = 0; i < v.size(); ++i) v[i] = 0.1 * static_cast<double>(i) - 1;
  CppEmitOptions o;
  o.trainedParams = &v;
  CppFiles f = emitCpp(c->program, c->loops, o);
  CHECK(contains(f.header, "inline constexpr real kTrainedParams[kParams] = {"));
  CHECK(contains(f.header, "    // W_i [3, 4], offset 0\n    -1.0f, -0.9f, -0.8f, -0.7f,\n"));
  o.f64 = true;
  CppFiles g = emitCpp(c->program, c->loops, o);
  CHECK(contains(g.header, "    -1.0, -0.9, -0.8, -0.7,\n"));
}

TEST_CASE("emit-cpp: --main carries the params' initialization and the class-index form", "[emit-cpp]") {
  auto c = compile("input x[3]\ntarget y[4]\nparam s ~ uniform(-1, 2)\nh = dense(x * s, 5, tanh)\n"
                   "p = dense(h, 4, softmax)\noutput p\nloss E = cross_entropy(p, y)\n",
                   "net.nn");
  CppEmitOptions o;
  o.withMain = true;
  CppFiles f = emitCpp(c->program, c->loops, o);
  CHECK(contains(f.main, "#include \"net.hpp\""));
  CHECK(contains(f.main, "{\"s\", 0, 0, 1, 1, kUniform, -1.0, 2.0, {0, 0, 0, 0}},"));
  CHECK(contains(f.main, "{\"h.W\", 1, 2, 5, 3, kGlorot, 0.0, 0.0, {5, 3, 0, 0}},"));
  CHECK(contains(f.main, "{\"h.b\", 16, 1, 1, 5, kConstant, 0.0, 0.0, {5, 0, 0, 0}},"));
  // A conv kernel [2, 3, 2, 2]: 6 rows of 2 (all 24 elements drawn), the shape for the JSON, and
  // Glorot's limit over (out + in)·kh·kw = 5·4 as a uniform draw.
  auto conv = compile("input img[3, 4, 4]\ntarget y[2]\nc = conv(img, 2, 2, tanh)\np = dense(flatten(c), 2, softmax)\n"
                      "output p\nloss E = cross_entropy(p, y)\n",
                      "conv.nn");
  CppFiles cf = emitCpp(conv->program, conv->loops, o);
  CHECK(contains(cf.main, "{\"c.K\", 0, 4, 12, 2, kUniform, -0.5477225575051661, 0.5477225575051661, {2, 3, 2, 2}},"));
  CHECK(contains(f.main, "readCsv(data, net::kInputs, net::kTargets, 4, d)"));
  CHECK_FALSE(contains(f.main, "@"));

  auto noLoss = compile("input x[2]\ny = x * 2\noutput y\n", "f.nn");
  CHECK_THROWS_AS(emitCpp(noLoss->program, noLoss->loops, o), InternalError);
  o.withMain = false;
  CppFiles g = emitCpp(noLoss->program, noLoss->loops, o);
  CHECK_FALSE(contains(g.header, "loss_and_gradient("));
  CHECK(contains(g.header, "The program has no loss: there is no loss_and_gradient."));
}
