// Tests of the unrolled recurrences (compiler/graph/Recurrence.h) on hand-built graphs, in f64:
//   - the forward states of rnn (tanh, relu), gru and lstm against a plain C++ transcription of
//     PyTorch's cell equations;
//   - the gradient of every param (and of the sequence, when it is computed from a param), raw and
//     simplified, against fourth-order central finite differences;
//   - against a hand-unrolled graph of the same recurrence written differently (weights sliced per
//     gate, one product per gate, an explicit zero initial state, PyTorch's h' = n + z (h - n),
//     states stacked as a sum of Pads): loss and gradients agree to 1e-12;
//   - scan: with an rnn cell it is rnn; an initial state that is a param gets its gradient; a
//     state of rank 2 is stacked to [T, 2, 3];
//   - the language: `hs = rnn/gru/lstm(xs, H)` against the same recurrence written out step by
//     step in .nn source (1e-12, f64, loss and every gradient) and against finite differences;
//     `scan` of a layer cell is `rnn` and shares one instance of its params; the params' names,
//     shapes, order and initialization; the per-step values; errors at the right place.
#include <catch2/catch.hpp>

#include <stdexcept> // before Program.h: Graph.h uses std::runtime_error

#include "Autodiff.h"
#include "Evaluate.h"
#include "Interpreter.h"
#include "LowerToLoops.h"
#include "Model.h"
#include "llvm/JitSession.h"
#include "Pipeline.h"
#include "Program.h"
#include "Random.h"
#include "Recurrence.h"
#include "Sema.h"
#include "Simplify.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

using namespace nabla;

namespace {

// A hand-built program: leaves declared as Program decls (so the interpreter can read them), with
// their values.
struct Bench {
  Program p;
  std::vector<double> params, inputs;
  Rng rng;

  explicit Bench(uint64_t seed) : rng(seed) {}
  Graph &g() { return p.graph; }

  std::vector<double> draw(const Shape &s, double lo, double hi) {
    std::vector<double> v(static_cast<size_t>(s.numel()));
    for (double &x : v) x = rng.uniform(lo, hi);
    return v;
  }
  NodeId leaf(Op op, Shape s, const std::vector<double> &values) {
    auto &decls = op == Op::Param ? p.params : p.inputs;
    auto &flat = op == Op::Param ? params : inputs;
    REQUIRE(static_cast<int64_t>(values.size()) == s.numel());
    NodeId id = g().make(op, {}, 0, static_cast<int64_t>(decls.size()), s);
    Decl d;
    d.name = fmt::format("{}{}", opSpelling(op), decls.size());
    d.shape = s;
    d.node = id;
    d.offset = static_cast<int64_t>(flat.size());
    decls.push_back(d);
    flat.insert(flat.end(), values.begin(), values.end());
    return id;
  }
  NodeId param(const Shape &s, double lo = -0.6, double hi = 0.6) {
    return leaf(Op::Param, s, draw(s, lo, hi));
  }
  NodeId input(const Shape &s, double lo = -1, double hi = 1) {
    return leaf(Op::Input, s, draw(s, lo, hi));
  }

  std::vector<std::vector<double>> eval(const std::vector<NodeId> &roots) {
    Interpreter<double> it(p, p.graph, roots);
    it.run(params.data(), inputs.data(), nullptr);
    std::vector<std::vector<double>> out;
    for (NodeId r : roots) out.push_back(it.value(r));
    return out;
  }
  std::vector<double> eval(NodeId root) { return eval(std::vector<NodeId>{root})[0]; }

  // d(scalar)/d(param decl k) by the fourth-order central difference.
  std::vector<double> finiteDifference(NodeId scalar, size_t k, double h = 1e-3) {
    Interpreter<double> it(p, p.graph, {scalar});
    const Decl &d = p.params[k];
    std::vector<double> P = params, out;
    auto f = [&](size_t at, double x) {
      P[at] = x;
      it.run(P.data(), inputs.data(), nullptr);
      return it.value(scalar)[0];
    };
    for (int64_t i = 0; i < d.shape.numel(); ++i) {
      size_t at = static_cast<size_t>(d.offset + i);
      double x = params[at];
      out.push_back((f(at, x - 2 * h) - 8 * f(at, x - h) + 8 * f(at, x + h) - f(at, x + 2 * h)) /
                    (12 * h));
      P[at] = x;
    }
    return out;
  }
};

// max |a - b| / max(max |b|, floor); infinite for a size mismatch or a non-finite value.
double relError(const std::vector<double> &a, const std::vector<double> &b, double floor = 0) {
  if (a.size() != b.size()) return INFINITY;
  double diff = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
    diff = std::max(diff, std::abs(a[i] - b[i]));
    ref = std::max(ref, std::abs(b[i]));
  }
  if (diff == 0) return 0;
  ref = std::max(ref, floor);
  return ref == 0 ? INFINITY : diff / ref;
}

std::string show(const std::vector<double> &v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += fmt::format("{}{:.17g}", i ? ", " : "", v[i]);
  return s + "]";
}

const char *kindName(CellKind k) {
  switch (k) {
  case CellKind::RnnTanh: return "rnn tanh";
  case CellKind::RnnRelu: return "rnn relu";
  case CellKind::Gru: return "gru";
  case CellKind::Lstm: return "lstm";
  }
  return "?";
}

