# shellcheck shell=bash
# Start/stop a throw-away redis-server on a free loopback port.
# Requires common.sh. Sets REDIS_PORT, REDIS_PID, REDIS_DIR, REDIS_URL.

REDIS_PID=""
REDIS_PORT=""
REDIS_DIR=""
REDIS_URL=""

ensure_redis_installed() {
  if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    return
  fi
  # redis-server pulls in redis-tools (redis-cli).
  apt_install redis-server
  command -v redis-server >/dev/null 2>&1 || die "redis-server still not on PATH after installing it"
}

# start_redis WORKDIR — runs redis-server in the background (no persistence),
# waits until it answers PING.
start_redis() {
  local workdir="$1"
  REDIS_DIR="$workdir/redis"
  mkdir -p "$REDIS_DIR"
  local attempt
  for attempt in 1 2 3; do
    REDIS_PORT="$(free_port)"
    redis-server --save "" --appendonly no --port "$REDIS_PORT" --bind 127.0.0.1 \
      --daemonize no --dir "$REDIS_DIR" --logfile "$REDIS_DIR/redis.log" &
    REDIS_PID=$!
    for _ in $(seq 1 100); do
      if [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null || true)" = "PONG" ]; then
        REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
        log "redis-server (pid $REDIS_PID) ready at $REDIS_URL"
        return 0
      fi
      if ! kill -0 "$REDIS_PID" 2>/dev/null; then
        break # died (e.g. the port was taken in the meantime): try another port
      fi
      sleep 0.1
    done
    warn "redis-server on port $REDIS_PORT did not come up (attempt $attempt); log tail:"
    tail -n 20 "$REDIS_DIR/redis.log" >&2 2>/dev/null || true
    stop_redis
  done
  die "could not start redis-server"
}

stop_redis() {
  if [ -n "$REDIS_PID" ]; then
    if kill -0 "$REDIS_PID" 2>/dev/null; then
      kill -TERM "$REDIS_PID" 2>/dev/null || true
      for _ in $(seq 1 50); do
        kill -0 "$REDIS_PID" 2>/dev/null || break
        sleep 0.1
      done
      kill -KILL "$REDIS_PID" 2>/dev/null || true
    fi
    wait "$REDIS_PID" 2>/dev/null || true
    log "redis-server (pid $REDIS_PID) stopped"
  fi
  REDIS_PID=""
  REDIS_URL=""
}

# ---------------------------------------------------------------------------
# A throw-away Redis Cluster: three masters (no replicas) on free loopback ports.
# Sets REDIS_CLUSTER_URL (redis-cluster://127.0.0.1:P1?node=…&node=…) and REDIS_CLUSTER_PIDS.

REDIS_CLUSTER_PIDS=()
REDIS_CLUSTER_URL=""

# start_redis_cluster WORKDIR — starts the three masters, assigns the 16384 slots with
# `redis-cli --cluster create`, and waits until every master reports cluster_state:ok.
start_redis_cluster() {
  local workdir="$1/redis-cluster"
  local ports=() port bus_port dir i
  mkdir -p "$workdir"
  for i in 1 2 3; do
    port="$(free_port)"
    bus_port="$(free_port)"
    dir="$workdir/node$i"
    rm -rf "$dir"
    mkdir -p "$dir"
    # The cluster bus port is set explicitly: the default (port + 10000) may be taken or
    # out of range for an ephemeral port.
    redis-server --port "$port" --cluster-port "$bus_port" --bind 127.0.0.1 \
      --cluster-enabled yes --cluster-config-file "$dir/nodes.conf" \
      --cluster-node-timeout 5000 --save "" --appendonly no --daemonize no \
      --dir "$dir" --logfile "$dir/redis.log" &
    REDIS_CLUSTER_PIDS+=("$!")
    ports+=("$port")
  done
  for port in "${ports[@]}"; do
    for _ in $(seq 1 100); do
      [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null || true)" = "PONG" ] && break
      sleep 0.1
    done
  done
  local addresses=()
  for port in "${ports[@]}"; do addresses+=("127.0.0.1:$port"); done
  redis-cli --cluster create "${addresses[@]}" --cluster-replicas 0 --cluster-yes \
    >"$workdir/create.log" 2>&1 || {
    tail -n 20 "$workdir/create.log" >&2
    die "redis-cli --cluster create failed"
  }
  local ready=0
  for _ in $(seq 1 200); do
    ready=1
    for port in "${ports[@]}"; do
      redis-cli -h 127.0.0.1 -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || ready=0
    done
    [ "$ready" = 1 ] && break
    sleep 0.1
  done
  [ "$ready" = 1 ] || die "Redis Cluster on ports ${ports[*]} did not reach cluster_state:ok"
  REDIS_CLUSTER_URL="redis-cluster://127.0.0.1:${ports[0]}?node=127.0.0.1:${ports[1]}&node=127.0.0.1:${ports[2]}"
  log "Redis Cluster (3 masters, pids ${REDIS_CLUSTER_PIDS[*]}) ready at $REDIS_CLUSTER_URL"
}

stop_redis_cluster() {
  local pid
  for pid in "${REDIS_CLUSTER_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${REDIS_CLUSTER_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "${#REDIS_CLUSTER_PIDS[@]}" -gt 0 ]; then log "Redis Cluster stopped"; fi
  REDIS_CLUSTER_PIDS=()
  REDIS_CLUSTER_URL=""
}
