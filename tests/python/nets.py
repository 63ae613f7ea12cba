# Reference implementations in PyTorch of the programs the tests compile, and a generator of random
# programs that writes each as .nn source and as the same function in PyTorch.
import random

import numpy as np
import torch

HINTON = """
input  x[4]
target t[2]
param W_i[3, 4] ~ normal(0, 0.5)
param b_i[3]
param W_j[2, 3] ~ normal(0, 0.5)
param b_j[2]
y_i = logistic(W_i @ x + b_i)
z_j = W_j @ y_i + b_j
y_j = logistic(z_j)
output y_j
loss E = 0.5 * sum((y_j - t)^2)
"""


def hinton_torch(p, x, t):
    y_i = torch.sigmoid(x @ p["W_i"].T + p["b_i"])
    y_j = torch.sigmoid(y_i @ p["W_j"].T + p["b_j"])
    return {"y_j": y_j}, (0.5 * ((y_j - t) ** 2).sum(1)).mean()


def digits_torch(p, x, t):
    h = torch.tanh((x / 16) @ p["h.W"].T + p["h.b"])
    z = h @ p["y.W"].T + p["y.b"]
    return {"y": torch.softmax(z, 1)}, (-(t * torch.log_softmax(z, 1)).sum(1)).mean()


ACTS = {
    "tanh": torch.tanh,
    "logistic": torch.sigmoid,
    "softplus": torch.nn.functional.softplus,
    "relu": torch.relu,
    "linear": lambda v: v,
}


def random_program(seed):
    """(source, torch function p, x, t -> (outputs, loss), input size, target size, class targets)."""
    rng = random.Random(seed)
    n_in, n_out = rng.randint(1, 5), rng.randint(1, 4)
    lines = ["input x[%d]" % n_in, "target t[%d]" % n_out]
    body, steps = [], []
    prev, size = "x", n_in
    for layer in range(rng.randint(1, 3)):
        width = rng.randint(1, 6)
        act = rng.choice([a for a in ACTS if a != "linear"])
        w, b, h = "W%d" % layer, "b%d" % layer, "h%d" % layer
        lines += ["param %s[%d, %d] ~ normal(0, 0.7)" % (w, width, size), "param %s[%d] ~ normal(0, 0.3)" % (b, width)]
        mix = rng.random() < 0.4
        if mix:  # an elementwise product with a second branch
            body.append("%s = %s(%s @ %s + %s) * tanh(%s @ %s)" % (h, act, w, prev, b, w, prev))
        else:
            body.append("%s = %s(%s @ %s + %s)" % (h, act, w, prev, b))
        steps.append((h, act, w, b, prev, mix))
        prev, size = h, width
    lines += ["param Wo[%d, %d] ~ normal(0, 0.7)" % (n_out, size), "param bo[%d]" % n_out]
    classes = rng.random() < 0.5
    if classes:
        body += ["y = softmax(Wo @ %s + bo)" % prev, "output y", "loss E = cross_entropy(y, t)"]
    else:
        body += ["y = Wo @ %s + bo" % prev, "output y", "loss E = 0.5 * sum((y - t)^2)"]
    source = "\n".join(lines + body) + "\n"

    def fn(p, x, t):
        v = {"x": x}
        for h, act, w, b, src, mix in steps:
            a = v[src] @ p[w].T
            val = ACTS[act](a + p[b])
            if mix:
                val = val * torch.tanh(a)
            v[h] = val
        z = v[prev] @ p["Wo"].T + p["bo"]
        if classes:
            return {"y": torch.softmax(z, 1)}, (-(t * torch.log_softmax(z, 1)).sum(1)).mean()
        return {"y": z}, (0.5 * ((z - t) ** 2).sum(1)).mean()

    return source, fn, n_in, n_out, classes


def batch(n_in, n_out, n, seed, classes=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_in))
    if classes:
        t = np.eye(n_out)[rng.integers(0, n_out, size=n)]
    else:
        t = rng.normal(size=(n, n_out))
    return x, t


def torch_reference(fn, params, x, t):
    """Outputs, loss and gradients from PyTorch autograd, in f64."""
    p = {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True) for k, v in params.items()}
    out, loss = fn(p, torch.tensor(np.asarray(x, dtype=np.float64)), torch.tensor(np.asarray(t, dtype=np.float64)))
    loss.backward()
    return ({k: v.detach().numpy() for k, v in out.items()}, loss.item(),
            {k: v.grad.numpy() for k, v in p.items()})
