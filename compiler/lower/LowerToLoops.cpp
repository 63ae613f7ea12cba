// Lowering the graph to Loop IR (see LowerToLoops.h). Decides which nodes get a buffer (those
// that are reductions, are read more than once, or would be recomputed by a replicating
// consumer) and inlines every other node into the expression of its one consumer.
#include "LowerToLoops.h"

#include "GradPrinter.h"
#include "Sema.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

namespace nabla {

using loops::Affine;
using loops::Kernel;
using LExpr = loops::Expr;

namespace {

bool isLeaf(Op op) { return opKind(op) == OpKind::Leaf; }
bool needsKernel(Op op) {
  switch (op) {
  case Op::Sum: case Op::SumAxis: case Op::SumTo: case Op::MatMul: case Op::Softmax: case Op::LogSoftmax:
  case Op::Max: case Op::Min: case Op::ExtremeMask: case Op::Pad: case Op::Concat:
  case Op::Conv2d: case Op::Conv2dInputGrad: case Op::Conv2dKernelGrad: case Op::MaxPool2d:
  case Op::MaxPool2dGrad: case Op::AvgPool2d: case Op::AvgPool2dGrad:
    return true;
  default: return false;
  }
}

// Ops that read an operand at coordinates that are not its own (windows, flat indices, several
// kernels): the operand is read from a buffer, never recomputed inline. Each element of a
// convolution's input feeds kh·kw·F products, a pooling window overlaps others, a reshape reads
// at a flat index, an extreme mask reads its operand in three kernels.
bool readsOperandsFromBuffers(Op op) {
  switch (op) {
  case Op::Reshape: case Op::ExtremeMask: case Op::Conv2d: case Op::Conv2dInputGrad:
  case Op::Conv2dKernelGrad: case Op::MaxPool2d: case Op::MaxPool2dGrad: case Op::AvgPool2d:
  case Op::AvgPool2dGrad:
    return true;
  default: return false;
  }
}

// `dims` with `x` inserted at position `axis`.
std::vector<Affine> insertAt(std::vector<Affine> dims, int64_t axis, Affine x) {
  dims.insert(dims.begin() + axis, std::move(x));
  return dims;
}

// A node's coordinates inside a kernel: one affine form per dimension of its shape, and the
// batch loop variable (or none in a kernel without a batch loop).
struct Coords {
  std::vector<Affine> dims;
  int batchVar = -1;
};

class Lowering {
public:
  Lowering(const Program &p, const Derivation *d) : P(p), G(p.graph), D(d) {
    perExample_.assign(G.size(), 0);
    for (size_t i = 0; i < G.size(); ++i) {
      const Node &n = G.node(static_cast<NodeId>(i));
      char pe = n.op == Op::Input || n.op == Op::Target;
      for (int k = 0; k < n.nin; ++k) pe |= perExample_[static_cast<size_t>(n.in[static_cast<size_t>(k)])];
      perExample_[i] = pe;
    }
    // Names and lines of nodes, looked up per kernel (a scan per kernel was quadratic in the
    // number of statements). The first value of a node wins, as before.
    for (size_t i = 0; i < P.values.size(); ++i) {
      if (D ? i < D->values.size() : true) nodeName_.emplace(D ? D->values[i] : P.values[i].node, P.values[i].name);
      if (D && i < D->values.size()) {
        valueNames_.emplace(D->values[i], P.values[i].name);
        valueLine_.emplace(D->values[i], P.values[i].loc.line);
      }
    }
    for (size_t k = 0; D && k < D->paramGrads.size(); ++k)
      nodeName_.emplace(D->paramGrads[k], "d" + P.loss->name + "/d" + P.params[k].name);
  }

  loops::Program run(const std::vector<NodeId> &outputs, bool lossOnly) {
    {
      std::vector<NodeId> roots = outputs;
      if (D) {
        roots.push_back(D->loss);
        if (!lossOnly) roots.insert(roots.end(), D->paramGrads.begin(), D->paramGrads.end());
      }
      checkSizes(roots);
    }
    // Forward: every output into the outputs array, example after example.
    if (!lossOnly) {
      beginFunction(L.forward, "forward", outputs);
      outputKernels(L.forward, outputs, loops::Space::Outputs);
      formGemms(L.forward);
      fuseEpilogues(L.forward);
      planWorkspace(L.forward);
    }
    if (D) {
      std::vector<NodeId> roots{D->loss};
      if (lossOnly) roots.insert(roots.end(), outputs.begin(), outputs.end());
      else roots.insert(roots.end(), D->paramGrads.begin(), D->paramGrads.end());
      beginFunction(L.gradient, lossOnly ? "loss_and_outputs" : "loss_and_gradient", roots);
      lossKernel(L.gradient);
      if (lossOnly) {
        // The outputs, laid out as the forward function lays them out, through the entry point's
        // grads argument (a loss-only program has no gradient to write there).
        outputKernels(L.gradient, outputs, loops::Space::Grads);
      } else {
        for (size_t k = 0; k < P.params.size(); ++k) gradKernels(L.gradient, k);
      }
      formGemms(L.gradient);
      fuseEpilogues(L.gradient);
      planWorkspace(L.gradient);
    }
    finishWorkspace();
    dropUnusedBuffers();
    return std::move(L);
  }

private:
  // Every output into `space`, example after example (DESIGN.md's layout of the outputs array).
  void outputKernels(loops::Function &f, const std::vector<NodeId> &outputs, loops::Space space) {
    int64_t off = 0;
    for (size_t k = 0; k < outputs.size(); ++k) {
      NodeId o = outputs[k];
      int buf = addBuffer(P.outputs[k].name, space, off, P.outputCount(), G.shape(o).numel());
      off += G.shape(o).numel();
      assignKernel(f, o, buf, /*batch=*/true, "output " + P.outputs[k].name);
    }
  }

  // --- sizes ---------------------------------------------------------------------------------
  // The one size rule: every value that lowering may lay out, forward or gradient, has at most
  // kMaxElements elements (sema's rule for declarations and broadcasting; a matrix product or an
  // outer product of admitted operands can exceed it). Counted with checked arithmetic, so that a
  // shape never overflows on the way.
  static bool checkedNumel(const Shape &s, int64_t &n) {
    n = 1;
    for (int64_t d : s.dims)
      if (__builtin_mul_overflow(n, d, &n)) return false;
    return true;
  }

  void checkSizes(const std::vector<NodeId> &roots) {
    for (NodeId id : G.reachable(roots)) {
      int64_t n;
      if (checkedNumel(G.shape(id), n) && n <= kMaxElements) continue;
      // The statement that names the value, or the op that makes it (in the gradient, where
      // d(loss)/d(value) of a named value has the value's shape, that value is named too).
      std::string where = P.source.name + ": error: ", what;
      for (size_t i = 0; i < P.values.size(); ++i) {
        const NamedValue &v = P.values[i];
        if (v.node == id || (D && i < D->values.size() && D->values[i] == id)) {
          if (v.loc.valid()) where = fmt::format("{}:{}:{}: error: ", P.source.name, v.loc.line, v.loc.col);
          what = "'" + v.name + "'";
          break;
        }
      }
      if (what.empty()) what = fmt::format("a value ({})", opSpelling(G.op(id)));
      throw SizeLimitError(fmt::format("{}{} has shape {}: more than {} elements, the most a value may have", where,
                                       what, G.shape(id).str(), kMaxElements));
    }
  }

  // a + b, or a SizeLimitError when the workspace outgrows kMaxWorkspace.
  int64_t workspaceAdd(int64_t a, int64_t b) const {
    int64_t r;
    if (__builtin_add_overflow(a, b, &r) || r > kMaxWorkspace)
      throw SizeLimitError(fmt::format("{}: error: the program's values need more than {} reals of work space for one "
                                       "example", P.source.name, kMaxWorkspace));
    return r;
  }

  // --- buffers ------------------------------------------------------------------------------
  int addBuffer(std::string name, loops::Space space, int64_t offset, int64_t batchStride, int64_t size) {
    loops::Buffer b;
    b.name = std::move(name);
    b.space = space;
    b.offset = offset;
    b.batchStride = batchStride;
    b.size = size;
    L.buffers.push_back(b);
    return static_cast<int>(L.buffers.size()) - 1;
  }

  int leafBuffer(NodeId id) {
    auto it = leafBuf_.find(id);
    if (it != leafBuf_.end()) return it->second;
    const Node &n = G.node(id);
    const auto &decls = n.op == Op::Input ? P.inputs : n.op == Op::Target ? P.targets : P.params;
    const Decl &d = decls[static_cast<size_t>(n.iattr)];
    loops::Space space = n.op == Op::Input    ? loops::Space::Inputs
                         : n.op == Op::Target ? loops::Space::Targets
                                              : loops::Space::Params;
    int64_t stride = n.op == Op::Input ? P.inputCount() : n.op == Op::Target ? P.targetCount() : 0;
    int b = addBuffer(d.name, space, d.offset, stride, d.shape.numel());
    leafBuf_[id] = b;
    return b;
  }

  std::string nameOf(NodeId id) {
    auto it = nodeName_.find(id);
    return it != nodeName_.end() ? it->second : fmt::format("t{}", id);
  }

  // The formula of a node, one level deep in terms of named values and other buffers.
  std::string describe(NodeId id) {
    // names_: the named values and the buffers so far, kept up to date; without `id` itself.
    std::optional<std::string> own;
    if (auto it = names_.find(id); it != names_.end()) own = std::move(it->second), names_.erase(it);
    std::string text = printExpression(P, id, GradPrintOptions{true}, names_, 400);
    if (own) names_.emplace(id, std::move(*own));
    if (auto line = valueLine_.find(id); line != valueLine_.end())
      return fmt::format("{}   (line {})", text, line->second);
    return text;
  }

