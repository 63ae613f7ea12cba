// The LLVM backend: Loop IR kernels become loop nests built with IRBuilder. Loads and stores
// use affine indices over the loop variables; sums run in an accumulator that mem2reg keeps in
// registers; the numerically stable forms (logistic, softplus, softmax) are emitted as such.
#include "EmitLLVM.h"

#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/Intrinsics.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/Module.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <unordered_map>

namespace nabla {

using namespace llvm;
using loops::Kernel;
using LExpr = loops::Expr;

namespace {

// A rough measure of the machine code a kernel becomes (what code generation time follows): a
// register-tiled product is several times a plain loop nest. About a millisecond of CPU a unit
// at -O2: mnist's products (cost 8, dot tiles 7) took 5-9 ms each to compile alone, softmax 1.5.
double kernelCost(const Kernel &k) {
  double c = 1 + 0.25 * static_cast<double>(k.loops.size()) + 0.05 * static_cast<double>(k.pool.size());
  if (k.mode == Kernel::Gemm) c += 6;
  if (k.dotTiles) c += 5;
  if (k.mode == Kernel::Softmax) c += 2;
  return c;
}

// Kernels [first, last) of the forward or gradient function, compiled in module `module`.
struct Part {
  bool gradient;
  size_t first, last;
  int module;
};

// The kernels of both functions in order (forward, then gradient; `cost` each, in that order),
// cut into `modules` runs of about equal cost; a run is cut again where the function changes and
// every kKernelsPerPart kernels (LLVM's loop analyses, ScalarEvolution's loop guards, grow much
// faster than linearly with the loops of one function: a chain of 400 statements in one function
// took minutes to optimize, 1,000 did not finish).
std::vector<Part> planParts(const loops::Program &p, int modules, const std::vector<double> &cost) {
  constexpr size_t kKernelsPerPart = 32;
  std::vector<std::pair<bool, size_t>> order;
  double total = 0;
  for (bool gradient : {false, true}) {
    const loops::Function &f = gradient ? p.gradient : p.forward;
    if (f.name.empty()) continue;
    for (size_t i = 0; i < f.kernels.size(); ++i) {
      order.emplace_back(gradient, i);
      total += cost[order.size() - 1];
    }
  }
  std::vector<Part> parts;
  double done = 0;
  for (size_t j = 0; j < order.size(); ++j) {
    // The module whose share of the total cost this kernel's midpoint falls in.
    const int module = std::min(modules - 1, static_cast<int>((done + cost[j] / 2) / total * modules));
    done += cost[j];
    const auto [gradient, i] = order[j];
    if (!parts.empty() && parts.back().gradient == gradient && parts.back().module == module &&
        parts.back().last == i && i - parts.back().first < kKernelsPerPart)
      ++parts.back().last;
    else
      parts.push_back(Part{gradient, i, i + 1, module});
  }
  return parts;
}

} // namespace

// The size of a function unrolled for one example, in expression nodes (an exp inline, alone or
// in an activation, counted as kExpNodes: about the instructions it becomes): it gets the
// one-example body (Emitter::oneExample) when that is at most kUnrollOneBudget (hinton: ~600;
// mnist or deep: over 10^5), so that big programs compile no slower.
bool unrollsForOneExample(const loops::Function &f) {
  constexpr int64_t kUnrollOneBudget = 8192, kExpNodes = 32;
  if (f.name.empty()) return false;
  int64_t size = 0;
  for (const Kernel &k : f.kernels) {
    if ((k.minBatch > 1) || (k.maxBatch > 0 && k.maxBatch <= 1)) continue; // not run at n = 1
    if (!k.aRows.empty()) return false; // a windowed product reads through tables: not here
    int64_t trips = k.mode == Kernel::Softmax ? 3 * std::max<int64_t>(1, k.cols) : 1;
    for (const loops::Loop &l : k.loops) {
      trips *= l.batch ? 1 : std::max<int64_t>(1, l.extent); // <= 8192 x an extent: no overflow
      if (trips > kUnrollOneBudget) return false;
    }
    int64_t nodes = k.mode == Kernel::Softmax ? 2 + kExpNodes : 2;
    for (const LExpr &e : k.pool) {
      const bool exp = e.kind == LExpr::Unary && (e.op == Op::Exp || e.op == Op::Logistic || e.op == Op::Tanh ||
                                                  e.op == Op::Softplus);
      nodes += exp ? kExpNodes : 1;
    }
    size += trips * nodes;
    if (size > kUnrollOneBudget) return false;
  }
  return true;
}

namespace {

class Emitter {
public:
  Emitter(const loops::Program &p, LLVMContext &c, const LLVMEmitOptions &o, int module, int modules)
      : P(p), C(c), O(o), M(std::make_unique<Module>("nabla" + std::to_string(module), c)), B(c),
        module_(module), modules_(modules) {
    T = o.f64 ? Type::getDoubleTy(c) : Type::getFloatTy(c);
    I64 = Type::getInt64Ty(c);
    Ptr = PointerType::getUnqual(c);
  }

  // The estimated cost of every kernel in order (forward, then gradient), one whose shape
  // occurred before counted as the call it is: a shape's function is compiled once, in the
  // module of its first use, and the other modules call it there.
  static std::vector<double> costs(const loops::Program &p) {
    std::unordered_map<std::string, int> uses;
    for (const loops::Function *f : {&p.forward, &p.gradient})
      for (const Kernel &k : f->kernels) ++uses[Shape(k).key];
    std::vector<double> cost;
    for (const loops::Function *f : {&p.forward, &p.gradient}) {
      if (f->name.empty()) continue;
      for (const Kernel &k : f->kernels) {
        int &u = uses[Shape(k).key];
        cost.push_back(u == 0 ? 0.1 : kernelCost(k));
        if (u >= 2) u = 0; // the first of several: the later ones are calls
      }
    }
    return cost;
  }

  std::unique_ptr<Module> run() {
    const std::vector<Part> parts = planParts(P, modules_, costs(P));
    for (const loops::Function *f : {&P.forward, &P.gradient})
      for (const Kernel &k : f->kernels) ++uses_[Shape(k).key];
    // Each shared shape's function: named by first use, defined in that use's module.
    for (const Part &part : parts) {
      const loops::Function &f = part.gradient ? P.gradient : P.forward;
      for (size_t i = part.first; i < part.last; ++i) {
        std::string key = Shape(f.kernels[i]).key;
        if (uses_[key] >= 2 && !homes_.count(key))
          homes_.emplace(std::move(key), std::pair<int, int>(static_cast<int>(homes_.size()) + 1, part.module));
      }
    }
    if (!P.forward.name.empty()) function(P.forward, false, parts);
    if (!P.gradient.name.empty()) function(P.gradient, true, parts);
    return std::move(M);
  }

private:
  // Module module_ of modules_: the function's parts planned into it, each a noinline function;
  // module 0 also has the entry point, which calls every part in order (those of other modules
  // declared here; the JIT links them). One module and one part: the kernels go straight into the
  // entry point.
  void function(const loops::Function &f, bool gradient, const std::vector<Part> &parts) {
    const char *name = gradient ? kGradientSymbol : kForwardSymbol;
    FunctionType *entryType = FunctionType::get(gradient ? T : Type::getVoidTy(C), paramTypes(gradient), false);
    std::vector<const Part *> mine;
    for (const Part &part : parts)
      if (part.gradient == gradient) mine.push_back(&part);
    if (modules_ == 1 && mine.size() <= 1) {
      begin(declare(entryType, name, Function::ExternalLinkage), gradient);
      if (unrollsForOne(f)) oneExample(f, gradient);
      for (const Part *part : mine)
        for (size_t i = part->first; i < part->last; ++i) shared(f.kernels[i]);
      ret(f, gradient);
      return;
    }
    FunctionType *partType = FunctionType::get(Type::getVoidTy(C), paramTypes(gradient), false);
    const auto linkage = modules_ == 1 ? Function::InternalLinkage : Function::ExternalLinkage;
    std::vector<Function *> calls;
    for (const Part *part : mine) {
      const std::string partName = std::string(name) + ".part" + std::to_string(part->first);
      if (part->module != module_) {
        if (module_ == 0) calls.push_back(Function::Create(partType, linkage, partName, *M));
        continue;
      }
      Function *fn = declare(partType, partName, linkage);
      fn->addFnAttr(Attribute::NoInline);
      begin(fn, gradient);
      for (size_t i = part->first; i < part->last; ++i) shared(f.kernels[i]);
      B.CreateRetVoid();
      calls.push_back(fn);
    }
    if (module_ != 0) return;
    Function *entry = declare(entryType, name, Function::ExternalLinkage);
    begin(entry, gradient);
    // (A small program of more than kKernelsPerPart kernels: its one-example body has no loop.)
    if (unrollsForOne(f)) oneExample(f, gradient);
    std::vector<Value *> args;
    for (auto &a : entry->args()) args.push_back(&a);
    for (Function *part : calls) B.CreateCall(part, args);
    ret(f, gradient);
  }

  // The entry point's return: the loss (gradient) or nothing (forward).
  void ret(const loops::Function &f, bool gradient) {
    if (gradient) B.CreateRet(B.CreateLoad(T, bufferBase(f.result), "loss"));
    else B.CreateRetVoid();
  }

  // --- one example, unrolled ----------------------------------------------------------------
  // A small program called with one example (online training, hinton's 4-3-2 network) spends
  // most of its time in the loops' and kernels' overhead: its step is a few dozen multiply-adds
  // spread over twenty kernels. For such a program the entry point starts with a second body
  // for n = 1: every loop unrolled as it is emitted (the batch loops run once), the products as
  // plain sums (no tiles), and every element a kernel stores kept in a register for the kernels
  // after it (storeKnown / loadKnown: with constant indices, each load of an element stored or
  // loaded before in this call is that value), so that the kernels merge into one straight run
  // of arithmetic. The same sums in the same order as the general body (a product's sum runs
  // along k from 0, as in the tiles); the general body runs for every other n.
  //
  // (unrollsForOneExample, below, says which programs get it.)
  static bool unrollsForOne(const loops::Function &f) { return unrollsForOneExample(f); }