double sigmoid(double a) { return 1 / (1 + std::exp(-a)); }

// PyTorch's cells written out in plain C++ over row-major arrays: the states h_0 .. h_(T-1),
// [T, H] row-major.
std::vector<double> referenceStates(CellKind k, const std::vector<double> &xs, int64_t T, int64_t d,
                                    int64_t H, const std::vector<double> &Wih,
                                    const std::vector<double> &Whh, const std::vector<double> &bih,
                                    const std::vector<double> &bhh) {
  const int64_t G = gateCount(k);
  std::vector<double> h(static_cast<size_t>(H), 0), c(static_cast<size_t>(H), 0), out;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> gi(static_cast<size_t>(G * H)), gh(static_cast<size_t>(G * H));
    for (int64_t r = 0; r < G * H; ++r) {
      double si = bih[static_cast<size_t>(r)], sh = bhh[static_cast<size_t>(r)];
      for (int64_t j = 0; j < d; ++j) si += Wih[static_cast<size_t>(r * d + j)] * xs[static_cast<size_t>(t * d + j)];
      for (int64_t j = 0; j < H; ++j) sh += Whh[static_cast<size_t>(r * H + j)] * h[static_cast<size_t>(j)];
      gi[static_cast<size_t>(r)] = si;
      gh[static_cast<size_t>(r)] = sh;
    }
    std::vector<double> next(static_cast<size_t>(H));
    for (int64_t j = 0; j < H; ++j) {
      auto I = [&](int64_t gate) { return gi[static_cast<size_t>(gate * H + j)]; };
      auto Hh = [&](int64_t gate) { return gh[static_cast<size_t>(gate * H + j)]; };
      const size_t J = static_cast<size_t>(j);
      switch (k) {
      case CellKind::RnnTanh: next[J] = std::tanh(I(0) + Hh(0)); break;
      case CellKind::RnnRelu: next[J] = std::max(I(0) + Hh(0), 0.0); break;
      case CellKind::Gru: {
        double r = sigmoid(I(0) + Hh(0)), z = sigmoid(I(1) + Hh(1));
        double n = std::tanh(I(2) + r * Hh(2));
        next[J] = (1 - z) * n + z * h[J];
        break;
      }
      case CellKind::Lstm: {
        double i = sigmoid(I(0) + Hh(0)), f = sigmoid(I(1) + Hh(1));
        double gg = std::tanh(I(2) + Hh(2)), o = sigmoid(I(3) + Hh(3));
        c[J] = f * c[J] + i * gg;
        next[J] = o * std::tanh(c[J]);
        break;
      }
      }
    }
    h = next;
    out.insert(out.end(), h.begin(), h.end());
  }
  return out;
}

// The same recurrence built another way: every gate's weights sliced out of the stacked params
// and multiplied separately, an explicit zero initial state (so W_hh 0 is built), GRU's update in
// PyTorch's form n + z (h - n), and the states stacked as a sum of Pads.
NodeId handUnrolled(Graph &g, CellKind k, NodeId xs, int64_t H, const RecurrenceParams &p) {
  const int64_t T = g.shape(xs)[0], d = g.shape(xs)[1];
  auto rows = [&](NodeId W, int64_t gate, int64_t cols) {
    return g.slice(W, {gate * H, 0}, Shape{H, cols});
  };
  auto part = [&](NodeId b, int64_t gate) { return g.slice(b, {gate * H}, Shape{H}); };
  // W_i? x + b_i? and W_h? h + b_h? of one gate.
  auto in = [&](int64_t gate, NodeId x) {
    return g.binary(Op::Add, g.binary(Op::MatMul, rows(p.W_ih, gate, d), x), part(p.b_ih, gate));
  };
  auto hid = [&](int64_t gate, NodeId h) {
    return g.binary(Op::Add, g.binary(Op::MatMul, rows(p.W_hh, gate, H), h), part(p.b_hh, gate));
  };
  NodeId h = g.zeros(Shape{H}), c = g.zeros(Shape{H}), stacked = g.zeros(Shape{T, H});
  for (int64_t t = 0; t < T; ++t) {
    NodeId x = g.reshape(g.slice(xs, {t, 0}, Shape{1, d}), Shape{d});
    switch (k) {
    case CellKind::RnnTanh:
    case CellKind::RnnRelu:
      h = g.unary(k == CellKind::RnnTanh ? Op::Tanh : Op::Relu, g.binary(Op::Add, in(0, x), hid(0, h)));
      break;
    case CellKind::Gru: {
      NodeId r = g.unary(Op::Logistic, g.binary(Op::Add, in(0, x), hid(0, h)));
      NodeId z = g.unary(Op::Logistic, g.binary(Op::Add, in(1, x), hid(1, h)));
      NodeId n = g.unary(Op::Tanh, g.binary(Op::Add, in(2, x), g.binary(Op::Mul, r, hid(2, h))));
      h = g.binary(Op::Add, n, g.binary(Op::Mul, z, g.binary(Op::Sub, h, n)));
      break;
    }
    case CellKind::Lstm: {
      auto pre = [&](int64_t gate) { return g.binary(Op::Add, in(gate, x), hid(gate, h)); };
      NodeId i = g.unary(Op::Logistic, pre(0)), f = g.unary(Op::Logistic, pre(1));
      NodeId gg = g.unary(Op::Tanh, pre(2)), o = g.unary(Op::Logistic, pre(3));
      c = g.binary(Op::Add, g.binary(Op::Mul, f, c), g.binary(Op::Mul, i, gg));
      h = g.binary(Op::Mul, o, g.unary(Op::Tanh, c));
      break;
    }
    }
    stacked = g.binary(Op::Add, stacked, g.pad(g.reshape(h, Shape{1, H}), {t, 0}, Shape{T, H}));
  }
  return stacked;
}

