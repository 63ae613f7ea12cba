// The derivative printer: renders simplified gradient nodes as readable formulas, substituting
// source names for forward values and dE/dNAME for the adjoints already printed.
//
// Notation (Unicode / --ascii where they differ): the source's own forms where an op has one
// (x[1:3, :], x[2], flatten(x), reshape(x, [2, 3]), concat(a, b, axis=1), max(x, 1),
// maximum(a, b), leaky_relu(x, slope=0.2), conv2d(x, K, stride=2, padding=1), maxpool2d(x, 2));
// A B / A @ B, Aᵀ / transpose(A), a ⊗ b / outer(a, b); and for the ops that only gradients use:
//   [a ≥ b] / [a >= b]       1 where a >= b, else 0 (Iverson's bracket: maximum's derivative)
//   argmax_mask(x, k)        1 at the first maximum of each slice along k (max's derivative)
//   pad(g, [4, 3], at=[1, 0])  zeros of shape [4, 3] with g placed at index [1, 0] (a slice's)
//   conv_transpose2d(g, K, stride=S, padding=P, output_padding=[a, b])  conv2d's input gradient,
//                            exactly PyTorch's F.conv_transpose2d
//   correlate2d(x, g, stride=S, padding=P)  conv2d's kernel gradient, the correlation
//                            dK[f,c,i,j] = Σ_oh,ow g[f,oh,ow] x[c, oh·S + i − P, ow·S + j − P]
//   maxunpool2d(g, x, k)     each g at the first maximum of its window of x (overlaps add)
//   avgunpool2d(g, k, to=[H, W])  g / k² spread over each window
//   gelu'(u)                 Φ(u) + u φ(u); 1/√2, 1/√(2π), 2/√π by name
//   Σ_{t=1..T} TERM          the per-step terms of a recurrence (values named FAMILY[t])
#include "GradPrinter.h"

#include "Autodiff.h"
#include "ProgramPrinter.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numbers>
#include <unordered_map>
#include <unordered_set>

namespace nabla {

namespace {

// The constants of the normal distribution and of erf that the derivative rules of gelu and erf
// use, by name: 1/√2 rather than 0.7071067811865476.
std::string namedConstant(double v, bool ascii) {
  struct Named {
    double value;
    const char *unicode, *ascii;
  };
  static const Named kNamed[] = {
      {0.70710678118654752440, "1/√2", "1/sqrt(2)"},
      {std::numbers::inv_sqrtpi * 0.70710678118654752440, "1/√(2π)", "1/sqrt(2*pi)"},
      {2 * std::numbers::inv_sqrtpi, "2/√π", "2/sqrt(pi)"},
  };
  for (const Named &n : kNamed)
    if (v == n.value) return ascii ? n.ascii : n.unicode;
  // Square roots the derivative rules fold into constants (d/dx sqrt(3 x) = sqrt(3) / (2 sqrt(x)),
  // a layer norm over 3 values): sqrt(3) and 1/sqrt(3) rather than 1.7320508075688772, spelled as
  // the language writes them so that the formula stays a program.
  const double a = std::abs(v);
  const char *sign = v < 0 ? "-" : "";
  for (int k = 2; k <= 1000; ++k) {
    const double r = std::sqrt(static_cast<double>(k));
    if (r == std::round(r)) continue;
    if (a == r) return fmt::format("{}sqrt({})", sign, k);
    if (a == 1 / r) return fmt::format("{}1 / sqrt({})", sign, k);
  }
  return "";
}

// Constants as a learner writes them: 2/3 rather than 0.6666666666666666.
std::string formatConstant(double v) {
  std::string decimal = formatNumber(v);
  if (decimal.size() <= 8) return decimal;
  // Folded constants such as 0.1 + 0.2 show as 0.3: formulas are for reading (eval has every digit).
  std::string shorter = fmt::format("{:.10g}", v);
  if (shorter.size() <= 8) return shorter;
  for (int d = 2; d <= 16; ++d) {
    double n = v * d;
    if (std::abs(n) < 1e6 && n == std::round(n) && std::abs(v - std::round(n) / d) == 0 &&
        std::round(n) != 0 && static_cast<long long>(std::round(n)) % d != 0)
      return fmt::format("{}/{}", static_cast<long long>(std::round(n)), d);
  }
  return decimal;
}

enum Prec { kSum = 1, kProduct = 2, kUnary = 3, kPower = 4, kAtom = 5 };

class Renderer {
public:
  Renderer(const Graph &g, const GradPrintOptions &o) : g_(g), o_(o) {}
  std::unordered_map<NodeId, std::string> names;    // forward values
  // Looked up before `names`, not copied (printExpression runs once per lowered kernel).
  const std::unordered_map<NodeId, std::string> *outerNames = nullptr;
  // Names inputs, targets and params by their declarations when `names` does not.
  const Program *decls = nullptr;
  std::unordered_map<NodeId, std::string> adjoints; // "dE/dNAME" for printed adjoints
  std::string self; // the dE/dNAME being printed, never substituted for itself

  // Adjoints of the form c * X (dE/dS = 2 * (S - T)), by X: the simplifier regroups a product
  // c * X * Y as c * (X * Y), where dE/dS no longer appears as a node; such a product prints as
  // dE/dS * Y rather than re-expanding the named adjoint (2 * ((S - T) * S)).
  std::unordered_map<NodeId, std::vector<std::pair<double, std::string>>> scaled;
  void indexScaledAdjoints() {
    scaled.clear();
    for (auto &[id, name] : adjoints) {
      const Node &m = g_.node(id);
      if (m.op == Op::Mul && g_.op(m.a()) == Op::Const) scaled[m.b()].emplace_back(g_.node(m.a()).fattr, name);
    }
  }

  // Shared subexpressions print once per use; the budget bounds the work on graphs where that
  // would blow up (a formula that long is not readable anyway).
  size_t budget = 20000;

  // A new formula: the budget is per formula, not per printout.
  // (The whole printout is bounded too, by 256 budgets.)
  void startFormula() { used_ = 0; }

