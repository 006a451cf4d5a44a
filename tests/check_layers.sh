#!/usr/bin/env bash
# The library's folders are layers, each including only its own and the ones below:
#   core -> image, text -> data -> models -> dist -> train -> pipeline -> serve
# Fails naming every `#include "emovlm/..."` in src/ that points up the stack.
# Usage: check_layers.sh SRC_DIR   (the repository's src/)
set -euo pipefail
src=$1
rank() {
  case $1 in
    core) echo 0 ;; image | text) echo 1 ;; data) echo 2 ;; models) echo 3 ;; dist) echo 4 ;;
    train) echo 5 ;; pipeline) echo 6 ;; serve) echo 7 ;; *) echo "" ;;
  esac
}
bad=0
files=0
while IFS= read -r file; do
  files=$((files + 1))
  layer=$(basename "$(dirname "$file")")
  own=$(rank "$layer")
  [ -n "$own" ] || { echo "$file: the folder '$layer' is not a layer of the stack"; bad=1; continue; }
  while IFS=: read -r line target; do
    [ -n "$target" ] || continue
    tr=$(rank "$target")
    if [ -z "$tr" ]; then
      echo "$file:$line: includes emovlm/$target/, not a layer of the stack"; bad=1
    elif [ "$tr" -gt "$own" ]; then
      echo "$file:$line: $layer includes emovlm/$target/ above it"; bad=1
    fi
  done < <(grep -n '^#include "emovlm/' "$file" | sed -E 's|^([0-9]+):#include "emovlm/([a-z_]+)/.*|\1:\2|')
done < <(find "$src/emovlm" -name '*.h' -o -name '*.cpp' | sort)
[ "$files" -gt 0 ] || { echo "no sources under $src/emovlm"; exit 1; }
exit $bad
