#!/usr/bin/env bash
# The recurrences end to end: every program of tests/recurrence/programs (rnn with tanh and relu,
# gru, lstm, scan of a layer cell) through `nabla eval --json` on the JIT and on the interpreter
# (same params from --seed, same data): f64 to 1e-12 relative, f32 to 1e-4; and `nabla gradcheck`
# (the gradient against finite differences, 1e-6).
#
# usage: bash tests/recurrence/run.sh PATH/TO/nabla PATH/TO/json_compare
set -u
if [ $# -ne 2 ]; then
  echo "usage: $0 PATH/TO/nabla PATH/TO/json_compare" >&2
  exit 2
fi
NABLA=$1
COMPARE=$2
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/nabla-recurrence.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
export LC_ALL=C

failed=0
for prog in "$HERE"/programs/*.nn; do
  name=$(basename "$prog" .nn)
  # Column counts from check's last line: "N input scalars, M target scalars, ...".
  counts=$("$NABLA" check "$prog" | tail -n 1)
  nin=$(echo "$counts" | sed -E 's/^([0-9]+) input scalars.*/\1/')
  ntg=$(echo "$counts" | sed -E 's/.* ([0-9]+) target scalars.*/\1/')
  # 9 examples: inputs in [-2, 2], targets in [0, 1].
  awk -v nin="$nin" -v ntg="$ntg" 'BEGIN { srand(11);
    for (r = 0; r < 9; ++r) { line = "";
      for (i = 0; i < nin; ++i) line = line sprintf("%s%.6f", i ? "," : "", 4 * rand() - 2);
      for (i = 0; i < ntg; ++i) line = line sprintf(",%.6f", rand());
      print line } }' >"$TMP/$name.csv"
  for dtype in f64 f32; do
    for engine in interp jit; do
      if ! "$NABLA" eval "$prog" --data "$TMP/$name.csv" --seed 5 --dtype "$dtype" --engine "$engine" \
           --json >"$TMP/$name.$dtype.$engine.json" 2>"$TMP/err"; then
        echo "FAIL $name: eval --dtype $dtype --engine $engine"; sed 's/^/  /' "$TMP/err"; failed=1
      fi
    done
  done
  for spec in "f64.jit f64.interp 1e-12" "f32.jit f64.interp 1e-4" "f32.interp f64.interp 1e-4"; do
    set -- $spec
    if report=$("$COMPARE" "$TMP/$name.$1.json" "$TMP/$name.$2.json" "$3" 2>&1); then
      echo "ok   $name: $1 agrees with $2 to $3"
    else
      echo "FAIL $name: $1 differs from $2 (tolerance $3)"; echo "$report" | sed 's/^/  /'; failed=1
    fi
  done
  if out=$("$NABLA" gradcheck "$prog" --data "$TMP/$name.csv" --seed 5 2>&1); then
    echo "ok   $name: gradcheck"
  else
    echo "FAIL $name: gradcheck"; echo "$out" | sed 's/^/  /'; failed=1
  fi
done
exit $failed