  std::string render(NodeId id, int outer = 0) {
    if (used_ > budget || total_ > 256 * budget) return "…";
    int prec;
    std::string s = body(id, prec);
    used_ += s.size();
    total_ += s.size();
    return prec < outer ? "(" + s + ")" : s;
  }

private:
  std::string body(NodeId id, int &prec) {
    prec = kAtom;
    auto a = adjoints.find(id);
    if (a != adjoints.end() && a->second != self) return a->second;
    if (outerNames)
      if (auto on = outerNames->find(id); on != outerNames->end()) return on->second;
    auto nm = names.find(id);
    if (nm != names.end()) return nm->second;
    const Node n = g_.node(id);
    auto fn = [&](std::string_view f) { return fmt::format("{}({})", f, render(n.a())); };
    switch (n.op) {
    case Op::Const: {
      if (std::string named = namedConstant(n.fattr, o_.ascii); !named.empty()) {
        prec = named.rfind("sqrt(", 0) == 0 ? kAtom : kProduct; // sqrt(3) is a call
        return named;
      }
      std::string text = formatConstant(n.fattr);
      if (n.fattr < 0) prec = kUnary;
      else if (text.find('/') != std::string::npos) prec = kProduct;
      return text;
    }
    case Op::Input: case Op::Target: case Op::Param: {
      if (decls) {
        const auto &list = n.op == Op::Input ? decls->inputs : n.op == Op::Target ? decls->targets : decls->params;
        const size_t i = static_cast<size_t>(n.iattr); // the index of the declaration
        if (n.iattr >= 0 && i < list.size() && list[i].node == id) return list[i].name;
        for (const Decl &d : list)
          if (d.node == id) return d.name;
      }
      return fmt::format("{}#{}", opSpelling(n.op), n.iattr);
    }
    case Op::Neg: prec = kUnary; return "-" + render(n.a(), kPower);
    case Op::Pow: prec = kPower; return fmt::format("{}^{}", render(n.a(), kAtom), formatNumber(n.fattr));
    case Op::Add:
      if (NodeId u = geluDerivativeOf(n); u != kNoNode) return fmt::format("gelu'({})", render(u));
      prec = kSum;
      return side(n, 0, kSum) + " + " + side(n, 1, kSum);
    case Op::Sub: prec = kSum; return side(n, 0, kSum) + " - " + side(n, 1, kProduct);
    case Op::Mul:
      prec = kProduct;
      if (g_.op(n.a()) == Op::Const && g_.op(n.b()) == Op::Mul && !scaled.empty()) {
        // c * (X * Y * ...) with dE/dNAME = c * X: dE/dNAME * Y * ..., the factors in their order
        std::vector<NodeId> fs;
        std::function<void(NodeId)> flatten = [&](NodeId f) {
          if (g_.op(f) == Op::Mul && !isNamed(f) && fs.size() < 16) {
            flatten(g_.node(f).a());
            flatten(g_.node(f).b());
          } else {
            fs.push_back(f);
          }
        };
        flatten(n.b());
        for (size_t i = 0; i < fs.size(); ++i) {
          auto it = scaled.find(fs[i]);
          if (it == scaled.end()) continue;
          for (auto &[c, name] : it->second)
            if (c == g_.node(n.a()).fattr && name != self) {
              std::string text;
              for (size_t j = 0; j < fs.size(); ++j)
                text += (j ? " * " : "") + (j == i ? name : render(fs[j], j ? kUnary : kProduct));
              return text;
            }
        }
      }
      return side(n, 0, kProduct) + " * " + side(n, 1, kUnary);
    case Op::Div: prec = kProduct; return side(n, 0, kProduct) + " / " + side(n, 1, kUnary);
    case Op::MatMul:
      prec = kProduct;
      return spread(n.a(), kProduct) + (o_.ascii ? " @ " : " ") + spread(n.b(), kUnary);
    case Op::Outer:
      if (o_.parseable) {
        prec = kProduct;
        return fmt::format("reshape({}, [{}, 1]) * reshape({}, [1, {}])", full(n.a()), n.shape[0],
                           full(n.b()), n.shape[1]);
      }
      if (o_.ascii) return fmt::format("outer({}, {})", spread(n.a(), 0), spread(n.b(), 0));
      prec = kProduct;
      return spread(n.a(), kUnary) + " ⊗ " + spread(n.b(), kUnary);
    case Op::Transpose:
      if (o_.ascii) return fn("transpose");
      return render(n.a(), kAtom) + "ᵀ";
    case Op::Sum: return fn("sum");
    case Op::SumAxis: return fmt::format("sum({}, {})", render(n.a()), n.iattr);
    case Op::Broadcast: {
      // Broadcasting is implicit, as in the source, where NumPy's alignment (trailing axes) gives
      // the same result: iattr -1, or a new leading axis. A new axis k > 0 (SumAxis's adjoint:
      // X [2, 3] - sum(A, 1)) would align wrongly, so the operand keeps its axis there:
      // sum(A, 1, keepdims=true), or reshape(g, [2, 1]) for any other operand. That way every
      // printed formula is a program nabla accepts and computes the same thing.
      // Parseable: explicitly at the full shape, for operands of transpose, sum(a, k), @ ...
      if (o_.parseable) {
        std::string inner = n.iattr <= 0 ? render(n.a(), kSum) : keepdims(n, kSum);
        prec = kSum;
        return fmt::format("{} + zeros({})", inner, n.shape.str());
      }
      // (a value made of constants alone, as 1 / 4 broadcast in steps, is the same everywhere)
      if (n.iattr <= 0 || onlyConstants(n.a())) return body(n.a(), prec);
      return keepdims(n, 0);
    }
    case Op::SumTo: {
      // What broadcasting repeated, summed back: the leading axes it added (sum(g, 0)) and the
      // axes of extent 1 it stretched, kept (sum(g, 1, keepdims=true)), as the language writes it.
      if (n.shape.isScalar()) return fn("sum");
      return sumsOf(n.a(), n.shape, {});
    }
    case Op::LeakyRelu:
      if (n.fattr == 0.01) return fn("leaky_relu"); // the default slope, as the source omits it
      return fmt::format("leaky_relu({}, slope={})", render(n.a()), formatNumber(n.fattr));
    case Op::Maximum:
    case Op::Minimum: return fmt::format("{}({}, {})", opSpelling(n.op), render(n.a()), render(n.b()));
    case Op::GreaterEq: // Iverson's bracket: 1 where the condition holds, else 0
      return fmt::format("[{} {} {}]", render(n.a(), kSum), o_.ascii ? ">=" : "≥", render(n.b(), kSum));
    case Op::Max:
    case Op::Min:
      if (n.iattr < 0) return fn(opSpelling(n.op));
      return fmt::format("{}({}, {})", opSpelling(n.op), render(n.a()), n.iattr);
    case Op::ExtremeMask: {
      const char *f = n.fattr > 0 ? "argmax_mask" : "argmin_mask";
      if (n.iattr < 0) return fn(f);
      return fmt::format("{}({}, {})", f, render(n.a()), n.iattr);
    }
    case Op::Slice: {
      // x[a:b, :] as in the source; a whole axis is `:`
      const Shape &from = g_.shape(n.a());
      std::string idx;
      for (int k = 0; k < n.shape.rank(); ++k) {
        const int64_t lo = n.attrs[static_cast<size_t>(k)], hi = lo + n.shape[k];
        idx += k ? ", " : "";
        idx += lo == 0 && hi == from[k] ? std::string(":") : fmt::format("{}:{}", lo, hi);
      }
      return fmt::format("{}[{}]", render(n.a(), kAtom), idx);
    }
    case Op::Pad: { // zeros of the result's shape with the operand placed at `at`
      std::string at;
      for (size_t k = 0; k < n.attrs.size(); ++k) at += fmt::format("{}{}", k ? ", " : "", n.attrs[k]);
      return fmt::format("pad({}, {}, at=[{}])", render(n.a()), n.shape.str(), at);
    }
    case Op::Reshape:
      if (std::string idx = indexing(n); !idx.empty()) return idx;
      if (std::string sums = droppedSums(n); !sums.empty()) return sums;
      if (n.shape.rank() == 1 && g_.shape(n.a()).rank() > 1) return fn("flatten"); // as the source
      return fmt::format("reshape({}, {})", render(n.a()), n.shape.str());
    case Op::Concat: { // concat(concat(a, b), c) along one axis prints as concat(a, b, c)
      std::string parts;
      std::vector<NodeId> stack{n.b(), n.a()};
      while (!stack.empty()) {
        NodeId p = stack.back();
        stack.pop_back();
        const Node &m = g_.node(p);
        if (m.op == Op::Concat && m.iattr == n.iattr && !adjoints.count(p) && !names.count(p) &&
            !(outerNames && outerNames->count(p))) {
          stack.push_back(m.b());
          stack.push_back(m.a());
          continue;
        }
        parts += render(p) + ", ";
      }
      return fmt::format("concat({}axis={})", parts, n.iattr);
    }
    case Op::Conv2d:
    case Op::Conv2dInputGrad:
    case Op::Conv2dKernelGrad: {
      // conv2d(x, K) as in the source; its input gradient is PyTorch's conv_transpose2d (with
      // output_padding where the floored size lost rows or columns), its kernel gradient the
      // correlation correlate2d(x, g): dK[f,c,i,j] = Σ g[f,oh,ow] x[c, oh·S + i − P, ow·S + j − P].
      const int64_t S = n.attrs[0], P = n.attrs[1];
      std::string opts;
      if (S != 1) opts += fmt::format(", stride={}", S);
      if (P != 0) opts += fmt::format(", padding={}", P);
      const char *f = n.op == Op::Conv2d ? "conv2d" : n.op == Op::Conv2dInputGrad ? "conv_transpose2d" : "correlate2d";
      if (n.op == Op::Conv2dInputGrad) {
        const Shape &gs = g_.shape(n.a()), &K = g_.shape(n.b());
        const int64_t oh = n.shape[1] - ((gs[1] - 1) * S - 2 * P + K[2]);
        const int64_t ow = n.shape[2] - ((gs[2] - 1) * S - 2 * P + K[3]);
        if (oh != 0 || ow != 0) opts += fmt::format(", output_padding=[{}, {}]", oh, ow);
      }
      return fmt::format("{}({}, {}{})", f, render(n.a()), render(n.b()), opts);
    }
    case Op::MaxPool2d:
    case Op::AvgPool2d:
    case Op::MaxPool2dGrad:
    case Op::AvgPool2dGrad: {
      // maxpool2d(x, k) as in the source; the adjoints: maxunpool2d(g, x, k) puts each g at the
      // first maximum of its window of x, avgunpool2d(g, k) spreads g / k² over each window
      // (`to=` the image's size where the floored windows left rows or columns uncovered).
      const int64_t k = n.attrs[0], S = n.attrs[1];
      std::string opts = S != k ? fmt::format(", stride={}", S) : "";
      switch (n.op) {
      case Op::MaxPool2d: return fmt::format("maxpool2d({}, {}{})", render(n.a()), k, opts);
      case Op::AvgPool2d: return fmt::format("avgpool2d({}, {}{})", render(n.a()), k, opts);
      case Op::MaxPool2dGrad:
        return fmt::format("maxunpool2d({}, {}, {}{})", render(n.b()), render(n.a()), k, opts);
      default: {
        const Shape &gs = g_.shape(n.a());
        if ((gs[1] - 1) * S + k != n.shape[1] || (gs[2] - 1) * S + k != n.shape[2])
          opts += fmt::format(", to=[{}, {}]", n.shape[1], n.shape[2]);
        return fmt::format("avgunpool2d({}, {}{})", render(n.a()), k, opts);
      }
      }
    }
    default: return fn(opSpelling(n.op));
    }
  }
  bool isNamed(NodeId id) const {
    return adjoints.count(id) || names.count(id) || (outerNames && outerNames->count(id));
  }