  // if (n == 1) { the kernels unrolled for one example; return }, then the general body.
  void oneExample(const loops::Function &f, bool gradient) {
    BasicBlock *one = BasicBlock::Create(C, "one", F), *general = BasicBlock::Create(C, "general", F);
    B.CreateCondBr(B.CreateICmpEQ(n_, ConstantInt::get(I64, 1)), one, general);
    B.SetInsertPoint(one);
    Value *n0 = n_, *nReal0 = nReal_;
    n_ = ConstantInt::get(I64, 1);
    nReal_ = real(1);
    base_.clear(); // the buffers' starts, with n = 1 folded in
    unroll_ = true;
    known_.clear();
    for (const Kernel &k : f.kernels) kernel(k);
    if (gradient) B.CreateRet(loadKnown(f.result, loops::Affine{}));
    else B.CreateRetVoid();
    unroll_ = false;
    known_.clear();
    base_.clear();
    n_ = n0, nReal_ = nReal0;
    B.SetInsertPoint(general);
  }

  // The memory location of element `a` of buffer b in the unrolled body (its space and its
  // offset there), or false when the index is not a constant.
  bool location(int b, const loops::Affine &a, std::pair<int, int64_t> &at) {
    auto *c = dyn_cast<ConstantInt>(index(a));
    if (!c) return false;
    const loops::Buffer &buf = P.buffers[static_cast<size_t>(b)];
    at = {static_cast<int>(buf.space), buf.offset + buf.offsetPerN + c->getSExtValue()};
    return true;
  }
  // buffer[a] = v; in the unrolled body, v is remembered as that location's value (buffers of
  // one space may share memory: the location, not the buffer, is the key).
  void store(Value *v, int b, const loops::Affine &a) {
    B.CreateStore(v, address(b, a));
    std::pair<int, int64_t> at;
    if (unroll_ && location(b, a, at)) known_[at] = v;
  }
  Value *loadKnown(int b, const loops::Affine &a) {
    std::pair<int, int64_t> at;
    if (unroll_ && location(b, a, at)) {
      auto [it, fresh] = known_.try_emplace(at, nullptr);
      if (fresh) it->second = B.CreateLoad(T, address(b, a));
      return it->second;
    }
    return B.CreateLoad(T, address(b, a));
  }

  std::vector<Type *> paramTypes(bool gradient) const {
    return gradient ? std::vector<Type *>{Ptr, Ptr, Ptr, I64, Ptr, Ptr} : std::vector<Type *>{Ptr, Ptr, I64, Ptr, Ptr};
  }

  Function *declare(FunctionType *ft, const std::string &name, GlobalValue::LinkageTypes linkage) {
    Function *fn = Function::Create(ft, linkage, name, *M);
    fn->addFnAttr(Attribute::NoUnwind);
    if (!O.targetCpu.empty()) fn->addFnAttr("target-cpu", O.targetCpu);
    if (!O.targetFeatures.empty()) fn->addFnAttr("target-features", O.targetFeatures);
    if (O.wideVectors) fn->addFnAttr("prefer-vector-width", "512");
    for (auto &a : fn->args())
      if (a.getType()->isPointerTy()) a.addAttr(Attribute::NoAlias);
    return fn;
  }

  // Starts emitting into fn's entry block: its spaces, n, and the shared accumulator.
  void begin(Function *fn, bool gradient) {
    F = fn;
    auto arg = [&](int i) { return F->getArg(static_cast<unsigned>(i)); };
    spaces_.clear();
    if (gradient) {
      spaces_ = {{loops::Space::Params, arg(0)}, {loops::Space::Inputs, arg(1)},
                 {loops::Space::Targets, arg(2)}, {loops::Space::Grads, arg(4)},
                 {loops::Space::Workspace, arg(5)}};
      n_ = arg(3);
    } else {
      spaces_ = {{loops::Space::Params, arg(0)}, {loops::Space::Inputs, arg(1)},
                 {loops::Space::Outputs, arg(3)}, {loops::Space::Workspace, arg(4)}};
      n_ = arg(2);
    }
    entry_ = BasicBlock::Create(C, "entry", F);
    B.SetInsertPoint(entry_);
    base_.clear();
    FastMathFlags fmf;
    fmf.setAllowContract(true);
    B.setFastMathFlags(fmf);
    nReal_ = B.CreateSIToFP(n_, T, "n.real");
    acc_ = B.CreateAlloca(T, nullptr, "acc");
  }

  // Pointer to the first element of buffer b, computed once in the entry block.
  Value *bufferBase(int b) {
    auto it = base_.find(b);
    if (it != base_.end()) return it->second;
    const loops::Buffer &buf = P.buffers[static_cast<size_t>(b)];
    IRBuilder<>::InsertPointGuard guard(B);
    B.SetInsertPoint(entry_, entry_->getFirstInsertionPt());
    if (auto *inst = dyn_cast<Instruction>(nReal_)) B.SetInsertPoint(inst->getNextNode());
    Value *off = ConstantInt::get(I64, buf.offset);
    if (buf.offsetPerN) off = B.CreateAdd(off, B.CreateMul(n_, ConstantInt::get(I64, buf.offsetPerN)));
    Value *p = B.CreateInBoundsGEP(T, spaces_.at(buf.space), off, buf.name);
    base_[b] = p;
    return p;
  }

  Value *index(const loops::Affine &a) {
    // No unsigned wrap where every part is non-negative; a window's position (oh·s + i - p) is
    // negative before a padded image's start: signed arithmetic only.
    bool nuw = a.constant >= 0;
    for (auto &t : a.terms) nuw &= t.second > 0;
    Value *v = ConstantInt::get(I64, a.constant);
    for (auto &[var, coef] : a.terms) {
      Value *t = vars_.at(var);
      if (coef != 1) t = B.CreateMul(t, ConstantInt::get(I64, coef), "", nuw, true);
      v = B.CreateAdd(v, t, "", nuw, true);
    }
    return v;
  }
  Value *address(int buf, const loops::Affine &a) {
    return B.CreateInBoundsGEP(T, bufferBase(buf), index(a));
  }

  // for (iv = 0; iv < extent; ++iv) body(iv)
  void loop(const loops::Loop &l, const std::function<void()> &body) {
    Value *extent = l.batch ? n_ : ConstantInt::get(I64, l.extent);
    if (unroll_) {
      // The body once for each value of the variable (the one-example body: all extents known).
      const int64_t trips = cast<ConstantInt>(extent)->getSExtValue();
      for (int64_t i = 0; i < trips; ++i) {
        vars_[l.var] = ConstantInt::get(I64, i);
        body();
      }
      return;
    }
    BasicBlock *pre = B.GetInsertBlock();
    BasicBlock *header = BasicBlock::Create(C, "loop", F);
    BasicBlock *exit = BasicBlock::Create(C, "loop.end", F);
    if (l.batch) B.CreateCondBr(B.CreateICmpSGT(extent, ConstantInt::get(I64, 0)), header, exit);
    else B.CreateBr(header);
    B.SetInsertPoint(header);
    PHINode *iv = B.CreatePHI(I64, 2, "i");
    iv->addIncoming(ConstantInt::get(I64, 0), pre);
    vars_[l.var] = iv;
    body();
    Value *next = B.CreateAdd(iv, ConstantInt::get(I64, 1), "", true, true);
    iv->addIncoming(next, B.GetInsertBlock());
    Instruction *latch = B.CreateCondBr(B.CreateICmpSLT(next, extent), header, exit);
    if (tiled_) keepAsWritten(latch);
    B.SetInsertPoint(exit);
  }

  // A loop of a register-tiled product is already what the machine should run: at -O3 the
  // default pipeline unrolled, vectorized and interleaved these loops again (around the tile,
  // and the rows left over one at a time) and made the products slower than at -O2 (wide:
  // 37.6 ms against 31.6 ms). `latch`'s loop is marked so that no pass transforms it.
  void keepAsWritten(Instruction *latch) {
    auto flag = [&](const char *name, Metadata *v = nullptr) -> Metadata * {
      if (!v) return MDNode::get(C, {MDString::get(C, name)});
      return MDNode::get(C, {MDString::get(C, name), v});
    };
    Metadata *off = ConstantAsMetadata::get(ConstantInt::getFalse(C));
    Metadata *one = ConstantAsMetadata::get(ConstantInt::get(Type::getInt32Ty(C), 1));
    SmallVector<Metadata *, 6> ops{nullptr, flag("llvm.loop.unroll.disable"), flag("llvm.loop.vectorize.enable", off),
                                   flag("llvm.loop.interleave.count", one), flag("llvm.loop.unroll_and_jam.disable"),
                                   flag("llvm.loop.distribute.enable", off)};
    MDNode *id = MDNode::getDistinct(C, ops);
    id->replaceOperandWith(0, id);
    latch->setMetadata(LLVMContext::MD_loop, id);
  }

  void nest(const Kernel &k, size_t level, size_t end, const std::function<void()> &inner) {
    if (level == end) return inner();
    loop(k.loops[level], [&] { nest(k, level + 1, end, inner); });
  }


  Value *intrinsic(Intrinsic::ID id, Value *x) { return B.CreateUnaryIntrinsic(id, x); }

  // log1p(e) for e >= 0 without a library call (so that it vectorizes): with u = 1 + e rounded,
  // log(u) * e / (u - 1) is accurate to a few ulp (Goldberg); where u == 1, log1p(e) = e.
  Value *log1p(Value *e) {
    Value *u = B.CreateFAdd(real(1), e);
    Value *d = B.CreateFSub(u, real(1));
    Value *r = B.CreateFDiv(B.CreateFMul(intrinsic(Intrinsic::log, u), e), d);
    return B.CreateSelect(B.CreateFCmpOEQ(d, real(0)), e, r);
  }
  Value *real(double v) { return ConstantFP::get(T, v); }

  // A call of the C library's NAME (NAMEf in f32), which the JIT resolves in the process and the
  // emitted C++ calls as std::NAME: both backends compute the same numbers.
  Value *libm(const std::string &name, Value *x) {
    FunctionCallee fn = M->getOrInsertFunction(O.f64 ? name : name + "f", FunctionType::get(T, {T}, false));
    if (auto *f = dyn_cast<Function>(fn.getCallee())) {
      f->setDoesNotThrow();
      f->setDoesNotAccessMemory();
    }
    return B.CreateCall(fn, {x});
  }

  // Whether every bound holds: 0 <= index < extent, one unsigned comparison each.
  Value *within(const std::vector<loops::Bound> &bounds) {
    Value *ok = B.getTrue();
    for (const loops::Bound &b : bounds) ok = B.CreateAnd(ok, B.CreateICmpULT(index(b.index), ConstantInt::get(I64, b.extent)));
    return ok;
  }

