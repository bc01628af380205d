#!/usr/bin/env bash
# One webchat node (open auth, one worker thread, a fresh Redis) holding SOCKETS idle sockets
# that connected and joined; prints the generator's JSON line (rss_kib_per_conn is the node's
# RSS growth per socket). Quicker than `bench/run.sh --scenario idle` (no Node peer, any
# build), for A/B runs of two binaries:
#
#   bash bench/idle-one-node.sh BIN LABEL [SOCKETS]     # SOCKETS defaults to 5000
#
# LOADGEN: the generator (default target/debug/webchat-loadgen).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$1" LABEL="$2" N="${3:-5000}"
LOADGEN="${LOADGEN:-$ROOT/target/debug/webchat-loadgen}"
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=scripts/lib/redis.sh
. "$ROOT/scripts/lib/redis.sh"
RUN_DIR="$(mktemp -d)"
NODE=""
cleanup() {
  [ -z "$NODE" ] || kill "$NODE" 2>/dev/null || true
  stop_redis
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT
start_redis "$RUN_DIR" 2>/dev/null
mkfifo "$RUN_DIR/out"
RUST_LOG=warn WEBCHAT_MAX_CONNECTIONS_PER_ADDRESS=0 "$BIN" --listen 127.0.0.1:0 \
  --redis-url "$REDIS_URL" --auth open --worker-threads 1 --data-dir "$RUN_DIR/node" \
  --socket-rate 0 >"$RUN_DIR/out" 2>"$RUN_DIR/err" &
NODE=$!
read -r line <"$RUN_DIR/out"
"$LOADGEN" --scenario idle --urls "http://${line##* }" --sockets "$N" --connect-batch 500 \
  --source-ips 8 --hold 5s --server-pids "$NODE,$REDIS_PID" --run-id "$(date +%s%N)" --label "$LABEL"