  // A constant spread over a shape where the op around it does not broadcast (⊗, @): ones([4])
  // or 0.5 * ones([4]), not a bare 1 that reads as a scalar. Anything else as render().
  std::string spread(NodeId id, int outer) {
    double v;
    const Shape &s = g_.shape(id);
    if (o_.parseable || s.isScalar() || !g_.constValue(id, v) || adjoints.count(id) || names.count(id) ||
        (outerNames && outerNames->count(id)))
      return render(id, outer);
    if (v == 1) return fmt::format("ones({})", s.str());
    std::string c = formatConstant(v);
    std::string text = fmt::format("{} * ones({})", v < 0 ? "(" + c + ")" : c, s.str());
    return kProduct < outer ? "(" + text + ")" : text;
  }

  // Operand k of an elementwise binary op: a constant spread over the result's shape reads as
  // ones([4, 3]) where the other operand alone does not have that shape (1 * V, V [4, 1], is
  // [4, 3]); else as itself.
  std::string side(const Node &n, int k, int outer) {
    const NodeId x = n.in[static_cast<size_t>(k)], other = n.in[static_cast<size_t>(1 - k)];
    return g_.shape(other) == n.shape || onlyConstants(other) ? render(x, outer) : spread(x, outer);
  }

  // SumTo from `g` down to `to`: sum(g, k, keepdims=true) for each stretched axis k, then
  // sum(., 0) for each leading axis; `drop` lists the stretched axes whose 1 is dropped too (a
  // reshape around the SumTo removes them: sum(g, k) instead of keepdims).
  std::string sumsOf(NodeId g, const Shape &to, const std::vector<int> &drop) {
    const Shape &from = g_.shape(g);
    const int lead = from.rank() - to.rank();
    std::string s = render(g);
    for (int k = to.rank(); k-- > 0;) {
      if (to[k] != 1 || from[lead + k] == 1) continue;
      const bool dropped = std::find(drop.begin(), drop.end(), k) != drop.end();
      s = dropped ? fmt::format("sum({}, {})", s, lead + k) : fmt::format("sum({}, {}, keepdims=true)", s, lead + k);
    }
    for (int k = 0; k < lead; ++k) s = fmt::format("sum({}, 0)", s);
    return s;
  }

