// Tests of `nabla explain` (compiler/explain/Explain.*), in f64:
//   - the lecture network's worked example against the backprop formulas derived by hand
//     (dE/dy_j = y_j - t, dE/dz_j = y_j (1 - y_j) dE/dy_j, dE/dy_i = W_jᵀ dE/dz_j, ...), the
//     per-element form's products one by one;
//   - every param's explained gradient against central finite differences of the loss, on the
//     samples and on programs with shared consumers, softmax, logistic regression, recurrences;
//   - the terms of every gradient add up to it, and the products of each element to the element;
//   - terms credited to the consumer they flow from, with its source line (a layer norm);
//   - an unknown name's did-you-mean; the LaTeX notation of the formulas;
//   - the simplifier's bce rule: logistic regression's gradient is p - t, exact at saturation.
#include <catch2/catch.hpp>

#include <stdexcept> // before Program.h: Graph.h uses std::runtime_error

#include "Explain.h"
#include "GradPrinter.h"
#include "Interpreter.h"
#include "Pipeline.h"
#include "Random.h"
#include "Sema.h"

#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace nabla;

namespace {

Program compile(const std::string &source, const std::string &name = "test.nn") {
  std::string diags;
  std::optional<Program> p = compileSource(SourceFile{name, source}, diags);
  INFO(diags);
  REQUIRE(p);
  return std::move(*p);
}

Derivation derived(Program &p) {
  Expected<Derivation> d = derive(p);
  REQUIRE(d);
  return std::move(*d);
}

std::string readSample(const std::string &name) {
  std::ifstream in(std::string(NABLA_SOURCE_DIR) + "/samples/" + name);
  REQUIRE(in);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One example: params from the seed, inputs in [0.5, 1.5], targets in [0, 1].
ExplainOptions example(const Program &p, uint64_t seed) {
  ExplainOptions o;
  o.withNumbers = true;
  o.params = initParams(p, seed);
  Rng rng(seed * 7 + 1);
  for (int64_t i = 0; i < p.inputCount(); ++i) o.inputs.push_back(rng.uniform(0.5, 1.5));
  for (int64_t i = 0; i < p.targetCount(); ++i) o.targets.push_back(rng.uniform(0, 1));
  return o;
}

double lossAt(const Program &p, const std::vector<double> &params, const ExplainOptions &o) {
  Interpreter<double> in(p, p.graph, {p.loss->node});
  in.run(params.data(), o.inputs.data(), o.targets.data());
  return in.value(p.loss->node)[0];
}

const ExplainEntry &entry(const Explanation &e, const std::string &name) {
  for (const ExplainEntry &en : e.entries)
    if (en.name == name) return en;
  FAIL("no entry " << name);
  return e.entries.front();
}

// Every param's explained gradient against central differences; the terms against the totals.
void checkAgainstFiniteDifferences(const std::string &source, uint64_t seed) {
  Program p = compile(source);
  Derivation d = derived(p);
  ExplainOptions o = example(p, seed);
  Expected<Explanation> e = explain(p, d, o);
  INFO(source);
  REQUIRE(e);
  REQUIRE(e->lossValue);
  CHECK(*e->lossValue == Approx(lossAt(p, o.params, o)).epsilon(1e-12));
  int params = 0;
  for (const ExplainEntry &en : e->entries) {
    REQUIRE(en.numbers);
    // the terms add up to the gradient, the products of an element to the element
    if (en.terms.size() > 1) {
      for (size_t k = 0; k < en.numbers->size(); ++k) {
        double s = 0;
        for (const ExplainTerm &t : en.terms) {
          REQUIRE(t.value);
          s += (*t.value)[k];
        }
        CHECK(s == Approx((*en.numbers)[k]).margin(1e-12).epsilon(1e-9));
      }
    }
    for (const ExplainScalar &sc : en.perElement) {
      REQUIRE(sc.total);
      REQUIRE(sc.values.size() == sc.terms.size());
      double s = 0;
      for (double v : sc.values) s += v;
      INFO(en.gradient << ": " << sc.lhs);
      CHECK(s == Approx(*sc.total).margin(1e-12).epsilon(1e-9));
    }
    if (!en.isParam) continue;
    const Decl *decl = p.findParam(en.name);
    REQUIRE(decl);
    ++params;
    for (int64_t k = 0; k < decl->shape.numel(); ++k) {
      std::vector<double> P = o.params;
      const size_t at = static_cast<size_t>(decl->offset + k);
      const double h = 1e-6 * std::max(1.0, std::abs(P[at]));
      P[at] = o.params[at] + h;
      const double up = lossAt(p, P, o);
      P[at] = o.params[at] - h;
      const double down = lossAt(p, P, o);
      const double fd = (up - down) / (2 * h);
      INFO(en.gradient << "[" << k << "]");
      CHECK((*en.numbers)[static_cast<size_t>(k)] == Approx(fd).margin(1e-6).epsilon(1e-5));
    }
  }
  CHECK(params == static_cast<int>(p.params.size()));
}

double sigma(double z) { return 1 / (1 + std::exp(-z)); }

} // namespace

TEST_CASE("explain: the lecture network's worked example is the hand-derived backprop", "[explain]") {
  Program p = compile(readSample("hinton.nn"), "hinton.nn");
  Derivation d = derived(p);
  ExplainOptions o = example(p, 3);
  Expected<Explanation> e = explain(p, d, o);
  REQUIRE(e);
  // by hand
  auto P = [&](const char *name, int64_t i) { return o.params[static_cast<size_t>(p.findParam(name)->offset + i)]; };
  const std::vector<double> &x = o.inputs, &t = o.targets;
  std::vector<double> yi(3), zj(2), yj(2), dyj(2), dzj(2), dyi(3, 0.0), dbi(3);
  for (int i = 0; i < 3; ++i) {
    double s = P("b_i", i);
    for (int k = 0; k < 4; ++k) s += P("W_i", i * 4 + k) * x[static_cast<size_t>(k)];
    yi[static_cast<size_t>(i)] = sigma(s);
  }
  double E = 0;
  for (int j = 0; j < 2; ++j) {
    double s = P("b_j", j);
    for (int i = 0; i < 3; ++i) s += P("W_j", j * 3 + i) * yi[static_cast<size_t>(i)];
    const size_t u = static_cast<size_t>(j);
    zj[u] = s, yj[u] = sigma(s), dyj[u] = yj[u] - t[u], dzj[u] = yj[u] * (1 - yj[u]) * dyj[u];
    E += 0.5 * dyj[u] * dyj[u];
  }
  for (int i = 0; i < 3; ++i) {
    const size_t u = static_cast<size_t>(i);
    for (int j = 0; j < 2; ++j) dyi[u] += P("W_j", j * 3 + i) * dzj[static_cast<size_t>(j)];
    dbi[u] = yi[u] * (1 - yi[u]) * dyi[u];
  }
  CHECK(*e->lossValue == Approx(E).epsilon(1e-12));
  auto same = [](const std::vector<double> &got, const std::vector<double> &want) {
    REQUIRE(got.size() == want.size());
    for (size_t k = 0; k < got.size(); ++k) CHECK(got[k] == Approx(want[k]).epsilon(1e-12).margin(1e-15));
  };
  same(*entry(*e, "y_j").numbers, dyj);
  same(*entry(*e, "z_j").numbers, dzj);
  same(*entry(*e, "b_j").numbers, dzj);
  same(*entry(*e, "y_i").numbers, dyi);
  same(*entry(*e, "b_i").numbers, dbi);
  std::vector<double> dWj, dWi;
  for (int j = 0; j < 2; ++j)
    for (int i = 0; i < 3; ++i) dWj.push_back(dzj[static_cast<size_t>(j)] * yi[static_cast<size_t>(i)]);
  for (int i = 0; i < 3; ++i)
    for (int k = 0; k < 4; ++k) dWi.push_back(dbi[static_cast<size_t>(i)] * x[static_cast<size_t>(k)]);
  same(*entry(*e, "W_j").numbers, dWj);
  same(*entry(*e, "W_i").numbers, dWi);

  // The order of grad, the consumers and their lines.
  std::vector<std::string> order;
  for (const ExplainEntry &en : e->entries) order.push_back(en.name);
  CHECK(order == std::vector<std::string>{"y_j", "z_j", "b_j", "W_j", "y_i", "b_i", "W_i"});
  const ExplainEntry &y = entry(*e, "y_i");
  CHECK(y.line == 12);
  CHECK(y.shape == "[3]");
  CHECK(y.gradient == "dE/dy_i");
  CHECK(y.formula == "W_jᵀ dE/dz_j");
  REQUIRE(y.terms.size() == 1);
  CHECK(y.terms[0].consumer == "z_j");
  CHECK(y.terms[0].line == 13);

  // The lecture's per-neuron form: dE/dy_i[1] = W_j[0,1]·dE/dz_j[0] + W_j[1,1]·dE/dz_j[1], each
  // product with its value.
  REQUIRE(y.perElement.size() == 3);
  const ExplainScalar &s1 = y.perElement[1];
  CHECK(s1.lhs == "dE/dy_i[1]");
  CHECK(s1.terms == std::vector<std::string>{"W_j[0,1]·dE/dz_j[0]", "W_j[1,1]·dE/dz_j[1]"});
  REQUIRE(s1.values.size() == 2);
  CHECK(s1.values[0] == Approx(P("W_j", 1) * dzj[0]).epsilon(1e-12));
  CHECK(s1.values[1] == Approx(P("W_j", 4) * dzj[1]).epsilon(1e-12));
  CHECK(*s1.total == Approx(dyi[1]).epsilon(1e-12));
  const ExplainEntry &w = entry(*e, "W_j");
  REQUIRE(w.perElement.size() == 6);
  CHECK(w.perElement[5].lhs == "dE/dW_j[1,2]");
  CHECK(w.perElement[5].terms == std::vector<std::string>{"dE/dz_j[1]·y_i[2]"});
  const ExplainEntry &z = entry(*e, "z_j");
  CHECK(z.perElement[0].terms == std::vector<std::string>{"dE/dy_j[0]·y_j[0]·(1 - y_j[0])"});

  // The text shows the lecture's line with its numbers.
  const std::string text = renderText(*e);
  CHECK(text.find("dE/dy_i[1] = W_j[0,1]·dE/dz_j[0] + W_j[1,1]·dE/dz_j[1]") != std::string::npos);
  CHECK(text.find("← from z_j, line 13") != std::string::npos);
  CHECK(text.find(fmt::format("= {:.4g} + {:.4g} = {:.4g}", s1.values[0], s1.values[1], *s1.total)) != std::string::npos);
}

TEST_CASE("explain: every param's gradient agrees with finite differences", "[explain]") {
  for (const char *sample : {"hinton.nn", "xor.nn", "iris.nn", "rosenbrock.nn", "attention.nn"}) {
    INFO(sample);
    checkAgainstFiniteDifferences(readSample(sample), 5);
  }
  // a hand-written layer norm (a node shared by two statements), softmax, logistic regression,
  // weight sharing, and a recurrence (its params' terms are sums over steps)
  checkAgainstFiniteDifferences(R"(input x[4]
target t[4]
param W[4, 4] ~ normal(0, 0.5)
h = W @ x
mu = mean(h)
var = mean((h - mu)^2)
n = (h - mu) / sqrt(var + 1e-5)
loss E = sum((n - t)^2)
)", 2);
  checkAgainstFiniteDifferences(R"(input X[2, 3]
target T[2, 4]
param W[3, 4] ~ normal(0, 1)
S = softmax(X @ W)
loss E = sum((S - T)^2)
)", 3);
  checkAgainstFiniteDifferences(R"(input x[3]
target t
param w[3] ~ normal(0, 1)
param b
p = logistic(dot(w, x) + b)
output p
loss E = bce(p, t)
)", 4);
  checkAgainstFiniteDifferences(R"(input x[3]
target t[3]
param W[3, 3] ~ normal(0, 0.5)
h = tanh(W @ x)
y = tanh(W @ h)
loss E = sum((y - t)^2) + 0.1 * sum(h)
)", 6);
  checkAgainstFiniteDifferences(R"(input xs[3, 2]
target t[2]
hs = rnn(xs, 2)
loss E = sum((hs[-1] - t)^2)
)", 7);
}

TEST_CASE("explain: each term is credited to the consumer it flows from, with its line", "[explain]") {
  Program p = compile(R"(input x[8]
target t[8]
param W[8, 8]
h = W @ x
mu = mean(h)
var = mean((h - mu)^2)
n = (h - mu) / sqrt(var + 1e-5)
loss E = sum((n - t)^2)
)");
  Derivation d = derived(p);
  ExplainOptions o;
  o.names = {"h"};
  Expected<Explanation> e = explain(p, d, o);
  REQUIRE(e);
  REQUIRE(e->entries.size() == 1);
  const ExplainEntry &h = e->entries[0];
  REQUIRE(h.terms.size() == 3);
  CHECK(h.terms[0].consumer == "n");
  CHECK(h.terms[0].line == 7);
  CHECK(h.terms[0].formula == "dE/dn / sqrt(var + 1e-05)");
  CHECK(h.terms[1].consumer == "var");
  CHECK(h.terms[1].line == 6);
  CHECK(h.terms[2].consumer == "mu");
  CHECK(h.terms[2].line == 5);
  CHECK(h.terms[2].formula == "dE/dmu / 8");
  CHECK(h.perElement.size() == 8);
  CHECK_FALSE(h.numbers);
}

TEST_CASE("explain: an unknown name is an error with a suggestion", "[explain]") {
  Program p = compile(readSample("hinton.nn"), "hinton.nn");
  Derivation d = derived(p);
  ExplainOptions o;
  o.names = {"y_jj"};
  Expected<Explanation> e = explain(p, d, o);
  REQUIRE_FALSE(e);
  CHECK(e.error().message == "hinton.nn: error: no value or param named 'y_jj'; did you mean 'y_j'?");
  o.names = {"x"}; // an input: a note, not an error
  e = explain(p, d, o);
  REQUIRE(e);
  REQUIRE(e->entries.size() == 1);
  CHECK(e->entries[0].note.find("input") != std::string::npos);
}

TEST_CASE("explain: formulas in LaTeX", "[explain]") {
  CHECK(formulaToLatex("dE/dW_j") == "\\frac{\\partial E}{\\partial W_{j}}");
  CHECK(formulaToLatex("W_jᵀ dE/dz_j") == "W_{j}^{\\top} \\frac{\\partial E}{\\partial z_{j}}");
  CHECK(formulaToLatex("dE/dz_j ⊗ y_i") == "\\frac{\\partial E}{\\partial z_{j}}  \\otimes  y_{i}");
  CHECK(formulaToLatex("sqrt(var + 1e-05)") == "\\operatorname{sqrt}(\\mathit{var} + 1 \\cdot 10^{-5})");
  CHECK(formulaToLatex("Σ_{t=0..4} h[t]") == "\\sum_{t=0}^{4} h[t]");
  CHECK(formulaToLatex("sum(x, 1, keepdims=true)") == "\\operatorname{sum}(x, 1, \\mathrm{keepdims}{=}\\mathit{true})");
  CHECK(formulaToLatex("W_hidden_2") == "W_{\\mathit{hidden\\_2}}");
  CHECK(formulaToLatex("dE/dhs.h[3]") == "\\frac{\\partial E}{\\partial \\mathit{hs}.h}[3]");
  CHECK(formulaToLatex("x^2 * 50%") == "x^{2}  \\cdot  50\\%");
}

TEST_CASE("simplify: bce of logistic differentiates to p - t, exactly at saturation", "[explain][simplify]") {
  const std::string source = R"(input x
target t
param w
param b
p = logistic(w * x + b)
output p
loss E = bce(p, t)
)";
  Program p = compile(source);
  Derivation d = derived(p);
  const std::string grad = printGradient(p, d, GradPrintOptions{});
  CHECK(grad.find("dE/db = p - t\n") != std::string::npos);
  // d/dz of t softplus(-z) + (1 - t) softplus(z) is σ(z) - t at every z, saturated or not
  const NodeId db = d.paramGrads[1];
  Interpreter<double> in(p, p.graph, {db});
  for (double z : {-40.0, -5.0, -0.3, 0.0, 2.0, 40.0})
    for (double t : {0.0, 0.25, 1.0}) {
      const double params[2] = {1.0, 0.0}, x = z;
      in.run(params, &x, &t);
      INFO("z = " << z << ", t = " << t);
      CHECK(in.value(db)[0] == Approx(sigma(z) - t).margin(1e-15));
    }
}
