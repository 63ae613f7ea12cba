# usage: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 tests/bench/vs_pytorch.py cnn|gru
#        env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 tests/bench/vs_pytorch.py epoch [EPOCHS [LR]]
# (after a build with the Python module: build/python, and of build/nabla for `epoch`)
# cnn, gru: one training step of tests/bench/convnet.nn or samples/fashion_gru.nn (loss and full gradient, no update), batch 64, f32, 1 thread: nabla
# (the JIT, through the Python module) against PyTorch, interleaved in one run; CPU time medians,
# every run and the load average; for cnn the GFLOP/s and the share of the FMA peak (FMA_PEAK in
# GFLOP/s, measured by tests/bench/fma_peak.cpp; 116.6 by default, this machine's).
# epoch: samples/fashion_cnn.nn trained on Fashion-MNIST (Debian's dataset-fashion-mnist) by
# `nabla train` and the same net, batch (64), optimizer (adam) and learning rate by a PyTorch loop,
# one after the other: PyTorch's CPU time and test accuracy an epoch; nabla's epoch lines, its
# training time (wall) and the whole command's CPU time, which also holds the trainer's final pass
# over the training set (its loss and accuracy: about one more epoch of work).
import sys, time, numpy as np, torch, torch.nn as nn, torch.nn.functional as F
import os
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "build", "python"))
torch.set_num_threads(1); torch.manual_seed(0)
which = sys.argv[1]; B = 64
if which == "epoch":
    import gzip, resource, subprocess, re
    D = "/usr/share/datasets/fashion-mnist"
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    lr = float(sys.argv[3]) if len(sys.argv) > 3 else 0.001
    def idx(name, offset):
        with gzip.open(os.path.join(D, name)) as f: return np.frombuffer(f.read(), np.uint8, offset=offset)
    xtr = torch.from_numpy(idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28).astype(np.float32))
    ytr = torch.from_numpy(idx("train-labels-idx1-ubyte.gz", 8).astype(np.int64))
    xte = torch.from_numpy(idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28).astype(np.float32))
    yte = torch.from_numpy(idx("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64))
    class Net(nn.Module):
        def __init__(s):
            super().__init__()
            s.c1 = nn.Conv2d(1, 32, 5, padding=2); s.c2 = nn.Conv2d(32, 64, 5, padding=2); s.d = nn.Linear(64*7*7, 10)
        def forward(s, x):
            x = F.max_pool2d(F.relu(s.c1(x / 255)), 2); x = F.max_pool2d(F.relu(s.c2(x)), 2)
            return s.d(x.flatten(1))
    net = Net(); opt = torch.optim.Adam(net.parameters(), lr=lr)
    print(f"PyTorch {torch.__version__}: adam lr {lr}, batch {B}, {epochs} epochs, 1 thread")
    for e in range(epochs):
        t0 = time.process_time()
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), B):
            j = perm[i:i + B]
            opt.zero_grad(); F.cross_entropy(net(xtr[j]), ytr[j]).backward(); opt.step()
        with torch.no_grad():
            acc = sum((net(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item() for i in range(0, len(xte), 1000)) / len(xte)
        print(f"  epoch {e + 1}: {time.process_time() - t0:.1f} s CPU, test accuracy {acc * 100:.2f}%", flush=True)
    cmd = [os.path.join(ROOT, "build", "nabla"), "train", os.path.join(ROOT, "samples", "fashion_cnn.nn"),
           "--data", f"{D}/train-images-idx3-ubyte.gz", "--labels", f"{D}/train-labels-idx1-ubyte.gz",
           "--test-data", f"{D}/t10k-images-idx3-ubyte.gz", "--test-labels", f"{D}/t10k-labels-idx1-ubyte.gz",
           "--optimizer", "adam", "--lr", str(lr), "--batch", str(B), "--epochs", str(epochs)]
    print("nabla:", " ".join(cmd[1:]), flush=True)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = subprocess.run(cmd, capture_output=True, text=True, check=True)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    for line in (run.stdout + run.stderr).splitlines():
        if line.startswith("epoch") or line.startswith("trained"): print("  " + line)
    print(f"  nabla's whole command: {r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime:.1f} s CPU "
          f"(reading the data, compiling, {epochs} epochs with their test evaluations, and the final "
          f"loss and accuracy over the 60000 training images), at most {r1.ru_maxrss / 1024:.0f} MB resident")
    sys.exit(0)
import nabla
rng = np.random.default_rng(0)
if which == "cnn":
    m = nabla.compile(os.path.join(ROOT, "tests", "bench", "convnet.nn"))
    x = (rng.random((B, 1, 28, 28)) * 255).astype(np.float32)
    class Net(nn.Module):
        def __init__(s):
            super().__init__()
            s.c1 = nn.Conv2d(1, 16, 5, padding=2); s.c2 = nn.Conv2d(16, 32, 5, padding=2); s.d = nn.Linear(32*7*7, 10)
        def forward(s, x):
            x = F.max_pool2d(F.relu(s.c1(x / 255)), 2); x = F.max_pool2d(F.relu(s.c2(x)), 2)
            return s.d(x.flatten(1))
else:
    m = nabla.compile(os.path.join(ROOT, "samples", "fashion_gru.nn"))
    x = (rng.random((B, 28, 28)) * 255).astype(np.float32)
    class Net(nn.Module):
        def __init__(s):
            super().__init__(); s.g = nn.GRU(28, 128, batch_first=True); s.d = nn.Linear(128, 10)
        def forward(s, x):
            hs, _ = s.g(x / 255); return s.d(hs[:, -1])
net = Net(); xt = torch.from_numpy(x); labels = rng.integers(0, 10, B)
yt = torch.from_numpy(labels)
t = np.zeros((B, 10), np.float32); t[np.arange(B), labels] = 1
p = m.init_params(0)
def nabla_step(): m.loss_and_grad(p, x, t)
def torch_step():
    net.zero_grad(); F.cross_entropy(net(xt), yt).backward()
for f in (nabla_step, torch_step):
    for _ in range(3): f()
res = {"nabla": [], "torch": []}
n = 10
for r in range(9):
    for name, f in (("nabla", nabla_step), ("torch", torch_step)):
        t0 = time.process_time()
        for _ in range(n): f()
        res[name].append((time.process_time() - t0) / n)
med = {k: sorted(v)[len(v) // 2] for k, v in res.items()}
print(f"{which}: nabla {med['nabla']*1e3:.2f} ms, PyTorch {torch.__version__} {med['torch']*1e3:.2f} ms, ratio {med['nabla']/med['torch']:.2f} (median CPU time of 9 x {n} steps, batch {B}, f32, 1 thread)")
print(f"  load average {os.getloadavg()[0]:.1f}; all runs (ms): nabla " + " ".join(f"{v*1e3:.1f}" for v in res["nabla"]) +
      ", PyTorch " + " ".join(f"{v*1e3:.1f}" for v in res["torch"]))
if which == "cnn":
    # Multiply-adds of one example's training step: each convolution's forward and kernel gradient,
    # the second's input gradient (the first's input is data), the dense layer's three products.
    c1, c2, d = 16 * 25 * 28 * 28, 32 * 400 * 14 * 14, 10 * 32 * 7 * 7
    flop = 2 * B * (2 * c1 + 3 * c2 + 3 * d)
    peak = float(os.environ.get("FMA_PEAK", "116.6"))  # GFLOP/s, tests/bench/fma_peak.cpp
    print(f"  {flop / 1e9:.2f} GFLOP a step: nabla {flop / med['nabla'] / 1e9:.0f} GFLOP/s ({flop / med['nabla'] / 1e9 / peak * 100:.0f}% "
          f"of the FMA peak {peak:g} GFLOP/s, FMA_PEAK=...), PyTorch {flop / med['torch'] / 1e9:.0f} GFLOP/s "
          f"({flop / med['torch'] / 1e9 / peak * 100:.0f}%)")
