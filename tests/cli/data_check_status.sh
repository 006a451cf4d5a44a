#!/usr/bin/env bash
# `emovlm data check` as a script's gate: a clean dataset passes (exit 0); an unreadable file, the
# same image in two splits or under two labels fail it (exit 1, one "emovlm: error:" line, last,
# after the report), and the --out report is written either way.
#
# Usage: data_check_status.sh BUILD_DIR
set -euo pipefail
export PATH="$(realpath "$1"):$PATH"
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/emovlm-check-XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }

python3 "$here/make_images.py" FI 4 32 >/dev/null
emovlm -q data convert --format folders --src FI --test-fraction 0.25 --out fi.jsonl >/dev/null
emovlm -q data check --data fi.jsonl --decode --out clean.json >out.txt 2>err.txt ||
  { cat out.txt err.txt; fail "a clean dataset failed the check"; }
[ -s clean.json ] || fail "no report for the clean dataset"

expect_failure() {  # NAME WHAT_THE_ERROR_SAYS: the check of dataset NAME/ fails saying it
  local rc=0
  emovlm -q data check --data "$1" --decode --out "$1.json" >out.txt 2>err.txt || rc=$?
  [ "$rc" -eq 1 ] || { cat out.txt err.txt; fail "$1: exit status $rc, not 1"; }
  [ "$(grep -c '^emovlm: error:' err.txt)" -eq 1 ] || { cat err.txt; fail "$1: not one error line"; }
  tail -n 1 err.txt | grep -q "^emovlm: error: $1: the check found problems (.*$2" ||
    { cat err.txt; fail "$1: $(cat err.txt)"; }
  [ -s "$1.json" ] || fail "$1: the report was not written"
}
mkdir -p unreadable/train/awe unreadable/test/awe
cp FI/awe/000.png unreadable/train/awe/a.png
cp FI/awe/001.png unreadable/test/awe/b.png
echo "not an image" >unreadable/train/awe/broken.jpg
expect_failure unreadable "1 unreadable"
mkdir -p leaked/train/awe leaked/test/awe
cp FI/awe/000.png leaked/train/awe/a.png
cp FI/awe/000.png leaked/test/awe/a.png
expect_failure leaked "1 duplicate group across splits"
mkdir -p relabelled/train/awe relabelled/train/fear relabelled/test/awe
cp FI/awe/000.png relabelled/train/awe/a.png
cp FI/awe/000.png relabelled/train/fear/a.png
cp FI/awe/001.png relabelled/test/awe/b.png
expect_failure relabelled "1 duplicate group under different labels"
echo "data check: clean 0, unreadable/leaked/relabelled 1"