// A loss that reads every state and, separately, the last one: sum(states * R) +
// sum(states[-1] * q), R and q fixed random inputs.
NodeId lossOf(Bench &b, NodeId states, NodeId R, NodeId q) {
  Graph &g = b.g();
  NodeId last = stepOf(g, states, g.shape(states)[0] - 1);
  return g.binary(Op::Add, g.unary(Op::Sum, g.binary(Op::Mul, states, R)),
                  g.unary(Op::Sum, g.binary(Op::Mul, last, q)));
}

// Every param's gradient of `loss`, raw and simplified (the raw ones first).
std::vector<std::vector<double>> gradients(Bench &b, NodeId loss) {
  Expected<Gradient> grad = differentiate(b.g(), loss);
  INFO((grad ? std::string("differentiate: ok") : grad.error().message));
  REQUIRE(grad);
  Simplifier S(b.g());
  std::vector<NodeId> roots, simple;
  for (const Decl &d : b.p.params) {
    NodeId adj = grad->adjoint[static_cast<size_t>(d.node)];
    REQUIRE(adj != kNoNode);
    REQUIRE(b.g().shape(adj) == d.shape);
    roots.push_back(adj);
    simple.push_back(S.simplify(adj));
  }
  roots.insert(roots.end(), simple.begin(), simple.end());
  return b.eval(roots);
}

constexpr CellKind kKinds[] = {CellKind::RnnTanh, CellKind::RnnRelu, CellKind::Gru, CellKind::Lstm};

} // namespace

TEST_CASE("recurrence: param shapes, names and PyTorch's initialization range", "[recurrence]") {
  auto s = recurrenceParamShapes(CellKind::Gru, 28, 128);
  CHECK(s[0] == Shape{384, 28});
  CHECK(s[1] == Shape{384, 128});
  CHECK(s[2] == Shape{384});
  CHECK(s[3] == Shape{384});
  CHECK(recurrenceParamShapes(CellKind::Lstm, 3, 5)[1] == Shape{20, 5});
  CHECK(recurrenceParamShapes(CellKind::RnnRelu, 3, 5)[0] == Shape{5, 3});
  CHECK(kRecurrenceParamNames[0] == "W_ih");
  CHECK(kRecurrenceParamNames[3] == "b_hh");
  Init init = recurrenceInit(16);
  CHECK(init.kind == Init::Uniform);
  CHECK(init.a == -0.25);
  CHECK(init.b == 0.25);
}

TEST_CASE("recurrence: stepOf and stackRows are each other's inverse", "[recurrence]") {
  Bench b(7);
  for (int64_t T : {1, 2, 3, 5, 8}) {
    NodeId xs = b.input(Shape{T, 2, 3});
    std::vector<NodeId> rows;
    for (int64_t t = 0; t < T; ++t) rows.push_back(stepOf(b.g(), xs, t));
    CHECK(b.g().shape(rows.back()) == Shape{2, 3});
    NodeId back = stackRows(b.g(), rows);
    REQUIRE(b.g().shape(back) == Shape{T, 2, 3});
    auto v = b.eval({xs, back});
    CHECK(v[0] == v[1]);
  }
}

TEST_CASE("recurrence: rnn, gru and lstm states match PyTorch's cell equations", "[recurrence]") {
  const int64_t T = 5, d = 3, H = 4;
  uint64_t seed = 40;
  for (CellKind k : kKinds) {
    INFO(kindName(k));
    Bench b(++seed);
    NodeId xs = b.input(Shape{T, d});
    auto shapes = recurrenceParamShapes(k, d, H);
    RecurrenceParams p{b.param(shapes[0]), b.param(shapes[1]), b.param(shapes[2]), b.param(shapes[3])};
    Unrolled u = unrollRecurrence(b.g(), k, xs, H, p);
    REQUIRE(b.g().shape(u.states) == Shape{T, H});
    REQUIRE(u.h.size() == static_cast<size_t>(T));
    auto slice = [&](size_t k2) {
      const Decl &dd = b.p.params[k2];
      return std::vector<double>(b.params.begin() + dd.offset, b.params.begin() + dd.offset + dd.shape.numel());
    };
    std::vector<double> ref = referenceStates(k, b.inputs, T, d, H, slice(0), slice(1), slice(2), slice(3));
    std::vector<double> got = b.eval(u.states);
    INFO("reference: " << show(ref));
    INFO("unrolled:  " << show(got));
    CHECK(relError(got, ref) <= 1e-14);
    // h[t] is row t of the stacked states, and the per-step values are named in step order.
    auto last = b.eval(u.h.back());
    CHECK(std::equal(last.begin(), last.end(), got.end() - H));
    const size_t perStep = k == CellKind::Gru ? 5 : k == CellKind::Lstm ? 7 : 2; // x, gates, c, h
    REQUIRE(u.values.size() == perStep * T);
    for (size_t i = 0; i < u.values.size(); ++i) CHECK(u.values[i].t == static_cast<int64_t>(i / perStep));
    CHECK(u.values.front().name == "x");
    CHECK(u.values.back().name == "h");
    CHECK(u.values.back().node == u.h.back());
  }
}

