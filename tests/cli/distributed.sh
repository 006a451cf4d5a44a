#!/usr/bin/env bash
# Data parallelism as users launch it, on the CPU with Gloo over loopback and tiny models:
#  - the README's "Many GPUs, many machines" block, line by line from a scratch folder with
#    relative paths (its process count 8 becomes 2: two cores here);
#  - 2 processes equal 1 process at the same global batch, for tune (LoRA), teacher train,
#    distill and gate, within float rounding (the gradients are summed in another order), and
#    gradients summed while backward runs equal those summed after it, to the bit; teacher train
#    validates a share on each process and gets the accuracy of the whole set;
#  - torchrun's multi-machine (static) rendezvous and Slurm's variables give the same weights;
#  - a run of 2 processes resumes on 1 and ends where an uninterrupted run of 1 ends;
#  - extract, classify --data and predict --data on 2 processes write the files 1 process
#    writes, byte for byte, and resume what 1 process left;
#  - a rank that dies or hangs makes the other exit with a clear error, not wait forever;
#  - a command that does not run data parallel refuses to run as one of several ranks.
#
# Usage: distributed.sh README.md BUILD_DIR TINY_VLM_DIR TINY_VIT_DIR
set -euo pipefail
readme=$(realpath "$1")
build=$(realpath "$2")
tiny_vlm=$(realpath "$3")
tiny_vit=$(realpath "$4")
here=$(cd "$(dirname "$0")" && pwd)
export PATH="$build:$PATH"
export EMOVLM_PROGRESS_SECONDS=600 OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
command -v torchrun >/dev/null || { echo "FAIL: torchrun is missing (Debian: python3-torch; make test-deps)" >&2; exit 1; }

scratch=$(mktemp -d "${TMPDIR:-/tmp}/emovlm-dist-XXXXXX")
export TMPDIR="$scratch"  # torchrun's log folders go with the scratch folder
# Debian 12's torchrun (torch 1.13 under Python 3.11) fails before starting a worker; the same
# torchrun with that bug worked around (README.md says so) stands in for it
if ! torchrun --standalone --nproc_per_node 1 --no_python true >/dev/null 2>&1; then
  torchrun_python=$(head -n 1 "$(command -v torchrun)" | sed 's/^#!//')
  mkdir "$scratch/bin"
  printf '#!/bin/sh\nexec %s %s "$@"\n' "$torchrun_python" "$here/torchrun_compat.py" > "$scratch/bin/torchrun"
  chmod +x "$scratch/bin/torchrun"
  export PATH="$scratch/bin:$PATH"
  torchrun --standalone --nproc_per_node 1 --no_python true >/dev/null 2>&1 || fail "torchrun does not start a process"
