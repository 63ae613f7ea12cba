// The program as dot text: the forward graph and, beside it, the gradient graph of the chain rule.
#include "GraphDot.h"

#include "Explain.h"
#include "GradPrinter.h"
#include "ProgramPrinter.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <unordered_set>

namespace nabla {

std::string dotNodeId(NodeId id) { return fmt::format("n{}", id); }

std::string consumerColour(size_t index) {
  // Tableau's ten (distinct on white, and for most colour-blind readers the first few), then hues
  // a golden angle apart at a fixed, dark enough saturation and value: never two alike.
  static const char *kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                   "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"};
  constexpr size_t n = sizeof kPalette / sizeof *kPalette;
  if (index < n) return kPalette[index];
  const double h = std::fmod(static_cast<double>(index - n) * 137.50776405003785 + 15, 360.0);
  const double s = 0.75, v = 0.70 - 0.15 * static_cast<double>((index - n) % 3) / 2; // HSV
  const double c = v * s, x = c * (1 - std::abs(std::fmod(h / 60, 2) - 1)), m = v - c;
  double r = 0, g = 0, b = 0;
  switch (static_cast<int>(h / 60) % 6) {
  case 0: r = c, g = x; break;
  case 1: r = x, g = c; break;
  case 2: g = c, b = x; break;
  case 3: g = x, b = c; break;
  case 4: r = x, b = c; break;
  default: r = c, b = x; break;
  }
  auto byte = [&](double u) { return static_cast<int>(std::lround((u + m) * 255)); };
  // (the hues of the first few hundred differ by more than a degree, at three values: distinct
  // after rounding to bytes)
  return fmt::format("#{:02x}{:02x}{:02x}", byte(r), byte(g), byte(b));
}

std::string dotEscape(const std::string &s) {
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\', out += ch;
    else if (ch == '\n') out += "\\n";
    else if (static_cast<unsigned char>(ch) < 0x20) out += ' '; // no control character in a label
    else out += ch;
  }
  return out;
}

namespace {

// At most `max` characters (code points, not bytes: the labels hold ᵀ, ⊗, Σ), with … where cut.
std::string shorten(const std::string &s, size_t max) {
  size_t chars = 0, i = 0;
  for (; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) continue; // a continuation byte
    if (chars++ == max) break;
  }
  return i >= s.size() ? s : s.substr(0, i) + "…";
}

// The op of an unnamed node as the source writes it: @, +, ^2, sum(·, 1), x[1:3, :], ...
std::string opLabel(const Graph &g, NodeId id) {
  const Node &n = g.node(id);
  switch (n.op) {
  case Op::Add: return "+";
  case Op::Sub: return "-";
  case Op::Mul: return "*";
  case Op::Div: return "/";
  case Op::MatMul: return "@";
  case Op::Neg: return "neg";
  case Op::Pow: return "^" + formatNumber(n.fattr);
  case Op::Outer: return "⊗";
  case Op::Transpose: return "transpose";
  case Op::SumAxis: return fmt::format("sum axis {}", n.iattr);
  case Op::Max: case Op::Min:
    return n.iattr < 0 ? std::string(opSpelling(n.op)) : fmt::format("{} axis {}", opSpelling(n.op), n.iattr);
  case Op::Concat: return fmt::format("concat axis {}", n.iattr);
  case Op::LeakyRelu: return fmt::format("leaky_relu {}", formatNumber(n.fattr));
  case Op::Slice: {
    const Shape &from = g.shape(n.a());
    std::string idx;
    for (int k = 0; k < n.shape.rank(); ++k) {
      const int64_t lo = n.attrs[static_cast<size_t>(k)], hi = lo + n.shape[k];
      idx += k ? ", " : "";
      idx += lo == 0 && hi == from[k] ? std::string(":") : fmt::format("{}:{}", lo, hi);
    }
    return "[" + idx + "]";
  }
  case Op::Conv2d:
    return fmt::format("conv2d{}{}", n.attrs.at(0) != 1 ? fmt::format(" stride {}", n.attrs[0]) : "",
                       n.attrs.at(1) != 0 ? fmt::format(" padding {}", n.attrs[1]) : "");
  case Op::MaxPool2d: case Op::AvgPool2d: return fmt::format("{} {}", opSpelling(n.op), n.attrs.at(0));
  default: return std::string(opSpelling(n.op));
  }
}