TEST_CASE("recurrence: gradients of rnn, gru and lstm match finite differences and a "
          "hand-unrolled graph",
          "[recurrence]") {
  const int64_t T = 4, d = 3, H = 3;
  uint64_t seed = 70;
  for (CellKind k : kKinds) {
    for (bool xsFromParam : {false, true}) {
      INFO(kindName(k) << (xsFromParam ? ", the sequence a param" : ", the sequence an input"));
      Bench b(++seed);
      NodeId xs = xsFromParam ? b.param(Shape{T, d}, -1, 1) : b.input(Shape{T, d});
      auto shapes = recurrenceParamShapes(k, d, H);
      RecurrenceParams p{b.param(shapes[0]), b.param(shapes[1]), b.param(shapes[2]), b.param(shapes[3])};
      NodeId R = b.input(Shape{T, H}), q = b.input(Shape{H});
      NodeId loss = lossOf(b, unrollRecurrence(b.g(), k, xs, H, p).states, R, q);
      NodeId handLoss = lossOf(b, handUnrolled(b.g(), k, xs, H, p), R, q);
      auto losses = b.eval({loss, handLoss});
      CHECK(relError(losses[0], losses[1]) <= 1e-12);

      auto grads = gradients(b, loss);
      auto handGrads = gradients(b, handLoss);
      const size_t n = b.p.params.size();
      for (size_t i = 0; i < n; ++i) {
        INFO("param " << i << " " << b.p.params[i].shape.str());
        std::vector<double> fd = b.finiteDifference(loss, i);
        INFO("finite differences: " << show(fd));
        INFO("raw gradient:       " << show(grads[i]));
        INFO("simplified:         " << show(grads[n + i]));
        INFO("hand-unrolled:      " << show(handGrads[n + i]));
        CHECK(relError(grads[i], fd, 1e-4) <= 1e-8);
        CHECK(relError(grads[n + i], fd, 1e-4) <= 1e-8);
        CHECK(relError(grads[n + i], handGrads[n + i], 1e-4) <= 1e-12);
        CHECK(relError(grads[i], handGrads[i], 1e-4) <= 1e-12);
      }
    }
  }
}

TEST_CASE("recurrence: scan with an rnn cell is rnn; its initial state and cell params get "
          "their gradients",
          "[recurrence]") {
  const int64_t T = 4, d = 3, H = 3;
  Bench b(90);
  NodeId xs = b.input(Shape{T, d});
  auto shapes = recurrenceParamShapes(CellKind::RnnTanh, d, H);
  RecurrenceParams p{b.param(shapes[0]), b.param(shapes[1]), b.param(shapes[2]), b.param(shapes[3])};
  NodeId h0 = b.param(Shape{H});
  Graph &g = b.g();
  auto cell = [&](NodeId h, NodeId x, int64_t) {
    NodeId a = g.binary(Op::Add, g.binary(Op::MatMul, p.W_ih, x), p.b_ih);
    return g.unary(Op::Tanh, g.binary(Op::Add, a, g.binary(Op::Add, g.binary(Op::MatMul, p.W_hh, h), p.b_hh)));
  };
  Unrolled fromZero = unrollScan(g, g.zeros(Shape{H}), xs, cell);
  Unrolled rnn = unrollRecurrence(g, CellKind::RnnTanh, xs, H, p);
  REQUIRE(g.shape(fromZero.states) == Shape{T, H});
  auto v = b.eval({fromZero.states, rnn.states});
  CHECK(relError(v[0], v[1]) <= 1e-15);

  // From a learned initial state: every param, h0 included, against finite differences.
  Unrolled fromH0 = unrollScan(g, h0, xs, cell);
  NodeId loss = lossOf(b, fromH0.states, b.input(Shape{T, H}), b.input(Shape{H}));
  auto grads = gradients(b, loss);
  const size_t n = b.p.params.size();
  for (size_t i = 0; i < n; ++i) {
    INFO("param " << i);
    std::vector<double> fd = b.finiteDifference(loss, i);
    CHECK(relError(grads[i], fd, 1e-4) <= 1e-8);
    CHECK(relError(grads[n + i], fd, 1e-4) <= 1e-8);
  }
}

TEST_CASE("recurrence: scan stacks a state of rank 2 and differentiates through it",
          "[recurrence]") {
  const int64_t T = 5;
  Bench b(91);
  NodeId xs = b.input(Shape{T, 3});
  NodeId P = b.param(Shape{2, 3}), s0 = b.param(Shape{2, 3});
  Graph &g = b.g();
  // s' = tanh(s * x + P), x broadcast over the state's rows.
  Unrolled u = unrollScan(g, s0, xs, [&](NodeId s, NodeId x, int64_t) {
    return g.unary(Op::Tanh, g.binary(Op::Add, g.binary(Op::Mul, s, x), P));
  });
  REQUIRE(g.shape(u.states) == Shape{T, 2, 3});
  // The forward values by hand.
  auto v = b.eval(u.states);
  std::vector<double> s(b.params.begin() + 6, b.params.begin() + 12), ref;
  for (int64_t t = 0; t < T; ++t) {
    for (size_t e = 0; e < 6; ++e) s[e] = std::tanh(s[e] * b.inputs[static_cast<size_t>(t * 3) + e % 3] + b.params[e]);
    ref.insert(ref.end(), s.begin(), s.end());
  }
  CHECK(relError(v, ref) <= 1e-15);
  NodeId R = b.input(Shape{T, 2, 3});
  NodeId loss = g.unary(Op::Sum, g.binary(Op::Mul, u.states, R));
  auto grads = gradients(b, loss);
  for (size_t i = 0; i < 2; ++i) {
    std::vector<double> fd = b.finiteDifference(loss, i);
    CHECK(relError(grads[i], fd, 1e-4) <= 1e-8);
    CHECK(relError(grads[2 + i], fd, 1e-4) <= 1e-8);
  }
}

