#!/usr/bin/env bash
# Where one 1:1 message's cost goes (scenario 1 at one fixed rate): starts one Redis and two
# webchat nodes (release build, --auth open, --worker-threads 1, call log as CALL_LOG), drives
# them with webchat-loadgen at RATE msgs/s, and during the measured window records
#   - Redis `INFO commandstats`: commands, script calls and Redis µs per delivered message;
#   - the nodes' context switches (voluntary + involuntary) per delivered message;
#   - `perf record -g` (cpu-clock) of node 1, summarised as the top entries by self time
#     (OUT/node1.data stays for `perf report -i`).
#
#   bash bench/profile-pairs.sh [OUT]       # OUT defaults to bench/results/profile-pairs
#
# Environment: PROFILE_RATE (5000), PROFILE_SECS (10), PROFILE_WARMUP (3), PROFILE_SOCKETS
# (500: 250 pairs across the two nodes), PROFILE_CALL_LOG (true), PROFILE_ACKS (per-event or
# cumulative), PROFILE_PERF (1; 0 skips perf), BENCH_WEBCHAT_BIN (server binary to profile).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=scripts/lib/redis.sh
. "$ROOT/scripts/lib/redis.sh"

OUT="${1:-$ROOT/bench/results/profile-pairs}"
RATE="${PROFILE_RATE:-5000}"
SECS="${PROFILE_SECS:-10}"
WARMUP="${PROFILE_WARMUP:-3}"
SOCKETS="${PROFILE_SOCKETS:-500}"
CALL_LOG="${PROFILE_CALL_LOG:-true}"
ACKS="${PROFILE_ACKS:-per-event}"
PERF="${PROFILE_PERF:-1}"
BIN="${BENCH_WEBCHAT_BIN:-$ROOT/target/release/webchat}"
LOADGEN="$ROOT/target/release/webchat-loadgen"
if [ -z "${BENCH_WEBCHAT_BIN:-}" ]; then
  cargo build --release -q -p webchat -p webchat-loadgen
fi
[ "$PERF" = 0 ] || command -v perf >/dev/null || die "perf is not installed (PROFILE_PERF=0 skips it)"
rm -rf "$OUT"
mkdir -p "$OUT"
RUN_DIR="$(mktemp -d)"
PIDS=()
cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  stop_redis
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT

start_redis "$RUN_DIR"
urls=()
nodes=()
for n in 1 2; do
  mkfifo "$RUN_DIR/node$n.out"
  RUST_LOG=warn WEBCHAT_MAX_CONNECTIONS_PER_ADDRESS=0 "$BIN" --listen 127.0.0.1:0 \
    --redis-url "$REDIS_URL" --auth open \
    --worker-threads 1 --call-log "$CALL_LOG" --data-dir "$RUN_DIR/node$n" --socket-rate 0 \
    >"$RUN_DIR/node$n.out" 2>"$OUT/node$n.err" &
  PIDS+=($!)
  nodes+=($!)
  read -r line <"$RUN_DIR/node$n.out"
  urls+=("http://${line##* }")
done

# Voluntary + involuntary context switches of every thread of a process.
switches() {
  local pid="$1" total=0 f n
  for f in /proc/"$pid"/task/*/status; do
    n=$(awk '/ctxt_switches/ {s += $2} END {print s + 0}' "$f" 2>/dev/null || echo 0)
    total=$((total + n))
  done
  echo "$total"
}
# Cumulative commandstats of the Redis server: "name calls usec" per line.
commandstats() {
  redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' |
    sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\),usec=\([0-9]*\),.*/\1 \2 \3/p'
}

"$LOADGEN" --urls "$(IFS=,; echo "${urls[*]}")" --sockets "$SOCKETS" --rate "$RATE" \
  --duration "$((SECS + 2))s" --warmup "${WARMUP}s" --acks "$ACKS" \
  --server-pids "$(IFS=,; echo "${nodes[*]}"),$REDIS_PID" --label "profile" \
  >"$OUT/loadgen.jsonl" 2>"$OUT/loadgen.err" &
