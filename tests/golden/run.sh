#!/usr/bin/env bash
# Golden tests of the nabla front end and printers.
#
#   bash tests/golden/run.sh PATH/TO/nabla [--update]
#   NABLA_UPDATE_GOLDEN=1 bash tests/golden/run.sh PATH/TO/nabla
#
# fail/fail_*.nn   `nabla check FILE` must exit 1; its stderr must equal fail_*.nn.expected.
# ok/*.nn          must check (exit 0, empty stderr); the stdout of every stage below must equal
# samples/*.nn     FILE.STAGE.expected (next to the file for ok/, in tests/golden/samples/ for
#                  the project's samples/). Programs with a `loss` line also run the gradient
#                  stages (check --emit grad/simplified, grad, grad --ascii, explain).
# front/*.nn       like ok/, but only the front-end stages (check, tokens, ast, graph): programs
#                  of the language's newer ops, which the engines' own tests (test_jit,
#                  test_programs) do not read from here; move them to ok/ once every engine
#                  runs them.
#
# Every command runs from the directory of its file with the bare file name, so that paths in
# the output are stable. A status other than 0 or 1 (a crash) or a timeout is always a failure.
# With --update, expectations are (re)written instead of compared, and stale ones are removed.
set -u

if [[ $# -lt 1 ]]; then
  echo "usage: $0 PATH/TO/nabla [--update]" >&2
  exit 2
fi
NABLA=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
if [[ ! -x "$NABLA" ]]; then
  echo "golden: $NABLA is not an executable" >&2
  exit 2
fi
UPDATE=0
[[ "${NABLA_UPDATE_GOLDEN:-0}" == 1 ]] && UPDATE=1
case "${2:-}" in
  "") ;;
  --update) UPDATE=1 ;;
  *) echo "usage: $0 PATH/TO/nabla [--update]" >&2; exit 2 ;;
esac

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/nabla-golden.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
export LC_ALL=C

passed=0
failed=0
declare -A wanted=() # every expectation file that some test reads

fail() { # NAME, MESSAGE...
  failed=$((failed + 1))
  echo "FAIL $1"
  shift
  [[ $# -gt 0 ]] && printf '  %s\n' "$@"
}

# run DIR FILE ARGS... : runs nabla in DIR; sets $status, stdout in $TMP/out, stderr in $TMP/err.
run() {
  local dir=$1
  shift
  (cd "$dir" && timeout 20 "$NABLA" "$@" >"$TMP/out" 2>"$TMP/err")
  status=$?
}

# A status that is neither 0 nor 1: a crash, a timeout or a signal.
crash_message() {
  case $status in
    124) echo "timed out after 20 s" ;;
    *) if ((status > 128)); then echo "killed by signal $((status - 128)) (exit status $status)"
       else echo "exit status $status (only 0 and 1 are allowed)"; fi ;;
  esac
}

# compare NAME ACTUAL EXPECTED
compare() {
  local name=$1 actual=$2 expected=$3
  wanted["$expected"]=1
  if ((UPDATE)); then
    if [[ ! -f "$expected" ]] || ! cmp -s "$actual" "$expected"; then
      cp "$actual" "$expected"
      echo "updated ${expected#"$ROOT"/}"
    fi
    passed=$((passed + 1))
    return
  fi
  if [[ ! -f "$expected" ]]; then
    fail "$name" "missing ${expected#"$ROOT"/} (run with --update to create it); the output was:"
    sed 's/^/  | /' "$actual" | head -n 40
    return
  fi
  if cmp -s "$actual" "$expected"; then
    passed=$((passed + 1))
  else
    fail "$name" "output differs from ${expected#"$ROOT"/} (--- expected, +++ actual):"
    diff -u --label expected --label actual "$expected" "$actual" | head -n 80 | sed 's/^/  /'
  fi
}

# --- programs that must be rejected ------------------------------------------------------------
shopt -s nullglob
for f in "$HERE"/fail/fail_*.nn; do
  dir=$(dirname "$f")
  base=$(basename "$f")
  name="fail/$base"
  wanted["$f.expected"]=1
  run "$dir" check "$base"
  if [[ $status -ne 0 && $status -ne 1 ]]; then
    fail "$name" "nabla check $base: $(crash_message)"
    sed 's/^/  | /' "$TMP/err" | head -n 20
    continue
  fi
  if [[ $status -ne 1 ]]; then
    fail "$name" "nabla check $base exited $status, expected 1 (an error)"
    continue
  fi
  if [[ -s "$TMP/out" ]]; then
    fail "$name" "nabla check $base printed to stdout on an error:"
    sed 's/^/  | /' "$TMP/out" | head -n 20
    continue
  fi
  compare "$name" "$TMP/err" "$f.expected"
done