// --- the language ------------------------------------------------------------------------------

namespace {

Program compiled(const std::string &text) {
  std::string diags;
  std::optional<Program> p = compileSource(SourceFile{"t.nn", text}, diags);
  INFO(text << "\n" << diags);
  REQUIRE(p.has_value());
  CHECK(diags.empty());
  return std::move(*p);
}

// The loss (mean over the rows) and the flat gradient of a program in f64 by the interpreter.
struct Evaluated {
  double loss;
  std::vector<double> grads;
};
Evaluated evaluate(Program &p, const std::vector<double> &params, const std::vector<double> &inputs,
                   const std::vector<double> &targets, int64_t rows) {
  Expected<Derivation> d = derive(p);
  REQUIRE(d);
  LossAndGradient lg = interpretLossAndGradient(p, *d, DType::F64, params, inputs.data(), targets.data(), rows);
  return {lg.loss, lg.grads};
}

std::vector<double> uniformDraws(Rng &rng, int64_t n, double lo, double hi) {
  std::vector<double> v(static_cast<size_t>(n));
  for (double &x : v) x = rng.uniform(lo, hi);
  return v;
}

// The recurrence written out step by step in the language, with plain param names declared in
// the built-in's order: each step reads xs[t], slices the stacked gates, and the states are
// joined by concat. PyTorch's equations, as a learner would write them by hand.
std::string handWritten(CellKind k, int64_t T, int64_t d, int64_t H, const std::string &loss) {
  const int64_t G = gateCount(k);
  std::string s = fmt::format("input  xs[{T}, {d}]\ntarget t[{H}]\nparam W_ih[{GH}, {d}]\n"
                              "param W_hh[{GH}, {H}]\nparam b_ih[{GH}]\nparam b_hh[{GH}]\n",
                              fmt::arg("T", T), fmt::arg("d", d), fmt::arg("H", H), fmt::arg("GH", G * H));
  auto gate = [&](const std::string &v, int64_t j) { return fmt::format("{}[{}:{}]", v, j * H, (j + 1) * H); };
  std::string rows;
  for (int64_t t = 0; t < T; ++t) {
    s += fmt::format("gi{0} = W_ih @ xs[{0}] + b_ih\n", t);
    s += t == 0 ? "gh0 = b_hh\n" : fmt::format("gh{} = W_hh @ h{} + b_hh\n", t, t - 1);
    const std::string gi = fmt::format("gi{}", t), gh = fmt::format("gh{}", t);
    switch (k) {
    case CellKind::RnnTanh:
    case CellKind::RnnRelu:
      s += fmt::format("h{} = {}({} + {})\n", t, k == CellKind::RnnTanh ? "tanh" : "relu", gi, gh);
      break;
    case CellKind::Gru:
      s += fmt::format("r{} = logistic({} + {})\n", t, gate(gi, 0), gate(gh, 0));
      s += fmt::format("z{} = logistic({} + {})\n", t, gate(gi, 1), gate(gh, 1));
      s += fmt::format("n{0} = tanh({1} + r{0} * {2})\n", t, gate(gi, 2), gate(gh, 2));
      s += t == 0 ? "h0 = (1 - z0) * n0\n" : fmt::format("h{0} = (1 - z{0}) * n{0} + z{0} * h{1}\n", t, t - 1);
      break;
    case CellKind::Lstm:
      s += fmt::format("a{} = {} + {}\n", t, gi, gh);
      s += fmt::format("i{0} = logistic({1})\nf{0} = logistic({2})\ng{0} = tanh({3})\no{0} = logistic({4})\n", t,
                       gate("a" + std::to_string(t), 0), gate("a" + std::to_string(t), 1),
                       gate("a" + std::to_string(t), 2), gate("a" + std::to_string(t), 3));
      s += t == 0 ? "c0 = i0 * g0\n" : fmt::format("c{0} = f{0} * c{1} + i{0} * g{0}\n", t, t - 1);
      s += fmt::format("h{0} = o{0} * tanh(c{0})\n", t);
      break;
    }
    rows += fmt::format("{}reshape(h{}, [1, {}])", t ? ", " : "", t, H);
  }
  s += fmt::format("hs = concat({})\n", rows);
  return s + loss;
}

const char *formOf(CellKind k) {
  switch (k) {
  case CellKind::RnnTanh: return "rnn(xs, {})";
  case CellKind::RnnRelu: return "rnn(xs, {}, relu)";
  case CellKind::Gru: return "gru(xs, {})";
  case CellKind::Lstm: return "lstm(xs, {})";
  }
  return "";
}

const char *kSeqLoss = "loss E = sum(t * hs[-1]) + 0.1 * sum(hs ^ 2) + sum(hs[1, 0:2])\n";

} // namespace

