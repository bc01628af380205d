#!/usr/bin/env bash
# The benchmarks. Starts throw-away Redis servers and chat nodes (release build of webchat,
# --auth open; or the Node socket.io + redis-adapter baseline in bench/baseline-node) on free
# loopback ports, drives them with webchat-loadgen, prints one JSON line per measurement and a
# Markdown table, and stops everything it started.
#
#   bash bench/run.sh                           # scenario 1, pairs: 1:1 across two webchat
#                                               # nodes, rate steps
#   bash bench/run.sh --scenario compare        # scenario 1 side by side: webchat with the call
#                                               # log on, webchat with it off and both Node
#                                               # peers (redis-adapter; streams adapter with
#                                               # connection state recovery), each on its own
#                                               # two nodes + Redis;
#                                               # every rate step runs once against each, in
#                                               # alternation (rotating order)
#   bash bench/run.sh --scenario cluster        # scenario 1 on Redis Cluster (three masters)
#                                               # and on one Redis, two webchat nodes each, rate
#                                               # steps in alternation (issue 8)
#   bash bench/run.sh --scenario group-fanout   # scenario 3: one message to a 1,000- and a
#                                               # 10,000-member group, time until all have it
#   bash bench/run.sh --scenario idle           # scenario 2: 20,000 idle sockets on ONE node,
#                                               # server RSS per connection; webchat and the
#                                               # baseline alternately, a fresh node each time
#   bash bench/run.sh --scenario replay         # scenario 4: 10,000 queued messages replayed
#                                               # to one user (webchat only)
#   bash bench/run.sh --scenario storm          # scenario 5: 5,000 users with queued messages
#                                               # reconnect at once (webchat only)
#   bash bench/run.sh --scenario transport-floor  # scenario 3's transport alone, no webchat:
#                                               # 10,000 loopback TCP connections, one
#                                               # 304-byte frame out and an 11-byte answer
#                                               # back per connection and round
#   bash bench/run.sh --scenario all            # compare, idle, replay, storm; then writes
#                                               # bench/results/report.md (machine, commands,
#                                               # tables) with bench/report.py
#   bash bench/run.sh --smoke                   # tiny runs for CI (debug build): pairs,
#                                               # compare (webchat and both Node peers),
#                                               # cluster, group-fanout, idle, replay,
#                                               # storm, transport-floor and
#                                               # bench/soak.sh --smoke; last
#                                               # line `bench-smoke: 1 passed, 0 failed` (or
#                                               # `0 passed, 1 failed`, exit status 1)
#
# Environment, pairs/compare: BENCH_SOCKETS (1000), BENCH_STEPS (5000,10000,12000,14000,16000,20000;
# compare: 2000,4000,6000,8000,10000,12000,14000,16000), BENCH_DURATION (10s; compare 8s),
# BENCH_CALL_LOG (pairs: true), BENCH_ACKS (pairs: per-event, or cumulative: receivers ack with
# `ack {Seq}`, contract §15; the smoke runs both; compare always runs webchat-log-on in both
# modes, as webchat-log-on and webchat-cumulative), BENCH_OUT (bench/results/latest.jsonl;
# compare: bench/results/compare.jsonl).
# group-fanout: BENCH_GROUP_SIZES (1000,10000), BENCH_GROUP_MESSAGES (5),
# BENCH_FANOUT_TIMEOUT (120s), BENCH_GROUP_OUT (bench/results/group-fanout.jsonl).
# idle: BENCH_IDLE_SOCKETS (20000, fewer if the open-files limit is lower), BENCH_IDLE_REPEATS
# (2 per server), BENCH_IDLE_JOIN (true; false: connect only, no join), BENCH_IDLE_OUT.
# replay: BENCH_REPLAY_MESSAGES (10000), BENCH_REPLAY_REPEATS (3), BENCH_REPLAY_OUT.
# storm: BENCH_STORM_USERS (5000), BENCH_STORM_PER_USER (3), BENCH_STORM_REPEATS (2),
# BENCH_STORM_OUT.
# transport-floor: BENCH_FLOOR_CONNECTIONS (10000), BENCH_FLOOR_ROUNDS (12), BENCH_FLOOR_OUT.
# A/B runs: BENCH_WEBCHAT_BIN (the webchat server binary to run instead of this checkout's
# build, e.g. a copy of an older build: interleave runs of both to compare them on a machine
# whose speed drifts).
# All: BENCH_WORKER_THREADS (1, per webchat node), BENCH_CONNECT_BATCH (500: idle sockets per
# batch / storm connects in flight), BENCH_SOURCE_IPS (8: client source addresses 127.0.0.2..).
#
# Scenarios with many sockets raise the open-files limit (`ulimit -n`, up to 65536 or the hard
# limit) before starting anything, so the servers and the generator inherit it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=scripts/lib/redis.sh
. "$ROOT/scripts/lib/redis.sh"