// A recurrence's step value names FAMILY[INDEX] (hs.h[3], or hs.h[t+1] over a step variable; a
// user's name holds no bracket): its family, "" for any other name.
std::string familyOf(const std::string &n) {
  const size_t open = n.rfind('[');
  return open == std::string::npos || open == 0 || n.back() != ']' ? "" : n.substr(0, open);
}
bool isStepName(const std::string &n) { return !familyOf(n).empty(); }
// hs.h[3] rather than hs.h[t]
bool isConcreteStep(const std::string &n) {
  const size_t open = n.rfind('[');
  if (!isStepName(n) || open + 2 >= n.size()) return false;
  for (size_t i = open + 1; i + 1 < n.size(); ++i)
    if (n[i] < '0' || n[i] > '9') return false;
  return true;
}

// The label of a forward node's kind: "param", "input", "target", or its op.
std::string kindLabel(const Graph &g, NodeId id) {
  const Op op = g.op(id);
  if (op == Op::Input || op == Op::Target || op == Op::Param) return std::string(opSpelling(op));
  return opLabel(g, id);
}

} // namespace

NodeId drawnNodeOf(const DotGraph &g, const std::string &name) {
  if (auto it = g.nodeOf.find(name); it != g.nodeOf.end()) return it->second;
  if (auto f = g.familyNode.find(familyOf(name)); f != g.familyNode.end()) return f->second;
  return kNoNode;
}

