// EmitCpp: the second printer of Loop IR (the first is compiler/llvm/EmitLLVM.cpp). It writes
// standalone C++17 that a person can read, ship and compile anywhere: a header NAME.hpp with the
// API below and a source NAME.cpp with one plain loop nest a kernel, each beside the formula it
// computes and the .nn line it comes from. The numerics follow EmitLLVM exactly (the same stable
// forms of logistic, softplus, tanh and softmax), so the emitted code agrees with the JIT to
// rounding.
//
//   namespace NAME {
//   using real = float;                            // double with f64
//   inline constexpr std::size_t kParams, kInputs, kTargets, kOutputs;
//   std::size_t workspace_size(std::size_t n);
//   void forward(const real* params, const real* inputs, std::size_t n, real* outputs, real* workspace);
//   real loss_and_gradient(const real* params, const real* inputs, const real* targets, std::size_t n,
//                          real* grads, real* workspace);       // only where the program has a loss
//   inline constexpr real kTrainedParams[kParams];             // only with trained params
//   }
//
// With `withMain`, NAME_main.cpp is a complete program that trains from a CSV file with SGD
// (initial params from the project's seeded generator, bit for bit as runtime/Random.cpp).
#pragma once
#include "LoopIR.h"
#include "Program.h"

#include <string>
#include <string_view>
#include <vector>

namespace nabla {

struct CppEmitOptions {
  bool f64 = false;                    // `using real = double` instead of float
  const std::vector<double> *trainedParams = nullptr; // Program::paramCount() values: kTrainedParams
  bool withMain = false;               // also NAME_main.cpp
  std::string name;                    // the namespace and file stem; empty: cppName of the source file
};

struct CppFiles {
  std::string name;   // NAME: the files are NAME.hpp, NAME.cpp and NAME_main.cpp
  std::string header; // NAME.hpp
  std::string source; // NAME.cpp
  std::string main;   // NAME_main.cpp, empty unless withMain
};

// NAME from a file stem: every character outside [A-Za-z0-9_] becomes '_', and "nn_" goes in front
// when the result starts with a digit, is empty or is a C++ keyword (`my-net` -> my_net,
// `2layer` -> nn_2layer, `class` -> nn_class).
std::string cppName(std::string_view stem);
// NAME for a path: cppName of its file name without the directory and the last extension.
std::string cppNameForPath(std::string_view path);
bool isCppKeyword(std::string_view word);

// Throws InternalError on Loop IR it cannot print (a bug, never a user error).
CppFiles emitCpp(const Program &program, const loops::Program &loops, const CppEmitOptions &opts = {});

} // namespace nabla
