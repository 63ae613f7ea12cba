#!/usr/bin/env bash
# Tests of `nabla explain`:
#   - golden texts of the lecture network's worked example (samples/hinton.nn, row 0 of its data
#     file, params from seed 0): plain text, ASCII, Markdown, LaTeX, and a choice of names;
#   - the LaTeX compiles with pdflatex, the standalone document and a fragment \input into one
#     (skipped, with a message, when pdflatex is not installed: .ci/install installs it);
#   - the errors: an unknown name (did you mean), --row beyond the data, --row without data, a
#     program without a loss; never a crash;
#   - every sample and every golden program with a loss explained with numbers: nabla checks each
#     param's explained gradient against the compiled one itself and exits 2 on a mismatch.
#
#   bash tests/explain/run.sh PATH/TO/nabla [--update]
set -u
if [[ $# -lt 1 ]]; then
  echo "usage: $0 PATH/TO/nabla [--update]" >&2
  exit 2
fi
NABLA=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
UPDATE=0
[[ "${2:-}" == --update ]] && UPDATE=1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/nabla-explain.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
export LC_ALL=C
passed=0
failed=0
fail() {
  failed=$((failed + 1))
  echo "FAIL $1"
  shift
  [[ $# -gt 0 ]] && printf '  %s\n' "$@"
}

# run DIR ARGS...: nabla in DIR; $status, $TMP/out, $TMP/err
run() {
  local dir=$1
  shift
  (cd "$dir" && timeout 120 "$NABLA" "$@" >"$TMP/out" 2>"$TMP/err")
  status=$?
}

# golden NAME EXPECTED DIR ARGS...: exit 0, nothing on stderr, stdout equal to EXPECTED
golden() {
  local name=$1 expected=$HERE/$2 dir=$3
  shift 3
  run "$dir" "$@"
  if [[ $status -ne 0 || -s "$TMP/err" ]]; then
    fail "$name" "nabla $* exited $status; stderr:"
    sed 's/^/  | /' "$TMP/err" | head -n 20
    return
  fi
  if ((UPDATE)); then
    cmp -s "$TMP/out" "$expected" || { cp "$TMP/out" "$expected"; echo "updated ${expected#"$ROOT"/}"; }
    passed=$((passed + 1))
    return
  fi
  if cmp -s "$TMP/out" "$expected"; then
    passed=$((passed + 1))
  else
    fail "$name" "output differs from ${expected#"$ROOT"/} (--- expected, +++ actual):"
    diff -u --label expected --label actual "$expected" "$TMP/out" | head -n 60 | sed 's/^/  /'
  fi
}

# error NAME EXPECTED-STDERR DIR ARGS...: exit 1, nothing on stdout, stderr equal to the text
error() {
  local name=$1 want=$2 dir=$3
  shift 3
  run "$dir" "$@"
  if [[ $status -ne 1 ]]; then
    fail "$name" "nabla $* exited $status, expected 1; stderr:"
    sed 's/^/  | /' "$TMP/err" | head -n 10
  elif [[ -s "$TMP/out" ]]; then
    fail "$name" "nabla $* printed to stdout on an error"
  elif [[ "$(cat "$TMP/err")" != "$want" ]]; then
    fail "$name" "stderr was:" "$(cat "$TMP/err")" "expected:" "$want"
  else
    passed=$((passed + 1))
  fi
}

S=$ROOT/samples
golden "hinton row 0" hinton.row0.txt "$S" explain hinton.nn --row 0
golden "hinton row 0 ascii" hinton.row0.ascii.txt "$S" explain hinton.nn --row 0 --ascii
golden "hinton row 0 markdown" hinton.row0.md "$S" explain hinton.nn --row 0 --markdown
golden "hinton row 0 latex" hinton.row0.tex "$S" explain hinton.nn --row 0 --latex
golden "hinton names" hinton.names.txt "$S" explain hinton.nn y_i W_j
golden "layer norm" layer_norm.seed1.txt "$HERE" explain layer_norm.nn --seed 1
golden "recurrence" rnn.txt "$HERE" explain rnn.nn
golden "names without a gradient of their own" rnn.names.txt "$HERE" explain rnn.nn 'hs.h[1]' E hs xs
golden "from logits" xor.p.txt "$S" explain xor.nn p

# ASCII means ASCII
run "$S" explain hinton.nn --row 0 --ascii
if LC_ALL=C grep -q '[^ -~]' "$TMP/out"; then
  fail "ascii" "non-ASCII bytes in explain --ascii:" "$(LC_ALL=C grep -n '[^ -~]' "$TMP/out" | head -3)"
else
  passed=$((passed + 1))
fi

# --- LaTeX compiles -----------------------------------------------------------------------------
if command -v pdflatex >/dev/null 2>&1; then
  mkdir -p "$TMP/tex"
  (cd "$S" && "$NABLA" explain hinton.nn --row 0 --latex >"$TMP/tex/standalone.tex")
  (cd "$S" && "$NABLA" explain hinton.nn --row 0 --latex=fragment >"$TMP/tex/fragment.tex")
  printf '%s\n' '\documentclass{article}' '\usepackage{amsmath}' '\begin{document}' \
    'A worked example:' '\input{fragment}' '\end{document}' >"$TMP/tex/wrapper.tex"
  # a recurrence (Σ over steps), a layer norm, attention: every notation the printer has
  (cd "$HERE" && "$NABLA" explain rnn.nn --latex >"$TMP/tex/rnn.tex")
  (cd "$HERE" && "$NABLA" explain layer_norm.nn --seed 1 --latex >"$TMP/tex/layer_norm.tex")
  (cd "$S" && "$NABLA" explain attention.nn --seed 0 --latex >"$TMP/tex/attention.tex")
  (cd "$S" && "$NABLA" explain fashion_cnn.nn --latex >"$TMP/tex/fashion_cnn.tex")
  for doc in standalone wrapper rnn layer_norm attention fashion_cnn; do
    if (cd "$TMP/tex" && timeout 120 pdflatex -interaction=nonstopmode -halt-on-error "$doc.tex" >"$doc.out" 2>&1) &&
       [[ -s "$TMP/tex/$doc.pdf" ]]; then
      passed=$((passed + 1))
    else
      fail "latex $doc" "pdflatex failed:"
      grep -A3 '^!' "$TMP/tex/$doc.out" | head -n 12 | sed 's/^/  | /'
    fi
  done
  if [[ -n "${NABLA_EXPLAIN_ARTIFACTS:-}" ]]; then # keep the PDF (CI uploads it)
    mkdir -p "$NABLA_EXPLAIN_ARTIFACTS" && cp "$TMP/tex/standalone.pdf" "$NABLA_EXPLAIN_ARTIFACTS/hinton-explain.pdf"
  fi
else
  echo "SKIP latex: pdflatex is not installed (apt-get install texlive-latex-base; .ci/install does)"
fi

# --- errors --------------------------------------------------------------------------------------
error "unknown name" "hinton.nn: error: no value or param named 'y_jj'; did you mean 'y_j'?" \
  "$S" explain hinton.nn y_jj
error "unknown name, no suggestion" "hinton.nn: error: no value or param named 'banana'" \
  "$S" explain hinton.nn banana
error "row beyond the data" "data/hinton.csv: error: --row 1000 is beyond the data's 3 rows (rows count from 0)" \
  "$S" explain hinton.nn --row 1000
error "row without data" "layer_norm.nn: error: '--row' needs --data (no data/layer_norm.csv beside the program)" \
  "$HERE" explain layer_norm.nn --row 0
error "row of a program without data" "rosenbrock.nn: error: --row 3: the program has no inputs and no targets, so it is one example, row 0" \
  "$S" explain rosenbrock.nn --row 3
error "no loss" "matmul.nn: error: 'explain' needs a loss, but the program declares none (add 'loss NAME = EXPR')" \
  "$ROOT/tests/golden/ok" explain matmul.nn
error "negative row" "nabla: error: --row: -1 is negative; expected an integer in 0..9223372036854775807
run 'nabla --help' or 'nabla COMMAND --help' for usage" "$S" explain hinton.nn --row -1

# --- every program with a loss, with numbers (checked against the compiled gradient by nabla) ----
for f in "$S"/*.nn "$ROOT"/tests/golden/ok/*.nn; do
  grep -qE '^loss([[:space:]]|$)' "$f" || continue
  name="numbers $(basename "$(dirname "$f")")/$(basename "$f")"
  run "$(dirname "$f")" explain "$(basename "$f")" --seed 1
  if [[ $status -ne 0 ]]; then
    fail "$name" "nabla explain $(basename "$f") --seed 1 exited $status:"
    sed 's/^/  | /' "$TMP/err" | head -n 10
  elif ! grep -q '^# The example: ' "$TMP/out"; then
    fail "$name" "no example line in the output"
  else
    passed=$((passed + 1))
  fi
done

echo "explain: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
