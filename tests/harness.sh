# The common start of the command tests that take the nabla binary (tests/train, tests/cache),
# sourced with the test's name and arguments:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/../harness.sh" NAME "$@"
#
# Checks the usage (PATH/TO/nabla first), then sets NABLA (absolute), HERE (the test's folder),
# ROOT (the project) and TMP (a folder of its own, removed at exit even where a test made it
# read-only), exports LC_ALL=C and changes to ROOT. `fail` and `pass` report one check each;
# `finish` prints the tally and exits 1 if any check failed.
set -u
export LC_ALL=C
harness_name=$1
shift
if [[ $# -lt 1 || ! -x "$1" ]]; then
  echo "usage: $0 PATH/TO/nabla" >&2
  exit 2
fi
NABLA=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
HERE=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/nabla-$harness_name.XXXXXX")
trap 'chmod -R u+w "$TMP" 2>/dev/null; rm -rf "$TMP"' EXIT
cd "$ROOT"

failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
pass() { echo "ok: $*"; }
finish() {
  if [[ $failures -gt 0 ]]; then
    echo "$harness_name: $failures failure(s)" >&2
    exit 1
  fi
  echo "$harness_name: every check passed"
}