DotGraph graphToDot(const Program &p, const Explanation *grad, const std::string &title, GraphDetail detail,
                    bool gradientCluster) {
  const Graph &G = p.graph;
  DotGraph out;
  // Every name of every node: declarations first, then the statements (a recurrence's step
  // values included) in source order; `h = x` gives x's node a second name.
  std::unordered_map<NodeId, std::vector<std::string>> names;
  std::vector<NodeId> roots;
  auto name = [&](NodeId id, const std::string &n) {
    auto &list = names[id];
    for (auto &m : list)
      if (m == n) return;
    list.push_back(n);
    out.nodeOf.emplace(n, id);
    roots.push_back(id);
  };
  for (auto *list : {&p.inputs, &p.targets, &p.params})
    for (const Decl &d : *list) name(d.node, d.name);
  for (const NamedValue &v : p.values) name(v.node, v.name);
  std::unordered_set<NodeId> outputs;
  for (const NamedValue &o : p.outputs) outputs.insert(o.node), roots.push_back(o.node);
  const NodeId loss = p.loss ? p.loss->node : kNoNode;

  // The consumers' colours, in the order the explanation lists their terms.
  std::unordered_map<std::string, size_t> colourOf;
  if (grad)
    for (const ExplainEntry &e : grad->entries)
      for (const ExplainTerm &t : e.terms)
        if (colourOf.emplace(t.consumer, out.consumers.size()).second) out.consumers.push_back(t.consumer);

  std::string &t = out.text;
  t += "digraph nabla {\n";
  // Inputs at the bottom and the loss at the top, as the lecture draws a network; the gradient
  // flows down beside it, each adjoint level with its value.
  t += "  rankdir=BT;\n  newrank=true;\n  nodesep=0.3;\n  ranksep=0.35;\n";
  t += fmt::format("  label=\"{}\";\n  labelloc=t;\n  fontname=\"Helvetica\";\n", dotEscape(title));
  t += "  node [fontname=\"Helvetica\", fontsize=11];\n  edge [fontname=\"Helvetica\", fontsize=9, arrowsize=0.6];\n";
  t += "  subgraph cluster_forward {\n    label=\"forward\";\n    labelloc=b;\n    color=\"#bbbbbb\";\n";
  std::string edges;
  const std::vector<NodeId> reachable = G.reachable(roots);
  if (detail == GraphDetail::Auto) {
    size_t ops = 0;
    for (NodeId id : reachable) ops += G.op(id) != Op::Const;
    detail = ops <= kMaxOpNodes ? GraphDetail::Ops : GraphDetail::Values;
  }
  const bool opsToo = detail == GraphDetail::Ops;
  // Values: each named node's expression in the names of the others (as `grad` prints it).
  std::unordered_map<NodeId, std::string> firstName;
  // A recurrence's steps rolled up, as a textbook draws an RNN: one node per family of step values
  // (hs.h[t] for hs.h[0..27]), drawn as its first step's node, and an edge labelled t-1 where
  // step t reads step t-1 (T unrolled steps are T times the picture, and minutes of dot's time).
  struct Step {
    NodeId rep;     // the node the family is drawn as
    std::string family;
    int64_t t;
  };
  std::unordered_map<NodeId, Step> stepOfNode;
  std::unordered_map<NodeId, std::pair<int64_t, int64_t>> familyRange; // rep -> first, last step
  if (!opsToo) {
    for (auto &[id, list] : names) firstName.emplace(id, list.front());
    for (const RecurrenceSteps &rs : p.recurrences) {
      std::unordered_map<std::string, NodeId> repOf;
      for (const StepValue &sv : rs.values) {
        const std::string family = rs.name + "." + sv.name;
        auto [it, fresh] = repOf.emplace(family, sv.node);
        if (stepOfNode.count(sv.node)) continue; // a node of two names: its first
        stepOfNode.emplace(sv.node, Step{it->second, family, sv.t});
        auto [r, first] = familyRange.try_emplace(it->second, sv.t, sv.t);
        r->second.first = std::min(r->second.first, sv.t), r->second.second = std::max(r->second.second, sv.t);
      }
    }
    for (auto &[name_, id] : out.nodeOf)
      if (auto st = stepOfNode.find(id); st != stepOfNode.end()) id = st->second.rep;
    t += "    // the named values only (their unnamed ops are inside each expression)\n";
  }
  // The forward node a name of the explanation is drawn as: its own, or where the steps are rolled
  // up, its family's for a name over a step variable (hs.h[t], hs.h[t+1]).
  std::unordered_map<std::string, NodeId> &familyNode = out.familyNode;
  if (!opsToo)
    for (const RecurrenceSteps &rs : p.recurrences)
      for (const StepValue &sv : rs.values)
        if (auto st = stepOfNode.find(sv.node); st != stepOfNode.end())
          familyNode.emplace(rs.name + "." + sv.name, st->second.rep);
  auto forwardNode = [&](const std::string &n) { return drawnNodeOf(out, n); };
  std::unordered_map<NodeId, std::string> forwardColour; // a consumer's forward node
  for (size_t k = 0; k < out.consumers.size(); ++k)
    if (NodeId id = forwardNode(out.consumers[k]); id != kNoNode) forwardColour.emplace(id, consumerColour(k));
  std::unordered_set<std::string> drawnEdges;
  for (NodeId id : reachable) {
    const Node &n = G.node(id);
    auto nm = names.find(id);
    const bool named = nm != names.end();
    if (!named && (n.op == Op::Const || !opsToo)) continue; // a literal is drawn beside each use, below
    const auto step = opsToo ? stepOfNode.end() : stepOfNode.find(id);
    const bool isStep = step != stepOfNode.end();
    const NodeId drawn = isStep ? step->second.rep : id;
    std::string attrs;
    if (isStep && drawn != id) {
      // a later step: drawn as its family's node, only its edges below
    } else if (named) {
      std::string label;
      for (size_t k = 0; k < nm->second.size(); ++k) label += (k ? " = " : "") + nm->second[k];
      std::string kind = kindLabel(G, id), tip = label;
      if (isStep) {
        auto [first, last] = familyRange.at(id);
        label = step->second.family + "[t]";
        tip = fmt::format("{}, t={}..{}; {}", label, first, last, tip);
        kind = fmt::format("{}, t={}..{}", kindLabel(G, id), first, last);
      }
      if (!opsToo && opKind(n.op) != OpKind::Leaf) {
        // its expression, without its own name (which would print the name itself)
        auto self = firstName.extract(id);
        const std::string expr = printExpression(p, id, GradPrintOptions{}, firstName, 400);
        firstName.insert(std::move(self));
        tip += " = " + expr;
        if (!isStep) kind = "= " + shorten(expr, 36);
        for (const RecurrenceSteps &rs : p.recurrences) // hs = gru(xs, 32): not the long concat
          if (rs.name == nm->second.front() && !rs.values.empty())
            kind = fmt::format("the {} steps {}.{}[t], stacked", rs.steps, rs.name, rs.values.back().name);
      }
      label += "\n" + kind + "  " + n.shape.describe();
      std::string style = "filled", fill = "#ffffff", shape = "box";
      if (n.op == Op::Param) fill = "#fff3c4";
      else if (n.op == Op::Input || n.op == Op::Target) fill = "#dfeaff", style = "rounded,filled";
      else if (n.op == Op::Const) fill = "#eeeeee";
      else style = "rounded,filled";
      attrs = fmt::format("label=\"{}\", shape={}, style=\"{}\", fillcolor=\"{}\"", dotEscape(label), shape,
                          style, fill);
      if (id == loss || outputs.count(id)) attrs += ", peripheries=2";
      if (auto c = forwardColour.find(id); c != forwardColour.end())
        attrs += fmt::format(", color=\"{}\", penwidth=2.5", c->second);
      else attrs += ", penwidth=1.2";
      attrs += fmt::format(", tooltip=\"{}\"", dotEscape(tip + "  " + n.shape.describe()));
    } else {
      std::string label = opLabel(G, id) + "\n" + n.shape.describe();
      attrs = fmt::format("label=\"{}\", shape=ellipse, fontsize=9, color=\"#777777\", fontcolor=\"#444444\", "
                          "margin=\"0.02,0.01\", height=0.3",
                          dotEscape(label));
    }
    if (!attrs.empty()) t += fmt::format("    {} [id=\"{}\", {}];\n", dotNodeId(id), dotNodeId(id), attrs);
    if (!opsToo) {
      // an edge from every named node that the expression reads, through its unnamed ops
      std::vector<NodeId> stack, from;
      std::unordered_set<NodeId> seen;
      for (int k = 0; k < n.nin; ++k) stack.push_back(n.in[static_cast<size_t>(k)]);
      while (!stack.empty()) {
        const NodeId in = stack.back();
        stack.pop_back();
        if (!seen.insert(in).second) continue;
        if (names.count(in)) {
          from.push_back(in);
          continue;
        }
        const Node &m = G.node(in);
        for (int k = m.nin; k-- > 0;) stack.push_back(m.in[static_cast<size_t>(k)]);
      }
      std::sort(from.begin(), from.end());
      for (NodeId in : from) {
        auto st = stepOfNode.find(in);
        const NodeId src = st != stepOfNode.end() ? st->second.rep : in;
        // step t reading step t-k of its own recurrence: labelled with the lag
        std::string lag;
        if (isStep && st != stepOfNode.end() && st->second.t != step->second.t) {
          const int64_t d = step->second.t - st->second.t;
          lag = d > 0 ? fmt::format("t-{}", d) : fmt::format("t+{}", -d);
        }
        const std::string e = fmt::format("{} -> {}{}", dotNodeId(src), dotNodeId(drawn),
                                          lag.empty() ? "" : fmt::format(" [label=\"{}\"]", lag));
        if (drawnEdges.insert(e).second) edges += "    " + e + ";\n";
      }
      continue;
    }
    for (int k = 0; k < n.nin; ++k) {
      const NodeId in = n.in[static_cast<size_t>(k)];
      if (G.op(in) == Op::Const && !names.count(in)) {
        // a literal beside its one use (hash-consing shares `2` between every use, which would
        // draw long edges across the picture for nothing)
        const std::string cid = fmt::format("c{}_{}", id, k);
        t += fmt::format("    {} [label=\"{}\", shape=plaintext, fontsize=9, height=0.2, margin=0];\n", cid,
                         dotEscape(formatNumber(G.node(in).fattr)));
        edges += fmt::format("    {} -> {} [color=\"#999999\"];\n", cid, dotNodeId(id));
        continue;
      }
      edges += fmt::format("    {} -> {};\n", dotNodeId(in), dotNodeId(id));
    }
  }
  t += edges + "  }\n";

  if (grad && gradientCluster) {
    // The gradient: dE/dNAME per entry; an edge per term, from the consumer's adjoint down to the
    // value's (written value -> consumer with dir=back, so that the consumer ranks above).
    t += "  subgraph cluster_gradient {\n";
    t += fmt::format("    label=\"gradient: d{0}/dy_i = Σ_j d{0}/dz_j · dz_j/dy_i\";\n    labelloc=b;\n    color=\"#bbbbbb\";\n",
                     dotEscape(grad->loss));
    std::unordered_map<std::string, std::string> gid; // a name -> its adjoint's dot id
    gid[grad->loss] = "gloss";
    std::unordered_map<std::string, std::string> blockOf; // a family -> its block over steps (hs.h[t])
    t += fmt::format("    gloss [id=\"gloss\", label=\"d{0}/d{0} = 1\", shape=box, style=\"rounded\", peripheries=2];\n",
                     dotEscape(grad->loss));
    for (size_t i = 0; i < grad->entries.size(); ++i) {
      const ExplainEntry &e = grad->entries[i];
      const std::string id = fmt::format("g{}", i);
      gid.emplace(e.name, id);
      if (isStepName(e.name) && !isConcreteStep(e.name)) blockOf.emplace(familyOf(e.name), id);
      std::string attrs = fmt::format("label=\"{}\\n{}\", shape=box, style=\"{}\"", dotEscape(e.gradient),
                                      dotEscape(e.shape), e.isParam ? "filled" : "rounded,filled");
      attrs += e.isParam ? ", fillcolor=\"#fff3c4\"" : ", fillcolor=\"#ffffff\"";
      if (e.terms.empty()) attrs += ", color=\"#999999\", fontcolor=\"#777777\"";
      std::string tip = e.gradient + " = " + e.formula;
      if (!e.note.empty()) tip += "  (" + e.note + ")";
      attrs += fmt::format(", tooltip=\"{}\"", dotEscape(tip));
      t += fmt::format("    {} [id=\"{}\", {}];\n", id, id, attrs);
    }
    std::string gedges;
    size_t extra = 0;
    for (size_t i = 0; i < grad->entries.size(); ++i) {
      const ExplainEntry &e = grad->entries[i];
      for (size_t k = 0; k < e.terms.size(); ++k) {
        const ExplainTerm &term = e.terms[k];
        auto from = gid.find(term.consumer);
        if (from == gid.end()) // hs.h[t+1] of the block hs.h[t]: its own adjoint, one step on
          if (auto b = blockOf.find(familyOf(term.consumer)); b != blockOf.end() && isStepName(term.consumer))
            from = gid.emplace(term.consumer, b->second).first;
        if (from == gid.end()) { // a consumer that is no entry (a step's term over t: hs.h[t])
          const std::string id = fmt::format("gx{}", extra++);
          t += fmt::format("    {} [label=\"d{}/d{}\", shape=box, style=\"rounded,dashed\"];\n", id,
                           dotEscape(grad->loss), dotEscape(term.consumer));
          from = gid.emplace(term.consumer, id).first;
        }
        const std::string colour = consumerColour(colourOf.at(term.consumer));
        std::string label = shorten(term.formula, 40);
        if (!term.steps.empty()) label = "Σ_{" + term.steps + "} " + label;
        std::string tip = fmt::format("from {}{}: {}", term.consumer,
                                      term.line > 0 ? fmt::format(", line {}", term.line) : "", term.formula);
        gedges += fmt::format("    g{} -> {} [dir=back, color=\"{}\", fontcolor=\"{}\", penwidth=1.6, "
                              "label=\"{}\", tooltip=\"{}\", id=\"e{}_{}\"];\n",
                              i, from->second, colour, colour, dotEscape(label), dotEscape(tip), i, k);
      }
    }
    t += gedges + "  }\n";
    // Each adjoint level with its value (a rank constraint only; no edge is drawn).
    for (size_t i = 0; i < grad->entries.size(); ++i)
      if (NodeId id = forwardNode(grad->entries[i].name); id != kNoNode)
        t += fmt::format("  {{ rank=same; {}; g{}; }}\n", dotNodeId(id), i);
    if (loss != kNoNode) t += fmt::format("  {{ rank=same; {}; gloss; }}\n", dotNodeId(loss));
  }
  t += "}\n";
  return out;
}

} // namespace nabla
