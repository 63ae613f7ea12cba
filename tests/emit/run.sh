#!/usr/bin/env bash
# Tests of `nabla emit-cpp`: the emitted C++ compiles cleanly with the system compilers and
# computes what the JIT computes.
#
#   bash tests/emit/run.sh PATH/TO/nabla PATH/TO/emit_compare
#
# 1. Every program of samples/, tests/golden/ok/ and tests/emit/programs/ (a small program for
#    each function and form, snapshots of the JIT tests' random-program generator) is emitted in
#    f32 and f64. All the programs of one dtype are compiled into ONE bundle with
#    tests/emit/driver.hpp (-std=c++17 -O2 -Wall -Wextra -Werror): by g++ in f32 (the portable
#    tiles), in f32 with -march=x86-64-v3 (AVX2 tiles) and in f64 with -march=native (AVX-512
#    tiles on this kind of machine), and by clang++ (where it exists) in f32 with -march=native. Each bundle runs every program at batch sizes 1, 3, 6 and 37
#    on data that emit_compare wrote; emit_compare then checks loss, gradient and outputs against
#    the JIT: f64 to 1e-12 relative, f32 to 1e-4. The samples' headers and sources also pass
#    -Wpedantic alone, with each compiler.
# 2. `--main`: the emitted program's initial params equal initParams bit for bit (--dump-init,
#    several seeds, each compiler); it trains digits (class-index CSV) and xor (plain CSV), its
#    --save file is read by `nabla predict`, and CSV errors are FILE:LINE messages; it trains
#    fashion_cnn on raw IDX files (--labels): its rank-4 params start as initParams, its final
#    loss equals `nabla eval` of the params it saved, and IDX errors are FILE: error: at byte N
#    messages.
# 3. The command line: NAME derivation, --params (kTrainedParams), errors (a bad directory, bad
#    params, --main without a loss) are messages with exit status 1.
# At most two compilations run at a time.
set -u

