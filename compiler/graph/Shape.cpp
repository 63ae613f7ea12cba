// Shape printing and NumPy broadcasting rules.
#include "Shape.h"

namespace nabla {

std::string Shape::str() const {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(dims[i]);
  }
  return s + "]";
}

bool broadcastShapes(const Shape &a, const Shape &b, Shape &out) {
  int r = std::max(a.rank(), b.rank());
  std::vector<int64_t> d(static_cast<size_t>(r));
  for (int i = 0; i < r; ++i) {
    int ia = a.rank() - r + i, ib = b.rank() - r + i;
    int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
    if (da != db && da != 1 && db != 1) return false;
    d[static_cast<size_t>(i)] = da == 1 ? db : da;
  }
  out = Shape(std::move(d));
  return true;
}

std::vector<int64_t> broadcastStrides(const Shape &from, const Shape &to) {
  std::vector<int64_t> st(static_cast<size_t>(to.rank()), 0);
  int64_t s = 1;
  for (int i = from.rank() - 1; i >= 0; --i) {
    int j = to.rank() - from.rank() + i;
    st[static_cast<size_t>(j)] = from[i] == 1 && to[j] != 1 ? 0 : s;
    s *= from[i];
  }
  return st;
}

} // namespace nabla
