// Explain: see Explain.h. The derivation is grad's (listGradient): the same items in the same
// order, the same terms per consumer. This file adds what a worked example needs: the source line
// of every consumer, each small gradient written element by element (the lecture's scalar form),
// and the numbers of one example, every term evaluated by the interpreter in f64.
#include "Explain.h"

#include "GradPrinter.h"
#include "Interpreter.h"
#include "ProgramPrinter.h"
#include "Sema.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <unordered_map>

namespace nabla {

namespace {

// Row-major strides: the flat position of a multi-index.
int64_t flatIndex(const Shape &s, const std::vector<int64_t> &idx) {
  int64_t f = 0;
  for (int k = 0; k < s.rank(); ++k) f = f * s[k] + idx[static_cast<size_t>(k)];
  return f;
}

std::vector<int64_t> multiIndex(const Shape &s, int64_t flat) {
  std::vector<int64_t> idx(static_cast<size_t>(s.rank()));
  for (int k = s.rank(); k-- > 0;) {
    idx[static_cast<size_t>(k)] = flat % s[k];
    flat /= s[k];
  }
  return idx;
}

std::string indexText(const std::vector<int64_t> &idx) {
  std::string s;
  for (size_t k = 0; k < idx.size(); ++k) s += fmt::format("{}{}", k ? "," : "", idx[k]);
  return s;
}

// A number as a worked example shows it: 4 significant digits (0.0213, -1.5e-05).
std::string num(double v) {
  if (v == 0) return "0";
  std::string s = fmt::format("{:.4g}", v);
  return s == "-0" ? "0" : s;
}

// The index of operand `of` (shape `from`) that supplies element `idx` of a result of shape `to`
// under NumPy's broadcasting (trailing axes aligned, axes of extent 1 repeated).
std::vector<int64_t> alignIndex(const Shape &from, const Shape &to, const std::vector<int64_t> &idx) {
  std::vector<int64_t> out(static_cast<size_t>(from.rank()));
  const int shift = to.rank() - from.rank();
  for (int k = 0; k < from.rank(); ++k)
    out[static_cast<size_t>(k)] = from[k] == 1 ? 0 : idx[static_cast<size_t>(k + shift)];
  return out;
}

enum Prec { kSum = 1, kProduct = 2, kUnary = 3, kAtom = 5 };

// One scalar of a per-element formula: its text, how tightly it binds, and (with numbers) its value.
struct Scalar {
  std::string text;
  int prec = kAtom;
  double value = std::numeric_limits<double>::quiet_NaN();
};

// Writes element `idx` of a gradient term as scalars, in the names of the listing: a matrix
// product as the sum of its products (W_jᵀ dE/dz_j at [1] is W_j[0,1]·dE/dz_j[0] + W_j[1,1]·dE/dz_j[1]),
// an outer product as one product, elementwise ops elementwise. Sums longer than `maxExpand` stay
// one Σ_k term; ops without a scalar form print as (FORMULA)[idx].
class ScalarForm {
public:
  ScalarForm(const Program &p, const GradListing &l, const Interpreter<double> *values, bool ascii, int maxExpand)
      : p_(p), g_(p.graph), l_(l), values_(values), ascii_(ascii), maxExpand_(maxExpand) {
    merged_ = l.names;
    for (auto &[node, name] : l.adjoints) merged_[node] = name; // dE/dNAME before NAME's value
    // Adjoints c * X by X, as grad reads them (see GradPrinter's Renderer::scaled).
    for (auto &[node, name] : l.adjoints) {
      const Node &m = g_.node(node);
      if (m.op == Op::Mul && g_.op(m.a()) == Op::Const) scaled_[m.b()].emplace_back(g_.node(m.a()).fattr, node);
    }
  }

  // The gradient being written out, never written as its own name.
  NodeId self_ = kNoNode;
  // Numbers for names: every named value, adjoint, input and param as its value in the example
  // (the formula with its numbers, -0.5988·0.4012·(1 - 0.4012)).
  bool numeric_ = false;

  // The addends of element idx of node id (a top-level sum split into its terms).
  std::vector<Scalar> addends(NodeId id, const std::vector<int64_t> &idx) {
    if (named(id)) return {at(id, idx)};
    const Node &n = g_.node(id);
    switch (n.op) {
    case Op::Add: {
      auto a = addends(n.a(), alignIndex(g_.shape(n.a()), n.shape, idx));
      auto b = addends(n.b(), alignIndex(g_.shape(n.b()), n.shape, idx));
      a.insert(a.end(), b.begin(), b.end());
      return a;
    }
    case Op::MatMul: {
      const Shape &A = g_.shape(n.a());
      const int64_t K = A[A.rank() - 1];
      if (K > maxExpand_) return {at(id, idx)};
      std::vector<Scalar> out;
      for (int64_t k = 0; k < K; ++k) out.push_back(matmulProduct(n, idx, k));
      return out;
    }
    case Op::Transpose: return addends(n.a(), {idx[1], idx[0]});
    case Op::SumTo: case Op::Sum: case Op::SumAxis: {
      auto from = reducedIndices(n, idx);
      if (static_cast<int64_t>(from.size()) > maxExpand_) return {at(id, idx)};
      std::vector<Scalar> out;
      for (auto &src : from) {
        auto a = addends(n.a(), src);
        out.insert(out.end(), a.begin(), a.end());
      }
      return out;
    }
    case Op::Broadcast: return addends(n.a(), broadcastSource(n, idx));
    default: return {at(id, idx)};
    }
  }

  // Element idx of node id as one scalar expression.
  Scalar at(NodeId id, const std::vector<int64_t> &idx) {
    Scalar s = textAt(id, idx);
    s.value = valueAt(id, idx);
    return s;
  }

private:
  bool named(NodeId id) const { return id != self_ && (l_.adjoints.count(id) || l_.names.count(id)); }
  const char *times() const { return ascii_ ? "*" : "·"; }

  double valueAt(NodeId id, const std::vector<int64_t> &idx) const {
    if (!values_) return std::numeric_limits<double>::quiet_NaN();
    const auto &v = values_->value(id);
    const int64_t f = flatIndex(g_.shape(id), idx);
    return f >= 0 && static_cast<size_t>(f) < v.size() ? v[static_cast<size_t>(f)]
                                                        : std::numeric_limits<double>::quiet_NaN();
  }

  static std::string wrap(const Scalar &s, int outer) { return s.prec < outer ? "(" + s.text + ")" : s.text; }

