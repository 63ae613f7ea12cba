// Shape: the static shape of one example's value, rank 0 to 4. Every size is known when compiling;
// only the batch size is a run-time value, and it never appears in a Shape.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace nabla {

struct Shape {
  std::vector<int64_t> dims; // rank 0 (scalar) to 4; every dim >= 1

  Shape() = default;
  Shape(std::initializer_list<int64_t> d) : dims(d) {}
  explicit Shape(std::vector<int64_t> d) : dims(std::move(d)) {}

  int rank() const { return static_cast<int>(dims.size()); }
  int64_t operator[](int i) const { return dims[static_cast<size_t>(i)]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    return n;
  }
  bool isScalar() const { return dims.empty(); }
  bool operator==(const Shape &o) const { return dims == o.dims; }
  bool operator!=(const Shape &o) const { return dims != o.dims; }

  // "[3, 4]"; a scalar prints as "[]" here and as "scalar" through describe().
  std::string str() const;
  std::string describe() const { return isScalar() ? "scalar" : str(); }
};

// NumPy broadcasting of two shapes (aligned at the right; a missing dim or a 1 stretches).
// Returns false when they are incompatible.
bool broadcastShapes(const Shape &a, const Shape &b, Shape &out);

// Row-major strides for reading a value of shape `from` as if broadcast to `to`: a stretched
// dimension gets stride 0. Requires that `from` broadcasts to `to`.
std::vector<int64_t> broadcastStrides(const Shape &from, const Shape &to);

} // namespace nabla
