#!/usr/bin/env bash
# The load-benchmark matrix behind docs/performance.md, one run at a time.
#   bench/load.sh OUTDIR [REPEATS]
# Bridge pinned to CPU 0, load generator (callers + Realtime simulator) to CPU 1.
# Each run is ~45 s (30 s steady-state window); results land in OUTDIR/*.json and
# one summary line per run in OUTDIR/summary.txt.
set -euo pipefail
out=${1:-/tmp/bridge-bench}
repeats=${2:-1}
mkdir -p "$out"
pin=(--bridge-cpu 0 --gen-cpu 1)
run() {  # run NAME ARGS...
  local name=$1; shift
  for r in $(seq 1 "$repeats"); do
    line=$(python -m bridge bench "${pin[@]}" --json "$out/$name.$r.json" "$@")
    echo "$name.$r $line" | tee -a "$out/summary.txt"
  done
}
# Server stacks at 50 calls, passthrough. "base" = what pyproject installs (no extras).
run base      --calls 50 --duration 30 --loop asyncio --http h11 --ws websockets
run sansio    --calls 50 --duration 30 --loop asyncio --http h11 --ws websockets-sansio
run wsproto   --calls 50 --duration 30 --loop asyncio --http h11 --ws wsproto
run uvloop    --calls 50 --duration 30 --loop uvloop --http httptools --ws websockets
run uv-sansio --calls 50 --duration 30 --loop uvloop --http httptools --ws websockets-sansio
run uv-sansio-orjson --calls 50 --duration 30 --loop uvloop --http httptools \
    --ws websockets-sansio --json-lib orjson
# pcm16 (transcoding in the bridge)
run base-pcm16      --calls 50 --duration 30 --audio pcm16 --loop asyncio --http h11 --ws websockets
run uv-sansio-pcm16 --calls 50 --duration 30 --audio pcm16 --loop uvloop --http httptools \
    --ws websockets-sansio
# 300 concurrent calls on one core
run base-300      --calls 300 --duration 30 --loop asyncio --http h11 --ws websockets
run uv-sansio-300 --calls 300 --duration 30 --loop uvloop --http httptools --ws websockets-sansio
