# usage: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 tests/bench/vs_pytorch.py cnn|gru
# (after a build with the Python module: build/python)
# One training step (loss and full gradient, no update), batch 64, f32, 1 thread: nabla (the JIT,
# through the Python module) against PyTorch, interleaved in one run; CPU time medians.
import sys, time, numpy as np, torch, torch.nn as nn, torch.nn.functional as F
import os
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "build", "python"))
import nabla
torch.set_num_threads(1); torch.manual_seed(0)
which = sys.argv[1]; B = 64
rng = np.random.default_rng(0)
if which == "cnn":
    m = nabla.compile(os.path.join(ROOT, "samples", "fashion_cnn.nn"))
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