  Scalar matmulProduct(const Node &n, const std::vector<int64_t> &idx, int64_t k) {
    const Shape &A = g_.shape(n.a()), &B = g_.shape(n.b());
    // [m,k]@[k] -> [m]; [m,k]@[k,n] -> [m,n]; [k]@[k,n] -> [n]; [k]@[k] -> []
    std::vector<int64_t> ia, ib;
    if (A.rank() == 2) ia = {idx[0], k};
    else ia = {k};
    if (B.rank() == 2) ib = {k, idx.empty() ? 0 : idx.back()};
    else ib = {k};
    Scalar a = at(n.a(), ia), b = at(n.b(), ib);
    return {wrap(a, kProduct) + times() + wrap(b, kUnary), kProduct, a.value * b.value};
  }

  // The elements of a Sum, SumAxis or SumTo's operand that add up to element idx.
  std::vector<std::vector<int64_t>> reducedIndices(const Node &n, const std::vector<int64_t> &idx) const {
    const Shape &from = g_.shape(n.a());
    std::vector<std::vector<int64_t>> out;
    for (int64_t f = 0; f < from.numel(); ++f) {
      auto src = multiIndex(from, f);
      bool hit = true;
      if (n.op == Op::SumAxis) {
        for (int k = 0, j = 0; k < from.rank(); ++k)
          if (k != n.iattr) hit &= src[static_cast<size_t>(k)] == idx[static_cast<size_t>(j++)];
      } else if (n.op == Op::SumTo) {
        hit = alignIndex(n.shape, from, src) == idx;
      }
      if (hit) out.push_back(std::move(src));
    }
    return out;
  }

  std::vector<int64_t> broadcastSource(const Node &n, const std::vector<int64_t> &idx) const {
    const Shape &from = g_.shape(n.a());
    if (n.iattr >= 0 && from.rank() == n.shape.rank() - 1) {
      std::vector<int64_t> out = idx;
      out.erase(out.begin() + n.iattr);
      return out;
    }
    return alignIndex(from, n.shape, idx);
  }

  std::string nameAt(const std::string &name, const std::vector<int64_t> &idx) const {
    return idx.empty() ? name : fmt::format("{}[{}]", name, indexText(idx));
  }

  Scalar textAt(NodeId id, const std::vector<int64_t> &idx) {
    if (numeric_ && values_ && (named(id) || g_.node(id).nin == 0)) {
      const double v = valueAt(id, idx);
      return {num(v), v < 0 ? kSum : kAtom}; // (-0.1439) in a product
    }
    if (auto a = l_.adjoints.find(id); a != l_.adjoints.end() && id != self_) return {nameAt(a->second, idx)};
    if (auto nm = l_.names.find(id); nm != l_.names.end() && id != self_) return {nameAt(nm->second, idx)};
    const Node &n = g_.node(id);
    auto operand = [&](int k) {
      NodeId o = n.in[static_cast<size_t>(k)];
      return at(o, alignIndex(g_.shape(o), n.shape, idx));
    };
    switch (n.op) {
    case Op::Const: { // as grad writes constants: 2/3, sqrt(3), 1/√2
      GradPrintOptions o;
      o.ascii = ascii_;
      std::string t = printExpression(p_, id, o);
      const bool atom = t.find_first_of(" /") == std::string::npos && t[0] != '-';
      return {t, atom ? kAtom : t[0] == '-' ? kUnary : kProduct};
    }
    case Op::Neg: return {"-" + wrap(operand(0), kAtom), kUnary};
    case Op::Pow: return {fmt::format("{}^{}", wrap(operand(0), kAtom), formatNumber(n.fattr)), kAtom};
    case Op::Add: return {wrap(operand(0), kSum) + " + " + wrap(operand(1), kSum), kSum};
    case Op::Sub: return {wrap(operand(0), kSum) + " - " + wrap(operand(1), kProduct), kSum};
    case Op::Mul:
      if (g_.op(n.a()) == Op::Const && g_.op(n.b()) == Op::Mul && !scaled_.empty()) {
        // c * (X * Y * ...) with dE/dNAME = c * X: dE/dNAME·Y·..., as grad prints it; each factor
        // at the index its broadcasting gives
        std::vector<std::pair<NodeId, std::vector<int64_t>>> fs;
        std::function<void(NodeId, const std::vector<int64_t> &)> flatten = [&](NodeId f, const std::vector<int64_t> &at) {
          if (g_.op(f) == Op::Mul && !named(f) && fs.size() < 16) {
            const Node &m = g_.node(f);
            flatten(m.a(), alignIndex(g_.shape(m.a()), m.shape, at));
            flatten(m.b(), alignIndex(g_.shape(m.b()), m.shape, at));
          } else {
            fs.emplace_back(f, at);
          }
        };
        flatten(n.b(), alignIndex(g_.shape(n.b()), n.shape, idx));
        for (size_t i = 0; i < fs.size(); ++i) {
          auto it = scaled_.find(fs[i].first);
          if (it == scaled_.end()) continue;
          for (auto &[c, adj] : it->second) {
            if (c != g_.node(n.a()).fattr || adj == self_) continue;
            std::string text;
            for (size_t j = 0; j < fs.size(); ++j) {
              Scalar f = j == i ? at(adj, alignIndex(g_.shape(adj), g_.shape(fs[i].first), fs[i].second))
                                : at(fs[j].first, fs[j].second);
              text += (j ? times() : "") + wrap(f, j ? kUnary : kProduct);
            }
            return {text, kProduct};
          }
        }
      }
      return {wrap(operand(0), kProduct) + times() + wrap(operand(1), kUnary), kProduct};
    case Op::Div: return {wrap(operand(0), kProduct) + " / " + wrap(operand(1), kUnary), kProduct};
    case Op::Outer: {
      Scalar a = at(n.a(), {idx[0]}), b = at(n.b(), {idx[1]});
      return {wrap(a, kProduct) + times() + wrap(b, kUnary), kProduct};
    }
    case Op::Transpose: return textAt(n.a(), {idx[1], idx[0]});
    case Op::Broadcast: return textAt(n.a(), broadcastSource(n, idx));
    case Op::MatMul: {
      const Shape &A = g_.shape(n.a());
      const int64_t K = A[A.rank() - 1];
      if (K <= maxExpand_) {
        std::string s;
        for (int64_t k = 0; k < K; ++k) s += (k ? " + " : "") + matmulProduct(n, idx, k).text;
        return {s, K > 1 ? kSum : kProduct};
      }
      break;
    }
    case Op::SumTo: case Op::Sum: case Op::SumAxis: {
      auto from = reducedIndices(n, idx);
      if (static_cast<int64_t>(from.size()) <= maxExpand_) {
        std::string s;
        for (size_t k = 0; k < from.size(); ++k) s += (k ? " + " : "") + wrap(at(n.a(), from[k]), kSum);
        return {s, from.size() > 1 ? kSum : kAtom};
      }
      break;
    }
    default:
      if (opKind(n.op) == OpKind::Unary)
        return {fmt::format("{}({})", opSpelling(n.op), operand(0).text), kAtom};
      if (n.op == Op::Maximum || n.op == Op::Minimum)
        return {fmt::format("{}({}, {})", opSpelling(n.op), operand(0).text, operand(1).text), kAtom};
      if (n.op == Op::GreaterEq)
        return {fmt::format("[{} {} {}]", operand(0).text, ascii_ ? ">=" : "≥", operand(1).text), kAtom};
      break;
    }
    // No scalar form: the formula, indexed.
    if (numeric_ && values_) {
      const double v = valueAt(id, idx);
      return {num(v), v < 0 ? kSum : kAtom}; // (-0.1439) in a product
    }
    GradPrintOptions o;
    o.ascii = ascii_;
    std::string whole = printExpression(p_, id, o, merged_, 400);
    return {idx.empty() ? "(" + whole + ")" : fmt::format("({})[{}]", whole, indexText(idx))};
  }

