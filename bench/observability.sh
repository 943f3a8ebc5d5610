#!/usr/bin/env bash
# Issue 17 benchmarks, debug build by default (PROFILE=release for a release build):
#  1. GET /metrics (the --metrics-listen listener, plain HTTP) on a real orchestrator whose
#     SQLite store holds N runs (bench/retention.sh's fill): p50/p99 of 200 scrapes (curl,
#     one at a time), and the body's size;
#  2. Loki push of 100,000 step-record lines (crates/vacsine-orch/examples/loki.rs): queued
#     while the receiver is down, then pushed to a push receiver on loopback; throughput and
#     the process's memory.
#
#   bash bench/observability.sh [N=10000]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-10000}"
PROFILE="${PROFILE:-debug}"
flag=()
[ "$PROFILE" = release ] && flag=(--release)
cargo build -q "${flag[@]}" -p vacsine --bin vacsine
cargo build -q "${flag[@]}" -p vacsine-orch --example retention --example loki
BIN="$PWD/target/$PROFILE/vacsine"
EX="$PWD/target/$PROFILE/examples"
work=$(mktemp -d)
orch_pid=
cleanup() {
  [ -n "$orch_pid" ] && kill "$orch_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$EX/retention" fill "$work/orch" "$N" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN" orchestrator --listen 127.0.0.1:0 --data "$work/orch" --gc-every 0 \
  --metrics-listen "127.0.0.1:$port" >"$work/orch.log" 2>&1 &
orch_pid=$!
for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$port/metrics" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$port/metrics" >"$work/metrics.txt"
echo "== /metrics with $N runs in the store ($PROFILE build)"
grep '^vacsine_runs{' "$work/metrics.txt" | sed 's/^/   /'
echo "   body: $(wc -c <"$work/metrics.txt") bytes"
for _ in $(seq 1 200); do
  curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$port/metrics"
done | sort -n | awk '{a[NR]=$1} END {printf "   scrape p50 %.1f ms, p99 %.1f ms, max %.1f ms (200 scrapes)\n", a[int(NR*0.5)]*1000, a[int(NR*0.99)]*1000, a[NR]*1000}'
echo "   orchestrator RSS: $(awk '/VmRSS/ {print int($2/1024)" MiB"}' /proc/$orch_pid/status)"
echo "== Loki push ($PROFILE build)"
"$EX/loki" 100000 | sed 's/^/   /'