  // --- which nodes get a buffer ------------------------------------------------------------
  void beginFunction(loops::Function &f, const char *name, const std::vector<NodeId> &roots) {
    f.name = name;
    bufferOf_.clear();
    columns_.clear();
    paddedImages_.clear();
    poolMaxima_.clear();
    batchSummable_.clear();
    batchSummed_.clear();
    names_ = valueNames_;
    std::vector<NodeId> needed = G.reachable(roots);
    std::vector<int> uses(G.size(), 0);
    std::vector<char> replicated(G.size(), 0), softmaxOperand(G.size(), 0), fromBuffer(G.size(), 0);
    for (NodeId id : needed) {
      const Node &n = G.node(id);
      for (int k = 0; k < n.nin; ++k) {
        NodeId x = n.in[static_cast<size_t>(k)];
        ++uses[static_cast<size_t>(x)];
        bool rep = n.op == Op::MatMul || n.op == Op::Outer || n.op == Op::Broadcast ||
                   (opKind(n.op) == OpKind::Binary && G.shape(x) != n.shape);
        replicated[static_cast<size_t>(x)] |= rep;
        softmaxOperand[static_cast<size_t>(x)] |= n.op == Op::Softmax || n.op == Op::LogSoftmax;
        fromBuffer[static_cast<size_t>(x)] |= readsOperandsFromBuffers(n.op);
      }
    }
    // A transpose is inlined as an index swap: whatever replicates it replicates its operand.
    for (size_t i = needed.size(); i-- > 0;) {
      NodeId id = needed[i];
      if (G.op(id) == Op::Transpose && replicated[static_cast<size_t>(id)])
        replicated[static_cast<size_t>(G.node(id).a())] = 1;
    }
    materialized_.clear();
    if (D)
      for (NodeId g : D->paramGrads)
        if (G.op(g) == Op::Conv2dKernelGrad && uses[static_cast<size_t>(g)] == 0 &&
            std::count(D->paramGrads.begin(), D->paramGrads.end(), g) == 1)
          batchSummable_.insert(g);
    // Fused expressions stay shallow: lowering, the Loop IR printers and both backends recurse on
    // them, so a chain of single-use elementwise ops (one a statement: the parser's depth limit
    // does not see it) gets a buffer every kMaxFusedDepth levels instead of exhausting the stack.
    constexpr int kMaxFusedDepth = 64;
    std::vector<int> depth(G.size(), 0); // levels of the expression a node fuses into; 0: a load
    for (NodeId id : needed) {
      Op op = G.op(id);
      if (isLeaf(op)) continue;
      size_t i = static_cast<size_t>(id);
      bool buffer = needsKernel(op) || uses[i] > 1 || softmaxOperand[i] || fromBuffer[i] ||
                    (replicated[i] && op != Op::Transpose && op != Op::Broadcast);
      int d = 1;
      for (int k = 0; k < G.node(id).nin; ++k)
        d = std::max(d, 1 + depth[static_cast<size_t>(G.node(id).in[static_cast<size_t>(k)])]);
      if (d > kMaxFusedDepth) buffer = true;
      depth[i] = buffer ? 0 : d;
      if (buffer) materialized_.push_back(id);
    }
    // Kernels for the buffered nodes, in topological order.
    for (NodeId id : materialized_) {
      int64_t size = G.shape(id).numel();
      bool pe = perExample_[static_cast<size_t>(id)];
      int b = addBuffer(nameOf(id), loops::Space::Workspace, 0, pe ? size : 0, size);
      bufferOf_[id] = b;
      names_.emplace(id, L.buffers[static_cast<size_t>(b)].name);
      nodeKernel(f, id, b);
    }
  }

  // --- expressions -------------------------------------------------------------------------
  int load(Kernel &k, int buf, const Coords &c, const Shape &s, bool pe) {
    LExpr e;
    e.kind = LExpr::Load;
    e.buffer = buf;
    Affine idx;
    int64_t stride = 1;
    for (int d = s.rank() - 1; d >= 0; --d) {
      idx = idx.plus(c.dims[static_cast<size_t>(d)].scaled(stride));
      stride *= s[d];
    }
    if (pe && c.batchVar >= 0) idx.add(c.batchVar, L.buffers[static_cast<size_t>(buf)].batchStride);
    e.index = idx;
    return k.add(e);
  }

  // The coordinates of operand x (shape sx) read by an elementwise consumer with coordinates c
  // (NumPy alignment: a stretched dimension reads index 0).
  Coords operandCoords(const Coords &c, const Shape &out, const Shape &sx) {
    Coords r;
    r.batchVar = c.batchVar;
    for (int k = 0; k < sx.rank(); ++k) {
      int d = out.rank() - sx.rank() + k;
      r.dims.push_back(sx[k] == 1 && out[d] != 1 ? Affine{} : c.dims[static_cast<size_t>(d)]);
    }
    return r;
  }

  int expr(Kernel &k, NodeId id, const Coords &c) {
    const Node &n = G.node(id);
    if (n.op == Op::Const) {
      LExpr e;
      e.kind = LExpr::Const;
      e.value = n.fattr;
      return k.add(e);
    }
    if (isLeaf(n.op)) return load(k, leafBuffer(id), c, n.shape, perExample_[static_cast<size_t>(id)]);
    auto it = bufferOf_.find(id);
    if (it != bufferOf_.end()) return load(k, it->second, c, n.shape, perExample_[static_cast<size_t>(id)]);
    return body(k, id, c);
  }

  // One level of node `id` as an expression (its operands through expr()).
  int body(Kernel &k, NodeId id, const Coords &c) {
    const Node n = G.node(id);
    LExpr e;
    switch (opKind(n.op)) {
    case OpKind::Unary:
      e.kind = LExpr::Unary;
      e.op = n.op;
      e.value = n.fattr;
      e.a = expr(k, n.a(), c);
      return k.add(e);
    case OpKind::Binary:
      e.kind = LExpr::Binary;
      e.op = n.op;
      e.a = expr(k, n.a(), operandCoords(c, n.shape, G.shape(n.a())));
      e.b = expr(k, n.b(), operandCoords(c, n.shape, G.shape(n.b())));
      return k.add(e);
    default: break;
    }
    switch (n.op) {
    case Op::Broadcast: {
      if (n.iattr < 0) return expr(k, n.a(), operandCoords(c, n.shape, G.shape(n.a())));
      // Every index of axis iattr reads the same element: the operand's coordinates are the
      // others.
      Coords r = c;
      r.dims.erase(r.dims.begin() + n.iattr);
      return expr(k, n.a(), r);
    }
    case Op::Slice: {
      // y[i] = a[i + start]: a shift of every coordinate.
      Coords r = c;
      for (size_t d = 0; d < r.dims.size(); ++d) r.dims[d] = r.dims[d].plus(Affine::of(n.attrs[d]));
      return expr(k, n.a(), r);
    }
    case Op::Reshape: {
      // Row-major order is kept: y at coordinates c is a at the flat index of c. The operand is
      // in a buffer (or a leaf), read as a vector of all its elements.
      if (G.op(n.a()) == Op::Const) return expr(k, n.a(), Coords{{}, c.batchVar});
      Affine flat;
      int64_t stride = 1;
      for (int d = n.shape.rank() - 1; d >= 0; --d) {
        flat = flat.plus(c.dims[static_cast<size_t>(d)].scaled(stride));
        stride *= n.shape[d];
      }
      return load(k, operandBuffer(n.a()), Coords{{flat}, c.batchVar}, Shape{n.shape.numel()},
                  perExample_[static_cast<size_t>(n.a())]);
    }
    case Op::Transpose: return expr(k, n.a(), Coords{{c.dims[1], c.dims[0]}, c.batchVar});
    case Op::Outer:
      e.kind = LExpr::Binary;
      e.op = Op::Mul;
      e.a = expr(k, n.a(), Coords{{c.dims[0]}, c.batchVar});
      e.b = expr(k, n.b(), Coords{{c.dims[1]}, c.batchVar});
      return k.add(e);
    default: throw InternalError(fmt::format("lowering: '{}' must have a buffer", opSpelling(n.op)));
    }
  }

  // --- kernels -------------------------------------------------------------------------------
  // Loops over `shape` (and the batch when `batch`), returning the coordinates.
  Coords loopsOver(Kernel &k, const Shape &shape, bool batch) {
    Coords c;
    int var = 0;
    if (batch) {
      k.loops.push_back({var, 1, true, false});
      c.batchVar = var++;
    }
    for (int d = 0; d < shape.rank(); ++d) {
      k.loops.push_back({var, shape[d], false, false});
      c.dims.push_back(Affine::var(var++));
    }
    return c;
  }
  int nextVar(const Kernel &k) { return static_cast<int>(k.loops.size()); }

  // out[buf] = node, elementwise over its shape.
  void assignKernel(loops::Function &f, NodeId id, int buf, bool batch, std::string what) {
    Kernel k;
    k.mode = Kernel::Assign;
    bool pe = batch && (perExample_[static_cast<size_t>(id)] || L.buffers[static_cast<size_t>(buf)].batchStride);
    Coords c = loopsOver(k, G.shape(id), pe);
    k.body = expr(k, id, c);
    k.out = buf;
    k.outIndex = indexOf(k, buf, c, G.shape(id));
    k.comment = what + " = " + describe(id);
    f.kernels.push_back(std::move(k));
  }

  Affine indexOf(Kernel &k, int buf, const Coords &c, const Shape &s) {
    int e = load(k, buf, c, s, L.buffers[static_cast<size_t>(buf)].batchStride != 0);
    Affine a = k.pool[static_cast<size_t>(e)].index;
    k.pool.pop_back();
    return a;
  }

  void nodeKernel(loops::Function &f, NodeId id, int buf) {
    const Node n = G.node(id);
    bool pe = perExample_[static_cast<size_t>(id)];
    std::string comment = nameOf(id) + " = " + describe(id);
    if (!needsKernel(n.op)) {
      // Read by several consumers: computed once into its buffer. Operands through expr().
      Kernel k;
      Coords c = loopsOver(k, n.shape, pe);
      k.body = body(k, id, c);
      k.out = buf;
      k.outIndex = indexOf(k, buf, c, n.shape);
      k.comment = comment;
      f.kernels.push_back(std::move(k));
      return;
    }
    Kernel k;
    k.comment = comment;
    k.out = buf;
    if (n.op == Op::Softmax || n.op == Op::LogSoftmax) {
      k.mode = Kernel::Softmax;
      k.logSoftmax = n.op == Op::LogSoftmax;
      const Shape &s = n.shape;
      k.cols = s[s.rank() - 1];
      // The rows: every index of the leading axes.
      Shape rows(std::vector<int64_t>(s.dims.begin(), s.dims.end() - 1));
      Coords c = loopsOver(k, rows, pe);
      c.dims.push_back(Affine{}); // column 0: the start of the row
      k.outIndex = indexOf(k, buf, c, s);
      k.in = operandBuffer(n.a());
      k.inIndex = indexOf(k, k.in, c, s);
      f.kernels.push_back(std::move(k));
      return;
    }
    switch (n.op) {
    case Op::ExtremeMask: extremeMaskKernels(f, id, buf, comment); return;
    case Op::Pad:
    case Op::Concat: placeKernels(f, id, buf, comment); return;
    case Op::Conv2d:
    case Op::Conv2dKernelGrad:
    case Op::Conv2dInputGrad: convKernels(f, id, buf, comment); return;
    case Op::MaxPool2d:
    case Op::AvgPool2d: windowReduceKernel(f, id, buf, comment); return;
    case Op::AvgPool2dGrad:
    case Op::MaxPool2dGrad: windowScatterKernels(f, id, buf, comment); return;
    default: break;
    }
    k.mode = Kernel::Reduce;
    if (n.op == Op::Max) k.combine = Kernel::Max;
    if (n.op == Op::Min) k.combine = Kernel::Min;
    Coords c = loopsOver(k, n.shape, pe);
    auto red = [&](int64_t extent) {
      int v = nextVar(k);
      k.loops.push_back({v, extent, false, true});
      return Affine::var(v);
    };
    int a = -1, b = -1;
    const Shape sa = G.shape(n.a());
    switch (n.op) {
    case Op::MatMul: {
      const Shape sb = G.shape(n.b());
      Affine l = red(sa[sa.rank() - 1]);
      Coords ca{{}, c.batchVar}, cb{{}, c.batchVar};
      size_t o = 0;
      if (sa.rank() == 2) ca.dims.push_back(c.dims[o++]);
      ca.dims.push_back(l);
      cb.dims.push_back(l);
      if (sb.rank() == 2) cb.dims.push_back(c.dims[o++]);
      a = expr(k, n.a(), ca);
      b = expr(k, n.b(), cb);
      break;
    }
    case Op::Sum:
    case Op::Max:
    case Op::Min:
      if (n.op == Op::Sum || n.iattr < 0) {
        Coords ca{{}, c.batchVar};
        for (int d = 0; d < sa.rank(); ++d) ca.dims.push_back(red(sa[d]));
        a = expr(k, n.a(), ca);
        break;
      }
      [[fallthrough]];
    case Op::SumAxis: {
      // The output's coordinates with the summed axis inserted.
      Affine r = red(sa[static_cast<int>(n.iattr)]);
      a = expr(k, n.a(), Coords{insertAt(c.dims, n.iattr, r), c.batchVar});
      break;
    }
    case Op::SumTo: {
      // Each dimension of the operand is either an output dimension or summed.
      Coords ca{{}, c.batchVar};
      const Shape &s = n.shape;
      for (int d = 0; d < sa.rank(); ++d) {
        int od = d - (sa.rank() - s.rank());
        if (od < 0 || (s[od] == 1 && sa[d] != 1)) ca.dims.push_back(red(sa[d]));
        else ca.dims.push_back(c.dims[static_cast<size_t>(od)]);
      }
      // Output dims of size 1 that were stretched are written at index 0.
      for (int od = 0; od < s.rank(); ++od) {
        int d = od + (sa.rank() - s.rank());
        if (s[od] == 1 && sa[d] != 1) c.dims[static_cast<size_t>(od)] = Affine{};
      }
      a = expr(k, n.a(), ca);
      break;
    }
    default: throw InternalError("lowering: unexpected reduction");
    }
    if (n.op == Op::MatMul && n.shape.rank() > 0 &&
        !(contiguousIn(k, a, k.loops.back().var) && contiguousIn(k, b, k.loops.back().var))) {
      axpyMatMul(f, std::move(k), a, b, c, n.shape);
      return;
    }
    if (b >= 0) {
      LExpr m;
      m.kind = LExpr::Binary;
      m.op = Op::Mul;
      m.a = a;
      m.b = b;
      k.body = k.add(m);
    } else {
      k.body = a;
    }
    LExpr acc;
    acc.kind = LExpr::Acc;
    k.epilogue = k.add(acc);
    k.outIndex = indexOf(k, buf, c, n.shape);
    f.kernels.push_back(std::move(k));
  }

