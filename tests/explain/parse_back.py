#!/usr/bin/env python3
"""Every printed gradient formula is a nabla program that computes the printed gradient.

    python3 tests/explain/parse_back.py PATH/TO/nabla FILE.nn...

For each program: `nabla grad --parseable` prints dE/dNAME = FORMULA (or a sum over consumers, one
term a line). This test turns the printout into nabla code (dE/dNAME becomes the value dE_dNAME,
dots as `_`, each consumer sum the sum of its terms), appends it to the program with an `output`
of every param's gradient, and runs that program with `predict` on the interpreter in f64, with
random params and one random example. Every param's printed gradient must equal what `eval`
computes for that example (the compiled gradient), to 1e-9 relative. A formula the language
rejects fails the test (nabla's own FILE:LINE:COL diagnostic is shown).

Programs whose printout uses forms that are notation only (a recurrence's Σ over steps) are
skipped with the reason printed.
"""
import json
import os
import random
import re
import subprocess
import sys
import tempfile

NOTATION_ONLY = ["sum_{", "(for t", "for t=", "t in {", "...",
                 # derivative forms the language has no function for (see GradPrinter.cpp)
                 "sign(", "step(", " >= ", "argmax_mask(", "argmin_mask(", "pad(", "maxunpool2d(",
                 "avgunpool2d(", "conv_transpose2d(", "correlate2d(", "gelu'("]


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kw)


def declarations(nabla, path):
    """[(kind, name, dims)] from `nabla check`."""
    r = run([nabla, "check", path])
    if r.returncode != 0:
        raise SystemExit(f"check failed for {path}:\n{r.stderr}")
    out = []
    for line in r.stdout.splitlines():
        m = re.match(r"^(input|target|param|value|loss|output)\s+(\S+)\s+(\[[^\]]*\]|scalar)", line)
        if m:
            dims = [] if m.group(3) == "scalar" else [int(x) for x in m.group(3)[1:-1].split(",") if x.strip()]
            out.append((m.group(1), m.group(2), dims))
    return out


def size(dims):
    n = 1
    for d in dims:
        n *= d
    return n


def nest(flat, dims):
    if not dims:
        return flat[0]
    if len(dims) == 1:
        return flat[: dims[0]]
    step = size(dims[1:])
    return [nest(flat[i * step:(i + 1) * step], dims[1:]) for i in range(dims[0])]


def flatten(v):
    if isinstance(v, list):
        out = []
        for x in v:
            out += flatten(x)
        return out
    return [v]


def ident(name):
    return name.replace(".", "_")


def formulas(text, loss):
    """[(name, nabla expression)] from grad --ascii output, or a reason to skip."""
    blocks = []
    cur = None
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"^d%s/d(\S+) = (.*)$" % re.escape(loss), line)
        if m:
            cur = [m.group(1), m.group(2), []]
            blocks.append(cur)
            continue
        if cur is None:
            return None, "unexpected line: " + line
        term = re.sub(r"\s+<- from .*$", "", line.strip())
        if term.startswith("+ "):
            term = term[2:]
        cur[2].append(term)
    out = []
    for name, rhs, terms in blocks:
        if re.search(r"sum over the \d+ consumers of", rhs):
            expr = " + ".join("(" + t + ")" for t in terms)
        else:
            if terms:
                return None, f"d{loss}/d{name}: continuation lines without a consumer sum"
            expr = rhs
        if "does not depend on it" in expr:
            continue
        for bad in NOTATION_ONLY:
            if bad in expr:
                return None, f"d{loss}/d{name} uses notation only ({bad!r}): {expr[:80]}"
        expr = re.sub(r"d%s/d([A-Za-z_][A-Za-z0-9_.]*(?:\[\d+\])?)" % re.escape(loss),
                      lambda m: "d%s_d%s" % (loss, ident(m.group(1))), expr)
        out.append((name, expr))
    return out, None


