// Shared by the op tests (test_autodiff.cpp, test_ops.cpp): a hand-built program whose leaves are
// declared as Program decls, evaluated by the interpreter in f64, and gradients checked against
// fourth-order central finite differences.
#pragma once
#include <catch2/catch.hpp>

#include <stdexcept> // before Program.h: Graph.h uses std::runtime_error

#include "Autodiff.h"
#include "Interpreter.h"
#include "Program.h"
#include "Random.h"
#include "Simplify.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace nabla::testing {

// A hand-built program: leaves declared as Program decls (so the interpreter can read them), with
// their values.
struct Bench {
  Program p;
  std::vector<double> params, inputs, targets;
  Rng rng;

  explicit Bench(uint64_t seed = 1) : rng(seed) {}
  Graph &g() { return p.graph; }

  // Values with magnitude in [lo, hi], of random sign when `signed_`.
  std::vector<double> draw(const Shape &s, double lo, double hi, bool signed_) {
    std::vector<double> v(static_cast<size_t>(s.numel()));
    for (double &x : v) {
      x = rng.uniform(lo, hi);
      if (signed_ && rng.uniform() < 0.5) x = -x;
    }
    return v;
  }
  NodeId leaf(Op op, Shape s, const std::vector<double> &values) { // s by value: it may be a graph node's, which make() moves
    auto &decls = op == Op::Param ? p.params : op == Op::Input ? p.inputs : p.targets;
    auto &flat = op == Op::Param ? params : op == Op::Input ? inputs : targets;
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
  NodeId param(const Shape &s, double lo, double hi, bool signed_) {
    return leaf(Op::Param, s, draw(s, lo, hi, signed_));
  }
  NodeId param(const Shape &s, const std::vector<double> &v) { return leaf(Op::Param, s, v); }
  NodeId input(const Shape &s, double lo, double hi, bool signed_) {
    return leaf(Op::Input, s, draw(s, lo, hi, signed_));
  }

  // Values of `roots` for the given params.
  std::vector<std::vector<double>> eval(const std::vector<NodeId> &roots,
                                        const std::vector<double> &P) {
    Interpreter<double> it(p, p.graph, roots);
    it.run(P.data(), inputs.data(), targets.data());
    std::vector<std::vector<double>> out;
    for (NodeId r : roots) out.push_back(it.value(r));
    return out;
  }
  std::vector<double> eval(NodeId root) { return eval({root}, params)[0]; }
  // The same in f32 (params and inputs rounded to float).
  std::vector<double> eval32(NodeId root) {
    Interpreter<float> it(p, p.graph, {root});
    std::vector<float> P(params.begin(), params.end()), X(inputs.begin(), inputs.end()),
        T(targets.begin(), targets.end());
    it.run(P.data(), X.data(), T.data());
    return std::vector<double>(it.value(root).begin(), it.value(root).end());
  }

  // d(scalar)/d(param decl k), by the fourth-order central difference
  // f'(x) ~ (f(x-2h) - 8 f(x-h) + 8 f(x+h) - f(x+2h)) / 12h, in f64.
  std::vector<double> finiteDifference(NodeId scalar, size_t k, double h = 1e-3) {
    Interpreter<double> it(p, p.graph, {scalar});
    const Decl &d = p.params[k];
    std::vector<double> P = params, out;
    auto f = [&](size_t at, double x) {
      P[at] = x;
      it.run(P.data(), inputs.data(), targets.data());
      return it.value(scalar)[0];
    };
    for (int64_t i = 0; i < d.shape.numel(); ++i) {
      size_t at = static_cast<size_t>(d.offset + i);
      double x = params[at];
      double fd = (f(at, x - 2 * h) - 8 * f(at, x - h) + 8 * f(at, x + h) - f(at, x + 2 * h)) / (12 * h);
      P[at] = x;
      out.push_back(fd);
    }
    return out;
  }
};

// max |a - b| / max(max |b|, floor) (0 when equal; infinite for a size mismatch or NaN). The floor
// is for gradients that are exactly zero, where finite differences leave rounding noise
// (~1e-14): a floor of 1e-4 with tolerance 1e-8 accepts an absolute 1e-12 there.
inline double relError(const std::vector<double> &a, const std::vector<double> &b, double floor = 0) {
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

inline std::string show(const std::vector<double> &v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += fmt::format("{}{:.17g}", i ? ", " : "", v[i]);
  return s + "]";
}

const Shape kScalar{};

// sum(value * R) for a fixed random R of value's shape (an input: not differentiated), so that the
// adjoint that reaches `value` is R rather than all ones.
inline NodeId weightedLoss(Bench &b, NodeId value) {
  NodeId R = b.input(b.g().shape(value), 0.5, 1.5, true);
  return b.g().unary(Op::Sum, b.g().binary(Op::Mul, value, R));
}

// The gradient of `loss` with respect to every param of the bench, raw and simplified, each
// against finite differences.
inline void checkGradients(Bench &b, NodeId loss, double tolerance) {
  Expected<Gradient> grad = differentiate(b.g(), loss);
  INFO((grad ? std::string("differentiate: ok") : grad.error().message));
  REQUIRE(grad);
  Simplifier S(b.g());
  for (size_t k = 0; k < b.p.params.size(); ++k) {
    const Decl &d = b.p.params[k];
    INFO("param " << k << " " << d.shape.str());
    REQUIRE(static_cast<size_t>(d.node) < grad->adjoint.size());
    NodeId adj = grad->adjoint[static_cast<size_t>(d.node)];
    REQUIRE(adj != kNoNode); // every param of these graphs reaches the loss
    REQUIRE(b.g().shape(adj) == d.shape);
    NodeId simple = S.simplify(adj);
    REQUIRE(b.g().shape(simple) == d.shape);
    std::vector<double> fd = b.finiteDifference(loss, k);
    auto values = b.eval({adj, simple}, b.params);
    INFO("finite differences: " << show(fd));
    INFO("raw gradient:       " << show(values[0]));
    INFO("simplified:         " << show(values[1]));
    CHECK(relError(values[0], fd, 1e-4) <= tolerance);
    CHECK(relError(values[1], fd, 1e-4) <= tolerance);
  }
  // Leaves that are not params (inputs, targets, constants) receive no adjoint.
  for (auto *decls : {&b.p.inputs, &b.p.targets})
    for (const Decl &d : *decls) CHECK(grad->adjoint[static_cast<size_t>(d.node)] == kNoNode);
}

} // namespace nabla::testing
