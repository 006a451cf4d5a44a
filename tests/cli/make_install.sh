#!/usr/bin/env bash
# The README's `make install` as a user runs it in the clone: the binary lands in ~/.local/bin (HOME
# is a scratch folder here) and runs by name from another working directory; PREFIX=DIR puts it in
# DIR/bin.
#
# Usage: make_install.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$(realpath "$1")
build=$(realpath "$2")
home=$(mktemp -d "${TMPDIR:-/tmp}/emovlm-install-XXXXXX")
trap 'rm -rf "$home"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

grep -q '^make install ' "$src/README.md" || fail "README.md shows no 'make install' line"
# (a make of our own, not a job of whatever make started the tests)
run_make() {
  (cd "$src" && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL HOME="$home" make "$@" BUILD_DIR="$build") \
    >"$home/make.log" 2>&1 || { cat "$home/make.log"; fail "make $*"; }
}
run_make install
[ -x "$home/.local/bin/emovlm" ] || fail "make install left no $home/.local/bin/emovlm"
mkdir "$home/elsewhere"
(cd "$home/elsewhere" && PATH="$home/.local/bin:/usr/bin:/bin" emovlm --version) | grep -q '^emovlm ' ||
  fail "the installed emovlm does not run by name"
run_make install PREFIX="$home/opt"
"$home/opt/bin/emovlm" --help >/dev/null || fail "PREFIX=$home/opt: no working $home/opt/bin/emovlm"
echo "make install: ~/.local/bin/emovlm and PREFIX/bin/emovlm run"