gen=$!
PIDS+=("$gen")
until grep -q "all .* sockets joined" "$OUT/loadgen.err" 2>/dev/null; do
  kill -0 "$gen" 2>/dev/null || die "the generator ended early: $(tail -3 "$OUT/loadgen.err")"
  sleep 0.2
done
# Messages both nodes have stored so far.
appended() {
  local url total=0 n
  for url in "${urls[@]}"; do
    n=$(curl -fsS "$url/metrics" | awk '/^webchat_inbox_appended_total/ {print $2}')
    total=$((total + ${n%.*}))
  done
  echo "$total"
}
# snapshot NAME: Redis commandstats into OUT/redis-NAME.txt; sets SWITCHES and APPENDED.
snapshot() {
  commandstats >"$OUT/redis-$1.txt"
  SWITCHES=$(( $(switches "${nodes[0]}") + $(switches "${nodes[1]}") ))
  APPENDED=$(appended)
}
# Into the measured window (the generator's warm-up), then one second more.
sleep "$((WARMUP + 1))"
snapshot before
cs_before=$SWITCHES appended_before=$APPENDED
if [ "$PERF" != 0 ]; then
  perf record -F 999 -g -e cpu-clock -o "$OUT/node1.data" -p "${nodes[0]}" -- sleep "$SECS" \
    >/dev/null 2>&1
else
  sleep "$SECS"
fi
snapshot after
cs_after=$SWITCHES
delivered=$((APPENDED - appended_before))
wait "$gen" || warn "the generator failed: $(tail -3 "$OUT/loadgen.err")"
[ "$delivered" -gt 0 ] || die "nothing delivered in the window"

python3 - "$OUT" "$delivered" "$cs_before" "$cs_after" <<'EOF'
import sys, os
out, messages, cs0, cs1 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def load(name):
    stats = {}
    for line in open(os.path.join(out, name)):
        cmd, calls, usec = line.split()
        stats[cmd] = (int(calls), int(usec))
    return stats
before, after = load("redis-before.txt"), load("redis-after.txt")
rows = []
for cmd, (calls, usec) in after.items():
    c0, u0 = before.get(cmd, (0, 0))
    if calls - c0 > 0:
        rows.append((cmd, calls - c0, usec - u0))
rows.sort(key=lambda r: -r[1])
scripts = {"evalsha", "eval", "fcall"}
# Commands a script runs count under their own names too (and in the script's usec).
commands = sum(calls for cmd, calls, _ in rows if cmd not in scripts)
script_calls = sum(calls for cmd, calls, _ in rows if cmd in scripts)
script_usec = sum(usec for cmd, _, usec in rows if cmd in scripts)
print(f"messages stored in the window: {messages}")
print(f"context switches per message (both nodes, all threads): {(cs1 - cs0) / messages:.2f}")
print(f"redis commands per message: {commands / messages:.2f}; script calls per message: "
      f"{script_calls / messages:.2f} ({script_usec / max(script_calls, 1):.1f} µs each)")
print("per message:", ", ".join(f"{cmd} {calls / messages:.2f}" for cmd, calls, _ in rows
                                if calls / messages >= 0.01))
EOF
tail -n 1 "$OUT/loadgen.jsonl" | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print("loadgen: delivered/s %.0f p50 %.2f ms p99 %.2f ms lost %d dup %d nodes+redis µs/msg %.1f" % (r["delivered_per_sec"], r["latency_p50_ms"], r["latency_p99_ms"], r["lost"], r["duplicates"], r["server_cpu_us_per_msg"]))'
if [ "$PERF" != 0 ]; then
  perf report -i "$OUT/node1.data" --no-children --sort symbol --stdio 2>/dev/null |
    grep -E '^ +[0-9]' | head -n 30 >"$OUT/node1-top.txt"
  echo "node 1, top entries by self time (perf report -i $OUT/node1.data):"
  cat "$OUT/node1-top.txt"
fi