  // reshape(sum_to(g, [32, 1, 1]), [32]) (a conv bias's gradient): the reshape only drops the
  // axes the SumTo kept, so it is sum(sum(g, 2), 1). "" for any other Reshape.
  std::string droppedSums(const Node &r) {
    const NodeId sid = r.a();
    if (g_.op(sid) != Op::SumTo || adjoints.count(sid) || names.count(sid) || (outerNames && outerNames->count(sid)))
      return "";
    const Node &st = g_.node(sid);
    const Shape &from = g_.shape(st.a());
    const int lead = from.rank() - st.shape.rank();
    if (lead != 0) return "";
    std::vector<int> drop;
    std::vector<int64_t> kept;
    for (int k = 0; k < st.shape.rank(); ++k) {
      if (st.shape[k] == 1 && from[k] != 1) drop.push_back(k);
      else kept.push_back(st.shape[k]);
    }
    if (drop.empty() || Shape(kept) != r.shape) return "";
    return sumsOf(st.a(), st.shape, drop);
  }

  // A Broadcast that inserts axis k > 0, as its operand with that axis kept (size 1).
  std::string keepdims(const Node &n, int outer) {
    const NodeId src = n.a();
    const Node &m = g_.node(src);
    const bool unnamed = !adjoints.count(src) && !names.count(src) && !(outerNames && outerNames->count(src));
    (void)outer; // both forms are calls
    if (unnamed && m.iattr == n.iattr && (m.op == Op::SumAxis || m.op == Op::Max || m.op == Op::Min))
      return fmt::format("{}({}, {}, keepdims=true)", m.op == Op::SumAxis ? "sum" : opSpelling(m.op),
                         render(m.a()), m.iattr);
    std::vector<int64_t> dims = n.shape.dims;
    dims[static_cast<size_t>(n.iattr)] = 1;
    return fmt::format("reshape({}, {})", render(src), Shape(std::move(dims)).str());
  }

public:
  // `render` (a name for the places where parseable mode needs the full shape, which its
  // explicit broadcasts give).
  std::string full(NodeId id, int outer = 0) { return render(id, outer); }

private:
  // Whether a node is computed from constants alone (the same value at every index).
  bool onlyConstants(NodeId id, int depth = 0) const {
    const Node &m = g_.node(id);
    if (m.op == Op::Const) return true;
    if (m.nin == 0 || depth > 32) return false;
    switch (m.op) { // these place values at some indices only
    case Op::Pad: case Op::Concat: case Op::Conv2d: case Op::Conv2dInputGrad: case Op::Conv2dKernelGrad:
    case Op::MaxPool2dGrad: case Op::AvgPool2dGrad: case Op::ExtremeMask: return false;
    default: break;
    }
    for (int k = 0; k < m.nin; ++k)
      if (!onlyConstants(m.in[static_cast<size_t>(k)], depth + 1)) return false;
    return true;
  }
  // gelu's derivative rule builds Φ(u) + u φ(u) as 0.5 (1 + erf(u / √2)) + (1/√(2π)) u exp(-u²/2),
  // which simplifies to the Add of 0.5 * (1 + erf(1/√2 * u)) and 1/√(2π) * (u * exp(-0.5 * u^2)):
  // that sum prints as gelu'(u). Returns u, or kNoNode when `n` is not that sum.
  NodeId geluDerivativeOf(const Node &n) const {
    auto constIs = [&](NodeId id, double v) { return g_.op(id) == Op::Const && g_.node(id).fattr == v; };
    auto mulByConst = [&](NodeId id, double c) -> NodeId { // c * x -> x
      const Node &m = g_.node(id);
      return m.op == Op::Mul && constIs(m.a(), c) ? m.b() : kNoNode;
    };
    // Φ part: 0.5 * (1 + erf(1/√2 * u))
    NodeId inner = mulByConst(n.a(), 0.5);
    if (inner == kNoNode || g_.op(inner) != Op::Add || !constIs(g_.node(inner).a(), 1)) return kNoNode;
    NodeId e = g_.node(inner).b();
    if (g_.op(e) != Op::Erf) return kNoNode;
    NodeId u = mulByConst(g_.node(e).a(), 0.70710678118654752440);
    if (u == kNoNode) return kNoNode;
    // u φ(u) part: 1/√(2π) * (u * exp(-0.5 * u^2))
    NodeId prod = mulByConst(n.b(), std::numbers::inv_sqrtpi * 0.70710678118654752440);
    if (prod == kNoNode || g_.op(prod) != Op::Mul || g_.node(prod).a() != u) return kNoNode;
    NodeId ex = g_.node(prod).b();
    if (g_.op(ex) != Op::Exp) return kNoNode;
    NodeId sq = mulByConst(g_.node(ex).a(), -0.5);
    if (sq == kNoNode || g_.op(sq) != Op::Pow || g_.node(sq).fattr != 2 || g_.node(sq).a() != u) return kNoNode;
    return u;
  }

  // x[2] or x[1:3, 0], as the source writes an index (a Slice with extent 1 on the axis, then a
  // Reshape that drops it): for a Reshape of an unnamed Slice that drops exactly such axes ("" for
  // any other Reshape). Trailing whole axes are left out, as in the source (x[1] for x[1, :]).
  std::string indexing(const Node &r) {
    const NodeId sid = r.a();
    if (g_.op(sid) != Op::Slice || adjoints.count(sid) || names.count(sid) ||
        (outerNames && outerNames->count(sid)))
      return "";
    const Node &sl = g_.node(sid);
    const Shape &from = g_.shape(sl.a());
    std::vector<std::string> parts;
    int kept = 0;
    bool dropped = false;
    for (int k = 0; k < sl.shape.rank(); ++k) {
      const int64_t lo = sl.attrs[static_cast<size_t>(k)], hi = lo + sl.shape[k];
      // An axis of extent 1 cut out of a longer one is an index, unless the result keeps it.
      const bool keeps = kept < r.shape.rank() && r.shape[kept] == sl.shape[k] &&
                         !(sl.shape[k] == 1 && from[k] > 1 && r.shape.rank() - kept < sl.shape.rank() - k);
      if (keeps) {
        parts.push_back(lo == 0 && hi == from[k] ? std::string(":") : fmt::format("{}:{}", lo, hi));
        ++kept;
      } else if (sl.shape[k] == 1 && from[k] > 1) {
        parts.push_back(std::to_string(lo));
        dropped = true;
      } else {
        return "";
      }
    }
    if (!dropped || kept != r.shape.rank()) return "";
    while (!parts.empty() && parts.back() == ":") parts.pop_back();
    std::string idx;
    for (size_t k = 0; k < parts.size(); ++k) idx += (k ? ", " : "") + parts[k];
    return fmt::format("{}[{}]", render(sl.a(), kAtom), idx);
  }

