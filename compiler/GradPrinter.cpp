// The derivative printer: renders simplified gradient nodes as readable formulas, substituting
// source names for forward values and dE/dNAME for the adjoints already printed.
#include "GradPrinter.h"

#include "ProgramPrinter.h"

#include <fmt/format.h>

#include <cmath>
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

  // Shared subexpressions print once per use; the budget bounds the work on graphs where that
  // would blow up (a formula that long is not readable anyway).
  size_t budget = 20000;

  std::string render(NodeId id, int outer = 0) {
    if (used_ > budget) return "…";
    int prec;
    std::string s = body(id, prec);
    used_ += s.size();
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
        prec = kProduct;
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
    case Op::Add: prec = kSum; return render(n.a(), kSum) + " + " + render(n.b(), kSum);
    case Op::Sub: prec = kSum; return render(n.a(), kSum) + " - " + render(n.b(), kProduct);
    case Op::Mul: prec = kProduct; return render(n.a(), kProduct) + " * " + render(n.b(), kUnary);
    case Op::Div: prec = kProduct; return render(n.a(), kProduct) + " / " + render(n.b(), kUnary);
    case Op::MatMul:
      prec = kProduct;
      return render(n.a(), kProduct) + (o_.ascii ? " @ " : " ") + render(n.b(), kUnary);
    case Op::Outer:
      if (o_.ascii) return fmt::format("outer({}, {})", render(n.a()), render(n.b()));
      prec = kProduct;
      return render(n.a(), kUnary) + " ⊗ " + render(n.b(), kUnary);
    case Op::Transpose:
      if (o_.ascii) return fn("transpose");
      return render(n.a(), kAtom) + "ᵀ";
    case Op::Sum: return fn("sum");
    case Op::SumAxis: return fmt::format("sum({}, {})", render(n.a()), n.iattr);
    case Op::Broadcast: return body(n.a(), prec); // broadcasting is implicit, as in the source
    case Op::SumTo: {
      const Shape &from = g_.shape(n.a());
      if (from.rank() == 2 && n.shape.rank() == 1 && n.shape[0] == from[1])
        return fmt::format("sum({}, 0)", render(n.a()));
      if (n.shape.isScalar()) return fn("sum");
      return fmt::format("sum_to({}, {})", render(n.a()), n.shape.str());
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
    case Op::Reshape: return fmt::format("reshape({}, {})", render(n.a()), n.shape.str());
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
  const Graph &g_;
  const GradPrintOptions &o_;
  size_t used_ = 0;
};

// Which statement each forward node belongs to: the first named value (in source order) whose
// expression, stopping at other named values, contains it.
std::unordered_map<NodeId, size_t> owners(const Program &p, const Derivation &d,
                                          const std::unordered_map<NodeId, std::string> &names) {
  std::unordered_map<NodeId, size_t> owner;
  for (size_t i = 0; i < d.values.size(); ++i) {
    std::vector<NodeId> stack{d.values[i]};
    while (!stack.empty()) {
      NodeId id = stack.back();
      stack.pop_back();
      if (owner.count(id)) continue;
      if (id != d.values[i] && names.count(id)) {
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

} // namespace

std::string printExpression(const Program &p, NodeId id, const GradPrintOptions &opts,
                            const std::unordered_map<NodeId, std::string> &names, size_t budget) {
  Renderer r(p.graph, opts);
  r.outerNames = &names;
  r.decls = &p; // not a map of every declaration: printExpression runs once per lowered kernel
  r.budget = budget;
  return r.render(id);
}

std::string printGradient(Program &p, Derivation &d, const GradPrintOptions &opts) {
  Graph &G = p.graph;
  Simplifier &S = *d.simplifier;
  Renderer r(G, opts);
  for (auto *list : {&p.inputs, &p.targets, &p.params})
    for (auto &decl : *list) r.names.emplace(decl.node, decl.name);
  for (size_t i = 0; i < p.values.size(); ++i) r.names.emplace(d.values[i], p.values[i].name);
  auto owner = owners(p, d, r.names);
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
    if (it != owner.end()) paramsOf[it->second].push_back(k), placed.insert(k);
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
    return "";
  };
  for (size_t i = p.values.size(); i-- > 0;) {
    std::string alias = p.values[i].statement == p.loss->statement ? "" : aliasOf(i);
    if (!alias.empty()) {
      aliases += fmt::format("# {} is {} after simplification; see d{}/d{}.\n", p.values[i].name, alias,
                             p.loss->name, alias);
    } else if (p.values[i].statement != p.loss->statement)
      items.push_back({p.values[i].name, d.values[i], false});
    // A statement's params in reverse order too: the bias, added last, comes first.
    for (size_t k : std::vector<size_t>(paramsOf[i].rbegin(), paramsOf[i].rend())) items.push_back({p.params[k].name, p.params[k].node, true});
  }
  for (size_t k = 0; k < p.params.size(); ++k)
    if (!placed.count(k)) items.push_back({p.params[k].name, p.params[k].node, true});

  std::unordered_set<NodeId> originalPath;
  for (NodeId id : G.reachable({p.loss->node})) originalPath.insert(id);

  std::string out = fmt::format("# The gradient of {} for one example, from the loss backwards.\n", L);
  out += "# A param's gradient over a batch is the mean of these.\n";
  // Register every adjoint first (in printing order; the first name for a node wins), so later
  // formulas refer to dE/dNAME of earlier lines.
  for (const Item &it : items) {
    NodeId a = adjointOf(it.fwd);
    double c;
    if (a != kNoNode && !G.constValue(a, c)) r.adjoints.emplace(a, dname(it.name));
  }
  std::string notes;
  for (const Item &it : items) {
    NodeId a = adjointOf(it.fwd);
    std::string lhs = dname(it.name) + " = ";
    if (a == kNoNode) {
      if (it.isParam) out += lhs + "0    (" + L + " does not depend on it)\n";
      else {
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
    r.self = dname(it.name);
    // Group the contributions by the statement of the consumer.
    std::vector<std::pair<std::string, NodeId>> groups;
    for (const Contribution &c : d.gradient.contributions[static_cast<size_t>(it.fwd)]) {
      auto o = owner.find(c.consumer);
      std::string label = o != owner.end() ? p.values[o->second].name : "?";
      NodeId term = S.simplify(c.term);
      bool merged = false;
      for (auto &gp : groups)
        if (gp.first == label) gp.second = S.make(Op::Add, gp.second, term), merged = true;
      if (!merged) groups.emplace_back(label, term);
    }
    if (groups.size() <= 1) {
      out += lhs + r.render(a) + "\n";
      continue;
    }
    out += fmt::format("{}Σ over the {} consumers of {}:\n", lhs, groups.size(), it.name);
    std::string pad(lhs.size() - 2, ' ');
    std::vector<std::string> terms;
    size_t width = 0;
    for (auto &gp : groups) {
      terms.push_back(r.render(gp.second, kSum));
      width = std::max(width, terms.back().size());
    }
    for (size_t k = 0; k < groups.size(); ++k)
      out += fmt::format("{}{} {:<{}}   {} from {}\n", pad, k ? "+" : " ", terms[k], width,
                         opts.ascii ? "<-" : "←", groups[k].first);
  }
  if (opts.ascii) {
    // Keep ASCII output free of the few Unicode letters above.
    std::string fixed;
    for (size_t i = 0; i < out.size(); ++i) {
      if (out.compare(i, 2, "Σ") == 0) fixed += "sum", ++i;
      else fixed += out[i];
    }
    out = fixed;
  }
  return out + notes + aliases;
}

} // namespace nabla
