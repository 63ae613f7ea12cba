"""The tally of the graph tests (test_graph.py, test_explain_html.py): `check` records one
assertion, `finish` prints the count and exits 1 if any failed."""
import sys

_checks = 0
_failures = []


def check(cond, what):
    global _checks
    _checks += 1
    if not cond:
        _failures.append(what)
        print("FAIL:", what, file=sys.stderr)


def finish():
    print(f"{_checks - len(_failures)} passed, {len(_failures)} failed")
    sys.exit(1 if _failures else 0)
