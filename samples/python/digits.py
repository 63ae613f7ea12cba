#!/usr/bin/env python3
"""The digits network from Python, notebook style (run it top to bottom):

    cmake --build build --target nabla_python
    PYTHONPATH=build/python /usr/bin/python3 samples/python/digits.py [--plot loss.png]

1. compile samples/digits.nn, 2. train it from NumPy arrays, 3. plot the loss curve (when
matplotlib is installed), 4. check one gradient against PyTorch autograd (when torch is), and
5. train it as the loss head of a PyTorch loop.
"""
import argparse
import pathlib
import time

import numpy as np

import nabla

here = pathlib.Path(__file__).resolve().parent
samples = here.parent
ap = argparse.ArgumentParser()
ap.add_argument("--plot", default=None, help="write the loss curve here (PNG; needs matplotlib)")
ap.add_argument("--epochs", type=int, default=10)
args = ap.parse_args()

# %% 1. Compile. The model says what it takes: names and shapes, batch first at the call.
model = nabla.compile(samples / "digits.nn")                # f32, JIT, -O2
print("params :", model.params)
print("inputs :", model.inputs, " targets:", model.targets, " outputs:", model.outputs)

# %% 2. Data as NumPy arrays: 64 pixels, then the class (0..9). Integer class indices are fine for
# a target of 10 classes (they become one-hot rows). Hold out the last 300 rows as a test set.
data = np.loadtxt(samples / "data" / "digits.csv", delimiter=",", skiprows=1)
x = np.ascontiguousarray(data[:, :64], dtype=np.float32)    # f32 and C-contiguous: read in place
labels = data[:, 64].astype(np.int64)
x_train, y_train, x_test, y_test = x[:-300], labels[:-300], x[-300:], labels[-300:]

params = model.init_params(seed=0)
loss, grads = model.loss_and_grad(params, x_train, y_train)
print("initial loss %.4f, |dE/dh.W| = %.4f" % (loss, np.linalg.norm(grads["h.W"])))

start = time.perf_counter()
params, history, summary = nabla.train(model, x_train, y_train, epochs=args.epochs, batch=32,
                                       optimizer="adam", lr=0.003, valid_fraction=0.1,
                                       test_inputs=x_test, test_targets=y_test)
print("trained in %.2f s: test accuracy %.4f" % (time.perf_counter() - start, summary["test_accuracy"]))
predicted = model.forward(params, x_test)["y"].argmax(axis=1)
print("forward on the test set: %d of %d right" % ((predicted == y_test).sum(), len(y_test)))

# %% 3. The loss curve.
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib is not installed: no plot")
else:
    epochs = [h["epoch"] for h in history]
    plt.plot(epochs, [h["train_loss"] for h in history], label="train")
    plt.plot(epochs, [h["valid_loss"] for h in history], label="held out")
    plt.xlabel("epoch"), plt.ylabel("cross-entropy"), plt.legend()
    out = args.plot or "digits-loss.png"
    plt.savefig(out)
    print("loss curve:", out)

# %% 4. One gradient against PyTorch autograd, in f64: the same program written in PyTorch.
try:
    import torch
except ImportError:
    print("torch is not installed: no comparison")
    raise SystemExit(0)
m64 = nabla.compile(samples / "digits.nn", dtype="f64")
p64 = {k: v.astype(np.float64) for k, v in params.items()}
xb, yb = data[:20, :64], np.eye(10)[labels[:20]]
loss, grads = m64.loss_and_grad(p64, xb, yb)
tp = {k: torch.tensor(v, requires_grad=True) for k, v in p64.items()}
z = torch.tanh(torch.tensor(xb) / 16 @ tp["h.W"].T + tp["h.b"]) @ tp["y.W"].T + tp["y.b"]
ref = -(torch.tensor(yb) * torch.log_softmax(z, 1)).sum(1).mean()
ref.backward()
err = np.abs(grads["h.W"] - tp["h.W"].grad.numpy()).max()
print("loss nabla %.15f, torch %.15f; dE/dh.W max difference %.2e" % (loss, ref.item(), err))
assert err < 1e-12

# %% 5. The network as the loss head of a PyTorch training loop (torch.optim.Adam and a weight
# penalty computed by PyTorch; nabla computes the network's loss and gradient).
import nabla.torch  # noqa: E402
layer = nabla.torch.Module(model)
opt = torch.optim.Adam(layer.parameters(), lr=0.003)
for epoch in range(3):
    for i in range(0, len(x_train) - 31, 32):
        opt.zero_grad()
        loss = layer(x_train[i:i + 32], y_train[i:i + 32]) + 1e-5 * sum((p ** 2).sum() for p in layer.parameters())
        loss.backward()
        opt.step()
acc = (model.forward(layer.params_dict(), x_test)["y"].argmax(1) == y_test).mean()
print("trained in a PyTorch loop: test accuracy %.4f" % acc)
