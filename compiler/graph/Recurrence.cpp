// Recurrence: rnn, gru, lstm and scan unrolled into ordinary graph nodes (see Recurrence.h for
// the equations). Each step multiplies the stacked weights once (W_ih x_t is one [G·H, d] product,
// not G products of [H, d]) and slices the gates out of the result, as PyTorch's cells do: one
// larger product per step lowers to one batched matrix product instead of G small ones.
#include "Recurrence.h"

#include <cmath>

namespace nabla {

int gateCount(CellKind k) {
  switch (k) {
  case CellKind::RnnTanh:
  case CellKind::RnnRelu: return 1;
  case CellKind::Gru: return 3;
  case CellKind::Lstm: return 4;
  }
  return 1;
}

std::array<Shape, 4> recurrenceParamShapes(CellKind k, int64_t d, int64_t H) {
  const int64_t GH = gateCount(k) * H;
  return {Shape{GH, d}, Shape{GH, H}, Shape{GH}, Shape{GH}};
}

Init recurrenceInit(int64_t H) {
  // torch.nn.RNNBase.reset_parameters: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)).
  const double a = 1.0 / std::sqrt(static_cast<double>(H));
  return Init{Init::Uniform, -a, a};
}

NodeId stepOf(Graph &g, NodeId xs, int64_t t) {
  const Shape &s = g.shape(xs);
  std::vector<int64_t> start(static_cast<size_t>(s.rank()), 0), rowDims = s.dims;
  start[0] = t;
  rowDims[0] = 1;
  NodeId row = g.slice(xs, std::move(start), Shape(rowDims));
  rowDims.erase(rowDims.begin());
  return g.reshape(row, Shape(std::move(rowDims)));
}

NodeId stackRows(Graph &g, const std::vector<NodeId> &rows) {
  if (rows.empty()) throw InternalError("stackRows of no rows");
  std::vector<NodeId> r1;
  for (NodeId r : rows) {
    std::vector<int64_t> dims = g.shape(r).dims;
    dims.insert(dims.begin(), 1);
    r1.push_back(g.reshape(r, Shape(std::move(dims))));
  }
  // Halves joined recursively: depth ceil(log2 T); concat(a, b) along axis 0.
  auto join = [&](auto &self, size_t lo, size_t hi) -> NodeId {
    if (hi - lo == 1) return r1[lo];
    size_t mid = lo + (hi - lo) / 2;
    return g.make(Op::Concat, {self(self, lo, mid), self(self, mid, hi)}, 0, 0);
  };
  return join(join, 0, r1.size());
}

Unrolled unrollRecurrence(Graph &g, CellKind k, NodeId xs, int64_t H, const RecurrenceParams &p) {
  if (g.shape(xs).rank() != 2) throw InternalError("a recurrence's sequence must be [T, d]");
  const int64_t T = g.shape(xs)[0], d = g.shape(xs)[1]; // copies: make() may move the shapes
  auto shapes = recurrenceParamShapes(k, d, H);
  const std::array<NodeId, 4> ps{p.W_ih, p.W_hh, p.b_ih, p.b_hh};
  for (size_t i = 0; i < 4; ++i)
    if (ps[i] == kNoNode || g.shape(ps[i]) != shapes[i])
      throw InternalError("a recurrence's params have the wrong shapes");

  Unrolled u;
  auto named = [&](const char *name, int64_t t, NodeId n) {
    u.values.push_back({name, t, n});
    return n;
  };
  // Gate j (0-based) of a stacked [G·H] vector.
  auto gate = [&](NodeId v, int64_t j) { return g.slice(v, {j * H}, Shape{H}); };
  const NodeId one = g.constant(1);
  NodeId h = kNoNode, c = kNoNode; // kNoNode: the zero initial state
  for (int64_t t = 0; t < T; ++t) {
    const NodeId x = named("x", t, stepOf(g, xs, t));
    // The input's and the state's contributions to every gate: W_ih x_t + b_ih and
    // W_hh h_(t-1) + b_hh, the latter only b_hh while the state is zero.
    const NodeId gi = g.binary(Op::Add, g.binary(Op::MatMul, p.W_ih, x), p.b_ih);
    const NodeId gh = h == kNoNode ? p.b_hh : g.binary(Op::Add, g.binary(Op::MatMul, p.W_hh, h), p.b_hh);
    switch (k) {
    case CellKind::RnnTanh:
    case CellKind::RnnRelu:
      h = g.unary(k == CellKind::RnnTanh ? Op::Tanh : Op::Relu, g.binary(Op::Add, gi, gh));
      break;
    case CellKind::Gru: {
      const NodeId r = named("r", t, g.unary(Op::Logistic, g.binary(Op::Add, gate(gi, 0), gate(gh, 0))));
      const NodeId z = named("z", t, g.unary(Op::Logistic, g.binary(Op::Add, gate(gi, 1), gate(gh, 1))));
      // The reset gate scales the state's whole contribution, its bias included (PyTorch's form).
      const NodeId n = named("n", t, g.unary(Op::Tanh, g.binary(Op::Add, gate(gi, 2),
                                                                g.binary(Op::Mul, r, gate(gh, 2)))));
      NodeId next = g.binary(Op::Mul, g.binary(Op::Sub, one, z), n);
      if (h != kNoNode) next = g.binary(Op::Add, next, g.binary(Op::Mul, z, h));
      h = next;
      break;
    }
    case CellKind::Lstm: {
      const NodeId a = g.binary(Op::Add, gi, gh);
      const NodeId i = named("i", t, g.unary(Op::Logistic, gate(a, 0)));
      const NodeId f = named("f", t, g.unary(Op::Logistic, gate(a, 1)));
      const NodeId gg = named("g", t, g.unary(Op::Tanh, gate(a, 2)));
      const NodeId o = named("o", t, g.unary(Op::Logistic, gate(a, 3)));
      NodeId next = g.binary(Op::Mul, i, gg);
      if (c != kNoNode) next = g.binary(Op::Add, g.binary(Op::Mul, f, c), next);
      c = named("c", t, next);
      h = g.binary(Op::Mul, o, g.unary(Op::Tanh, c));
      break;
    }
    }
    u.h.push_back(named("h", t, h));
  }
  u.states = stackRows(g, u.h);
  return u;
}

Unrolled unrollScan(Graph &g, NodeId init, NodeId xs,
                    const std::function<NodeId(NodeId state, NodeId x, int64_t t)> &cell) {
  if (g.shape(xs).rank() < 1) throw InternalError("a scan's sequence must have a first axis");
  const int64_t T = g.shape(xs)[0]; // a copy: make() may move the graph's shapes
  Unrolled u;
  NodeId state = init;
  for (int64_t t = 0; t < T; ++t) {
    const NodeId x = stepOf(g, xs, t);
    u.values.push_back({"x", t, x});
    state = cell(state, x, t);
    if (g.shape(state) != g.shape(init)) throw InternalError("a scan's cell changed the state's shape");
    u.h.push_back(state);
    u.values.push_back({"h", t, state});
  }
  u.states = stackRows(g, u.h);
  return u;
}

} // namespace nabla
