#!/usr/bin/env bash
# Conformance: every case in cases/ (program.nn, data.csv, params.json, expected.json computed
# independently in float64) must give, through `nabla eval --json` on the interpreter and on the JIT, the expected
# loss and gradients: to 1e-9 relative in f64 and to 1e-4 in f32 (see cases/README.md).
#
# usage: bash tests/conformance/run.sh PATH/TO/nabla PATH/TO/json_compare
set -u
if [ $# -ne 2 ]; then
  echo "usage: $0 PATH/TO/nabla PATH/TO/json_compare" >&2
  exit 2
fi
NABLA=$1
COMPARE=$2
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CASES=$HERE/cases
for exe in "$NABLA" "$COMPARE"; do
  if [ ! -x "$exe" ]; then
    echo "conformance: not an executable: $exe" >&2
    exit 2
  fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/nabla-conformance.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

passed=0
failed=0
for dir in "$CASES"/*/; do
  dir=${dir%/}
  name=$(basename "$dir")
  [ -f "$dir/program.nn" ] || continue
  for spec in "f64 1e-9 interp" "f32 1e-4 interp" "f64 1e-9 jit" "f32 1e-4 jit"; do
    set -- $spec
    dtype=$1 tol=$2 engine=$3
    out=$TMP/$name.$dtype.json
    err=$TMP/$name.$dtype.err
    # The data: data.csv, or IDX images and labels (idx_images).
    if [ -f "$dir/data.csv" ]; then
      data=(--data "$dir/data.csv")
    else
      data=(--data "$dir/images.idx3-ubyte.gz" --labels "$dir/labels.idx1-ubyte.gz")
    fi
    "$NABLA" eval "$dir/program.nn" "${data[@]}" --params "$dir/params.json" \
        --dtype "$dtype" --json --engine "$engine" >"$out" 2>"$err"
    status=$?
    if [ "$status" -ne 0 ]; then
      echo "FAIL $name ($dtype, $engine): nabla eval exited with status $status"
      sed 's/^/  /' "$err"
      failed=$((failed + 1))
      continue
    fi
    if report=$("$COMPARE" "$out" "$dir/expected.json" "$tol" 2>&1); then
      echo "ok   $name ($dtype, $engine, tolerance $tol)"
      passed=$((passed + 1))
    else
      echo "FAIL $name ($dtype, $engine, tolerance $tol)"
      echo "$report"
      failed=$((failed + 1))
    fi
  done
done

echo "conformance: $passed passed, $failed failed"
if [ "$failed" -ne 0 ] || [ "$passed" -eq 0 ]; then
  exit 1
fi
exit 0