  // exp, the intrinsic (a libm call, or libmvec's when vectorized), or in the unrolled body
  // inline: a call there costs more than the arithmetic around it (every vector register is
  // caller-saved, so the values live across it are spilled). Inline: k = round(x / ln2),
  // r = x - k ln2 in two parts (Cody-Waite), e^r by Taylor to r^13 (f64) or r^7 (f32), whose
  // remainders at |r| <= ln2 / 2 are below half an ulp, times 2^k built in the exponent bits in
  // two halves (so that k down to the smallest subnormal works), infinity above and 0 below the
  // range: the emitted C++'s nn_exp, step for step.
  Value *exp(Value *x) {
    if (!unroll_) return intrinsic(Intrinsic::exp, x);
    Type *ty = x->getType();
    Type *ity = O.f64 ? I64 : Type::getInt32Ty(C);
    auto c = [&](double v) { return ConstantFP::get(ty, v); };
    auto ci = [&](int64_t v) { return ConstantInt::get(ity, static_cast<uint64_t>(v)); };
    auto fma = [&](Value *a, Value *b, Value *d) { return B.CreateIntrinsic(Intrinsic::fmuladd, {ty}, {a, b, d}); };
    const double magic = O.f64 ? 6755399441055744.0 : 12582912.0; // 1.5 * 2^52 (2^23): adding it rounds
    Value *t = B.CreateFAdd(B.CreateFMul(x, c(O.f64 ? 1.4426950408889634074 : 1.44269504)), c(magic));
    Value *kf = B.CreateFSub(t, c(magic));
    Value *r = O.f64 ? B.CreateFSub(B.CreateFSub(x, B.CreateFMul(kf, c(6.93145751953125E-1))), B.CreateFMul(kf, c(1.42860682030941723212E-6)))
                     : B.CreateFSub(B.CreateFSub(x, B.CreateFMul(kf, c(0.693359375))), B.CreateFMul(kf, c(-2.12194440e-4)));
    const int terms = O.f64 ? 13 : 7;
    double fact = 1;
    for (int i = 2; i <= terms; ++i) fact *= i;
    Value *p = c(1 / fact);
    for (int i = terms - 1; i >= 0; --i) {
      fact = i > 1 ? fact / (i + 1) : 1; // 1 / i!
      p = fma(p, r, c(1 / fact));
    }
    Value *k = B.CreateSub(B.CreateBitCast(t, ity), B.CreateBitCast(c(magic), ity));
    Value *k1 = B.CreateAShr(k, ci(1)), *k2 = B.CreateSub(k, k1);
    const int64_t bias = O.f64 ? 1023 : 127, shift = O.f64 ? 52 : 23;
    Value *s1 = B.CreateBitCast(B.CreateShl(B.CreateAdd(k1, ci(bias)), ci(shift)), ty);
    Value *s2 = B.CreateBitCast(B.CreateShl(B.CreateAdd(k2, ci(bias)), ci(shift)), ty);
    Value *y = B.CreateFMul(B.CreateFMul(p, s1), s2);
    y = B.CreateSelect(B.CreateFCmpOLT(x, c(O.f64 ? -745.1332191019412 : -103.972084)), c(0), y);
    return B.CreateSelect(B.CreateFCmpOGT(x, c(O.f64 ? 709.782712893384 : 88.7228317)), c(INFINITY), y);
  }

  // tanh in f32: a rational function of x on [-7.905, 7.905], where tanh rounds to ±1 beyond
  // (Eigen's generic_fast_tanh_float: p(x) / q(x), p odd of degree 13, q even of degree 6, a few
  // ulp; x itself where |x| < 0.0004). No exp and one division: in deep's 16 tanh layers the
  // f64 form below (both of its sides and an exp computed, two divisions) was a quarter of the
  // step. NaN passes through.
  Value *tanhF32(Value *a) {
    const double clamp = 7.90531110763549805;
    Value *x = B.CreateSelect(B.CreateFCmpOGT(a, real(clamp)), real(clamp), a);
    x = B.CreateSelect(B.CreateFCmpOLT(x, real(-clamp)), real(-clamp), x);
    Value *x2 = B.CreateFMul(x, x);
    auto fma = [&](Value *u, Value *v, double w) { return B.CreateIntrinsic(Intrinsic::fmuladd, {T}, {u, v, real(w)}); };
    Value *p = fma(x2, real(-2.76076847742355e-16), 2.00018790482477e-13);
    for (double c : {-8.60467152213735e-11, 5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
                     4.89352455891786e-03})
      p = fma(x2, p, c);
    p = B.CreateFMul(x, p);
    Value *q = fma(x2, real(1.19825839466702e-06), 1.18534705686654e-04);
    q = fma(x2, q, 2.26843463243900e-03);
    q = fma(x2, q, 4.89352518554385e-03);
    return B.CreateSelect(B.CreateFCmpOLT(intrinsic(Intrinsic::fabs, a), real(0.0004)), a, B.CreateFDiv(p, q));
  }

  Value *unary(Op op, Value *x, double p) {
    switch (op) {
    case Op::Neg: return B.CreateFNeg(x);
    case Op::Logistic: {
      // e = exp(-|x|), r = 1 / (1 + e): logistic(x) = x >= 0 ? r : e * r
      Value *e = exp(B.CreateFNeg(intrinsic(Intrinsic::fabs, x)));
      Value *r = B.CreateFDiv(real(1), B.CreateFAdd(real(1), e));
      return B.CreateSelect(B.CreateFCmpOGE(x, real(0)), r, B.CreateFMul(e, r));
    }
    case Op::Tanh: {
      if (!O.f64) return tanhF32(x);
      // Vectorizable: |x| < 0.625: x + x z P(z) / Q(z), z = x^2 (Cephes' rational form, 4e-16
      // relative in f64); else sign(x) (1 - 2 / (exp(2|x|) + 1)). Both sides are computed and one
      // selected, so the loop stays branch-free.
      Value *ax = intrinsic(Intrinsic::fabs, x);
      Value *z = B.CreateFMul(x, x);
      Value *num = B.CreateFAdd(B.CreateFMul(B.CreateFAdd(B.CreateFMul(real(-9.64399179425052238628E-1), z),
                                                        real(-9.92877231001918586564E1)), z),
                              real(-1.61468768441708447952E3));
      Value *q = B.CreateFAdd(B.CreateFMul(B.CreateFAdd(B.CreateFMul(B.CreateFAdd(z, real(1.12811678491632931402E2)), z),
                                                        real(2.23548839060100448583E3)), z),
                              real(4.84406305325125486048E3));
      Value *small = B.CreateFAdd(x, B.CreateFDiv(B.CreateFMul(B.CreateFMul(x, z), num), q));
      Value *e = exp(B.CreateFMul(real(2), ax));
      Value *big = B.CreateFSub(real(1), B.CreateFDiv(real(2), B.CreateFAdd(e, real(1))));
      big = B.CreateBinaryIntrinsic(Intrinsic::copysign, big, x);
      return B.CreateSelect(B.CreateFCmpOLT(ax, real(0.625)), small, big);
    }
    case Op::Relu: return B.CreateSelect(B.CreateFCmpOGT(x, real(0)), x, real(0));
    case Op::Softplus: {
      // max(x, 0) + log1p(exp(-|x|))
      Value *m = B.CreateSelect(B.CreateFCmpOGT(x, real(0)), x, real(0));
      Value *e = exp(B.CreateFNeg(intrinsic(Intrinsic::fabs, x)));
      return B.CreateFAdd(m, log1p(e));
    }
    case Op::Exp: return exp(x);
    case Op::Log: return intrinsic(Intrinsic::log, x);
    case Op::Sqrt: return intrinsic(Intrinsic::sqrt, x);
    case Op::Abs: return intrinsic(Intrinsic::fabs, x);
    case Op::Step: return B.CreateSelect(B.CreateFCmpOGT(x, real(0)), real(1), real(0));
    case Op::Sign:
      return B.CreateSelect(B.CreateFCmpOGT(x, real(0)), real(1),
                            B.CreateSelect(B.CreateFCmpOLT(x, real(0)), real(-1), real(0)));
    case Op::Gelu: {
      // x Φ(x) with Φ(x) = erfc(-x / √2) / 2: accurate for large negative x too, where
      // 1 + erf(x / √2) cancels.
      Value *phi = B.CreateFMul(real(0.5), libm("erfc", B.CreateFMul(x, real(-0.70710678118654752440))));
      return B.CreateFMul(x, phi);
    }
    case Op::Elu: return B.CreateSelect(B.CreateFCmpOGT(x, real(0)), x, libm("expm1", x));
    case Op::Erf: return libm("erf", x);
    case Op::Sin: return intrinsic(Intrinsic::sin, x);
    case Op::Cos: return intrinsic(Intrinsic::cos, x);
    case Op::LeakyRelu: return B.CreateSelect(B.CreateFCmpOGT(x, real(0)), x, B.CreateFMul(real(p), x));
    case Op::Pow:
      if (p == 2) return B.CreateFMul(x, x);
      if (p == 1) return x;
      if (p == -1) return B.CreateFDiv(real(1), x);
      if (p == 0.5) return intrinsic(Intrinsic::sqrt, x);
      return B.CreateBinaryIntrinsic(Intrinsic::pow, x, real(p));
    default: break;
    }
    throw InternalError("LLVM backend: not a unary op");
  }

