#!/usr/bin/env bash
# Diagnosis of the CPU test suite on the GPU machine's libtorch: build it as run.sh does, then
# backtraces of crashing tests (cuda-gdb debugs host code too). Results in $OUT/diag.log.
set -u
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
DEPS=/tmp/emovlm-deps
mkdir -p $DEPS
for f in .devdeps/*.deb; do dpkg -x "$f" $DEPS; done
export LD_LIBRARY_PATH=$DEPS/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export EMOVLM_REFERENCE_DIR=$PWD/tests/data/reference
B=build-gpu
{
  g++ --version | head -1; command -v g++
  cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_DISABLE_FIND_PACKAGE_PkgConfig=ON \
    -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)');$DEPS/usr" >/dev/null
  cmake --build $B -j 16 --target test_torch -- -k 0 | grep -E "error|FAILED" | head -20
  ldd $B/tests/test_torch | grep -E "stdc|gtest|utf8"
  for t in Trainer.Schedules TensorIO.UnsupportedDtypeIsAnError TensorIO.RoundTripDtypes; do
    echo "### $t"; timeout 60 $B/tests/test_torch --gtest_filter=$t 2>&1 | tail -5; echo "rc=$?"
  done
  echo "### backtrace"
  timeout 120 cuda-gdb -batch -ex run -ex bt --args $B/tests/test_torch --gtest_filter=TensorIO.RoundTripDtypes 2>&1 | grep -v "^\[New Thread\|^\[Thread" | tail -40
  echo "### Qwen2VL suite"
  timeout 120 $B/tests/test_torch --gtest_filter='Qwen2VL.*' 2>&1 | grep -E "RUN|OK|FAILED|Failure|Expected|actual" | tail -30
} >"$OUT/diag.log" 2>&1
tail -80 "$OUT/diag.log"
