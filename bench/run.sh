#!/usr/bin/env bash
# The benchmarks, scenarios 1 and 3.
# Starts a throw-away Redis and two webchat nodes (release build, --auth open) on free
# loopback ports, drives them with webchat-loadgen, prints one JSON line per rate step / group
# size and a Markdown table, and stops everything it started.
#
#   bash bench/run.sh                           # scenario 1, pairs: 1:1 across nodes, rate steps
#   bash bench/run.sh --scenario group-fanout   # scenario 3: one message to a 1,000- and a
#                                               # 10,000-member group, time until all have it
#   bash bench/run.sh --smoke                   # tiny runs of both for CI (debug build): checks
#                                               # nothing acked is lost and every member got
#                                               # every group message; last line
#                                               # `bench-smoke: 1 passed, 0 failed` (or
#                                               # `0 passed, 1 failed`, exit status 1)
#
# Environment, pairs: BENCH_SOCKETS (1000), BENCH_STEPS (5000,10000,12000,14000,16000,20000),
# BENCH_DURATION (10s), BENCH_OUT (bench/results/latest.jsonl).
# group-fanout: BENCH_GROUP_SIZES (1000,10000), BENCH_GROUP_MESSAGES (5),
# BENCH_FANOUT_TIMEOUT (120s), BENCH_GROUP_OUT (bench/results/group-fanout.jsonl).
# Both: BENCH_WORKER_THREADS (1, per node).
#
# group-fanout opens one socket per member in the generator (and spreads the server ends over
# the two nodes), so it raises the open-files limit (`ulimit -n`, up to 65536 or the hard
# limit) before starting anything; the generator cannot raise it itself.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=scripts/lib/redis.sh
. "$ROOT/scripts/lib/redis.sh"

SMOKE=0
SCENARIO=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --scenario)
      [ $# -ge 2 ] || die "--scenario needs a value (pairs or group-fanout)"
      SCENARIO="$2"
      shift
      ;;
    --scenario=*) SCENARIO="${1#--scenario=}" ;;
    *) die "unknown argument $1 (use --smoke and/or --scenario pairs|group-fanout)" ;;
  esac
  shift
done
case "$SCENARIO" in
  "") if [ "$SMOKE" = 1 ]; then SCENARIOS="pairs group-fanout"; else SCENARIOS=pairs; fi ;;
  pairs | group-fanout) SCENARIOS="$SCENARIO" ;;
  *) die "unknown scenario $SCENARIO (pairs or group-fanout)" ;;
esac
wants() { [[ " $SCENARIOS " == *" $1 "* ]]; }

if [ "$SMOKE" = 1 ]; then
  PROFILE=debug
  SOCKETS=40 STEPS=200 DURATION=2s WARMUP=1s
  GROUP_SIZES=20 GROUP_MESSAGES=2 FANOUT_TIMEOUT=30s GROUP_PAUSE=200ms
else
  PROFILE=release
  SOCKETS="${BENCH_SOCKETS:-1000}"
  STEPS="${BENCH_STEPS:-5000,10000,12000,14000,16000,20000}"
  DURATION="${BENCH_DURATION:-10s}"
  WARMUP=2s
  GROUP_SIZES="${BENCH_GROUP_SIZES:-1000,10000}"
  GROUP_MESSAGES="${BENCH_GROUP_MESSAGES:-5}"
  FANOUT_TIMEOUT="${BENCH_FANOUT_TIMEOUT:-120s}"
  GROUP_PAUSE=1s
fi
THREADS="${BENCH_WORKER_THREADS:-1}"
OUT="${BENCH_OUT:-$ROOT/bench/results/latest.jsonl}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN_DIR="$TARGET_DIR/$PROFILE"

if wants group-fanout && [ "$SMOKE" = 0 ]; then
  # One fd per member socket in the generator, plus Redis connections, files, slack.
  max_members=0
  for n in ${GROUP_SIZES//,/ }; do
    [ "$n" -gt "$max_members" ] && max_members="$n"
  done
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((max_members + 200)) ]; then
    warn "open-files limit $(ulimit -n) is too low for $max_members members (hard limit $(ulimit -Hn))"
  fi
  log "open-files limit: $(ulimit -n)"