  Value *expr(const Kernel &k, int e) {
    const LExpr &x = k.pool[static_cast<size_t>(e)];
    switch (x.kind) {
    case LExpr::Const: return real(x.value);
    case LExpr::Load: {
      if (x.bounds.empty()) return loadKnown(x.buffer, x.index);
      // Zero padding: outside the bounds, read element 0 (always there) and select 0 instead,
      // branch-free.
      Value *ok = within(x.bounds);
      Value *at = B.CreateSelect(ok, index(x.index), ConstantInt::get(I64, 0));
      Value *v = B.CreateLoad(T, B.CreateInBoundsGEP(T, bufferBase(x.buffer), at));
      return B.CreateSelect(ok, v, real(0));
    }
    case LExpr::Index: return B.CreateSIToFP(index(x.index), T);
    case LExpr::Select: {
      Value *a = expr(k, x.a), *b = expr(k, x.b);
      Value *cond = x.cmp == LExpr::Ge ? B.CreateFCmpOGE(a, b) : x.cmp == LExpr::Gt ? B.CreateFCmpOGT(a, b) : B.CreateFCmpOEQ(a, b);
      Value *c = expr(k, x.c), *d = expr(k, x.d);
      return B.CreateSelect(cond, c, d);
    }
    case LExpr::Acc: return B.CreateLoad(T, acc_);
    case LExpr::BatchSize: return nReal_;
    case LExpr::Max: {
      Value *a = expr(k, x.a), *b = expr(k, x.b);
      return B.CreateSelect(B.CreateFCmpOGT(a, b), a, b);
    }
    case LExpr::Unary: return unary(x.op, expr(k, x.a), x.value);
    case LExpr::Binary: {
      Value *a = expr(k, x.a), *b = expr(k, x.b);
      switch (x.op) {
      case Op::Add: return B.CreateFAdd(a, b);
      case Op::Sub: return B.CreateFSub(a, b);
      case Op::Mul: return B.CreateFMul(a, b);
      case Op::Div: return B.CreateFDiv(a, b);
      case Op::Maximum: return B.CreateSelect(B.CreateFCmpOGE(a, b), a, b);
      case Op::Minimum: return B.CreateSelect(B.CreateFCmpOLE(a, b), a, b);
      case Op::GreaterEq: return B.CreateSelect(B.CreateFCmpOGE(a, b), real(1), real(0));
      default: break;
      }
    }
    }
    throw InternalError("LLVM backend: bad expression");
  }

  // acc += v, with reassociation allowed so that the sum vectorizes.
  void accumulate(Value *v) {
    FastMathFlags f;
    f.setAllowContract(true);
    f.setAllowReassoc(true);
    Value *sum = B.CreateFAdd(B.CreateLoad(T, acc_), v);
    cast<Instruction>(sum)->setFastMathFlags(f);
    B.CreateStore(sum, acc_);
  }

  // A kernel, inside `if (n >= minBatch && n < maxBatch)` when it has those conditions.
  // --- kernels shared by their shape ----------------------------------------------------------
  // An unrolled recurrence repeats the kernels of one step T times, differing only in the buffers
  // they read and write and in the constant offsets into them (row t of the sequence). Such a
  // kernel is emitted once, as a function of its buffers' start pointers, and every repeat calls
  // it: LLVM optimizes and compiles one function instead of T copies (a GRU of 28 steps compiled
  // 1,100 kernels; the optimizer's loop analyses were most of its 8 s).
  //
  // Shape(k): k with each distinct buffer renumbered by first use (its slot), and the smallest
  // constant of the indices into each buffer moved into that slot's pointer; `key` spells out
  // every field of the result, so that equal keys emit the same code.
  struct Shape {
    Kernel k;
    std::vector<int> buffers;       // slot -> buffer
    std::vector<int64_t> constants; // slot -> the offset moved into its pointer
    std::string key;

    explicit Shape(const Kernel &src) : k(src) {
      k.comment.clear();
      std::unordered_map<int, int> slot;
      auto use = [&](int b, const loops::Affine &a) {
        auto [it, fresh] = slot.try_emplace(b, static_cast<int>(buffers.size()));
        if (fresh) {
          buffers.push_back(b);
          constants.push_back(a.constant);
        } else {
          constants[static_cast<size_t>(it->second)] = std::min(constants[static_cast<size_t>(it->second)], a.constant);
        }
      };
      use(k.out, k.outIndex);
      if (k.in >= 0) use(k.in, k.inIndex);
      for (const LExpr &e : k.pool)
        if (e.kind == LExpr::Load) use(e.buffer, e.index);
      auto renumber = [&](int &b, loops::Affine &a) {
        const int s = slot.at(b);
        b = s;
        a.constant -= constants[static_cast<size_t>(s)];
      };
      renumber(k.out, k.outIndex);
      if (k.in >= 0) renumber(k.in, k.inIndex);
      for (LExpr &e : k.pool)
        if (e.kind == LExpr::Load) renumber(e.buffer, e.index);
      key = spell(k);
    }

    static void affine(std::string &s, const loops::Affine &a) {
      s += std::to_string(a.constant);
      for (auto &[v, c] : a.terms) s += "+" + std::to_string(c) + "*v" + std::to_string(v);
      s += ";";
    }
    static void bounds(std::string &s, const std::vector<loops::Bound> &bs) {
      s += "[";
      for (const loops::Bound &b : bs) {
        affine(s, b.index);
        s += "<" + std::to_string(b.extent) + ",";
      }
      s += "]";
    }
    static std::string spell(const Kernel &k) {
      std::string s;
      auto num = [&](int64_t v) { s += std::to_string(v) + ","; };
      num(k.mode), num(k.combine), num(k.accumulate), num(k.divideByBatch), num(k.body), num(k.epilogue);
      num(k.out), num(k.in), num(k.cols), num(k.logSoftmax), num(k.minBatch), num(k.maxBatch), num(k.dotTiles);
      bounds(s, k.outBounds);
      for (const loops::Radix *r : {&k.aRows, &k.aCols}) {
        for (size_t i = 0; i < r->extents.size(); ++i) num(r->extents[i]), num(r->coefs[i]);
        s += "/";
      }
      affine(s, k.outIndex);
      affine(s, k.inIndex);
      for (const loops::Loop &l : k.loops) num(l.var), num(l.extent), num(l.batch), num(l.reduction);
      s += "|";
      for (const LExpr &e : k.pool) {
        num(e.kind), num(static_cast<int64_t>(e.op)), num(e.buffer), num(e.cmp), num(e.a), num(e.b), num(e.c), num(e.d);
        char v[32];
        std::snprintf(v, sizeof v, "%a,", e.value); // exact
        s += v;
        affine(s, e.index);
        bounds(s, e.bounds);
        s += "|";
      }
      return s;
    }
  };

  // Kernel k, inline when its shape occurs once in the program, else as a call of its shape's
  // function: defined in the module of the shape's first use (homes_), declared in the others
  // (the JIT links them), so that each is compiled once (two modules each compiling mnist's
  // four product kernels, used by forward and gradient alike, cost a third more CPU time).
  void shared(const Kernel &k) {
    Shape sh(k);
    if (uses_[sh.key] < 2) return kernel(k);
    Function *&fn = shapes_[sh.key];
    if (!fn) {
      std::vector<Type *> args{I64};
      args.insert(args.end(), sh.buffers.size(), Ptr);
      const auto [index, home] = homes_.at(sh.key);
      fn = Function::Create(FunctionType::get(Type::getVoidTy(C), args, false),
                            modules_ == 1 ? Function::InternalLinkage : Function::ExternalLinkage,
                            "nabla.kernel" + std::to_string(index), *M);
      fn->addFnAttr(Attribute::NoUnwind);
    }
    if (fn->isDeclaration() && homes_.at(sh.key).second == module_) {
      fn->addFnAttr(Attribute::NoInline);
      if (!O.targetCpu.empty()) fn->addFnAttr("target-cpu", O.targetCpu);
      if (!O.targetFeatures.empty()) fn->addFnAttr("target-features", O.targetFeatures);
      if (O.wideVectors) fn->addFnAttr("prefer-vector-width", "512");
      // Distinct buffers of one kernel are live at once, so the planner gave them disjoint memory.
      for (size_t i = 1; i < fn->arg_size(); ++i) fn->getArg(static_cast<unsigned>(i))->addAttr(Attribute::NoAlias);
      // The caller's state, emitted into again after this function.
      Function *F0 = F;
      BasicBlock *entry0 = entry_;
      Value *n0 = n_, *nReal0 = nReal_, *acc0 = acc_;
      auto base0 = std::move(base_);
      IRBuilderBase::InsertPoint ip = B.saveIP();
      F = fn;
      entry_ = BasicBlock::Create(C, "entry", F);
      B.SetInsertPoint(entry_);
      n_ = F->getArg(0);
      nReal_ = B.CreateSIToFP(n_, T, "n.real");
      acc_ = B.CreateAlloca(T, nullptr, "acc");
      base_.clear();
      for (size_t i = 0; i < sh.buffers.size(); ++i) base_[static_cast<int>(i)] = F->getArg(static_cast<unsigned>(i + 1));
      kernel(sh.k);
      B.CreateRetVoid();
      F = F0;
      entry_ = entry0;
      n_ = n0, nReal_ = nReal0, acc_ = acc0;
      base_ = std::move(base0);
      B.restoreIP(ip);
    }
    std::vector<Value *> args{n_};
    for (size_t i = 0; i < sh.buffers.size(); ++i)
      args.push_back(B.CreateInBoundsGEP(T, bufferBase(sh.buffers[i]), ConstantInt::get(I64, sh.constants[i])));
    B.CreateCall(fn, args);
  }

  void kernel(const Kernel &k) {
    if (unroll_) {
      // n = 1: the form for one example only.
      if ((k.minBatch <= 0 || 1 >= k.minBatch) && (k.maxBatch <= 0 || 1 < k.maxBatch)) kernelBody(k);
      return;
    }
    if (k.minBatch <= 0 && k.maxBatch <= 0) {
      kernelBody(k);
      return;
    }
    Value *run = B.getTrue();
    if (k.minBatch > 0) run = B.CreateAnd(run, B.CreateICmpSGE(n_, ConstantInt::get(I64, k.minBatch)));
    if (k.maxBatch > 0) run = B.CreateAnd(run, B.CreateICmpSLT(n_, ConstantInt::get(I64, k.maxBatch)));
    BasicBlock *body = BasicBlock::Create(C, "when", F), *after = BasicBlock::Create(C, "when.end", F);
    B.CreateCondBr(run, body, after);
    B.SetInsertPoint(body);
    kernelBody(k);
    B.CreateBr(after);
    B.SetInsertPoint(after);
  }

