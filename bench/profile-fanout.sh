#!/usr/bin/env bash
# CPU profile of scenario 3 (group fan-out): runs `bench/run.sh --scenario group-fanout` with
# 10,000 members and 12 messages, and once the group is created records `perf` (cpu-clock,
# DWARF call graphs) on both chat nodes, Redis and the load generator for PROFILE_SECS
# (7) seconds: about five fan-outs. Writes OUT/<process>-<pid>.data and OUT/bench.log; read
# them with `perf report -i FILE` (sample counts compare processes: 999 samples ≈ 1 s CPU).
#
#   bash bench/profile-fanout.sh [OUT]      # OUT defaults to bench/results/profile-fanout
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/bench/results/profile-fanout}"
SECS="${PROFILE_SECS:-7}"
command -v perf >/dev/null || { echo "profile-fanout: perf is not installed" >&2; exit 1; }
mkdir -p "$OUT"
BENCH_GROUP_SIZES=10000 BENCH_GROUP_MESSAGES=12 bash "$ROOT/bench/run.sh" --scenario group-fanout \
  > "$OUT/bench.log" 2>&1 &
bench=$!
until grep -q "created group" "$OUT/bench.log" 2>/dev/null; do
  kill -0 "$bench" 2>/dev/null || { echo "profile-fanout: the benchmark ended early, see $OUT/bench.log" >&2; exit 1; }
  sleep 0.2
done
for name in webchat redis-server webchat-loadgen; do
  for pid in $(pgrep -x "$name"); do
    perf record -F 999 --call-graph dwarf,16384 -e cpu-clock -o "$OUT/$name-$pid.data" \
      -p "$pid" -- sleep "$SECS" >/dev/null 2>&1 &
  done
done
wait
grep "fan-out p50" "$OUT/bench.log" || true
for f in "$OUT"/*.data; do
  echo "$(basename "$f"): $(perf script -i "$f" -F time 2>/dev/null | wc -l) samples"
done