  // Whether the load at pool index e reads consecutive elements as loop variable v advances.
  static bool contiguousIn(const Kernel &k, int e, int v) {
    const LExpr &x = k.pool[static_cast<size_t>(e)];
    if (x.kind != LExpr::Load) return false;
    return x.index.coef(v) == 1;
  }

  // A matrix product whose operands are not both contiguous along the reduction becomes
  // out = 0; for ..., l, j: out[.., j] += a * b, with the output's last dimension innermost, so
  // the inner loop runs along rows of the matrix operand (Aᵀ g, x B).
  void axpyMatMul(loops::Function &f, Kernel k, int a, int b, Coords c, const Shape &shape) {
    zeroKernel(f, k.out, shape, c.batchVar >= 0, k.comment + "   (zeroed, then accumulated)");
    // Move the reduction loop (last) just before the output's last dimension.
    loops::Loop red = k.loops.back();
    k.loops.pop_back();
    red.reduction = false;
    k.loops.insert(k.loops.end() - 1, red);
    LExpr m;
    m.kind = LExpr::Binary;
    m.op = Op::Mul;
    m.a = a;
    m.b = b;
    k.body = k.add(m);
    k.mode = Kernel::Accumulate;
    k.epilogue = -1;
    k.outIndex = indexOf(k, k.out, c, shape);
    f.kernels.push_back(std::move(k));
  }

  // buf = 0 over `shape` (for every example when `batch`).
  void zeroKernel(loops::Function &f, int buf, const Shape &shape, bool batch, std::string comment) {
    Kernel zero;
    Coords cz = loopsOver(zero, shape, batch);
    LExpr z;
    z.kind = LExpr::Const;
    zero.body = zero.add(z);
    zero.out = buf;
    zero.outIndex = indexOf(zero, buf, cz, shape);
    zero.comment = std::move(comment);
    f.kernels.push_back(std::move(zero));
  }

  // --- the kernels of slices, pads, concatenations, extreme masks, convolutions and pools --------
  // The buffer holding operand x (a leaf, or a node materialized for its consumer).
  int operandBuffer(NodeId x) { return isLeaf(G.op(x)) ? leafBuffer(x) : bufferOf_.at(x); }

  // Scratch that only the kernels of node `id` use: `size` elements, per example when `pe`.
  int scratch(NodeId id, const std::string &what, int64_t size, bool pe) {
    return addBuffer(nameOf(id) + "." + what, loops::Space::Workspace, 0, pe ? size : 0, size);
  }

  // A new loop of `extent` (a reduction when `reduction`), innermost so far; its variable.
  static Affine addLoop(Kernel &k, int64_t extent, bool reduction) {
    int v = static_cast<int>(k.loops.size());
    k.loops.push_back({v, extent, false, reduction});
    return Affine::var(v);
  }

  static int constant(Kernel &k, double v) {
    LExpr e;
    e.kind = LExpr::Const;
    e.value = v;
    return k.add(e);
  }
  static int binary(Kernel &k, Op op, int a, int b) {
    LExpr e;
    e.kind = LExpr::Binary;
    e.op = op;
    e.a = a;
    e.b = b;
    return k.add(e);
  }
  static int select(Kernel &k, LExpr::Cmp cmp, int a, int b, int c, int d) {
    LExpr e;
    e.kind = LExpr::Select;
    e.cmp = cmp;
    e.a = a;
    e.b = b;
    e.c = c;
    e.d = d;
    return k.add(e);
  }
  static int indexValue(Kernel &k, Affine a) {
    LExpr e;
    e.kind = LExpr::Index;
    e.index = std::move(a);
    return k.add(e);
  }
  static int accValue(Kernel &k) {
    LExpr e;
    e.kind = LExpr::Acc;
    return k.add(e);
  }

  // Operand x (in a buffer: readsOperandsFromBuffers) at coordinates c; with `padded`, 0 where a
  // row or column coordinate (dims 1 and 2 of an image [C, H, W]) falls outside the image.
  int imageLoad(Kernel &k, NodeId x, const Coords &c, bool padded) {
    const Shape &s = G.shape(x);
    int e = load(k, operandBuffer(x), c, s, perExample_[static_cast<size_t>(x)]);
    if (padded)
      for (int d : {1, 2}) k.pool[static_cast<size_t>(e)].bounds.push_back({c.dims[static_cast<size_t>(d)], s[d]});
    return e;
  }

  // The affine position oh·s + i - p of a window element in the (padded) image.
  static Affine windowPos(const Affine &o, int64_t stride, const Affine &i, int64_t pad) {
    return o.scaled(stride).plus(i).plus(Affine::of(-pad));
  }

  // The mask of the first extreme element of a (or of each slice along axis iattr): the extreme
  // value of each slice (a Max/Min reduction), the first position where a equals it (a Min
  // reduction over positions, the slice's size where none), then 1 at that position.
  void extremeMaskKernels(loops::Function &f, NodeId id, int buf, const std::string &comment) {
    const Node n = G.node(id);
    const bool pe = perExample_[static_cast<size_t>(id)];
    const Shape &s = n.shape;
    const int64_t axis = n.iattr;
    std::vector<int64_t> sliceDims;
    if (axis >= 0) {
      sliceDims = s.dims;
      sliceDims.erase(sliceDims.begin() + axis);
    }
    const Shape slices(sliceDims);
    const int64_t count = axis >= 0 ? s[static_cast<int>(axis)] : s.numel();
    const int extreme = scratch(id, n.fattr > 0 ? "max" : "min", slices.numel(), pe);
    const int first = scratch(id, "first", slices.numel(), pe);
    // The coordinates of a inside slice c, and the position of that element in its slice.
    auto inSlice = [&](Kernel &k, const Coords &c, Affine &pos) {
      Coords ca{{}, c.batchVar};
      if (axis >= 0) {
        pos = addLoop(k, count, true);
        ca.dims = insertAt(c.dims, axis, pos);
        return ca;
      }
      pos = Affine{};
      int64_t stride = s.numel();
      for (int d = 0; d < s.rank(); ++d) {
        stride /= s[d];
        ca.dims.push_back(addLoop(k, s[d], true));
        pos = pos.plus(ca.dims.back().scaled(stride));
      }
      return ca;
    };
    {
      Kernel k;
      k.mode = Kernel::Reduce;
      k.combine = n.fattr > 0 ? Kernel::Max : Kernel::Min;
      Coords c = loopsOver(k, slices, pe);
      Affine pos;
      k.body = expr(k, n.a(), inSlice(k, c, pos));
      k.epilogue = accValue(k);
      k.out = extreme;
      k.outIndex = indexOf(k, extreme, c, slices);
      k.comment = comment + "   (the extreme of each slice)";
      f.kernels.push_back(std::move(k));
    }
    {
      Kernel k;
      k.mode = Kernel::Reduce;
      k.combine = Kernel::Min;
      Coords c = loopsOver(k, slices, pe);
      Affine pos;
      Coords ca = inSlice(k, c, pos);
      int x = expr(k, n.a(), ca);
      int m = load(k, extreme, c, slices, pe);
      k.body = select(k, LExpr::Eq, x, m, indexValue(k, pos), constant(k, static_cast<double>(count)));
      k.epilogue = accValue(k);
      k.out = first;
      k.outIndex = indexOf(k, first, c, slices);
      k.comment = comment + "   (the first position of the extreme)";
      f.kernels.push_back(std::move(k));
    }
    Kernel k;
    Coords c = loopsOver(k, s, pe);
    Affine pos;
    Coords cs{{}, c.batchVar};
    if (axis >= 0) {
      pos = c.dims[static_cast<size_t>(axis)];
      cs.dims = c.dims;
      cs.dims.erase(cs.dims.begin() + axis);
    } else {
      int64_t stride = s.numel();
      for (int d = 0; d < s.rank(); ++d) pos = pos.plus(c.dims[static_cast<size_t>(d)].scaled(stride /= s[d]));
    }
    k.body = select(k, LExpr::Eq, indexValue(k, pos), load(k, first, cs, slices, pe), constant(k, 1), constant(k, 0));
    k.out = buf;
    k.outIndex = indexOf(k, buf, c, s);
    k.comment = comment;
    f.kernels.push_back(std::move(k));
  }

  // Pad: zeros, then a written at `start`. Concat: a, then b after it along the axis.
  void placeKernels(loops::Function &f, NodeId id, int buf, const std::string &comment) {
    const Node n = G.node(id);
    const bool pe = perExample_[static_cast<size_t>(id)];
    std::vector<std::pair<NodeId, std::vector<int64_t>>> parts;
    if (n.op == Op::Pad) {
      zeroKernel(f, buf, n.shape, pe, comment + "   (zeroed, then the inner block written)");
      parts.push_back({n.a(), n.attrs});
    } else {
      std::vector<int64_t> at(static_cast<size_t>(n.shape.rank()), 0);
      parts.push_back({n.a(), at});
      at[static_cast<size_t>(n.iattr)] = G.shape(n.a())[static_cast<int>(n.iattr)];
      parts.push_back({n.b(), at});
    }
    for (auto &[x, start] : parts) {
      Kernel k;
      Coords c = loopsOver(k, G.shape(x), pe);
      k.body = expr(k, x, c);
      Coords co = c;
      for (size_t d = 0; d < co.dims.size(); ++d) co.dims[d] = co.dims[d].plus(Affine::of(start[d]));
      k.out = buf;
      k.outIndex = indexOf(k, buf, co, n.shape);
      k.comment = comment;
      f.kernels.push_back(std::move(k));
    }
  }

