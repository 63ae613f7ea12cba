#!/usr/bin/env bash
# Runs one fuzz target for a fixed time, growing its corpus in tests/fuzz/corpus/TARGET.
#
#   bash tests/fuzz/run.sh TARGET SECONDS [LIBFUZZER-OPTIONS...]   TARGET: source, csv, json or idx
#   bash tests/fuzz/run.sh --minimize TARGET                       shrink corpus/TARGET (-merge=1)
#
# The targets come from a build with NABLA_BUILD_FUZZ=ON (clang-19):
#   cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++-19 -DNABLA_BUILD_FUZZ=ON
#   cmake --build build-fuzz
# Environment: NABLA_FUZZ_BUILD (default build-fuzz), NABLA_FUZZ_SCRATCH=1 to fuzz a copy of the
# corpus (CI: the tree stays clean), NABLA_FUZZ_OUT for crash files and logs (default
# $NABLA_FUZZ_BUILD/fuzz-out). Each run appends "date target seconds executions status" to
# $NABLA_FUZZ_OUT/tally.tsv (the numbers for README.md). Exit status: libFuzzer's (0: no finding).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${NABLA_FUZZ_BUILD:-$ROOT/build-fuzz}
OUT=${NABLA_FUZZ_OUT:-$BUILD/fuzz-out}
usage() { echo "usage: $0 TARGET SECONDS [LIBFUZZER-OPTIONS...] | $0 --minimize TARGET" >&2; exit 2; }

minimize=0
if [[ "${1:-}" == --minimize ]]; then minimize=1; shift; fi
[[ $# -ge 1 ]] || usage
target=$1
case $target in source|csv|json|idx) ;; *) usage ;; esac
bin=$BUILD/tests/fuzz/fuzz_$target
[[ -x $bin ]] || { echo "run.sh: $bin not found: build with -DNABLA_BUILD_FUZZ=ON (see the top of this file)" >&2; exit 2; }
corpus=$HERE/corpus/$target
mkdir -p "$corpus" "$OUT"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# The seeds: every .nn file of the project for source; tests/fuzz/seeds/TARGET for the others.
seeds=$(mktemp -d "${TMPDIR:-/tmp}/nabla-fuzz-seeds.XXXXXX")
scratch=""
trap 'rm -rf "$seeds" ${scratch:+"$scratch"}' EXIT
if [[ $target == source ]]; then
  i=0
  for f in "$ROOT"/samples/*.nn "$ROOT"/tests/golden/ok/*.nn "$ROOT"/tests/golden/fail/*.nn \
           "$ROOT"/tests/conformance/cases/*/program.nn "$ROOT"/tests/emit/programs/*.nn \
           "$ROOT"/tests/bench/*.nn; do
    [[ -f $f ]] && cp "$f" "$seeds/seed$((i++))"
  done
  dict=$HERE/nabla.dict
  maxlen=16384
else
  cp "$HERE"/seeds/"$target"/* "$seeds"/
  dict=$HERE/$target.dict
  maxlen=8192
fi

if ((minimize)); then
  fresh=$(mktemp -d "${TMPDIR:-/tmp}/nabla-fuzz-min.XXXXXX")
  "$bin" -merge=1 -timeout=10 -rss_limit_mb=2048 -max_len=$maxlen "$fresh" "$corpus" "$seeds" \
    >"$OUT/minimize-$target.log" 2>&1
  before=$(find "$corpus" -type f | wc -l)
  rm -rf "$corpus" && mkdir -p "$corpus" && cp "$fresh"/* "$corpus"/ 2>/dev/null || true
  rm -rf "$fresh"
  echo "run.sh: corpus/$target: $before -> $(find "$corpus" -type f | wc -l) files, $(du -sh "$corpus" | cut -f1)"
  exit 0
fi

[[ $# -ge 2 ]] || usage
seconds=$2
shift 2
if [[ "${NABLA_FUZZ_SCRATCH:-0}" == 1 ]]; then
  scratch=$(mktemp -d "${TMPDIR:-/tmp}/nabla-fuzz-corpus.XXXXXX")
  cp -r "$corpus"/. "$scratch"/
  corpus=$scratch
fi
log=$OUT/$target-$(date +%Y%m%d-%H%M%S).log
echo "run.sh: fuzz_$target for $seconds s, corpus $corpus, log $log"
status=0
"$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=$maxlen \
  -dict="$dict" -artifact_prefix="$OUT/$target-" -print_final_stats=1 "$@" "$corpus" "$seeds" \
  >"$log" 2>&1 || status=$?
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
time=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
printf '%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$target" "${time:-$seconds}" "${runs:-?}" "$status" \
  >>"$OUT/tally.tsv"
echo "run.sh: fuzz_$target: ${runs:-?} executions in ${time:-?} s, exit status $status"
if ((status != 0)); then
  # Enough to reproduce from a CI log alone: the finding's first lines (the reason, the start of
  # the Loop IR dump) and the input that caused it, in base64 (`base64 -d > crash`, then
  # `fuzz_TARGET crash`).
  grep -A 12 -E "FUZZ FINDING" "$log" | head -n 14 || true
  grep -E "ERROR: |SUMMARY|Test unit written" "$log" | head -n 10 || true
  for crash in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log"); do
    [[ -f $crash ]] || continue
    echo "run.sh: the input, $(wc -c <"$crash") bytes, base64:"
    base64 -w 100 "$crash" | head -n 200
  done
fi
exit $status
