#!/usr/bin/python3
"""`nabla explain --html`: the page opened in a real browser (headless Chromium), a value's node
clicked with the mouse, and the DOM checked for that value's gradient terms, their consumers and
numbers as `nabla explain` prints them; a screenshot of each page is kept in OUT_DIR.

    test_explain_html.py NABLA SOURCE_DIR OUT_DIR

Setup: Graphviz's dot and Chromium are installed with apt-get when missing (as root); where that
cannot be done the test is skipped (exit 77) with a message saying what is missing."""
import json
import os
import re
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import check, finish  # noqa: E402

NABLA, SRC, OUT = sys.argv[1:4]
HERE = os.path.dirname(os.path.abspath(__file__))
os.makedirs(OUT, exist_ok=True)


def ensure(tool, package):
    if shutil.which(tool):
        return True
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {package} (for {tool})", file=sys.stderr)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
                           env=env, capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
                           env=env, capture_output=True)
    return shutil.which(tool) is not None


if not ensure("dot", "graphviz"):
    print("SKIP: explain_html needs Graphviz's dot (Debian package graphviz), which cannot be installed here")
    sys.exit(77)
if not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")) and not ensure("chromium", "chromium"):
    print("SKIP: explain_html needs Chromium (Debian package chromium), which cannot be installed here")
    sys.exit(77)


def nabla(*args):
    r = subprocess.run([NABLA, *args], capture_output=True, text=True, timeout=300)
    return r


