// Tests of the Model API's raw entry points' preconditions: forwardRaw / lossAndGradientRaw read
// the arrays as the dtype the code was compiled for, so calling them with the other T used to
// return garbage silently. Now the try* forms return an error value naming the mismatch and the
// unchecked forms throw InternalError; with the right T both agree with the f64 interface.
#include <catch2/catch.hpp>

#include "Model.h"

#include <cmath>
#include <vector>

using namespace nabla;

namespace {

const char *kNet = "input x[3]\ntarget t[2]\nparam W[2, 3] ~ normal(0, 1)\nparam b[2]\n"
                   "y = tanh(W @ x + b)\noutput y\nloss E = 0.5 * sum((y - t)^2)\n";

Model compiled(DType dtype, Engine engine = Engine::Jit) {
  CompileOptions o;
  o.dtype = dtype;
  o.engine = engine;
  auto m = Model::compileString(kNet, "net.nn", o);
  REQUIRE(m);
  return std::move(*m);
}

} // namespace

TEST_CASE("raw entry points: the wrong dtype is an error, not garbage", "[model]") {
  const int64_t n = 2;
  for (DType dt : {DType::F32, DType::F64}) {
    Model m = compiled(dt);
    std::vector<double> P = m.initParams(3), X = {0.1, -0.2, 0.3, 0.5, 0.4, -0.1}, Y = {0.2, -0.3, 0.1, 0.0};
    std::vector<double> out(static_cast<size_t>(n * m.outputCount())), G(static_cast<size_t>(m.paramCount())),
        W(static_cast<size_t>(m.workspaceSize(n)));
    std::vector<float> Pf(P.begin(), P.end()), Xf(X.begin(), X.end()), Yf(Y.begin(), Y.end()),
        outf(out.size()), Gf(G.size()), Wf(W.size());
    std::vector<double> refGrads;
    double refLoss = m.lossAndGradient(P, X.data(), Y.data(), n, refGrads);
    std::vector<double> refOut = m.forward(P, X.data(), n);
    if (dt == DType::F32) {
      auto f = m.tryForwardRaw<double>(P.data(), X.data(), n, out.data(), W.data());
      REQUIRE_FALSE(f);
      CHECK(f.error().message == "nabla: error: forwardRaw<double> on a model compiled for f32: use forwardRaw<float>");
      auto l = m.tryLossAndGradientRaw<double>(P.data(), X.data(), Y.data(), n, G.data(), W.data());
      REQUIRE_FALSE(l);
      CHECK(l.error().message ==
            "nabla: error: lossAndGradientRaw<double> on a model compiled for f32: use lossAndGradientRaw<float>");
      CHECK_THROWS_AS(m.forwardRaw<double>(P.data(), X.data(), n, out.data(), W.data()), InternalError);
      CHECK_THROWS_AS(m.lossAndGradientRaw<double>(P.data(), X.data(), Y.data(), n, G.data(), W.data()), InternalError);
      // The right T: what the f64 interface computes (in f32 inside).
      auto ok = m.tryLossAndGradientRaw<float>(Pf.data(), Xf.data(), Yf.data(), n, Gf.data(), Wf.data());
      REQUIRE(ok);
      CHECK(static_cast<double>(*ok) == refLoss);
      for (size_t i = 0; i < G.size(); ++i) CHECK(static_cast<double>(Gf[i]) == refGrads[i]);
      REQUIRE(m.tryForwardRaw<float>(Pf.data(), Xf.data(), n, outf.data(), Wf.data()));
      for (size_t i = 0; i < out.size(); ++i) CHECK(static_cast<double>(outf[i]) == refOut[i]);
    } else {
      auto f = m.tryForwardRaw<float>(Pf.data(), Xf.data(), n, outf.data(), Wf.data());
      REQUIRE_FALSE(f);
      CHECK(f.error().message == "nabla: error: forwardRaw<float> on a model compiled for f64: use forwardRaw<double>");
      auto l = m.tryLossAndGradientRaw<float>(Pf.data(), Xf.data(), Yf.data(), n, Gf.data(), Wf.data());
      REQUIRE_FALSE(l);
      CHECK_THROWS_AS(m.lossAndGradientRaw<float>(Pf.data(), Xf.data(), Yf.data(), n, Gf.data(), Wf.data()), InternalError);
      auto ok = m.tryLossAndGradientRaw<double>(P.data(), X.data(), Y.data(), n, G.data(), W.data());
      REQUIRE(ok);
      CHECK(*ok == refLoss);
      CHECK(G == refGrads);
      REQUIRE(m.tryForwardRaw<double>(P.data(), X.data(), n, out.data(), W.data()));
      CHECK(out == refOut);
    }
  }
}

TEST_CASE("raw entry points: the interpreter engine is an error value", "[model]") {
  Model m = compiled(DType::F64, Engine::Interp);
  std::vector<double> P = m.initParams(1), X(3), Y(2), G(static_cast<size_t>(m.paramCount())), out(2), W(64);
  auto l = m.tryLossAndGradientRaw<double>(P.data(), X.data(), Y.data(), 1, G.data(), W.data());
  REQUIRE_FALSE(l);
  CHECK(l.error().message == "nabla: error: lossAndGradientRaw<double> needs the JIT engine (the model uses the interpreter)");
  CHECK_FALSE(m.tryForwardRaw<double>(P.data(), X.data(), 1, out.data(), W.data()));
}