fi
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$scratch"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# max |a - b| over every tensor of two safetensors files, against atol + rtol * |b|
same_weights() {  # A B ATOL RTOL
  python3 - "$@" <<'EOF'
import array, json, struct, sys
def read(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in head.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        if v["dtype"] == "F32":
            x = array.array("f", data[a:b])
        elif v["dtype"] == "BF16":
            x = array.array("f", b"".join(b"\0\0" + data[i:i + 2] for i in range(a, b, 2)))
        else:
            continue
        if sys.byteorder != "little":
            x.byteswap()
        out[k] = (v["shape"], x)
    return out
a, b = read(sys.argv[1]), read(sys.argv[2])
atol, rtol = float(sys.argv[3]), float(sys.argv[4])
if sorted(a) != sorted(b) or not a:
    sys.exit(f"{sys.argv[1]} and {sys.argv[2]} hold other tensors")
worst, where, largest = -1.0, "", 0.0
for k in a:
    (sa, xa), (sb, xb) = a[k], b[k]
    if sa != sb:
        sys.exit(f"{k}: shapes {sa} and {sb}")
    for u, v in zip(xa, xb):
        largest = max(largest, abs(u - v))
        margin = abs(u - v) - (atol + rtol * abs(v))
        if margin > worst:
            worst, where = margin, k
print(f"{sys.argv[1]} vs {sys.argv[2]}: largest difference {largest:.3g}; nearest the tolerance at {where}")
sys.exit(0 if worst <= 0 else 1)
EOF
}
differ() { ! cmp -s "$1" "$2"; }

proj="$scratch/work"
mkdir -p "$proj"
cd "$proj"
python3 "$here/make_images.py" FI 6 32 >/dev/null
mkdir Qwen2-VL-7B-Instruct vit-base-patch16-384
for f in config.json model.safetensors tokenizer.json tokenizer_config.json chat_template.json preprocessor_config.json; do
  cp "$tiny_vlm/$f" Qwen2-VL-7B-Instruct/
done
for f in config.json model.safetensors preprocessor_config.json; do cp "$tiny_vit/$f" vit-base-patch16-384/; done
emovlm -q data convert --format folders --src FI --test-fraction 0.15 --val-fraction 0.15 --out fi.jsonl >/dev/null
mkdir -p runs
# stage 0's output, written here: one categorical instruction per training image
python3 - <<'EOF'
import json
rows = [json.loads(l) for l in open("fi.jsonl")]
with open("runs/inst.jsonl", "w") as f:
    for r in rows:
        if r.get("split", "train") == "train":
            f.write(json.dumps({"image": "../" + r["path"], "label": r["label"], "kind": "categorical",
                                "prompt": "What emotion does this image convey?",
                                "answer": "{'emotion': '%s'}" % r["label"]}) + "\n")
EOF
[ -s runs/inst.jsonl ] || fail "no instructions written"
# a teacher of one process for the comparisons below
emovlm -q teacher train --data fi.jsonl --init vit-base-patch16-384 --out runs/teacher-1 --labels mikels8 --epochs 1 >/dev/null

# ---- the README's block, line by line (8 processes a machine become 2)
mapfile -t lines < <(awk '/^## Many GPUs, many machines/{on=1} on && /^```sh/{inside=1; next} inside && /^```/{exit} inside{print}' "$readme")
[ "${#lines[@]}" -ge 4 ] || fail "no command block under 'Many GPUs, many machines' in $readme"
ran=0
for line in "${lines[@]}"; do
  case "$line" in
    torchrun\ --standalone* | emovlm\ *)
      cmd=${line//--nproc_per_node 8/--nproc_per_node 2}
      echo "+ $cmd"
      bash -c "$cmd" > "$scratch/block.log" 2>&1 || { cat "$scratch/block.log" >&2; fail "the README's line failed: $line"; }
      ran=$((ran + 1)) ;;
  esac
done
[ "$ran" -ge 8 ] || fail "the README's block has $ran lines for one machine, expected tune, teacher train, extract (2), distill, gate, bundle, predict"
for f in runs/adapter/adapter_model.safetensors runs/teacher/model.safetensors runs/cache/train/manifest.json runs/cache/val/manifest.json \
  runs/distill/head.safetensors runs/gate/gate.safetensors runs/bundle-test.json; do
  [ -s "$f" ] || fail "the README's block did not write $f"
done
grep -q '^\[rank 1\] ' "$scratch/block.log" || fail "rank 1 does not prefix its log lines"

# ---- 2 processes = 1 process at the same global batch
run1() { emovlm -q "$@" > /dev/null; }
run2() { torchrun --standalone --nproc_per_node 2 --no_python emovlm -q "$@" > "$scratch/run2.log" 2>&1 || { cat "$scratch/run2.log" >&2; fail "2 processes: emovlm $*"; }; }
distill_flags=(--cache runs/cache/train --val-cache runs/cache/val --min-steps 0 --epochs 3 --dropout 0 --compute-dtype f32 --hidden 32)
run1 distill "${distill_flags[@]}" --batch-size 8 --out eq/distill-1
run2 distill "${distill_flags[@]}" --batch-size 8 --out eq/distill-2
same_weights eq/distill-1/head.safetensors eq/distill-2/head.safetensors 1e-5 1e-4 || fail "distill: 2 processes differ from 1"
# (no validation: the weights are the last epoch's, never the start that a validated run may keep)
gate_flags=(--cache runs/cache/train --distill eq/distill-1 --min-steps 0 --epochs 3 --batch-size 8)
run1 gate "${gate_flags[@]}" --out eq/gate-1
run2 gate "${gate_flags[@]}" --out eq/gate-2
same_weights eq/gate-1/gate.safetensors eq/gate-2/gate.safetensors 1e-5 1e-4 || fail "gate: 2 processes differ from 1"
teacher_flags=(--data fi.jsonl --init vit-base-patch16-384 --labels mikels8 --epochs 2 --batch-size 6)
run1 teacher train "${teacher_flags[@]}" --out eq/teacher-1
run2 teacher train "${teacher_flags[@]}" --out eq/teacher-2
same_weights eq/teacher-1/model.safetensors eq/teacher-2/model.safetensors 1e-5 1e-4 || fail "teacher: 2 processes differ from 1"
# each process validates its share of val/ and the counts are summed: the accuracy of every epoch
# is the whole set's, as one process measures it
val_accuracies() { python3 -c 'import json,sys; print([json.loads(l).get("val_accuracy") for l in open(sys.argv[1])])' "$1"; }
[ "$(val_accuracies eq/teacher-1/metrics.jsonl)" = "$(val_accuracies eq/teacher-2/metrics.jsonl)" ] ||
  fail "teacher: 2 processes validate otherwise than 1: $(val_accuracies eq/teacher-1/metrics.jsonl) vs $(val_accuracies eq/teacher-2/metrics.jsonl)"
[ "$(val_accuracies eq/teacher-1/metrics.jsonl)" != "[]" ] || fail "teacher: no validation in metrics.jsonl"
tune_flags=(--vlm Qwen2-VL-7B-Instruct --instructions runs/inst.jsonl --lora --lora-dropout 0 --dtype f32 --grad-accum 4 --epochs 1)
run1 tune "${tune_flags[@]}" --out eq/tune-1
run2 tune "${tune_flags[@]}" --out eq/tune-2
same_weights eq/tune-1/adapter_model.safetensors eq/tune-2/adapter_model.safetensors 1e-5 1e-4 || fail "tune: 2 processes differ from 1"
# the gradients are summed while backward runs (each step's last backward on a process, which for
# tune's dealt batches is not the step's last batch); summed after backward instead, every weight
# is the same to the bit
run2 --dist-overlap=false teacher train "${teacher_flags[@]}" --out eq/teacher-2-after
same_weights eq/teacher-2/model.safetensors eq/teacher-2-after/model.safetensors 0 0 || fail "teacher: the gradients summed during backward differ from those summed after it"
run2 --dist-overlap=false tune "${tune_flags[@]}" --out eq/tune-2-after
same_weights eq/tune-2/adapter_model.safetensors eq/tune-2-after/adapter_model.safetensors 0 0 || fail "tune: the gradients summed during backward differ from those summed after it"
# the comparison can fail: a run at another global batch is not the same
run1 distill "${distill_flags[@]}" --batch-size 4 --out eq/distill-b4
! same_weights eq/distill-1/head.safetensors eq/distill-b4/head.safetensors 1e-5 1e-4 >/dev/null || fail "the comparison does not tell batch 8 from batch 4"

# ---- the same under torchrun's multi-machine rendezvous and under Slurm's variables
port=$(free_port)
for node in 0 1; do
  torchrun --nnodes 2 --node_rank $node --nproc_per_node 1 --master_addr 127.0.0.1 --master_port "$port" --no_python \
    emovlm -q distill "${distill_flags[@]}" --batch-size 8 --out eq/distill-nodes > "$scratch/node$node.log" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}" || { cat "$scratch"/node*.log >&2; fail "torchrun over two 'machines' failed"; }
