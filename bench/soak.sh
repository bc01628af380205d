#!/usr/bin/env bash
# Soak: two webchat nodes + Redis under steady 1:1 traffic at about half the saturation rate
# of BENCHMARKS.md (~14,000 delivered msgs/s → 7,000) for 10 minutes, with each node's RSS
# and open file descriptors sampled every 10 s. Prints first (after the warm-up) / last / max
# per node and the generator's JSON report (delivered, lost, latency); one JSON summary line
# is appended to bench/results/soak.jsonl. A benchmark, not a test.
#
#   bash bench/soak.sh            # release build, 10 minutes
#   bash bench/soak.sh --smoke    # debug build, a few seconds, tiny rate (CI)
#
# Environment: SOAK_RATE (7000 msgs/s), SOAK_DURATION (600s), SOAK_SOCKETS (1000),
# SOAK_SAMPLE_SECS (10), SOAK_WORKER_THREADS (1 per node), SOAK_CALL_LOG (true),
# SOAK_OUT (bench/results/soak.jsonl).
#
# Redis memory: INFO used_memory before the load and after it, once the call log has
# drained (backlog 0 on both nodes), divided by the call-log records written: Redis bytes per
# message while Redis is the call-log table (SOAK_CALL_LOG=false: the same without the log).
#
# Pass: the generator lost nothing and each node's fd count at the end is at most its count
# after the warm-up + 5 % (+ 10); RSS is reported, not judged (allocators keep memory).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=scripts/lib/redis.sh
. "$ROOT/scripts/lib/redis.sh"

SMOKE=0
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown argument $arg (try --help)" ;;
  esac
done

if [ "$SMOKE" = 1 ]; then
  PROFILE=debug RATE=200 DURATION_S=4 SOCKETS=40 SAMPLE_S=1 WARMUP_S=1
else
  PROFILE=release
  RATE="${SOAK_RATE:-7000}"
  DURATION_S="${SOAK_DURATION:-600s}"
  DURATION_S="${DURATION_S%s}"
  SOCKETS="${SOAK_SOCKETS:-1000}"
  SAMPLE_S="${SOAK_SAMPLE_SECS:-10}"
  WARMUP_S=2
