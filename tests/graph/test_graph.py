#!/usr/bin/python3
"""`nabla graph`: the dot text (every value, param, input and target present by name; the gradient's
edges one colour per consumer, the consumer's forward node in that colour), the SVG laid out by
Graphviz's dot when it is installed (well-formed XML, names escaped), and the errors.

    test_graph.py NABLA SOURCE_DIR OUT_DIR"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish  # noqa: E402

NABLA, SRC, OUT = sys.argv[1:4]
os.makedirs(OUT, exist_ok=True)


def run(*args, env=None):
    return subprocess.run([NABLA, *args], capture_output=True, text=True, env=env, timeout=300)


def names_of(program):
    """Every input, target, param and value `nabla check` lists (a recurrence's steps as a family)."""
    out = run("check", program).stdout
    names = []
    for line in out.splitlines():
        m = re.match(r"(input|target|param|value|loss)\s+(\S+)", line)
        if m:
            names.append(m.group(2))
    return names


def nodes(dot):
    """id -> attribute text of every node statement."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^\s*(\w+) \[(.*)\];$", dot, re.M)
            if m.group(1) not in ("node", "edge", "graph")}


def attr(text, key):
    m = re.search(r"(?<![a-z])" + key + r'="((?:[^"\\]|\\.)*)"', text)
    return m.group(1) if m else None


def term_edges(dot):
    """(value's adjoint, consumer's adjoint, colour, consumer) of every gradient edge."""
    edges = []
    for m in re.finditer(r"^\s*(\w+) -> (\w+) \[dir=back, (.*)\];$", dot, re.M):
        tip = attr(m.group(3), "tooltip")
        consumer = re.match(r"from (.+?)(, line \d+)?: ", tip).group(1)
        edges.append((m.group(1), m.group(2), attr(m.group(3), "color"), consumer))
    return edges


hinton = os.path.join(SRC, "samples/hinton.nn")
skip = os.path.join(SRC, "tests/conformance/cases/shared_skip/program.nn")

# 1. The forward graph as dot text on standard output: every name present, as a node's first line.
for program in (hinton, skip, os.path.join(SRC, "samples/digits.nn"), os.path.join(SRC, "samples/rosenbrock.nn")):
    r = run("graph", program)
    check(r.returncode == 0 and r.stdout.startswith("digraph"), f"graph {program}: dot text ({r.stderr})")
    labels = [attr(a, "label") or "" for a in nodes(r.stdout).values()]
    firsts = {l.split("\\n")[0] for l in labels}
    for n in names_of(program):
        check(n in firsts, f"graph {program}: {n} is a node")
    # every edge joins two declared nodes
    declared = set(nodes(r.stdout))
    for a, b in re.findall(r"^\s*(\w+) -> (\w+)", r.stdout, re.M):
        check(a in declared and b in declared, f"graph {program}: edge {a} -> {b} between declared nodes")

# hinton at op level: the lecture's 17 nodes, with the ops between the named values
r = run("graph", hinton)
labels = sorted(attr(a, "label") for a in nodes(r.stdout).values())
check("@\\n[3]" in labels and "y_i\\nlogistic  [3]" in labels and "z_j\\n+  [2]" in labels,
      f"hinton's ops and named values drawn: {labels}")
check(len(labels) == 17, f"hinton has 17 drawn nodes (16 ops and the literal 0.5), got {len(labels)}")

# 2. The gradient beside it: one edge per consumer term, coloured by consumer.
r = run("graph", "--grad", skip)
check(r.returncode == 0, f"graph --grad shared_skip: {r.stderr}")
dot = r.stdout
check("subgraph cluster_forward" in dot and "subgraph cluster_gradient" in dot, "two clusters")
edges = term_edges(dot)
colour_of = {}
for _, _, colour, consumer in edges:
    check(colour_of.setdefault(consumer, colour) == colour, f"consumer {consumer} has one colour")
check(len(set(colour_of.values())) == len(colour_of), f"one colour per consumer: {colour_of}")
check(set(colour_of) == {"E", "k", "h"}, f"the consumers of shared_skip are E, k, h: {sorted(colour_of)}")
g = nodes(dot)
adjoint = {attr(a, "label").split("\\n")[0]: i for i, a in g.items() if i.startswith("g")}
# dE/dW = Σ of three terms: weight decay (from E), k's product and h's product
into_w = [(c, cons) for (v, _, c, cons) in edges if v == adjoint["dE/dW"]]
check(sorted(cons for _, cons in into_w) == ["E", "h", "k"], f"dE/dW has a term from E, h and k: {into_w}")
into_h = sorted(cons for (v, _, _, cons) in edges if v == adjoint["dE/dh"])
check(into_h == ["E", "k"], f"dE/dh has a term from E and k: {into_h}")
# each term edge goes from its consumer's adjoint (the loss's is dE/dE = 1)
for v, frm, _, cons in edges:
    want = "gloss" if cons == "E" else adjoint["dE/d" + cons]
    check(frm == want, f"the term from {cons} leaves d{cons}'s adjoint ({frm} != {want})")
# the consumer's forward node is drawn in its colour
fwd = {attr(a, "label").split("\\n")[0]: a for i, a in g.items() if i.startswith("n")}
for cons, colour in colour_of.items():
    check(attr(fwd[cons], "color") == colour, f"forward node {cons} in its terms' colour {colour}")

# the lecture network: dE/dy_i's one term is W_jᵀ dE/dz_j, from z_j
r = run("graph", "--grad", hinton)
e = [x for x in term_edges(r.stdout)]
labels = {attr(m.group(0), "label") for m in re.finditer(r"^\s*g\d+ -> .*$", r.stdout, re.M)}
check("W_jᵀ dE/dz_j" in labels, f"hinton's dE/dy_i term W_jᵀ dE/dz_j: {labels}")

# a recurrence (unrolled, 3 steps): op level, every step value a node
r = run("graph", "--grad", os.path.join(SRC, "tests/golden/ok/rnn_steps.nn"))
check(r.returncode == 0 and "hs.h[2]" in r.stdout and "dE/dhs.W_hh" in r.stdout, "rnn_steps: steps and gradient")
# a long recurrence: the named values with the steps rolled up (one node per family, t-1 edges)
gru = os.path.join(SRC, "samples/fashion_gru.nn")
r = run("graph", gru)
gru_labels = [attr(a, "label") for a in nodes(r.stdout).values()]
check(r.returncode == 0 and any(l.startswith("hs.h[t]") for l in gru_labels) and 'label="t-1"' in r.stdout
      and not any("hs.h[5]" in l for l in gru_labels), "fashion_gru rolled up: hs.h[t] with t-1 edges")
check(len(nodes(r.stdout)) < 40, f"fashion_gru drawn in under 40 nodes, got {len(nodes(r.stdout))}")
r2 = run("graph", "--detail", "ops", os.path.join(SRC, "tests/golden/ok/rnn_steps.nn"))
r3 = run("graph", "--detail", "values", os.path.join(SRC, "tests/golden/ok/rnn_steps.nn"))
check(len(nodes(r2.stdout)) > len(nodes(r3.stdout)), "--detail ops draws more nodes than --detail values")

# a long chain of statements (tests/limits has 20,000): dot text in seconds, in values form
with tempfile.TemporaryDirectory() as d:
    chain = os.path.join(d, "chain.nn")
    with open(chain, "w") as f:
        f.write("input x[3]\nparam w[3] = 0.5\nv0 = x * w\n")
        f.write("".join(f"v{k} = tanh(v{k - 1})\n" for k in range(1, 5000)))
        f.write("loss E = sum(v4999)\n")
    t0 = time.time()
    r = run("graph", "--grad", chain)
    took = time.time() - t0
    check(r.returncode == 0 and r.stdout.count("dir=back") == 5001 and took < 60,
          f"5,000 chained statements: {r.stdout.count('dir=back')} term edges in {took:.1f} s ({r.stderr[:200]})")

# 3. Errors: exit 1 with a message, nothing written.
bad = os.path.join(OUT, "graph.jpg")
r = run("graph", hinton, "-o", bad)
check(r.returncode == 1 and ".svg" in r.stderr and not os.path.exists(bad), f"-o F.jpg is an error: {r.stderr}")
r = run("graph", "--grad", os.path.join(SRC, "tests/golden/ok/empty_program.nn"))
check(r.returncode == 1 and "loss" in r.stderr, f"--grad without a loss: {r.stderr}")
r = run("graph", hinton, "-o", os.path.join(OUT, "no/such/dir/g.dot"))
check(r.returncode == 1 and "cannot write" in r.stderr, f"unwritable -o: {r.stderr}")
r = run("graph", os.path.join(SRC, "tests/golden/fail/fail_bad_axis.nn"))
check(r.returncode == 1 and re.search(r":\d+:\d+: error:", r.stderr), f"a program's error: {r.stderr}")
# every program of the failing goldens: its diagnostic, never a crash or an internal error
for f in sorted(os.listdir(os.path.join(SRC, "tests/golden/fail"))):
    if f.endswith(".nn"):
        r = run("graph", "--grad", os.path.join(SRC, "tests/golden/fail", f))
        check(r.returncode == 1 and ": error:" in r.stderr and "internal error" not in r.stderr,
              f"graph --grad {f}: exit {r.returncode}, {r.stderr[:200]}")
# without dot on PATH: .svg is a clear error, .dot needs nothing
nodot = dict(os.environ, PATH="/nonexistent")
svg_missing = os.path.join(OUT, "nodot.svg")
r = run("graph", hinton, "-o", svg_missing, env=nodot)
check(r.returncode == 1 and "graphviz" in r.stderr and not os.path.exists(svg_missing),
      f"no dot: .svg is an error naming the package: {r.stderr}")
dot_file = os.path.join(OUT, "hinton.dot")
r = run("graph", "--grad", hinton, "-o", dot_file, env=nodot)
check(r.returncode == 0 and open(dot_file).read().startswith("digraph"), f"no dot: .dot is written: {r.stderr}")

# dot that fails, and dot that never finishes (killed after NABLA_DOT_TIMEOUT seconds): errors
with tempfile.TemporaryDirectory() as fake:
    with open(os.path.join(fake, "dot"), "w") as f:
        f.write('#!/bin/sh\ncat >/dev/null\nif [ "$NABLA_FAKE_DOT" = hang ]; then exec sleep 600; fi\n'
                'echo "Error: <stdin>: syntax error in line 1" >&2\nexit 3\n')
    os.chmod(os.path.join(fake, "dot"), 0o755)
    env = dict(os.environ, PATH=fake + ":/usr/bin:/bin")
    out = os.path.join(OUT, "fake.svg")
    r = run("graph", hinton, "-o", out, env=env)
    check(r.returncode == 1 and "exit status 3" in r.stderr and "syntax error" in r.stderr and not os.path.exists(out),
          f"dot failing: its status and message: {r.stderr}")
    t0 = time.time()
    r = run("graph", hinton, "-o", out, env=dict(env, NABLA_FAKE_DOT="hang", NABLA_DOT_TIMEOUT="2"))
    check(r.returncode == 1 and "did not finish" in r.stderr and time.time() - t0 < 30 and not os.path.exists(out),
          f"dot that hangs is killed: {r.stderr}")

# 4. SVG, where Graphviz is installed.
if not shutil.which("dot"):
    print("NOTE: no Graphviz dot on PATH (Debian package graphviz): the SVG checks are skipped", file=sys.stderr)
else:
    for program in (hinton, skip, gru, os.path.join(SRC, "tests/golden/ok/rnn_steps.nn")):
        svg = os.path.join(OUT, os.path.basename(os.path.dirname(program)) + "_" +
                           os.path.basename(program).replace(".nn", ".svg"))
        t0 = time.time()
        r = run("graph", "--grad", program, "-o", svg)
        took = time.time() - t0
        check(r.returncode == 0 and r.stdout.strip() == "wrote " + svg, f"graph --grad -o {svg}: {r.stderr}")
        check(took < 60, f"{program} laid out in {took:.1f} s")
        try:
            root = ET.parse(svg).getroot()
        except ET.ParseError as e:
            check(False, f"{svg} is well-formed XML: {e}")
            continue
        texts = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
        for n in names_of(program):
            if re.search(r"\[\d+\.\.\d+\]$", n):  # a family hs.h[0..27]: drawn as hs.h[t] (or each step)
                n = n[:n.rindex("[")]
            check(n in texts, f"{svg}: {n} drawn")
        ids = {el.get("id") for el in root.iter() if el.get("id")}
        check(any(i.startswith("n") for i in ids) and "gloss" in ids, f"{svg}: node ids kept for the page")
    # PNG and PDF through dot too
    for ext, magic in ((".png", b"\x89PNG\r\n\x1a\n"), (".pdf", b"%PDF")):
        f = os.path.join(OUT, "hinton_grad" + ext)
        r = run("graph", "--grad", hinton, "-o", f)
        head = open(f, "rb").read(8) if os.path.exists(f) else b""
        check(r.returncode == 0 and head.startswith(magic), f"-o {f}: {r.stderr} {head!r}")
    # names and titles that XML and dot must escape: a file named a&b<"c">.nn
    with tempfile.TemporaryDirectory() as d:
        odd = os.path.join(d, 'a&b<"c">.nn')
        shutil.copy(hinton, odd)
        svg = os.path.join(d, "odd.svg")
        r = run("graph", "--grad", odd, "-o", svg)
        check(r.returncode == 0, f"a file name with & < \" >: {r.stderr}")
        if r.returncode == 0:
            root = ET.parse(svg).getroot()
            texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
            check(odd in texts, f"the title {odd} escaped and read back: {texts[:3]}")
            check("W_jᵀ dE/dz_j" in texts, "a Unicode term label read back")

finish()