TEST_CASE("recurrence: rnn, gru and lstm in the language equal the recurrence written out by "
          "hand, and their gradients match finite differences",
          "[recurrence]") {
  const int64_t T = 4, d = 3, H = 3, rows = 3;
  uint64_t seed = 500;
  for (CellKind k : kKinds) {
    INFO(kindName(k));
    const std::string builtinSrc =
        fmt::format("input  xs[{}, {}]\ntarget t[{}]\nhs = {}\n{}", T, d, H,
                    fmt::format(fmt::runtime(formOf(k)), H), kSeqLoss);
    Program builtin = compiled(builtinSrc);
    Program hand = compiled(handWritten(k, T, d, H, kSeqLoss));
    // The four params, in PyTorch's order, shapes and initialization.
    const int64_t GH = gateCount(k) * H;
    REQUIRE(builtin.params.size() == 4);
    const std::vector<std::pair<std::string, Shape>> want = {
        {"hs.W_ih", Shape{GH, d}}, {"hs.W_hh", Shape{GH, H}}, {"hs.b_ih", Shape{GH}}, {"hs.b_hh", Shape{GH}}};
    for (size_t i = 0; i < 4; ++i) {
      CHECK(builtin.params[i].name == want[i].first);
      CHECK(builtin.params[i].shape == want[i].second);
      CHECK(builtin.params[i].init.kind == Init::Uniform);
      CHECK(builtin.params[i].init.b == Approx(1 / std::sqrt(double(H))));
      CHECK(builtin.params[i].shape == hand.params[i].shape);
    }
    CHECK(builtin.graph.shape(builtin.values[builtin.values.size() - 2].node) == Shape{T, H});
    // One recurrence with its per-step values; the state is named h, the last value of a step.
    REQUIRE(builtin.recurrences.size() == 1);
    const RecurrenceSteps &rs = builtin.recurrences[0];
    CHECK(rs.name == "hs");
    CHECK(rs.steps == T);
    CHECK(rs.values.back().name == "h");
    CHECK(rs.values.back().t == T - 1);
    // ... and the same as named values FAMILY[t] before the statement's value.
    CHECK(builtin.values[0].name == "hs.x[0]");
    CHECK(builtin.values[rs.values.size() - 1].name == fmt::format("hs.h[{}]", T - 1));
    CHECK(builtin.values[rs.values.size()].name == "hs");

    Rng rng(++seed);
    std::vector<double> P = uniformDraws(rng, builtin.paramCount(), -0.7, 0.7);
    std::vector<double> X = uniformDraws(rng, rows * builtin.inputCount(), -1.5, 1.5);
    std::vector<double> Tg = uniformDraws(rng, rows * builtin.targetCount(), 0, 1);
    Evaluated a = evaluate(builtin, P, X, Tg, rows), b = evaluate(hand, P, X, Tg, rows);
    CHECK(relError({a.loss}, {b.loss}) <= 1e-12);
    CHECK(relError(a.grads, b.grads) <= 1e-12);
    // Central differences of the mean loss (fourth order) for every param element; a small step,
    // so that relu's kink is rarely inside it.
    std::vector<double> fd;
    const double h = 1e-4;
    Expected<Derivation> dv = derive(builtin);
    REQUIRE(dv);
    for (size_t i = 0; i < P.size(); ++i) {
      auto f = [&](double x) {
        std::vector<double> Q = P;
        Q[i] = x;
        return interpretLoss(builtin, dv->loss, Q, X.data(), Tg.data(), rows);
      };
      fd.push_back((f(P[i] - 2 * h) - 8 * f(P[i] - h) + 8 * f(P[i] + h) - f(P[i] + 2 * h)) / (12 * h));
    }
    INFO("gradient:           " << show(a.grads));
    INFO("finite differences: " << show(fd));
    CHECK(relError(a.grads, fd, 1e-4) <= 1e-8);
  }
}

TEST_CASE("recurrence: scan of a layer cell is rnn, with one instance of the cell's params",
          "[recurrence]") {
  const std::string cell = "layer cell(h, x) {\n  param W_ih[4, 3]\n  param W_hh[4, 4]\n  param b_ih[4]\n"
                           "  param b_hh[4]\n  a = W_ih @ x + b_ih\n  return tanh(a + W_hh @ h + b_hh)\n}\n";
  const std::string head = "input  xs[5, 3]\ntarget t[4]\n";
  const std::string loss = "loss E = sum(t * hs[-1]) + 0.1 * sum(hs ^ 2)\n";
  Program scanned = compiled(cell + head + "hs = scan(cell, zeros([4]), xs)\n" + loss);
  Program rnn = compiled(head + "hs = rnn(xs, 4)\n" + loss);
  // The same names in the same order: the cell's params, once, under the statement's name.
  REQUIRE(scanned.params.size() == 4);
  for (size_t i = 0; i < 4; ++i) {
    CHECK(scanned.params[i].name == rnn.params[i].name);
    CHECK(scanned.params[i].shape == rnn.params[i].shape);
  }
  // The cell's value `a` is a per-step value hs.a[t]: x[t], a[t], h[t] a step, then hs and E.
  REQUIRE(scanned.recurrences.size() == 1);
  const RecurrenceSteps &rs = scanned.recurrences[0];
  REQUIRE(rs.values.size() == 15);
  CHECK(rs.values[0].name == "x");
  CHECK(rs.values[1].name == "a");
  CHECK(rs.values[2].name == "h");
  CHECK(rs.values[14].t == 4);
  REQUIRE(scanned.values.size() == 17);
  CHECK(scanned.values[1].name == "hs.a[0]");
  CHECK(scanned.values[14].name == "hs.h[4]");
  CHECK(scanned.values[15].name == "hs");
  Rng rng(77);
  std::vector<double> P = uniformDraws(rng, rnn.paramCount(), -0.7, 0.7);
  std::vector<double> X = uniformDraws(rng, 2 * rnn.inputCount(), -1.5, 1.5);
  std::vector<double> Tg = uniformDraws(rng, 2 * rnn.targetCount(), 0, 1);
  Evaluated a = evaluate(scanned, P, X, Tg, 2), b = evaluate(rnn, P, X, Tg, 2);
  CHECK(relError({a.loss}, {b.loss}) <= 1e-12);
  CHECK(relError(a.grads, b.grads) <= 1e-12);
}