  // The convolutions as matrix products on the register-tiled Gemm path (DESIGN.md), one product
  // an example, through an unrolled copy of the image in the workspace (im2col). With Q = C·kh·kw
  // window elements (q = (c, i, j)) and P = Ho·Wo output positions (p = (oh, ow)), and
  // x̂[q, p] = x[c, oh·s + i - p, ow·s + j - p] (0 in the padding), kept as x̂ [Q, P] for a
  // convolution of few filters and as x̂ᵀ [P, Q] (a row a window) for one of many:
  //   conv2d:             y[f, p]  = Σ_q K[f, q] x̂[q, p], or yᵀ[p, f] = Σ_q x̂ᵀ[p, q] Kᵀ[q, f]
  //                       and y = (yᵀ)ᵀ (F ≥ 32: whole register tiles of filters)
  //   conv2d_kernel_grad: dK[f, q] = Σ_p g[f, p] x̂ᵀ[p, q], or dKᵀ[q, f] = Σ_p x̂[q, p] gᵀ[p, f]
  //                       and dK = (dKᵀ)ᵀ: x̂ (x̂ᵀ) is the forward's own copy when the same image
  //                       was convolved before (it is, in a gradient), so only g is transposed
  //                       (F·P, not Q·P), if at all. As a param's gradient the product also sums
  //                       over the batch (the batch loop around it, C shared), and gradKernels
  //                       divides by n.
  //   conv2d_input_grad:  d̂[q, p]  = Σ_f Kᵀ[q, f] g[f, p], then dx[c, oh·s + i - p, ow·s + j - p]
  //                       += d̂[q, p] inside the image (col2im; overlapping windows add)
  // With padding, im2col reads and col2im writes a padded copy of the image (no bounds tests).
  void convKernels(loops::Function &f, NodeId id, int buf, const std::string &comment) {
    const Node n = G.node(id);
    const bool pe = perExample_[static_cast<size_t>(id)];
    const int64_t st = n.attrs[0], pad = n.attrs[1];
    const NodeId K = n.op == Op::Conv2dKernelGrad ? kNoNode : n.b();
    const Shape xs = n.op == Op::Conv2dInputGrad ? n.shape : G.shape(n.a());
    const Shape ks = n.op == Op::Conv2dKernelGrad ? n.shape : G.shape(K);
    const Shape ys = n.op == Op::Conv2d ? n.shape : n.op == Op::Conv2dInputGrad ? G.shape(n.a()) : G.shape(n.b());
    const int64_t F = ks[0], C = ks[1], kh = ks[2], kw = ks[3], Q = C * kh * kw, P = ys[1] * ys[2];
    auto pe_ = [&](NodeId x) { return static_cast<bool>(perExample_[static_cast<size_t>(x)]); };
    // The image x, zero-padded (x itself without padding), made once a function for each image
    // and padding, so that im2col and the windowed products read every window element without
    // a bounds test (the copy vectorizes, the products' loads are plain).
    auto padded = [&]() -> std::pair<int, Shape> {
      const NodeId x = n.a();
      if (pad == 0) return {operandBuffer(x), xs};
      const bool xpe = pe_(x);
      const Shape ss{C, xs[1] + 2 * pad, xs[2] + 2 * pad};
      const std::vector<int64_t> key{x, pad, xpe};
      if (auto it = paddedImages_.find(key); it != paddedImages_.end()) return {it->second, ss};
      const int src = scratch(id, "xpad", ss.numel(), xpe);
      zeroKernel(f, src, ss, xpe, comment + "   (the padded image: zeroed)");
      Kernel k;
      Coords c = loopsOver(k, xs, xpe);
      k.body = load(k, operandBuffer(x), c, xs, xpe);
      Coords in = c;
      for (int d : {1, 2}) in.dims[static_cast<size_t>(d)] = in.dims[static_cast<size_t>(d)].plus(Affine::of(pad));
      k.out = src;
      k.outIndex = indexOf(k, src, in, ss);
      k.comment = comment + "   (the padded image: the image inside)";
      f.kernels.push_back(std::move(k));
      paddedImages_.emplace(key, src);
      return {src, ss};
    };
    // The windowed product (LoopIR.h): A[m, k] read straight out of the padded image, its rows
    // the windows (p = (oh, ow)) and its k the window elements (q = (c, i, j)), or (`byElement`)
    // the other way round: im2col's copy never made.
    auto windowed = [&](bool byElement) {
      const auto [src, ss] = padded();
      loops::Radix windows{{ys[1], ys[2]}, {st * ss[2], st}}, elements{{C, kh, kw}, {ss[1] * ss[2], ss[2], 1}};
      Kernel &k = f.kernels.back();
      k.aRows = byElement ? elements : windows;
      k.aCols = byElement ? windows : elements;
      return src;
    };
    // The unrolled image, as x̂ [Q, P] or as x̂ᵀ [P, Q] (`transposed`), made once a function for
    // each image and window; `transposed` is only a wish when the copy exists already.
    auto im2col = [&](bool &transposed) {
      const NodeId x = n.a();
      const std::vector<int64_t> key{x, st, pad, kh, kw, ys[1], ys[2], pe_(x)};
      if (auto it = columns_.find(key); it != columns_.end()) {
        transposed = it->second.second;
        return it->second.first;
      }
      const bool xpe = pe_(x);
      const int col = scratch(id, transposed ? "colᵀ" : "col", Q * P, xpe);
      const auto [src, ss] = padded();
      Kernel k;
      Coords c;
      if (xpe) c.batchVar = 0, k.loops.push_back({0, 1, true, false});
      std::vector<Affine> v;
      const std::vector<int64_t> ext = transposed ? std::vector<int64_t>{ys[1], ys[2], C, kh, kw}
                                                  : std::vector<int64_t>{C, kh, kw, ys[1], ys[2]};
      for (int64_t e : ext) v.push_back(addLoop(k, e, false));
      const Affine &ci = v[transposed ? 2 : 0], &i = v[transposed ? 3 : 1], &j = v[transposed ? 4 : 2];
      const Affine &oh = v[transposed ? 0 : 3], &ow = v[transposed ? 1 : 4];
      k.body = load(k, src, Coords{{ci, windowPos(oh, st, i, 0), windowPos(ow, st, j, 0)}, c.batchVar}, ss, xpe);
      c.dims = v;
      k.out = col;
      k.outIndex = indexOf(k, col, c, Shape(ext));
      k.comment = comment + (transposed ? "   (the windows of the image, one row a window)" : "   (the windows of the image)");
      f.kernels.push_back(std::move(k));
      columns_.emplace(key, std::make_pair(col, transposed));
      return col;
    };
    switch (n.op) {
    case Op::Conv2d: {
      if (windowedConv(F, P)) {
        // Many filters: yᵀ[p, f] = Σ_q x̂ᵀ[p, q] Kᵀ[q, f], then y = (yᵀ)ᵀ. The product's rows are
        // the P positions and its columns the F filters (whole register tiles): on the bench
        // convnet 1.4x faster than K x̂ (32 rows, 196 columns: the last tile of 4) when it read x̂
        // down its columns, and faster again reading x̂ᵀ's rows; x̂ᵀ's rows are now read straight
        // out of the padded image (the windowed form: no im2col copy, which was 7% of the step,
        // and the image, not a 25x larger copy, in cache).
        const int KT = scratch(id, "Kᵀ", Q * F, pe_(K));
        transposeKernel(f, KT, operandBuffer(K), F, Q, pe_(K), comment + "   (Kᵀ)");
        const int yT = scratch(id, "yᵀ", P * F, pe);
        const auto [src, ss] = padded();
        productKernel(f, comment + "   (a matrix product an example, its windows read in the image)", pe, P, Q, F,
                      {src, pe_(n.a()), 0, 0}, {KT, pe_(K), F, 1}, {yT, pe, F}, false);
        windowed(false);
        transposeKernel(f, buf, yT, P, F, pe, comment);
        return;
      }
      bool transposed = false;
      const int col = im2col(transposed);
      productKernel(f, comment + "   (a matrix product an example)", pe, F, Q, P, {operandBuffer(K), pe_(K), Q, 1},
                    {col, pe_(n.a()), P, 1}, {buf, pe, P}, false);
      return;
    }
    case Op::Conv2dKernelGrad: {
      const NodeId g = n.b();
      const bool gpe = pe_(g);
      if (windowedConv(F, P)) {
        // dKᵀ[q, f] = Σ_p x̂[q, p] gᵀ[p, f], x̂ read in the padded image (the windowed form), and
        // dK = (dKᵀ)ᵀ; only g (F·P) is transposed.
        const bool summed = pe && batchSummable_.count(id);
        const int gT = scratch(id, "gᵀ", P * F, gpe);
        transposeKernel(f, gT, operandBuffer(g), F, P, gpe, comment + "   (gᵀ, so that the product below reads rows)");
        const auto [src, ss] = padded();
        const MatrixAt a{src, pe_(n.a()), 0, 0}, b{gT, gpe, F, 1};
        if (summed) {
          const int sum = addBuffer(nameOf(id) + ".Σᵀ", loops::Space::Workspace, 0, 0, Q * F);
          zeroKernel(f, sum, Shape{Q * F}, false, comment + "   (summed over the batch: zeroed)");
          batchSummed_[id] = {sum, false};
          productKernel(f, comment + "   (a matrix product an example, summed over the batch, its windows read in the image)",
                        true, Q, P, F, a, b, {sum, false, F}, true);
          windowed(true);
          return;
        }
        const int dKT = scratch(id, "dKᵀ", Q * F, pe);
        productKernel(f, comment + "   (a matrix product an example, its windows read in the image)", pe, Q, P, F, a,
                      b, {dKT, pe, F}, false);
        windowed(true);
        transposeKernel(f, buf, dKT, Q, F, pe, comment);
        return;
      }
      bool transposed = true; // x̂ᵀ when no copy exists: dK = g x̂ᵀ needs no transposes
      const int col = im2col(transposed);
      const bool summed = pe && batchSummable_.count(id);
      // The sum over the batch of dK (transposed: of dKᵀ) into one shared buffer, which
      // gradKernels divides by n; else each example's into buf (through dKᵀ).
      int sum = -1;
      if (summed) {
        sum = addBuffer(nameOf(id) + (transposed ? ".Σ" : ".Σᵀ"), loops::Space::Workspace, 0, 0, Q * F);
        zeroKernel(f, sum, Shape{Q * F}, false, comment + "   (summed over the batch: zeroed)");
        batchSummed_[id] = {sum, transposed};
      }
      const char *what = summed ? "   (a matrix product an example, summed over the batch)" : "   (a matrix product an example)";
      if (transposed) {
        // dK[f, q] = Σ_p g[f, p] x̂ᵀ[p, q]
        productKernel(f, comment + what, pe, F, P, Q, {operandBuffer(g), gpe, P, 1}, {col, pe_(n.a()), Q, 1},
                      summed ? OutAt{sum, false, Q} : OutAt{buf, pe, Q}, summed);
        return;
      }
      // dKᵀ[q, f] = Σ_p x̂[q, p] gᵀ[p, f]: only g (F·P, not Q·P) is transposed.
      const int gT = scratch(id, "gᵀ", P * F, gpe);
      transposeKernel(f, gT, operandBuffer(g), F, P, gpe, comment + "   (gᵀ, so that the product below reads rows)");
      if (summed) {
        productKernel(f, comment + what, true, Q, P, F, {col, pe_(n.a()), P, 1}, {gT, gpe, F, 1}, {sum, false, F}, true);
        return;
      }
      const int dKT = scratch(id, "dKᵀ", Q * F, pe);
      productKernel(f, comment + what, pe, Q, P, F, {col, pe_(n.a()), P, 1}, {gT, gpe, F, 1}, {dKT, pe, F}, false);
      transposeKernel(f, buf, dKT, Q, F, pe, comment);
      return;
    }
    default: break;
    }
    if (windowedConv(F, P) && st == 1 && pad <= kh - 1 && pad <= kw - 1) {
      // The input gradient of a stride-1 convolution is the convolution of g, padded by kh-1-pad
      // (kw-1-pad), with the flipped kernel: dx[c, y, x] = Σ_f,i,j K'[f, i, j, c] ĝ[f, y + i, x + j],
      // K'[f, i, j, c] = K[f, c, kh-1-i, kw-1-j]. As a windowed product dxᵀ[p, c] = Σ_q ĝᵀ[p, q]
      // K'[q, c] (rows the H·W pixels, k the F·kh·kw window elements of ĝ) and dx = (dxᵀ)ᵀ: no
      // d̂ = Kᵀ g of Q·P per example, no col2im (on the bench convnet 22% of the step together).
      const NodeId g = n.a();
      const bool gpe = pe_(g);
      const int64_t H = xs[1], W = xs[2], Hg = H + kh - 1, Wg = W + kw - 1, Qg = F * kh * kw;
      const Shape gs{F, Hg, Wg};
      const int gp = scratch(id, "gpad", gs.numel(), gpe);
      zeroKernel(f, gp, gs, gpe, comment + "   (g padded by the kernel's size less the padding: zeroed)");
      {
        Kernel k;
        Coords c = loopsOver(k, ys, gpe);
        k.body = load(k, operandBuffer(g), c, ys, gpe);
        Coords in = c;
        in.dims[1] = in.dims[1].plus(Affine::of(kh - 1 - pad));
        in.dims[2] = in.dims[2].plus(Affine::of(kw - 1 - pad));
        k.out = gp;
        k.outIndex = indexOf(k, gp, in, gs);
        k.comment = comment + "   (g padded: g inside)";
        f.kernels.push_back(std::move(k));
      }
      const bool kpe = pe_(K);
      const int Kf = scratch(id, "K'", Qg * C, kpe);
      {
        Kernel k;
        Coords c = loopsOver(k, Shape{F, kh, kw, C}, kpe);
        const Affine &fi = c.dims[0], &i = c.dims[1], &j = c.dims[2], &ci = c.dims[3];
        Coords flipped{{fi, ci, i.scaled(-1).plus(Affine::of(kh - 1)), j.scaled(-1).plus(Affine::of(kw - 1))}, c.batchVar};
        k.body = load(k, operandBuffer(K), flipped, ks, kpe);
        k.out = Kf;
        k.outIndex = indexOf(k, Kf, c, Shape{F, kh, kw, C});
        k.comment = comment + "   (the kernel flipped, its channels last)";
        f.kernels.push_back(std::move(k));
      }
      const int dxT = scratch(id, "dxᵀ", H * W * C, pe);
      productKernel(f, comment + "   (a matrix product an example, the windows of padded g read in it)", pe, H * W, Qg,
                    C, {gp, gpe, 0, 0}, {Kf, kpe, C, 1}, {dxT, pe, C}, false);
      Kernel &k = f.kernels.back();
      k.aRows = loops::Radix{{H, W}, {Wg, 1}};
      k.aCols = loops::Radix{{F, kh, kw}, {Hg * Wg, Wg, 1}};
      transposeKernel(f, buf, dxT, H * W, C, pe, comment);
      return;
    }
    const int col = scratch(id, "dcol", Q * P, pe);
    productKernel(f, comment + "   (the gradient of the windows, a matrix product an example)", pe, Q, F, P,
                  {operandBuffer(K), pe_(K), 1, Q}, {operandBuffer(n.a()), pe_(n.a()), P, 1}, {col, pe, P}, false);
    // With padding, the windows are added into a padded image without a bounds test (the loop
    // along ow vectorizes), and its inside is the gradient.
    const Shape ps = pad > 0 ? Shape{C, xs[1] + 2 * pad, xs[2] + 2 * pad} : n.shape;
    const int dst = pad > 0 ? scratch(id, "dxpad", ps.numel(), pe) : buf;
    zeroKernel(f, dst, ps, pe, comment + "   (zeroed, then accumulated window by window)");
    Kernel k;
    k.mode = Kernel::Accumulate;
    k.comment = comment;
    Coords c;
    if (pe) c.batchVar = 0, k.loops.push_back({0, 1, true, false});
    Affine ci = addLoop(k, C, false), i = addLoop(k, kh, false), j = addLoop(k, kw, false);
    Affine oh = addLoop(k, ys[1], false), ow = addLoop(k, ys[2], false);
    k.body = load(k, col, Coords{{ci, i, j, oh, ow}, c.batchVar}, Shape{C, kh, kw, ys[1], ys[2]}, pe);
    Coords out{{ci, windowPos(oh, st, i, 0), windowPos(ow, st, j, 0)}, c.batchVar};
    k.out = dst;
    k.outIndex = indexOf(k, dst, out, ps);
    f.kernels.push_back(std::move(k));
    if (pad == 0) return;
    Kernel crop;
    Coords cc = loopsOver(crop, n.shape, pe);
    Coords in = cc;
    for (int d : {1, 2}) in.dims[static_cast<size_t>(d)] = in.dims[static_cast<size_t>(d)].plus(Affine::of(pad));
    crop.body = load(crop, dst, in, ps, pe);
    crop.out = buf;
    crop.outIndex = indexOf(crop, buf, cc, n.shape);
    crop.comment = comment + "   (the inside of the padded image)";
    f.kernels.push_back(std::move(crop));
  }

