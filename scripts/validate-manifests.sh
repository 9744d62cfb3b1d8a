#!/usr/bin/env bash
# Validates the Kubernetes manifests in deploy/: renders the kustomization and checks every
# object against the Kubernetes JSON schemas (strict: unknown fields are errors), plus the
# references between objects the schemas cannot see (scripts/k8s/validate.py says which).
#
#   scripts/validate-manifests.sh [--print] [KUSTOMIZATION_DIR]   (default: deploy)
#
# The schemas come from the `kubernetes-validate` package on PyPI, installed once
# (scripts/k8s/requirements.txt) into .cache/venv-k8s. The Kubernetes version is pinned here;
# override it with KFCACHE_K8S_VERSION. Needs python3 with venv and pip.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.cache/venv-k8s"
REQUIREMENTS="$ROOT/scripts/k8s/requirements.txt"
K8S_VERSION="${KFCACHE_K8S_VERSION:-1.29.0}"

log() { echo "validate-manifests.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

setup() {
  command -v python3 >/dev/null 2>&1 || die "python3 is not installed (needed for the Kubernetes schemas)"
  local stamp="$VENV/.requirements.sha256" want
  want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
  # One installer at a time (tests run this script in parallel on a fresh clone).
  mkdir -p "$(dirname "$VENV")"
  exec 9>"$VENV.lock"
  flock 9
  if [[ ! -x "$VENV/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    log "installing kubernetes-validate into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (install the python3-venv package)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS" >&2 \
      || die "pip install -r $REQUIREMENTS failed"
    echo "$want" >"$stamp"
  fi
  flock -u 9
}

print=()
if [[ "${1:-}" == "--print" ]]; then
  print=(--print)
  shift
fi
dir="${1:-$ROOT/deploy}"
[[ -f "$dir/kustomization.yaml" ]] || die "no kustomization.yaml in $dir"

setup
exec "$VENV/bin/python" "$ROOT/scripts/k8s/validate.py" "$dir/kustomization.yaml" \
  --kubernetes-version "$K8S_VERSION" "${print[@]}"