  const Program &p_;
  const Graph &g_;
  const GradListing &l_;
  const Interpreter<double> *values_;
  bool ascii_;
  int64_t maxExpand_;
  std::unordered_map<NodeId, std::string> merged_; // names and adjoints, for printExpression
  std::unordered_map<NodeId, std::vector<std::pair<double, NodeId>>> scaled_;
};

// The names a user may ask for, for the did-you-mean of an unknown one.
std::vector<std::string> knownNames(const Program &p) {
  std::vector<std::string> out;
  for (auto *list : {&p.params, &p.inputs, &p.targets})
    for (const Decl &d : *list) out.push_back(d.name);
  for (const NamedValue &v : p.values) out.push_back(v.name);
  for (const RecurrenceSteps &rs : p.recurrences)
    for (const StepValue &sv : rs.values) out.push_back(fmt::format("{}.{}[{}]", rs.name, sv.name, sv.t));
  return out;
}

// The source line of a consumer's statement (a recurrence's step: its statement's).
int lineOfStatement(const Program &p, size_t statement) {
  return statement < p.values.size() ? static_cast<int>(p.values[statement].loc.line) : 0;
}

int lineOfItem(const Program &p, const GradListItem &it) {
  if (it.isParam)
    for (const Decl &d : p.params)
      if (d.name == it.name) return static_cast<int>(d.loc.line);
  for (const NamedValue &v : p.values)
    if (v.name == it.name) return static_cast<int>(v.loc.line);
  // a step value (hs.h[3], or hs.h[t] over steps): its recurrence's statement
  const size_t dot = it.name.find('.');
  const std::string family = it.name.substr(0, dot);
  for (const RecurrenceSteps &rs : p.recurrences)
    if (rs.name == family)
      for (const NamedValue &v : p.values)
        if (v.statement == rs.statement) return static_cast<int>(v.loc.line);
  return 0;
}

std::string shapeText(const Shape &s) { return s.isScalar() ? "scalar" : s.str(); }

// Whether a value is small enough for its per-element form: a layer of at most maxUnits units
// (a weight matrix of at most maxUnits rows and columns, and 16 elements, so a page stays readable).
bool smallEnough(const Shape &s, int maxUnits) {
  if (maxUnits <= 0 || s.rank() > 2) return false;
  for (int k = 0; k < s.rank(); ++k)
    if (s[k] > maxUnits) return false;
  return s.numel() <= std::max(16, maxUnits);
}

} // namespace

Expected<Explanation> explain(Program &p, Derivation &d, const ExplainOptions &opts) {
  if (!p.loss) return Error{fmt::format("{}: error: 'explain' needs a program with a `loss` line", p.source.name)};
  GradPrintOptions gopts;
  gopts.ascii = opts.ascii;
  // With numbers each step of a recurrence is its own entry (their numbers differ).
  const GradListing listing = listGradient(p, d, gopts, /*perStep=*/opts.withNumbers, /*wantWhole=*/true);
  const Graph &G = p.graph;
  auto fix = [&](std::string s) { return opts.ascii ? asciiLetters(s) : s; };

  Explanation e;
  e.file = p.source.name;
  e.loss = p.loss->name;
  e.example = opts.example;

  // Which items: all, or the named ones (in grad's order), each name known to the program.
  std::vector<const GradListItem *> chosen;
  if (opts.names.empty()) {
    for (const GradListItem &it : listing.items) chosen.push_back(&it);
  } else {
    const std::vector<std::string> known = knownNames(p);
    for (const std::string &name : opts.names) {
      if (std::find(known.begin(), known.end(), name) == known.end()) {
        return Error{fmt::format("{}: error: no value or param named '{}'{}", p.source.name, name,
                                 suggestName(name, known))};
      }
    }
    for (const GradListItem &it : listing.items) {
      bool want = std::find(opts.names.begin(), opts.names.end(), it.name) != opts.names.end();
      // a block over steps (hs.h[t]) answers for each of its steps' names
      if (!want && !it.range.empty()) {
        auto t = it.name.rfind('[');
        for (const std::string &n : opts.names)
          want |= n.size() > t && n.compare(0, t, it.name, 0, t) == 0 && n[t] == '[';
      }
      if (want) chosen.push_back(&it);
    }
    for (const std::string &name : opts.names) {
      bool found = false;
      for (const GradListItem *it : chosen) found |= it->name == name || (!it->range.empty() && name.rfind(it->name.substr(0, it->name.rfind('[')), 0) == 0);
      if (found) continue;
      // A name without a gradient of its own: an input, a target, a value simplified into
      // another, or one the loss does not reach.
      ExplainEntry entry;
      entry.name = name;
      entry.gradient = fmt::format("d{}/d{}", e.loss, name);
      for (auto *list : {&p.inputs, &p.targets})
        for (const Decl &dd : *list)
          if (dd.name == name) entry.note = "an input or target: nabla differentiates with respect to params and values only";
      if (entry.note.empty()) {
        const std::string aliasLine = fmt::format("# {} is ", name);
        for (size_t at = listing.aliases.find(aliasLine); at != std::string::npos;) {
          size_t end = listing.aliases.find('\n', at);
          entry.note = listing.aliases.substr(at + 2, end - at - 2);
          break;
        }
      }
      if (entry.note.empty() && name == e.loss) entry.note = fmt::format("the loss itself: d{0}/d{0} = 1", e.loss);
      if (entry.note.empty()) // grad's own note (the from-logits forms of cross_entropy and bce)
        for (size_t at = listing.notes.find(fmt::format("# d{}/d{} is not shown: ", e.loss, name));
             at != std::string::npos;) {
          const size_t from = listing.notes.find(": ", at) + 2, end = listing.notes.find('\n', at);
          entry.note = listing.notes.substr(from, end - from);
          if (!entry.note.empty() && entry.note.back() == '.') entry.note.pop_back();
          break;
        }
      for (const RecurrenceSteps &rs : p.recurrences)
        if (entry.note.empty() && rs.name == name)
          entry.note = fmt::format("the states of a recurrence: its gradient is its steps' (d{}/d{}.h[{}])", e.loss,
                                   name, listing.stepVar);
      if (entry.note.empty()) entry.note = fmt::format("{} does not depend on it", e.loss);
      for (const NamedValue &v : p.values)
        if (v.name == name) entry.line = static_cast<int>(v.loc.line), entry.shape = shapeText(G.shape(v.node));
      for (auto *list : {&p.inputs, &p.targets})
        for (const Decl &dd : *list)
          if (dd.name == name) entry.line = static_cast<int>(dd.loc.line), entry.shape = shapeText(dd.shape);
      e.entries.push_back(std::move(entry));
    }
  }

  // The numbers: one interpreter run over every node the entries show.
  std::unique_ptr<Interpreter<double>> values;
  if (opts.withNumbers) {
    if (opts.params.size() != static_cast<size_t>(p.paramCount()) ||
        opts.inputs.size() != static_cast<size_t>(p.inputCount()) ||
        opts.targets.size() != static_cast<size_t>(p.targetCount()))
      return Error{"internal error: explain: the example's sizes do not match the program"};
    std::vector<NodeId> roots{d.loss};
    for (const GradListItem *it : chosen) {
      roots.push_back(it->fwd);
      if (it->adjoint != kNoNode) roots.push_back(it->adjoint);
      for (const GradTermLine &t : it->terms) roots.insert(roots.end(), t.nodes.begin(), t.nodes.end());
    }
    // The adjoints and names the per-element forms refer to.
    for (auto &[node, name] : listing.adjoints) roots.push_back(node);
    for (auto &[node, name] : listing.names) roots.push_back(node);
    // The interpreter keeps every value it computes: bounded, so that a huge program is an error
    // rather than an allocation failure (the engines of eval and train budget their memory too).
    constexpr int64_t kMaxScalars = int64_t(1) << 27; // 1 GiB of doubles
    int64_t scalars = 0;
    for (NodeId id : G.reachable(roots)) scalars += G.shape(id).numel();
    if (scalars > kMaxScalars)
      return Error{fmt::format("{}: error: explaining with numbers keeps {} values ({:.1f} GiB in f64), more "
                               "than 1 GiB; explain without an example, or name fewer values",
                               p.source.name, scalars, double(scalars) * 8 / double(int64_t(1) << 30))};
    values = std::make_unique<Interpreter<double>>(p, G, roots);
    values->run(opts.params.data(), opts.inputs.data(), opts.targets.data());
    e.lossValue = values->value(d.loss).at(0);
  }
  ScalarForm scalars(p, listing, values.get(), opts.ascii, opts.maxUnits);

  std::vector<ExplainEntry> built;
  for (const GradListItem *it : chosen) {
    ExplainEntry entry;
    entry.name = it->name;
    entry.isParam = it->isParam;
    entry.line = lineOfItem(p, *it);
    const Shape &shape = G.shape(it->fwd);
    entry.shape = shapeText(shape);
    entry.gradient = fix(it->lhs);
    entry.formula = fix(it->formula);
    entry.note = it->note;
    if (!it->range.empty()) entry.note = fmt::format("for {}: the same formula at every one of these steps", fix(it->range));
    for (const GradTermLine &t : it->terms) {
      ExplainTerm term;
      term.consumer = fix(t.label);
      term.line = lineOfStatement(p, t.statement);
      term.formula = fix(t.text);
      term.steps = fix(t.range);
      if (values) {
        std::vector<double> sum(static_cast<size_t>(shape.numel()), 0.0);
        bool ok = true;
        for (NodeId n : t.nodes) {
          const auto &v = values->value(n);
          if (v.size() != sum.size()) { ok = false; break; }
          for (size_t k = 0; k < sum.size(); ++k) sum[k] += v[k];
        }
        if (ok) term.value = std::move(sum);
      }
      entry.terms.push_back(std::move(term));
    }
    if (values) {
      entry.forward = values->value(it->fwd);
      if (it->adjoint != kNoNode) entry.numbers = values->value(it->adjoint);
      else entry.numbers = std::vector<double>(static_cast<size_t>(shape.numel()), 0.0);
      // The chain rule, checked: the terms add up to the gradient computed as a whole.
      for (size_t k = 0; k < entry.numbers->size() && !entry.terms.empty(); ++k) {
        double s = 0, scale = std::abs((*entry.numbers)[k]);
        bool all = true;
        for (const ExplainTerm &t : entry.terms) {
          if (!t.value) { all = false; break; }
          s += (*t.value)[k];
          scale = std::max(scale, std::abs((*t.value)[k]));
        }
        // (an infinite or NaN gradient, a program that overflows, is checked for being the same)
        const double want = (*entry.numbers)[k];
        const bool same = s == want || (std::isnan(s) && std::isnan(want)) ||
                          std::abs(s - want) <= 1e-9 * std::max(1.0, scale);
        if (all && !same)
          return Error{fmt::format("internal error: explain: the terms of {}[{}] add up to {} but the "
                                   "gradient is {}", entry.gradient, k, s, (*entry.numbers)[k])};
      }
    }
    // The per-element form, consumers in order, each term's products in turn.
    double constant;
    if (it->adjoint != kNoNode && it->range.empty() && smallEnough(shape, opts.maxUnits) &&
        !G.constValue(it->adjoint, constant)) { // (a constant gradient is the same at every element)
      // (an adjoint that another entry names, dE/db_j = dE/dz_j, keeps that name)
      auto named = listing.adjoints.find(it->adjoint);
      scalars.self_ = named == listing.adjoints.end() || named->second == it->lhs ? it->adjoint : kNoNode;
      for (int64_t f = 0; f < shape.numel(); ++f) {
        const auto idx = multiIndex(shape, f);
        ExplainScalar sc;
        sc.lhs = idx.empty() ? entry.gradient : fmt::format("{}[{}]", entry.gradient, indexText(idx));
        std::vector<NodeId> nodes;
        for (const GradTermLine &t : it->terms) nodes.insert(nodes.end(), t.nodes.begin(), t.nodes.end());
        if (nodes.empty()) nodes.push_back(it->adjoint);
        for (NodeId n : nodes)
          for (const Scalar &s : scalars.addends(n, idx)) {
            sc.terms.push_back(fix(s.text));
            if (values) sc.values.push_back(s.value);
          }
        if (values) { // the same products with the example's numbers
          scalars.numeric_ = true;
          for (NodeId n : nodes)
            for (const Scalar &s : scalars.addends(n, idx)) sc.numeric.push_back(fix(s.text));
          scalars.numeric_ = false;
          if (sc.numeric.size() != sc.terms.size()) sc.numeric.clear();
        }
        if (entry.numbers) sc.total = (*entry.numbers)[static_cast<size_t>(f)];
        // A scalar whose one product is the formula itself says nothing new.
        if (shape.isScalar() && sc.terms.size() == 1 && sc.terms[0] == entry.formula) break;
        // Nor does a sum too long to read (a reduction over a wide value, written out): the
        // per-element form is for small layers.
        size_t chars = 0;
        for (const std::string &t : sc.terms) chars += t.size() + 3;
        if (static_cast<int>(sc.terms.size()) > std::max(opts.maxUnits, 2) || chars > 240) {
          entry.perElement.clear();
          break;
        }
        entry.perElement.push_back(std::move(sc));
      }
    }
    built.push_back(std::move(entry));
  }
  // Named entries first in grad's order, then the notes for names without a gradient.
  built.insert(built.end(), e.entries.begin(), e.entries.end());
  e.entries = std::move(built);
  auto lines = [](const std::string &text, std::vector<std::string> &out) {
    size_t at = 0;
    while (at < text.size()) {
      size_t end = text.find('\n', at);
      if (end == std::string::npos) end = text.size();
      if (end > at) out.push_back(text.substr(at, end - at));
      at = end + 1;
    }
  };
  if (opts.names.empty()) {
    lines(listing.notes, e.notes);
    lines(listing.aliases, e.notes);
  }
  return e;
}

} // namespace nabla