  void kernelBody(const Kernel &k) {
    vars_.clear();
    size_t all = k.loops.size();
    switch (k.mode) {
    case Kernel::Assign:
      if (transposeBlocks(k)) return;
      nest(k, 0, all, [&] { store(expr(k, k.body), k.out, k.outIndex); });
      return;
    case Kernel::Accumulate:
      if (batchSum(k)) return;
      nest(k, 0, all, [&] {
        if (unroll_) {
          // Constant indices: the bounds are known, no branch.
          if (auto *ok = dyn_cast<ConstantInt>(within(k.outBounds))) {
            if (!ok->isZero()) store(B.CreateFAdd(loadKnown(k.out, k.outIndex), expr(k, k.body)), k.out, k.outIndex);
            return;
          }
          known_.clear(); // (not expected) the branch below stores behind loadKnown's back
        }
        BasicBlock *after = nullptr;
        if (!k.outBounds.empty()) {
          // Only inside the bounds: if (within) out[index] += body.
          BasicBlock *store = BasicBlock::Create(C, "inside", F);
          after = BasicBlock::Create(C, "inside.end", F);
          B.CreateCondBr(within(k.outBounds), store, after);
          B.SetInsertPoint(store);
        }
        Value *p = address(k.out, k.outIndex);
        B.CreateStore(B.CreateFAdd(B.CreateLoad(T, p), expr(k, k.body)), p);
        if (after) {
          B.CreateBr(after);
          B.SetInsertPoint(after);
        }
      });
      return;
    case Kernel::Reduce: {
      if (k.dotTiles && k.combine == Kernel::Sum && !unroll_) return dotTiles(k);
      size_t outer = 0;
      while (outer < all && !k.loops[outer].reduction) ++outer;
      nest(k, 0, outer, [&] {
        if (k.combine == Kernel::Sum) {
          B.CreateStore(real(unroll_ ? -0.0 : 0.0), acc_); // unrolled: see plainGemm
          nest(k, outer, all, [&] { accumulate(expr(k, k.body)); });
        } else {
          // acc = body > acc ? body : acc (<, for Min) from -inf (+inf): the first of equal
          // values stays.
          const bool mx = k.combine == Kernel::Max;
          B.CreateStore(real(mx ? -INFINITY : INFINITY), acc_);
          nest(k, outer, all, [&] {
            Value *v = expr(k, k.body), *a = B.CreateLoad(T, acc_);
            B.CreateStore(B.CreateSelect(mx ? B.CreateFCmpOGT(v, a) : B.CreateFCmpOLT(v, a), v, a), acc_);
          });
        }
        store(expr(k, k.epilogue), k.out, k.outIndex);
      });
      return;
    }
    case Kernel::Softmax: softmax(k); return;
    case Kernel::Gemm: unroll_ ? plainGemm(k) : gemm(k); return;
    }
  }

  // A sum over the batch of a per-example row, out[.., j] += x[b, .., j] (a bias gradient):
  // the rows of out in vector registers across the whole batch loop, up to 8 vectors at a time
  // (the last masked). As a plain loop nest, out's row went through memory every example: a
  // 512-bit store and the load of the same row just after it, which Zen 4 does not forward
  // (two 256-bit halves), stalled each step: 6 of deep's 42 us were its sixteen bias gradients.
  // Each element's sum in the same order as before. False when k is not of that form.
  bool batchSum(const Kernel &k) {
    // Loops: any constant ones, then the batch, then the row (j).
    const size_t L = k.loops.size();
    if (unroll_ || k.mode != Kernel::Accumulate || !k.outBounds.empty() || L < 2 || !k.loops[L - 2].batch ||
        k.loops[L - 1].batch)
      return false;
    for (size_t i = 0; i + 2 < L; ++i)
      if (k.loops[i].batch) return false;
    const loops::Loop &lb = k.loops[L - 2], &lj = k.loops[L - 1];
    const LExpr &x = k.pool[static_cast<size_t>(k.body)];
    if (x.kind != LExpr::Load || !x.bounds.empty() || k.outIndex.coef(lb.var) != 0 || k.outIndex.coef(lj.var) != 1 ||
        x.index.coef(lj.var) != 1)
      return false;
    const unsigned V = O.f64 ? (O.wideVectors ? 8 : 4) : (O.wideVectors ? 16 : 8);
    VectorType *VT = FixedVectorType::get(T, V);
    const Align align(O.f64 ? 8 : 4);
    auto load = [&](Value *p, int64_t lanes) -> Value * {
      if (lanes >= static_cast<int64_t>(V)) return B.CreateAlignedLoad(VT, p, align);
      return B.CreateMaskedLoad(VT, p, align, laneMask(V, lanes), Constant::getNullValue(VT));
    };
    const int64_t N = lj.extent, G = 8 * static_cast<int64_t>(V);
    nest(k, 0, L - 2, [&] {
      for (int64_t j0 = 0; j0 < N; j0 += G) {
        const int64_t width = std::min(G, N - j0);
        const int nv = static_cast<int>((width + V - 1) / V);
        auto lanes = [&](int v) { return std::min<int64_t>(V, width - int64_t(v) * V); };
        vars_[lj.var] = ConstantInt::get(I64, j0);
        Value *po = address(k.out, k.outIndex);
        std::vector<AllocaInst *> acc; // promoted to registers (mem2reg)
        {
          IRBuilder<>::InsertPointGuard guard(B);
          B.SetInsertPoint(entry_, entry_->getFirstInsertionPt());
          for (int v = 0; v < nv; ++v) acc.push_back(B.CreateAlloca(VT));
        }
        auto at = [&](Value *p, int v) { return B.CreateInBoundsGEP(T, p, ConstantInt::get(I64, int64_t(v) * V)); };
        for (int v = 0; v < nv; ++v) B.CreateStore(load(at(po, v), lanes(v)), acc[static_cast<size_t>(v)]);
        loop(lb, [&] {
          vars_[lj.var] = ConstantInt::get(I64, j0);
          Value *px = address(x.buffer, x.index);
          for (int v = 0; v < nv; ++v) {
            AllocaInst *a = acc[static_cast<size_t>(v)];
            B.CreateStore(B.CreateFAdd(B.CreateLoad(VT, a), load(at(px, v), lanes(v))), a);
          }
        });
        for (int v = 0; v < nv; ++v) {
          Value *sum = B.CreateLoad(VT, acc[static_cast<size_t>(v)]);
          if (lanes(v) >= static_cast<int64_t>(V)) B.CreateAlignedStore(sum, at(po, v), align);
          else B.CreateMaskedStore(sum, at(po, v), align, laneMask(V, lanes(v)));
        }
      }
    });
    return true;
  }
  // LowerToLoops' transposed copy of a weight block, WT[k, n] = W[n, k] (loops n / blk, k, blk;
  // W contiguous along k), with N and K multiples of the vector width: V x V blocks, V rows of W
  // loaded as vectors, transposed in registers (log2 V rounds of two-input shuffles), stored as
  // V rows of WT. As a loop nest the vectorizer made it a gather per V elements (deep's 32 x 32
  // weights: 64 gathers a layer). The same values. False when k is not such a copy.
  bool transposeBlocks(const Kernel &k) {
    if (unroll_ || k.loops.size() != 3) return false;
    const loops::Loop &l0 = k.loops[0], &l1 = k.loops[1], &l2 = k.loops[2];
    const LExpr &w = k.pool[static_cast<size_t>(k.body)];
    if (l0.batch || l1.batch || l2.batch || w.kind != LExpr::Load || !w.bounds.empty() || k.outIndex.terms.size() != 3 ||
        w.index.terms.size() != 3)
      return false;
    const int64_t blk = l2.extent, N = l0.extent * blk, K = l1.extent, cn = w.index.coef(l2.var);
    if (k.outIndex.coef(l2.var) != 1 || k.outIndex.coef(l0.var) != blk || k.outIndex.coef(l1.var) != N ||
        w.index.coef(l1.var) != 1 || cn <= 0 || w.index.coef(l0.var) != cn * blk)
      return false;
    const unsigned V = O.f64 ? (O.wideVectors ? 8 : 4) : (O.wideVectors ? 16 : 8);
    if (N % V != 0 || K % V != 0) return false;
    VectorType *VT = FixedVectorType::get(T, V);
    const Align align(O.f64 ? 8 : 4);
    auto c64 = [&](int64_t v) { return ConstantInt::get(I64, v); };
    Value *pw = B.CreateInBoundsGEP(T, bufferBase(w.buffer), c64(w.index.constant));
    Value *pt = B.CreateInBoundsGEP(T, bufferBase(k.out), c64(k.outIndex.constant));
    loop(loops::Loop{4000, N / V, false, false}, [&] {
      loop(loops::Loop{4001, K / V, false, false}, [&] {
        Value *n0 = B.CreateMul(vars_.at(4000), c64(V)), *k0 = B.CreateMul(vars_.at(4001), c64(V));
        std::vector<Value *> rows;
        for (unsigned r = 0; r < V; ++r) {
          Value *at = B.CreateAdd(B.CreateMul(B.CreateAdd(n0, c64(r)), c64(cn)), k0);
          rows.push_back(B.CreateAlignedLoad(VT, B.CreateInBoundsGEP(T, pw, at), align));
        }
        // Round d swaps bit d of the row with bit d of the lane: for rows i (bit clear) and
        // j = i | d, lane c of the new i is c & d ? j[c ^ d] : i[c], of the new j
        // c & d ? j[c] : i[c ^ d]. After every bit, row r holds column r.
        for (unsigned d = 1; d < V; d <<= 1) {
          std::vector<int> lo, hi;
          for (unsigned c = 0; c < V; ++c) {
            lo.push_back(static_cast<int>(c & d ? V + (c ^ d) : c));
            hi.push_back(static_cast<int>(c & d ? V + c : c ^ d));
          }
          for (unsigned i = 0; i < V; ++i) {
            if (i & d) continue;
            Value *a = rows[i], *b = rows[i | d];
            rows[i] = B.CreateShuffleVector(a, b, lo);
            rows[i | d] = B.CreateShuffleVector(a, b, hi);
          }
        }
        for (unsigned r = 0; r < V; ++r) {
          Value *at = B.CreateAdd(B.CreateMul(B.CreateAdd(k0, c64(r)), c64(N)), n0);
          B.CreateAlignedStore(rows[r], B.CreateInBoundsGEP(T, pt, at), align);
        }
      });
    });
    return true;
  }

  // The mask of the first `lanes` of V lanes.
  Constant *laneMask(unsigned V, int64_t lanes) {
    std::vector<Constant *> bits;
    for (unsigned i = 0; i < V; ++i) bits.push_back(ConstantInt::get(Type::getInt1Ty(C), i < lanes));
    return ConstantVector::get(bits);
  }