SMOKE=0
SCENARIO=""
ALL_SCENARIOS="pairs compare cluster group-fanout idle replay storm transport-floor"
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --scenario)
      [ $# -ge 2 ] || die "--scenario needs a value ($ALL_SCENARIOS all)"
      SCENARIO="$2"
      shift
      ;;
    --scenario=*) SCENARIO="${1#--scenario=}" ;;
    *) die "unknown argument $1 (use --smoke and/or --scenario ${ALL_SCENARIOS// /|}|all)" ;;
  esac
  shift
done
case "$SCENARIO" in
  "") if [ "$SMOKE" = 1 ]; then SCENARIOS="pairs compare cluster group-fanout idle replay storm transport-floor"; else SCENARIOS=pairs; fi ;;
  all) SCENARIOS="compare idle replay storm" ;;
  pairs | compare | cluster | group-fanout | idle | replay | storm | transport-floor) SCENARIOS="$SCENARIO" ;;
  *) die "unknown scenario $SCENARIO ($ALL_SCENARIOS all)" ;;
esac
wants() { [[ " $SCENARIOS " == *" $1 "* ]]; }

if [ "$SMOKE" = 1 ]; then
  PROFILE=debug
  SOCKETS=40 STEPS=200 DURATION=2s WARMUP=1s
  GROUP_SIZES=20 GROUP_MESSAGES=2 FANOUT_TIMEOUT=30s GROUP_PAUSE=200ms
  IDLE_SOCKETS=50 IDLE_HOLD=500ms IDLE_REPEATS=1
  REPLAY_MESSAGES=300 REPLAY_REPEATS=1
  STORM_USERS=60 STORM_PER_USER=2 STORM_REPEATS=1
  FLOOR_CONNECTIONS=20 FLOOR_ROUNDS=2
  CONNECT_BATCH=25 SOURCE_IPS=2
else
  PROFILE=release
  SOCKETS="${BENCH_SOCKETS:-1000}"
  if wants compare || wants cluster; then
    STEPS="${BENCH_STEPS:-2000,4000,6000,8000,10000,12000,14000,16000}"
    DURATION="${BENCH_DURATION:-8s}"
  else
    STEPS="${BENCH_STEPS:-5000,10000,12000,14000,16000,20000}"
    DURATION="${BENCH_DURATION:-10s}"
  fi
  WARMUP=2s
  GROUP_SIZES="${BENCH_GROUP_SIZES:-1000,10000}"
  GROUP_MESSAGES="${BENCH_GROUP_MESSAGES:-5}"
  FANOUT_TIMEOUT="${BENCH_FANOUT_TIMEOUT:-120s}"
  GROUP_PAUSE=1s
  IDLE_SOCKETS="${BENCH_IDLE_SOCKETS:-20000}"
  IDLE_HOLD=10s
  IDLE_REPEATS="${BENCH_IDLE_REPEATS:-2}"
  REPLAY_MESSAGES="${BENCH_REPLAY_MESSAGES:-10000}"
  REPLAY_REPEATS="${BENCH_REPLAY_REPEATS:-3}"
  STORM_USERS="${BENCH_STORM_USERS:-5000}"
  STORM_PER_USER="${BENCH_STORM_PER_USER:-3}"
  STORM_REPEATS="${BENCH_STORM_REPEATS:-2}"
  FLOOR_CONNECTIONS="${BENCH_FLOOR_CONNECTIONS:-10000}"
  FLOOR_ROUNDS="${BENCH_FLOOR_ROUNDS:-12}"
  CONNECT_BATCH="${BENCH_CONNECT_BATCH:-500}"
  SOURCE_IPS="${BENCH_SOURCE_IPS:-8}"
