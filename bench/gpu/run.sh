#!/usr/bin/env bash
# Everything this project checks on an NVIDIA GPU machine, in one call from the repository root
# (with the .devdeps/ folder below next to it): build against the pip torch's libtorch, the
# GPU golden tests, the GPU benchmarks, the PEFT round trip, then the whole torch test suite on
# that libtorch. Results under $OUT: summary.txt (short), build.log, tests.log, bench.log, peft.log.
#   .devdeps/: Debian's libutf8proc2, libutf8proc-dev, libgtest-dev, libgmock-dev (.deb), for a
#   machine without them (`apt-get download` them there).
set -u
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
ROOT=$PWD
T0=$(date +%s)
note() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/summary.txt"; }
# Everything ends by DEADLINE seconds after the start (default 480), so that the summary comes back
# inside the device call's limit: each step gets at most what is left, and a step is skipped when
# under 20 s are left. The steps run in order of what the open issues need measured.
DEADLINE=${DEADLINE:-480}
run() {  # run LOGFILE TIMEOUT CMD...: output appended to the log, status in the summary
  local log=$1 limit=$2; shift 2
  local left=$(( DEADLINE - ($(date +%s) - T0) ))
  if (( left < 20 )); then note "skipped (out of time): $*"; return 124; fi
  (( limit > left - 5 )) && limit=$(( left - 5 ))
  echo "### $*" >>"$OUT/$log"
  timeout "$limit" "$@" >>"$OUT/$log" 2>&1
  local rc=$?
  note "rc=$rc  $*"
  return $rc
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/summary.txt"
DEPS=/tmp/emovlm-deps
mkdir -p $DEPS
for f in .devdeps/*.deb; do dpkg -x "$f" $DEPS; done
TORCH_PREFIX=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
python3 -c 'import torch;print("torch", torch.__version__, "cxx11abi", torch._C._GLIBCXX_USE_CXX11_ABI)' | tee -a "$OUT/summary.txt"
export LD_LIBRARY_PATH=$DEPS/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
B=build-gpu
# data parallelism needs Gloo's headers in the pip torch (CMake stops without them) and NCCL: try
# with NCCL, and without it when that configuration fails
note "gloo headers in the pip torch: $(ls -d "$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')/include/gloo" 2>/dev/null || echo missing)"
CONFIGURE=(cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_DISABLE_FIND_PACKAGE_PkgConfig=ON
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$DEPS/usr" -DCMAKE_CUDA_COMPILER="$(command -v nvcc)")
run build.log 300 "${CONFIGURE[@]}" -DEMOVLM_NCCL=ON || { rm -rf $B; run build.log 300 "${CONFIGURE[@]}" -DEMOVLM_NCCL=OFF; } ||
  { tail -40 "$OUT/build.log"; exit 1; }
grep -E "^-- emovlm: .*(NCCL|Gloo|gloo)" "$OUT/build.log" | head -3 | tee -a "$OUT/summary.txt"
TARGETS="emovlm_cli test_gpu bench_teacher bench_qwen2vl bench_train bench_dist_step"
if ! run build.log 400 cmake --build $B -j 16 --target $TARGETS -- -k 0; then
  # the CUDA-graph code is the part never compiled before against this libtorch: without it the
  # rest still gets measured (its errors are in build.log and the summary)
  grep -E "error" "$OUT/build.log" | head -20 | tee -a "$OUT/summary.txt"
  note "build failed; again without CUDA graphs"
  run build.log 60 cmake -S . -B $B -DEMOVLM_CUDA_GRAPHS=OFF
  run build.log 400 cmake --build $B -j 16 --target $TARGETS -- -k 0 || { grep -E "error|Error" "$OUT/build.log" | head -40; exit 1; }
fi
grep -E "emovlm: CUDA graphs" "$OUT/build.log" | head -1 | tee -a "$OUT/summary.txt"

export EMOVLM_REFERENCE_DIR=$ROOT/tests/data/reference
run tests.log 120 $B/tests/test_gpu
grep -E "^\[  (PASSED|FAILED) |^\[  FAILED|OK \]" "$OUT/tests.log" | tee -a "$OUT/summary.txt"

run bench.log 120 $B/bench/bench_teacher 32 5 cuda 64
# Table 1's CNN baselines at 224 px next to the ViT: training batch 32, inference batch 64
run bench.log 150 $B/bench/bench_teacher 32 5 cuda 64 resnet50,vgg16
run bench.log 150 $B/bench/bench_qwen2vl 7b bf16 cuda 5 1
run bench.log 150 $B/bench/bench_qwen2vl 7b bf16 cuda 5 16
run bench.log 150 $B/bench/bench_qwen2vl 7b bf16 cuda 5 32
grep -E "^(ViT|ResNet|VGG|f32|bf16|shape|vision|prefill|extract|  decode|  of which|  pixel|model ready)" "$OUT/bench.log" | tee -a "$OUT/summary.txt"

# GPU memory of the stage-1 steps: nvidia-smi sampled every 200 ms (the CUDA context included).
peak_mem() {  # peak_mem CMD...: runs `run bench.log 200 CMD...` and notes the peak memory.used
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >/tmp/mem.txt 2>/dev/null &
  local sampler=$!
  run bench.log 200 "$@"
  kill $sampler 2>/dev/null
  note "peak GPU memory $(sort -n /tmp/mem.txt | tail -1) MiB: $*"
}
peak_mem $B/bench/bench_train 7b 512 3 cuda ckpt
peak_mem $B/bench/bench_train 2b 512 3 cuda ckpt
grep -E "LoRA step|GPU memory allocated|NF4 on|GB;" "$OUT/bench.log" | tee -a "$OUT/summary.txt"
run bench.log 100 $B/bench/bench_qwen2vl 2b bf16 cuda 5 16
grep -E "^(shape|vision|prefill|extract)" "$OUT/bench.log" | tail -4 | tee -a "$OUT/summary.txt"

# Data parallelism on one GPU: a 7B LoRA step of 4 x 512 tokens by one process, then by two
# processes sharing the GPU (Gloo: NCCL refuses two ranks on one device), for the all-reduce's cost
run bench.log 120 $B/bench/bench_dist_step 7b 512 4 3
run bench.log 150 python3 -m torch.distributed.run --standalone --nproc_per_node 2 --no_python $B/bench/bench_dist_step 7b 512 4 3 gloo
grep -E "process\(es\)" "$OUT/bench.log" | tee -a "$OUT/summary.txt"

# PEFT: tune a LoRA adapter on the tiny fixture on the GPU, merge it, load both in Python.
P=/tmp/peft; mkdir -p $P
python3 - <<'PY' >>"$OUT/peft.log" 2>&1
from PIL import Image
import json
rows = []
for i, (c, label) in enumerate([((230, 200, 40), "amusement"), ((30, 40, 120), "sadness")]):
    Image.new("RGB", (56, 56), c).save(f"/tmp/peft/{i}.png")
    rows.append({"image": f"/tmp/peft/{i}.png", "label": label, "kind": "categorical",
                 "prompt": "What emotion does this image convey?", "answer": "{'emotion': '%s'}" % label})
open("/tmp/peft/inst.jsonl", "w").write("".join(json.dumps(r) + "\n" for r in rows))
PY
run peft.log 120 $B/emovlm tune --vlm tests/data/reference/qwen2vl_tiny --instructions $P/inst.jsonl --out $P/adapter \
  --lora --lora-r 4 --epochs 3 --lr 5e-3 --device cuda --gradient-checkpointing
run peft.log 60 $B/emovlm lora merge --vlm tests/data/reference/qwen2vl_tiny --adapter $P/adapter --out $P/merged
run peft.log 180 python3 bench/gpu/peft_roundtrip.py tests/data/reference/qwen2vl_tiny $P/adapter $P/merged
grep -E "^(ok|FAIL) " "$OUT/peft.log" | tee -a "$OUT/summary.txt"

# The CPU test suite on this libtorch (the compatibility layer's other side).
# Suite by suite, so that a crash names its suite.
if run build.log 200 cmake --build $B -j 16 --target test_torch; then
  for suite in $($B/tests/test_torch --gtest_list_tests | grep -v '^ ' | tr -d .); do
    run tests.log 90 $B/tests/test_torch --gtest_filter="$suite.*" --gtest_brief=1
  done
  grep -E "^\[  FAILED|Failure" "$OUT/tests.log" | sort -u | head -30 | tee -a "$OUT/summary.txt"
fi
note done
