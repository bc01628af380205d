#!/usr/bin/env bash
# Call-log benchmark: how fast the call log drains into DynamoDB Local, and what logging
# costs chat throughput.
#
#   bash bench/calllog.sh
#
# Starts Redis, DynamoDB Local (in memory) and two webchat nodes (release build, --auth open,
# call-log table in DynamoDB), then:
#   1. drain: offers BENCH_DRAIN_RATE msgs/s (default 4000) of 1:1 traffic for
#      BENCH_DRAIN_DURATION (default 20s) and samples the nodes' call-log counters every
#      second until the backlog is empty: events/s written to DynamoDB while a backlog exists;
#   2. on vs off: the pairs scenario at BENCH_STEPS (default 4000,8000,12000) with the call
#      log on (DynamoDB) and then off (--call-log false), nodes restarted in between.
# Prints JSON lines and a Markdown summary. Environment: BENCH_SOCKETS (1000),
# BENCH_DURATION (8s per step), BENCH_WORKER_THREADS (1).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=scripts/lib/redis.sh
. "$ROOT/scripts/lib/redis.sh"
# shellcheck source=scripts/lib/dynamodb.sh
. "$ROOT/scripts/lib/dynamodb.sh"

DRAIN_RATE="${BENCH_DRAIN_RATE:-4000}"
DRAIN_DURATION="${BENCH_DRAIN_DURATION:-20s}"
STEPS="${BENCH_STEPS:-4000,8000,12000}"
SOCKETS="${BENCH_SOCKETS:-1000}"
DURATION="${BENCH_DURATION:-8s}"
THREADS="${BENCH_WORKER_THREADS:-1}"
BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/release"

ensure_redis_installed
ensure_dynamodb_local_installed "$ROOT"
cargo build --release -p webchat -p webchat-loadgen

RUN_DIR="$(mktemp -d)"
NODE_PIDS=()
URLS=()
stop_nodes() {
  local pid
  for pid in "${NODE_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${NODE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  NODE_PIDS=()
  URLS=()
}
cleanup() {
  set +e
  stop_nodes
  stop_dynamodb_local
  stop_redis
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT

start_redis "$RUN_DIR"
start_dynamodb_local "$ROOT" "$RUN_DIR"

# start_nodes TAG EXTRA_ARGS...
start_nodes() {
  local tag="$1" n line
  shift
  for n in 1 2; do
    mkfifo "$RUN_DIR/$tag$n.out"
    # Every generated socket comes from 127.0.0.1: no per-address connection cap.
    RUST_LOG=warn WEBCHAT_MAX_CONNECTIONS_PER_ADDRESS=0 "$BIN_DIR/webchat" --listen 127.0.0.1:0 --redis-url "$REDIS_URL" --auth open \
      --worker-threads "$THREADS" --data-dir "$RUN_DIR/$tag$n" --socket-rate 0 "$@" \
      >"$RUN_DIR/$tag$n.out" 2>"$RUN_DIR/$tag$n.err" &
    NODE_PIDS+=($!)
    read -r line <"$RUN_DIR/$tag$n.out"
    URLS+=("http://${line##* }")
  done
}

metric_sum() {
  local name="$1" url total=0 v
  for url in "${URLS[@]}"; do
    v="$(curl -s "$url/metrics" | awk -v n="$name" '$1 == n { print $2 }')"
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

url_list() { (IFS=,; echo "${URLS[*]}"); }

# --- 1. drain rate into DynamoDB Local ---------------------------------------
start_nodes drain --dynamodb-endpoint "$DYNAMODB_URL" --table-prefix "bench$(date +%s)_"
log "drain: ${DRAIN_RATE} msgs/s for ${DRAIN_DURATION} into DynamoDB Local ($DYNAMODB_URL)"
SAMPLES="$RUN_DIR/drain-samples.txt"
(
  while true; do
    # backlog is the shared queue's length (either node sees it); written sums both nodes.
    echo "$(date +%s.%N) $(metric_sum webchat_calllog_written_total) $(curl -s "${URLS[0]}/health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["backends"]["calllog"].get("backlog", -1))')"
    sleep 1
  done
) >"$SAMPLES" &
SAMPLER=$!
"$BIN_DIR/webchat-loadgen" --urls "$(url_list)" --sockets "$SOCKETS" --rate "$DRAIN_RATE" \
  --duration "$DRAIN_DURATION" --warmup 1s --run-id "d$(date +%s%N)" >"$RUN_DIR/drain-load.jsonl"
# Wait for the backlog to empty (bounded).
for _ in $(seq 1 600); do
  backlog="$(curl -s "${URLS[0]}/health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["backends"]["calllog"].get("backlog", -1))')"
  [ "$backlog" = 0 ] && break
  sleep 1
done
sleep 1
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
python3 - "$SAMPLES" "$RUN_DIR/drain-load.jsonl" <<'PY'
import json, sys
samples = [tuple(float(x) for x in l.split()) for l in open(sys.argv[1]) if len(l.split()) == 3]
load = [json.loads(l) for l in open(sys.argv[2]) if l.strip()][-1]
# Events/s written over the stretch where a backlog existed (the table was the bottleneck).
busy = [(t, w) for (t, w, b) in samples if b > 0]
rate = (busy[-1][1] - busy[0][1]) / (busy[-1][0] - busy[0][0]) if len(busy) > 1 and busy[-1][0] > busy[0][0] else None
peak = max((b for (_, _, b) in samples), default=0)
total = samples[-1][1] if samples else 0
print(json.dumps({"scenario": "calllog-drain", "offered_rate": load["offered_rate"],
                  "delivered_per_sec": load["delivered_per_sec"], "records_written": total,
                  "peak_backlog": peak, "drain_records_per_sec": rate and round(rate)}))
PY
stop_nodes

# --- 2. chat throughput with the call log on vs off ---------------------------
for mode in on off; do
  if [ "$mode" = on ]; then
    start_nodes "on" --dynamodb-endpoint "$DYNAMODB_URL" --table-prefix "bench$(date +%s)_"
  else
    start_nodes "off" --call-log false
  fi
  log "pairs with the call log $mode: steps $STEPS"
  "$BIN_DIR/webchat-loadgen" --urls "$(url_list)" --sockets "$SOCKETS" --rate-steps "$STEPS" \
    --duration "$DURATION" --warmup 2s --server-pids "${NODE_PIDS[0]},${NODE_PIDS[1]},$REDIS_PID" \
    --run-id "$mode$(date +%s%N)" | sed "s/^{/{\"call_log\":\"$mode\",/"
  stop_nodes
done