fi

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
# After a failed generator run: what the servers and Redis said.
show_server_logs() {
  local f
  for f in "$RUN_DIR"/node*.err "$REDIS_DIR/redis.log"; do
    [ -s "$f" ] || continue
    warn "last lines of $(basename "$f"):"
    grep -v ' INFO ' "$f" | tail -n 5 >&2 || true
  done
}
URL_LIST="$(IFS=,; echo "${URLS[*]}")"
SERVER_PIDS="${NODE_PIDS[0]},${NODE_PIDS[1]},$REDIS_PID"

PASSED=0
FAILED=0

if wants pairs; then
  mkdir -p "$(dirname "$OUT")"
  PAIRS_RC=0
  "$BIN_DIR/webchat-loadgen" --urls "$URL_LIST" --sockets "$SOCKETS" \
    --rate-steps "$STEPS" --duration "$DURATION" --warmup "$WARMUP" \
    --server-pids "$SERVER_PIDS" --run-id "$(date +%s%N)" \
    | tee "$OUT" || { PAIRS_RC=1; warn "webchat-loadgen failed (pairs)"; show_server_logs; }

  if [ "$PAIRS_RC" = 0 ] && python3 - "$OUT" "$SMOKE" <<'PY'; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); fi
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
    print(f"pairs smoke: {'passed' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)
PY
fi

if wants group-fanout; then
  if [ "$SMOKE" = 1 ]; then
    GROUP_OUT="$RUN_DIR/group-fanout.jsonl"
  else
    GROUP_OUT="${BENCH_GROUP_OUT:-$ROOT/bench/results/group-fanout.jsonl}"
  fi
  mkdir -p "$(dirname "$GROUP_OUT")"
  : >"$GROUP_OUT"
  GROUP_RC=0
  for members in ${GROUP_SIZES//,/ }; do
    log "group-fanout: $members members, $GROUP_MESSAGES messages"
    "$BIN_DIR/webchat-loadgen" --scenario group-fanout --urls "$URL_LIST" \
      --members "$members" --messages "$GROUP_MESSAGES" --fanout-timeout "$FANOUT_TIMEOUT" \
      --pause "$GROUP_PAUSE" --server-pids "$SERVER_PIDS" --run-id "$(date +%s%N)" \
      | tee -a "$GROUP_OUT" || {
      GROUP_RC=1
      warn "webchat-loadgen failed ($members members)"
      show_server_logs
    }
  done

  if python3 - "$GROUP_OUT" "$SMOKE" "$GROUP_RC" "$GROUP_SIZES" <<'PY'; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); fi
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("\n| members | messages | create ack ms | create ms (last notify) | fan-out p50 ms | fan-out p99 ms | fan-out max ms | sender ack p50 ms | delivered / expected | servers+Redis CPU µs/delivery | generator CPU µs/delivery |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['members']} | {r['messages']} | {r['create_ack_ms']} | {r['create_ms']} | {r['fanout_ms_p50']} | "
          f"{r['fanout_ms_p99']} | {r['fanout_ms_max']} | {r['ack_ms_p50']} | "
          f"{r['delivered_total']} / {r['expected_per_message'] * r['messages']} | "
          f"{r['server_cpu_us_per_msg']} | {r['gen_cpu_us_per_msg']} |")
expected = len(sys.argv[4].split(","))
ok = (sys.argv[3] == "0" and len(rows) == expected
      and all(r["delivered_all"] and not r["misrouted"] for r in rows))
missed = [f"{r['members']} members: delivered {r['delivered']} of {r['expected_per_message']} each"
          for r in rows if not r["delivered_all"]]
for m in missed:
    print(f"group-fanout: some member missed a message ({m})")
if sys.argv[2] == "1":
    print(f"group-fanout smoke: {'passed' if ok else 'FAILED'}")
sys.exit(0 if ok else 1)
PY
fi

if [ "$SMOKE" = 1 ]; then
  # One smoke check, as before: it passes when every scenario above passed.
  if [ "$FAILED" = 0 ]; then
    echo "bench-smoke: 1 passed, 0 failed"
  else
    echo "bench-smoke: 0 passed, 1 failed"
  fi
fi
[ "$FAILED" = 0 ]