pids=()
same_weights eq/distill-1/head.safetensors eq/distill-nodes/head.safetensors 1e-5 1e-4 || fail "two machines differ from one process"
port=$(free_port)
for r in 0 1; do
  SLURM_PROCID=$r SLURM_NTASKS=2 SLURM_LOCALID=$r SLURM_NTASKS_PER_NODE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
    emovlm -q distill "${distill_flags[@]}" --batch-size 8 --out eq/distill-slurm > "$scratch/slurm$r.log" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}" || { cat "$scratch"/slurm*.log >&2; fail "the Slurm-launched run failed"; }
pids=()
same_weights eq/distill-1/head.safetensors eq/distill-slurm/head.safetensors 1e-5 1e-4 || fail "Slurm's ranks differ from one process"

# ---- resume on another number of processes: 2 processes for 2 epochs, then 1 to epoch 5
long=(--cache runs/cache/train --min-steps 0 --batch-size 8 --dropout 0 --compute-dtype f32 --hidden 32)
run1 distill "${long[@]}" --epochs 5 --out eq/long-1
run2 distill "${long[@]}" --epochs 2 --out eq/long-resumed
differ eq/long-1/head.safetensors eq/long-resumed/head.safetensors || fail "2 epochs already equal 5"
run1 distill "${long[@]}" --epochs 5 --resume --out eq/long-resumed
same_weights eq/long-1/head.safetensors eq/long-resumed/head.safetensors 1e-5 1e-4 || fail "2 processes then 1 differ from 1 throughout"

