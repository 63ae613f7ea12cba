// Graph: immutable, hash-consed tensor nodes with per-example semantics. A node is created only
// through Graph::make, which computes its shape from the op table and returns the existing node
// when an identical one exists, so common subexpressions are shared for free.
#pragma once
#include "Shape.h"

#include <array>
#include <stdexcept>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace nabla {

enum class Op : uint8_t {
#define OP(Name, Arity, Spelling, Kind) Name,
#include "Ops.def"
};
enum class OpKind : uint8_t { Leaf, Unary, Binary, Other };

inline constexpr int kNumOps = 0
#define OP(Name, Arity, Spelling, Kind) +1
#include "Ops.def"
    ;

int opArity(Op op);
std::string_view opSpelling(Op op);
OpKind opKind(Op op);

using NodeId = int32_t;
inline constexpr NodeId kNoNode = -1;

struct Node {
  Op op;
  int8_t nin = 0;
  std::array<NodeId, 2> in{kNoNode, kNoNode};
  double fattr = 0; // Const value, Pow exponent
  int64_t iattr = 0; // leaf index, axis
  std::vector<int64_t> attrs; // Slice, Pad: start per axis
  Shape shape;

  NodeId a() const { return in[0]; }
  NodeId b() const { return in[1]; }
};

// Thrown for violated internal invariants (a compiler bug), never for user errors.
struct InternalError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Graph {
public:
  // Node ids are dense and topologically ordered: a node's inputs have smaller ids.
  const Node &node(NodeId id) const { return nodes_[static_cast<size_t>(id)]; }
  const Shape &shape(NodeId id) const { return node(id).shape; }
  Op op(NodeId id) const { return node(id).op; }
  size_t size() const { return nodes_.size(); }

  // The one constructor. `shape` is only read for leaves, Broadcast, SumTo, Slice, Pad and
  // Reshape; `attrs` only for Slice and Pad; every other op
  // infers it. Throws InternalError on shapes that sema should have rejected.
  NodeId make(Op op, std::vector<NodeId> in = {}, double fattr = 0, int64_t iattr = 0,
               Shape shape = {}, std::vector<int64_t> attrs = {});

  // Conveniences.
  NodeId constant(double v) { return make(Op::Const, {}, v); }
  NodeId unary(Op op, NodeId a) { return make(op, {a}); }
  NodeId binary(Op op, NodeId a, NodeId b) { return make(op, {a, b}); }
  NodeId broadcast(NodeId a, const Shape &to, int64_t axis = -1) {
    return make(Op::Broadcast, {a}, 0, axis, to);
  }
  NodeId sumTo(NodeId a, const Shape &to) { return make(Op::SumTo, {a}, 0, 0, to); }
  NodeId zeros(const Shape &s) { return broadcast(constant(0), s); }
  NodeId reshape(NodeId a, const Shape &to) { return make(Op::Reshape, {a}, 0, 0, to); }
  NodeId slice(NodeId a, std::vector<int64_t> start, const Shape &to) {
    return make(Op::Slice, {a}, 0, 0, to, std::move(start));
  }
  NodeId pad(NodeId a, std::vector<int64_t> start, const Shape &to) {
    return make(Op::Pad, {a}, 0, 0, to, std::move(start));
  }

  bool isConst(NodeId id, double v) const {
    return op(id) == Op::Const && node(id).fattr == v;
  }
  bool isConst(NodeId id) const { return op(id) == Op::Const; }
  // A scalar constant or a broadcast of one: returns true and sets v.
  bool constValue(NodeId id, double &v) const;

  // Nodes reachable from `roots`, in increasing (topological) order.
  std::vector<NodeId> reachable(const std::vector<NodeId> &roots) const;

private:
  struct Key {
    Op op;
    std::array<NodeId, 2> in;
    uint64_t fbits;
    int64_t iattr;
    std::vector<int64_t> dims;
    std::vector<int64_t> attrs;
    bool operator==(const Key &) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key &k) const;
  };
  std::vector<Node> nodes_;
  std::unordered_map<Key, NodeId, KeyHash> interned_;
};

} // namespace nabla
