#!/usr/bin/env bash
# Test services for kfcache: a 1-node Ignite cluster, a 3-node Ignite cluster, a 1-node Ignite
# cluster with TLS and authentication, and moto (S3).
#
#   scripts/services.sh up [--fresh]   start everything (healthy services from an earlier `up`
#                                      are reused unless --fresh; leftovers are stopped first)
#   scripts/services.sh down           stop everything
#   scripts/services.sh env            print `export KFCACHE_TEST_*=...` lines; use as
#                                      eval "$(scripts/services.sh env)"
#   scripts/services.sh status
#
# Clusters: kfcache-1 (client port 10800, discovery 27500..27509, 1 GiB heap and region for benchmarks)
# kfcache-3 (client ports 10810..10812, discovery 27600..27609) and kfcache-secure (client port
# 10820 with TLS and user ignite/ignite, discovery 27700..27709). Override the region sizes with
# KFCACHE_IGNITE_1_REGION_MB / KFCACHE_IGNITE_3_REGION_MB, and the 3-node cluster's heap with
# KFCACHE_IGNITE_3_HEAP (512m).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IGNITE="$ROOT/scripts/ignite.sh"
S3="$ROOT/scripts/s3.sh"
BUCKET="${KFCACHE_TEST_S3_BUCKET:-kfcache-test}"
CLUSTER_1=kfcache-1
CLUSTER_3=kfcache-3
CLUSTER_SECURE=kfcache-secure

log() { echo "services.sh: $*" >&2; }

up() {
  local fresh=0
  [[ "${1:-}" == "--fresh" ]] && fresh=1
  local started=$SECONDS
  "$IGNITE" setup
  local pids=() names=()
  if ((fresh)) || ! "$IGNITE" healthy "$CLUSTER_1"; then
    # A 1 GiB heap: this node serves the 32 MiB values and the benchmark's 4 MiB ones.
    "$IGNITE" start 1 --name "$CLUSTER_1" --base-port 10800 --heap 1g \
      --region-mb "${KFCACHE_IGNITE_1_REGION_MB:-1024}" &
    pids+=($!); names+=("$CLUSTER_1")
  else
    log "reusing healthy $CLUSTER_1"
  fi
  if ((fresh)) || ! "$IGNITE" healthy "$CLUSTER_3"; then
    "$IGNITE" start 3 --name "$CLUSTER_3" --base-port 10810 \
      --region-mb "${KFCACHE_IGNITE_3_REGION_MB:-256}" --heap "${KFCACHE_IGNITE_3_HEAP:-512m}" &
    pids+=($!); names+=("$CLUSTER_3")
  else
    log "reusing healthy $CLUSTER_3"
  fi
  if ((fresh)) || ! "$IGNITE" healthy "$CLUSTER_SECURE"; then
    "$IGNITE" start 1 --name "$CLUSTER_SECURE" --base-port 10820 --region-mb 128 --secure &
    pids+=($!); names+=("$CLUSTER_SECURE")
  else
    log "reusing healthy $CLUSTER_SECURE"
  fi
  if ((fresh)) || ! "$S3" status >/dev/null 2>&1; then
    "$S3" start &
    pids+=($!); names+=(moto)
  else
    log "reusing running moto"
  fi
  local i failed=0
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      log "failed to start ${names[$i]}"
      failed=1
    fi
  done
  if ((failed)); then
    down
    exit 1
  fi
  log "all services up in $((SECONDS - started))s"
}

down() {
  "$IGNITE" stop "$CLUSTER_1" || true
  "$IGNITE" stop "$CLUSTER_3" || true
  "$IGNITE" stop "$CLUSTER_SECURE" || true
  "$S3" stop || true
}

env_lines() {
  local endpoint
  endpoint="$("$S3" endpoint)" || exit 1
  cat <<EOT
export KFCACHE_TEST_IGNITE_1=$("$IGNITE" addrs "$CLUSTER_1")
export KFCACHE_TEST_IGNITE_3=$("$IGNITE" addrs "$CLUSTER_3")
export KFCACHE_TEST_IGNITE_3_CLUSTER=$CLUSTER_3
export KFCACHE_TEST_IGNITE_SECURE=$("$IGNITE" addrs "$CLUSTER_SECURE")
export KFCACHE_TEST_IGNITE_SECURE_CA=$ROOT/.cache/ignite/tls/ca.pem
export KFCACHE_TEST_IGNITE_SECURE_USER=ignite
export KFCACHE_TEST_IGNITE_SECURE_PASSWORD=ignite
export KFCACHE_TEST_S3_ENDPOINT=$endpoint
export KFCACHE_TEST_S3_BUCKET=$BUCKET
export KFCACHE_TEST_S3_LOG=$ROOT/.cache/s3/moto.log
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_DEFAULT_REGION=us-east-1
export AWS_REGION=us-east-1
EOT
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  env) env_lines ;;
  status) "$IGNITE" status; "$S3" status ;;
  *) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