def page_data(html):
    m = re.search(r'<script type="application/json" id="nabla-data">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def browse(page, steps, shot):
    script = page + ".steps.json"
    with open(script, "w") as f:
        json.dump(steps, f)
    r = subprocess.run([sys.executable, os.path.join(HERE, "browser.py"), page, script, shot],
                       capture_output=True, text=True, timeout=180)
    if r.returncode == 77:
        print(r.stderr.strip())
        print("SKIP: Chromium is installed but does not start here")
        sys.exit(77)
    if r.returncode != 0:
        check(False, f"browser on {page}: {r.stderr.strip()}")
        return None
    return json.loads(r.stdout)


def self_contained(html, page):
    """No request can leave the file: no external script, style, font or image, nothing fetched."""
    check("<script src" not in html and "<link" not in html and "@import" not in html and "url(" not in html,
          f"{page}: no external script, style sheet or font")
    # every http(s) address is an XML namespace of the inline SVG, never a resource
    for m in re.finditer(r'([\w:-]+)="(https?://[^"]*)"', html):
        check(m.group(1) in ("xmlns", "xmlns:xlink"), f"{page}: {m.group(0)} is only a namespace")
    check("default-src 'none'" in html, f"{page}: a Content-Security-Policy that allows nothing from outside")


DETAIL = "document.getElementById('detail').innerText"

# 1. The lecture network with the example of row 0: click y_i.
hinton = os.path.join(SRC, "samples/hinton.nn")
page = os.path.join(OUT, "explain_hinton.html")
r = nabla("explain", hinton, "--row", "0", "--html", page)
check(r.returncode == 0 and r.stdout.strip() == "wrote " + page, f"explain --html: {r.stderr}")
html = open(page, encoding="utf-8").read()
self_contained(html, page)
data = page_data(html)
y_i = next(e for e in data["entries"] if e["name"] == "y_i")
check(y_i["node"] is not None, "y_i is drawn as a node")
# what the text of `nabla explain` says about y_i: its term, its consumer and line, its numbers
text = nabla("explain", hinton, "y_i", "--row", "0").stdout
m = re.search(r"dE/dy_i = (.+?)\s+← from (\w+), line (\d+)\n\s+= (\[.*\])", text)
check(m is not None, f"explain's text for y_i: {text[:300]}")
term, consumer, line, numbers = m.groups() if m else ("W_jᵀ dE/dz_j", "z_j", "13", "[")
check(term == "W_jᵀ dE/dz_j" and consumer == "z_j" and line == "13", f"the lecture's term: {m.groups() if m else None}")
before = browse(page, [{"eval": DETAIL, "as": "detail"}], os.path.join(OUT, "unused.png"))
res = browse(page, [
    {"click": "#" + y_i["node"]},
    {"eval": DETAIL, "as": "detail"},
    {"eval": "document.querySelector('#" + y_i["node"] + "').classList.contains('selected')", "as": "selected"},
    {"eval": "location.hash", "as": "hash"},
    {"screenshot": True}], os.path.join(OUT, "explain_html_hinton.png"))
if res:
    d = res["values"]["detail"]
    check(term not in (before or {"values": {"detail": ""}})["values"]["detail"], "before the click the term is not shown")
    check(d.startswith("y_i"), f"the click shows y_i: {d[:80]}")
    check(f"dE/dy_i = {term}" in d, f"the gradient dE/dy_i = {term} in the DOM: {d[:300]}")
    check(f"← from {consumer}, line {line}" in d, f"its consumer z_j and line 13 in the DOM")
    check(numbers in d, f"its numbers {numbers} in the DOM")
    check("dE/dy_i[1] = W_j[0,1]·dE/dz_j[0] + W_j[1,1]·dE/dz_j[1]" in d, "the per-element form in the DOM")
    check(res["values"]["selected"] is True and res["values"]["hash"] == "#y_i", "the node is marked, the address says #y_i")
    check(all(u.startswith("file:") or u.startswith("data:") for u in res["requests"]),
          f"nothing requested beyond the file: {res['requests']}")
    shot = os.path.join(OUT, "explain_html_hinton.png")
    png = open(shot, "rb").read() if os.path.exists(shot) else b""
    check(png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000, f"screenshot {shot} ({len(png)} bytes)")

# the keyboard reaches a node too: focus W_j's, press Enter
w_j = next(e for e in data["entries"] if e["name"] == "W_j")
res = browse(page, [{"eval": "document.getElementById('%s').focus(), document.activeElement.id" % w_j["node"], "as": "focused"},
                    {"key": "Enter"}, {"eval": DETAIL, "as": "detail"}], os.path.join(OUT, "unused.png"))
if res:
    check(res["values"]["focused"] == w_j["node"], f"W_j's node takes the focus: {res['values']['focused']}")
    check(res["values"]["detail"].startswith("W_j") and "dE/dz_j ⊗ y_i" in res["values"]["detail"],
          f"Enter on W_j's node shows dE/dW_j = dE/dz_j ⊗ y_i: {res['values']['detail'][:120]}")

# 2. A value with two consumers: each term in its consumer's colour, the consumer's node outlined in it.
skip = os.path.join(SRC, "tests/conformance/cases/shared_skip/program.nn")
page = os.path.join(OUT, "explain_shared_skip.html")
r = nabla("explain", skip, "--seed", "1", "--html", page)
check(r.returncode == 0, f"explain --html shared_skip: {r.stderr}")
data = page_data(open(page, encoding="utf-8").read())
h = next(e for e in data["entries"] if e["name"] == "h")
check(sorted(t["consumer"] for t in h["terms"]) == ["E", "k"], f"h's consumers E and k: {h['terms']}")
colour_check = """(() => Array.from(document.querySelectorAll('#detail tr.term')).map(tr => {
  const sw = getComputedStyle(tr.querySelector('.swatch')).backgroundColor;
  const from = tr.querySelector('.from').textContent;
  return [from, sw];
}))()"""
consumers = {c["name"]: c for c in data["consumers"]}
strokes = """(() => { const o = {}; for (const c of %s) { const g = document.getElementById(c.node);
  o[c.name] = g ? Array.from(g.querySelectorAll('polygon, path, ellipse')).map(s => s.getAttribute('stroke')) : null; }
  return o; })()""" % json.dumps([consumers[t["consumer"]] for t in h["terms"]])
res = browse(page, [{"click": "#" + h["node"]}, {"eval": DETAIL, "as": "detail"},
                    {"eval": colour_check, "as": "rows"}, {"eval": strokes, "as": "strokes"},
                    {"screenshot": True}], os.path.join(OUT, "explain_html_shared_skip.png"))
if res:
    d = res["values"]["detail"]
    check("the sum over its 2 consumers" in d, f"h's two consumers: {d[:200]}")
    for t in h["terms"]:
        check(t["formula"] in d, f"term {t['formula']} in the DOM")
    rows = res["values"]["rows"]
    check(len(rows) == 2, f"two term rows: {rows}")

    def rgb(hexcolour):
        return "rgb({}, {}, {})".format(*(int(hexcolour[i:i + 2], 16) for i in (1, 3, 5)))
    for (frm, sw), t in zip(rows, h["terms"]):
        want = consumers[t["consumer"]]["colour"]
        check(frm.startswith("← from " + t["consumer"]) and sw == rgb(want), f"{frm}: swatch {sw} is {want}")
        check(all(s == want for s in res["values"]["strokes"][t["consumer"]] or [None]),
              f"node of {t['consumer']} outlined in {want}: {res['values']['strokes'][t['consumer']]}")
    check(len({consumers[t['consumer']]['colour'] for t in h["terms"]}) == 2, "two consumers, two colours")

# 3. The index below the graph reaches every entry, a recurrence's steps included.
page = os.path.join(OUT, "explain_rnn_steps.html")
r = nabla("explain", os.path.join(SRC, "tests/golden/ok/rnn_steps.nn"), "--html", page)
check(r.returncode == 0, f"explain --html rnn_steps: {r.stderr}")
data = page_data(open(page, encoding="utf-8").read())
last = len(data["entries"]) - 1
res = browse(page, [{"click": "#ix%d" % last}, {"eval": DETAIL, "as": "detail"},
                    {"eval": "document.querySelectorAll('#index button').length", "as": "buttons"}],
             os.path.join(OUT, "explain_html_rnn_steps.png"))
if res:
    check(res["values"]["buttons"] == len(data["entries"]), "one index button per entry")
    check(res["values"]["detail"].startswith(data["entries"][last]["name"]), "the index shows its entry")

# 4. A file name that HTML, JSON in a <script> and dot must all escape: x</script>&"q".nn (through a
# directory named x<), shown as it is.
import tempfile
with tempfile.TemporaryDirectory() as d:
    os.mkdir(os.path.join(d, "x<"))
    odd = os.path.join(d, "x<", 'script>&"q".nn')
    shutil.copy(hinton, odd)
    page = os.path.join(OUT, "explain_odd_name.html")
    r = nabla("explain", odd, "--html", page)
    check(r.returncode == 0, f"explain --html {odd}: {r.stderr}")
    html = open(page, encoding="utf-8").read()
    check(html.count("</script>") == 2, "no </script> but the page's own two")
    data = page_data(html)
    check(data["file"] == odd, f"the name read back from the data: {data['file']}")
    y = next(e for e in data["entries"] if e["name"] == "y_i")
    res = browse(page, [{"click": "#" + y["node"]}, {"eval": DETAIL, "as": "detail"},
                        {"eval": "document.querySelector('h1').textContent", "as": "h1"},
                        {"eval": "document.querySelector('#graph svg > g > text').textContent", "as": "svgtitle"}],
                 os.path.join(OUT, "unused.png"))
    if res:
        check(res["values"]["h1"] == "nabla explain " + odd, f"the title shown as it is: {res['values']['h1']}")
        check(res["values"]["svgtitle"] == odd, f"the picture's title as it is: {res['values']['svgtitle']}")
        check("W_jᵀ dE/dz_j" in res["values"]["detail"], "and the page still answers a click")

# 5. Errors: --html with a text format, and an unwritable page.
r = nabla("explain", hinton, "--html", os.path.join(OUT, "x.html"), "--markdown")
check(r.returncode == 1 and "--markdown" in r.stderr, f"--html with --markdown: {r.stderr}")
r = nabla("explain", hinton, "--html", os.path.join(OUT, "no/such/dir/x.html"))
check(r.returncode == 1 and "cannot write" in r.stderr, f"unwritable --html: {r.stderr}")

finish()
