#!/usr/bin/env bash
# Scenario 1 of the benchmarks: 1:1 cross-node throughput and latency.
# Starts a throw-away Redis and two webchat nodes (release build, --auth open) on free
# loopback ports, drives them with webchat-loadgen, prints one JSON line per rate step and a
# Markdown table, and stops everything it started.
#
#   bash bench/run.sh                      # full run (rate steps, 1,000 sockets)
#   bash bench/run.sh --smoke              # tiny run for CI: checks nothing acked is lost
#
# Environment: BENCH_SOCKETS (1000), BENCH_STEPS (5000,10000,12000,14000,16000,20000),
# BENCH_DURATION (10s), BENCH_WORKER_THREADS (1), BENCH_OUT (bench/results/latest.jsonl).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. "$ROOT/scripts/lib/common.sh"
. "$ROOT/scripts/lib/redis.sh"

SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1

if [ "$SMOKE" = 1 ]; then
  PROFILE=debug
  SOCKETS=40 STEPS=200 DURATION=2s WARMUP=1s
else
  PROFILE=release
  SOCKETS="${BENCH_SOCKETS:-1000}"
  STEPS="${BENCH_STEPS:-5000,10000,12000,14000,16000,20000}"
  DURATION="${BENCH_DURATION:-10s}"
  WARMUP=2s
fi
THREADS="${BENCH_WORKER_THREADS:-1}"
OUT="${BENCH_OUT:-$ROOT/bench/results/latest.jsonl}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN_DIR="$TARGET_DIR/$PROFILE"

ensure_redis_installed
if [ "$PROFILE" = release ]; then
  cargo build --release --bin webchat -p webchat -p webchat-loadgen
else
  cargo build --bin webchat --bin webchat-loadgen -p webchat -p webchat-loadgen
fi

RUN_DIR="$(mktemp -d)"
NODE_PIDS=()
cleanup() {
  set +e
  for pid in "${NODE_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${NODE_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  stop_redis
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT

start_redis "$RUN_DIR"
URLS=()
for n in 1 2; do
  mkfifo "$RUN_DIR/node$n.out"
  RUST_LOG=warn "$BIN_DIR/webchat" --listen 127.0.0.1:0 --redis-url "$REDIS_URL" --auth open \
    --worker-threads "$THREADS" --data-dir "$RUN_DIR/node$n" \
    >"$RUN_DIR/node$n.out" 2>"$RUN_DIR/node$n.err" &
  NODE_PIDS+=($!)
  read -r line <"$RUN_DIR/node$n.out"
  URLS+=("http://${line##* }")
done
log "nodes: ${URLS[*]} (pids ${NODE_PIDS[*]}), redis pid $REDIS_PID"

mkdir -p "$(dirname "$OUT")"
"$BIN_DIR/webchat-loadgen" --urls "$(IFS=,; echo "${URLS[*]}")" --sockets "$SOCKETS" \
  --rate-steps "$STEPS" --duration "$DURATION" --warmup "$WARMUP" \
  --server-pids "${NODE_PIDS[0]},${NODE_PIDS[1]},$REDIS_PID" --run-id "$(date +%s%N)" \
  | tee "$OUT"

python3 - "$OUT" "$SMOKE" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("\n| offered msgs/s | delivered msgs/s | p50 ms | p99 ms | p999 ms | lost | dup | servers+Redis CPU µs/msg | generator CPU µs/msg |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['offered_rate']:.0f} | {r['delivered_per_sec']:.0f} | {r['latency_p50_ms']} | {r['latency_p99_ms']} | "
          f"{r['latency_p999_ms']} | {r['lost']} | {r['duplicates']} | {r['server_cpu_us_per_msg']} | {r['gen_cpu_us_per_msg']} |")
bad = [r for r in rows if r["lost"] or r["acked_total"] != r["sent_total"] or r["ack_errors"]]
if sys.argv[2] == "1":
    ok = rows and not bad and all(r["delivered"] == r["acked"] for r in rows)
    print(f"bench-smoke: {'1 passed, 0 failed' if ok else '0 passed, 1 failed'}")
    sys.exit(0 if ok else 1)
PY
