#!/usr/bin/env bash
# The predictor's backtest (`kfcache bench predict`) on every fixture pipeline, as a Markdown
# table: per fixture the start-time MAPE of kfcache, of Argo's last-run rule and of the
# oracle that knows the history model (the floor under any predictor), then a summary.
#
#   scripts/bench-predict.sh [--runs 20] [--jitter 0.15] [--seed 1] [--kfcache PATH]
#
# --kfcache picks the binary (default target/release/kfcache, built if missing). The last
# line is machine-readable:
#   bench-predict: fixtures=N kfcache_at_most_0.10=A oracle_at_most_0.10=B beats_last_run=C
#                  mean_kfcache=M mean_oracle=O
set -euo pipefail
cd "$(dirname "$0")/.."

runs=20 jitter=0.15 seed=1 bin=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --jitter) jitter="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --kfcache) bin="$2"; shift 2 ;;
    *) echo "bench-predict: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
if [[ -z "$bin" ]]; then
  bin=target/release/kfcache
  [[ -x "$bin" ]] || cargo build --release -p kfcache-cli >&2
fi

echo "| fixture | kfcache | last run | oracle (floor) |"
echo "|---|---:|---:|---:|"
n=0 k_ok=0 o_ok=0 beats=0 sum_k=0 sum_o=0
for f in fixtures/argo/*.yaml fixtures/kfp/v1/*.yaml fixtures/kfp/v2/*.yaml \
         fixtures/e2e/replay-pipeline.yaml; do
  out=$("$bin" bench predict --pipeline "$f" --templates fixtures/argo/templates \
        --runs "$runs" --jitter "$jitter" --seed "$seed" 2>/dev/null)
  field() { grep -oE "$1=[0-9.]+" <<<"$out" | tail -1 | cut -d= -f2; }
  k=$(field kfcache_mape) l=$(field last_run_mape) o=$(field oracle_mape)
  echo "| ${f#fixtures/} | $k | $l | $o |"
  n=$((n + 1))
  awk -v x="$k" 'BEGIN { exit !(x <= 0.10) }' && k_ok=$((k_ok + 1))
  awk -v x="$o" 'BEGIN { exit !(x <= 0.10) }' && o_ok=$((o_ok + 1))
  awk -v x="$k" -v y="$l" 'BEGIN { exit !(x < y) }' && beats=$((beats + 1))
  sum_k=$(awk -v a="$sum_k" -v b="$k" 'BEGIN { print a + b }')
  sum_o=$(awk -v a="$sum_o" -v b="$o" 'BEGIN { print a + b }')
done
echo
awk -v n="$n" -v ka="$k_ok" -v oa="$o_ok" -v b="$beats" -v sk="$sum_k" -v so="$sum_o" 'BEGIN {
  printf "bench-predict: fixtures=%d kfcache_at_most_0.10=%d oracle_at_most_0.10=%d beats_last_run=%d mean_kfcache=%.4f mean_oracle=%.4f\n",
    n, ka, oa, b, sk / n, so / n }'
