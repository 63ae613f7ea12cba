#!/usr/bin/env bash
# Limits of the nabla binary: programs and files built to exhaust memory, the stack or the
# compiler's time each get a clear diagnostic and exit status 1 (or finish), never a crash, an
# allocation failure or a hang.
#
#   bash tests/limits/run.sh PATH/TO/nabla
#
#   - huge shapes (sema admits 2^28 elements a value, and any number of values): eval, gradcheck,
#     train and predict refuse before allocating ("needs about N GiB of memory"), against the
#     machine's memory and against NABLA_MEMORY_LIMIT; a params file for them is read without
#     allocating the params; a 2^28-element input asks for that many CSV columns;
#   - the hostile sources of tests/golden/fail (100,000 open parentheses, a very long line, NUL
#     bytes, bytes that are not UTF-8, numbers out of range) get check's diagnostic from every
#     other command too;
#   - long chains of statements (deeper than any one expression may be): lowering does not
#     recurse on them, and the JIT compiles them in time linear in their length;
#   - endless and oversized files (/dev/zero as a source, data or params file);
#   - hostile data and params files: deep JSON nesting, NUL bytes, very long lines, numbers out
#     of range.
set -u
if [[ $# -lt 1 ]]; then
  echo "usage: $0 PATH/TO/nabla" >&2
  exit 2
fi
NABLA=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
W=$(mktemp -d "${TMPDIR:-/tmp}/nabla-limits.XXXXXX")
trap 'rm -rf "$W"' EXIT
export LC_ALL=C
unset NABLA_MEMORY_LIMIT
passed=0
failed=0

# expect NAME STATUS PATTERN [ENV=VALUE...] -- ARGS...: runs nabla in $W under `timeout`; the
# exit status must be STATUS and stderr must match the extended regex PATTERN (empty: anything).
expect() {
  local name=$1 want=$2 pattern=$3
  shift 3
  local envs=()
  while [[ $# -gt 0 && $1 != -- ]]; do envs+=("$1"); shift; done
  shift
  (cd "$W" && env "${envs[@]}" timeout "${LIMITS_TIMEOUT:-120}" "$NABLA" "$@" >"$W/out" 2>"$W/err")
  local status=$?
  if [[ $status -ne $want ]] || { [[ -n $pattern ]] && ! grep -Eq -- "$pattern" "$W/err"; }; then
    failed=$((failed + 1))
    echo "FAIL $name: nabla $* exited $status (expected $want), stderr:"
    head -c 1500 "$W/err" | sed 's/^/  | /'
    [[ -n $pattern ]] && echo "  (expected stderr to match: $pattern)"
  else
    passed=$((passed + 1))
  fi
}

# --- huge shapes -------------------------------------------------------------------------------
{
  printf 'input x[2]\ntarget t\n'
  for i in $(seq 1 64); do printf 'param w%d[268435456]\n' "$i"; done
  printf 'y = sum(x)'
  for i in $(seq 1 64); do printf ' + sum(w%d)' "$i"; done
  printf '\noutput y\nloss E = (y - t) ^ 2\n'
} >"$W/giant.nn" # 2^34 params: 128 GiB in f64 alone
printf 'input x[2]\ntarget t\nparam w[268435456]\ny = sum(x) + sum(w)\noutput y\nloss E = (y - t) ^ 2\n' >"$W/big.nn"
printf '1,2,0\n3,4,1\n' >"$W/d3.csv"
printf '1,2\n' >"$W/d2.csv"
printf '{}' >"$W/empty.json"
needs='error: .* needs about [0-9.]+ [GT]iB of memory .*, more than the '
for engine in jit interp; do
  expect "giant eval $engine" 1 "giant.nn: $needs" -- eval giant.nn --data d3.csv --engine "$engine"
  expect "giant gradcheck $engine" 1 "giant.nn: $needs" -- gradcheck giant.nn --engine "$engine"
  expect "giant train $engine" 1 "giant.nn: $needs" -- train giant.nn --data d3.csv --engine "$engine"
  expect "giant predict $engine" 1 "giant.nn: $needs" -- predict giant.nn --params empty.json --data d2.csv --engine "$engine"
done
# A params file for such a program is checked without allocating its 128 GiB.
expect "giant emit-cpp --params" 1 'empty.json: error: missing params "w1"' -- emit-cpp giant.nn -o cpp --params empty.json
# The budget can be set: 2^28 params fit this machine, not 64 MiB.
for cmd in "eval big.nn --data d3.csv" "gradcheck big.nn" "train big.nn --data d3.csv" "predict big.nn --params empty.json --data d2.csv"; do
  # shellcheck disable=SC2086
  expect "big ${cmd%% *} within NABLA_MEMORY_LIMIT" 1 "big.nn: ${needs}64.0 MiB allowed by NABLA_MEMORY_LIMIT=64M" \
    NABLA_MEMORY_LIMIT=64M -- $cmd
done
expect "bad NABLA_MEMORY_LIMIT is ignored" 1 "giant.nn: ${needs}[0-9.]+ .*available now" NABLA_MEMORY_LIMIT=lots -- gradcheck giant.nn
# Work space: a [16384, 16384] value per example.
printf 'param c[16384, 1]\ninput x[16384]\ny = tanh(c * x)\nloss E = mean(y)\n' >"$W/wide.nn"
{ for ((i = 1; i < 16384; i++)); do printf '1,'; done; printf '1\n'; } >"$W/wide.csv"
expect "work space per example" 1 "wide.nn: error: 'eval' needs about 1.0 GiB of memory .* 1.0 GiB of work space for 1 example at a time" NABLA_MEMORY_LIMIT=256M -- eval wide.nn --data wide.csv --threads 1
# A 2^28-element input: the data must have that many columns.
printf 'input x[268435456]\nloss E = sum(x)\n' >"$W/huge_input.nn"
expect "huge input" 1 'd2.csv:1: error: row has 2 fields; expected 268435456' -- eval huge_input.nn --data d2.csv
expect "huge input, random data" 1 'huge_input.nn: error: one example has 268435456 input and target scalars' -- gradcheck huge_input.nn
# Still checkable, printable and emittable: those do not allocate per element.
expect "giant check" 0 '' -- check giant.nn
expect "giant grad" 0 '' -- grad giant.nn
expect "giant emit-cpp" 0 '' -- emit-cpp giant.nn -o cpp

# --- hostile sources: every command gives check's diagnostic ------------------------------------
printf '0.5,0.5,0.5,1\n' >"$W/any.csv"
for base in fail_deep_parens fail_long_line fail_long_line_stray fail_nul_byte fail_invalid_utf8 \
            fail_number_out_of_range fail_too_deep; do
  src=$ROOT/tests/golden/fail/$base.nn
  [[ -f $src ]] || { failed=$((failed + 1)); echo "FAIL $base: $src is missing"; continue; }
  cp "$src" "$W/$base.nn"
  for cmd in grad "eval --data any.csv" "eval --data any.csv --engine interp" gradcheck \
             "train --data any.csv" "emit-cpp -o cpp" ir; do
    read -r -a words <<<"$cmd"
    expect "$base [$cmd]" 1 '' -- "${words[0]}" "$base.nn" "${words[@]:1}"
    if ! cmp -s "$W/err" "$src.expected"; then
      failed=$((failed + 1)); passed=$((passed - 1))
      echo "FAIL $base [$cmd]: stderr differs from check's (tests/golden/fail/$base.nn.expected):"
      diff "$src.expected" "$W/err" | head -n 10 | sed 's/^/  | /'
    fi
  done
done

# --- long chains of statements -----------------------------------------------------------------
chain() { # chain N FILE: v0 = x * w, then N-1 statements v_k = tanh(v_{k-1})
  { printf 'input x[3]\nparam w[3] = 0.5\nv0 = x * w\n'
    for ((k = 1; k < $1; k++)); do printf 'v%d = tanh(v%d)\n' "$k" $((k - 1)); done
    printf 'output v%d\nloss E = sum(v%d)\n' $(($1 - 1)) $(($1 - 1)); } >"$W/$2"
}
chain 20000 chain20k.nn # fused into one expression, 20,000 levels deep, lowering overflowed the stack
printf '1,2,3\n' >"$W/c.csv"
expect "20,000 chained statements: loops" 0 '' -- check --emit loops chain20k.nn
expect "20,000 chained statements: eval (interp)" 0 '' -- eval chain20k.nn --data c.csv --engine interp
chain 1000 chain1k.nn # the JIT took more than 10 minutes with all kernels in one LLVM function
expect "1,000 chained statements: eval (jit), in time" 0 '' LIMITS_TIMEOUT=60 -- eval chain1k.nn --data c.csv --engine jit
expect "1,000 chained statements: gradcheck (jit)" 0 '' LIMITS_TIMEOUT=60 -- gradcheck chain1k.nn

# 20,000 declarations: each kernel's formula was printed with a map of every declaration built
# for it (quadratic; 17 s), and the simplifier swept the whole graph for every root.
{ printf 'input x\n'
  for ((k = 0; k < 20000; k++)); do printf 'param p%d = 0.5\nv%d = p%d * x\n' "$k" "$k" "$k"; done
  printf 'loss E = v0'
  for ((k = 1; k < 1990; k++)); do printf ' + v%d' "$k"; done
  printf '\n'; } >"$W/manyp.nn"
printf '1\n2\n' >"$W/one.csv"
expect "20,000 params: eval (interp), in time" 0 '' LIMITS_TIMEOUT=30 -- eval manyp.nn --data one.csv --engine interp
expect "20,000 params: grad, in time" 0 '' LIMITS_TIMEOUT=30 -- grad manyp.nn

# --- endless and oversized files ------------------------------------------------------------------
# A character device other than a terminal is refused before reading (issue 16: /dev/zero as data
# took a minute and 8.5 GB); an endless pipe is read up to the limit.
expect "source: /dev/zero" 1 '^/dev/zero: error: cannot read: it is a character device, not a file$' -- check /dev/zero
expect "source: an endless pipe" 1 '^/dev/fd/[0-9]+: error: file is larger than 16.0 MiB, the most that can be read$' -- check <(cat /dev/zero)
head -c 17000000 /dev/zero | tr '\0' '#' >"$W/big_source.nn"
expect "source: 17 MB" 1 '^big_source.nn: error: file is 16.2 MiB; at most 16.0 MiB can be read$' -- grad big_source.nn
printf 'input x[2]\ntarget t\ny = sum(x)\nloss E = (y - t) ^ 2\noutput y\n' >"$W/tiny.nn"
expect "data: an endless pipe" 1 '^/dev/fd/[0-9]+: error: file is larger than 16.0 MiB, the most that can be read \(a quarter of the 64.0 MiB allowed by NABLA_MEMORY_LIMIT=64M\)$' \
  NABLA_MEMORY_LIMIT=64M -- eval tiny.nn --data <(cat /dev/zero)
expect "params: an endless pipe" 1 '^/dev/fd/[0-9]+: error: file is larger than 16.0 MiB' NABLA_MEMORY_LIMIT=64M -- predict tiny.nn --params <(cat /dev/zero) --data d3.csv
expect "data: /dev/zero" 1 '^/dev/zero: error: cannot read: it is a character device, not a file$' -- eval tiny.nn --data /dev/zero
expect "params: /dev/urandom" 1 '^/dev/urandom: error: cannot read: it is a character device, not a file$' -- predict tiny.nn --params /dev/urandom --data d3.csv

# --- hostile data and params files ---------------------------------------------------------------
printf 'input x[2]\ntarget t\nparam w[2]\nparam b\ny = dot(w, x) + b\noutput y\nloss E = (y - t) ^ 2\n' >"$W/small.nn"
head -c 100000 /dev/zero | tr '\0' '[' >"$W/deep.json"
expect "params: 100,000 open brackets" 1 'deep.json: error: expected an object .* found an array' -- predict small.nn --params deep.json --data d3.csv
{ printf '{"w": '; head -c 100000 /dev/zero | tr '\0' '['; } >"$W/deep2.json"
expect "params: 100,000 brackets in a value" 1 'deep2.json: error: param "w": element \[0\] is an array; expected a number' -- predict small.nn --params deep2.json --data d3.csv
printf '{"w": [1, 2], "b": 1e400}' >"$W/range.json"
expect "params: number out of range" 1 'range.json:1:20: error: number overflow' -- predict small.nn --params range.json --data d3.csv
printf '{"w": [1, 2], "b": 1\0}' >"$W/nul.json"
expect "params: NUL byte" 1 'nul.json:1:21: error: ' -- predict small.nn --params nul.json --data d3.csv
printf '{"w": [1, 2], "b\xff": 1}' >"$W/utf8.json"
expect "params: not UTF-8" 1 'utf8.json:1:17: error: .*ill-formed UTF-8' -- predict small.nn --params utf8.json --data d3.csv
printf '{"w": [1, 2], "b": 0.5}' >"$W/ok.json"
printf '1,2,1e400\n' >"$W/range.csv"
expect "data: number out of range" 1 'range.csv:1: error: column 3: "1e400" is out of the double range' -- eval small.nn --data range.csv
# Beyond f32 but within f64: an error at the number for f32 (not an infinity that ends training
# later with a NaN loss), read for f64.
printf '1,2,0\n1,1e300,0\n' >"$W/f32.csv"
expect "data: beyond f32, train" 1 'f32.csv:2: error: column 2: "1e300" is out of the f32 range .*--dtype f64 reads it' -- train small.nn --data f32.csv
expect "data: beyond f32, eval" 1 'f32.csv:2: error: column 2: "1e300" is out of the f32 range' -- eval small.nn --data f32.csv
expect "data: beyond f32, predict" 1 'f32.csv:2: error: column 2: "1e300" is out of the f32 range' -- predict small.nn --params ok.json --data f32.csv
expect "data: beyond f32 is fine for f64" 0 '' -- eval small.nn --data f32.csv --dtype f64
printf '{"w": [1, -4e38], "b": 0.5}' >"$W/f32.json"
expect "params: beyond f32, predict" 1 'f32.json: error: param "w" element \[1\] is -4e\+38, out of the f32 range' -- predict small.nn --params f32.json --data d3.csv
expect "params: beyond f32, train --init" 1 'f32.json: error: param "w" element \[1\]' -- train small.nn --data d3.csv --init f32.json
expect "params: beyond f32, emit-cpp" 1 'f32.json: error: param "w" element \[1\]' -- emit-cpp small.nn -o cpp --params f32.json
expect "params: beyond f32 is fine for f64" 0 '' -- predict small.nn --params f32.json --data d3.csv --dtype f64
printf '1,2,0\n1,\0,0\n' >"$W/nul.csv"
expect "data: NUL byte" 1 'nul.csv:2: error: column 2: "\\x00" is not a number' -- eval small.nn --data nul.csv
printf 'x\xff,y,t\n1,2,3\n' >"$W/header.csv"
expect "data: a header that is not UTF-8" 0 '' -- eval small.nn --data header.csv
printf '1,2,0\n1,\xc3,0\n' >"$W/utf8.csv"
expect "data: not UTF-8" 1 'utf8.csv:2: error: column 2: "\\xc3" is not a number' -- eval small.nn --data utf8.csv
{ printf '1,2,'; head -c 10000000 /dev/zero | tr '\0' '7'; printf '\n'; } >"$W/long.csv"
expect "data: a 10 MB line" 1 'long.csv:1: error: column 3: "7777777777.*\.\.\." is out of the double range' -- eval small.nn --data long.csv
{ for ((i = 0; i < 100000; i++)); do printf '1,2,'; done; printf '3\n'; } >"$W/wide.csv2"
expect "data: 200,001 fields" 1 'wide.csv2:1: error: row has 200001 fields; expected 3' -- eval small.nn --data wide.csv2
printf '1,2,0\n1,-,0\n' >"$W/minus.csv" # read a byte past the field (fuzz_csv, sign_only_field_overread)
expect "data: a sign alone" 1 'minus.csv:2: error: column 2: "-" is not a number' -- eval small.nn --data minus.csv

# --- chunks: a large work space an example -------------------------------------------------------
# A value of 2^20 elements an example (4-8 MiB) makes a call's work space grow with its rows;
# eval, predict and train's evaluations go through the data in chunks whose work space stays
# under 256 MiB, so 400 rows (3.2 GiB in one piece) run within NABLA_MEMORY_LIMIT=1500M, and the
# chunked mean loss and gradient are the interpreter's (one example at a time) to 1e-12 in f64.
printf 'input x[1024]\ntarget t\nparam w[1024]\nh = reshape(x * w, [1024, 1]) * reshape(x, [1, 1024])\ny = mean(tanh(h))\noutput y\nloss E = (y - t) ^ 2\n' >"$W/wide.nn"
awk 'BEGIN { srand(7); for (r = 0; r < 400; ++r) { line = ""; for (c = 0; c < 1025; ++c) line = line (c ? "," : "") sprintf("%.3f", rand() - 0.5); print line } }' >"$W/wide.csv"
head -n 40 "$W/wide.csv" >"$W/wide40.csv"
awk 'BEGIN { printf "{\"w\": ["; for (i = 0; i < 1024; ++i) printf "%s%.4f", (i ? ", " : ""), (i % 7) / 7 - 0.5; print "]}" }' >"$W/wide.json"
expect "chunks: eval of 400 big rows within the limit" 0 '' NABLA_MEMORY_LIMIT=1500M -- eval wide.nn --data wide.csv --dtype f64
expect "chunks: predict of 400 big rows within the limit" 0 'loss: ' NABLA_MEMORY_LIMIT=1500M -- predict wide.nn --params wide.json --data wide.csv --dtype f64
for engine in jit interp; do
  (cd "$W" && timeout 300 "$NABLA" eval wide.nn --data wide40.csv --dtype f64 --engine $engine --json >"chunk_$engine.json" 2>/dev/null)
done
if python3 - "$W/chunk_jit.json" "$W/chunk_interp.json" <<'PY'
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
d = max([abs(a["loss"] - b["loss"])] + [abs(x - y) for x, y in zip(a["grads"]["w"], b["grads"]["w"])])
sys.exit(0 if d < 1e-12 and len(a["grads"]["w"]) == 1024 else print("differ by", d) or 1)
PY
then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL chunks: the JIT's chunked eval against the interpreter"; fi

echo "limits: $passed passed, $failed failed"
((failed == 0))