  const Graph &g_;
  const GradPrintOptions &o_;
  size_t used_ = 0, total_ = 0;
};

// Recurrences: an unrolled recurrence names the values of step t FAMILY[t] ("h[3]",
// "hs.z[3]"; a user's name cannot hold brackets). stepOf splits such a name into its family
// and step ({"", -1} for every other name).
std::pair<std::string, int64_t> stepOf(const std::string &name) {
  if (name.size() < 4 || name.back() != ']') return {"", -1};
  const size_t open = name.rfind('[');
  if (open == std::string::npos || open == 0 || open + 2 > name.size() - 1) return {"", -1};
  int64_t t = 0;
  for (size_t i = open + 1; i + 1 < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || t > 1000000000) return {"", -1};
    t = t * 10 + (name[i] - '0');
  }
  return {name.substr(0, open), t};
}

// The letter of the step index: `t`, unless the program has a name `t` (a target, often), then the
// first of s, k, u, step that it does not use, so that `hs.h[t] - t` never mixes a step and a value.
thread_local std::string stepVar = "t";

bool isNameChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
}

// A text over step t instead of step `t`: every step index NAME[k] (or index (EXPR)[k]) becomes
// NAME[t], NAME[t-1], NAME[t+2], ... (slices print as x[a:b] and shapes after a space or `=`,
// so they stay).
std::string abstractSteps(const std::string &text, int64_t t) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '[' && i > 0 && (isNameChar(text[i - 1]) || text[i - 1] == ')')) {
      size_t j = i + 1;
      int64_t k = 0;
      while (j < text.size() && text[j] >= '0' && text[j] <= '9' && k < 1000000000) k = k * 10 + (text[j++] - '0');
      if (j > i + 1 && j < text.size() && text[j] == ']') {
        const int64_t rel = k - t;
        out += rel == 0 ? "[" + stepVar + "]"
                        : fmt::format("[{}{}{}]", stepVar, rel > 0 ? "+" : "-", rel > 0 ? rel : -rel);
        i = j;
        continue;
      }
    }
    out += text[i];
  }
  return out;
}

// The reverse for one step: NAME[t+1] at t = 4 is NAME[5].
std::string concreteStep(const std::string &text, int64_t t) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text.compare(i, 1 + stepVar.size(), "[" + stepVar) == 0 && i > 0 &&
        (isNameChar(text[i - 1]) || text[i - 1] == ')')) {
      size_t j = i + 1 + stepVar.size();
      int64_t rel = 0, sign = 1;
      if (j < text.size() && (text[j] == '+' || text[j] == '-')) {
        sign = text[j] == '-' ? -1 : 1;
        ++j;
        while (j < text.size() && text[j] >= '0' && text[j] <= '9') rel = rel * 10 + (text[j++] - '0');
      }
      if (j < text.size() && text[j] == ']') {
        out += fmt::format("[{}]", t + sign * rel);
        i = j;
        continue;
      }
    }
    out += text[i];
  }
  return out;
}

// "t=1..5" for consecutive steps, else "t ∈ {1, 3, 4}" (the steps in increasing order).
std::string stepRange(std::vector<int64_t> steps) {
  std::sort(steps.begin(), steps.end());
  steps.erase(std::unique(steps.begin(), steps.end()), steps.end());
  if (steps.size() == 1) return fmt::format("{}={}", stepVar, steps[0]);
  bool consecutive = true;
  for (size_t i = 1; i < steps.size(); ++i) consecutive &= steps[i] == steps[i - 1] + 1;
  if (consecutive) return fmt::format("{}={}..{}", stepVar, steps.front(), steps.back());
  std::string list;
  for (size_t i = 0; i < steps.size(); ++i) list += fmt::format("{}{}", i ? ", " : "", steps[i]);
  return fmt::format("{} ∈ {{{}}}", stepVar, list);
}

// The labels of the gradient's terms: the statements (Program::values) and the per-step values
// of recurrences (`hs.h[3]`, which are not statements), each with the statement it belongs to.
struct Owner {
  std::string label;
  NodeId root;
  size_t statement; // index in Program::values
};

// Sema also lists a recurrence's step values among the statements' values (FAMILY[t], with the
// recurrence's statement index, for the other printers); here they come from Program::recurrences
// alone, once each.
bool isStepValue(const Program &p, size_t i) {
  if (stepOf(p.values[i].name).second < 0) return false;
  for (const RecurrenceSteps &rs : p.recurrences)
    if (rs.statement == p.values[i].statement) return true;
  return false;
}

std::vector<Owner> ownerList(const Program &p, const Derivation &d) {
  std::vector<Owner> list;
  for (size_t i = 0; i < p.values.size(); ++i) {
    if (isStepValue(p, i)) continue;
    // A recurrence's step values first, in step order: the nodes of step t belong to them, the
    // stacking of the states to the statement itself.
    for (const RecurrenceSteps &rs : p.recurrences)
      if (rs.statement == p.values[i].statement)
        for (const StepValue &sv : rs.values)
          list.push_back({fmt::format("{}.{}[{}]", rs.name, sv.name, sv.t), d.simplifier->simplify(sv.node), i});
    list.push_back({p.values[i].name, d.values[i], i});
  }
  return list;
}

// Which owner (index in `list`) each forward node belongs to: the first (in source order) whose
// expression, stopping at other named values, contains it.
std::unordered_map<NodeId, size_t> owners(const Program &p, const std::vector<Owner> &list,
                                          const std::unordered_map<NodeId, std::string> &names) {
  std::unordered_map<NodeId, size_t> owner;
  for (size_t i = 0; i < list.size(); ++i) {
    std::vector<NodeId> stack{list[i].root};
    while (!stack.empty()) {
      NodeId id = stack.back();
      stack.pop_back();
      if (owner.count(id)) continue;
      if (id != list[i].root && names.count(id)) {
        if (p.graph.op(id) == Op::Param) owner[id] = i; // a param belongs to its first user
        continue;
      }
      owner[id] = i;
      const Node &n = p.graph.node(id);
      for (int k = 0; k < n.nin; ++k) stack.push_back(n.in[static_cast<size_t>(k)]);
    }
  }
  return owner;
}

