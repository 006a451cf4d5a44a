#!/usr/bin/env bash
# Peak resident memory of `emovlm tune` against the number of instruction images: stage 1 decodes
# each step's image on the loader's threads, so memory must not grow with the instruction file.
# Tiny model (tests/data/reference/qwen2vl_tiny), one LoRA epoch over N distinct 256x256 images
# (one categorical instruction each), for each N given.
# Usage: bash bench/tune_memory.sh [BUILD_DIR] [N ...]     (default: build 500 5000)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath "${1:-$root/build}")
shift || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(500 5000)
scratch=$(mktemp -d "${TMPDIR:-/tmp}/emovlm-tune-mem-XXXXXX")
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
mkdir vlm
for f in config.json model.safetensors tokenizer.json tokenizer_config.json chat_template.json preprocessor_config.json; do
  cp "$root/tests/data/reference/qwen2vl_tiny/$f" vlm/
done
printf '| instruction images | peak RSS | wall time |\n|---|---|---|\n'
for n in "${sizes[@]}"; do
  rm -rf images inst.jsonl out
  python3 "$root/tests/cli/make_images.py" images $(( (n + 7) / 8 )) 256
  python3 - "$n" <<'PY'
import json, os, sys
n = int(sys.argv[1])
files = sorted(os.path.join(d, f) for d, _, fs in os.walk("images") for f in fs)[:n]
prompt = ("Observe the image and select the emotion category that best matches this image from the following 8 "
          "categories: amusement, anger, awe, contentment, disgust, excitement, fear, and sadness.")
with open("inst.jsonl", "w") as out:
    for f in files:
        label = f.split(os.sep)[1]
        out.write(json.dumps({"image": f, "label": label, "kind": "categorical", "prompt": prompt,
                              "answer": "{'emotion': '%s'}" % label}) + "\n")
PY
  start=$(date +%s.%N)
  /usr/bin/time -f "%M" -o rss.txt "$build/emovlm" -q --threads 2 tune --vlm vlm --instructions inst.jsonl --lora \
    --epochs 1 --out out > /dev/null 2> tune.err || { cat tune.err; exit 1; }
  end=$(date +%s.%N)
  printf '| %d | %.0f MiB | %.0f s |\n' "$n" "$(echo "$(cat rss.txt) / 1024" | bc -l)" "$(echo "$end - $start" | bc -l)"
done
