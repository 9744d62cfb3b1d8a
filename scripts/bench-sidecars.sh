#!/usr/bin/env bash
# Many pods start at once and read the same staged dataset: N `kfcache sidecar init`
# processes against an Ignite cluster. Reports the aggregate throughput (MB/s of input bytes
# materialised by all pods over the wall time from the first start to the last exit) and the
# p50/p99/max time to ready (start to exit of one init), and checks that every pod exited 0,
# every input was a hit and every file equals the origin's bytes.
#
#   scripts/bench-sidecars.sh [--ignite ADDRS] [--processes 64] [--files 8] [--size 4MiB]
#                             [--chunk-size 4MiB] [--cache-timeout 10s] [--kfcache PATH]
#                             [--keep]
#
# The dataset is generated as local files (FILES files of SIZE each, read by every pod) and
# staged with `kfcache cache put file://…` into a namespace of its own, cleared at the end.
# Each pod gets one of the comma-separated addresses (round robin), as pods reach the cluster
# through one Service address in a deployment. --kfcache picks the binary (default
# target/release/kfcache if built, else target/debug/kfcache; say which in reported figures).
# --cache-timeout is passed to every init (default: init's own, 10s): an overloaded cluster or
# machine that does not answer a request in time sends the rest of that pod's inputs to the
# origin, counted as misses. The last line is machine-readable:
#   bench-sidecars: processes=N bytes=B wall_s=W mbps=M p50_s=A p99_s=B max_s=C hits=H misses=X
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { echo "bench-sidecars.sh: $*" >&2; exit 1; }

ignite="${KFCACHE_IGNITE:-127.0.0.1:10800}" processes=64 files=8 size=4MiB chunk=4MiB keep=0
kfcache="" timeout=()
while (($#)); do
  case "$1" in
    --ignite) ignite="$2"; shift 2 ;;
    --processes) processes="$2"; shift 2 ;;
    --files) files="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    --chunk-size) chunk="$2"; shift 2 ;;
    --kfcache) kfcache="$2"; shift 2 ;;
    --cache-timeout) timeout=(--cache-timeout "$2"); shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ -z "$kfcache" ]]; then
  if [[ -x "$target_dir/release/kfcache" ]]; then kfcache="$target_dir/release/kfcache"
  else kfcache="$target_dir/debug/kfcache"; fi
fi
[[ -x "$kfcache" ]] || die "no kfcache binary at $kfcache (cargo build -p kfcache-cli)"
[[ "$processes" =~ ^[1-9][0-9]*$ && "$files" =~ ^[1-9][0-9]*$ ]] || die "bad --processes/--files"
bytes_per_file="$(numfmt --from=iec-i --suffix=B "$size" 2>/dev/null || numfmt --from=iec "${size%B}")" \
  || die "bad --size $size (e.g. 4MiB)"
bytes_per_file="${bytes_per_file%B}"

work="$(mktemp -d "${TMPDIR:-/tmp}/bench-sidecars.XXXXXX")"
namespace="bench-sidecars-$$-$(date +%s)"
export XDG_CONFIG_HOME="$work" KFCACHE_DB="$work/kfcache.db"
unset KFCACHE_CONFIG KFCACHE_KEY_PREFIX KFCACHE_NAMESPACE KFCACHE_K8S_NAMESPACE KFCACHE_TENANT KFCACHE_TASK RUST_LOG
common=(--ignite "$ignite" --key-prefix "$namespace")
cleanup() {
  "$kfcache" cache clear "${common[@]}" >/dev/null 2>&1 || true
  ((keep)) || rm -rf "$work"
}
trap cleanup EXIT

