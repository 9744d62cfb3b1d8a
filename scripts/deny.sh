#!/usr/bin/env bash
# Checks kfcache's dependencies with cargo-deny against deny.toml: licenses, bans (wildcard
# versions) and sources (crates.io only), then RustSec advisories.
#
# cargo-deny is installed from crates.io into .cache/cargo-deny (ignored by git) the first
# time. The advisory check needs the RustSec database from GitHub: when it cannot be fetched,
# the script says so on stderr and, unless KFCACHE_DENY_ADVISORIES=required, goes on; the
# license, ban and source checks never depend on the network beyond crates.io.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VERSION=0.20.2
PREFIX="$ROOT/.cache/cargo-deny"
DENY="$PREFIX/bin/cargo-deny"

log() { echo "deny.sh: $*" >&2; }

if ! [[ -x "$DENY" ]] || [[ "$("$DENY" --version 2>/dev/null)" != "cargo-deny $VERSION" ]]; then
  log "installing cargo-deny $VERSION into $PREFIX"
  cargo install cargo-deny --version "$VERSION" --locked --root "$PREFIX" --quiet
fi

"$DENY" --log-level error check licenses bans sources
log "licenses, bans and sources: ok"

if "$DENY" --log-level error fetch db 2>/dev/null; then
  "$DENY" --log-level error check advisories
  log "advisories: ok"
elif [[ "${KFCACHE_DENY_ADVISORIES:-}" == required ]]; then
  log "cannot fetch the RustSec advisory database (github.com/rustsec/advisory-db)"
  exit 1
else
  log "NOT CHECKED: advisories (the RustSec advisory database at github.com/rustsec/advisory-db cannot be fetched from this machine; set KFCACHE_DENY_ADVISORIES=required to make this an error)"
fi
