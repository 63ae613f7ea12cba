#!/usr/bin/env bash
# Hostile conditions around the nabla binary (issue 16): threads the system refuses, files planted
# where nabla writes, standard output that cannot be written, params that diverge on the last
# step, outputs that are inputs, output targets that cannot take a file, endless devices, the
# emitted --main trainer's save, emit-cpp names and partial writes, SVG with bytes that are not
# UTF-8, and out-of-memory messages. Each check failed before its fix.
#
#   bash tests/hostile/run.sh PATH/TO/nabla
set -u
if [[ $# -lt 1 ]]; then
  echo "usage: $0 PATH/TO/nabla" >&2
  exit 2
fi
NABLA=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
W=$(mktemp -d "${TMPDIR:-/tmp}/nabla-hostile.XXXXXX")
chmod 755 "$W" # an unprivileged user runs nabla here too
trap 'rm -rf "$W"' EXIT
export LC_ALL=C
unset NABLA_MEMORY_LIMIT
passed=0
failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }
skip() { echo "SKIP $*"; }
# ASan reserves terabytes of address space: `ulimit -v` cannot apply to an instrumented binary.
asan=0
grep -q __asan_init "$NABLA" 2>/dev/null && asan=1

# run [ENV=VALUE...] -- ARGS...: nabla in $W under `timeout`, stdout to $W/out, stderr to $W/err;
# sets $status.
run() {
  local envs=()
  while [[ $# -gt 0 && $1 != -- ]]; do envs+=("$1"); shift; done
  shift
  (cd "$W" && exec env "${envs[@]}" timeout -k 5 "${HOSTILE_TIMEOUT:-60}" "$NABLA" "$@" >"$W/out" 2>"$W/err")
  status=$?
}

# expect NAME STATUS PATTERN [ENV=VALUE...] -- ARGS...: the exit status must be STATUS and stderr
# must match the extended regex PATTERN (empty: anything).
expect() {
  local name=$1 want=$2 pattern=$3
  shift 3
  run "$@"
  if [[ $status -ne $want ]] || { [[ -n $pattern ]] && ! grep -Eq -- "$pattern" "$W/err"; }; then
    bad "$name: exited $status (expected $want), stderr:"
    head -c 1500 "$W/err" | sed 's/^/  | /'
    [[ -n $pattern ]] && echo "  (expected stderr to match: $pattern)"
    return 1
  fi
  ok
}

# check NAME CONDITION...: CONDITION (a command) must succeed.
check() {
  local name=$1
  shift
  if "$@"; then ok; else bad "$name"; fi
}

printf 'input x[2]\ntarget t\nparam w[2]\nparam b\ny = dot(w, x) + b\noutput y\nloss E = (y - t) ^ 2\n' >"$W/s.nn"
for ((i = 0; i < 200; i++)); do printf '0.%d,0.%d,0.%d\n' $((i % 7)) $((i % 5)) $((i % 3)); done >"$W/d.csv"
chmod 644 "$W"/*

# --- 1. threads that cannot start ----------------------------------------------------------------
# `eval --threads 16` aborted ("terminate called without an active exception"), `train --threads
# 16` hung in its pool's constructor. Now the threads that started (or just the caller) do the work.
threads_cmds=("eval s.nn --data d.csv --threads 16" "train s.nn --data d.csv --threads 16 --batch 200 --epochs 2")
if ((asan)); then
  skip "1. threads under ulimit -v: an ASan build cannot run under an address-space limit"
else
  # 100 MiB a thread stack (RLIMIT_STACK is glibc's default stack size), 600 MB of address space.
  for cmd in "${threads_cmds[@]}"; do
    read -r -a words <<<"$cmd"
    (ulimit -s 102400 && ulimit -v 600000 && HOSTILE_TIMEOUT=30 && run -- "${words[@]}" && exit "$status")
    st=$?
    if [[ $st -ne 0 ]]; then
      bad "1. ${words[0]} --threads 16 under ulimit -s 102400 -v 600000: exited $st"; head -c 600 "$W/err"
    else ok; fi
  done
fi
if [[ $(id -u) -eq 0 ]] && command -v setpriv >/dev/null; then
  # An unprivileged user allowed 6 processes (threads count): `ulimit -u` binds no root process.
  # The binary is copied beside the data: the build folder may lie below a directory that only
  # root may enter (a fresh clone in a mktemp folder, as CI makes).
  cp "$NABLA" "$W/nabla-nobody" && chmod 755 "$W/nabla-nobody"
  for cmd in "${threads_cmds[@]}"; do
    (cd "$W" && timeout -k 5 30 setpriv --reuid=65534 --regid=65534 --clear-groups \
       bash -c "ulimit -u 6 && exec \"\$0\" $cmd" "$W/nabla-nobody" >"$W/out" 2>"$W/err")
    st=$?
    if [[ $st -ne 0 ]]; then
      bad "1. ${cmd%% *} --threads 16 as nobody under ulimit -u 6: exited $st"; head -c 600 "$W/err"
    else ok; fi
  done
else
  skip "1. threads under ulimit -u: needs root (to become nobody) and setpriv"
fi

# --- 2. temporary files are created exclusively ----------------------------------------------------
# A symbolic link planted at PATH.tmp.<pid> (the pid is known: `exec` keeps it) made --save, --log,
# --plot and emit-cpp overwrite its target; a regular file there was clobbered. Now another name
# is used and both stay as they were.
# planted LABEL TARGET ARGS...: runs nabla ARGS... in $W/p with a link TARGET.tmp.<pid> -> victim
# and a regular file at the temporary name of a file nabla does not write.
planted() {
  local label=$1 target=$2
  shift 2
  rm -rf "$W/p" && mkdir "$W/p" && printf 'precious\n' >"$W/p/victim" && cp "$W/s.nn" "$W/d.csv" "$W/p/"
  (cd "$W/p" && exec bash -c 'ln -s victim "$1.tmp.$$" && printf "mine\n" >"$2.tmp.$$" && shift 2 && exec "$@"' \
     _ "$target" "${target%.*}.other" "$NABLA" "$@" >"$W/out" 2>"$W/err")
  local st=$?
  local why=""
  [[ $st -eq 0 ]] || why="exited $st"
  [[ $(cat "$W/p/victim") == precious ]] || why="$why; the link's target was overwritten"
  [[ -s "$W/p/$target" ]] || why="$why; $target was not written"
  [[ -L "$W/p/$target" ]] && why="$why; $target is still the planted link"
  if [[ -n $why ]]; then bad "2. a symlink planted at the temporary file of $label: $why"; head -c 600 "$W/err"; else ok; fi
  # A regular file at PATH.tmp.<pid> of a file nabla does not write here stays.
  check "2. $label: a stranger's PATH.tmp.<pid> file stays" \
    bash -c "[[ \$(cat '$W/p/'*.other.tmp.*) == mine ]]"
}
planted "train --save" out.json train s.nn --data d.csv --epochs 1 --save out.json
planted "train --log" out.csv train s.nn --data d.csv --epochs 1 --log out.csv
planted "train --plot" out.svg train s.nn --data d.csv --epochs 1 --plot out.svg
planted "emit-cpp" s.hpp emit-cpp s.nn -o .
# A regular file planted at the first name is neither truncated nor removed.
rm -rf "$W/p" && mkdir "$W/p" && cp "$W/s.nn" "$W/d.csv" "$W/p/"
(cd "$W/p" && exec bash -c 'printf "mine\n" >"out.json.tmp.$$" && exec "$@"' _ "$NABLA" train s.nn --data d.csv --epochs 1 --save out.json >"$W/out" 2>"$W/err")
st=$?
check "2. a regular file planted at the temporary name: train exits 0 (got $st)" test "$st" -eq 0
check "2. a regular file planted at the temporary name stays" bash -c "[[ \$(cat '$W/p/'out.json.tmp.*) == mine ]]"
check "2. ... and the params are saved" grep -q '"w"' "$W/p/out.json"

# --- 3. standard output that cannot be written --------------------------------------------------
# `eval --json`, check, grad, ir and predict exited 0 with their output lost. Now: status 1 and a
# message; a reader that went away: status 0 or 1 and no SIGPIPE death (141).
(cd "$W" && "$NABLA" train s.nn --data d.csv --epochs 1 --save p.json >/dev/null 2>&1)
stdout_cmds=("eval s.nn --data d.csv --json" "check s.nn" "grad s.nn" "ir s.nn" "predict s.nn --params p.json --data d.csv")
for cmd in "${stdout_cmds[@]}"; do
  read -r -a words <<<"$cmd"
  (cd "$W" && timeout 60 "$NABLA" "${words[@]}" >/dev/full 2>"$W/err")
  st=$?
  if [[ $st -ne 1 ]] || ! grep -q '^nabla: error: cannot write the standard output: No space left on device$' "$W/err"; then
    bad "3. $cmd > /dev/full: exited $st, stderr: $(head -c 300 "$W/err")"
  else ok; fi
  (cd "$W" && timeout 60 "$NABLA" "${words[@]}" >&- 2>"$W/err")
  st=$?
  if [[ $st -ne 1 ]] || ! grep -q '^nabla: error: cannot write the standard output: ' "$W/err"; then
    bad "3. $cmd with standard output closed: exited $st, stderr: $(head -c 300 "$W/err")"
  else ok; fi
  # A pipe whose reader is gone before nabla writes (made so by python, not by a race with `head`).
  st=$(cd "$W" && python3 -c '
import os, subprocess, sys
r, w = os.pipe(); os.close(r)
p = subprocess.run(sys.argv[1:], stdout=w, stderr=subprocess.DEVNULL, timeout=60)
print(p.returncode if p.returncode >= 0 else 128 - p.returncode)' "$NABLA" "${words[@]}")
  if [[ $st != 0 && $st != 1 ]]; then bad "3. $cmd into a pipe nobody reads: exited $st (expected 0 or 1)"; else ok; fi
done
# And the usual case: `predict | head -1` with more output than a pipe holds.
for ((i = 0; i < 20000; i++)); do printf '0.%d,0.5\n' "$i"; done >"$W/many.csv"
(cd "$W" && timeout 60 "$NABLA" predict s.nn --params p.json --data many.csv 2>"$W/err" | head -1 >/dev/null; exit "${PIPESTATUS[0]}")
st=$?
if [[ $st != 0 && $st != 1 ]] || [[ -s $W/err ]]; then bad "3. predict | head -1: exited $st (expected 0 or 1, quietly): $(head -c 300 "$W/err")"; else ok; fi

# --- 4. params that diverge on the last update ------------------------------------------------------
# The update made w = 2e39, infinite in f32; the run exited 0 and wrote {"w": null} over a good file.
printf 'param w = 0\ninput x\ntarget t\ny = w * x\noutput y\nloss E = (y - t) ^ 2\n' >"$W/lin.nn"
printf '1e19,1\n' >"$W/lin.csv"
printf '{"w": 0.5}\n' >"$W/lin.json"
expect "4. a non-finite param after the last update stops training" 1 \
  '^lin.nn: error: training stopped at epoch 1, batch 1 of 1: after the update, param w is inf; the params diverged' \
  -- train lin.nn --data lin.csv --epochs 1 --lr 1e20 --save lin.json
check "4. ... and the good params file stays" grep -qx '{"w": 0.5}' "$W/lin.json"

# --- 7. outputs that are inputs ----------------------------------------------------------------------
# Each overwrote its input silently after training; now refused before training, the file intact.
cp "$W/d.csv" "$W/keep.csv" && cp "$W/s.nn" "$W/keep.nn" && cp "$W/p.json" "$W/keep.json"
expect "7. --save the data file" 1 "^d.csv: error: the --save file would overwrite the --data file 'd.csv'; choose another name$" \
  -- train s.nn --data d.csv --save d.csv
expect "7. --log the source" 1 "^./s.nn: error: the --log file would overwrite the source file 's.nn'" \
  -- train s.nn --data d.csv --log ./s.nn
expect "7. --save the --params file" 1 "^p.json: error: the --save file would overwrite the --params file '$W/p.json'" \
  -- train s.nn --data d.csv --params "$W/p.json" --save p.json
ln -sf d.csv "$W/link.csv"
expect "7. --plot a link to the data file" 1 "^link.csv: error: the --plot file would overwrite the --data file" \
  -- train s.nn --data d.csv --plot link.csv
expect "7. --save and --plot one new file" 1 "^./new.json: error: the --plot file and the --save file are the same file" \
  -- train s.nn --data d.csv --save new.json --plot ./new.json
check "7. ... and no training ran" bash -c "! grep -q '^training' '$W/err'"
check "7. the inputs are intact" bash -c "cmp -s '$W/d.csv' '$W/keep.csv' && cmp -s '$W/s.nn' '$W/keep.nn' && cmp -s '$W/p.json' '$W/keep.json' && [[ ! -e '$W/new.json' ]]"
expect "7. a device may take two outputs" 0 '' -- train s.nn --data d.csv --epochs 1 --log /dev/null --plot /dev/null

# --- 8. every output target is checked before training ----------------------------------------------
# --save DIR failed only after training; a FIFO that no process reads blocked after training.
mkdir -p "$W/adir"
expect "8. --save an existing directory" 1 "^adir: error: cannot write the --save file: Is a directory$" \
  -- train s.nn --data d.csv --save adir
check "8. ... before training" bash -c "! grep -q '^training' '$W/err'"
expect "8. --plot a name too long" 1 "error: cannot write the --plot file: File name too long$" \
  -- train s.nn --data d.csv --plot "$(printf 'x%.0s' {1..300}).svg"
mkfifo "$W/fifo"
expect "8. --log a FIFO that nobody reads: an error, not a wait" 1 "^fifo: error: cannot write: it is a FIFO that no process is reading$" \
  HOSTILE_TIMEOUT=20 -- train s.nn --data d.csv --epochs 1 --log fifo
# A FIFO with a reader is written in place.
(timeout 20 cat "$W/fifo" >"$W/fifo.out" &)
sleep 0.2
expect "8. --log a FIFO that is read" 0 '' -- train s.nn --data d.csv --epochs 1 --log fifo
sleep 0.2
check "8. ... and the reader got the log" grep -q '^epoch,' "$W/fifo.out"

# --- 9. endless devices ---------------------------------------------------------------------------
# `eval --data /dev/zero` took a minute and 8.5 GB before its error; `--params /dev/urandom` ran on.
# A character device other than a terminal is refused before it is read, at once.
expect "9. --data /dev/zero, at once" 1 '^/dev/zero: error: cannot read: it is a character device, not a file$' \
  HOSTILE_TIMEOUT=10 -- eval s.nn --data /dev/zero
expect "9. --params /dev/urandom, at once" 1 '^/dev/urandom: error: cannot read: it is a character device, not a file$' \
  HOSTILE_TIMEOUT=10 -- predict s.nn --params /dev/urandom --data d.csv
expect "9. train --init /dev/zero" 1 '^/dev/zero: error: cannot read: it is a character device, not a file$' \
  HOSTILE_TIMEOUT=10 -- train s.nn --data d.csv --init /dev/zero
expect "9. a source /dev/urandom" 1 '^/dev/urandom: error: cannot read: it is a character device, not a file$' \
  HOSTILE_TIMEOUT=10 -- check /dev/urandom
expect "9. /dev/null reads as empty" 1 '^/dev/null:1: error: no examples: the file is empty$' -- eval s.nn --data /dev/null
# An endless pipe is read up to a quarter of the budget (300 MiB of 1200M), and the buffer never
# grows past it: a string's doubling took 256 + 512 MiB here, more than this address space.
if ((asan)); then
  skip "9. the reader's memory under ulimit -v: an ASan build cannot run under an address-space limit"
else
  (ulimit -v 850000 && expect "9. an endless pipe within its budget" 1 \
     '^/dev/fd/[0-9]+: error: file is larger than 300.0 MiB, the most that can be read \(a quarter of the 1.2 GiB allowed by NABLA_MEMORY_LIMIT=1200M\)$' \
     NABLA_MEMORY_LIMIT=1200M -- eval s.nn --data <(cat /dev/zero) --threads 1 && exit 0; exit 1)
  if [[ $? -eq 0 ]]; then ok; else failed=$((failed + 1)); fi
fi

# --- 5. the emitted --main trainer's save ------------------------------------------------------------
# It wrote a fixed PATH.tmp (a planted symlink there was followed; two runs shared it) and renamed
# it over PATH (a symlink PATH was replaced, not its target; a FIFO or device node was replaced by a
# regular file). Now it writes as nabla does.
CXX=""
for c in g++ clang++; do command -v "$c" >/dev/null && { CXX=$c; break; }; done
if [[ -z $CXX ]]; then
  skip "5. the emitted trainer's save: no C++ compiler"
elif ! (cd "$W" && "$NABLA" emit-cpp s.nn --main -o gen >/dev/null 2>"$W/err" &&
        "$CXX" -std=c++17 -O1 -Wall -Wextra -Werror gen/s.cpp gen/s_main.cpp -o gen/train 2>>"$W/err"); then
  bad "5. emit-cpp --main does not compile:"; head -c 1500 "$W/err"
else
  T=$W/gen
  trainer() { (cd "$T" && timeout -k 5 20 ./train ../d.csv --epochs 1 "$@" >"$W/out" 2>"$W/err"); st=$?; }
  # A link planted at the old fixed name and at the first exclusive names (the pid is exec's).
  printf 'precious\n' >"$T/victim"
  (cd "$T" && exec bash -c 'for n in out.json.tmp "out.json.tmp.$$.0" "out.json.tmp.$$.1"; do ln -s victim "$n"; done; exec timeout -k 5 20 ./train ../d.csv --epochs 1 --save out.json' >"$W/out" 2>"$W/err")
  st=$?
  check "5. a planted link at the temporary name: the save succeeds (exit $st)" test "$st" -eq 0
  check "5. ... the link's target is untouched" grep -qx precious "$T/victim"
  check "5. ... and the params are in out.json, a regular file" bash -c "[[ -f '$T/out.json' && ! -L '$T/out.json' ]] && grep -q '\"w\"' '$T/out.json'"
  # A symbolic link PATH: its target is replaced, the link stays.
  printf 'old\n' >"$T/real.json" && ln -s real.json "$T/link.json"
  trainer --save link.json
  check "5. a symlink --save: exit 0 (got $st)" test "$st" -eq 0
  check "5. a symlink --save keeps the link" test -L "$T/link.json"
  check "5. ... and replaces its target" grep -q '"w"' "$T/real.json"
  # A FIFO with a reader is written in place, and stays a FIFO.
  mkfifo "$T/fifo"
  (timeout 20 cat "$T/fifo" >"$T/fifo.out" &)
  sleep 0.2
  trainer --save fifo
  sleep 0.2
  check "5. a FIFO --save stays a FIFO" test -p "$T/fifo"
  check "5. ... and its reader got the params" grep -q '"w"' "$T/fifo.out"
  # A FIFO nobody reads: an error at once, not a wait, and not replaced.
  trainer --save fifo
  check "5. a FIFO nobody reads: exit 1 (got $st)" test "$st" -eq 1
  check "5. ... it says why" grep -q '^fifo: error: cannot write: ' "$W/err"
  check "5. ... and stays a FIFO" test -p "$T/fifo"
  # A device is written in place: /dev/full says so (run as root, the old trainer replaced the node).
  if [[ -w /dev/full && $(id -u) -ne 0 ]]; then
    trainer --save /dev/full
    check "5. --save /dev/full: exit 1" grep -q '^/dev/full: error: cannot write: No space left on device' "$W/err"
  fi
  # Two runs at once have a temporary each: no leftovers, and both succeed.
  (cd "$T" && ./train ../d.csv --epochs 3 --save two.json >/dev/null 2>&1 & cd "$T" && ./train ../d.csv --epochs 3 --save two.json >/dev/null 2>&1; wait)
  check "5. two runs: no temporary files left" bash -c "! ls '$T' | grep -q '^two.json.tmp'"
  check "5. two runs: the params saved" grep -q '"w"' "$T/two.json"
fi

# --- 10. emit-cpp namespaces from any file name ----------------------------------------------------
# NULL, EOF, errno, main, real, size_t and FILE emitted C++ that did not compile; unix and linux
# failed in GNU modes; std emitted `namespace std`; __x and a__b and non-ASCII names gave reserved
# identifiers. Every one is compiled here (with --main, the trainer too) by g++ and clang++ in ISO
# and GNU modes.
stems=(NULL EOF errno main real size_t FILE unix linux std std2 __x a__b _Upper index random \
       Data Rng "$(printf 'caf\xc3\xa9')" "$(printf '\xff\xfe')" "x y" 2layer)
compilers=()
for c in g++ clang++; do command -v "$c" >/dev/null && compilers+=("$c"); done
if ((${#compilers[@]} == 0)); then
  skip "10. emit-cpp names: no C++ compiler"
else
  rm -rf "$W/names" && mkdir "$W/names"
  : >"$W/names/all.cpp"
  i=0
  for stem in "${stems[@]}"; do
    i=$((i + 1))
    mkdir "$W/names/$i" && cp "$W/s.nn" "$W/names/$i/$stem.nn"
    if ! (cd "$W/names/$i" && "$NABLA" emit-cpp "$stem.nn" --main --params ../../p.json -o gen >/dev/null 2>"$W/err"); then
      bad "10. emit-cpp $stem.nn: $(head -c 300 "$W/err")"; continue
    fi
    name=$(cd "$W/names/$i/gen" && ls ./*.hpp | sed 's|^\./||; s|\.hpp$||')
    [[ $name =~ ^[A-Za-z][A-Za-z0-9_]*$ && $name != *__* && ! $name =~ ^std[0-9]*$ ]] || { bad "10. $stem.nn: the name '$name' is not a plain identifier"; continue; }
    # Every stem's library in one translation unit (a namespace each), used from outside.
    printf '#include "%s/gen/%s.cpp"\nint use%d() { return static_cast<int>(%s::kParams); }\n' "$i" "$name" "$i" "$name" >>"$W/names/all.cpp"
  done
  # The libraries by both compilers in ISO and GNU modes (GNU modes predefine unix and linux);
  # each trainer (a translation unit a stem) by the first compiler in a GNU mode.
  for cxx in "${compilers[@]}"; do
    for std in c++17 gnu++17 c++20 gnu++20; do
      ("$cxx" -std="$std" -Wall -Wextra -Werror -fsyntax-only "$W/names/all.cpp" >"$W/names/err.$cxx.$std" 2>&1 ||
         { echo "$cxx -std=$std"; grep -m 5 error "$W/names/err.$cxx.$std"; } >"$W/names/fail.$cxx.$std") &
    done
    wait
  done
  for f in "$W"/names/*/gen/*_main.cpp; do
    ("${compilers[0]}" -std=gnu++17 -Wall -Wextra -Werror -fsyntax-only "$f" >"$f.err" 2>&1 ||
       { echo "${compilers[0]} -std=gnu++17 ${f#"$W"/names/}"; grep -m 5 error "$f.err"; } >"$f.fail") &
    (($(jobs -r | wc -l) >= 2)) && wait -n
  done
  wait
  for f in "$W"/names/fail.* "$W"/names/*/gen/*.fail; do
    [[ -e $f ]] || continue
    bad "10. emitted C++ that does not compile: $(head -1 "$f")"; tail -n +2 "$f" | sed 's/^/  | /'
  done
  ok
fi

# --- 11. emit-cpp writes all its files or none ---------------------------------------------------------
# A directory named NAME.cpp in DIR, or a NAME_main.cpp too long for the file system, left NAME.hpp
# (and NAME.cpp) behind.
rm -rf "$W/e11" && mkdir -p "$W/e11/out/s.cpp"
expect "11. a directory in the way of NAME.cpp" 1 '^e11/out/s.cpp: error: cannot write: Is a directory$' -- emit-cpp s.nn -o e11/out
check "11. ... and nothing was written" bash -c "[[ \$(ls -A '$W/e11/out') == s.cpp ]]"
long=$(printf 'n%.0s' {1..248}) # NAME.hpp and NAME.cpp fit in 255 bytes, NAME_main.cpp does not
cp "$W/s.nn" "$W/e11/$long.nn"
expect "11. NAME_main.cpp too long" 1 "error: cannot write: File name too long$" -- emit-cpp "e11/$long.nn" --main -o e11/long
check "11. ... and nothing was written" bash -c "[[ -z \$(ls -A '$W/e11/long' 2>/dev/null) ]]"
mid=$(printf 'm%.0s' {1..240}) # every name fits, but not with a .tmp.<pid> suffix
cp "$W/s.nn" "$W/e11/$mid.nn"
expect "11. names that fit only without a suffix" 0 '' -- emit-cpp "e11/$mid.nn" --main -o e11/mid
check "11. ... all three written, no temporary left" bash -c "[[ \$(ls -A '$W/e11/mid' | wc -l) == 3 ]]"

# --- 12. SVG plots are well-formed XML, whatever the source file's name --------------------------------
# Bytes that are not UTF-8 in the file name went raw into the plot's <text>.
rm -rf "$W/svg" && mkdir "$W/svg"
i=0
for stem in "$(printf 'bad\xff\xfename')" "$(printf 'caf\xc3\xa9 \xe2\x88\x87')" "$(printf 'ctl\x01\x1b[0m')" \
            "$(printf 'over\xc0\xaflong')" "$(printf 'sur\xed\xa0\x80rogate')" "a&b<c>\"d\"" "$(printf 'cut\xe2\x88')"; do
  i=$((i + 1))
  cp "$W/s.nn" "$W/svg/$stem.nn"
  (cd "$W/svg" && timeout 60 "$NABLA" train "$stem.nn" --data ../d.csv --epochs 2 --plot "plot$i.svg" >/dev/null 2>"$W/err")
  if [[ ! -s $W/svg/plot$i.svg ]]; then bad "12. no plot for stem $i: $(head -c 300 "$W/err")"; continue; fi
  if msg=$(python3 -c 'import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])' "$W/svg/plot$i.svg" 2>&1); then ok
  else bad "12. the plot of stem $i ($(printf '%q' "$stem")) is not well-formed XML: $(tail -1 <<<"$msg")"; fi
done
check "12. valid UTF-8 in the name stays as it is" grep -q "$(printf 'caf\xc3\xa9 \xe2\x88\x87')" "$W/svg/plot2.svg"

# --- 13. out of memory while compiling -----------------------------------------------------------------
# Under `ulimit -v`, "out of memory while compiling" came without the `nabla: error:` prefix, or
# LLVM printed "LLVM ERROR: out of memory" and aborted, or a compile thread was left joinable
# (std::terminate). A sweep of address-space limits across the compile (two LLVM modules on two
# threads): every run finishes with status 0, or 1 and messages that all have nabla's prefix.
if ((asan)); then
  skip "13. out of memory under ulimit -v: an ASan build cannot run under an address-space limit"
else
  { printf 'input x[64]\ntarget t\nparam W[64, 64] ~ glorot\nv0 = tanh(W @ x)\n'
    for k in $(seq 1 12); do printf 'v%d = tanh(W @ v%d)\n' "$k" $((k - 1)); done
    printf 'y = sum(v12)\noutput y\nloss E = (y - t) ^ 2\n'; } >"$W/deep.nn"
  { for k in $(seq 1 64); do printf '0.5,'; done; printf '1\n'; } >"$W/deep.csv"
  swept=0
  for ((v = 170000; v <= 420000; v += 10000)); do
    (ulimit -v "$v" && cd "$W" && exec timeout -k 5 60 "$NABLA" eval deep.nn --data deep.csv --threads 1 >/dev/null 2>"$W/err.13")
    st=$?
    # 127: the dynamic loader could not map nabla's libraries, before nabla runs at all.
    [[ $st -eq 127 ]] && grep -q 'error while loading shared libraries' "$W/err.13" && continue
    swept=$((swept + 1))
    if [[ $st -ne 0 && $st -ne 1 ]] || grep -Ev '^(nabla: (error|internal error)|deep\.nn:)' "$W/err.13" | grep -q .; then
      bad "13. eval under ulimit -v $v: exited $st, stderr:"; head -c 600 "$W/err.13" | sed 's/^/  | /'
    else ok; fi
  done
  check "13. the sweep ran nabla (at least 5 limits where it starts)" test "$swept" -ge 5
fi

echo "hostile: $passed passed, $failed failed"
((failed == 0))