  // Whether a convolution of F filters and P output positions reads its windows straight out of
  // the image (the windowed Gemm form) rather than through an im2col copy: with many filters,
  // where the product's columns are the filters (whole register tiles). Its kernel gradient
  // then reads x̂ the same way.
  static bool windowedConv(int64_t F, int64_t P) { return F >= 32 && P > F; }

  // A matrix operand: element [r, c] at r·rows + c·cols (+ its example's start when pe).
  struct MatrixAt {
    int buf;
    bool pe;
    int64_t rows, cols;
  };
  struct OutAt {
    int buf;
    bool pe;
    int64_t rows; // columns contiguous (the Gemm kernel's rule)
  };
  // out[m, n] (+)= Σ_k a[m, k] b[k, n], as one Gemm kernel; `batched`: one product an example
  // (the batch loop around it; an operand without pe is the same for every example, and an
  // `accumulate`d shared out sums the products over the batch).
  void productKernel(loops::Function &f, std::string comment, bool batched, int64_t M, int64_t Kd, int64_t N,
                     MatrixAt a, MatrixAt b, OutAt c, bool accumulate) {
    Kernel k;
    k.mode = Kernel::Gemm;
    k.accumulate = accumulate;
    k.comment = std::move(comment);
    if (batched) k.loops.push_back({0, 1, true, false});
    Affine m = addLoop(k, M, false), kk = addLoop(k, Kd, false), nn = addLoop(k, N, false);
    auto at = [&](int buffer, bool pe, const Affine &i) {
      LExpr e;
      e.kind = LExpr::Load;
      e.buffer = buffer;
      e.index = i;
      if (batched && pe) e.index.add(0, L.buffers[static_cast<size_t>(buffer)].batchStride);
      return e;
    };
    int la = k.add(at(a.buf, a.pe, m.scaled(a.rows).plus(kk.scaled(a.cols))));
    int lb = k.add(at(b.buf, b.pe, kk.scaled(b.rows).plus(nn.scaled(b.cols))));
    k.body = binary(k, Op::Mul, la, lb);
    k.out = c.buf;
    k.outIndex = at(c.buf, c.pe, m.scaled(c.rows).plus(nn)).index;
    f.kernels.push_back(std::move(k));
  }

  // out[c, r] = in[r, c] for an R × Cc matrix in (per example when pe): the rows of out are
  // written one after the other, or in's rows read one after the other (`rowsFirst`). (Blocks
  // of 8 rows measured no better on the convnet's transposes.)
  void transposeKernel(loops::Function &f, int out, int in, int64_t R, int64_t Cc, bool pe, std::string comment) {
    Kernel k;
    Coords c;
    if (pe) c.batchVar = 0, k.loops.push_back({0, 1, true, false});
    // Which of the two accesses is strided: on the bench convnet, reading in's rows (writes
    // strided by R) was 3x faster for g [32, 196] -> gᵀ, and 2 to 2.3x slower for yᵀ [196, 32]
    // -> y, dxᵀ [196, 16] -> dx and 1.5x slower for g [16, 784] -> gᵀ than writing out's rows.
    const bool rowsFirst = R >= 32 && R < Cc;
    Affine col, row;
    if (rowsFirst) row = addLoop(k, R, false), col = addLoop(k, Cc, false);
    else col = addLoop(k, Cc, false), row = addLoop(k, R, false);
    k.body = load(k, in, Coords{{row, col}, c.batchVar}, Shape{R, Cc}, pe);
    k.out = out;
    k.outIndex = indexOf(k, out, Coords{{col, row}, c.batchVar}, Shape{Cc, R});
    k.comment = std::move(comment);
    f.kernels.push_back(std::move(k));
  }

  // MaxPool2d, AvgPool2d: one reduction over a window per output element (fused loops).
  //   maxpool2d:          y[c, oh, ow]  = max_i,j x[c, oh·s + i, ow·s + j]
  //   avgpool2d:          y[c, oh, ow]  = Σ_i,j x[c, oh·s + i, ow·s + j] / k²
  void windowReduceKernel(loops::Function &f, NodeId id, int buf, const std::string &comment) {
    const Node n = G.node(id);
    const bool pe = perExample_[static_cast<size_t>(id)];
    Kernel k;
    k.mode = Kernel::Reduce;
    k.comment = comment;
    Coords c = loopsOver(k, n.shape, pe);
    const int64_t w = n.attrs[0], s = n.attrs[1];
    Affine i = addLoop(k, w, true), j = addLoop(k, w, true);
    k.body = imageLoad(k, n.a(), Coords{{c.dims[0], windowPos(c.dims[1], s, i, 0), windowPos(c.dims[2], s, j, 0)}, c.batchVar}, false);
    if (n.op == Op::MaxPool2d) {
      k.combine = Kernel::Max;
      k.epilogue = accValue(k);
    } else {
      k.epilogue = binary(k, Op::Div, accValue(k), constant(k, static_cast<double>(w * w)));
    }
    k.out = buf;
    k.outIndex = indexOf(k, buf, c, n.shape);
    f.kernels.push_back(std::move(k));
    if (n.op == Op::MaxPool2d) poolMaxima_[{n.a(), w, s, pe}] = buf;
  }

