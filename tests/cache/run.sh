#!/usr/bin/env bash
# Command tests of the JIT's object cache (runtime/llvm/ObjectCache.h) through `nabla train`:
#
#   bash tests/cache/run.sh PATH/TO/nabla
#
# A cold run (empty cache) and a warm one (every module from the cache, as NABLA_TIME reports)
# save the same params byte for byte, and the same as a run without a cache (NABLA_CACHE=0, which
# writes nothing). Damaged cache files (truncated, a flipped byte, garbage, empty) are recompiled
# and replaced, with the same params. A cache folder that cannot be created (XDG_CACHE_HOME a
# regular file) or that is read-only is no cache, silently, and so is a file size limit below an
# object's size. Every run uses a folder of its own.
source "$(dirname "${BASH_SOURCE[0]}")/../harness.sh" cache "$@"

unset NABLA_CACHE
TRAIN=(train samples/digits.nn --data samples/data/digits.csv --epochs 1 --seed 3)

# run NAME [ENV...]: trains with XDG_CACHE_HOME=$TMP/xdg (unless ENV overrides it), saves the
# params to $TMP/NAME.json and the stderr (NABLA_TIME's report) to $TMP/NAME.err.
run() {
  local name=$1
  shift
  if ! env XDG_CACHE_HOME="$TMP/xdg" NABLA_TIME=1 "$@" "$NABLA" "${TRAIN[@]}" --save "$TMP/$name.json" \
      >"$TMP/$name.out" 2>"$TMP/$name.err"; then
    fail "$name: exit status $? ($(head -c 300 "$TMP/$name.err"))"
    return 1
  fi
}
hits() { grep -c '(hit)' "$TMP/$1.err"; }
misses() { grep -c '(miss or off)' "$TMP/$1.err"; }
same() { # NAME: the params equal the uncached run's, byte for byte
  if cmp -s "$TMP/$1.json" "$TMP/nocache.json"; then pass "$1: the same params as without a cache"
  else fail "$1: params differ from the uncached run's"; fi
}

run nocache NABLA_CACHE=0
if [[ -e "$TMP/xdg" ]]; then fail "NABLA_CACHE=0 created the cache folder"; else pass "NABLA_CACHE=0 writes nothing"; fi
grep -q "nabla: compile time" "$TMP/nocache.err" && pass "NABLA_TIME reports the compile's stages" ||
  fail "NABLA_TIME printed no report: $(head -c 300 "$TMP/nocache.err")"

run cold
[[ $(hits cold) == 0 && $(misses cold) -ge 1 ]] && pass "cold: every module compiled" || fail "cold: $(cat "$TMP/cold.err")"
objects=("$TMP"/xdg/nabla/*.o)
[[ ${#objects[@]} -ge 1 && -f "${objects[0]}" ]] && pass "cold: ${#objects[@]} objects stored in \$XDG_CACHE_HOME/nabla" ||
  fail "cold: no object in $TMP/xdg/nabla"
same cold
run warm
[[ $(misses warm) == 0 && $(hits warm) -ge 1 ]] && pass "warm: every module from the cache" || fail "warm: $(cat "$TMP/warm.err")"
same warm

# Damaged files: a miss, recompiled, replaced (the next run is all hits again).
damage_truncate() { truncate -s $(($(stat -c %s "$1") / 2)) "$1"; }
damage_flip() { printf 'Z' | dd of="$1" bs=1 seek=$(($(stat -c %s "$1") - 50)) conv=notrunc status=none; }
damage_garbage() { head -c 5000 /dev/urandom >"$1"; }
damage_empty() { : >"$1"; }
for d in truncate flip garbage empty; do
  "damage_$d" "${objects[0]}"
  run "damaged_$d" || continue
  [[ $(misses "damaged_$d") == 1 ]] && pass "damaged ($d): that module recompiled" ||
    fail "damaged ($d): $(cat "$TMP/damaged_$d.err")"
  same "damaged_$d"
  run "repaired_$d" && [[ $(misses "repaired_$d") == 0 ]] && pass "damaged ($d): the file replaced" ||
    fail "damaged ($d): not replaced: $(cat "$TMP/repaired_$d.err")"
done
ls "$TMP"/xdg/nabla | grep -q tmp && fail "temporary files left in the cache folder" || pass "no temporary files left"

# A cache folder that cannot be made (below a regular file): no cache, no message, the same params.
: >"$TMP/a-file"
if run blocked XDG_CACHE_HOME="$TMP/a-file"; then
  if [[ $(hits blocked) == 0 ]] && ! grep -v '^nabla:' "$TMP/blocked.err" | grep -qi 'cache'; then
    pass "unusable cache folder: silently no cache"
  else
    fail "unusable cache folder: $(cat "$TMP/blocked.err")"
  fi
  same blocked
fi
# A read-only folder (not for root, who writes anyway): no cache, the same params.
mkdir -p "$TMP/ro/nabla" && chmod 0500 "$TMP/ro/nabla"
run readonly XDG_CACHE_HOME="$TMP/ro"
same readonly

# A file size limit below an object's size (ulimit -f, in KiB): writing the object would end the
# process with SIGXFSZ; it is not stored, the run succeeds with the same loss and accuracy (no
# --save: the params file is larger than the limit too).
rm -rf "$TMP/small"
if (ulimit -f 4; exec env XDG_CACHE_HOME="$TMP/small" "$NABLA" "${TRAIN[@]}" >"$TMP/small.out" 2>"$TMP/small.err"); then
  if [[ -n $(grep '^training loss' "$TMP/small.out") ]] &&
     [[ $(grep '^training loss' "$TMP/small.out") == $(grep '^training loss' "$TMP/nocache.out") ]]; then
    pass "ulimit -f 4: the same training loss and accuracy"
  else
    fail "ulimit -f 4: '$(grep '^training loss' "$TMP/small.out")' against '$(grep '^training loss' "$TMP/nocache.out")'"
  fi
  [[ -z $(find "$TMP/small" -name '*.o' -size +4k 2>/dev/null) ]] && pass "ulimit -f: no object past the limit" ||
    fail "ulimit -f: an object past the limit was stored"
else
  fail "ulimit -f 4: exit status $? ($(head -c 300 "$TMP/small.err"))"
fi

finish