TEST_CASE("recurrence: scan with nested calls, a learned initial state and a matrix state",
          "[recurrence]") {
  // The cell's dense nests under the scan's name (hs.z.W); the initial state h0 is a param; the
  // state is [2, 3]; the stacked value is [T, 2, 3].
  const std::string src =
      "layer cell(s, x) {\n  param U[2, 3]\n  z = dense(flatten(s * U) + x, 6, tanh)\n"
      "  return reshape(z, [2, 3])\n}\n"
      "input  xs[4, 6]\ntarget t[2, 3]\nparam h0[2, 3]\nhs = scan(cell, h0, xs)\n"
      "loss E = sum(t * hs[-1]) + 0.2 * sum(hs ^ 2)\n";
  Program p = compiled(src);
  std::vector<std::string> names;
  for (auto &d : p.params) names.push_back(d.name);
  CHECK(names == std::vector<std::string>{"h0", "hs.U", "hs.z.W", "hs.z.b"});
  CHECK(p.graph.shape(p.values[p.values.size() - 2].node) == Shape{4, 2, 3}); // hs, before E
  REQUIRE(p.recurrences.size() == 1);
  CHECK(p.recurrences[0].values[1].name == "z");
  Rng rng(78);
  std::vector<double> P = uniformDraws(rng, p.paramCount(), -0.8, 0.8);
  std::vector<double> X = uniformDraws(rng, 2 * p.inputCount(), -1, 1);
  std::vector<double> Tg = uniformDraws(rng, 2 * p.targetCount(), 0, 1);
  Evaluated a = evaluate(p, P, X, Tg, 2);
  Expected<Derivation> dv = derive(p);
  REQUIRE(dv);
  std::vector<double> fd;
  const double h = 1e-3;
  for (size_t i = 0; i < P.size(); ++i) {
    auto f = [&](double x) {
      std::vector<double> Q = P;
      Q[i] = x;
      return interpretLoss(p, dv->loss, Q, X.data(), Tg.data(), 2);
    };
    fd.push_back((f(P[i] - 2 * h) - 8 * f(P[i] - h) + 8 * f(P[i] + h) - f(P[i] + 2 * h)) / (12 * h));
  }
  CHECK(relError(a.grads, fd, 1e-4) <= 1e-8);
}

TEST_CASE("recurrence: a recurrence inside a layer is named after the call", "[recurrence]") {
  Program p = compiled("layer enc(xs) {\n  hs = gru(xs, 4)\n  return hs[-1]\n}\n"
                       "input xs[3, 2]\ntarget t[4]\ne = enc(xs)\nloss E = sum((e - t) ^ 2)\n");
  REQUIRE(p.params.size() == 4);
  CHECK(p.params[0].name == "e.hs.W_ih");
  CHECK(p.params[3].name == "e.hs.b_hh");
  REQUIRE(p.recurrences.size() == 1);
  CHECK(p.recurrences[0].name == "e.hs");
}

TEST_CASE("recurrence: errors name the place and say what is expected", "[recurrence]") {
  struct Case {
    std::string src, place, words;
  };
  const std::string head = "input xs[5, 3]\ninput v[3]\ntarget t[4]\n";
  const std::string cell = "layer c(h, x) {\n  return tanh(h + x)\n}\n";
  const std::vector<Case> cases = {
      {head + "hs = gru(v, 4)\n", "t.nn:4:10", "must be a matrix [T, d]"},
      {head + "hs = gru(xs, 0)\n", "t.nn:4:14", "hidden size"},
      {head + "hs = rnn(xs, 4, sigmoid)\n", "t.nn:4:17", "tanh (the default) or relu"},
      {head + "hs = lstm(xs)\n", "t.nn:4:6", "takes 2 arguments"},
      {head + "E = sum(gru(xs, 4))\n", "t.nn:4:9", "whole right-hand side"},
      {head + "hs = scan(tanh, zeros([3]), xs)\n", "t.nn:4:11", "must be the name of a layer"},
      {cell + head + "hs = scan(c, zeros([4]), xs)\n", "t.nn:2:17", "cannot broadcast"},
      {"layer c(h, x) {\n  return sum(h) + x[0:2]\n}\n" + head + "hs = scan(c, zeros([3]), xs)\n",
       "t.nn:7:11", "state's shape [3]"},
      {"layer c(h) {\n  return h\n}\n" + head + "hs = scan(c, zeros([3]), xs)\n", "t.nn:7:11",
       "two value arguments"},
      {cell + head + "hs = scan(c, zeros([3]), 2)\n", "t.nn:7:26", "first (time) axis"},
      {"input xs[15000, 2]\nh1 = rnn(xs, 2)\nh2 = gru(xs, 2)\n", "t.nn:3:10", "more than 20000 steps in all"},
  };
  for (const Case &c : cases) {
    std::string diags;
    std::optional<Program> p = compileSource(SourceFile{"t.nn", c.src}, diags);
    INFO(c.src << "\n" << diags);
    CHECK_FALSE(p.has_value());
    CHECK(diags.find(c.place + ": error:") != std::string::npos);
    CHECK(diags.find(c.words) != std::string::npos);
  }
}