echo "bench-sidecars: $processes pods × $files files of $size from $ignite ($kfcache)" >&2
mkdir -p "$work/origin"
inputs=()
for ((f = 0; f < files; f++)); do
  head -c "$bytes_per_file" /dev/urandom >"$work/origin/input-$f.bin"
  uri="file://$work/origin/input-$f.bin"
  "$kfcache" cache put "$uri" "${common[@]}" --chunk-size "$chunk" >/dev/null
  inputs+=("{\"name\":\"input-$f\",\"source\":\"$uri\",\"path\":\"/data/input-$f.bin\"}")
done
spec="{\"pipeline\":\"bench\",\"template\":\"train\",\"inputs\":[$(IFS=,; echo "${inputs[*]}")]}"
IFS=, read -r -a addresses <<<"$ignite"

# Every pod waits for the same start signal (a file appearing), then runs init.
pod() {
  local i="$1" address="${addresses[$(($1 % ${#addresses[@]}))]}"
  while [[ ! -e "$work/go" ]]; do sleep 0.01; done
  local start end status=0
  start="$(date +%s%N)"
  "$kfcache" sidecar init --run bench --task train --spec "$spec" --target "$work/pod-$i" \
    -f json --ignite "$address" --key-prefix "$namespace" "${timeout[@]}" >"$work/report-$i.json" \
    2>"$work/stderr-$i.txt" || status=$?
  end="$(date +%s%N)"
  echo "$i $start $end $status" >"$work/time-$i"
}
for ((i = 0; i < processes; i++)); do pod "$i" & done
sleep 1
touch "$work/go"
wait

failed=0 hits=0 misses=0
for ((i = 0; i < processes; i++)); do
  read -r _ _ _ status <"$work/time-$i"
  if ((status != 0)); then
    failed=$((failed + 1)); echo "pod $i exited $status: $(tail -n 3 "$work/stderr-$i.txt")" >&2
    continue
  fi
  hits=$((hits + $(grep -c '"outcome": "hit"' "$work/report-$i.json" || true)))
  misses=$((misses + $(grep -c '"outcome": "miss"' "$work/report-$i.json" || true)))
  for ((f = 0; f < files; f++)); do
    cmp -s "$work/origin/input-$f.bin" "$work/pod-$i/data/input-$f.bin" \
      || { failed=$((failed + 1)); echo "pod $i: input-$f differs from the origin" >&2; }
  done
done

# Time to ready of each pod, sorted, then the figures (nearest-rank percentiles).
awk '{ print $2, $3 }' "$work"/time-* | sort -n -k1,1 | awk '{ print ($2 - $1) / 1e9, $1, $2 }' \
  | sort -g | awk -v bytes=$((processes * files * bytes_per_file)) -v processes="$processes" \
    -v hits="$hits" -v misses="$misses" '
  { ready[NR] = $1; if (NR == 1 || $2 < first) first = $2; if (NR == 1 || $3 > last) last = $3 }
  function rank(p,  r) { r = int(p * NR); if (r < p * NR) r++; if (r < 1) r = 1; return ready[r] }
  END {
    wall = (last - first) / 1e9
    printf "%d pods read %.1f MB in %.2fs: %.1f MB/s; time to ready p50 %.2fs, p99 %.2fs, max %.2fs; %d hits, %d misses\n", \
      processes, bytes / 1e6, wall, bytes / 1e6 / wall, rank(0.5), rank(0.99), ready[NR], hits, misses
    printf "bench-sidecars: processes=%d bytes=%d wall_s=%.3f mbps=%.1f p50_s=%.3f p99_s=%.3f max_s=%.3f hits=%d misses=%d\n", \
      processes, bytes, wall, bytes / 1e6 / wall, rank(0.5), rank(0.99), ready[NR], hits, misses
  }'
((failed == 0)) || die "$failed pod(s) failed or wrote wrong bytes"
if ((misses)); then
  echo "bench-sidecars.sh: $misses input(s) missed the cache; their reasons:" >&2
  grep -h '"reason"' "$work"/report-*.json | sed 's/ for key .*//' | sort | uniq -c | sort -rn >&2
fi
