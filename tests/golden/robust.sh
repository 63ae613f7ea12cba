#!/usr/bin/env bash
# Robustness of the nabla binary against hostile input: no input makes it crash, hang or exit
# with anything but 0 or 1.
#
#   bash tests/golden/robust.sh PATH/TO/nabla [--keep DIR]
#
# About 300 inputs are generated deterministically (a fixed-seed Park-Miller generator in bash
# arithmetic, no /dev/urandom) from the ok/ golden programs and samples/: truncations every 7th
# byte, byte substitutions (control bytes, NUL, bytes above 0x7F, brackets, operators), duplicated
# and deleted lines, token soup from a fixed list, random well-formed expressions over a fixed
# set of declarations (which reach sema, autodiff and the interpreter), and a few classic cases
# (deep nesting, long lines, huge shapes, lone CRs). Each input goes through `check`, `grad` and
# `eval --data` with a small CSV that fits the program it was derived from, under `timeout 10`
# (grad and eval on a fourth of the inputs that check rejects: they share its front end), with
# the interpreter, and with the JIT on a fourth of the inputs that check; `explain --data` (its
# numbers checked against the JIT) on another fourth of those.
# With --keep DIR, the generated inputs are left in DIR for reproducing a failure.
set -u

if [[ $# -lt 1 ]]; then
  echo "usage: $0 PATH/TO/nabla [--keep DIR]" >&2
  exit 2
fi
NABLA=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
[[ -x "$NABLA" ]] || { echo "robust: $NABLA is not an executable" >&2; exit 2; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
if [[ "${2:-}" == --keep && -n "${3:-}" ]]; then
  WORK=$3
  rm -rf "$WORK" && mkdir -p "$WORK"
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/nabla-robust.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
fi
export LC_ALL=C
START=$SECONDS
FAILDIR=${TMPDIR:-/tmp}/nabla-robust-failures

# --- a deterministic generator -------------------------------------------------------------
RNG=20240601
rnd() { # rnd N: sets R to a number in [0, N)
  RNG=$(((RNG * 48271) % 2147483647))
  R=$((RNG % $1))
}
pick() { # pick WORD...: sets P to one of the words
  rnd $#
  local i=$((R + 1))
  P=${!i}
}

# --- the seeds: the golden ok programs and the samples, with a CSV that fits each ------------
seeds=()
for f in "$HERE"/ok/*.nn "$ROOT"/samples/*.nn; do [[ -f "$f" ]] && seeds+=("$f"); done
if [[ ${#seeds[@]} -eq 0 ]]; then
  echo "robust: no seed programs found" >&2
  exit 2
fi

# csv_for PROGRAM OUT: a 3-row CSV with as many columns as the program has input and target
# scalars (from `nabla check`); one column when that fails, so eval has something to read.
csv_for() {
  local cols=1 line
  line=$(timeout 10 "$NABLA" check "$1" 2>/dev/null | tail -n 1)
  if [[ "$line" =~ ^([0-9]+)\ input\ scalars,\ ([0-9]+)\ target ]]; then
    cols=$((BASH_REMATCH[1] + BASH_REMATCH[2]))
  fi
  ((cols == 0)) && cols=1
  ((cols > 200)) && cols=200 # keep it small; a wrong column count is an error, which is fine
  : >"$2"
  local r c row
  for r in 1 2 3; do
    row=""
    for ((c = 0; c < cols; c++)); do
      rnd 9
      row+="${row:+,}0.$((R + 1))"
    done
    echo "$row" >>"$2"
  done
}

n=0
declare -a CASE_FILE CASE_CSV
add_case() { # add_case FILE CSV
  CASE_FILE[n]=$1
  CASE_CSV[n]=$2
  n=$((n + 1))
}
new_case() { # sets C to the path of a new case file
  C=$(printf '%s/case%04d.nn' "$WORK" "$n")
}

for i in "${!seeds[@]}"; do csv_for "${seeds[$i]}" "$WORK/seed$i.csv"; done

# 1. Truncations at every 7th byte of two seeds (every statement cut at many places).
for i in "${!seeds[@]}"; do
  s=${seeds[$i]}
  [[ $(basename "$s") == lecture.nn || $(basename "$s") == crlf.nn ]] || continue
  size=$(wc -c <"$s")
  for ((k = 0; k < size; k += 7)); do
    new_case
    head -c "$k" "$s" >"$C"
    add_case "$C" "$WORK/seed$i.csv"
  done
done

# 2. Byte substitutions: 3 bytes of a seed replaced by hostile ones.
hostile_bytes=(00 01 09 0a 0d 1b 7f 80 c3 ff 28 29 5b 5d 2c 3d 7e 2e 2d 5e 40 23 30 65 5f 41)
for ((j = 0; j < 60; j++)); do
  rnd ${#seeds[@]}
  i=$R
  s=${seeds[$i]}
  size=$(wc -c <"$s")
  cp "$s" "$WORK/tmp.nn"
  for m in 1 2 3; do
    rnd "$size"
    off=$R
    pick "${hostile_bytes[@]}"
    { head -c "$off" "$WORK/tmp.nn"; printf "\\x$P"; tail -c +$((off + 2)) "$WORK/tmp.nn"; } >"$WORK/tmp2.nn"
    mv "$WORK/tmp2.nn" "$WORK/tmp.nn"
  done
  new_case
  mv "$WORK/tmp.nn" "$C"
  add_case "$C" "$WORK/seed$i.csv"
done

# 3. Duplicated and deleted lines (redefinitions, second losses, uses before definitions).
for ((j = 0; j < 40; j++)); do
  rnd ${#seeds[@]}
  i=$R
  s=${seeds[$i]}
  lines=$(wc -l <"$s")
  ((lines > 0)) || lines=1
  rnd "$lines"
  a=$((R + 1))
  rnd "$lines"
  b=$((R + 1))
  new_case
  if ((j % 2 == 0)); then
    awk -v a="$a" -v b="$b" '{ print } NR == b { print l } NR == a { l = $0 }' "$s" >"$C"
    awk -v a="$a" '{ print } NR == a { print }' "$s" >>"$C"
  else
    awk -v a="$a" 'NR != a' "$s" >"$C"
  fi
  add_case "$C" "$WORK/seed$i.csv"
done

# 4. Token soup from a fixed list.
tokens=(input target param output loss x y t W h h.W h.b h.c = '~' '(' ')' '[' ']' , + - '*' /
        @ ^ 3 0 0.5 1e-3 1. 1e400 -1 2.5E+2 sum mean dense tanh softmax transpose dot mse
        cross_entropy normal uniform glorot linear relu '#' $'\n' $'\n' $'\n' $'\r\n' '$' 'é')
for ((j = 0; j < 60; j++)); do
  new_case
  rnd 2
  if ((R == 0)); then printf 'input x[3]\ntarget t[3]\nparam W[3, 3]\n' >"$C"; else : >"$C"; fi
  rnd 60
  count=$((R + 5))
  for ((k = 0; k < count; k++)); do
    pick "${tokens[@]}"
    printf '%s ' "$P" >>"$C"
  done
  echo >>"$C"
  add_case "$C" "$WORK/soup.csv"
done
printf '0.1,0.2,0.3,0.4,0.5,0.6\n0.6,0.5,0.4,0.3,0.2,0.1\n' >"$WORK/soup.csv"

# 5. Random well-formed expressions over fixed declarations: many check, and then go through
#    autodiff, the simplifier, the grad printer and the interpreter.
atoms=(x x v W M s t 2 0.5 1e-3 b h h.W h.b)
unary_fns=(logistic sigmoid tanh relu softplus exp log sqrt abs sum mean softmax log_softmax
           transpose)
binary_fns=(dot mse cross_entropy bce)
gen_expr() { # gen_expr DEPTH: sets E
  local d=$1 l r
  rnd 10
  if ((d <= 0 || R < 3)); then
    pick "${atoms[@]}"
    E=$P
    return
  fi
  case $R in
    3 | 4) gen_expr $((d - 1)); l=$E; gen_expr $((d - 1)); r=$E
           pick + - '*' / @; E="$l $P $r" ;;
    5) gen_expr $((d - 1)); l=$E; pick 2 -1 0.5 3; E="($l) ^ $P" ;;
    6) gen_expr $((d - 1)); E="-$E" ;;
    7) gen_expr $((d - 1)); l=$E; pick "${unary_fns[@]}"; E="$P($l)" ;;
    8) gen_expr $((d - 1)); l=$E; gen_expr $((d - 1)); r=$E
       pick "${binary_fns[@]}"; E="$P($l, $r)" ;;
    *) gen_expr $((d - 1)); l=$E; pick sum mean; rnd 3; E="$P($l, $R)" ;;
  esac
  rnd 3
  ((R == 0)) && E="($E)"
}
for ((j = 0; j < 60; j++)); do
  new_case
  {
    printf 'input x[3]\ninput M[2, 3]\ninput s\ntarget t[3]\n'
    printf 'param W[3, 3] ~ normal(0, 0.5)\nparam v[3] ~ uniform(0.5, 1.5)\nparam b = 0.5\n'
    printf 'h = dense(x, 3, tanh)\n'
    gen_expr 3
    printf 'y = %s\n' "$E"
    gen_expr 3
    printf 'loss E = sum(y) + sum(%s)\n' "$E"
    printf 'output y\n'
  } >"$C"
  add_case "$C" "$WORK/expr.csv"
done
printf 'x1,x2,x3,m1,m2,m3,m4,m5,m6,s,t1,t2,t3\n' >"$WORK/expr.csv"
printf '0.5,1,1.5,1,2,3,4,5,6,0.25,0,1,0\n1,1,1,-1,-2,-3,-4,-5,-6,2,1,0,0\n' >>"$WORK/expr.csv"

# 6. Classic hostile inputs.
classic() { # a new case from $WORK/in (not from a pipe: a pipeline runs in a subshell)
  new_case
  mv "$WORK/in" "$C"
  add_case "$C" "$WORK/soup.csv"
}
: >"$WORK/in"; classic
printf '\n\n\n' >"$WORK/in"; classic
printf '\r\r\rinput x[3]\rloss E = sum(x)\r' >"$WORK/in"; classic
head -c 4096 /dev/zero >"$WORK/in"; classic
printf '\xef\xbb\xbfinput x[3]\nloss E = sum(x)\n' >"$WORK/in"; classic
{ printf 'input x[3]\ny = '; head -c 300000 /dev/zero | tr '\0' '('; } >"$WORK/in"; classic
{ printf 'input x[3]\ny = '; head -c 300000 /dev/zero | tr '\0' '-'; printf 'x\n'; } >"$WORK/in"; classic
{ printf 'input x[3]\ny = x'; for ((k = 0; k < 20000; k++)); do printf ' * x'; done; echo; } >"$WORK/in"; classic
{ printf 'input x[3]\n'; for ((k = 0; k < 3000; k++)); do printf 'v%d = x\n' "$k"; done; } >"$WORK/in"; classic
{ printf 'input x[3]\nv0 = x\n'; for ((k = 1; k < 1500; k++)); do printf 'v%d = v%d + v%d\n' "$k" $((k - 1)) $((k - 1)); done; printf 'loss E = sum(v1499)\n'; } >"$WORK/in"; classic
printf 'input x[16384, 16384]\nparam W[16384, 16384]\nloss E = sum(W @ x)\n' >"$WORK/in"; classic
printf 'input x[1, 268435456]\nloss E = sum(x)\n' >"$WORK/in"; classic
printf 'input x[9223372036854775807, 9223372036854775807]\nloss E = sum(x)\n' >"$WORK/in"; classic
printf 'input x[3]\nparam p[3] = 1e308\nloss E = sum(exp(p * x) * 1e308)\n' >"$WORK/in"; classic
printf 'input x[3]\nh = dense(x, 268435456, tanh)\nloss E = sum(h)\n' >"$WORK/in"; classic
printf 'input x[3]\ny = x ^ -1e308 ^\nloss E = sum(x ^ 1e-308)\n' >"$WORK/in"; classic
{ printf 'input x[3]\ny = x'; head -c 100000 /dev/zero | tr '\0' ' '; printf '$\n'; } >"$WORK/in"; classic

echo "robust: $n inputs generated in $((SECONDS - START)) s"

# --- run them --------------------------------------------------------------------------------
failed=0
runs=0
skipped=0
for ((k = 0; k < n; k++)); do
  f=${CASE_FILE[k]}
  for cmd in check grad eval eval-jit explain; do
    # grad and eval compile the program as check does: where check rejects it, they only run
    # on every fourth input, to keep the test fast. The JIT engine (slower to start) runs on
    # every fourth input that checks.
    if [[ $cmd != check && $check_status -eq 1 && $((k % 4)) -ne 0 ]] ||
       [[ $cmd == eval-jit && ($check_status -ne 0 || $((k % 4)) -ne 0) ]] ||
       [[ $cmd == explain && ($check_status -ne 0 || $((k % 4)) -ne 1) ]]; then
      skipped=$((skipped + 1))
      continue
    fi
    args=("$cmd" "$f")
    [[ $cmd == eval ]] && args+=(--data "${CASE_CSV[k]}" --engine interp)
    [[ $cmd == eval-jit ]] && args=(eval "$f" --data "${CASE_CSV[k]}" --engine jit)
    # explain with numbers: the interpreter's terms checked against the JIT (exit 2 on a mismatch)
    [[ $cmd == explain ]] && args+=(--data "${CASE_CSV[k]}")
    timeout 10 "$NABLA" "${args[@]}" >/dev/null 2>"$WORK/err"
    status=$?
    [[ $cmd == check ]] && check_status=$status
    runs=$((runs + 1))
    if [[ $status -ne 0 && $status -ne 1 ]]; then
      failed=$((failed + 1))
      case $status in
        124) why="timed out after 10 s" ;;
        *) if ((status > 128)); then why="killed by signal $((status - 128))"; else why="exit status $status"; fi ;;
      esac
      echo "FAIL nabla ${args[*]}: $why (input: $(basename "$f"), $(wc -c <"$f") bytes)"
      head -c 2000 "$WORK/err" | sed 's/^/  | /'
      mkdir -p "$FAILDIR"
      cp "$f" "${CASE_CSV[k]}" "$FAILDIR/" 2>/dev/null
      echo "  the input is kept in $FAILDIR/$(basename "$f")"

    fi
  done
done

echo "robust: $runs runs on $n inputs ($skipped skipped), $failed failed, in $((SECONDS - START)) s"
((failed == 0))
