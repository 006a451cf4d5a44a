#!/usr/bin/env bash
# A short follow-up to run.sh: build the VLM benchmark only and run the 7B shape at batch 16 (GPU
# memory of inference, a third sample of the extract pass). Same setup as run.sh.
set -u
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
DEPS=/tmp/emovlm-deps; mkdir -p $DEPS
for f in .devdeps/*.deb; do dpkg -x "$f" $DEPS; done
export LD_LIBRARY_PATH=$DEPS/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
TORCH_PREFIX=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
B=build-gpu
cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_DISABLE_FIND_PACKAGE_PkgConfig=ON \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$DEPS/usr" -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" >"$OUT/build.log" 2>&1 || exit 1
timeout 150 cmake --build $B -j 16 --target bench_qwen2vl >>"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
timeout 60 $B/bench/bench_qwen2vl 7b bf16 cuda 5 16 2>&1 | tee "$OUT/bench.log" | grep -E "^(vision|prefill|extract|  of which|  pixel|GPU|  decode run)"