  // C[m, n] (+)= Σ_k A[m, k] B[k, n], register-tiled: a block of MR rows by NR = 2 vectors of C
  // stays in registers across the whole k loop; each k step loads two vectors of B's row and
  // broadcasts MR scalars of A (TOOLCHAIN.md: tiles with the batch as a tile dimension, real
  // splats). Rows left over run one at a time; columns left over use masked loads and stores.
  // With four loops the first is the batch: one product an example (a convolution's), each
  // operand's start moved by its batch term.
  // The product as its definition, for the unrolled one-example body: C[m, n] = (C[m, n] or 0)
  // + Σ_k A[m, k] B[k, n] in the order of k, one multiply-add a step as in the tiles, divided
  // by n, then through the epilogue. Loops [batch,] m, k, n.
  void plainGemm(const Kernel &k) {
    const size_t o = k.loops.size() == 4 ? 1 : 0;
    const LExpr &mul = k.pool[static_cast<size_t>(k.body)];
    nest(k, 0, o, [&] {
      loop(k.loops[o], [&] {
        loop(k.loops[o + 2], [&] {
          // From -0, the exact identity of +, which folds away (0 + a b would keep an add).
          Value *sum = k.accumulate ? loadKnown(k.out, k.outIndex) : real(-0.0);
          loop(k.loops[o + 1], [&] {
            sum = B.CreateIntrinsic(Intrinsic::fmuladd, {T}, {expr(k, mul.a), expr(k, mul.b), sum});
          });
          if (k.divideByBatch) sum = B.CreateFMul(sum, B.CreateFDiv(real(1), nReal_));
          if (k.epilogue >= 0) {
            B.CreateStore(sum, acc_);
            sum = expr(k, k.epilogue);
          }
          store(sum, k.out, k.outIndex);
        });
      });
    });
  }

  void gemm(const Kernel &k) {
    tiled_ = true;
    if (k.loops.size() == 4) loop(k.loops[0], [&] { gemmAt(k, 1); });
    else gemmAt(k, 0);
    tiled_ = false;
  }

  void gemmAt(const Kernel &k, size_t o) {
    const loops::Loop &lm = k.loops[o], &lk = k.loops[o + 1], &ln = k.loops[o + 2];
    const LExpr &mul = k.pool[static_cast<size_t>(k.body)];
    const LExpr *A = &k.pool[static_cast<size_t>(mul.a)], *Bm = &k.pool[static_cast<size_t>(mul.b)];
    if (A->index.coef(ln.var) != 0) std::swap(A, Bm);
    const int64_t am = A->index.coef(lm.var), ak = A->index.coef(lk.var), a0 = A->index.constant;
    const int64_t bk = Bm->index.coef(lk.var), b0 = Bm->index.constant;
    const int64_t cm = k.outIndex.coef(lm.var), c0 = k.outIndex.constant;
    const int64_t N = ln.extent;
    // Short rows (N <= kEpilogueAfterN, C of a small batch in L1): the epilogue runs as a pass
    // over C after the product instead of on each tile. In the tile's loop nest its constants
    // (a rational tanh has 16) were hoisted out of the row loop by the code generator and pushed
    // the accumulators out of registers: deep's product spilled in its k loop (66 us a step
    // against 41 us with the epilogue unrolled at -O3, where nothing was hoisted).
    constexpr int64_t kEpilogueAfterN = 64;
    const bool epilogueAfter = k.epilogue >= 0 && N <= kEpilogueAfterN;
    const bool wasTiled = tiled_;
    const unsigned V = O.f64 ? (O.wideVectors ? 8 : 4) : (O.wideVectors ? 16 : 8);
    const int MR = O.wideVectors ? 8 : 4;
    const int64_t NR = 2 * V;
    Value *M = lm.batch ? n_ : static_cast<Value *>(ConstantInt::get(I64, lm.extent));
    Value *K = lk.batch ? n_ : static_cast<Value *>(ConstantInt::get(I64, lk.extent));
    Value *pa = bufferBase(A->buffer), *pb = bufferBase(Bm->buffer), *pc = bufferBase(k.out);
    if (o) {
      const int bv = k.loops[0].var;
      auto shift = [&](Value *p, const loops::Affine &idx) {
        const int64_t c = idx.coef(bv);
        return c ? B.CreateInBoundsGEP(T, p, B.CreateMul(vars_.at(bv), ConstantInt::get(I64, c))) : p;
      };
      pa = shift(pa, A->index);
      pb = shift(pb, Bm->index);
      pc = shift(pc, k.outIndex);
    }
    VectorType *VT = FixedVectorType::get(T, V);
    Align align(O.f64 ? 8 : 4);
    // The windowed form: A[m, k] at pa + a0 + rowAt[m] + kAt[k], two constant tables of offsets.
    const bool windowed = !k.aRows.empty();
    Type *I32 = Type::getInt32Ty(C);
    auto table = [&](const loops::Radix &r, const char *name) -> Value * {
      std::vector<uint32_t> v;
      for (int64_t t = 0; t < r.size(); ++t) v.push_back(static_cast<uint32_t>(r.at(t)));
      Constant *init = ConstantDataArray::get(C, v);
      auto *g = new GlobalVariable(*F->getParent(), init->getType(), true, GlobalValue::PrivateLinkage, init, name);
      g->setUnnamedAddr(GlobalValue::UnnamedAddr::Global);
      return g;
    };
    Value *rowAt = windowed ? table(k.aRows, "gemm.rows") : nullptr;
    Value *kAt = windowed ? table(k.aCols, "gemm.ks") : nullptr;
    auto offsetAt = [&](Value *tab, Value *i) {
      return B.CreateSExt(B.CreateLoad(I32, B.CreateInBoundsGEP(I32, tab, i)), I64);
    };
    auto c64 = [&](int64_t v) { return ConstantInt::get(I64, v); };
    auto mask = [&](int64_t lanes) {
      std::vector<Constant *> bits;
      for (unsigned i = 0; i < V; ++i) bits.push_back(ConstantInt::get(Type::getInt1Ty(C), i < lanes));
      return ConstantVector::get(bits);
    };
    auto vload = [&](Value *ptr, int64_t lanes) -> Value * {
      if (lanes >= static_cast<int64_t>(V)) return B.CreateAlignedLoad(VT, ptr, align);
      return B.CreateMaskedLoad(VT, ptr, align, mask(lanes), Constant::getNullValue(VT));
    };
    auto vstore = [&](Value *v, Value *ptr, int64_t lanes) {
      if (lanes >= static_cast<int64_t>(V)) B.CreateAlignedStore(v, ptr, align);
      else B.CreateMaskedStore(v, ptr, align, mask(lanes));
    };
    // One tile: rows m..m+rows-1, columns n0..n0+width-1 (width <= NR, a constant), the
    // k range [k0, k1). Starts from C when accumulating or past the first k chunk.
    auto tile = [&](Value *m, int rows, Value *n0, int64_t width, Value *k0, Value *k1) {
      int nv = static_cast<int>((width + V - 1) / V);
      auto lanes = [&](int v) { return std::min<int64_t>(V, width - int64_t(v) * V); };
      auto cptr = [&](int r, int v) {
        Value *row = B.CreateAdd(B.CreateMul(B.CreateAdd(m, c64(r)), c64(cm)), c64(c0 + int64_t(v) * V));
        return B.CreateInBoundsGEP(T, pc, B.CreateAdd(row, n0));
      };
      std::vector<Value *> init;
      auto loadC = [&] {
        for (int r = 0; r < rows; ++r)
          for (int v = 0; v < nv; ++v) init.push_back(vload(cptr(r, v), lanes(v)));
      };
      if (k.accumulate) loadC();
      else {
        // From 0 in the first k chunk, from C after it: a branch, not a select of a load, so
        // that the first chunk does not read C (a weight gradient over a small batch is one
        // chunk: reading it would double its memory traffic).
        BasicBlock *zero = B.GetInsertBlock();
        BasicBlock *reload = BasicBlock::Create(C, "gemm.reload", F), *ready = BasicBlock::Create(C, "gemm.init", F);
        B.CreateCondBr(B.CreateICmpEQ(k0, c64(0)), ready, reload);
        B.SetInsertPoint(reload);
        loadC();
        B.CreateBr(ready);
        BasicBlock *reloaded = B.GetInsertBlock();
        B.SetInsertPoint(ready);
        for (Value *&v : init) {
          PHINode *phi = B.CreatePHI(VT, 2);
          phi->addIncoming(Constant::getNullValue(VT), zero);
          phi->addIncoming(v, reloaded);
          v = phi;
        }
      }
      // The windowed form: where each row's windows start (a0 + rowAt[m + r]), read before the loop.
      std::vector<Value *> rowOff;
      if (windowed)
        for (int r = 0; r < rows; ++r) rowOff.push_back(B.CreateAdd(offsetAt(rowAt, B.CreateAdd(m, c64(r))), c64(a0)));
      // for kk in k0..k1: acc[r][v] += A[m + r, kk] * B[kk, n0 + v V ..]
      BasicBlock *pre = B.GetInsertBlock();
      BasicBlock *body = BasicBlock::Create(C, "gemm.k", F), *done = BasicBlock::Create(C, "gemm.k.end", F);
      BasicBlock *store = BasicBlock::Create(C, "gemm.store", F);
      B.CreateCondBr(B.CreateICmpSLT(k0, k1), body, store);
      B.SetInsertPoint(body);
      PHINode *kk = B.CreatePHI(I64, 2, "k");
      kk->addIncoming(k0, pre);
      std::vector<PHINode *> acc;
      for (Value *v : init) {
        PHINode *phi = B.CreatePHI(VT, 2);
        phi->addIncoming(v, pre);
        acc.push_back(phi);
      }
      std::vector<Value *> bv;
      Value *kOff = windowed ? offsetAt(kAt, kk) : nullptr;
      Value *brow = B.CreateAdd(B.CreateMul(kk, c64(bk)), B.CreateAdd(n0, c64(b0)));
      for (int v = 0; v < nv; ++v)
        bv.push_back(vload(B.CreateInBoundsGEP(T, pb, B.CreateAdd(brow, c64(int64_t(v) * V))), lanes(v)));
      std::vector<Value *> next(acc.begin(), acc.end());
      for (int r = 0; r < rows; ++r) {
        Value *ai = windowed ? B.CreateAdd(rowOff[static_cast<size_t>(r)], kOff)
                             : B.CreateAdd(B.CreateAdd(B.CreateMul(B.CreateAdd(m, c64(r)), c64(am)), B.CreateMul(kk, c64(ak))), c64(a0));
        Value *a = B.CreateVectorSplat(V, B.CreateLoad(T, B.CreateInBoundsGEP(T, pa, ai)));
        for (int v = 0; v < nv; ++v) {
          Value *&x = next[static_cast<size_t>(r * nv + v)];
          x = B.CreateIntrinsic(Intrinsic::fmuladd, {VT}, {a, bv[static_cast<size_t>(v)], x});
        }
      }
      Value *kn = B.CreateAdd(kk, c64(1), "", true, true);
      BasicBlock *latch = B.GetInsertBlock();
      kk->addIncoming(kn, latch);
      for (size_t i = 0; i < acc.size(); ++i) acc[i]->addIncoming(next[i], latch);
      keepAsWritten(B.CreateCondBr(B.CreateICmpSLT(kn, k1), body, done));
      B.SetInsertPoint(done);
      B.CreateBr(store);
      B.SetInsertPoint(store);
      std::vector<PHINode *> result;
      for (size_t i = 0; i < init.size(); ++i) {
        result.push_back(B.CreatePHI(VT, 2));
        result.back()->addIncoming(init[i], pre);
        result.back()->addIncoming(next[i], done);
      }
      // The mean over the batch: divide once, after the last k chunk.
      Value *inv = nullptr;
      if (k.divideByBatch)
        inv = B.CreateVectorSplat(V, B.CreateSelect(B.CreateICmpEQ(k1, K), B.CreateFDiv(real(1), nReal_), real(1)));
      for (int r = 0; r < rows; ++r)
        for (int v = 0; v < nv; ++v) {
          Value *x = result[static_cast<size_t>(r * nv + v)];
          vstore(inv ? B.CreateFMul(x, inv) : x, cptr(r, v), lanes(v));
        }
      if (k.epilogue >= 0 && !epilogueAfter) {
        // After the last k chunk, the tile (in L1) once more through the epilogue: a loop over
        // its columns a row, which the vectorizer widens (libmvec's exp in an activation).
        BasicBlock *epi = BasicBlock::Create(C, "gemm.epilogue", F), *after = BasicBlock::Create(C, "gemm.epilogue.end", F);
        B.CreateCondBr(B.CreateICmpEQ(k1, K), epi, after);
        B.SetInsertPoint(epi);
        const bool wasTiled = tiled_;
        tiled_ = false;
        loop(loops::Loop{3101, rows, false, false}, [&] {
          vars_[lm.var] = B.CreateAdd(m, vars_.at(3101));
          loop(loops::Loop{3100, width, false, false}, [&] {
            vars_[ln.var] = B.CreateAdd(n0, vars_.at(3100));
            Value *p = address(k.out, k.outIndex);
            B.CreateStore(B.CreateLoad(T, p), acc_);
            B.CreateStore(expr(k, k.epilogue), p);
          });
        });
        tiled_ = wasTiled;
        B.CreateBr(after);
        B.SetInsertPoint(after);
      }
    };
    // Loop nest: column blocks, then chunks of KC along k (B's panel of KC x NR stays in L1
    // while every row block uses it), then blocks of MR rows, then the remaining rows.
    const int64_t KC = 128;
    Value *blocks = B.CreateSDiv(M, c64(MR));
    auto rowsOf = [&](Value *n0, int64_t width, Value *k0, Value *k1) {
      runtimeLoop(blocks, 3000, [&] { tile(B.CreateMul(vars_.at(3000), c64(MR)), MR, n0, width, k0, k1); });
    };
    auto columns = [&](Value *n0, int64_t width) {
      Value *chunks = B.CreateSDiv(B.CreateAdd(K, c64(KC - 1)), c64(KC));
      // At least one chunk, so that C is written even when K = 0.
      chunks = B.CreateSelect(B.CreateICmpSGT(chunks, c64(0)), chunks, c64(1));
      runtimeLoop(chunks, 3002, [&] {
        Value *k0 = B.CreateMul(vars_.at(3002), c64(KC));
        Value *k1 = B.CreateAdd(k0, c64(KC));
        k1 = B.CreateSelect(B.CreateICmpSLT(k1, K), k1, K);
        rowsOf(n0, width, k0, k1);
      });
    };
    int64_t full = N / NR, rest = N % NR;
    if (full > 0)
      loop(loops::Loop{2000, full, false, false}, [&] { columns(B.CreateMul(vars_.at(2000), c64(NR)), NR); });
    if (rest > 0) columns(c64(full * NR), rest);
    // The rows left over (M mod MR; all of them below MR examples), one at a time, each across
    // tiles of 8 vectors of columns over the whole of k: 8 multiply-add chains and 8 contiguous
    // loads a row of B. As 2-vector tiles in 32-column strips, a one-example input gradient
    // (transpose(W) @ g) read W a page apart per load: 31% of wide's one-example step. Each
    // element's sum runs over k in the same order as in chunks: the same numbers.
    const int64_t NW = 8 * V;
    Value *start = B.CreateMul(blocks, c64(MR));
    runtimeLoop(B.CreateSub(M, start), 3001, [&] {
      Value *m = B.CreateAdd(start, vars_.at(3001));
      const int64_t wide = N / NW, left = N % NW;
      if (wide > 0)
        loop(loops::Loop{2001, wide, false, false}, [&] { tile(m, 1, B.CreateMul(vars_.at(2001), c64(NW)), NW, c64(0), K); });
      if (left > 0) tile(m, 1, c64(wide * NW), left, c64(0), K);
    });
    if (epilogueAfter) {
      // The whole of C once more, through the epilogue (rows of N elements, vectorized).
      tiled_ = false;
      runtimeLoop(M, 3005, [&] {
        vars_[lm.var] = vars_.at(3005);
        loop(loops::Loop{3006, N, false, false}, [&] {
          vars_[ln.var] = vars_.at(3006);
          Value *p = address(k.out, k.outIndex);
          B.CreateStore(B.CreateLoad(T, p), acc_);
          B.CreateStore(expr(k, k.epilogue), p);
        });
      });
    }
    tiled_ = wasTiled;
  }

