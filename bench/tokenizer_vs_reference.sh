#!/bin/sh
# The tokenizer and the reference (Hugging Face tokenizers) on the same texts, one thread each, in
# one run: bench_text writes the texts, the reference times them, then bench_text does; the ids'
# hashes must agree line by line.
#   bash bench/tokenizer_vs_reference.sh [BUILD_DIR] [REPS]   (after `make build` and, once,
#   `cd tests/data/tokenizer && npm ci`)
set -eu
BUILD=${1:-build}
REPS=${2:-5}
TOK="$BUILD/qwen2vl_tokenizer/tokenizer.json"
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
"$BUILD/bench/bench_text" --write "$DIR/texts" >/dev/null
# one thread for the reference too (its batch and parallel paths use Rayon)
RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false UV_THREADPOOL_SIZE=1 \
  node "$(dirname "$0")/tokenizer_reference.js" "$TOK" "$DIR/texts" "$REPS" | tee "$DIR/reference.txt"
"$BUILD/bench/bench_text" --reps "$REPS" | tee "$DIR/ours.txt"
echo
echo "side by side (MB/s, ours / reference):"
awk 'FNR == 1 { file++ }
     / [0-9]+ [0-9a-f]+$/ && length($NF) == 16 { name = substr($0, 1, 42); mbs[file, name] = $(NF-2); hash[file, name] = $NF; order[name] = ++n[file] }
     /^load/ { load[file] = $3 }
     END {
       printf "%-42s %10s %10s %7s\n", "text", "ours", "reference", "ratio";
       for (name in order) names[order[name]] = name;
       for (i = 1; i <= n[2]; i++) {
         name = names[i];
         printf "%-42s %10s %10s %7.2f%s\n", name, mbs[2, name], mbs[1, name], mbs[2, name] / mbs[1, name],
                hash[1, name] == hash[2, name] ? "" : "  IDS DIFFER";
       }
       printf "%-42s %9ss %9ss\n", "load tokenizer.json", load[2], load[1];
     }' "$DIR/reference.txt" "$DIR/ours.txt"