// Every owner (index in `list`) whose expression, stopping at other named values, contains each
// node: an unnamed node that two statements share (`h - mu` in both `var = mean((h - mu)^2)` and
// `n = (h - mu) / s`) has both, and the gradient flowing through it is split between them. Only
// owners on the loss's path count (`live`): a value that simplification left off the path (p1 in
// `L = sum(p1 + p7)` with p1 = -x^2) keeps its nodes by the first-owner rule of `owners`.
std::unordered_map<NodeId, std::vector<size_t>> ownerSets(const Program &p, const std::vector<Owner> &list,
                                                          const std::unordered_map<NodeId, std::string> &names,
                                                          const std::function<bool(NodeId)> &live) {
  std::unordered_map<NodeId, std::vector<size_t>> sets;
  for (size_t i = 0; i < list.size(); ++i) {
    if (!live(list[i].root)) continue;
    std::unordered_set<NodeId> seen;
    std::vector<NodeId> stack{list[i].root};
    while (!stack.empty()) {
      NodeId id = stack.back();
      stack.pop_back();
      if (!seen.insert(id).second) continue;
      if (id != list[i].root && names.count(id)) continue;
      sets[id].push_back(i);
      const Node &n = p.graph.node(id);
      for (int k = 0; k < n.nin; ++k) stack.push_back(n.in[static_cast<size_t>(k)]);
    }
  }
  return sets;
}

} // namespace

std::string printExpression(const Program &p, NodeId id, const GradPrintOptions &opts,
                            const std::unordered_map<NodeId, std::string> &names, size_t budget) {
  Renderer r(p.graph, opts);
  r.outerNames = &names;
  r.decls = &p; // not a map of every declaration: printExpression runs once per lowered kernel
  r.budget = budget;
  return r.render(id);
}