  // out[m, n] = epilogue(Σ_k A[m, k] W[n, k]), A and W contiguous along k (Kernel::dotTiles):
  // tiles of MR rows of A by NR rows of W whose MR x NR sums are vectors of partial sums across
  // V values of k, in registers for the whole of k (each k step loads MR + NR vectors for MR x NR
  // multiply-adds; the last step masked), then added across and stored through the epilogue.
  // Column blocks of NR rows of W outside (the W panel, NR x K, stays in L1 while every row of A
  // passes it; blocks of rows of A kept in L2 measured no faster at 1,024 examples of wide),
  // blocks of MR rows of A inside, the rows left over one at a time; the rows of W left over
  // (N mod NR) one at a time. Nothing is copied: at one example this is a matrix-vector product
  // reading W once, at a few it reads each W panel from L1 once per block of rows.
  void dotTiles(const Kernel &k) {
    const loops::Loop &lm = k.loops[0], &ln = k.loops[1], &lk = k.loops[2];
    const LExpr &mul = k.pool[static_cast<size_t>(k.body)];
    const LExpr *A = &k.pool[static_cast<size_t>(mul.a)], *W = &k.pool[static_cast<size_t>(mul.b)];
    if (A->index.coef(ln.var) != 0) std::swap(A, W);
    if (lk.batch || A->index.coef(lk.var) != 1 || W->index.coef(lk.var) != 1 || A->index.coef(ln.var) != 0 ||
        W->index.coef(lm.var) != 0)
      throw InternalError("LLVM backend: dot tiles need A[m, k] W[n, k], both contiguous along k");
    tiled_ = true;
    const int64_t am = A->index.coef(lm.var), a0 = A->index.constant;
    const int64_t wn = W->index.coef(ln.var), w0 = W->index.constant;
    const int64_t N = ln.extent, K = lk.extent;
    const unsigned V = O.f64 ? (O.wideVectors ? 8 : 4) : (O.wideVectors ? 16 : 8);
    const int MR = 4, NR = 4;
    Value *M = lm.batch ? n_ : static_cast<Value *>(ConstantInt::get(I64, lm.extent));
    Value *pa = bufferBase(A->buffer), *pw = bufferBase(W->buffer);
    VectorType *VT = FixedVectorType::get(T, V);
    Align align(O.f64 ? 8 : 4);
    auto c64 = [&](int64_t v) { return ConstantInt::get(I64, v); };
    const int64_t steps = K / V, tail = K % V;
    std::vector<Constant *> bits;
    for (unsigned i = 0; i < V; ++i) bits.push_back(ConstantInt::get(Type::getInt1Ty(C), i < tail));
    Constant *tailMask = ConstantVector::get(bits);
    // The tile's sums on their way to the epilogue (MR x NR reals, a vector's alignment).
    Value *sums;
    {
      IRBuilder<>::InsertPointGuard guard(B);
      B.SetInsertPoint(entry_, entry_->getFirstInsertionPt());
      auto *slot = B.CreateAlloca(T, c64((MR * NR + V - 1) / V * V), "dot.sums");
      slot->setAlignment(Align(V * (O.f64 ? 8 : 4)));
      sums = slot;
    }
    // One tile: rows m..m+R-1 of A, rows n0..n0+NF-1 of W.
    auto tile = [&](Value *m, int R, Value *n0, int NF) {
      std::vector<Value *> arow, wrow;
      for (int r = 0; r < R; ++r)
        arow.push_back(B.CreateInBoundsGEP(T, pa, B.CreateAdd(B.CreateMul(B.CreateAdd(m, c64(r)), c64(am)), c64(a0))));
      for (int f = 0; f < NF; ++f)
        wrow.push_back(B.CreateInBoundsGEP(T, pw, B.CreateAdd(B.CreateMul(B.CreateAdd(n0, c64(f)), c64(wn)), c64(w0))));
      std::vector<Value *> acc(static_cast<size_t>(R * NF), Constant::getNullValue(VT));
      // acc[r][f] += A[m + r, kk..kk+V) * W[n0 + f, kk..kk+V)
      auto step = [&](Value *kk, bool masked, std::vector<Value *> &sums) {
        auto load = [&](Value *row) -> Value * {
          Value *p = B.CreateInBoundsGEP(T, row, kk);
          if (!masked) return B.CreateAlignedLoad(VT, p, align);
          return B.CreateMaskedLoad(VT, p, align, tailMask, Constant::getNullValue(VT));
        };
        std::vector<Value *> av, wv;
        for (Value *p : arow) av.push_back(load(p));
        for (Value *p : wrow) wv.push_back(load(p));
        for (int r = 0; r < R; ++r)
          for (int f = 0; f < NF; ++f) {
            Value *&x = sums[static_cast<size_t>(r * NF + f)];
            x = B.CreateIntrinsic(Intrinsic::fmuladd, {VT}, {av[static_cast<size_t>(r)], wv[static_cast<size_t>(f)], x});
          }
      };
      if (steps > 0) {
        BasicBlock *pre = B.GetInsertBlock();
        BasicBlock *body = BasicBlock::Create(C, "dot.k", F), *done = BasicBlock::Create(C, "dot.k.end", F);
        B.CreateBr(body);
        B.SetInsertPoint(body);
        PHINode *kk = B.CreatePHI(I64, 2, "k");
        kk->addIncoming(c64(0), pre);
        std::vector<PHINode *> phis;
        for (Value *v : acc) {
          phis.push_back(B.CreatePHI(VT, 2));
          phis.back()->addIncoming(v, pre);
        }
        std::vector<Value *> next(phis.begin(), phis.end());
        step(kk, false, next);
        Value *kn = B.CreateAdd(kk, c64(V), "", true, true);
        BasicBlock *latch = B.GetInsertBlock();
        kk->addIncoming(kn, latch);
        for (size_t i = 0; i < phis.size(); ++i) phis[i]->addIncoming(next[i], latch);
        keepAsWritten(B.CreateCondBr(B.CreateICmpSLT(kn, c64(steps * V)), body, done));
        B.SetInsertPoint(done);
        acc = next;
      }
      if (tail > 0) step(c64(steps * V), true, acc);
      // Added across all at once (acrossAll: R x NF sums in ceil(R NF / V) vectors, in order),
      // stored to `sums`, then through the epilogue into out[m + r, n0 + f] by a loop over the
      // tile. Written out per sum (a reduction and a copy of the epilogue each, a libm call
      // among them with every accumulator live across it) the tails were most of the dot
      // tiles' IR: code generation of mnist's two dot-tile kernels took a third of a cold
      // compile.
      std::vector<Value *> across = acrossAll(acc, V);
      for (size_t i = 0; i < across.size(); ++i)
        B.CreateAlignedStore(across[i], B.CreateInBoundsGEP(T, sums, c64(static_cast<int64_t>(i * V))), align);
      auto each = [&](int count, int id, const std::function<void()> &body) {
        if (count == 1) {
          vars_[id] = c64(0);
          body();
        } else {
          loop(loops::Loop{id, count, false, false}, body);
        }
      };
      each(R, 3014, [&] {
        Value *r = vars_.at(3014);
        each(NF, 3015, [&] {
          Value *f = vars_.at(3015);
          B.CreateStore(B.CreateLoad(T, B.CreateInBoundsGEP(T, sums, B.CreateAdd(B.CreateMul(r, c64(NF)), f))), acc_);
          vars_[lm.var] = B.CreateAdd(m, r);
          vars_[ln.var] = B.CreateAdd(n0, f);
          B.CreateStore(expr(k, k.epilogue), address(k.out, k.outIndex));
        });
      });
    };
    auto rows = [&](Value *n0, int NF) {
      Value *blocks = B.CreateSDiv(M, c64(MR));
      runtimeLoop(blocks, 3010, [&] { tile(B.CreateMul(vars_.at(3010), c64(MR)), MR, n0, NF); });
      Value *start = B.CreateMul(blocks, c64(MR));
      runtimeLoop(B.CreateSub(M, start), 3011, [&] { tile(B.CreateAdd(start, vars_.at(3011)), 1, n0, NF); });
    };
    const int64_t full = N / NR;
    if (full > 0) loop(loops::Loop{3012, full, false, false}, [&] { rows(B.CreateMul(vars_.at(3012), c64(NR)), NR); });
    if (N % NR) loop(loops::Loop{3013, N % NR, false, false}, [&] { rows(B.CreateAdd(c64(full * NR), vars_.at(3013)), 1); });
    tiled_ = false;
  }

