#!/usr/bin/env bash
# Runs kfcache's whole test suite against real services: starts Ignite (1-node and 3-node
# clusters) and moto with scripts/services.sh, then the Kubernetes control plane with Argo
# (scripts/k8s.sh; its first start on a machine builds it from the Go module proxy), runs
# `cargo test --workspace` with their addresses in the environment, and always stops the
# services again. Exits with cargo's status.
# Arguments replace `--workspace --no-fail-fast` (e.g. `scripts/test.sh -p kfcache-ignite`).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

trap '"$ROOT/scripts/k8s.sh" down; "$ROOT/scripts/services.sh" down' EXIT

"$ROOT/scripts/services.sh" up || exit 1
eval "$("$ROOT/scripts/services.sh" env)" || exit 1
# After services.sh: the control plane's artifact repository is the moto just started.
"$ROOT/scripts/k8s.sh" up || exit 1
eval "$("$ROOT/scripts/k8s.sh" env)" || exit 1

(($#)) || set -- --workspace --no-fail-fast
cargo test "$@"
