// Loop IR: the one lowered form that both backends print (LLVM IR and standalone C++). A function
// is a list of kernels over flat buffers; a kernel is a loop nest with constant trip counts (only
// the batch loop runs to the run-time n) around one fused expression. The batch is explicit: a
// param's gradient is an accumulation over the batch loop, never per-example calls.
#pragma once
#include "Graph.h"

#include <string>
#include <vector>

namespace nabla::loops {

// Where a buffer lives. Params, inputs, targets, outputs and grads are the caller's flat arrays
// (DESIGN.md's layout); Workspace is scratch that the caller provides (workspace_size(n) reals).
enum class Space { Params, Inputs, Targets, Outputs, Grads, Workspace };

struct Buffer {
  std::string name;        // for dumps and comments
  Space space;
  // The buffer starts at space + offset + offsetPerN * n (per-example scratch grows with n).
  int64_t offset = 0, offsetPerN = 0;
  int64_t batchStride = 0; // elements from one example to the next; 0 when shared by the batch
  int64_t size = 0;        // elements of one example (or of the whole value when shared)
};

// An affine index: constant + Σ coef * loopVar. The batch loop's variable is scaled by the
// buffer's per-example stride at lowering time, so every index is a plain affine form.
struct Affine {
  int64_t constant = 0;
  std::vector<std::pair<int, int64_t>> terms; // (loop var, coefficient), coefficients non-zero

