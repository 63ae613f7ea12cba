// The interpreter's kernels: one plain loop per op over the flat row-major elements of values of
// rank 0-4, with multi-indices computed for every element (slow and obviously right: it is the
// reference), broadcasting through zero strides, softmax and log_softmax with the max subtracted.
#include "Interpreter.h"

#include "Kernels.h"

#include <fmt/format.h>

#include <algorithm>
#include <tuple>

namespace nabla {

namespace {

// Row-major strides of a shape.
std::vector<int64_t> stridesOf(const Shape &s) {
  std::vector<int64_t> st(static_cast<size_t>(s.rank()), 1);
  for (int i = s.rank() - 1; i > 0; --i) st[static_cast<size_t>(i - 1)] = st[static_cast<size_t>(i)] * s[i];
  return st;
}

// The multi-index of flat position `flat` in shape s (row-major).
std::vector<int64_t> unravel(int64_t flat, const Shape &s) {
  std::vector<int64_t> idx(static_cast<size_t>(s.rank()), 0);
  for (int i = s.rank() - 1; i >= 0; --i) {
    idx[static_cast<size_t>(i)] = flat % s[i];
    flat /= s[i];
  }
  return idx;
}

// The flat position of a multi-index under the given strides.
int64_t dot(const std::vector<int64_t> &idx, const std::vector<int64_t> &st) {
  int64_t f = 0;
  for (size_t i = 0; i < idx.size(); ++i) f += idx[i] * st[i];
  return f;
}

// The multi-index without axis k.
std::vector<int64_t> dropAxis(std::vector<int64_t> idx, int64_t k) {
  idx.erase(idx.begin() + k);
  return idx;
}

size_t at(int64_t i) { return static_cast<size_t>(i); }

// The image ops' geometry: x[C, H, W], y[F, Ho, Wo], a kh x kw window, stride and padding.
struct Geometry {
  int64_t C, H, W, F, Ho, Wo, kh, kw, s, p;
};

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
  const int64_t N = n.shape.numel();
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
  case Op::Div:
  case Op::Maximum:
  case Op::Minimum:
  case Op::GreaterEq: {
    // NumPy broadcasting: each operand read through strides that are 0 on stretched axes.
    const std::vector<int64_t> as = broadcastStrides(inShape(0), n.shape),
                               bs = broadcastStrides(inShape(1), n.shape);
    const auto &a = in(0), &b = in(1);
    if (inShape(0) == n.shape && inShape(1) == n.shape) { // the common case, without index maths
      for (int64_t i = 0; i < N; ++i) out[at(i)] = applyBinary<T>(n.op, a[at(i)], b[at(i)]);
      return;
    }
    for (int64_t i = 0; i < N; ++i) {
      const std::vector<int64_t> idx = unravel(i, n.shape);
      out[at(i)] = applyBinary<T>(n.op, a[at(dot(idx, as))], b[at(dot(idx, bs))]);
    }
    return;
  }
  case Op::Sum: {
    T s = 0;
    for (T v : in(0)) s += v;
    out[0] = s;
    return;
  }
  case Op::SumAxis: {
    // y[idx without axis k] += a[idx]
    const Shape &sa = inShape(0);
    const std::vector<int64_t> os = stridesOf(n.shape);
    std::fill(out.begin(), out.end(), T(0));
    for (int64_t i = 0; i < sa.numel(); ++i)
      out[at(dot(dropAxis(unravel(i, sa), n.iattr), os))] += in(0)[at(i)];
    return;
  }
  case Op::Broadcast: {
    // iattr -1: NumPy alignment; iattr k: y[idx] = a[idx without axis k]
    const std::vector<int64_t> as =
        n.iattr < 0 ? broadcastStrides(inShape(0), n.shape) : stridesOf(inShape(0));
    for (int64_t i = 0; i < N; ++i) {
      std::vector<int64_t> idx = unravel(i, n.shape);
      if (n.iattr >= 0) idx = dropAxis(std::move(idx), n.iattr);
      out[at(i)] = in(0)[at(dot(idx, as))];
    }
    return;
  }
  case Op::SumTo: {
    // The reverse of a NumPy broadcast from n.shape to the operand's shape: y[j] += a[i].
    const Shape &from = inShape(0);
    const std::vector<int64_t> ys = broadcastStrides(n.shape, from);
    std::fill(out.begin(), out.end(), T(0));
    for (int64_t i = 0; i < from.numel(); ++i) out[at(dot(unravel(i, from), ys))] += in(0)[at(i)];
    return;
  }
  case Op::Max:
  case Op::Min:
  case Op::ExtremeMask: {
    // The first extreme element (row-major) of all of a (iattr -1) or of each slice along axis
    // iattr: a later element replaces the best only when strictly greater (less), so ties keep the
    // first, and a NaN is skipped unless it comes first (as std::max_element).
    const Shape &sa = inShape(0);
    const bool isMax = n.op == Op::Max || (n.op == Op::ExtremeMask && n.fattr > 0);
    const Shape reduced = n.op == Op::ExtremeMask
                              ? (n.iattr < 0 ? Shape{} : Shape(dropAxis(sa.dims, n.iattr)))
                              : n.shape;
    const std::vector<int64_t> rs = stridesOf(reduced);
    std::vector<int64_t> best(at(reduced.numel()), -1); // the flat index in a of each slice's extreme
    const auto &a = in(0);
    for (int64_t i = 0; i < sa.numel(); ++i) {
      const int64_t r = n.iattr < 0 ? 0 : dot(dropAxis(unravel(i, sa), n.iattr), rs);
      int64_t &b = best[at(r)];
      if (b < 0 || (isMax ? a[at(i)] > a[at(b)] : a[at(i)] < a[at(b)])) b = i;
    }
    if (n.op == Op::ExtremeMask) {
      std::fill(out.begin(), out.end(), T(0));
      for (int64_t b : best) out[at(b)] = T(1);
    } else {
      for (size_t r = 0; r < best.size(); ++r) out[r] = a[at(best[r])];
    }
    return;
  }
  case Op::Slice:
  case Op::Pad: {
    // Slice: y[i] = a[i + start]; Pad: zeros, then y[i + start] = a[i].
    const Shape &inner = n.op == Op::Slice ? n.shape : inShape(0);
    const Shape &outer = n.op == Op::Slice ? inShape(0) : n.shape;
    const std::vector<int64_t> os = stridesOf(outer);
    if (n.op == Op::Pad) std::fill(out.begin(), out.end(), T(0));
    for (int64_t i = 0; i < inner.numel(); ++i) {
      std::vector<int64_t> idx = unravel(i, inner);
      for (size_t k = 0; k < idx.size(); ++k) idx[k] += n.attrs[k];
      if (n.op == Op::Slice) out[at(i)] = in(0)[at(dot(idx, os))];
      else out[at(dot(idx, os))] = in(0)[at(i)];
    }
    return;
  }
  case Op::Reshape: std::copy(in(0).begin(), in(0).end(), out.begin()); return;
  case Op::Concat: {
    // y[idx] = a[idx] where idx[axis] < a's size along the axis, else b[idx - that size].
    const Shape &sa = inShape(0), &sb = inShape(1);
    const std::vector<int64_t> as = stridesOf(sa), bs = stridesOf(sb);
    const int64_t k = n.iattr, ka = sa[static_cast<int>(k)];
    for (int64_t i = 0; i < N; ++i) {
      std::vector<int64_t> idx = unravel(i, n.shape);
      if (idx[at(k)] < ka) {
        out[at(i)] = in(0)[at(dot(idx, as))];
      } else {
        idx[at(k)] -= ka;
        out[at(i)] = in(1)[at(dot(idx, bs))];
      }
    }
    return;
  }
  case Op::Softmax:
  case Op::LogSoftmax: {
    // Along the last axis: every row of `cols` elements on its own, the row's max subtracted.
    const int64_t cols = n.shape[n.shape.rank() - 1], rows = N / cols;
    const auto &a = in(0);
    for (int64_t i = 0; i < rows; ++i) {
      const T *x = a.data() + i * cols;
      T *y = out.data() + i * cols;
      T m = *std::max_element(x, x + cols);
      T s = 0;
      for (int64_t j = 0; j < cols; ++j) s += std::exp(x[j] - m);
      for (int64_t j = 0; j < cols; ++j)
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
        for (int64_t l = 0; l < k; ++l) s += a[at(i * k + l)] * b[at(l * p + j)];
        out[at(i * p + j)] = s;
      }
    return;
  }
  case Op::Outer: {
    const auto &a = in(0), &b = in(1);
    const int64_t rows = n.shape[0], cols = n.shape[1];
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) out[at(i * cols + j)] = a[at(i)] * b[at(j)];
    return;
  }
  case Op::Transpose: {
    const int64_t rows = n.shape[0], cols = n.shape[1];
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) out[at(i * cols + j)] = in(0)[at(j * rows + i)];
    return;
  }
  case Op::Conv2d:
  case Op::Conv2dInputGrad:
  case Op::Conv2dKernelGrad: {
    // One loop nest for the three: over every (f, oh, ow, c, i, j) with the input pixel
    // (h, w) = (oh s + i - p, ow s + j - p) inside the image, the product that relates
    //   y[f, oh, ow]  ~  K[f, c, i, j] * x[c, h, w]
    // accumulated into y (Conv2d), into dx from g and K (Conv2dInputGrad) or into dK from x and
    // g (Conv2dKernelGrad). Zero padding is the skipped pixels.
    const Shape &x = n.op == Op::Conv2d || n.op == Op::Conv2dKernelGrad ? inShape(0) : n.shape;
    const Shape &K = n.op == Op::Conv2dKernelGrad ? n.shape : inShape(1);
    const Shape &y = n.op == Op::Conv2d ? n.shape : n.op == Op::Conv2dInputGrad ? inShape(0) : inShape(1);
    const Geometry G{x[0], x[1], x[2], K[0], y[1], y[2], K[2], K[3], n.attrs[0], n.attrs[1]};
    std::fill(out.begin(), out.end(), T(0));
    const auto &u = in(0), &v = in(1);
    for (int64_t f = 0; f < G.F; ++f)
      for (int64_t oh = 0; oh < G.Ho; ++oh)
        for (int64_t ow = 0; ow < G.Wo; ++ow)
          for (int64_t c = 0; c < G.C; ++c)
            for (int64_t i = 0; i < G.kh; ++i)
              for (int64_t j = 0; j < G.kw; ++j) {
                const int64_t h = oh * G.s + i - G.p, w = ow * G.s + j - G.p;
                if (h < 0 || h >= G.H || w < 0 || w >= G.W) continue;
                const size_t yi = at((f * G.Ho + oh) * G.Wo + ow), xi = at((c * G.H + h) * G.W + w),
                             ki = at(((f * G.C + c) * G.kh + i) * G.kw + j);
                switch (n.op) {
                case Op::Conv2d: out[yi] += v[ki] * u[xi]; break;          // x, K
                case Op::Conv2dInputGrad: out[xi] += u[yi] * v[ki]; break; // g, K
                default: out[ki] += v[yi] * u[xi]; break;                  // x, g
                }
              }
    return;
  }
  case Op::MaxPool2d:
  case Op::MaxPool2dGrad:
  case Op::AvgPool2d:
  case Op::AvgPool2dGrad: {
    // k x k windows at (oh s, ow s), no padding. Max: the first maximum (row-major) of the
    // window, later elements replace it only when strictly greater.
    const Shape &x = n.op == Op::MaxPool2d || n.op == Op::AvgPool2d || n.op == Op::MaxPool2dGrad
                         ? inShape(0) : n.shape;
    const Shape &y = n.op == Op::MaxPool2d || n.op == Op::AvgPool2d ? n.shape
                     : n.op == Op::MaxPool2dGrad ? inShape(1) : inShape(0);
    const int64_t k = n.attrs[0], s = n.attrs[1], H = x[1], W = x[2], Ho = y[1], Wo = y[2];
    const T area = static_cast<T>(k * k);
    if (n.op == Op::MaxPool2dGrad || n.op == Op::AvgPool2dGrad) std::fill(out.begin(), out.end(), T(0));
    for (int64_t c = 0; c < x[0]; ++c)
      for (int64_t oh = 0; oh < Ho; ++oh)
        for (int64_t ow = 0; ow < Wo; ++ow) {
          const size_t yi = at((c * Ho + oh) * Wo + ow);
          auto xi = [&](int64_t i, int64_t j) { return at((c * H + oh * s + i) * W + ow * s + j); };
          if (n.op == Op::AvgPool2dGrad) {
            for (int64_t i = 0; i < k; ++i)
              for (int64_t j = 0; j < k; ++j) out[xi(i, j)] += in(0)[yi] / area;
            continue;
          }
          const auto &a = in(0);
          size_t best = xi(0, 0);
          T sum = 0;
          for (int64_t i = 0; i < k; ++i)
            for (int64_t j = 0; j < k; ++j) {
              sum += a[xi(i, j)];
              if (a[xi(i, j)] > a[best]) best = xi(i, j);
            }
          if (n.op == Op::MaxPool2d) out[yi] = a[best];
          else if (n.op == Op::AvgPool2d) out[yi] = sum / area;
          else out[best] += in(1)[yi]; // MaxPool2dGrad: g to the first maximum
        }
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
