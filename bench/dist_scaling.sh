#!/usr/bin/env bash
# Data-parallel scaling on this machine's CPU: each stage with 1 process (all cores) and with 2
# processes (half the cores each), Gloo over loopback, tiny models (tests/data/reference). Prints
# the median examples/s over REPEATS runs of each, and with 2 processes the time a step waits for
# the all-reduce (metrics.jsonl: all_reduce_seconds / optimizer steps), with the gradients summed
# while backward runs (the default) and after it (--dist-overlap=false); for extract, the images/s
# of the whole command (models loaded, every image through the VLM and the teacher, the cache
# written).
#
# Usage: bench/dist_scaling.sh BUILD_DIR [REPEATS]   (torchrun from python3-torch on PATH)
set -euo pipefail
build=$(realpath "$1")
repeats=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
ref="$root/tests/data/reference"
export PATH="$build:$PATH" EMOVLM_PROGRESS_SECONDS=600
cores=$(nproc)
work=$(mktemp -d "${TMPDIR:-/tmp}/emovlm-dist-bench-XXXXXX")
trap 'rm -rf "$work"' EXIT
export TMPDIR="$work"  # torchrun's log folders go with the work folder
cd "$work"
torchrun=(torchrun)
torchrun --standalone --nproc_per_node 1 --no_python true >/dev/null 2>&1 ||
  torchrun=("$(head -n 1 "$(command -v torchrun)" | sed 's/^#!//')" "$root/tests/cli/torchrun_compat.py")

python3 "$root/tests/cli/make_images.py" FI 16 64 >/dev/null
mkdir vlm vit
cp "$ref"/qwen2vl_tiny/{config.json,model.safetensors,tokenizer.json,tokenizer_config.json,chat_template.json,preprocessor_config.json} vlm/
cp "$ref"/vit_tiny/{config.json,model.safetensors,preprocessor_config.json} vit/
emovlm -q data convert --format folders --src FI --val-fraction 0.1 --test-fraction 0.1 --out fi.jsonl >/dev/null
python3 - <<'PY'
import json
with open("inst.jsonl", "w") as f:
    for line in open("fi.jsonl"):
        r = json.loads(line)
        if r.get("split") == "train":
            f.write(json.dumps({"image": r["path"], "label": r["label"], "kind": "categorical",
                                "prompt": "What emotion does this image convey?",
                                "answer": "{'emotion': '%s'}" % r["label"]}) + "\n")
PY
emovlm -q teacher train --data fi.jsonl --init vit --labels mikels8 --epochs 1 --out teacher >/dev/null
emovlm -q extract --vlm vlm --teacher teacher --data fi.jsonl --labels mikels8 --split train --out cache >/dev/null

median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
# examples/s of the run in OUT (the last epoch's line) and its all-reduce ms per optimizer step
rate() { python3 -c '
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl") if l.strip()]
last = [l for l in lines if l.get("train_loss") is not None][-1]
steps = last["step"] - (lines[-2]["step"] if len(lines) > 1 else 0)
print(last["examples_per_s"], 1000 * last.get("all_reduce_seconds", 0) / max(steps, 1))' "$1"; }

bench() {  # NAME STATE_SUBDIR ARGS...: one line of figures
  local name=$1 sub=$2; shift 2
  local one=() two=() ar=() after=() ar_after=() half=$((cores / 2 > 0 ? cores / 2 : 1))
  for i in $(seq "$repeats"); do
    rm -rf o1 o2 o3
    OMP_NUM_THREADS=$cores emovlm -q "$@" --out o1 >/dev/null 2>&1
    one+=("$(rate o1/$sub | cut -d' ' -f1)")
    OMP_NUM_THREADS=$half OPENBLAS_NUM_THREADS=$half "${torchrun[@]}" --standalone --nproc_per_node 2 --no_python \
      emovlm -q "$@" --out o2 >/dev/null 2>&1
    read -r r a <<<"$(rate o2/$sub)"
    two+=("$r"); ar+=("$a")
    OMP_NUM_THREADS=$half OPENBLAS_NUM_THREADS=$half "${torchrun[@]}" --standalone --nproc_per_node 2 --no_python \
      emovlm -q --dist-overlap=false "$@" --out o3 >/dev/null 2>&1
    read -r r a <<<"$(rate o3/$sub)"
    after+=("$r"); ar_after+=("$a")
  done
  local m1 m2 ma m3 ma3
  m1=$(printf '%s\n' "${one[@]}" | median); m2=$(printf '%s\n' "${two[@]}" | median); ma=$(printf '%s\n' "${ar[@]}" | median)
  m3=$(printf '%s\n' "${after[@]}" | median); ma3=$(printf '%s\n' "${ar_after[@]}" | median)
  printf '%-44s 1 process %9.1f ex/s   2 processes %9.1f ex/s   x%.2f   all-reduce %.2f ms/step   (summed after backward: %9.1f ex/s, %.2f ms/step)\n' \
    "$name" "$m1" "$m2" "$(echo "$m2 / $m1" | bc -l)" "$ma" "$m3" "$ma3"
}
echo "$(date -u +%F), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), median of $repeats"
bench "tune (tiny Qwen2-VL, LoRA, grad-accum 8)" train-state tune --vlm vlm --instructions inst.jsonl --lora --dtype f32 --grad-accum 8 --epochs 1
bench "teacher train (tiny ViT, batch 32)" . teacher train --data fi.jsonl --init vit --labels mikels8 --epochs 2 --batch-size 32
bench "distill (hidden 1024, batch 32, 40 epochs)" . distill --cache cache --hidden 1024 --min-steps 0 --epochs 40 --batch-size 32
# images/s of a whole inference command (wall clock, loading included), 1 process vs 2; the two
# ranks are started directly with torchrun's variables (torchrun's own start, a Python process
# importing torch, would be most of a short run)
bench_images() {  # NAME IMAGES ARGS...
  local name=$1 images=$2; shift 2
  local one=() two=() t0 port half=$((cores / 2 > 0 ? cores / 2 : 1))
  for i in $(seq "$repeats"); do
    rm -rf o1 o2
    t0=$(date +%s.%N)
    OMP_NUM_THREADS=$cores emovlm -q "$@" --out o1 >/dev/null 2>&1
    one+=("$(echo "$images / ($(date +%s.%N) - $t0)" | bc -l)")
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    t0=$(date +%s.%N)
    for r in 0 1; do
      RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port OMP_NUM_THREADS=$half \
        emovlm -q "$@" --out o2 >/dev/null 2>&1 &
    done
    wait
    two+=("$(echo "$images / ($(date +%s.%N) - $t0)" | bc -l)")
  done
  local m1 m2
  m1=$(printf '%s\n' "${one[@]}" | median); m2=$(printf '%s\n' "${two[@]}" | median)
  printf '%-44s 1 process %9.1f img/s  2 processes %9.1f img/s  x%.2f\n' "$name" "$m1" "$m2" "$(echo "$m2 / $m1" | bc -l)"
}
# a larger split for inference: 64 images a class
python3 "$root/tests/cli/make_images.py" FI-large 64 64 >/dev/null
emovlm -q data convert --format folders --src FI-large --val-fraction 0.1 --test-fraction 0.1 --out large.jsonl >/dev/null
large=$(python3 -c 'import json; print(sum(json.loads(l).get("split") == "train" for l in open("large.jsonl")))')
bench_images "extract (tiny Qwen2-VL + ViT, $large images)" "$large" extract --vlm vlm --teacher teacher --data large.jsonl --labels mikels8 --split train
