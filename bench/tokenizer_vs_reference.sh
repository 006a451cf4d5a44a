#!/bin/sh
# The tokenizer and the reference (Hugging Face tokenizers) on the same documents, one thread each,
# CPU time, in one run: bench_text writes the documents, then ROUNDS rounds of the reference's
# timing and ours, one after the other; per row the median over the rounds, and whether the ids agree.
#   sh bench/tokenizer_vs_reference.sh [BUILD_DIR] [ROUNDS] [REPS]   (after `make build` and, once,
#   `cd tests/data/tokenizer && npm ci`)
set -eu
BUILD=${1:-build}
ROUNDS=${2:-3}
REPS=${3:-5}
HERE=$(dirname "$0")
TOK="$BUILD/qwen2vl_tokenizer/tokenizer.json"
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
"$BUILD/bench/bench_text" --write "$DIR/texts" >/dev/null
runs=""
for r in $(seq "$ROUNDS"); do
  # one thread for the reference too (its batch and parallel paths use Rayon)
  RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false \
    node "$HERE/tokenizer_reference.js" "$TOK" "$DIR/texts" "$REPS" > "$DIR/reference$r.txt"
  "$BUILD/bench/bench_text" --reps "$REPS" > "$DIR/ours$r.txt"
  runs="$runs $DIR/ours$r.txt $DIR/reference$r.txt"
done
cat "$DIR/reference1.txt" "$DIR/ours1.txt"
echo
# shellcheck disable=SC2086
node "$HERE/tokenizer_reference.js" --compare $runs