// ---------------------------------------------------------------------------------------------
// Renderers

namespace nabla {

namespace {

// A value as a worked example shows it: a scalar as itself, a vector as [a, b, c], a matrix as
// rows; long ones cut after 8 numbers.
std::string numbers(const std::vector<double> &v, const std::string &shape) {
  if (v.size() == 1 && shape == "scalar") return num(v[0]);
  // A matrix as its rows ([[a, b], [c, d]]) when it is small: the shape's last extent.
  size_t cols = 0;
  if (std::count(shape.begin(), shape.end(), ',') == 1) cols = std::stoul(shape.substr(shape.find(',') + 1));
  const size_t shown = std::min<size_t>(v.size(), 16);
  std::string s = "[";
  for (size_t k = 0; k < shown; ++k) {
    if (cols && k % cols == 0) s += k ? "], [" : "[";
    else if (k) s += ", ";
    s += num(v[k]);
  }
  if (cols) s += "]";
  if (shown < v.size()) s += fmt::format(", … ({} values)", v.size());
  return s + "]";
}

// "0.0213 + -0.0087 = 0.0126": the products' values and their sum.
std::string scalarSum(const ExplainScalar &sc) {
  std::string s;
  if (sc.values.size() > 1) {
    for (size_t k = 0; k < sc.values.size(); ++k) s += (k ? " + " : "") + num(sc.values[k]);
    s += " = ";
  }
  return s + (sc.total ? num(*sc.total) : "?");
}

// The products with the example's numbers ("0.38·(-0.1439) + 0.52·0.105"), when they say more
// than their values: not for a product that is one name, nor for long sums.
std::string numericTerms(const ExplainScalar &sc) {
  if (sc.numeric.size() != sc.values.size() || sc.numeric.empty() || sc.numeric.size() > 4) return "";
  std::string s;
  bool more = false;
  for (size_t k = 0; k < sc.numeric.size(); ++k) {
    s += (k ? " + " : "") + sc.numeric[k];
    more |= sc.numeric[k] != num(sc.values[k]);
  }
  return more ? s : "";
}

std::string header(const Explanation &e, const char *comment) {
  std::string s = fmt::format("{} Backpropagation through {}: the gradient of {}, from the loss backwards.\n",
                              comment, e.file, e.loss);
  s += fmt::format("{} Each value's gradient is the sum of what its consumers send back: "
                   "d{}/dy = Σ over the consumers z of y of d{}/dz · dz/dy.\n", comment, e.loss, e.loss);
  if (e.lossValue)
    s += fmt::format("{} The example: {}; {} = {}.\n", comment, e.example.empty() ? "one example" : e.example,
                     e.loss, num(*e.lossValue));
  return s;
}

std::string where(const std::string &consumer, int line, const char *arrow) {
  return line > 0 ? fmt::format("{} from {}, line {}", arrow, consumer, line)
                  : fmt::format("{} from {}", arrow, consumer);
}

} // namespace

std::string renderText(const Explanation &e, bool ascii) {
  const char *arrow = ascii ? "<-" : "←";
  std::string out = header(e, "#");
  for (const ExplainEntry &en : e.entries) {
    out += fmt::format("\n{}  {}{}{}\n", en.name, en.isParam ? "param " : "", en.shape,
                       en.line > 0 ? fmt::format(", line {}", en.line) : "");
    const std::string lhs = fmt::format("  {} = ", en.gradient);
    const std::string pad(lhs.size() - 2, ' ');
    if (en.formula.empty() && en.terms.empty()) {
      out += fmt::format("  {}: {}\n", en.gradient, en.note);
      continue;
    }
    if (!en.note.empty()) out += fmt::format("  ({})\n", en.note);
    if (en.terms.size() <= 1) {
      // one consumer: the whole gradient, or for the steps of a recurrence their Σ, as grad
      out += lhs + (en.terms.size() == 1 && !en.terms[0].steps.empty()
                        ? fmt::format("Σ_{{{}}} {}", en.terms[0].steps, en.terms[0].formula)
                        : en.formula);
      if (en.terms.size() == 1) {
        const ExplainTerm &t = en.terms[0];
        out += fmt::format("   {}", where(t.steps.empty() ? t.consumer : t.consumer + ", one term per step", t.line, arrow));
      }
      out += "\n";
    } else {
      out += fmt::format("{}Σ over the {} consumers of {}:\n", lhs, en.terms.size(), en.name);
      size_t width = 0;
      std::vector<std::string> texts;
      for (const ExplainTerm &t : en.terms) {
        texts.push_back(t.steps.empty() ? t.formula : fmt::format("Σ_{{{}}} {}", t.steps, t.formula));
        if (ascii) texts.back() = asciiLetters(texts.back());
        width = std::max(width, texts.back().size());
      }
      for (size_t k = 0; k < en.terms.size(); ++k) {
        const ExplainTerm &t = en.terms[k];
        out += fmt::format("{}{} {:<{}}   {}\n", pad, k ? "+" : " ", texts[k], width, where(t.consumer, t.line, arrow));
        if (t.value) out += fmt::format("{}    = {}\n", pad, numbers(*t.value, en.shape));
      }
      std::string joined; // the whole gradient, unless it is just the terms added up
      for (size_t k = 0; k < texts.size(); ++k) joined += (k ? " + " : "") + texts[k];
      if (en.formula != joined) out += fmt::format("{}= {}\n", pad, en.formula);
    }
    if (en.numbers) out += fmt::format("{}= {}\n", pad, numbers(*en.numbers, en.shape));
    if (!en.perElement.empty()) {
      out += "  element by element:\n";
      for (const ExplainScalar &sc : en.perElement) {
        std::string terms;
        for (size_t k = 0; k < sc.terms.size(); ++k) terms += (k ? " + " : "") + sc.terms[k];
        const std::string l = fmt::format("    {} = ", sc.lhs);
        out += l + terms;
        if (sc.total) {
          const std::string withNumbers = numericTerms(sc);
          if (sc.values.size() > 1) {
            const std::string pad2(l.size() - 2, ' ');
            if (!withNumbers.empty()) out += "\n" + pad2 + "= " + withNumbers;
            out += "\n" + pad2 + "= " + scalarSum(sc);
          } else {
            if (!withNumbers.empty()) out += " = " + withNumbers;
            out += " = " + scalarSum(sc);
          }
        }
        out += "\n";
      }
    }
  }
  if (!e.notes.empty()) out += "\n";
  for (const std::string &n : e.notes) out += n + "\n";
  if (ascii) { // the header's and the numbers' few letters beyond ASCII
    out = asciiLetters(out);
    std::string fixed;
    for (size_t i = 0; i < out.size(); ++i) {
      if (out.compare(i, 2, "·") == 0) fixed += "*", i += 1;
      else if (out.compare(i, 3, "…") == 0) fixed += "...", i += 2;
      else fixed += out[i];
    }
    out = std::move(fixed);
  }
  return out;
}

// ---- LaTeX

namespace {

bool nameStart(unsigned char c) { return std::isalpha(c) || c == '_'; }
bool nameChar(unsigned char c) { return std::isalnum(c) || c == '_' || c == '.'; }

std::string texEscapeText(const std::string &s) {
  std::string out;
  for (char c : s) {
    switch (c) {
    case '_': case '#': case '%': case '&': case '$': case '{': case '}': out += '\\'; out += c; break;
    case '\\': out += "\\textbackslash{}"; break;
    case '^': out += "\\^{}"; break;
    case '~': out += "\\~{}"; break;
    default: out += c;
    }
  }
  return out;
}

// A user's name in math: W_j -> W_{j}, W_hidden -> W_{\mathit{hidden}}, logits -> \mathit{logits},
// h.W -> \mathit{h}.W, hs.h -> \mathit{hs}.h.
std::string texName(const std::string &name) {
  const size_t dot = name.find('.');
  if (dot != std::string::npos) return texName(name.substr(0, dot)) + "." + texName(name.substr(dot + 1));
  auto word = [](const std::string &w) {
    if (w.size() <= 1) return w;
    std::string esc;
    for (char c : w) esc += c == '_' ? std::string("\\_") : std::string(1, c);
    return "\\mathit{" + esc + "}";
  };
  const size_t us = name.find('_');
  if (us == std::string::npos || us == 0 || us + 1 == name.size()) return word(name);
  return word(name.substr(0, us)) + "_{" + word(name.substr(us + 1)) + "}";
}

} // namespace

std::string formulaToLatex(const std::string &f) {
  std::string out;
  size_t i = 0;
  auto starts = [&](const char *s) { return f.compare(i, std::strlen(s), s) == 0; };
  while (i < f.size()) {
    const unsigned char c = static_cast<unsigned char>(f[i]);
    // dL/dNAME (no spaces: a division prints as " / ")
    if (c == 'd' && (i == 0 || !nameChar(static_cast<unsigned char>(f[i - 1])))) {
      size_t j = i + 1;
      while (j < f.size() && nameChar(static_cast<unsigned char>(f[j]))) ++j;
      if (j + 2 < f.size() && f[j] == '/' && f[j + 1] == 'd' && nameStart(static_cast<unsigned char>(f[j + 2]))) {
        size_t k = j + 2;
        while (k < f.size() && nameChar(static_cast<unsigned char>(f[k]))) ++k;
        out += fmt::format("\\frac{{\\partial {}}}{{\\partial {}}}", texName(f.substr(i + 1, j - i - 1)),
                           texName(f.substr(j + 2, k - j - 2)));
        i = k;
        continue;
      }
    }
    if (nameStart(c)) {
      size_t j = i;
      while (j < f.size() && nameChar(static_cast<unsigned char>(f[j]))) ++j;
      std::string w = f.substr(i, j - i);
      i = j;
      if (i < f.size() && (f[i] == '(' || f[i] == '\'' || f[i] == '=')) { // a function or a keyword
        std::string esc;
        for (char ch : w) esc += ch == '_' ? std::string("\\_") : std::string(1, ch);
        out += (f[i] == '=' ? "\\mathrm{" : "\\operatorname{") + esc + "}";
        if (f[i] == '=') out += "{=}", ++i;
        continue;
      }
      out += texName(w);
      continue;
    }
    if (std::isdigit(c)) {
      size_t j = i;
      while (j < f.size() && (std::isdigit(static_cast<unsigned char>(f[j])) || f[j] == '.')) ++j;
      std::string mant = f.substr(i, j - i);
      if (j < f.size() && (f[j] == 'e' || f[j] == 'E') && j + 1 < f.size() &&
          (std::isdigit(static_cast<unsigned char>(f[j + 1])) || f[j + 1] == '-' || f[j + 1] == '+')) {
        size_t k = j + 1;
        std::string ex;
        if (f[k] == '-' || f[k] == '+') ex += f[k] == '-' ? "-" : "", ++k;
        while (k < f.size() && std::isdigit(static_cast<unsigned char>(f[k]))) ex += f[k++];
        // 1e-05 -> 1 \cdot 10^{-5}: no leading zeros in the exponent
        const size_t digits = ex.rfind('-', 0) == 0 ? 1 : 0;
        while (ex.size() > digits + 1 && ex[digits] == '0') ex.erase(digits, 1);
        out += fmt::format("{} \\cdot 10^{{{}}}", mant, ex);
        i = k;
        continue;
      }
      out += mant;
      i = j;
      continue;
    }
    if (starts("Σ_{")) { // Σ_{t=0..4} TERM, Σ_{t ∈ {1, 3}} TERM
      const size_t open = i + std::strlen("Σ_{");
      size_t close = f.find('}', open);
      if (close != std::string::npos && f.find('{', open) < close) close = f.find('}', close + 1);
      if (close != std::string::npos) {
        const std::string range = f.substr(open, close - open);
        const size_t eq = range.find('='), dots = range.find("..");
        if (eq != std::string::npos && dots != std::string::npos && dots > eq)
          out += fmt::format("\\sum_{{{}={}}}^{{{}}}", texName(range.substr(0, eq)),
                             range.substr(eq + 1, dots - eq - 1), range.substr(dots + 2));
        else
          out += "\\sum_{" + formulaToLatex(range) + "}";
        i = close + 1;
        continue;
      }
    }
    struct Sym { const char *from, *to; };
    static const Sym kSyms[] = {
        {"Σ", "\\sum "}, {"ᵀ", "^{\\top}"}, {"⊗", " \\otimes "}, {"·", " \\cdot "}, {"≥", " \\geq "},
        {"∈", " \\in "}, {"…", "\\ldots "}, {"√", "\\sqrt "}, {"π", "\\pi "}, {"φ", "\\varphi "},
        {"Φ", "\\Phi "}, {"←", "\\leftarrow "}, {"*", " \\cdot "}, {"@", " "}, {">=", " \\geq "},
        {"{", "\\{"}, {"}", "\\}"}, {"#", "\\#"}, {"%", "\\%"}, {"&", "\\&"}, {"$", "\\$"}, {"~", "\\sim "},
        {"\\", "\\backslash "}};
    bool hit = false;
    for (const Sym &s : kSyms)
      if (starts(s.from)) {
        out += s.to;
        i += std::strlen(s.from);
        hit = true;
        break;
      }
    if (hit) continue;
    if (c == '^') { // x^2 -> x^{2}
      size_t j = i + 1;
      while (j < f.size() && (std::isdigit(static_cast<unsigned char>(f[j])) || f[j] == '.' || (j == i + 1 && f[j] == '-'))) ++j;
      out += "^{" + f.substr(i + 1, j - i - 1) + "}";
      i = j;
      continue;
    }
    out += f[i++];
  }
  return out;
}

namespace {

// A number in LaTeX: 1.5e-05 as 1.5 \cdot 10^{-5}.
std::string texNumber(double v) { return formulaToLatex(num(v)); }

// A value in LaTeX: a matrix of at most 16 numbers as a bmatrix, else as the text shows it.
std::string texNumbers(const std::vector<double> &v, const std::string &shape) {
  size_t cols = 0;
  if (std::count(shape.begin(), shape.end(), ',') == 1) cols = std::stoul(shape.substr(shape.find(',') + 1));
  if (cols && cols <= 10 && v.size() <= 16) {
    std::string s = "\\begin{bmatrix}";
    for (size_t k = 0; k < v.size(); ++k)
      s += (k == 0 ? "" : k % cols == 0 ? " \\\\ " : " & ") + texNumber(v[k]);
    return s + "\\end{bmatrix}";
  }
  return formulaToLatex(numbers(v, shape));
}

// The gradient of one consumer: its formula, or the Σ over the steps of a recurrence.
std::string stepSum(const ExplainEntry &en) {
  if (en.terms.size() == 1 && !en.terms[0].steps.empty())
    return fmt::format("Σ_{{{}}} {}", en.terms[0].steps, en.terms[0].formula);
  return en.formula;
}

std::string texScalarSum(const ExplainScalar &sc) {
  std::string s;
  auto one = [](double v) {
    std::string t = texNumber(v);
    return v < 0 ? "(" + t + ")" : t;
  };
  if (std::string n = numericTerms(sc); !n.empty()) s += formulaToLatex(n) + " = ";
  if (sc.values.size() > 1) {
    for (size_t k = 0; k < sc.values.size(); ++k) s += (k ? " + " : "") + one(sc.values[k]);
    s += " = ";
  }
  return s + (sc.total ? texNumber(*sc.total) : "?");
}

} // namespace

std::string renderLatex(const Explanation &e, bool standalone) {
  std::string out;
  if (standalone)
    out += "\\documentclass[10pt]{article}\n\\usepackage[a4paper,margin=2cm]{geometry}\n\\usepackage{amsmath}\n"
           "\\allowdisplaybreaks\n\\begin{document}\n";
  // (the file's own name: a path would run off the page)
  const std::string file = e.file.substr(e.file.find_last_of('/') == std::string::npos ? 0 : e.file.find_last_of('/') + 1);
  out += fmt::format("\\section*{{Backpropagation through \\texttt{{{}}}}}\n", texEscapeText(file));
  const std::string L = texName(e.loss);
  out += fmt::format("The gradient of ${}$ for one example, from the loss backwards. Each value's gradient "
                     "is the sum of what its consumers send back: "
                     "$\\frac{{\\partial {}}}{{\\partial y}} = \\sum_{{z}} \\frac{{\\partial {}}}{{\\partial z}}"
                     "\\frac{{\\partial z}}{{\\partial y}}$ over the consumers $z$ of $y$.",
                     L, L, L);
  if (e.lossValue)
    out += fmt::format(" The example: {}; ${} = {}$.", texEscapeText(e.example.empty() ? "one example" : e.example),
                       L, texNumber(*e.lossValue));
  out += "\n";
  for (const ExplainEntry &en : e.entries) {
    out += fmt::format("\n\\subsection*{{${}$ \\normalfont\\small ({}{}{})}}\n", formulaToLatex(en.name),
                       en.isParam ? "param, " : "", texEscapeText(en.shape),
                       en.line > 0 ? fmt::format(", line {}", en.line) : "");
    const std::string g = formulaToLatex(en.gradient);
    if (en.formula.empty() && en.terms.empty()) {
      out += fmt::format("${}$: {}.\n", g, texEscapeText(en.note));
      continue;
    }
    if (!en.note.empty()) out += texEscapeText(en.note) + ".\n";
    out += "\\begin{align*}\n";
    auto from = [&](const ExplainTerm &t) {
      return fmt::format("&& \\text{{from }} {}{}", formulaToLatex(t.consumer),
                         t.line > 0 ? fmt::format("\\text{{, line {}}}", t.line) : "");
    };
    if (en.terms.size() <= 1) {
      out += fmt::format("{} &= {}", g, formulaToLatex(stepSum(en)));
      if (en.terms.size() == 1) out += " " + from(en.terms[0]);
    } else {
      for (size_t k = 0; k < en.terms.size(); ++k) {
        const ExplainTerm &t = en.terms[k];
        std::string term = formulaToLatex(t.formula);
        if (!t.steps.empty()) term = formulaToLatex("Σ_{" + t.steps + "} ") + term;
        out += fmt::format("{} &{}{} {}", k ? "" : g, k ? "\\quad + " : "= \\phantom{+}\\;", term, from(t));
        if (t.value) out += fmt::format("\\\\\n &\\qquad = {}", texNumbers(*t.value, en.shape));
        out += "\\\\\n";
      }
      out += fmt::format(" &= {}", formulaToLatex(en.formula));
    }
    if (en.numbers) out += fmt::format("\\\\\n &= {}", texNumbers(*en.numbers, en.shape));
    out += "\n\\end{align*}\n";
    if (!en.perElement.empty()) {
      out += "Element by element:\n\\begin{align*}\n";
      for (size_t k = 0; k < en.perElement.size(); ++k) {
        const ExplainScalar &sc = en.perElement[k];
        std::string terms;
        for (size_t j = 0; j < sc.terms.size(); ++j) terms += (j ? " + " : "") + formulaToLatex(sc.terms[j]);
        out += fmt::format("{} &= {}", formulaToLatex(sc.lhs), terms);
        if (sc.total) out += fmt::format("\\\\\n &= {}", texScalarSum(sc));
        out += k + 1 < en.perElement.size() ? "\\\\\n" : "\n";
      }
      out += "\\end{align*}\n";
    }
  }
  for (const std::string &n : e.notes) out += "\n\\noindent " + texEscapeText(n.substr(n.rfind("# ", 0) == 0 ? 2 : 0)) + "\n";
  if (standalone) out += "\\end{document}\n";
  return out;
}

std::string renderMarkdown(const Explanation &e) {
  const std::string L = texName(e.loss);
  std::string out = fmt::format("# Backpropagation through `{}`\n\n", e.file);
  out += fmt::format("The gradient of ${}$ for one example, from the loss backwards. Each value's gradient is "
                     "the sum of what its consumers send back: "
                     "$\\frac{{\\partial {}}}{{\\partial y}} = \\sum_z \\frac{{\\partial {}}}{{\\partial z}} "
                     "\\frac{{\\partial z}}{{\\partial y}}$ over the consumers $z$ of $y$.",
                     L, L, L);
  if (e.lossValue)
    out += fmt::format(" The example: {}; ${} = {}$.", e.example.empty() ? "one example" : e.example, L,
                       texNumber(*e.lossValue));
  out += "\n";
  for (const ExplainEntry &en : e.entries) {
    out += fmt::format("\n## ${}$ ({}{}{})\n\n", formulaToLatex(en.name), en.isParam ? "param, " : "", en.shape,
                       en.line > 0 ? fmt::format(", line {}", en.line) : "");
    const std::string g = formulaToLatex(en.gradient);
    if (en.formula.empty() && en.terms.empty()) {
      out += fmt::format("${}$: {}.\n", g, en.note);
      continue;
    }
    if (!en.note.empty()) out += en.note + ".\n\n";
    auto from = [&](const ExplainTerm &t) {
      return fmt::format("← from ${}${}", formulaToLatex(t.consumer), t.line > 0 ? fmt::format(", line {}", t.line) : "");
    };
    if (en.terms.size() <= 1) {
      out += fmt::format("${} = {}$", g, formulaToLatex(stepSum(en)));
      if (en.terms.size() == 1) out += " " + from(en.terms[0]);
      out += "\n";
    } else {
      out += fmt::format("${}$ is the sum over the {} consumers of ${}$:\n\n", g, en.terms.size(), formulaToLatex(en.name));
      for (const ExplainTerm &t : en.terms) {
        std::string term = formulaToLatex(t.formula);
        if (!t.steps.empty()) term = formulaToLatex("Σ_{" + t.steps + "} ") + term;
        out += fmt::format("- ${}$ {}", term, from(t));
        if (t.value) out += fmt::format(" $= {}$", texNumbers(*t.value, en.shape));
        out += "\n";
      }
      out += fmt::format("\n${} = {}$\n", g, formulaToLatex(en.formula));
    }
    if (en.numbers) out += fmt::format("\n${} = {}$\n", g, texNumbers(*en.numbers, en.shape));
    if (!en.perElement.empty()) {
      out += "\nElement by element:\n\n";
      for (const ExplainScalar &sc : en.perElement) {
        std::string terms;
        for (size_t j = 0; j < sc.terms.size(); ++j) terms += (j ? " + " : "") + formulaToLatex(sc.terms[j]);
        out += fmt::format("- ${} = {}", formulaToLatex(sc.lhs), terms);
        if (sc.total) out += " = " + texScalarSum(sc);
        out += "$\n";
      }
    }
  }
  if (!e.notes.empty()) out += "\n";
  for (const std::string &n : e.notes) out += (n.rfind("# ", 0) == 0 ? n.substr(2) : n) + "\n";
  return out;
}

} // namespace nabla