if [[ $# -lt 2 ]]; then
  echo "usage: $0 PATH/TO/nabla PATH/TO/emit_compare" >&2
  exit 2
fi
abs() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
NABLA=$(abs "$1")
COMPARE=$(abs "$2")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/nabla-emit.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
export LC_ALL=C
START=$SECONDS
stage() { echo "[$((SECONDS - START)) s] $*"; }

failed=0
fail() {
  failed=$((failed + 1))
  echo "FAIL $*"
}

FLAGS=(-std=c++17 -O2 -Wall -Wextra -Werror)
GXX=""
CLANG=""
command -v g++ >/dev/null && GXX=g++
for c in clang++-19 clang++; do
  if command -v "$c" >/dev/null; then CLANG=$c; break; fi
done
COMPILERS=()
[[ -n "$GXX" ]] && COMPILERS+=("$GXX")
[[ -n "$CLANG" ]] && COMPILERS+=("$CLANG")
if [[ ${#COMPILERS[@]} -eq 0 ]]; then
  echo "emit: no C++ compiler (g++ or clang++) found" >&2
  exit 1
fi
CXX=${COMPILERS[0]}
echo "compilers: ${COMPILERS[*]}"

# --- the job pool: compile LABEL COMMAND... runs in the background, two at a time ---------------
labels=()
compile() {
  local label=$1
  shift
  while [[ $(jobs -rp | wc -l) -ge 2 ]]; do wait -n; done
  ("$@" >"$TMP/$label.log" 2>&1; echo $? >"$TMP/$label.status") &
  labels+=("$label")
}
# Waits for every job; reports the failed ones.
wait_all() {
  wait
  local label
  for label in "${labels[@]}"; do
    if [[ "$(cat "$TMP/$label.status" 2>/dev/null)" != 0 ]]; then
      fail "compiling $label"
      head -n 30 "$TMP/$label.log" | sed 's/^/  | /'
    fi
  done
  labels=()
}
ok() { [[ "$(cat "$TMP/$1.status" 2>/dev/null)" == 0 ]]; }

# --- emit everything ------------------------------------------------------------------------------
# The Fashion-MNIST samples are left out: their emitted sources are large (fashion_gru.nn unrolls 28
# GRU steps) and compiling them with two compilers in two dtypes would take most of the run; their
# forms (conv, pooling, gru, flatten, dense) are compiled here through the smaller programs of
# tests/golden/ok (images, gru_lstm_scan, rnn_steps, ...) and tests/emit/programs.
SAMPLES=()
for f in "$ROOT"/samples/*.nn; do
  case "$(basename "$f")" in fashion_*) ;; *) SAMPLES+=("$f") ;; esac
done
PROGRAMS=("${SAMPLES[@]}" "$ROOT"/tests/golden/ok/*.nn "$HERE"/programs/*.nn)
declare -A seen=()
for f in "${PROGRAMS[@]}"; do
  s=$(basename "$f" .nn)
  if [[ -n "${seen[$s]:-}" ]]; then
    echo "emit: two test programs are called $s" >&2
    exit 1
  fi
  seen[$s]=1
done

emit_all() { # DTYPE: every program into $TMP/DTYPE; "STEM NAMESPACE" lines into $TMP/DTYPE.names
  local dt=$1 f
  mkdir -p "$TMP/$dt"
  for f in "${PROGRAMS[@]}"; do
    if ! "$NABLA" emit-cpp "$f" -o "$TMP/$dt" --dtype "$dt" >"$TMP/$dt.out" 2>"$TMP/$dt.err" || [[ -s "$TMP/$dt.err" ]]; then
      echo "FAIL emit-cpp $(basename "$f") --dtype $dt"
      sed 's/^/  | /' "$TMP/$dt.err" | head -n 20
    fi
    echo "$(basename "$f" .nn) $(sed -n 's|^wrote .*/\([A-Za-z0-9_]*\)\.hpp$|\1|p' "$TMP/$dt.out")"
  done >"$TMP/$dt.names"
}
emit_all f32 >"$TMP/emit-f32.log" &
emit_all f64 >"$TMP/emit-f64.log" &
"$COMPARE" data "$TMP/data" "${PROGRAMS[@]}" || fail "emit_compare data"
wait
for dt in f32 f64; do
  if [[ -s "$TMP/emit-$dt.log" ]]; then
    failed=$((failed + $(grep -c '^FAIL' "$TMP/emit-$dt.log")))
    cat "$TMP/emit-$dt.log"
  fi
done
declare -A NS=() # stem -> namespace
while read -r s ns; do NS[$s]=$ns; done <"$TMP/f32.names"
stage "emitted ${#PROGRAMS[@]} programs in f32 and f64"

# The bundle of one dtype: every emitted source, an adapter for each namespace, the driver.
for dt in f32 f64; do
  {
    echo '#include "driver.hpp"'
    entries=""
    for f in "${PROGRAMS[@]}"; do
      s=$(basename "$f" .nn)
      ns=${NS[$s]}
      echo "#include \"$ns.cpp\""
      if grep -q 'real loss_and_gradient' "$TMP/$dt/$ns.hpp"; then echo "EMIT_TEST_PROGRAM($ns)"
      else echo "EMIT_TEST_FORWARD_ONLY($ns)"; fi
      entries+="    {\"$s\", &emit_test::run<Adapter_$ns>},"$'\n'
    done
    echo "static const emit_test::Entry kEntries[] = {"
    printf '%s' "$entries"
    echo "};"
    echo "int main(int argc, char** argv) { return emit_test::main(argc, argv, kEntries, sizeof kEntries / sizeof kEntries[0]); }"
  } >"$TMP/$dt/bundle.cpp"
done

# --main programs.
mkdir -p "$TMP/main"
"$NABLA" emit-cpp "$HERE/programs/init_kinds.nn" -o "$TMP/main" --main >/dev/null || fail "emit-cpp --main init_kinds.nn"
"$NABLA" emit-cpp "$ROOT/samples/digits.nn" -o "$TMP/main" --main >/dev/null || fail "emit-cpp --main digits.nn"
"$NABLA" emit-cpp "$ROOT/samples/xor.nn" -o "$TMP/main" --main --dtype f64 >/dev/null || fail "emit-cpp --main xor.nn"
"$NABLA" emit-cpp "$ROOT/samples/fashion_cnn.nn" -o "$TMP/main" --main >/dev/null || fail "emit-cpp --main fashion_cnn.nn"

# --- compile everything --------------------------------------------------------------------------
# COMPILER:DTYPE:EXTRA-FLAG:TAG. The matrix products' tiles have three forms (see EmitCpp.cpp's
# tileText): AVX-512 intrinsics (-march=native here, in f64 with g++ and f32 with clang), AVX2
# intrinsics (-march=x86-64-v3, g++ f32) and the standard C++ fallback (the baseline target, g++
# f32). TAG names the bundle's results.
BUNDLES=()
[[ -n "$GXX" ]] && BUNDLES+=("$GXX:f64:-march=native:$GXX" "$GXX:f32::$GXX")
[[ -n "$GXX" && "$(uname -m)" == x86_64 ]] && BUNDLES+=("$GXX:f32:-march=x86-64-v3:$GXX-v3")
[[ -n "$CLANG" ]] && BUNDLES+=("$CLANG:f32:-march=native:$CLANG")
[[ -z "$GXX" ]] && BUNDLES+=("$CLANG:f64:-march=native:$CLANG")
for b in "${BUNDLES[@]}"; do
  IFS=: read -r cxx dt extra tag <<<"$b"
  compile "bundle-$tag-$dt" "$cxx" "${FLAGS[@]}" $extra -I"$HERE" -I"$TMP/$dt" "$TMP/$dt/bundle.cpp" -o "$TMP/bundle-$tag-$dt"
done
for cxx in "${COMPILERS[@]}"; do
  compile "main-init-$cxx" "$cxx" "${FLAGS[@]}" "$TMP/main/init_kinds.cpp" "$TMP/main/init_kinds_main.cpp" -o "$TMP/main/init-$cxx"
done
compile "main-digits" "$CXX" "${FLAGS[@]}" "$TMP/main/digits.cpp" "$TMP/main/digits_main.cpp" -o "$TMP/main/digits"
compile "main-xor" "$CXX" "${FLAGS[@]}" "$TMP/main/nn_xor.cpp" "$TMP/main/nn_xor_main.cpp" -o "$TMP/main/xor"
compile "main-cnn" "$CXX" "${FLAGS[@]}" -march=native "$TMP/main/fashion_cnn.cpp" "$TMP/main/fashion_cnn_main.cpp" -o "$TMP/main/cnn"
# The samples' files alone, -Wpedantic: each header by itself, each source by itself.
for cxx in "${COMPILERS[@]}"; do
  for f in "${SAMPLES[@]}"; do
    ns=${NS[$(basename "$f" .nn)]}
    for dt in f32 f64; do
      printf '#include "%s.hpp"\n' "$ns" >"$TMP/$dt/alone_$ns.cpp"
      compile "alone-$cxx-$dt-$ns" "$cxx" "${FLAGS[@]}" -Wpedantic -fsyntax-only "$TMP/$dt/alone_$ns.cpp" "$TMP/$dt/$ns.cpp"
    done
  done
done
wait_all
stage "compiled"

# --- 1. numerics ----------------------------------------------------------------------------------
for dt in f32 f64; do
  tags=()
  for b in "${BUNDLES[@]}"; do
    IFS=: read -r cxx bdt _ tag <<<"$b"
    [[ $bdt == "$dt" ]] && ok "bundle-$tag-$dt" || continue
    "$TMP/bundle-$tag-$dt" "$TMP/data" "result_${dt}_$tag.txt" || fail "running the $tag $dt bundle"
    tags+=("$tag")
  done
  if [[ ${#tags[@]} -gt 0 ]]; then
    list=$(IFS=,; echo "${tags[*]}")
    "$COMPARE" check "$TMP/data" "$dt" "$list" "${PROGRAMS[@]}" || fail "$dt: the emitted code and the JIT differ"
  fi
done
stage "numerics checked"

# --- 2. --main ------------------------------------------------------------------------------------
for cxx in "${COMPILERS[@]}"; do
  ok "main-init-$cxx" || continue
  for seed in 0 1 42 18446744073709551615; do
    "$COMPARE" init "$HERE/programs/init_kinds.nn" "$seed" >"$TMP/main/expected-$seed"
    "$TMP/main/init-$cxx" --dump-init --seed "$seed" >"$TMP/main/actual-$seed"
    if ! cmp -s "$TMP/main/expected-$seed" "$TMP/main/actual-$seed"; then
      fail "$cxx: init_kinds_main --dump-init --seed $seed differs from initParams"
      diff "$TMP/main/expected-$seed" "$TMP/main/actual-$seed" | head -n 10 | sed 's/^/  | /'
    fi
  done
done

if ok main-digits; then
  if "$TMP/main/digits" "$ROOT/samples/data/digits.csv" --epochs 3 --lr 0.5 --save "$TMP/main/digits.json" >"$TMP/out" 2>"$TMP/err"; then
    first=$(awk '/^epoch 1\//{print $4}' "$TMP/out")
    last=$(awk '/^epoch 3\//{print $4}' "$TMP/out")
    if ! awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a && b < 0.5) }'; then
      fail "digits_main: the loss did not fall (epoch 1: $first, epoch 3: $last)"
      sed 's/^/  | /' "$TMP/out"
    fi
    if ! "$NABLA" predict "$ROOT/samples/digits.nn" --params "$TMP/main/digits.json" --data "$ROOT/samples/data/digits.csv" >/dev/null 2>"$TMP/err"; then
      fail "nabla predict does not read the params that digits_main --save wrote"
      sed 's/^/  | /' "$TMP/err" | head -n 5
    elif ! awk '/^accuracy:/ { exit !($2 > 0.9) }' "$TMP/err"; then
      fail "the params that digits_main trained predict badly: $(cat "$TMP/err")"
    fi
  else
    fail "digits_main exited with an error"
    sed 's/^/  | /' "$TMP/err" | head -n 10
  fi
fi

if ok main-xor; then
  "$TMP/main/xor" "$ROOT/samples/data/xor.csv" --epochs 2 --batch 2 >"$TMP/out" 2>&1 || fail "xor_main on xor.csv"
  grep -q '^epoch 2/2  loss ' "$TMP/out" || fail "xor_main printed no loss for epoch 2"
  # CSV errors: FILE:LINE: error: ..., exit status 1.
  printf 'x1,x2,t\n0,1,1\n0,1\n' >"$TMP/main/short.csv"
  printf '0,1,1\n0,abc,1\n' >"$TMP/main/word.csv"
  printf 'x1,x2,t\n' >"$TMP/main/header.csv"
  printf '0,1,1\n1,nan,0\n' >"$TMP/main/nan.csv"
  for c in "short.csv:3: error: row has 2 fields" "word.csv:2: error: column 2: \"abc\" is not a number" \
           "header.csv:1: error: no examples" "nan.csv:2: error: column 2"; do
    file=${c%%:*}
    "$TMP/main/xor" "$TMP/main/$file" >"$TMP/out" 2>"$TMP/err"
    status=$?
    if [[ $status -ne 1 ]] || ! grep -qF "$TMP/main/$c" "$TMP/err"; then
      fail "xor_main on $file: status $status, expected 1 and \"$c\"; stderr: $(cat "$TMP/err")"
    fi
  done
  "$TMP/main/xor" "$ROOT/samples/data/xor.csv" --batch 0 >/dev/null 2>&1
  [[ $? -eq 1 ]] || fail "xor_main --batch 0 must be an error"
fi
# The convnet's main on IDX files (raw: the emitted main links no zlib): 40 images of 28 x 28 and
# their labels, written here (no data set needed). It trains 2 epochs and prints the mean loss at
# its final params; `nabla eval` of the params it saved gives that loss too (f32: 1e-4 relative).
# IDX errors are FILE: error: at byte N messages with exit status 1.
if ok main-cnn; then
  (cd "$TMP/main" && python3 - <<'PY'
import struct
n = 40
pix = bytes(((i * 7919 + p * (i % 5 + 1) * 31) % 256) if (p // 28 + i) % 3 else 0 for i in range(n) for p in range(784))
open("slice.idx3", "wb").write(struct.pack(">IIII", 0x803, n, 28, 28) + pix)
open("slice.idx1", "wb").write(struct.pack(">II", 0x801, n) + bytes(i % 10 for i in range(n)))
open("bad_label.idx1", "wb").write(struct.pack(">II", 0x801, n) + bytes(i % 10 for i in range(n - 1)) + bytes([10]))
open("few.idx1", "wb").write(struct.pack(">II", 0x801, n - 1) + bytes(i % 10 for i in range(n - 1)))
open("cut.idx3", "wb").write(struct.pack(">IIII", 0x803, n, 28, 28) + pix[:784 * 3 + 5])
PY
  ) || fail "writing the IDX slice"
  gzip -k "$TMP/main/slice.idx3"
  # Rank-4 params (the conv kernels): every element drawn as initParams draws it.
  "$COMPARE" init "$ROOT/samples/fashion_cnn.nn" 0 >"$TMP/main/expected-cnn"
  "$TMP/main/cnn" --dump-init --seed 0 >"$TMP/main/actual-cnn"
  cmp -s "$TMP/main/expected-cnn" "$TMP/main/actual-cnn" || fail "fashion_cnn_main --dump-init differs from initParams"
  if "$TMP/main/cnn" "$TMP/main/slice.idx3" --labels "$TMP/main/slice.idx1" --epochs 2 --batch 8 --lr 0.01 \
       --save "$TMP/main/cnn.json" >"$TMP/out" 2>"$TMP/err"; then
    grep -q '^epoch 2/2  loss ' "$TMP/out" || fail "fashion_cnn_main printed no loss for epoch 2"
    got=$(awk '/^loss /{print $2}' "$TMP/out")
    want=$("$NABLA" eval "$ROOT/samples/fashion_cnn.nn" --data "$TMP/main/slice.idx3" --labels "$TMP/main/slice.idx1" \
             --params "$TMP/main/cnn.json" 2>&1 | awk '/^loss E = /{print $4}')
    if ! awk -v a="$got" -v b="$want" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && b != "" && d <= 1e-4 * (1 + (b < 0 ? -b : b))) }'; then
      fail "fashion_cnn_main on IDX: its loss at the final params is $got, nabla eval of its saved params gives $want"
      sed 's/^/  | /' "$TMP/out"
    fi
  else
    fail "fashion_cnn_main on an IDX slice exited with an error"
    sed 's/^/  | /' "$TMP/err" | head -n 10
  fi
  for c in "slice.idx3.gz:slice.idx1:: error: the file is gzip-compressed" \
           "slice.idx1:slice.idx1:: error: at byte 0: wrong magic number 00 00 08 01; expected 00 00 08 03" \
           "slice.idx3:bad_label.idx1:: error: at byte 47: label 10 of image 39 is not a class index 0..9" \
           "slice.idx3:few.idx1:: error: at byte 4: 39 labels for the 40 images" \
           "cut.idx3:slice.idx1:: error: at byte 2373: the file ends in image 4 of 40"; do
    images=${c%%:*}; rest=${c#*:}; labels=${rest%%:*}; want=${rest#*:}
    "$TMP/main/cnn" "$TMP/main/$images" --labels "$TMP/main/$labels" --epochs 1 >"$TMP/out" 2>"$TMP/err"
    status=$?
    if [[ $status -ne 1 ]] || ! grep -qF -- "$want" "$TMP/err"; then
      fail "fashion_cnn_main on $images, $labels: status $status, expected 1 and \"$want\"; stderr: $(cat "$TMP/err")"
    fi
  done
fi
stage "--main checked"

# --- 3. the command line --------------------------------------------------------------------------
mkdir -p "$TMP/cli"
for pair in "my-net:my_net" "2layer:nn_2layer" "class:nn_class" "xor:nn_xor" "a.b:a_b" "int:nn_int"; do
  stem=${pair%%:*}
  want=${pair#*:}
  cp "$ROOT/samples/hinton.nn" "$TMP/cli/$stem.nn"
  if ! (cd "$TMP/cli" && "$NABLA" emit-cpp "$stem.nn" -o "out-$stem" >/dev/null 2>"$TMP/err"); then
    fail "emit-cpp $stem.nn: $(cat "$TMP/err")"
  elif [[ ! -f "$TMP/cli/out-$stem/$want.hpp" || ! -f "$TMP/cli/out-$stem/$want.cpp" ]] ||
       ! grep -q "^namespace $want {" "$TMP/cli/out-$stem/$want.hpp"; then
    fail "emit-cpp $stem.nn: expected $want.hpp and $want.cpp with namespace $want; got: $(ls "$TMP/cli/out-$stem")"
  fi
done

# --params: kTrainedParams holds the file's values (exactly in f64, rounded to float in f32).
"$COMPARE" params "$ROOT/samples/hinton.nn" 5 >"$TMP/cli/hinton.json"
"$COMPARE" init "$ROOT/samples/hinton.nn" 5 >"$TMP/cli/expected-f64"
for dt in f32 f64; do
  "$NABLA" emit-cpp "$ROOT/samples/hinton.nn" -o "$TMP/cli/trained-$dt" --dtype "$dt" --params "$TMP/cli/hinton.json" >/dev/null ||
    fail "emit-cpp --params ($dt)"
  cat >"$TMP/cli/trained-$dt/print.cpp" <<'EOF'
#include "hinton.hpp"
#include <cstdio>
#include <cstdlib>
int main(int argc, char**) {
  if (argc > 1) {  // round the numbers on stdin to float
    double v;
    while (std::scanf("%lf", &v) == 1) std::printf("%.17g\n", static_cast<double>(static_cast<float>(v)));
    return 0;
  }
  for (hinton::real v : hinton::kTrainedParams) std::printf("%.17g\n", static_cast<double>(v));
}
EOF
  if "$CXX" "${FLAGS[@]}" -I"$TMP/cli/trained-$dt" "$TMP/cli/trained-$dt/print.cpp" -o "$TMP/cli/print-$dt" 2>"$TMP/err"; then
    "$TMP/cli/print-$dt" >"$TMP/cli/actual-$dt"
    [[ $dt == f32 ]] && "$TMP/cli/print-$dt" round <"$TMP/cli/expected-f64" >"$TMP/cli/expected-f32"
    cmp -s "$TMP/cli/expected-$dt" "$TMP/cli/actual-$dt" || fail "$dt kTrainedParams differ from the params file"
  else
    fail "compiling a program that reads kTrainedParams ($dt)"
    head -n 20 "$TMP/err" | sed 's/^/  | /'
  fi
done

# expect_error DESCRIPTION TEXT ARGS...: nabla ARGS exits 1 with TEXT on stderr.
expect_error() {
  local what=$1 text=$2
  shift 2
  "$NABLA" "$@" >"$TMP/out" 2>"$TMP/err"
  local status=$?
  if [[ $status -ne 1 ]] || ! grep -qF "$text" "$TMP/err"; then
    fail "$what: status $status (expected 1), stderr: $(head -c 400 "$TMP/err")"
  fi
}
touch "$TMP/cli/a-file"
expect_error "emit-cpp into a file" "not a directory" emit-cpp "$ROOT/samples/hinton.nn" -o "$TMP/cli/a-file"
expect_error "emit-cpp below a file" "cannot create the directory" emit-cpp "$ROOT/samples/hinton.nn" -o "$TMP/cli/a-file/sub"
printf '{"W_i": [[1, 2]], "b_i": [0, 0, 0], "W_j": [[0, 0, 0], [0, 0, 0]], "b_j": [0, 0]}\n' >"$TMP/cli/bad.json"
expect_error "emit-cpp with params of the wrong shape" "W_i" emit-cpp "$ROOT/samples/hinton.nn" -o "$TMP/cli/x" --params "$TMP/cli/bad.json"
expect_error "emit-cpp with a missing params file" "cannot open" emit-cpp "$ROOT/samples/hinton.nn" -o "$TMP/cli/x" --params "$TMP/cli/none.json"
expect_error "emit-cpp --main without a loss" "needs a loss" emit-cpp "$HERE/programs/no_loss.nn" -o "$TMP/cli/x" --main
expect_error "emit-cpp --dtype f16" "f16" emit-cpp "$ROOT/samples/hinton.nn" -o "$TMP/cli/x" --dtype f16
expect_error "emit-cpp of a bad program" "error:" emit-cpp "$TMP/cli/a-file.nn" -o "$TMP/cli/x"
[[ -e "$TMP/cli/x" ]] && fail "a failed emit-cpp left $TMP/cli/x behind"

echo "emit: ${#PROGRAMS[@]} programs, $failed failures, $((SECONDS - START)) s"
((failed == 0))