fi
THREADS="${SOAK_WORKER_THREADS:-1}"
CALL_LOG="${SOAK_CALL_LOG:-true}"
OUT="${SOAK_OUT:-$ROOT/bench/results/soak.jsonl}"
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
LOADGEN_PID=""
cleanup() {
  set +e
  [ -n "$LOADGEN_PID" ] && kill -TERM "$LOADGEN_PID" 2>/dev/null
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
  # Every generated socket comes from 127.0.0.1: no per-address connection cap.
  RUST_LOG=warn WEBCHAT_MAX_CONNECTIONS_PER_ADDRESS=0 "$BIN_DIR/webchat" --listen 127.0.0.1:0 --redis-url "$REDIS_URL" --auth open \
    --worker-threads "$THREADS" --call-log "$CALL_LOG" --data-dir "$RUN_DIR/node$n" \
    --socket-rate 0 >"$RUN_DIR/node$n.out" 2>"$RUN_DIR/node$n.err" &
  NODE_PIDS+=($!)
  read -r line <"$RUN_DIR/node$n.out"
  URLS+=("http://${line##* }")
done
log "soak: nodes ${URLS[*]} (pids ${NODE_PIDS[*]}), redis pid $REDIS_PID; $RATE msgs/s," \
  "$SOCKETS sockets, ${DURATION_S}s, sample every ${SAMPLE_S}s (load $(cut -d' ' -f1-3 /proc/loadavg))"

used_memory() { redis-cli -u "$REDIS_URL" info memory | awk -F: '$1 == "used_memory" { print $2 }' | tr -d '\r'; }
metric_sum() {
  local url total=0 v
  for url in "${URLS[@]}"; do
    v="$(curl -s "$url/metrics" | awk -v n="$1" '$1 == n { print $2 }' || true)"
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
MEM_BEFORE="$(used_memory)"

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }

SAMPLES="$RUN_DIR/samples.tsv" # elapsed_s node pid rss_kb fds
REPORT="$RUN_DIR/loadgen.jsonl"
"$BIN_DIR/webchat-loadgen" --urls "$(IFS=,; echo "${URLS[*]}")" --sockets "$SOCKETS" \
  --rate "$RATE" --duration "${DURATION_S}s" --warmup "${WARMUP_S}s" \
  --server-pids "$(IFS=,; echo "${NODE_PIDS[*]}"),$REDIS_PID" --run-id "$(date +%s%N)" \
  --label "soak call-log=$CALL_LOG" >"$REPORT" 2>"$RUN_DIR/loadgen.err" &
LOADGEN_PID=$!
T0=$SECONDS
while kill -0 "$LOADGEN_PID" 2>/dev/null; do
  t=$((SECONDS - T0))
  i=0
  for pid in "${NODE_PIDS[@]}"; do
    i=$((i + 1))
    printf '%s\tnode%s\t%s\t%s\t%s\n' "$t" "$i" "$pid" "$(rss_kb "$pid")" "$(fds "$pid")" >>"$SAMPLES"
  done
  printf '%s\tredis\t%s\t%s\t%s\n' "$t" "$REDIS_PID" "$(rss_kb "$REDIS_PID")" "$(fds "$REDIS_PID")" >>"$SAMPLES"
  tail -n 3 "$SAMPLES" | tr '\n' ' ' | sed 's/^/sample: /' >&2
  echo >&2
  sleep "$SAMPLE_S" & wait $! || true
done
RC=0
wait "$LOADGEN_PID" || RC=$?
LOADGEN_PID=""
[ "$RC" = 0 ] || { warn "webchat-loadgen failed (exit $RC)"; tail -n 20 "$RUN_DIR/loadgen.err" >&2; }
# The call log drains behind the load: wait (up to 2 minutes) for an empty backlog.
for _ in $(seq 1 120); do
  [ "$(metric_sum webchat_calllog_backlog)" = 0 ] && break
  sleep 1
done
MEM_AFTER="$(used_memory)"
LOGGED="$(metric_sum webchat_calllog_written_total)"
log "soak: Redis used_memory $MEM_BEFORE → $MEM_AFTER bytes, $LOGGED call-log records written" \
  "($(awk -v a="$MEM_BEFORE" -v b="$MEM_AFTER" -v n="$LOGGED" 'BEGIN { if (n > 0) printf "%.0f", (b - a) / n; else print "n/a" }') bytes per record)"
for n in 1 2; do
  if grep -q -E 'ERROR|panicked' "$RUN_DIR/node$n.err" 2>/dev/null; then
    warn "node$n said:"
    grep -E 'ERROR|panicked' "$RUN_DIR/node$n.err" | tail -n 5 >&2
  fi
done

mkdir -p "$(dirname "$OUT")"
python3 - "$SAMPLES" "$REPORT" "$RC" "$RATE" "$DURATION_S" "$SOCKETS" "$WARMUP_S" "$OUT" "$SMOKE" \
  "$MEM_BEFORE" "$MEM_AFTER" "$LOGGED" <<'PY'
import json, sys, time
samples, report, rc, rate, duration, sockets, warmup, out, smoke, mem0, mem1, logged = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(samples) if l.strip()]
# "first" is the first sample once the sockets are open and traffic runs (after warm-up).
settle = float(warmup) + (2 if smoke == "1" else 20)
by = {}
for t, name, pid, rss, fds in rows:
    if rss and fds:
        by.setdefault(name, []).append((int(t), int(rss), int(fds)))
reports = [json.loads(l) for l in open(report) if l.strip().startswith("{")]
gen = reports[-1] if reports else {}
summary = {"scenario": "soak", "time": int(time.time()), "offered_rate": float(rate),
           "duration_s": int(duration), "sockets": int(sockets), "loadgen_rc": int(rc),
           "delivered_per_sec": gen.get("delivered_per_sec"),
           "lost": gen.get("lost"), "samples": len(rows), "processes": {},
           "redis_used_memory_before": int(mem0), "redis_used_memory_after": int(mem1),
           "calllog_written": int(logged)}
ok = int(rc) == 0 and gen.get("lost", 1) == 0
print("\n| process | samples | RSS MiB first → last (max) | open fds first → last (max) |")
print("|---|---|---|---|")
for name, s in sorted(by.items()):
    steady = [x for x in s if x[0] >= settle] or s
    first, last = steady[0], steady[-1]
    p = {"first_t": first[0], "last_t": last[0],
         "rss_kb_first": first[1], "rss_kb_last": last[1], "rss_kb_max": max(x[1] for x in steady),
         "fds_first": first[2], "fds_last": last[2], "fds_max": max(x[2] for x in steady)}
    summary["processes"][name] = p
    print(f"| {name} | {len(steady)} | {p['rss_kb_first']/1024:.1f} → {p['rss_kb_last']/1024:.1f} "
          f"({p['rss_kb_max']/1024:.1f}) | {p['fds_first']} → {p['fds_last']} ({p['fds_max']}) |")
    if name.startswith("node") and p["fds_last"] > p["fds_first"] * 1.05 + 10:
        ok = False
        print(f"{name}: fd count grew", file=sys.stderr)
summary["pass"] = ok
print(f"\ngenerator: {json.dumps(gen)}")
if smoke != "1":
    with open(out, "a") as f:
        f.write(json.dumps(summary) + "\n")
print(f"soak: {'1 passed, 0 failed' if ok else '0 passed, 1 failed'}")
sys.exit(0 if ok else 1)
PY
