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
  // gelu(x) = x Phi(x), Phi the exact normal CDF (PyTorch's default gelu). Phi(x) =
  // erfc(-x / sqrt 2) / 2 rather than (1 + erf(x / sqrt 2)) / 2: the same number, without the
  // cancellation that makes 1 + erf(-7) exactly 0 (gelu(-10) is -7.6e-23, not 0)
  case Op::Gelu: return T(0.5) * x * std::erfc(-x * T(0.70710678118654752440));
  // elu(x) = x for x > 0, exp(x) - 1 otherwise (alpha = 1); expm1 keeps the digits near 0
  case Op::Elu: return x > 0 ? x : std::expm1(x);
  case Op::Erf: return std::erf(x);
  case Op::Sin: return std::sin(x);
  case Op::Cos: return std::cos(x);
  case Op::LeakyRelu: return x > 0 ? x : static_cast<T>(fattr) * x;
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
  // At a tie both give a (the gradient goes to a); a NaN in either operand gives NaN, as in
  // PyTorch (a != a is a's NaN test; a NaN b fails a >= b and is returned).
  case Op::Maximum: return a >= b || a != a ? a : b;
  case Op::Minimum: return a <= b || a != a ? a : b;
  case Op::GreaterEq: return a >= b ? T(1) : T(0);
  default: throw InternalError("applyBinary: not an elementwise binary op");
  }
}

} // namespace nabla
