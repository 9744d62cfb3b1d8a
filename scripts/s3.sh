#!/usr/bin/env bash
# Local S3 server (moto) for kfcache's tests.
#
#   scripts/s3.sh start      start moto on a free 127.0.0.1 port and create the test bucket
#   scripts/s3.sh stop       stop it (by pid)
#   scripts/s3.sh status
#   scripts/s3.sh endpoint   print http://127.0.0.1:PORT
#
# moto is installed once from PyPI (scripts/s3/requirements.txt) into .cache/venv-moto.
# State (pid, port, log) lives in .cache/s3. The bucket is $KFCACHE_TEST_S3_BUCKET
# (default kfcache-test); credentials are moto's fixed test ones.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.cache/venv-moto"
STATE="$ROOT/.cache/s3"
REQUIREMENTS="$ROOT/scripts/s3/requirements.txt"
BUCKET="${KFCACHE_TEST_S3_BUCKET:-kfcache-test}"

log() { echo "s3.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

setup() {
  local stamp="$VENV/.requirements.sha256" want
  want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
  if [[ ! -x "$VENV/bin/moto_server" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    log "installing moto into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQUIREMENTS" >&2 \
      || die "pip install moto failed"
    echo "$want" >"$stamp"
  fi
}

is_our_server() {
  local pid="$1"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "moto_server" || return 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

cmd_stop() {
  local pid
  pid="$(cat "$STATE/moto.pid" 2>/dev/null || true)"
  if is_our_server "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do is_our_server "$pid" || break; sleep 0.1; done
    is_our_server "$pid" && kill -KILL "$pid" 2>/dev/null || true
    log "stopped moto (pid $pid)"
  fi
  rm -f "$STATE/moto.pid" "$STATE/endpoint"
}

cmd_start() {
  setup
  cmd_stop
  mkdir -p "$STATE"
  local port
  port="$(free_port)"
  nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" </dev/null >"$STATE/moto.log" 2>&1 &
  echo $! >"$STATE/moto.pid"
  local endpoint="http://127.0.0.1:$port" deadline=$((SECONDS + 60))
  # Ready when the bucket can be created (moto answers S3 requests).
  until AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 \
      "$VENV/bin/python" - "$endpoint" "$BUCKET" >/dev/null 2>&1 <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
s3.create_bucket(Bucket=sys.argv[2])
s3.head_bucket(Bucket=sys.argv[2])
PY
  do
    if ! is_our_server "$(cat "$STATE/moto.pid")"; then
      tail -n 20 "$STATE/moto.log" >&2
      die "moto exited during start"
    fi
    ((SECONDS < deadline)) || { cmd_stop; die "moto not ready after 60s"; }
    sleep 0.2
  done
  echo "$endpoint" >"$STATE/endpoint"
  log "moto ready at $endpoint, bucket $BUCKET"
}

cmd_status() {
  local pid
  pid="$(cat "$STATE/moto.pid" 2>/dev/null || true)"
  if is_our_server "$pid"; then
    echo "moto running pid=$pid endpoint=$(cat "$STATE/endpoint" 2>/dev/null)"
  else
    echo "moto stopped"
    return 1
  fi
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  endpoint) cat "$STATE/endpoint" 2>/dev/null || die "moto is not running (scripts/s3.sh start)" ;;
  *) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
