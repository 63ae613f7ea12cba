// Scalar kernels of the elementwise ops, numerically stable, shared by the interpreter and the
// simplifier's constant folding so that both compute exactly the same numbers.
#pragma once
#include "Graph.h"

#include <cmath>

namespace nabla {

template <class T> T stableLogistic(T x) {
  if (x >= 0) return T(1) / (T(1) + std::exp(-x));
  T e = std::exp(x);
  return e / (T(1) + e);
}

template <class T> T stableSoftplus(T x) {
  // log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))
  return std::max(x, T(0)) + std::log1p(std::exp(-std::abs(x)));
}

template <class T> T applyUnary(Op op, T x, double fattr) {
  switch (op) {
  case Op::Neg: return -x;
  case Op::Logistic: return stableLogistic(x);
  case Op::Tanh: return std::tanh(x);
  case Op::Relu: return x > 0 ? x : T(0);
  case Op::Softplus: return stableSoftplus(x);
  case Op::Exp: return std::exp(x);
  case Op::Log: return std::log(x);
  case Op::Sqrt: return std::sqrt(x);
  case Op::Abs: return std::abs(x);
  case Op::Step: return x > 0 ? T(1) : T(0);
  case Op::Sign: return x > 0 ? T(1) : x < 0 ? T(-1) : T(0);
  case Op::Pow: {
    T c = static_cast<T>(fattr);
    if (fattr == 2) return x * x;
    if (fattr == 1) return x;
    if (fattr == -1) return T(1) / x;
    if (fattr == 0.5) return std::sqrt(x);
    return std::pow(x, c);
  }
  default: throw InternalError("applyUnary: not an elementwise unary op");
  }
}

template <class T> T applyBinary(Op op, T a, T b) {
  switch (op) {
  case Op::Add: return a + b;
  case Op::Sub: return a - b;
  case Op::Mul: return a * b;
  case Op::Div: return a / b;
  default: throw InternalError("applyBinary: not an elementwise binary op");
  }
}

} // namespace nabla
