// Embedding nabla as a library: compile a .nn program, inspect its flat layout, initialize its
// params, run forward and loss-and-gradient on a tiny batch, and train it with a few steps of
// plain SGD. Exits 1 when the program does not compile or the loss does not fall.
//
//   embed [PROGRAM.nn]        (default: samples/hinton.nn of the nabla tree)
#include "Model.h"

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

using nabla::Model;

static void list(const char *kind, const std::vector<nabla::TensorInfo> &ts) {
  for (const nabla::TensorInfo &t : ts)
    std::printf("  %-6s %-8s shape %-8s offset %lld (%lld values)\n", kind, t.name.c_str(), t.shape.describe().c_str(),
                static_cast<long long>(t.offset), static_cast<long long>(t.shape.numel()));
}

int main(int argc, char **argv) {
  const std::string path = argc > 1 ? argv[1] : NABLA_DEFAULT_PROGRAM;

  // 1. Compile: front end, symbolic gradient, Loop IR, LLVM JIT. Errors are values, not exceptions.
  nabla::CompileOptions options;
  options.dtype = nabla::DType::F64; // computed in f64 (f32 is the default)
  options.engine = nabla::Engine::Jit;
  nabla::Expected<Model> compiled = Model::compileFile(path, options);
  if (!compiled) {
    std::fprintf(stderr, "%s", compiled.error().message.c_str());
    return 1;
  }
  const Model &model = *compiled;
  if (!model.hasLoss()) {
    std::fprintf(stderr, "%s: the program has no loss to train\n", path.c_str());
    return 1;
  }

  // 2. The flat layout: every tensor at an offset of the array of its kind.
  std::printf("%s: %lld params, %lld inputs, %lld targets, %lld outputs per example\n", path.c_str(),
              static_cast<long long>(model.paramCount()), static_cast<long long>(model.inputCount()),
              static_cast<long long>(model.targetCount()), static_cast<long long>(model.outputCount()));
  list("param", model.params());
  list("input", model.inputs());
  list("target", model.targets());
  list("output", model.outputs());

  // 3. Params from a seed: the same numbers on every machine and engine.
  std::vector<double> params = model.initParams(/*seed=*/1);

  // 4. A tiny batch, example after example: inputs then targets in the flat layout. Written by
  //    hand for the lecture network (x[4] -> t[2]); made up for any other program.
  int64_t n = 4;
  std::vector<double> inputs, targets;
  if (model.inputCount() == 4 && model.targetCount() == 2) {
    inputs = {0.9, 0.1, 0.8, 0.2,  // example 0
              0.1, 0.9, 0.2, 0.7,  // example 1
              0.8, 0.3, 0.9, 0.1,  // example 2
              0.2, 0.8, 0.1, 0.9}; // example 3
    targets = {1, 0,  0, 1,  1, 0,  0, 1};
  } else {
    for (int64_t i = 0; i < n * model.inputCount(); ++i) inputs.push_back(0.5 + 0.5 * std::sin(0.7 * double(i)));
    for (int64_t i = 0; i < n * model.targetCount(); ++i) targets.push_back(i % 3 == 0 ? 1.0 : 0.0);
  }

  // 5. Forward: the outputs of every example, example after example.
  std::vector<double> out = model.forward(params, inputs.data(), n);
  for (int64_t e = 0; e < n; ++e) {
    std::printf("forward, example %lld:", static_cast<long long>(e));
    for (int64_t j = 0; j < model.outputCount(); ++j) std::printf(" %.6f", out[size_t(e * model.outputCount() + j)]);
    std::printf("\n");
  }

  // 6. Plain SGD on the mean loss over the batch: params -= rate * gradient.
  const double rate = 2.0;
  std::vector<double> grads;
  double first = 0, last = 0;
  for (int step = 0; step <= 20; ++step) {
    double loss = model.lossAndGradient(params, inputs.data(), targets.data(), n, grads);
    if (!std::isfinite(loss)) {
      std::fprintf(stderr, "step %d: the loss is not finite\n", step);
      return 1;
    }
    if (step == 0) first = loss;
    last = loss;
    if (step % 2 == 0) std::printf("step %2d: loss %.6f\n", step, loss);
    if (step == 20) break;
    for (size_t i = 0; i < params.size(); ++i) params[i] -= rate * grads[i];
  }
  std::printf("loss %.6f -> %.6f: %s\n", first, last, last < first ? "falling" : "NOT FALLING");
  return last < first ? 0 : 1;
}