fi
THREADS="${BENCH_WORKER_THREADS:-1}"
CALL_LOG="${BENCH_CALL_LOG:-true}"
RESULTS="$ROOT/bench/results"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN_DIR="$TARGET_DIR/$PROFILE"
LOADGEN="$BIN_DIR/webchat-loadgen"

if [ "$SMOKE" = 0 ] && { wants group-fanout || wants idle || wants storm || wants transport-floor; }; then
  # One fd per socket in the generator and in the server, plus Redis connections and slack.
  need=0
  for n in ${GROUP_SIZES//,/ }; do [ "$n" -gt "$need" ] && need="$n"; done
  if wants idle; then [ "$IDLE_SOCKETS" -gt "$need" ] && need="$IDLE_SOCKETS"; fi
  if wants storm; then [ "$STORM_USERS" -gt "$need" ] && need="$STORM_USERS"; fi
  if wants transport-floor; then [ "$FLOOR_CONNECTIONS" -gt "$need" ] && need="$FLOOR_CONNECTIONS"; fi
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((need + 200)) ]; then
    warn "open-files limit $(ulimit -n) is too low for $need sockets (hard limit $(ulimit -Hn))"
  fi
  log "open-files limit: $(ulimit -n)"
  # The server and the generator each need one fd per idle socket plus a few dozen of their own.
  if wants idle && [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE_SOCKETS + 100)) ]; then
    IDLE_SOCKETS=$(($(ulimit -n) - 100))
    warn "idle: only $IDLE_SOCKETS sockets fit under the open-files limit $(ulimit -n)"
  fi
fi

ensure_redis_installed
if [ -n "${BENCH_WEBCHAT_BIN:-}" ]; then
  [ -x "$BENCH_WEBCHAT_BIN" ] || die "BENCH_WEBCHAT_BIN=$BENCH_WEBCHAT_BIN is not an executable"
  log "webchat server binary: $BENCH_WEBCHAT_BIN (BENCH_WEBCHAT_BIN)"
fi
if [ "$PROFILE" = release ]; then
  cargo build --release --bin webchat --bin webchat-loadgen -p webchat -p webchat-loadgen
else
  cargo build --bin webchat --bin webchat-loadgen -p webchat -p webchat-loadgen
fi
if wants compare || { [ "$SMOKE" = 0 ] && wants idle; }; then
  # The Node peers (the idle smoke runs webchat only).
  command -v node >/dev/null 2>&1 || die "the Node baseline needs node (and npm) on PATH"
  if [ ! -d "$ROOT/bench/baseline-node/node_modules" ]; then
    (cd "$ROOT/bench/baseline-node" && npm ci --no-audit --no-fund)
  fi
fi

