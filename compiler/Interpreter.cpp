// The interpreter's kernels: one plain loop nest per op, values of rank 0-2 viewed as [rows, cols]
// matrices, broadcasting through zero strides, softmax and log_softmax with the max subtracted.
#include "Interpreter.h"

#include "Kernels.h"

#include <fmt/format.h>

#include <algorithm>
#include <tuple>

namespace nabla {

namespace {

// A value of rank 0-2 seen as a [rows, cols] matrix (a vector is one row).
struct View2 {
  int64_t rows = 1, cols = 1;
};
View2 view(const Shape &s) {
  if (s.rank() == 2) return {s[0], s[1]};
  if (s.rank() == 1) return {1, s[0]};
  return {};
}

// Strides (row, col) for reading `from` broadcast to `to`, as [rows, cols].
std::pair<int64_t, int64_t> strides2(const Shape &from, const Shape &to) {
  std::vector<int64_t> st = broadcastStrides(from, to);
  if (to.rank() == 2) return {st[0], st[1]};
  if (to.rank() == 1) return {0, st[0]};
  return {0, 0};
}

} // namespace

template <class T>
Interpreter<T>::Interpreter(const Program &p, const Graph &g, const std::vector<NodeId> &roots)
    : p_(p), g_(g), order_(g.reachable(roots)), values_(g.size()) {
  for (NodeId id : order_) values_[static_cast<size_t>(id)].resize(static_cast<size_t>(g.shape(id).numel()));
}

template <class T> void Interpreter<T>::run(const T *params, const T *inputs, const T *targets) {
  for (NodeId id : order_) evalNode(id, params, inputs, targets);
}

template <class T>
void Interpreter<T>::evalNode(NodeId id, const T *params, const T *inputs, const T *targets) {
  const Node &n = g_.node(id);
  std::vector<T> &out = values_[static_cast<size_t>(id)];
  auto in = [&](int k) -> const std::vector<T> & { return values_[static_cast<size_t>(n.in[static_cast<size_t>(k)])]; };
  auto inShape = [&](int k) -> const Shape & { return g_.shape(n.in[static_cast<size_t>(k)]); };
  const View2 o = view(n.shape);
  switch (n.op) {
  case Op::Input:
  case Op::Target:
  case Op::Param: {
    const auto &decls = n.op == Op::Input ? p_.inputs : n.op == Op::Target ? p_.targets : p_.params;
    const T *base = n.op == Op::Input ? inputs : n.op == Op::Target ? targets : params;
    if (!base) throw InternalError("interpreter: no data for a leaf");
    const Decl &d = decls[static_cast<size_t>(n.iattr)];
    std::copy(base + d.offset, base + d.offset + d.shape.numel(), out.begin());
    return;
  }
  case Op::Const: out[0] = static_cast<T>(n.fattr); return;
  case Op::Add:
  case Op::Sub:
  case Op::Mul:
  case Op::Div: {
    auto [ar, ac] = strides2(inShape(0), n.shape);
    auto [br, bc] = strides2(inShape(1), n.shape);
    const auto &a = in(0), &b = in(1);
    for (int64_t i = 0; i < o.rows; ++i)
      for (int64_t j = 0; j < o.cols; ++j)
        out[static_cast<size_t>(i * o.cols + j)] =
            applyBinary<T>(n.op, a[static_cast<size_t>(i * ar + j * ac)], b[static_cast<size_t>(i * br + j * bc)]);
    return;
  }
  case Op::Sum: {
    T s = 0;
    for (T v : in(0)) s += v;
    out[0] = s;
    return;
  }
  case Op::SumAxis: {
    const View2 a = view(inShape(0));
    std::fill(out.begin(), out.end(), T(0));
    for (int64_t i = 0; i < a.rows; ++i)
      for (int64_t j = 0; j < a.cols; ++j)
        out[static_cast<size_t>(n.iattr == 0 ? j : i)] += in(0)[static_cast<size_t>(i * a.cols + j)];
    return;
  }
  case Op::Broadcast: {
    int64_t rs, cs;
    if (n.iattr < 0) std::tie(rs, cs) = strides2(inShape(0), n.shape);
    else if (n.iattr == 0) rs = 0, cs = 1; // v[j] fills every row
    else rs = 1, cs = 0;                   // v[i] fills every column
    for (int64_t i = 0; i < o.rows; ++i)
      for (int64_t j = 0; j < o.cols; ++j)
        out[static_cast<size_t>(i * o.cols + j)] = in(0)[static_cast<size_t>(i * rs + j * cs)];
    return;
  }
  case Op::SumTo: {
    const Shape &from = inShape(0);
    const View2 a = view(from);
    auto [rs, cs] = strides2(n.shape, from);
    std::fill(out.begin(), out.end(), T(0));
    for (int64_t i = 0; i < a.rows; ++i)
      for (int64_t j = 0; j < a.cols; ++j)
        out[static_cast<size_t>(i * rs + j * cs)] += in(0)[static_cast<size_t>(i * a.cols + j)];
    return;
  }
  case Op::Softmax:
  case Op::LogSoftmax: {
    const auto &a = in(0);
    for (int64_t i = 0; i < o.rows; ++i) {
      const T *x = a.data() + i * o.cols;
      T *y = out.data() + i * o.cols;
      T m = *std::max_element(x, x + o.cols);
      T s = 0;
      for (int64_t j = 0; j < o.cols; ++j) s += std::exp(x[j] - m);
      for (int64_t j = 0; j < o.cols; ++j)
        y[j] = n.op == Op::Softmax ? std::exp(x[j] - m) / s : x[j] - m - std::log(s);
    }
    return;
  }
  case Op::MatMul: {
    const Shape &sa = inShape(0), &sb = inShape(1);
    const auto &a = in(0), &b = in(1);
    // [m,k] @ [k,p] with vectors as [1,k] on the left and [k,1] on the right.
    int64_t m = sa.rank() == 2 ? sa[0] : 1, k = sa[sa.rank() - 1], p = sb.rank() == 2 ? sb[1] : 1;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < p; ++j) {
        T s = 0;
        for (int64_t l = 0; l < k; ++l) s += a[static_cast<size_t>(i * k + l)] * b[static_cast<size_t>(l * p + j)];
        out[static_cast<size_t>(i * p + j)] = s;
      }
    return;
  }
  case Op::Outer: {
    const auto &a = in(0), &b = in(1);
    for (int64_t i = 0; i < o.rows; ++i)
      for (int64_t j = 0; j < o.cols; ++j) out[static_cast<size_t>(i * o.cols + j)] = a[static_cast<size_t>(i)] * b[static_cast<size_t>(j)];
    return;
  }
  case Op::Transpose: {
    for (int64_t i = 0; i < o.rows; ++i)
      for (int64_t j = 0; j < o.cols; ++j)
        out[static_cast<size_t>(i * o.cols + j)] = in(0)[static_cast<size_t>(j * o.rows + i)];
    return;
  }
  default: break;
  }
  if (opKind(n.op) == OpKind::Unary) {
    const auto &a = in(0);
    for (size_t i = 0; i < out.size(); ++i) out[i] = applyUnary<T>(n.op, a[i], n.fattr);
    return;
  }
  throw InternalError(fmt::format("interpreter: no kernel for op '{}'", opSpelling(n.op)));
}

template class Interpreter<float>;
template class Interpreter<double>;

} // namespace nabla