  // AvgPool2dGrad, MaxPool2dGrad: each output-gradient element is spread over its window: the
  // image gradient is zeroed, then accumulated window by window (overlapping windows add).
  //   avgpool2d_grad:    dx[c, oh·s + i, ow·s + j] += g[c, oh, ow] / k²
  //   maxpool2d_grad:    dx[c, oh·s + i, ow·s + j] += (i·k + j == first[c, oh, ow]) ? g[c, oh, ow] : 0,
  //                      first the position of the window's first maximum (two reductions)
  // Windows of at most this many elements find their first maximum in one formula, not a loop.
  static constexpr int64_t kUnrolledWindow = 9;
  void windowScatterKernels(loops::Function &f, NodeId id, int buf, const std::string &comment) {
    const Node n = G.node(id);
    const bool pe = perExample_[static_cast<size_t>(id)];
    const NodeId gid = n.op == Op::MaxPool2dGrad ? n.b() : n.a();
    const Shape &g = G.shape(gid);
    int first = -1;
    if (n.op == Op::MaxPool2dGrad) {
      // The maximum of each window (the forward pool's output when this function has it), then
      // the first position in the window that holds it.
      const int64_t w = n.attrs[0], s = n.attrs[1];
      auto known = poolMaxima_.find({n.a(), w, s, pe});
      const int mx = known != poolMaxima_.end() ? known->second : scratch(id, "max", g.numel(), pe);
      first = scratch(id, "first", g.numel(), pe);
      for (int pass = known != poolMaxima_.end() ? 1 : 0; pass < 2; ++pass) {
        if (pass == 1 && w * w <= kUnrolledWindow) {
          // A small window's first maximal position as one formula of its w² elements,
          // first = x₀ == m ? 0 : (x₁ == m ? 1 : ... (x_last == m ? w²-1 : w²)), the same value as
          // the reduction below; no loop inside, so the loop along ow vectorizes (on the bench
          // convnet the reduction's two passes were 6.5% of the step).
          Kernel k;
          Coords c = loopsOver(k, g, pe);
          const int m = load(k, mx, c, g, pe);
          int e = constant(k, static_cast<double>(w * w));
          for (int64_t pos = w * w - 1; pos >= 0; --pos) {
            const Affine i = Affine::of(pos / w), j = Affine::of(pos % w);
            int x = imageLoad(k, n.a(), Coords{{c.dims[0], windowPos(c.dims[1], s, i, 0), windowPos(c.dims[2], s, j, 0)}, c.batchVar}, false);
            e = select(k, LExpr::Eq, x, m, constant(k, static_cast<double>(pos)), e);
          }
          k.body = e;
          k.out = first;
          k.outIndex = indexOf(k, first, c, g);
          k.comment = comment + "   (its first position in the window)";
          f.kernels.push_back(std::move(k));
          continue;
        }
        Kernel k;
        k.mode = Kernel::Reduce;
        Coords c = loopsOver(k, g, pe);
        Affine i = addLoop(k, w, true), j = addLoop(k, w, true);
        int x = imageLoad(k, n.a(), Coords{{c.dims[0], windowPos(c.dims[1], s, i, 0), windowPos(c.dims[2], s, j, 0)}, c.batchVar}, false);
        if (pass == 0) {
          k.combine = Kernel::Max;
          k.body = x;
        } else {
          k.combine = Kernel::Min;
          k.body = select(k, LExpr::Eq, x, load(k, mx, c, g, pe), indexValue(k, i.scaled(w).plus(j)),
                          constant(k, static_cast<double>(w * w)));
        }
        k.epilogue = accValue(k);
        k.out = pass == 0 ? mx : first;
        k.outIndex = indexOf(k, k.out, c, g);
        k.comment = comment + (pass == 0 ? "   (the maximum of each window)" : "   (its first position in the window)");
        f.kernels.push_back(std::move(k));
      }
    }
    const int64_t w = n.attrs[0], s = n.attrs[1];
    // Windows that tile the image (stride = window, sizes divisible) cover each pixel once: the
    // gradient is written window by window, no zeroing and no adding.
    const bool tiles = s == w && n.shape[1] % w == 0 && n.shape[2] % w == 0;
    if (!tiles) zeroKernel(f, buf, n.shape, pe, comment + "   (zeroed, then accumulated window by window)");
    Kernel k;
    k.mode = tiles ? Kernel::Assign : Kernel::Accumulate;
    k.comment = comment + (tiles ? "   (the windows tile the image: each pixel written once)" : "");
    Coords c = loopsOver(k, g, pe);
    int gl = expr(k, gid, c);
    Affine i = addLoop(k, w, false), j = addLoop(k, w, false);
    // Loops c, oh, i, ow, j: the pixels in memory order.
    if (tiles) std::rotate(k.loops.end() - 3, k.loops.end() - 2, k.loops.end() - 1);
    Coords out{{c.dims[0], windowPos(c.dims[1], s, i, 0), windowPos(c.dims[2], s, j, 0)}, c.batchVar};
    if (n.op == Op::AvgPool2dGrad)
      k.body = binary(k, Op::Div, gl, constant(k, static_cast<double>(w * w)));
    else
      k.body = select(k, LExpr::Eq, indexValue(k, i.scaled(w).plus(j)), load(k, first, c, g, pe), gl, constant(k, 0));
    k.out = buf;
    k.outIndex = indexOf(k, buf, out, n.shape);
    f.kernels.push_back(std::move(k));
  }

  // The expression e / n (n the batch size) in kernel k.
  static int dividedByN(Kernel &k, int e) {
    LExpr n, div;
    n.kind = LExpr::BatchSize;
    div.kind = LExpr::Binary;
    div.op = Op::Div;
    div.a = e;
    div.b = k.add(n);
    return k.add(div);
  }

  // The mean loss over the batch, into a one-element workspace buffer.
  void lossKernel(loops::Function &f) {
    int buf = addBuffer("loss", loops::Space::Workspace, 0, 0, 1);
    f.result = buf;
    Kernel k;
    k.mode = Kernel::Reduce;
    k.loops.push_back({0, 1, true, true});
    Coords c{{}, 0};
    k.body = expr(k, D->loss, c);
    LExpr acc;
    acc.kind = LExpr::Acc;
    k.epilogue = dividedByN(k, k.add(acc));
    k.out = buf;
    k.comment = "mean over the batch of " + P.loss->name;
    f.kernels.push_back(std::move(k));
  }

  // grads = mean over the batch of the per-example gradient: zero, accumulate, scale by 1/n.
  void gradKernels(loops::Function &f, size_t p) {
    const Decl &decl = P.params[p];
    NodeId g = D->paramGrads[p];
    int buf = addBuffer("d" + P.loss->name + "/d" + decl.name, loops::Space::Grads, decl.offset, 0,
                        decl.shape.numel());
    std::string what = "d" + P.loss->name + "/d" + decl.name;
    if (!perExample_[static_cast<size_t>(g)]) {
      assignKernel(f, g, buf, false, what);
      return;
    }
    if (auto it = batchSummed_.find(g); it != batchSummed_.end()) {
      // A convolution's kernel: convKernels summed dK[f, q] (or dKᵀ[q, f]) over the batch; dK is
      // that / n.
      const Shape &s = decl.shape;
      Kernel k;
      Coords c = loopsOver(k, s, false);
      LExpr ld;
      ld.kind = LExpr::Load;
      ld.buffer = it->second.first;
      const Affine q = c.dims[1].scaled(s[2] * s[3]).plus(c.dims[2].scaled(s[3])).plus(c.dims[3]);
      ld.index = it->second.second ? c.dims[0].scaled(s[1] * s[2] * s[3]).plus(q) : q.scaled(s[0]).plus(c.dims[0]);
      k.body = dividedByN(k, k.add(ld));
      k.out = buf;
      k.outIndex = indexOf(k, buf, c, s);
      k.comment = what + " = (Σ over the batch of " + describe(g) + ") / n";
      f.kernels.push_back(std::move(k));
      return;
    }
    zeroKernel(f, buf, decl.shape, false, what + " = 0");

    Kernel k;
    k.mode = Kernel::Accumulate;
    Coords c = loopsOver(k, decl.shape, true);
    // For a matrix, loop row, example, column: the row of the gradient stays in cache while
    // the examples stream past it (dW[i, :] += g[b, i] x[b, :]).
    if (decl.shape.rank() == 2) std::swap(k.loops[0], k.loops[1]);
    k.body = expr(k, g, c);
    Coords noBatch = c;
    noBatch.batchVar = -1;
    k.out = buf;
    k.outIndex = indexOf(k, buf, noBatch, decl.shape);
    k.comment = what + " += " + describe(g) + "   (summed over the batch)";
    f.kernels.push_back(std::move(k));

    Kernel s;
    Coords cs = loopsOver(s, decl.shape, false);
    LExpr ld;
    ld.kind = LExpr::Load;
    ld.buffer = buf;
    ld.index = indexOf(s, buf, cs, decl.shape);
    s.body = dividedByN(s, s.add(ld));
    s.out = buf;
    s.outIndex = ld.index;
    s.comment = what + " /= n   (the mean over the batch)";
    f.kernels.push_back(std::move(s));
  }

  // --- matrix products --------------------------------------------------------------------
  static bool onlyVars(const Affine &a, std::initializer_list<int> vars) {
    for (auto &[v, c] : a.terms)
      if (std::find(vars.begin(), vars.end(), v) == vars.end()) return false;
    return true;
  }
  // The two loads of a body `load * load`, or false.
  static bool twoLoads(const Kernel &k, int &x, int &y) {
    // A softmax kernel has no body (its three row loops come from a rank-4 value).
    if (k.body < 0 || k.mode == Kernel::Softmax) return false;
    const LExpr &m = k.pool[static_cast<size_t>(k.body)];
    if (m.kind != LExpr::Binary || m.op != Op::Mul) return false;
    x = m.a;
    y = m.b;
    const LExpr &lx = k.pool[static_cast<size_t>(x)], &ly = k.pool[static_cast<size_t>(y)];
    return lx.kind == LExpr::Load && ly.kind == LExpr::Load && lx.bounds.empty() && ly.bounds.empty() &&
           k.combine == Kernel::Sum && k.outBounds.empty();
  }

  // Whether k is `C[i] = C[i] / n` over exactly the block that Gemm g wrote from 0.
  static bool isScaleOf(const Kernel &k, const Kernel &g) {
    if (g.mode != Kernel::Gemm || g.loops.size() != 3 || g.accumulate || g.loops[0].batch || k.mode != Kernel::Assign ||
        k.out != g.out || k.loops.size() != 2 || k.loops[0].batch)
      return false;
    const LExpr &d = k.pool[static_cast<size_t>(k.body)];
    if (d.kind != LExpr::Binary || d.op != Op::Div || k.pool[static_cast<size_t>(d.b)].kind != LExpr::BatchSize)
      return false;
    const LExpr &ld = k.pool[static_cast<size_t>(d.a)];
    int64_t M = g.loops[0].extent, N = g.loops[2].extent;
    return ld.kind == LExpr::Load && ld.buffer == k.out && k.loops[0].extent == M && k.loops[1].extent == N &&
           g.outIndex.coef(g.loops[0].var) == N && g.outIndex.constant == k.outIndex.constant;
  }