  // The sums across the lanes of vectors xs[0..n) (V lanes each): sum j in lane j mod V of
  // vector j / V, the lanes past n unspecified. A tree: each level adds the two halves of every
  // group of lanes of two vectors into one vector (groups half as long, twice as many, the first
  // vector's first), 2 shuffles and 1 add for two vectors; the lanes pair up as in a single
  // vector's reduction (the halves, then the quarters, ...), so every sum is added in the same
  // order as by llvm.vector.reduce.fadd's expansion. 16 sums of 16 lanes: 15 vector adds, against
  // 64 for 16 separate reductions.
  std::vector<Value *> acrossAll(std::vector<Value *> xs, unsigned V) {
    Type *VT = xs.front()->getType();
    size_t p = 1;
    while (p < xs.size()) p *= 2;
    xs.resize(p, Constant::getNullValue(VT));
    for (unsigned s = V; s > 1; s /= 2) {
      if (xs.size() == 1) xs.push_back(xs.front()); // fewer sums than lanes: the upper half repeats
      std::vector<int> lo, hi;
      for (unsigned h = 0; h < 2; ++h)
        for (unsigned g = 0; g < V / s; ++g)
          for (unsigned i = 0; i < s / 2; ++i) {
            lo.push_back(static_cast<int>(h * V + g * s + i));
            hi.push_back(static_cast<int>(h * V + g * s + s / 2 + i));
          }
      std::vector<Value *> next;
      for (size_t i = 0; i < xs.size(); i += 2)
        next.push_back(B.CreateFAdd(B.CreateShuffleVector(xs[i], xs[i + 1], lo), B.CreateShuffleVector(xs[i], xs[i + 1], hi)));
      xs = std::move(next);
    }
    return xs;
  }

  // for (vars_[id] = 0; vars_[id] < count; ++vars_[id]) body(), count a run-time value.
  void runtimeLoop(Value *count, int id, const std::function<void()> &body) {
    Value *saved = n_;
    n_ = count; // loop() runs batch loops to n_
    loop(loops::Loop{id, 0, true, false}, [&] {
      n_ = saved;
      body();
      n_ = count;
    });
    n_ = saved;
  }

  // Row-wise softmax / log_softmax with the row maximum subtracted.
  void softmax(const Kernel &k) {
    if (unroll_) return unrolledSoftmax(k);
    nest(k, 0, k.loops.size(), [&] {
      Value *in = address(k.in, k.inIndex), *out = address(k.out, k.outIndex);
      loops::Loop col{1000, k.cols, false, false};
      auto at = [&](Value *row) { return B.CreateInBoundsGEP(T, row, vars_.at(1000)); };
      B.CreateStore(B.CreateLoad(T, in), acc_); // max
      loop(col, [&] {
        Value *x = B.CreateLoad(T, at(in)), *m = B.CreateLoad(T, acc_);
        B.CreateStore(B.CreateSelect(B.CreateFCmpOGT(x, m), x, m), acc_);
      });
      Value *m = B.CreateLoad(T, acc_);
      B.CreateStore(real(0), acc_);
      loop(col, [&] { accumulate(intrinsic(Intrinsic::exp, B.CreateFSub(B.CreateLoad(T, at(in)), m))); });
      Value *s = B.CreateLoad(T, acc_);
      Value *logS = k.logSoftmax ? intrinsic(Intrinsic::log, s) : nullptr;
      loop(col, [&] {
        Value *d = B.CreateFSub(B.CreateLoad(T, at(in)), m);
        Value *y = k.logSoftmax ? B.CreateFSub(d, logS) : B.CreateFDiv(intrinsic(Intrinsic::exp, d), s);
        B.CreateStore(y, at(out));
      });
    });
  }

  // The same, unrolled (every element through loadKnown / store: the row's values stay in
  // registers, and later kernels read the result from them).
  void unrolledSoftmax(const Kernel &k) {
    nest(k, 0, k.loops.size(), [&] {
      std::vector<Value *> x;
      for (int64_t j = 0; j < k.cols; ++j) x.push_back(loadKnown(k.in, k.inIndex.plus(loops::Affine::of(j))));
      Value *m = x[0];
      for (Value *v : x) m = B.CreateSelect(B.CreateFCmpOGT(v, m), v, m);
      Value *s = real(-0.0);
      for (Value *v : x) s = B.CreateFAdd(s, exp(B.CreateFSub(v, m)));
      Value *logS = k.logSoftmax ? intrinsic(Intrinsic::log, s) : nullptr;
      for (int64_t j = 0; j < k.cols; ++j) {
        Value *d = B.CreateFSub(x[static_cast<size_t>(j)], m);
        Value *y = k.logSoftmax ? B.CreateFSub(d, logS) : B.CreateFDiv(exp(d), s);
        store(y, k.out, k.outIndex.plus(loops::Affine::of(j)));
      }
    });
  }

  const loops::Program &P;
  LLVMContext &C;
  const LLVMEmitOptions &O;
  std::unique_ptr<Module> M;
  IRBuilder<> B;
  Type *T, *I64, *Ptr;
  Function *F = nullptr;
  BasicBlock *entry_ = nullptr;
  Value *n_ = nullptr, *nReal_ = nullptr, *acc_ = nullptr;
  std::unordered_map<loops::Space, Value *> spaces_;
  std::unordered_map<int, Value *> base_, vars_;
  int module_ = 0, modules_ = 1;
  bool tiled_ = false; // emitting a register-tiled product: its loops are marked keepAsWritten
  bool unroll_ = false; // emitting the one-example body: loops unrolled, products plain
  std::map<std::pair<int, int64_t>, Value *> known_; // unrolled: (space, offset) -> its value
  std::unordered_map<std::string, int> uses_;           // kernel shape -> kernels of that shape
  std::unordered_map<std::string, Function *> shapes_;  // kernel shape -> its function here
  std::unordered_map<std::string, std::pair<int, int>> homes_; // shared shape -> (number, module)
};

} // namespace

std::unique_ptr<Module> emitLLVM(const loops::Program &p, LLVMContext &ctx, const LLVMEmitOptions &opts,
                                 int module, int modules) {
  if (modules < 1 || module < 0 || module >= modules)
    throw InternalError("emitLLVM: module " + std::to_string(module) + " of " + std::to_string(modules));
  return Emitter(p, ctx, opts, module, modules).run();
}

int llvmModuleCount(const loops::Program &p, int most) {
  double cost = 0;
  for (double c : Emitter::costs(p)) cost += c;
  // A module costs 3-4 ms of its own (its target machine, the pass pipelines' set-up, linking):
  // worth a thread from about 15 ms of work on. mnist (cost ~70, about 100 ms of CPU at -O2)
  // compiles in two.
  constexpr double kCostPerModule = 15;
  return std::max(1, std::min(most, static_cast<int>(cost / kCostPerModule)));
}

} // namespace nabla