# ---- inference: 2 processes write what 1 process writes
same_files() {  # DIR-A DIR-B: the same file names with the same bytes
  [ "$(cd "$1" && ls)" = "$(cd "$2" && ls)" ] || fail "$1 and $2 hold other files: $(ls "$1") / $(ls "$2")"
  for f in "$1"/*; do cmp "$f" "$2/$(basename "$f")" || fail "$f differs from $2/$(basename "$f")"; done
}
# 7 shards of 5 images (the last one short): the ranks take turns, rank 0 writes them in order
extract_flags=(--vlm Qwen2-VL-7B-Instruct --teacher runs/teacher-1 --data fi.jsonl --labels mikels8 --split train --shard-size 5 --dtype f32)
run1 extract "${extract_flags[@]}" --out inf/one/cache
run2 extract "${extract_flags[@]}" --out inf/two/cache
[ "$(ls inf/one/cache | grep -c '^shard-')" -ge 5 ] || fail "extract wrote $(ls inf/one/cache) (expected several shards)"
same_files inf/one/cache inf/two/cache
# rank 0 refusing the folder (a cache of another shard size) stops rank 1 too, with rank 0's reason
refuse=(--vlm Qwen2-VL-7B-Instruct --teacher runs/teacher-1 --data fi.jsonl --labels mikels8 --split train --shard-size 4 --dtype f32)
! torchrun --standalone --nproc_per_node 2 --no_python emovlm -q extract "${refuse[@]}" --out inf/one/cache > "$scratch/refused.log" 2>&1 ||
  fail "extract into a cache of other settings succeeded"
grep -q "^\[rank 1\] emovlm: error: rank 0 stopped: .*shard size 5, now 4" "$scratch/refused.log" ||
  { cat "$scratch/refused.log" >&2; fail "rank 1 does not stop with rank 0's reason"; }
# a cache begun by 1 process (its first 2 shards) is finished by 2
mkdir -p inf/resumed
cp -r inf/one/cache inf/resumed/cache
python3 - inf/resumed/cache <<'EOF'
import json, os, sys
path = os.path.join(sys.argv[1], "manifest.json")
m = json.load(open(path))
for s in m["shards"][2:]:
    os.remove(os.path.join(sys.argv[1], s["file"]))
m["shards"], m["complete"] = m["shards"][:2], False
open(path, "w").write(json.dumps(m, indent=1) + "\n")
EOF
run2 extract "${extract_flags[@]}" --out inf/resumed/cache
same_files inf/one/cache inf/resumed/cache
emovlm -q bundle --vlm Qwen2-VL-7B-Instruct --adapter runs/adapter --distill eq/distill-1 --gate eq/gate-1 --out inf/bundle >/dev/null
for n in one two; do
  run=run1; [ $n = two ] && run=run2
  $run classify --vlm Qwen2-VL-7B-Instruct --data fi.jsonl --labels mikels8 --split train --out inf/$n/classify.json
  $run predict --bundle inf/bundle --data fi.jsonl --split train --out inf/$n/predict.json
done
cmp inf/one/classify.json inf/two/classify.json || fail "classify --data: 2 processes differ from 1"
cmp inf/one/predict.json inf/two/predict.json || fail "predict --data: 2 processes differ from 1"
[ ! -e inf/two/predict.json.partial.jsonl ] || fail "predict --data left its journal"
# a journal that 1 process was writing (a copy taken after 3 results) is finished by 2
emovlm -q predict --bundle inf/bundle --data fi.jsonl --split train --out inf/partial/predict.json > /dev/null &
pids+=($!)
journal=inf/partial/predict.json.partial.jsonl
for _ in $(seq 3000); do
  [ -f $journal ] && [ "$(wc -l < $journal 2>/dev/null || echo 0)" -ge 4 ] && { cp $journal "$scratch/snapshot" && break; }
  sleep 0.01
done
wait "${pids[@]}" || fail "predict --data (1 process) failed"
pids=()
[ -s "$scratch/snapshot" ] || fail "predict --data never had 3 results in its journal"
cp "$scratch/snapshot" inf/resumed/predict.json.partial.jsonl
run2 predict --bundle inf/bundle --data fi.jsonl --split train --out inf/resumed/predict.json
python3 - inf/one/predict.json inf/resumed/predict.json <<'EOF' || fail "predict --data resumed by 2 processes differs from 1 process"
import json, sys
one, resumed = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
if resumed["resumed"] < 3:
    sys.exit(f"resumed {resumed['resumed']} results, expected at least 3")
one["resumed"] = resumed["resumed"] = 0
sys.exit(0 if one == resumed else "the reports differ")
EOF

# ---- faults: a rank that dies, a rank that hangs
endless=(--cache runs/cache/train --min-steps 1000000 --batch-size 2 --hidden 32)
start_pair() {  # OUT EXTRA-FLAGS...: rank 0 and rank 1 in the background
  local out=$1; shift
  port=$(free_port)
  for r in 0 1; do
    RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      emovlm -q "$@" distill "${endless[@]}" --out "$out" > "$scratch/fault$r.log" 2>&1 &
    pids+=($!)
  done
  for _ in $(seq 600); do
    grep -q "rank 0 of 2" "$scratch/fault0.log" 2>/dev/null && grep -q "rank 1 of 2" "$scratch/fault1.log" 2>/dev/null && break
    sleep 0.1
  done
  sleep 2  # both in the middle of training
}
waited() {  # PID SECONDS: the process ends within SECONDS; prints its exit code
  local t=0
  while kill -0 "$1" 2>/dev/null; do
    sleep 1; t=$((t + 1))
    [ $t -le "$2" ] || { echo "hung"; return; }
  done
  wait "$1" && echo 0 || echo $?
}
start_pair eq/fault-kill
kill -9 "${pids[1]}"
rc=$(waited "${pids[0]}" 60)
[ "$rc" != "hung" ] || fail "rank 0 kept waiting after rank 1 died"
[ "$rc" -ne 0 ] || fail "rank 0 succeeded after rank 1 died"
grep -q "emovlm: error: rank 0 of 2: .* failed: another rank exited" "$scratch/fault0.log" ||
  { cat "$scratch/fault0.log" >&2; fail "rank 0 does not say that a rank exited"; }
pids=()
start_pair eq/fault-hang --dist-timeout 5
kill -STOP "${pids[1]}"
rc=$(waited "${pids[0]}" 90)
kill -9 "${pids[1]}" 2>/dev/null || true
[ "$rc" != "hung" ] || fail "rank 0 did not give up on a hung rank 1 within 90 s (timeout 5 s)"
[ "$rc" -ne 0 ] || fail "rank 0 succeeded while rank 1 hung"
grep -q "hung longer than the 5 s timeout" "$scratch/fault0.log" || { cat "$scratch/fault0.log" >&2; fail "rank 0 does not name the timeout"; }
pids=()

# ---- a command that runs as one process refuses to be one of several
out=$(RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 emovlm evaluate --cache runs/cache/val --distill eq/distill-1 --gate eq/gate-1 --out eq/eval 2>&1) &&
  fail "evaluate ran as rank 1 of 2"
echo "$out" | grep -q "emovlm evaluate runs as one process; it was started as rank 1 of 2 (torchrun)" || fail "evaluate's refusal: $out"
[ ! -e eq/eval ] || fail "the refused evaluate wrote eq/eval"
echo "distributed: all checks passed"
