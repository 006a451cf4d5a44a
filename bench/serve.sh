#!/usr/bin/env bash
# `emovlm serve` under load on this machine (loopback only; every loop bounded): requests/s and
# latency at concurrency 1, 4, 16, 64 with keep-alive, with --batch 1 and --batch 8, on the demo
# bundle (CPU); GET /health on a kept-alive connection; predictions while slow clients trickle
# headers; peak RSS under the decompression-bomb mix. Figures go to bench/README.md.
#   bash bench/serve.sh [BUILD_DIR]      (the demo bundle is made under BUILD_DIR/bench-serve once)
set -euo pipefail
BUILD=${1:-build}
CLI=$BUILD/emovlm
CLIENT=$BUILD/bench/bench_serve
WORK=$BUILD/bench-serve
mkdir -p "$WORK"
if [ ! -f "$WORK/demo/bundle/bundle.json" ]; then
  "$CLI" -q demo --quick --out "$WORK/demo" > "$WORK/demo.log"
fi
BUNDLE=$WORK/demo/bundle
IMAGE=$(find "$WORK/demo/data/test" -type f \( -name '*.png' -o -name '*.jpg' \) | sort | head -n 1)
[ -n "$IMAGE" ] || { echo "no test image under $WORK/demo/data/test" >&2; exit 1; }
[ -f "$WORK/bomb9000.gif" ] || python3 "$(dirname "$0")/make_bombs.py" "$WORK"

SERVER_PID=
start() {  # start FLAGS...: a server on a free port; sets PORT and SERVER_PID
  "$CLI" serve --bundle "$BUNDLE" --device cpu --port 0 --access-log none "$@" > "$WORK/serve.out" 2> "$WORK/serve.err" &
  SERVER_PID=$!
  for _ in $(seq 1 600); do
    PORT=$(sed -n 's|.*http://127.0.0.1:\([0-9]*\).*|\1|p' "$WORK/serve.out" | head -n 1)
    [ -n "$PORT" ] && return 0
    sleep 0.2
  done
  echo "the server did not start" >&2; cat "$WORK/serve.err" >&2; exit 1
}
stop() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
}
trap stop EXIT
hwm() { awk '/VmHWM/ {print $2 / 1024 " MiB"}' "/proc/$SERVER_PID/status"; }

echo "# $(date -u +%Y-%m-%d) $(nproc) cores; bundle $BUNDLE; image $IMAGE"
for batch in 1 8; do
  start --batch "$batch" --batch-wait-ms 5 --queue 256
  "$CLIENT" load "$PORT" "$IMAGE" 1 10 > /dev/null  # warm-up
  for c in 1 4 16 64; do
    n=$(( c < 16 ? 100 : 4 * c ))
    echo "batch $batch: $("$CLIENT" load "$PORT" "$IMAGE" "$c" "$n")"
  done
  stop
done

start
echo "GET /health, one kept-alive connection: $("$CLIENT" load "$PORT" - 1 500)"
echo "GET /health, 64 kept-alive connections: $("$CLIENT" load "$PORT" - 64 6400)"
echo "slow clients: $("$CLIENT" slow "$PORT" "$IMAGE" 8 5)"
echo "slow clients: $("$CLIENT" slow "$PORT" "$IMAGE" 64 5)"
stop

start
"$CLIENT" load "$PORT" "$IMAGE" 1 5 > /dev/null
echo "peak RSS after warm-up: $(hwm)"
echo "8 GIF bombs at once: $("$CLIENT" bomb "$PORT" "$WORK/bomb9000.gif" 8)"
echo "8 PNG bombs at once: $("$CLIENT" bomb "$PORT" "$WORK/bomb9000.png" 8)"
echo "peak RSS after the bombs: $(hwm)"
echo "8 PNGs of 6000x6000 at once: $("$CLIENT" bomb "$PORT" "$WORK/big6000.png" 8)"
echo "peak RSS after them: $(hwm) (pixel budget $(sed -n 's/.*"pixel_budget":\([0-9]*\).*/\1/p' <(curl -s "http://127.0.0.1:$PORT/health")))"
stop
