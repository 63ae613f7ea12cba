// The `check` listing and the graph dump: stable text, pinned by golden tests.
#include "ProgramPrinter.h"

#include <fmt/format.h>

#include <cmath>
#include <unordered_map>

namespace nabla {

std::string formatNumber(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return fmt::format("{}", v); // fmt prints the shortest round-trip form
}

std::string describeInit(const Decl &d) {
  switch (d.init.kind) {
  case Init::Constant: return "= " + formatNumber(d.init.a);
  case Init::Normal: return fmt::format("~ normal({}, {})", formatNumber(d.init.a), formatNumber(d.init.b));
  case Init::Uniform: return fmt::format("~ uniform({}, {})", formatNumber(d.init.a), formatNumber(d.init.b));
  case Init::Glorot: return "~ glorot";
  }
  return "";
}

std::string describeProgram(const Program &p) {
  // A recurrence's per-step values FAMILY[t] (hs.h[0], hs.h[1], ...) are one line per family,
  // `hs.h[0..27]`, where its first step stands (a user's name cannot hold brackets).
  std::unordered_map<std::string, std::pair<int64_t, int64_t>> steps; // family -> first, last t
  auto familyOf = [](const std::string &n) -> std::pair<std::string, int64_t> {
    size_t open = n.rfind('[');
    if (open == std::string::npos || n.back() != ']' || open + 2 > n.size() - 1) return {"", -1};
    int64_t t = 0;
    for (size_t i = open + 1; i + 1 < n.size(); ++i) {
      if (n[i] < '0' || n[i] > '9' || t > 100000000) return {"", -1};
      t = t * 10 + (n[i] - '0');
    }
    return {n.substr(0, open), t};
  };
  for (auto &v : p.values)
    if (auto [family, t] = familyOf(v.name); t >= 0) {
      auto [it, fresh] = steps.try_emplace(family, t, t);
      if (!fresh) it->second.second = std::max(it->second.second, t);
    }
  // The name a value is listed by, or "" for a later step of a family.
  auto listed = [&](const std::string &n) -> std::string {
    auto [family, t] = familyOf(n);
    if (t < 0) return n;
    auto [first, last] = steps.at(family);
    if (t != first) return "";
    return last == first ? n : fmt::format("{}[{}..{}]", family, first, last);
  };
  size_t width = 4, shapeWidth = 10;
  auto widen = [&](const std::string &n) { width = std::max(width, n.size()); };
  for (auto *list : {&p.inputs, &p.targets, &p.params})
    for (auto &d : *list) {
      widen(d.name);
      shapeWidth = std::max(shapeWidth, d.shape.describe().size() + 1);
    }
  for (auto &v : p.values) {
    widen(listed(v.name));
    shapeWidth = std::max(shapeWidth, p.graph.shape(v.node).describe().size() + 1);
  }
  std::string out;
  auto line = [&](const char *kind, const std::string &name, const Shape &s, const std::string &extra) {
    std::string text = fmt::format("{:<6} {:<{}} {:<{}}{}", kind, name, width, s.describe(), shapeWidth, extra);
    while (!text.empty() && text.back() == ' ') text.pop_back();
    out += text + "\n";
  };
  for (auto &d : p.inputs) line("input", d.name, d.shape, "");
  for (auto &d : p.targets) line("target", d.name, d.shape, "");
  for (auto &d : p.params) line("param", d.name, d.shape, " " + describeInit(d));
  for (auto &v : p.values) {
    bool isLoss = p.loss && p.loss->statement == v.statement;
    std::string name = listed(v.name);
    if (name.empty()) continue;
    line(isLoss ? "loss" : "value", name, p.graph.shape(v.node), "");
  }
  for (auto &o : p.outputs) line("output", o.name, p.graph.shape(o.node), "");
  out += fmt::format("{} input scalars, {} target scalars, {} param scalars, {} output scalars per example\n",
                     p.inputCount(), p.targetCount(), p.paramCount(), p.outputCount());
  return out;
}

std::string dumpGraph(const Graph &g, const std::vector<std::pair<std::string, NodeId>> &roots,
                      const Program *prog) {
  std::unordered_map<NodeId, std::string> names;
  if (prog) {
    for (auto *list : {&prog->inputs, &prog->targets, &prog->params})
      for (auto &d : *list) names.emplace(d.node, d.name);
    for (auto &v : prog->values) names.emplace(v.node, v.name);
  }
  std::vector<NodeId> rootIds;
  for (auto &r : roots) rootIds.push_back(r.second);
  std::string out;
  for (NodeId id : g.reachable(rootIds)) {
    const Node &n = g.node(id);
    std::string line = fmt::format("%{} = {}", id, opSpelling(n.op));
    switch (n.op) {
    case Op::Input:
    case Op::Target:
    case Op::Param: line += " " + (prog ? names[id] : std::to_string(n.iattr)); break;
    case Op::Const: line += " " + formatNumber(n.fattr); break;
    case Op::Pow: line += fmt::format(" %{}, {}", n.a(), formatNumber(n.fattr)); break;
    case Op::SumAxis: line += fmt::format(" %{}, axis {}", n.a(), n.iattr); break;
    case Op::Max:
    case Op::Min:
    case Op::ExtremeMask:
      line += fmt::format(" %{}", n.a());
      if (n.op == Op::ExtremeMask) line += n.fattr > 0 ? ", max" : ", min";
      if (n.iattr >= 0) line += fmt::format(", axis {}", n.iattr);
      break;
    case Op::LeakyRelu: line += fmt::format(" %{}, slope {}", n.a(), formatNumber(n.fattr)); break;
    case Op::Concat: line += fmt::format(" %{}, %{}, axis {}", n.a(), n.b(), n.iattr); break;
    case Op::Slice:
    case Op::Pad: {
      line += fmt::format(" %{}, start [", n.a());
      for (size_t k = 0; k < n.attrs.size(); ++k) line += fmt::format("{}{}", k ? ", " : "", n.attrs[k]);
      line += "]";
      break;
    }
    case Op::Conv2d:
    case Op::Conv2dInputGrad:
    case Op::Conv2dKernelGrad:
      line += fmt::format(" %{}, %{}, stride {}, padding {}", n.a(), n.b(), n.attrs.at(0), n.attrs.at(1));
      break;
    case Op::MaxPool2d:
    case Op::MaxPool2dGrad:
    case Op::AvgPool2d:
    case Op::AvgPool2dGrad:
      for (int k = 0; k < n.nin; ++k) line += fmt::format("{} %{}", k ? "," : "", n.in[static_cast<size_t>(k)]);
      line += fmt::format(", window {}, stride {}", n.attrs.at(0), n.attrs.at(1));
      break;
    case Op::Broadcast:
      line += fmt::format(" %{}", n.a());
      if (n.iattr >= 0) line += fmt::format(", along axis {}", n.iattr);
      break;
    default:
      for (int k = 0; k < n.nin; ++k) line += fmt::format("{} %{}", k ? "," : "", n.in[static_cast<size_t>(k)]);
    }
    line += " : " + n.shape.str();
    auto it = names.find(id);
    if (it != names.end() && opKind(n.op) != OpKind::Leaf) line += "    # " + it->second;
    out += line + "\n";
  }
  for (auto &r : roots) out += fmt::format("{} = %{}\n", r.first, r.second);
  return out;
}

} // namespace nabla