  // Recognizes matrix products among the kernels and makes them Gemm kernels, which backends
  // tile: accumulations C[m, n] += A[m, k] B[k, n] with B and C contiguous along n (products of
  // the form Aᵀ g and x B, and the batch sums of param gradients), and dot-form products
  // out[m, n] = Σ_k A[m, k] W[n, k] with a batch-shared W, which read W through a transposed
  // copy so that they become the same form.
  // The batch from which a product of per-example rows with a weight matrix copies the weights
  // transposed and runs register-tiled; below it, dot products read the weights in place (one
  // example: the copy was most of a forward pass).
  static constexpr int64_t kTiledFromBatch = 8;
  // The shortest reduction whose dot products the backends tile (a vector's worth of k at least:
  // below, the sums one at a time lose nothing).
  static constexpr int64_t kDotTilesFromK = 16;
  // With dot tiles over a reduction of kLongDotsFromK or more, the batch from which the
  // transposed copy and the tiled product pay (by measurement, mnist's 256 x 784: dot tiles 5-50%
  // faster from 8 to 64 examples, 2% slower at 128, 12% at 256), and the weight blocks (in
  // elements) from which dot tiles run at every batch. Shorter reductions switch at
  // kTiledFromBatch: each dot tile ends in its horizontal sums and a scalar epilogue, which the
  // tiled product's vectorized epilogue beats (deep's 32 x 32 tanh layers at 32 examples: 3x).
  static constexpr int64_t kLongDotsFromK = 128;
  static constexpr int64_t kDotTiledBelow = 128, kDotTilesAlwaysFrom = 262144;

  // A transposed copy of a weight block made in the function being rewritten: which buffer, the
  // constant and the n and k coefficients of the load, the block's N x K, and the batch from
  // which the copy runs (0: always).
  struct TransposeKey {
    int buffer;
    int64_t constant, cn, ck, N, K, minBatch;
    bool operator==(const TransposeKey &) const = default;
  };
  std::vector<std::pair<TransposeKey, int>> transposes_;

  // A kernel writing buffer b makes every copy of b stale.
  void forgetTransposesOf(int b) {
    std::erase_if(transposes_, [&](const auto &e) { return e.first.buffer == b; });
  }

  void formGemms(loops::Function &f) {
    std::vector<Kernel> out;
    pendingScale_ = -1;
    transposes_.clear();
    for (Kernel &k : f.kernels) {
      forgetTransposesOf(k.out);
      int x, y;
      // `C /= n` right after a product that wrote all of C from 0: divide as it stores.
      if (pendingScale_ >= 0 && isScaleOf(k, out[static_cast<size_t>(pendingScale_)])) {
        out[static_cast<size_t>(pendingScale_)].divideByBatch = true;
        pendingScale_ = -1;
        continue;
      }
      pendingScale_ = -1;
      if (k.loops.size() != 3 || !twoLoads(k, x, y)) {
        out.push_back(std::move(k));
        continue;
      }
      int m = k.loops[0].var, kk = k.loops[1].var, n = k.loops[2].var;
      if (k.mode == Kernel::Reduce && k.loops[2].reduction && !k.loops[0].reduction && !k.loops[1].reduction &&
          k.pool[static_cast<size_t>(k.epilogue)].kind == LExpr::Acc) {
        // Dot form: loops m, n, k(sum). Swap names to match.
        m = k.loops[0].var, n = k.loops[1].var, kk = k.loops[2].var;
        const LExpr *A = &k.pool[static_cast<size_t>(x)], *W = &k.pool[static_cast<size_t>(y)];
        if (A->index.coef(n) != 0) std::swap(A, W);
        const loops::Buffer wb = L.buffers[static_cast<size_t>(W->buffer)]; // a copy: addBuffer below reallocates
        if (k.loops[1].batch || k.loops[2].batch || wb.batchStride != 0 || A->index.coef(n) != 0 ||
            W->index.coef(m) != 0 || k.outIndex.coef(n) != 1 || !onlyVars(k.outIndex, {m, n}) ||
            !onlyVars(A->index, {m, kk}) || !onlyVars(W->index, {n, kk})) {
          out.push_back(std::move(k));
          continue;
        }
        int64_t N = k.loops[1].extent, K = k.loops[2].extent;
        // Both operands contiguous along k and a reduction of at least a vector or so: the
        // backends can tile the dot products (rows of x by rows of W, partial sums in registers).
        const bool dots = k.loops[0].batch && A->index.coef(kk) == 1 && W->index.coef(kk) == 1 && K >= kDotTilesFromK;
        const bool longDots = dots && K >= kLongDotsFromK;
        if (longDots && N * K >= kDotTilesAlwaysFrom) {
          // W beyond the L2 cache: its transposed copy costs more than the dot tiles lose to the
          // tiled product at any batch (wide's 1024 x 1024: 12% faster at 256 examples).
          k.dotTiles = true;
          out.push_back(std::move(k));
          continue;
        }
        // When the rows are examples, a small batch does not pay for the copy of W: there the
        // dot products run as they are, reading W's rows in place; the copy and the tiled
        // product run from `from` examples on (n is known at run time only).
        const int64_t from = longDots ? kDotTiledBelow : kTiledFromBatch;
        std::optional<Kernel> small;
        if (k.loops[0].batch) {
          small = k;
          small->maxBatch = from;
          small->dotTiles = dots;
        }
        // WT[k, n] = W[n, k]: a batch-shared copy, once a call. Every product that reads the same
        // block of W the same way (an unrolled recurrence reads its weights once a step) reuses
        // the first copy, as long as nothing has written W since (see forgetTransposesOf).
        TransposeKey key{W->buffer, W->index.constant, W->index.coef(n), W->index.coef(kk), N, K,
                         small ? from : 0};
        int wt = -1;
        for (const auto &[tk, tb] : transposes_)
          if (tk == key) wt = tb;
        if (wt < 0) {
          wt = addBuffer(wb.name + "ᵀ", loops::Space::Workspace, 0, 0, N * K);
          transposes_.push_back({key, wt});
          Kernel t;
          // Blocks of 16 columns: reads walk 16 rows of W together (each cache line is used for
          // 16 consecutive k), writes are contiguous runs of 16.
          const int64_t blk = N % 16 == 0 ? 16 : N % 8 == 0 ? 8 : 1;
          t.loops = {{0, N / blk, false, false}, {1, K, false, false}, {2, blk, false, false}};
          LExpr ld = *W;
          Affine idx;
          idx.constant = W->index.constant;
          idx.add(0, W->index.coef(n) * blk).add(2, W->index.coef(n)).add(1, W->index.coef(kk));
          ld.index = idx;
          t.body = t.add(ld);
          t.out = wt;
          t.outIndex = Affine{}.add(1, N).add(0, blk).add(2, 1);
          t.comment = wb.name + "ᵀ, so that the product below reads rows";
          if (small) t.minBatch = from;
          out.push_back(std::move(t));
        }
        Kernel g;
        g.mode = Kernel::Gemm;
        g.accumulate = false;
        g.comment = k.comment;
        g.loops = {k.loops[0], k.loops[2], k.loops[1]};
        g.loops[1].reduction = false;
        LExpr la = *A, lb;
        lb.kind = LExpr::Load;
        lb.buffer = wt;
        lb.index = Affine{}.add(kk, N).add(n, 1);
        LExpr mul;
        mul.kind = LExpr::Binary;
        mul.op = Op::Mul;
        mul.a = g.add(la);
        mul.b = g.add(lb);
        g.body = g.add(mul);
        g.out = k.out;
        g.outIndex = k.outIndex;
        if (small) g.minBatch = from;
        out.push_back(std::move(g));
        if (small) out.push_back(std::move(*small));
        continue;
      }
      if (k.mode != Kernel::Accumulate || k.loops[0].reduction || k.loops[1].reduction || k.loops[2].reduction ||
          k.loops[2].batch) {
        out.push_back(std::move(k));
        continue;
      }
      const LExpr *A = &k.pool[static_cast<size_t>(x)], *Bl = &k.pool[static_cast<size_t>(y)];
      if (A->index.coef(n) != 0) std::swap(A, Bl);
      if (A->index.coef(n) != 0 || Bl->index.coef(n) != 1 || Bl->index.coef(m) != 0 ||
          k.outIndex.coef(n) != 1 || k.outIndex.coef(kk) != 0 || !onlyVars(k.outIndex, {m, n}) ||
          !onlyVars(A->index, {m, kk}) || !onlyVars(Bl->index, {kk, n})) {
        out.push_back(std::move(k));
        continue;
      }
      k.mode = Kernel::Gemm;
      k.accumulate = true;
      // A zero-fill of exactly this block just before: the product starts from 0 instead.
      if (!out.empty()) {
        const Kernel &z = out.back();
        const LExpr &zb = z.pool[static_cast<size_t>(z.body)];
        int64_t M = k.loops[0].batch ? -1 : k.loops[0].extent, N = k.loops[2].extent;
        bool sameBlock = z.mode == Kernel::Assign && z.out == k.out && zb.kind == LExpr::Const &&
                         zb.value == 0 && z.loops.size() == 2 && M > 0 && z.loops[0].extent == M &&
                         !z.loops[0].batch && z.loops[1].extent == N && k.outIndex.coef(m) == N &&
                         k.outIndex.constant == z.outIndex.constant;
        bool sameBatchBlock = z.mode == Kernel::Assign && z.out == k.out && zb.kind == LExpr::Const &&
                              zb.value == 0 && z.loops.size() == 2 && k.loops[0].batch && z.loops[0].batch &&
                              z.loops[1].extent == N && k.outIndex.coef(m) == N &&
                              k.outIndex.constant == 0 && z.outIndex.constant == 0;
        if (sameBlock || sameBatchBlock) {
          out.pop_back();
          k.accumulate = false;
        }
      }
      out.push_back(std::move(k));
      pendingScale_ = static_cast<int>(out.size()) - 1;
    }
    f.kernels = std::move(out);
  }

  // --- fused epilogues ----------------------------------------------------------------------
  // `D = f(C, ...)` over exactly the block of C that the product just before wrote from 0, C a
  // temporary that nothing after reads: the product stores f(its sum) into D as each tile is
  // stored (a bias, an activation, an activation's derivative), and C is never written: one pass
  // over the batch less, and one buffer less. The product's small-batch form (the dot products of
  // formGemms, run below kTiledFromBatch examples) takes the same epilogue.
  void fuseEpilogues(loops::Function &f) {
    std::vector<Kernel> &ks = f.kernels;
    for (size_t i = 0; i + 1 < ks.size(); ++i) {
      Kernel &g = ks[i];
      if (g.mode == Kernel::Reduce && g.dotTiles && g.minBatch == 0 && g.maxBatch == 0 &&
          g.pool[static_cast<size_t>(g.epilogue)].kind == LExpr::Acc) {
        // Dot tiles at every batch (formGemms): loops m, n, k.
        if (epilogueFits(g, g.loops[0].var, g.loops[1].var, ks[i + 1], ks, i + 1)) {
          applyEpilogue(g, g.loops[0].var, g.loops[1].var, ks[i + 1], g.out);
          ks.erase(ks.begin() + static_cast<std::ptrdiff_t>(i + 1));
        }
        continue;
      }
      if (g.mode != Kernel::Gemm || g.loops.size() != 3 || g.accumulate || g.divideByBatch || g.epilogue >= 0 ||
          g.maxBatch > 0)
        continue;
      size_t j = i + 1;
      Kernel *small = nullptr;
      if (g.minBatch > 0) {
        const Kernel &s = ks[j];
        if (s.mode != Kernel::Reduce || s.out != g.out || s.maxBatch != g.minBatch || s.minBatch > 0 ||
            s.loops.size() != 3 || s.loops[0].reduction || s.loops[1].reduction || !s.loops[2].reduction ||
            s.pool[static_cast<size_t>(s.epilogue)].kind != LExpr::Acc || j + 1 >= ks.size())
          continue;
        small = &ks[j];
        ++j;
      }
      const Kernel &e = ks[j];
      // g's loops are m, k, n; the small form's m, n, k.
      if (!epilogueFits(g, g.loops[0].var, g.loops[2].var, e, ks, j) ||
          (small && !epilogueFits(*small, small->loops[0].var, small->loops[1].var, e, ks, j)))
        continue;
      const int c = g.out;
      applyEpilogue(g, g.loops[0].var, g.loops[2].var, e, c);
      if (small) applyEpilogue(*small, small->loops[0].var, small->loops[1].var, e, c);
      ks.erase(ks.begin() + static_cast<std::ptrdiff_t>(j));
    }
  }