def check(nabla, path, seed, positive=False):
    rng = random.Random(seed)
    decls = declarations(nabla, path)
    loss = next((n for k, n, _ in decls if k == "loss"), None)
    if loss is None:
        return None, "no loss"
    params = [(n, d) for k, n, d in decls if k == "param"]
    if not params:
        return None, "no params"
    data = [(n, d) for k, n, d in decls if k in ("input", "target")]
    r = run([nabla, "grad", "--parseable", path])
    if r.returncode != 0:
        return False, "grad failed: " + r.stderr
    fs, why = formulas(r.stdout, loss)
    if fs is None:
        return None, why
    with tempfile.TemporaryDirectory() as tmp:
        # random params (away from 0, where abs and relu have kinks) and one random example
        pjson = {n: nest([(1 if positive else rng.choice([-1, 1])) * rng.uniform(0.2, 1.0) for _ in range(size(d))], d)
                 for n, d in params}
        ppath = os.path.join(tmp, "p.json")
        with open(ppath, "w") as f:
            json.dump(pjson, f)
        cols, row = [], []
        for n, d in data:
            k = size(d)
            cols += [f"{n}{i}" for i in range(k)] if d else [n]
            if n in ("t", "T", "target") or any(k2 == "target" and n2 == n for k2, n2, _ in decls):
                row += [rng.choice([0.0, 1.0]) if k == 1 else 0.0 for _ in range(k)]
                if k > 1:
                    row[-k + rng.randrange(k)] = 1.0  # a one-hot target
            else:
                row += [rng.uniform(0.1, 0.9) for _ in range(k)]
        dpath = os.path.join(tmp, "d.csv")
        with open(dpath, "w") as f:
            f.write(",".join(cols) + "\n" + ",".join(repr(x) for x in row) + "\n")
        extra = []
        if data:
            extra = ["--data", dpath]
        r = run([nabla, "eval", path, "--params", ppath, "--engine", "interp", "--dtype", "f64", "--json"] + extra)
        if r.returncode != 0:
            return False, "eval failed: " + r.stderr
        want = json.loads(r.stdout)["grads"]
        # the program with the printed formulas appended
        src = open(path).read()
        src = "\n".join(l for l in src.splitlines() if not re.match(r"^\s*output\b", l))
        # outputs are computed from inputs and params only: the targets become inputs (declared
        # in the same order, so the CSV columns still match)
        src = re.sub(r"(?m)^target(\s)", r"input \1", src)
        src += "\n# the printed gradient\n"
        pnames = {n for n, _ in params}
        outs = []
        for name, expr in fs:
            v = "d%s_d%s" % (loss, ident(name))
            if v in [o for o in outs]:
                continue
            src += f"{v} = {expr}\n"
            if name in pnames:
                outs.append(v)
        src += "output " + ", ".join(outs) + "\n"
        gpath = os.path.join(tmp, os.path.basename(path))
        with open(gpath, "w") as f:
            f.write(src)
        r = run([nabla, "check", gpath])
        if r.returncode != 0:
            return False, "the printed formulas do not parse back:\n" + r.stderr + "\n" + src
        shapes = {n: d for k, n, d in declarations(nabla, gpath) if k == "value"}
        r = run([nabla, "predict", gpath, "--params", ppath, "--engine", "interp", "--dtype", "f64"] + extra)
        if r.returncode != 0:
            return False, "predict failed: " + r.stderr
        got = [float(x) for x in r.stdout.splitlines()[0].split(",")]
        at = 0
        for v in outs:
            n = size(shapes[v])
            mine, at = got[at:at + n], at + n
            name = next(nm for nm, _ in params if "d%s_d%s" % (loss, ident(nm)) == v)
            theirs = flatten(want[name])
            if len(mine) == 1 and len(theirs) > 1:
                mine = mine * len(theirs)  # a constant printed once stands for every index
            if len(mine) != len(theirs):
                return False, f"d{loss}/d{name}: {len(mine)} numbers printed, {len(theirs)} in the gradient"
            if any(b is None for b in theirs):
                if not positive:  # x^0.5 and log of a negative param: positive params instead
                    return check(nabla, path, seed, positive=True)
                return None, f"d{loss}/d{name} is not finite at the random point"
            for a, b in zip(mine, theirs):
                if abs(a - b) > 1e-9 * max(1.0, abs(b)):
                    return False, f"d{loss}/d{name}: the printed formula gives {a}, the gradient is {b}\n{src}"
    return True, f"{len(outs)} param gradients, {len(fs)} formulas"


def main():
    nabla = sys.argv[1]
    failed = 0
    for i, path in enumerate(sys.argv[2:]):
        ok, msg = check(nabla, path, 1000 + i)
        if ok is None:
            print(f"SKIP {path}: {msg}")
        elif ok:
            print(f"ok   {path}: {msg}")
        else:
            failed += 1
            print(f"FAIL {path}: {msg}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