RUN_DIR="$(mktemp -d)"
ALL_PIDS=()     # every server process started (chat nodes first, then Redis servers)
ALL_REDIS=()
cleanup() {
  set +e
  for pid in "${ALL_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${ALL_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  for pid in "${ALL_REDIS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${ALL_REDIS[@]}"; do wait "$pid" 2>/dev/null; done
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT

# stop_pids PID... — stops processes this script started (TERM, then KILL after 5 s) and
# forgets them (so the exit cleanup never signals a reused pid).
stop_pids() {
  local pid p keep
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    keep=()
    for p in "${ALL_PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    ALL_PIDS=("${keep[@]}")
    keep=()
    for p in "${ALL_REDIS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    ALL_REDIS=("${keep[@]}")
  done
  for pid in "$@"; do
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

# start_cluster NAME KIND NODES [CALL_LOG] [REDIS] — a fresh Redis (REDIS=single, the default)
# or a fresh three-master Redis Cluster (REDIS=cluster) and NODES servers of KIND (webchat,
# baseline: Node socket.io + redis-adapter, or baseline-streams: Node socket.io + the Redis
# streams adapter with connection state recovery) on it. Sets C_URLS (comma-separated), C_PIDS (node pids then the Redis pid(s),
# comma-separated, for --server-pids), C_NODE_PIDS and C_REDIS_PID, C_DIR (logs).
start_cluster() {
  local name="$1" kind="$2" nodes="$3" call_log="${4:-$CALL_LOG}" redis="${5:-single}" n line
  C_DIR="$RUN_DIR/$name"
  mkdir -p "$C_DIR"
  if [ "$redis" = cluster ]; then
    start_redis_cluster "$C_DIR"
    REDIS_URL="$REDIS_CLUSTER_URL"
    C_REDIS_PID="$(IFS=,; echo "${REDIS_CLUSTER_PIDS[*]}")"
    ALL_REDIS+=("${REDIS_CLUSTER_PIDS[@]}")
    REDIS_CLUSTER_PIDS=()
  else
    start_redis "$C_DIR"
    C_REDIS_PID="$REDIS_PID"
    ALL_REDIS+=("$REDIS_PID")
  fi
  # Leave the Redis server alone from here on (stop_redis would stop only the last one).
  REDIS_PID=""
  local urls=() pids=()
  for n in $(seq 1 "$nodes"); do
    mkfifo "$C_DIR/node$n.out"
    if [ "$kind" = webchat ]; then
      # --socket-rate 0: the generator's senders (e.g. 10,000 messages from one socket in the
      # replay scenario) go far beyond a person's event rate; the limit is not what is measured.
      # WEBCHAT_MAX_CONNECTIONS_PER_ADDRESS=0: every generated socket comes from 127.0.0.1 (an
      # environment variable, which an older BENCH_WEBCHAT_BIN ignores, unlike a flag).
      RUST_LOG=warn WEBCHAT_MAX_CONNECTIONS_PER_ADDRESS=0 "${BENCH_WEBCHAT_BIN:-$BIN_DIR/webchat}" --listen 127.0.0.1:0 --redis-url "$REDIS_URL" --auth open \
        --worker-threads "$THREADS" --call-log "$call_log" --data-dir "$C_DIR/node$n" --socket-rate 0 \
        >"$C_DIR/node$n.out" 2>"$C_DIR/node$n.err" &
    else
      # baseline: socket.io + redis-adapter; baseline-streams: socket.io + the Redis streams
      # adapter with connection state recovery.
      node "$ROOT/bench/baseline-node/server.js" --port 0 --redis-url "$REDIS_URL" \
        --adapter "$([ "$kind" = baseline-streams ] && echo streams || echo pubsub)" \
        >"$C_DIR/node$n.out" 2>"$C_DIR/node$n.err" &
    fi
    pids+=($!)
    ALL_PIDS+=($!)
    read -r line <"$C_DIR/node$n.out"
    urls+=("http://${line##* }")
  done
  C_NODE_PIDS="${pids[*]}"
  C_URLS="$(IFS=,; echo "${urls[*]}")"
  C_PIDS="$(IFS=,; echo "${pids[*]}"),$C_REDIS_PID"
  log "$name ($kind, call log $call_log): ${urls[*]} (pids ${pids[*]}), redis pid $C_REDIS_PID"
}

# Servers started for a side-by-side scenario, by label: their URLs and pids (--server-pids),
# and how the generator's receivers ack (--acks; per-event unless set).
declare -A URLS_OF PIDS_OF ACKS_OF

# alternate WHAT OUT LABEL... — every rate step of STEPS once against each labelled server set
# (URLS_OF/PIDS_OF), the order rotating from step to step so none always runs first; appends
# the generator's JSON lines to OUT. Fails if any generator run failed.
alternate() {
  local what="$1" out="$2" i=0 k rate sys rc=0
  shift 2
  local systems=("$@")
  for rate in ${STEPS//,/ }; do
    for k in "${!systems[@]}"; do
      sys="${systems[$(((i + k) % ${#systems[@]}))]}"
      log "$what: $sys at $rate msgs/s (load $(load_note))"
      "$LOADGEN" --urls "${URLS_OF[$sys]}" --sockets "$SOCKETS" --rate "$rate" \
        --duration "$DURATION" --warmup "$WARMUP" --server-pids "${PIDS_OF[$sys]}" \
        --acks "${ACKS_OF[$sys]:-per-event}" --run-id "$(date +%s%N)" --label "$sys" \
        | tee -a "$out" || { rc=1; warn "webchat-loadgen failed ($sys, $rate)"; show_server_logs; }
    done
    i=$((i + 1))
  done
  return "$rc"
}

# After a failed generator run: what the servers and Redis said.
show_server_logs() {
  local f
  for f in "$RUN_DIR"/*/node*.err "$RUN_DIR"/*/redis/redis.log; do
    [ -s "$f" ] || continue
    warn "last lines of $f:"
    grep -v ' INFO ' "$f" | tail -n 5 >&2 || true
  done
}

# Machine state, once per measurement (other work may share the cores).
load_note() { cut -d' ' -f1-3 /proc/loadavg; }

PASSED=0
FAILED=0
check() { if "$@"; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); fi; }

# The scenarios that need two webchat nodes share one cluster.
if wants pairs || wants group-fanout || wants replay || wants storm; then
  start_cluster webchat webchat 2
  W_URLS="$C_URLS"
  W_PIDS="$C_PIDS"
fi

# pairs_run ACKS OUT — scenario 1 against the shared webchat cluster, receivers acking ACKS.
pairs_run() {
  local acks="$1" out="$2" rc=0
  "$LOADGEN" --urls "$W_URLS" --sockets "$SOCKETS" \
    --rate-steps "$STEPS" --duration "$DURATION" --warmup "$WARMUP" --acks "$acks" \
    --server-pids "$W_PIDS" --run-id "$(date +%s%N)" --label "webchat call-log=$CALL_LOG acks=$acks" \
    | tee "$out" || { rc=1; warn "webchat-loadgen failed (pairs, $acks acks)"; show_server_logs; }
  check python3 "$ROOT/bench/report.py" pairs "$out" --smoke "$SMOKE" --rc "$rc"
}

if wants pairs; then
  OUT="${BENCH_OUT:-$RESULTS/latest.jsonl}"
  mkdir -p "$(dirname "$OUT")"
  pairs_run "${BENCH_ACKS:-per-event}" "$OUT"
  if [ "$SMOKE" = 1 ]; then
    # Both ack modes stay working end to end.
    pairs_run cumulative "${OUT%.jsonl}-cumulative.jsonl"
  fi
fi

if wants compare; then
  OUT="${BENCH_OUT:-$RESULTS/compare.jsonl}"
  # The smoke checks that every server of the comparison runs and loses nothing; its tiny
  # figures are not kept.
  [ "$SMOKE" = 1 ] && OUT="$RUN_DIR/compare.jsonl"
  mkdir -p "$(dirname "$OUT")"
  : >"$OUT"
  start_cluster webchat-log-on webchat 2 true
  URLS_OF[webchat-log-on]="$C_URLS" PIDS_OF[webchat-log-on]="$C_PIDS"
  # The same nodes, receivers on cumulative acks (contract §15).
  URLS_OF[webchat-cumulative]="$C_URLS" PIDS_OF[webchat-cumulative]="$C_PIDS"
  ACKS_OF[webchat-cumulative]=cumulative
  start_cluster webchat-log-off webchat 2 false
  URLS_OF[webchat-log-off]="$C_URLS" PIDS_OF[webchat-log-off]="$C_PIDS"
  start_cluster baseline baseline 2
  URLS_OF[baseline]="$C_URLS" PIDS_OF[baseline]="$C_PIDS"
  start_cluster baseline-streams baseline-streams 2
  URLS_OF[baseline-streams]="$C_URLS" PIDS_OF[baseline-streams]="$C_PIDS"
  COMPARE_RC=0
  alternate compare "$OUT" webchat-log-on webchat-cumulative webchat-log-off baseline \
    baseline-streams || COMPARE_RC=1
  check python3 "$ROOT/bench/report.py" compare "$OUT" --rc "$COMPARE_RC"
fi

if wants cluster; then
  # Scenario 1 on Redis Cluster next to one Redis: the same two-node webchat, rate steps in
  # alternation (rotating order). On these 2 cores the three masters share the CPU with
  # everything else, so this shows the cost of the cluster path, not its scale-out.
  OUT="${BENCH_CLUSTER_OUT:-$RESULTS/cluster.jsonl}"
  [ "$SMOKE" = 1 ] && OUT="$RUN_DIR/cluster.jsonl"
  mkdir -p "$(dirname "$OUT")"
  : >"$OUT"
  start_cluster webchat-redis webchat 2 "$CALL_LOG" single
  URLS_OF[webchat-one-redis]="$C_URLS" PIDS_OF[webchat-one-redis]="$C_PIDS"
  start_cluster webchat-cluster webchat 2 "$CALL_LOG" cluster
  URLS_OF[webchat-redis-cluster]="$C_URLS" PIDS_OF[webchat-redis-cluster]="$C_PIDS"
  CLUSTER_RC=0
  alternate cluster "$OUT" webchat-redis-cluster webchat-one-redis || CLUSTER_RC=1
  check python3 "$ROOT/bench/report.py" compare "$OUT" --rc "$CLUSTER_RC"
fi

if wants group-fanout; then
  if [ "$SMOKE" = 1 ]; then
    GROUP_OUT="$RUN_DIR/group-fanout.jsonl"
  else
    GROUP_OUT="${BENCH_GROUP_OUT:-$RESULTS/group-fanout.jsonl}"
  fi
  mkdir -p "$(dirname "$GROUP_OUT")"
  : >"$GROUP_OUT"
  GROUP_RC=0
  for members in ${GROUP_SIZES//,/ }; do
    log "group-fanout: $members members, $GROUP_MESSAGES messages"
    "$LOADGEN" --scenario group-fanout --urls "$W_URLS" \
      --members "$members" --messages "$GROUP_MESSAGES" --fanout-timeout "$FANOUT_TIMEOUT" \
      --pause "$GROUP_PAUSE" --server-pids "$W_PIDS" --run-id "$(date +%s%N)" \
      | tee -a "$GROUP_OUT" || {
      GROUP_RC=1
      warn "webchat-loadgen failed ($members members)"
      show_server_logs
    }
  done
  check python3 "$ROOT/bench/report.py" group-fanout "$GROUP_OUT" --smoke "$SMOKE" \
    --rc "$GROUP_RC" --expect "$(echo "${GROUP_SIZES//,/ }" | wc -w)"
fi

if wants replay; then
  REPLAY_OUT="${BENCH_REPLAY_OUT:-$RESULTS/replay.jsonl}"
  [ "$SMOKE" = 1 ] && REPLAY_OUT="$RUN_DIR/replay.jsonl"
  mkdir -p "$(dirname "$REPLAY_OUT")"
  : >"$REPLAY_OUT"
  REPLAY_RC=0
  for r in $(seq 1 "$REPLAY_REPEATS"); do
    log "replay: $REPLAY_MESSAGES messages, run $r (load $(load_note))"
    "$LOADGEN" --scenario replay --urls "$W_URLS" --replay-messages "$REPLAY_MESSAGES" \
      --server-pids "$W_PIDS" --run-id "$(date +%s%N)" --label "webchat call-log=$CALL_LOG" \
      --fanout-timeout 60s --pause 1s \
      | tee -a "$REPLAY_OUT" || { REPLAY_RC=1; warn "webchat-loadgen failed (replay)"; show_server_logs; }
  done
  check python3 "$ROOT/bench/report.py" replay "$REPLAY_OUT" --rc "$REPLAY_RC" --expect "$REPLAY_REPEATS"
fi

if wants storm; then
  STORM_OUT="${BENCH_STORM_OUT:-$RESULTS/storm.jsonl}"
  [ "$SMOKE" = 1 ] && STORM_OUT="$RUN_DIR/storm.jsonl"
  mkdir -p "$(dirname "$STORM_OUT")"
  : >"$STORM_OUT"
  STORM_RC=0
  for r in $(seq 1 "$STORM_REPEATS"); do
    log "storm: $STORM_USERS users x $STORM_PER_USER messages, run $r (load $(load_note))"
    "$LOADGEN" --scenario storm --urls "$W_URLS" --users "$STORM_USERS" \
      --per-user "$STORM_PER_USER" --connect-batch "$CONNECT_BATCH" --source-ips "$SOURCE_IPS" \
      --server-pids "$W_PIDS" --run-id "$(date +%s%N)" --label "webchat call-log=$CALL_LOG" \
      --fanout-timeout 120s --pause 1s \
      | tee -a "$STORM_OUT" || { STORM_RC=1; warn "webchat-loadgen failed (storm)"; show_server_logs; }
  done
  check python3 "$ROOT/bench/report.py" storm "$STORM_OUT" --rc "$STORM_RC" --expect "$STORM_REPEATS"
fi

if wants idle; then
  IDLE_OUT="${BENCH_IDLE_OUT:-$RESULTS/idle.jsonl}"
  [ "$SMOKE" = 1 ] && IDLE_OUT="$RUN_DIR/idle.jsonl"
  mkdir -p "$(dirname "$IDLE_OUT")"
  : >"$IDLE_OUT"
  IDLE_RC=0
  IDLE_FLAGS="" IDLE_LABEL=""
  if [ "${BENCH_IDLE_JOIN:-true}" = false ]; then IDLE_FLAGS=--no-join IDLE_LABEL=" (no join)"; fi
  if [ "$SMOKE" = 1 ]; then IDLE_KINDS=(webchat); else IDLE_KINDS=(webchat baseline); fi
  for r in $(seq 1 "$IDLE_REPEATS"); do
    for kind in "${IDLE_KINDS[@]}"; do
      # A fresh node (and Redis) each time: RSS before = an idle server.
      start_cluster "idle-$kind-$r" "$kind" 1
      sleep 1
      log "idle: $IDLE_SOCKETS sockets to one $kind node, run $r (load $(load_note))"
      "$LOADGEN" --scenario idle --urls "$C_URLS" --sockets "$IDLE_SOCKETS" \
        --connect-batch "$CONNECT_BATCH" --source-ips "$SOURCE_IPS" --hold "$IDLE_HOLD" \
        --server-pids "$C_PIDS" --run-id "$(date +%s%N)" --label "$kind$IDLE_LABEL" $IDLE_FLAGS \
        | tee -a "$IDLE_OUT" || { IDLE_RC=1; warn "webchat-loadgen failed (idle $kind)"; show_server_logs; }
      # shellcheck disable=SC2086 # one pid per word
      stop_pids $C_NODE_PIDS
      stop_pids "$C_REDIS_PID"
    done
  done
  check python3 "$ROOT/bench/report.py" idle "$IDLE_OUT" --rc "$IDLE_RC" \
    --expect $((IDLE_REPEATS * ${#IDLE_KINDS[@]}))
fi

if wants transport-floor; then
  FLOOR_OUT="${BENCH_FLOOR_OUT:-$RESULTS/transport-floor.jsonl}"
  [ "$SMOKE" = 1 ] && FLOOR_OUT="$RUN_DIR/transport-floor.jsonl"
  mkdir -p "$(dirname "$FLOOR_OUT")"
  FLOOR_RC=0
  log "transport-floor: $FLOOR_CONNECTIONS connections, $FLOOR_ROUNDS rounds (load $(load_note))"
  "$LOADGEN" --scenario transport-floor --members "$FLOOR_CONNECTIONS" --messages "$FLOOR_ROUNDS" \
    --pause "$GROUP_PAUSE" | tee "$FLOOR_OUT" || { FLOOR_RC=1; warn "webchat-loadgen failed (transport-floor)"; }
  check python3 "$ROOT/bench/report.py" transport-floor "$FLOOR_OUT" --rc "$FLOOR_RC" --expect 1
fi

if [ "$SMOKE" = 1 ] && [ -z "$SCENARIO" ]; then
  # The soak (bench/soak.sh) for a few seconds: RSS and fd sampling keep working.
  log "soak smoke"
  check bash "$ROOT/bench/soak.sh" --smoke
fi

if [ "$SMOKE" = 1 ]; then
  # One smoke check, as before: it passes when every scenario above passed.
  if [ "$FAILED" = 0 ]; then
    echo "bench-smoke: 1 passed, 0 failed"
  else
    echo "bench-smoke: 0 passed, 1 failed"
  fi
elif [ "$SCENARIO" = all ]; then
  python3 "$ROOT/bench/report.py" markdown "$RESULTS" >"$RESULTS/report.md"
  log "wrote $RESULTS/report.md"
fi
[ "$FAILED" = 0 ]