TEST_CASE("recurrence: an unrolled gru copies each weight transposed once a function, not once a step",
          "[recurrence]") {
  // The products x_t W_ihᵀ and h_{t-1} W_hhᵀ of every step read their weight through the same
  // transposed copy (LowerToLoops formGemms); the results are checked by the conformance case
  // gru_sequence and the [jit] tests, here only that the copies are not repeated.
  const int64_t T = 6, d = 5, H = 16;
  Program p = compiled(fmt::format("input  xs[{}, {}]\ntarget t[{}]\nhs = gru(xs, {})\noutput hs\n{}", T, d, H, H, kSeqLoss));
  Expected<Derivation> dv = derive(p);
  REQUIRE(dv);
  loops::Program lp = lowerToLoops(p, dv->outputs, &*dv);
  for (const loops::Function *f : {&lp.forward, &lp.gradient}) {
    INFO(f->name);
    std::vector<std::string> copied;
    for (const loops::Kernel &k : f->kernels)
      if (k.comment.find("so that the product below reads rows") != std::string::npos)
        copied.push_back(lp.buffers[static_cast<size_t>(k.out)].name);
    std::sort(copied.begin(), copied.end());
    INFO(fmt::format("{}", fmt::join(copied, ", ")));
    CHECK(std::adjacent_find(copied.begin(), copied.end()) == copied.end());
    CHECK(!f->kernels.empty());
    {
      CHECK(std::count(copied.begin(), copied.end(), "hs.W_ihᵀ") == 1);
      CHECK(std::count(copied.begin(), copied.end(), "hs.W_hhᵀ") == 1);
    }
  }
}

TEST_CASE("recurrence: the JIT emits a repeated step's kernels once and calls them every step, with "
          "the interpreter's results",
          "[recurrence][jit]") {
  // EmitLLVM's shared kernels: the T copies of a step's kernel differ only in their buffers and the
  // offsets into them, which become the arguments of one function per kernel shape.
  const int64_t T = 6, d = 5, H = 16;
  for (CellKind kind : kKinds) {
    INFO(kindName(kind));
    const std::string src = fmt::format("input  xs[{}, {}]\ntarget t[{}]\nhs = {}\noutput hs\n{}", T, d, H,
                                         fmt::format(fmt::runtime(formOf(kind)), H), kSeqLoss);
    Program p = compiled(src);
    Expected<Derivation> dv = derive(p);
    REQUIRE(dv);
    loops::Program lp = lowerToLoops(p, dv->outputs, &*dv);
    Expected<std::string> ir = optimizedIR(lp, JitOptions{true, 2, 1});
    REQUIRE(ir);
    size_t calls = 0, shapes = 0;
    for (size_t at = ir->find("call void @nabla.kernel"); at != std::string::npos;
         at = ir->find("call void @nabla.kernel", at + 1))
      ++calls;
    for (size_t at = ir->find("define internal void @nabla.kernel"); at != std::string::npos;
         at = ir->find("define internal void @nabla.kernel", at + 1))
      ++shapes;
    CHECK(shapes > 0);
    CHECK(calls >= 2 * shapes); // every shape is called at least twice
    // The same loss, gradient and outputs as the interpreter, in f64, for a small batch (dot
    // products) and a large one (the tiled products).
    for (int64_t n : {3, 17}) {
      auto jit = Model::compileString(src, "t.nn", CompileOptions{DType::F64, 2, Engine::Jit});
      auto ref = Model::compileString(src, "t.nn", CompileOptions{DType::F64, 2, Engine::Interp});
      REQUIRE(jit);
      REQUIRE(ref);
      Rng rng(static_cast<uint64_t>(700 + n));
      std::vector<double> P = uniformDraws(rng, p.paramCount(), -0.7, 0.7);
      std::vector<double> X = uniformDraws(rng, n * p.inputCount(), -1.5, 1.5);
      std::vector<double> Tg = uniformDraws(rng, n * p.targetCount(), 0, 1);
      std::vector<double> ga, gb;
      double la = jit->lossAndGradient(P, X.data(), Tg.data(), n, ga);
      double lb = ref->lossAndGradient(P, X.data(), Tg.data(), n, gb);
      CHECK(relError({la}, {lb}) <= 1e-12);
      CHECK(relError(ga, gb) <= 1e-12);
      CHECK(relError(jit->forward(P, X.data(), n), ref->forward(P, X.data(), n)) <= 1e-12);
    }
  }
}
