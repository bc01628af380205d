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