# --- programs that must check --------------------------------------------------------------------
# stage name, then the nabla arguments (FILE is substituted)
STAGES=(
  "check|check FILE"
  "tokens|check --emit tokens FILE"
  "ast|check --emit ast FILE"
  "graph|check --emit graph FILE"
)
LOSS_STAGES=(
  "emit-grad|check --emit grad FILE"
  "emit-simplified|check --emit simplified FILE"
  "grad|grad FILE"
  "grad-ascii|grad --ascii FILE"
  "explain|explain FILE"
)

check_ok() { # FILE EXPECTATION-DIR LABEL [front]
  local f=$1 expdir=$2 label=$3 frontOnly=${4:-}
  local dir base stages spec stage args
  dir=$(dirname "$f")
  base=$(basename "$f")
  stages=("${STAGES[@]}")
  if [[ -z $frontOnly ]] && grep -qE '^loss([[:space:]]|$)' "$f"; then stages+=("${LOSS_STAGES[@]}"); fi
  for spec in "${stages[@]}"; do
    stage=${spec%%|*}
    args=${spec#*|}
    args=${args/FILE/$base}
    # shellcheck disable=SC2086 # args are words without spaces
    run "$dir" $args
    local name="$label/$base [$stage]"
    wanted["$expdir/$base.$stage.expected"]=1
    if [[ $status -ne 0 && $status -ne 1 ]]; then
      fail "$name" "nabla $args: $(crash_message)"
      sed 's/^/  | /' "$TMP/err" | head -n 20
      continue
    fi
    if [[ $status -ne 0 ]]; then
      fail "$name" "nabla $args exited $status, expected 0; stderr:"
      sed 's/^/  | /' "$TMP/err" | head -n 20
      continue
    fi
    if [[ -s "$TMP/err" ]]; then
      fail "$name" "nabla $args succeeded but wrote to stderr:"
      sed 's/^/  | /' "$TMP/err" | head -n 20
      continue
    fi
    compare "$name" "$TMP/out" "$expdir/$base.$stage.expected"
  done
}

for f in "$HERE"/ok/*.nn; do check_ok "$f" "$HERE/ok" ok; done
for f in "$HERE"/front/*.nn; do check_ok "$f" "$HERE/front" front front; done
sample_files=("$ROOT"/samples/*.nn)
if [[ ${#sample_files[@]} -gt 0 ]]; then
  mkdir -p "$HERE/samples"
  for f in "${sample_files[@]}"; do check_ok "$f" "$HERE/samples" samples; done
fi

# --- emit-cpp: the emitted C++ of the samples (tests/emit/run.sh compiles and checks it) ----------
# samples/NAME.nn -> samples/NAME.nn.emit-cpp.{hpp,cpp,main.cpp}.expected (f32, with --main).
for f in "${sample_files[@]}"; do
  base=$(basename "$f")
  rm -rf "$TMP/emit-cpp"
  run "$(dirname "$f")" emit-cpp "$base" -o "$TMP/emit-cpp" --main
  name="samples/$base [emit-cpp]"
  if [[ $status -ne 0 || -s "$TMP/err" ]]; then
    fail "$name" "nabla emit-cpp $base -o DIR --main exited $status; stderr:"
    sed 's/^/  | /' "$TMP/err" | head -n 20
    continue
  fi
  # An unrolled recurrence's source is megabytes (a kernel group a step): it must be emitted, but
  # its text is not pinned (tests/emit/run.sh compiles the smaller recurrences of tests/golden/ok).
  if grep -qE '(gru|rnn|lstm|scan)\(' "$f"; then continue; fi
  ns=$(sed -n 's|^wrote .*/\([A-Za-z0-9_]*\)\.hpp$|\1|p' "$TMP/out" | head -n 1)
  compare "$name hpp" "$TMP/emit-cpp/$ns.hpp" "$HERE/samples/$base.emit-cpp.hpp.expected"
  compare "$name cpp" "$TMP/emit-cpp/$ns.cpp" "$HERE/samples/$base.emit-cpp.cpp.expected"
  compare "$name main" "$TMP/emit-cpp/${ns}_main.cpp" "$HERE/samples/$base.emit-cpp.main.cpp.expected"
done

# --- expectations that no test reads (a renamed or deleted program, a program that lost its loss)
for e in "$HERE"/fail/*.expected "$HERE"/ok/*.expected "$HERE"/front/*.expected "$HERE"/samples/*.expected; do
  [[ -n "${wanted[$e]:-}" ]] && continue
  if ((UPDATE)); then
    rm -f "$e"
    echo "removed stale ${e#"$ROOT"/}"
  else
    fail "${e#"$HERE"/}" "stale expectation: no test produces it (run with --update to remove it)"
  fi
done

echo "golden: $passed passed, $failed failed"
((failed == 0))