GradListing listGradient(Program &p, Derivation &d, const GradPrintOptions &opts, bool perStep,
                        bool wantWhole) {
  GradListing listing;
  Graph &G = p.graph;
  Simplifier &S = *d.simplifier;
  Renderer r(G, opts);
  for (auto *list : {&p.inputs, &p.targets, &p.params})
    for (auto &decl : *list) r.names.emplace(decl.node, decl.name);
  {
    auto used = [&](std::string_view v) {
      for (auto *list : {&p.inputs, &p.targets, &p.params})
        for (auto &decl : *list)
          if (decl.name == v) return true;
      for (auto &nv : p.values)
        if (nv.name == v) return true;
      return false;
    };
    stepVar = "step";
    for (const char *v : {"t", "s", "k", "u"})
      if (!used(v)) { stepVar = v; break; }
  }
  // The step values' names before the statements' (`last = hs[-1]` is hs.h[T-1], which must
  // keep its step's name for the per-step terms to read the same over t).
  const std::vector<Owner> ownerInfo = ownerList(p, d);
  for (const Owner &o : ownerInfo)
    if (stepOf(o.label).second >= 0) r.names.emplace(o.root, o.label);
  for (size_t i = 0; i < p.values.size(); ++i) r.names.emplace(d.values[i], p.values[i].name);
  auto owner = owners(p, ownerInfo, r.names);
  const std::string &L = p.loss->name;
  auto dname = [&](const std::string &n) { return fmt::format("d{}/d{}", L, n); };
  auto adjointOf = [&](NodeId fwd) -> NodeId {
    if (static_cast<size_t>(fwd) >= d.gradient.adjoint.size()) return kNoNode;
    NodeId a = d.gradient.adjoint[static_cast<size_t>(fwd)];
    return a == kNoNode ? kNoNode : S.simplify(a);
  };

  // The items, from the loss backwards: each value, then the params its statement uses first.
  struct Item {
    std::string name;
    NodeId fwd;
    bool isParam;
  };
  std::vector<Item> items;
  std::unordered_set<size_t> placed;
  std::vector<std::vector<size_t>> paramsOf(p.values.size());
  for (size_t k = 0; k < p.params.size(); ++k) {
    auto it = owner.find(p.params[k].node);
    if (it != owner.end()) paramsOf[ownerInfo[it->second].statement].push_back(k), placed.insert(k);
  }
  // A value that simplifies to another named node (`p = --x`, `h = x * 1`) is that node: it is
  // not listed on its own (its consumers are the other node's).
  std::string aliases;
  auto aliasOf = [&](size_t i) -> std::string {
    NodeId node = d.values[i];
    for (auto *list : {&p.inputs, &p.targets, &p.params})
      for (auto &decl : *list)
        if (decl.node == node) return decl.name;
    for (size_t j = 0; j < i; ++j)
      if (d.values[j] == node) return p.values[j].name;
    for (const Owner &o : ownerInfo)
      if (o.root == node && o.statement < i && stepOf(o.label).second >= 0) return o.label;
    return "";
  };
  for (size_t i = p.values.size(); i-- > 0;) {
    if (isStepValue(p, i)) continue; // listed with its recurrence's statement below
    std::string alias = p.values[i].statement == p.loss->statement ? "" : aliasOf(i);
    if (alias == p.values[i].name) alias.clear(); // a step value listed under its own name
    if (!alias.empty()) {
      aliases += fmt::format("# {} is {} after simplification; see d{}/d{}.\n", p.values[i].name, alias,
                             p.loss->name, alias);
    } else if (p.values[i].statement != p.loss->statement)
      items.push_back({p.values[i].name, d.values[i], false});
    // A recurrence's step values after it, from the last step back (the first name of a node wins).
    for (size_t j = ownerInfo.size(); j-- > 0;)
      if (ownerInfo[j].statement == i && ownerInfo[j].root != d.values[i] &&
          r.names.at(ownerInfo[j].root) == ownerInfo[j].label)
        items.push_back({ownerInfo[j].label, ownerInfo[j].root, false});
    // A statement's params in reverse order too: the bias, added last, comes first.
    for (size_t k : std::vector<size_t>(paramsOf[i].rbegin(), paramsOf[i].rend())) items.push_back({p.params[k].name, p.params[k].node, true});
  }
  for (size_t k = 0; k < p.params.size(); ++k)
    if (!placed.count(k)) items.push_back({p.params[k].name, p.params[k].node, true});

  std::unordered_set<NodeId> originalPath;
  for (NodeId id : G.reachable({p.loss->node})) originalPath.insert(id);

  listing.header = fmt::format("# The gradient of {} for one example, from the loss backwards.\n", L);
  listing.header += "# A param's gradient over a batch is the mean of these.\n";
  // Register every adjoint first (in printing order; the first name for a node wins), so later
  // formulas refer to dE/dNAME of earlier lines. The step values of recurrences go first: where
  // `last = hs[-1]`, dE/dlast is dE/dhs.h[T-1], and the per-step terms read the same over t only
  // if step T-1's say dE/dhs.h[T-1] too.
  for (bool steps : {true, false})
    for (const Item &it : items) {
      if (it.isParam || (stepOf(it.name).second >= 0) != steps) continue;
      NodeId a = adjointOf(it.fwd);
      double c;
      // (an adjoint that is a named forward value, as dE/dW = x for E = sum(W * x), keeps its
      // name, except for a step's adjoint: there dE/dhs.h[t] for every t reads best)
      if (a != kNoNode && !G.constValue(a, c) && (steps || !r.names.count(a)))
        r.adjoints.emplace(a, dname(it.name));
    }
  for (const Item &it : items) {
    NodeId a = adjointOf(it.fwd);
    double c;
    if (it.isParam && a != kNoNode && !G.constValue(a, c) && !r.names.count(a)) r.adjoints.emplace(a, dname(it.name));
  }
  r.indexScaledAdjoints();
  // The statements a forward node's adjoint comes from, each with its part of the adjoint: one
  // part (the whole adjoint) for a node of one statement, else the parts its consumers send,
  // split recursively through consumers that are shared too.
  const auto sets = ownerSets(p, ownerInfo, r.names, [&](NodeId root) {
    return static_cast<size_t>(root) < d.gradient.adjoint.size() && d.gradient.adjoint[static_cast<size_t>(root)] != kNoNode;
  });
  std::unordered_map<NodeId, std::vector<std::pair<std::string, NodeId>>> partsMemo;
  std::function<NodeId(NodeId, NodeId, NodeId)> vjpInto = [&](NodeId consumer, NodeId operand, NodeId adj) {
    // consumer's VJP into `operand` (summed over the operand slots it fills) for adjoint `adj`
    NodeId sum = kNoNode;
    const Node n = G.node(consumer);
    for (int k = 0; k < n.nin; ++k)
      if (n.in[static_cast<size_t>(k)] == operand) {
        NodeId v = vectorJacobianProduct(G, consumer, k, adj);
        if (v == kNoNode) continue;
        sum = sum == kNoNode ? v : G.make(Op::Add, {sum, v});
      }
    return sum == kNoNode ? G.constant(0) : sum;
  };
  std::function<std::vector<std::pair<std::string, NodeId>>(NodeId)> partsOf = [&](NodeId c) {
    if (auto m = partsMemo.find(c); m != partsMemo.end()) return m->second;
    std::vector<std::pair<std::string, NodeId>> parts;
    auto s = sets.find(c);
    auto o = owner.find(c);
    const NodeId adj = static_cast<size_t>(c) < d.gradient.adjoint.size() ? d.gradient.adjoint[static_cast<size_t>(c)] : kNoNode;
    // (not inside a recurrence: its step values' simplified roots need not be where the loss's
    // expression reaches them, and the first-owner rule labels its steps as printed over t)
    bool steps = false;
    if (s != sets.end())
      for (size_t k : s->second) steps |= stepOf(ownerInfo[k].label).second >= 0;
    if (s == sets.end() || s->second.size() <= 1 || adj == kNoNode || steps) {
      // the statement whose (unsimplified) expression holds the consumer; else the first whose
      // simplified one does
      parts.emplace_back(o != owner.end() ? ownerInfo[o->second].label : "?", adj);
    } else {
      for (const Contribution &cc : d.gradient.contributions[static_cast<size_t>(c)]) {
        auto sub = partsOf(cc.consumer);
        if (sub.size() == 1) {
          parts.emplace_back(sub[0].first, cc.term);
          continue;
        }
        for (auto &[label, part] : sub) parts.emplace_back(label, vjpInto(cc.consumer, c, part));
      }
      // one part per statement
      std::vector<std::pair<std::string, NodeId>> merged;
      for (auto &[label, part] : parts) {
        bool found = false;
        for (auto &mp : merged)
          if (mp.first == label) mp.second = G.make(Op::Add, {mp.second, part}), found = true;
        if (!found) merged.emplace_back(label, part);
      }
      parts = std::move(merged);
    }
    partsMemo[c] = parts;
    return parts;
  };
  std::string notes;
  const char *arrow = opts.ascii ? "<-" : "←";
  // Each item's text, from its pieces (the left side, the terms and the labels of their
  // consumers); `abstract` turns a piece into its form over a step t (see stepOf).
  // Each item's listing, from its pieces (the left side, the terms and the labels of their
  // consumers); `abstract` turns a piece into its form over a step t (see stepOf).
  auto block = [&](const Item &it, NodeId a, const std::function<std::string(const std::string &)> &abstract,
                   const std::string &range) -> GradListItem {
    GradListItem li;
    li.name = abstract(it.name);
    li.fwd = it.fwd;
    li.adjoint = a;
    li.isParam = it.isParam;
    li.lhs = abstract(dname(it.name));
    li.range = range;
    const std::string lhs = li.lhs + " = ";
    r.self = dname(it.name);
    r.startFormula();
    // Group the contributions by the statement of the consumer: a consumer shared by several
    // statements passes back the sum of what each of them sends through it, so its term is split
    // into one per statement (each the consumer's VJP of that statement's part of its adjoint).
    std::vector<std::pair<std::string, NodeId>> groups;
    auto add = [&](const std::string &label, NodeId term) {
      term = S.simplify(term);
      double zero;
      if (G.constValue(term, zero) && zero == 0) return; // a consumer that passes nothing back
      for (auto &gp : groups)
        if (gp.first == label) {
          gp.second = S.make(Op::Add, gp.second, term);
          return;
        }
      groups.emplace_back(label, term);
    };
    for (const Contribution &c : d.gradient.contributions[static_cast<size_t>(it.fwd)]) {
      const auto parts = partsOf(c.consumer);
      if (parts.size() == 1) {
        add(parts[0].first, c.term);
        continue;
      }
      for (auto &[label, part] : parts) add(label, vjpInto(c.consumer, it.fwd, part));
    }
    const std::string suffix = range.empty() ? "" : "    (for " + range + ")";
    auto statementOf = [&](const std::string &label) {
      for (const Owner &o : ownerInfo)
        if (o.label == label) return o.statement;
      return SIZE_MAX;
    };
    if (groups.size() <= 1) {
      li.formula = abstract(r.full(a));
      if (groups.size() == 1) li.terms.push_back({abstract(groups[0].first), li.formula, {}, "", {groups[0].second}, statementOf(groups[0].first)});
      li.text = lhs + li.formula + suffix + "\n";
      return li;
    }
    // The terms, with the per-step ones of one recurrence (the same formula over t) as one Σ.
    std::vector<GradTermLine> &lines = li.terms;
    for (auto &gp : groups) {
      std::string term = r.full(gp.second, kSum);
      auto [family, step] = stepOf(gp.first);
      if (step < 0) {
        lines.push_back({abstract(gp.first), abstract(term), {}, "", {gp.second}, statementOf(gp.first)});
        continue;
      }
      // Over its own step t: a consumer h[5] of a param gives "... h[t] ... h[t-1] ...".
      std::string overT = abstractSteps(term, step), label = family + "[" + stepVar + "]";
      bool merged = false;
      for (GradTermLine &l : lines)
        if (!l.steps.empty() && l.text == overT && l.label == label)
          l.steps.push_back(step), l.nodes.push_back(gp.second), merged = true;
      if (!merged) lines.push_back({label, overT, {step}, "", {gp.second}, statementOf(gp.first)});
    }
    // A group of one step is that step's own term.
    for (GradTermLine &l : lines) {
      if (l.steps.size() == 1) {
        const int64_t t = l.steps[0];
        l.text = abstract(concreteStep(l.text, t));
        l.label = abstract(concreteStep(l.label, t));
        l.steps.clear();
      }
      if (!l.steps.empty()) l.range = stepRange(l.steps);
    }
    auto sigma = [&](const GradTermLine &l) {
      return l.steps.empty() ? l.text : fmt::format("Σ_{{{}}} {}", l.range, l.text);
    };
    if (wantWhole) { // the whole gradient too (for explain; grad shows the terms alone)
      r.startFormula();
      li.formula = abstract(r.full(a));
    }
    if (lines.size() == 1) { // every consumer is a step of one recurrence
      li.text = fmt::format("{}{}   {} from {}, one term per step{}\n", lhs, sigma(lines[0]), arrow,
                            lines[0].label, suffix);
      return li;
    }
    std::string text = fmt::format("{}Σ over the {} consumers of {}:{}\n", lhs, groups.size(),
                                   abstract(it.name), suffix);
    std::string pad(lhs.size() - 2, ' ');
    size_t width = 0;
    for (const GradTermLine &l : lines) width = std::max(width, sigma(l).size());
    for (size_t k = 0; k < lines.size(); ++k)
      text += fmt::format("{}{} {:<{}}   {} from {}\n", pad, k ? "+" : " ", sigma(lines[k]), width,
                          arrow, lines[k].label);
    li.text = std::move(text);
    return li;
  };
  const auto same = [](const std::string &x) { return x; };
  // The values of one recurrence's steps (FAMILY[t]) whose gradients read the same over t are
  // printed once, at the first of them, with their range of t.
  auto overT = [](int64_t t) { return [t](const std::string &x) { return abstractSteps(x, t); }; };
  std::unordered_map<size_t, std::string> overTText;                      // item -> its text over t
  std::unordered_map<std::string, std::vector<size_t>> overTByFamily;     // family -> its items
  for (size_t i = 0; i < items.size() && !perStep; ++i) {
    auto [family, step] = stepOf(items[i].name);
    NodeId a = adjointOf(items[i].fwd);
    if (items[i].isParam || step < 0 || a == kNoNode) continue;
    overTText[i] = block(items[i], a, overT(step), "").text;
    overTByFamily[family].push_back(i);
  }
  std::unordered_set<size_t> printedSteps;
  for (size_t i = 0; i < items.size(); ++i) {
    const Item &it = items[i];
    NodeId a = adjointOf(it.fwd);
    std::string lhs = dname(it.name) + " = ";
    if (a == kNoNode) {
      if (it.isParam) {
        GradListItem li;
        li.name = it.name, li.fwd = it.fwd, li.isParam = true, li.lhs = dname(it.name), li.formula = "0";
        li.note = L + " does not depend on it";
        li.text = lhs + "0    (" + li.note + ")\n";
        listing.items.push_back(std::move(li));
      } else {
        size_t vi = 0;
        while (vi < p.values.size() && p.values[vi].name != it.name) ++vi;
        Op op = G.op(it.fwd);
        if (vi < p.values.size() && originalPath.count(p.values[vi].node) &&
            (op == Op::Softmax || op == Op::Logistic))
          notes += fmt::format("# d{}/d{} is not shown: {} uses the logits of {} directly (the "
                               "stable from-logits form of cross_entropy and bce).\n", L, it.name,
                               L, it.name);
      }
      continue;
    }
    auto [family, step] = stepOf(it.name);
    if (it.isParam || step < 0 || perStep) {
      listing.items.push_back(block(it, a, same, ""));
      continue;
    }
    // A step value: printed once over t for every step of its family whose text over t is the
    // same as its own (each step's text is rendered once: the comparison is of strings).
    if (printedSteps.count(i)) continue;
    std::vector<int64_t> steps;
    for (size_t j : overTByFamily[family])
      if (overTText[j] == overTText[i]) steps.push_back(stepOf(items[j].name).second), printedSteps.insert(j);
    std::sort(steps.begin(), steps.end());
    steps.erase(std::unique(steps.begin(), steps.end()), steps.end());
    listing.items.push_back(steps.size() == 1 ? block(it, a, same, "") : block(it, a, overT(step), stepRange(steps)));
  }
  listing.notes = notes;
  listing.aliases = aliases;
  listing.names = r.names;
  listing.adjoints = r.adjoints;
  listing.stepVar = stepVar;
  return listing;
}

// Keeps ASCII output free of the few Unicode letters of the listing (Σ, ∈).
std::string asciiLetters(const std::string &out) {
  std::string fixed;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out.compare(i, 2, "Σ") == 0) fixed += "sum", ++i;
    else if (out.compare(i, 3, "∈") == 0) fixed += "in", i += 2;
    else fixed += out[i];
  }
  return fixed;
}

std::string printGradient(Program &p, Derivation &d, const GradPrintOptions &opts) {
  GradListing l = listGradient(p, d, opts);
  std::string out = l.header;
  for (const GradListItem &it : l.items) out += it.text;
  if (opts.ascii) out = asciiLetters(out);
  return out + l.notes + l.aliases;
}

} // namespace nabla