  Affine &add(int var, int64_t coef);
  int64_t coef(int var) const; // var's coefficient, 0 when var does not occur
  Affine without(int var) const; // this form with var's term dropped
  Affine scaled(int64_t k) const;
  Affine plus(const Affine &o) const;
  static Affine var(int v) { return Affine{}.add(v, 1); }
  static Affine of(int64_t c) { Affine a; a.constant = c; return a; }
};

// 0 <= index < extent, over the kernel's loop variables: where a bound of a load fails, the
// load reads 0 (the zero padding of a convolution) and touches no memory.
struct Bound {
  Affine index;
  int64_t extent = 0;
};

struct Expr {
  // Select: (a CMP b) ? c : d, all four reals (a max/min combiner, the first index of a maximum).
  // Index:  the value of the affine form `index` of the loop variables, as a real (exact below
  //         2^24 in f32: a position inside one slice or window).
  enum Kind { Const, Load, Acc, BatchSize, Unary, Binary, Max, Select, Index } kind;
  enum Cmp { Ge, Gt, Eq };
  Op op = Op::Const;    // Unary / Binary: the graph op (Neg, Exp, ..., Add, Mul, ..., Maximum,
                        // Minimum, GreaterEq); LeakyRelu's slope and Pow's exponent in `value`
  double value = 0;     // Const; Pow's exponent; LeakyRelu's slope
  int buffer = -1;      // Load
  Affine index;         // Load, Index
  std::vector<Bound> bounds; // Load: reads 0 where one fails
  Cmp cmp = Ge;         // Select
  int a = -1, b = -1;   // operands, indices into Kernel::pool
  int c = -1, d = -1;   // Select's values
};

struct Loop {
  int var;             // loop variable id, unique within the kernel
  int64_t extent = 1;  // trip count; ignored when batch
  bool batch = false;  // runs 0..n-1
  bool reduction = false;
};

// A mixed-radix map of an index t = (d0, d1, ...) (the last digit fastest, digit i in
// 0..extents[i]) to Σ dᵢ · coefs[i]: where a row or a k step of a convolution's unrolled image
// starts in the (padded) image, e.g. p = (oh, ow) -> oh·s·Wp + ow·s and q = (c, i, j) ->
// c·Hp·Wp + i·Wp + j.
struct Radix {
  std::vector<int64_t> extents, coefs;
  bool empty() const { return extents.empty(); }
  int64_t size() const;        // Π extents
  int64_t at(int64_t t) const; // the offset of index t
  int64_t max() const;         // the largest offset (coefficients are >= 0)
};

struct Kernel {
  // Assign:     out[index] = body, over every loop.
  // Reduce:     the trailing loops are reductions: out[index] = epilogue(Σ body), epilogue in terms
  //             of Acc (the sum) and loads at the non-reduction loops. With `combine` Max (Min)
  //             Acc is the largest (smallest) body instead: from -inf (+inf), acc = body > acc ?
  //             body : acc (body < acc), so that the first of equal values is kept.
  // Accumulate: out[index] += body, over every loop (the caller zeroes out first); with
  //             `outBounds`, only where every bound holds (a scatter into a padded image).
  // Softmax:    row-wise softmax (log_softmax when `logSoftmax`) of `in` into `out`:
  //             loops give the row; `cols` values from index/inIndex, contiguous.
  // Gemm:       a matrix product C[m, n] (+)= Σ_k A[m, k] B[k, n]: loops are exactly m, k, n, or
  //             batch, m, k, n (one product an example: a convolution's; none of m, k, n is then
  //             the batch, and each operand's start moves with its batch term);
  //             body is A * B (two loads; A's index has no n, B's and C's have n with
  //             coefficient 1). `accumulate` false means C = the product (no zeroing needed).
  //             With an `epilogue` (three loops, accumulate false), each element is stored as
  //             epilogue(Acc = its sum, divided by n with divideByBatch) once its sum is
  //             complete; the epilogue's loads are at the m and n loops (a fused bias and
  //             activation, or an activation's derivative).
  //             With `aRows` (the windowed form, a convolution's im2col that is never
  //             materialized): A[m, k] is read at A's load index (no m or k term: its constant
  //             and batch term) + aRows.at(m) + aCols.at(k), i.e. straight out of the image.
  //             Backends tile it: a block of C stays in registers across k (LLVM), or print
  //             it as the equivalent loop nest (C++).
  enum Mode { Assign, Reduce, Accumulate, Softmax, Gemm } mode = Assign;
  enum Combine { Sum, Max, Min } combine = Sum; // Reduce
  std::vector<Bound> outBounds;                 // Accumulate
  bool accumulate = true;     // Gemm
  bool divideByBatch = false; // Gemm: the product is divided by n as it is stored (a mean)
  Radix aRows, aCols;         // Gemm, windowed form: where A's rows and k steps are
  std::vector<Loop> loops;
  std::vector<Expr> pool;
  int body = -1, epilogue = -1;
  int out = -1;
  Affine outIndex;
  int in = -1;           // Softmax
  Affine inIndex;        // Softmax: start of the row
  int64_t cols = 0;      // Softmax
  bool logSoftmax = false;
  // Reduce in dot form, out[m, n] = epilogue(Σ_k A[m, k] W[n, k]) over loops m, n, k (the sum,
  // a constant extent), A and W both read along k with coefficient 1 and no other term than m
  // (A) or n (W): backends tile it, several rows of A by several rows of W at once, each sum a
  // vector of partial sums across k kept in a register, added across at the end. Neither operand
  // is copied (a product of per-example rows with a weight matrix read in place). The same
  // numbers up to the order of the sum.
  bool dotTiles = false;
  // Runs only when the batch size n is at least minBatch (if > 0) and below maxBatch (if > 0):
  // two forms of one product, the one that pays off for the batch chosen at run time.
  int64_t minBatch = 0, maxBatch = 0;
  std::string comment;   // the formula this kernel computes, and the .nn line it comes from

  int add(Expr e) { pool.push_back(std::move(e)); return static_cast<int>(pool.size()) - 1; }
};

struct Function {
  std::string name;
  std::vector<Kernel> kernels;
  int result = -1; // a workspace buffer holding a scalar to return (the loss), or -1
};

struct Program {
  std::vector<Buffer> buffers;
  Function forward, gradient;
  // Workspace: `fixed` reals shared by the batch, then `perExample * n` reals.
  int64_t workspaceFixed = 0, workspacePerExample = 0;
};

// Stable text form for `check --emit loops`.
std::string dump(const Program &p);
std::string dump(const Kernel &k, const Program &p);

} // namespace nabla::loops
