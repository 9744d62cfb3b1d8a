#!/usr/bin/env bash
# The end-to-end benchmark in one command: starts the test services (a 3-node Ignite cluster
# with data regions large enough for the default pipeline, and the S3 server), builds kfcache
# in release mode, runs `kfcache bench e2e` against them, and stops the services again.
#
#   scripts/bench-e2e.sh [ARGS...]            ARGS go to `kfcache bench e2e` (default --out bench-e2e)
#   scripts/bench-e2e.sh --cluster [ARGS...]  the same pipeline as real Workflows on the control
#                                             plane of scripts/k8s.sh (also started and stopped
#                                             here), run by kfcache-cluster-bench
#                                             (default --out bench-e2e-cluster)
#
# The report, results and plots land in the --out directory.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SERVICES="$ROOT/scripts/services.sh"

# 1 GiB per node: a run of the default pipeline stages up to 1.3 GB, with a backup copy.
export KFCACHE_IGNITE_3_REGION_MB="${KFCACHE_IGNITE_3_REGION_MB:-1024}"
# Values pass through the heap on their way to the region; a small heap pauses for GC.
export KFCACHE_IGNITE_3_HEAP="${KFCACHE_IGNITE_3_HEAP:-2g}"
"$SERVICES" up --fresh
trap '"$SERVICES" down' EXIT
eval "$("$SERVICES" env)"

if [[ "${1:-}" == "--cluster" ]]; then
  shift
  K8S="$ROOT/scripts/k8s.sh"
  "$K8S" up
  trap '"$K8S" down; "$SERVICES" down' EXIT
  eval "$("$K8S" env)"
  cargo build --release --locked -p kfcache-cli -p kfcache-k8s-e2e
  ./target/release/kfcache-cluster-bench "$@"
  exit
fi

cargo build --release --locked -p kfcache-cli
./target/release/kfcache bench e2e \
  --ignite "$KFCACHE_TEST_IGNITE_3" --s3-endpoint "$KFCACHE_TEST_S3_ENDPOINT" "$@"