  // e's loop variables (row, column) renamed to m and n.
  static Affine renamed(const Affine &a, int eRow, int eCol, int m, int n) {
    Affine r;
    r.constant = a.constant;
    for (auto &[v, c] : a.terms) r.add(v == eRow ? m : v == eCol ? n : v, c);
    return r;
  }
  static bool sameAffine(const Affine &a, const Affine &b) {
    if (a.constant != b.constant || a.terms.size() != b.terms.size()) return false;
    for (auto &[v, c] : a.terms)
      if (b.coef(v) != c) return false;
    return true;
  }

  // Whether e can be the epilogue of product p (its output loops m and n): e runs over the same
  // rows and columns, reads p's output only where p wrote it, writes elsewhere than p reads, with
  // its columns contiguous (a tile's store); p's output is a workspace temporary that no kernel
  // after e reads.
  bool epilogueFits(const Kernel &p, int m, int n, const Kernel &e, const std::vector<Kernel> &ks, size_t at) const {
    const loops::Loop *lm = nullptr, *ln = nullptr;
    for (const loops::Loop &l : p.loops) {
      if (l.var == m) lm = &l;
      if (l.var == n) ln = &l;
    }
    if (e.mode != Kernel::Assign || e.loops.size() != 2 || e.minBatch > 0 || e.maxBatch > 0 || !e.outBounds.empty() ||
        e.loops[0].batch != lm->batch || (!lm->batch && e.loops[0].extent != lm->extent) || e.loops[1].batch ||
        ln->batch || e.loops[1].extent != ln->extent)
      return false;
    const int c = p.out;
    if (L.buffers[static_cast<size_t>(c)].space != loops::Space::Workspace || e.out == c) return false;
    const int er = e.loops[0].var, ec = e.loops[1].var;
    const Affine out = renamed(e.outIndex, er, ec, m, n);
    if (out.coef(n) != 1 || !onlyVars(out, {m, n})) return false;
    bool readsC = false;
    for (const LExpr &x : e.pool) {
      if (x.kind == LExpr::Load && !x.bounds.empty()) return false;
      if (x.kind == LExpr::Load && x.buffer == e.out) return false;
      if (x.kind == LExpr::Load && x.buffer == c) {
        if (!sameAffine(renamed(x.index, er, ec, m, n), p.outIndex)) return false;
        readsC = true;
      }
    }
    for (const LExpr &x : p.pool)
      if (x.kind == LExpr::Load && x.buffer == e.out) return false;
    if (!readsC) return false;
    for (size_t i = at + 1; i < ks.size(); ++i) {
      const Kernel &k = ks[i];
      if (k.in == c || k.out == c) return false;
      for (const LExpr &x : k.pool)
        if (x.kind == LExpr::Load && x.buffer == c) return false;
    }
    return true;
  }

  // p stores e's formula of its sum into e's output: e's expressions appended to p's pool, its
  // loads of C (p's old output) as the sum (Acc), its loop variables renamed to p's m and n.
  void applyEpilogue(Kernel &p, int m, int n, const Kernel &e, int c) const {
    const int base = static_cast<int>(p.pool.size());
    const int er = e.loops[0].var, ec = e.loops[1].var;
    for (const LExpr &x : e.pool) {
      LExpr y = x;
      for (int *o : {&y.a, &y.b, &y.c, &y.d})
        if (*o >= 0) *o += base;
      y.index = renamed(x.index, er, ec, m, n);
      if (x.kind == LExpr::Load && x.buffer == c) {
        y = LExpr{};
        y.kind = LExpr::Acc;
      }
      p.pool.push_back(std::move(y));
    }
    // (The dot products' epilogue was the sum itself, Acc: e's formula replaces it.)
    p.epilogue = e.body + base;
    p.out = e.out;
    p.outIndex = renamed(e.outIndex, er, ec, m, n);
    // The formula stored first (its .nn line is the one a reader looks for), then the product.
    p.comment = e.comment + "; " + p.comment + " fused into it";
  }

  // --- workspace planning -------------------------------------------------------------------
  // Buffers whose lifetimes (first write .. last read, in kernel order) do not overlap share
  // memory; first fit, separately for batch-shared and per-example buffers.
  void planWorkspace(const loops::Function &f) {
    std::unordered_map<int, std::pair<int, int>> life;
    auto touch = [&](int buf, int t) {
      if (L.buffers[static_cast<size_t>(buf)].space != loops::Space::Workspace) return;
      auto it = life.find(buf);
      if (it == life.end()) life[buf] = {t, t};
      else it->second.second = std::max(it->second.second, t);
    };
    for (size_t t = 0; t < f.kernels.size(); ++t) {
      const Kernel &k = f.kernels[t];
      touch(k.out, static_cast<int>(t));
      if (k.in >= 0) touch(k.in, static_cast<int>(t));
      for (const LExpr &e : k.pool)
        if (e.kind == LExpr::Load) touch(e.buffer, static_cast<int>(t));
    }
    if (f.result >= 0) touch(f.result, static_cast<int>(f.kernels.size()));
    struct Placed {
      int64_t off, size;
      int begin, end;
    };
    std::vector<Placed> fixed, perEx;
    std::vector<int> order;
    for (auto &[b, _] : life) order.push_back(b);
    std::sort(order.begin(), order.end());
    for (int b : order) {
      loops::Buffer &B = L.buffers[static_cast<size_t>(b)];
      auto [begin, end] = life[b];
      auto &arena = B.batchStride ? perEx : fixed;
      int64_t off = 0;
      bool moved = true;
      while (moved) {
        moved = false;
        for (const Placed &q : arena)
          if (q.begin <= end && begin <= q.end && off < q.off + q.size && q.off < off + B.size) {
            off = workspaceAdd(q.off, q.size);
            moved = true;
          }
      }
      workspaceAdd(off, B.size); // every end below stays within kMaxWorkspace
      arena.push_back({off, B.size, begin, end});
      B.offset = off;
      if (B.batchStride) perExampleBuffers_.push_back(b);
    }
    for (auto &q : fixed) L.workspaceFixed = std::max(L.workspaceFixed, q.off + q.size);
    for (auto &q : perEx) L.workspacePerExample = std::max(L.workspacePerExample, q.off + q.size);
    workspaceAdd(L.workspaceFixed, L.workspacePerExample);
  }

  // Per-example buffers live after the fixed part: at workspaceFixed + offset * n.
  void finishWorkspace() {
    for (int b : perExampleBuffers_) {
      loops::Buffer &B = L.buffers[static_cast<size_t>(b)];
      B.offsetPerN = B.offset;
      B.offset = L.workspaceFixed;
    }
  }

  // Workspace buffers that no kernel touches any more (a product's output once its epilogue is
  // fused: the product stores straight into the epilogue's output) got no place in the workspace;
  // they leave the program, so that every buffer left lies inside its space and neither the dump
  // nor the backends show storage that does not exist. Buffer numbers are renumbered in order.
  void dropUnusedBuffers() {
    std::vector<char> used(L.buffers.size(), 0);
    for (size_t b = 0; b < L.buffers.size(); ++b)
      if (L.buffers[b].space != loops::Space::Workspace) used[b] = 1;
    for (const loops::Function *f : {&L.forward, &L.gradient}) {
      if (f->result >= 0) used[static_cast<size_t>(f->result)] = 1;
      for (const Kernel &k : f->kernels) {
        if (k.out >= 0) used[static_cast<size_t>(k.out)] = 1;
        if (k.in >= 0) used[static_cast<size_t>(k.in)] = 1;
        for (const LExpr &e : k.pool)
          if (e.kind == LExpr::Load) used[static_cast<size_t>(e.buffer)] = 1;
      }
    }
    std::vector<int> renum(L.buffers.size(), -1);
    std::vector<loops::Buffer> kept;
    for (size_t b = 0; b < L.buffers.size(); ++b)
      if (used[b]) {
        renum[b] = static_cast<int>(kept.size());
        kept.push_back(std::move(L.buffers[b]));
      }
    if (kept.size() == L.buffers.size()) {
      L.buffers = std::move(kept);
      return;
    }
    L.buffers = std::move(kept);
    auto to = [&](int b) { return b < 0 ? b : renum[static_cast<size_t>(b)]; };
    for (loops::Function *f : {&L.forward, &L.gradient}) {
      f->result = to(f->result);
      for (Kernel &k : f->kernels) {
        k.out = to(k.out);
        k.in = to(k.in);
        for (LExpr &e : k.pool)
          if (e.kind == LExpr::Load) e.buffer = to(e.buffer);
      }
    }
  }

  const Program &P;
  const Graph &G;
  const Derivation *D;
  loops::Program L;
  std::vector<char> perExample_;
  std::vector<NodeId> materialized_;
  std::unordered_map<NodeId, int> bufferOf_, leafBuf_;
  std::unordered_map<NodeId, std::string> nodeName_, valueNames_, names_;
  std::unordered_map<NodeId, uint32_t> valueLine_;
  std::vector<int> perExampleBuffers_;
  int pendingScale_ = -1;
  // The im2col copies made in the function being lowered: (image, stride, padding, kh, kw, Ho,
  // Wo, pe) -> buffer, so that a convolution's kernel gradient reads its forward's copy.
  std::map<std::vector<int64_t>, std::pair<int, bool>> columns_; // -> (buffer, x̂ᵀ)
  std::map<std::vector<int64_t>, int> paddedImages_;               // (x, pad, pe) -> its padded copy
  // Kernel gradients that are a param's gradient and nothing else's operand: lowered as the sum
  // over the batch of dKᵀ into batchSummed_'s buffer.
  std::unordered_set<NodeId> batchSummable_;
  std::unordered_map<NodeId, std::pair<int, bool>> batchSummed_; // -> (buffer, dK rather than dKᵀ)
  // The max pools of the function being lowered: (image, window, stride, pe) -> their output,
  // the maxima that the pool's gradient needs.
  std::map<std::tuple<NodeId, int64_t, int64_t, bool>, int> poolMaxima_;
};

} // namespace

loops::Program lowerToLoops(const Program &p, const std::vector<NodeId> &outputs, const Derivation *d,
                            bool lossOnly) {
  return Lowering(p, d).run(outputs, lossOnly && d);
}

} // namespace nabla
