#!/usr/bin/env bash
# Per-client fairness (issue 19): a normal request's latency (GET /v1/hello over a new TLS
# connection, 20 times, from 127.0.0.1) while one other loopback address holds M connections
# in a request (a head announcing a body that never comes), under an open-file limit of
# 1,024: first with no cap per client address (`--max-connections-per-client 0`, as before
# the cap), then with the default cap, in the same run; each first with nothing held.
#
#   bash bench/fairness.sh [M=1000]    (VACSINE_BIN=… to use another binary)
set -euo pipefail
cd "$(dirname "$0")/.."
M="${1:-1000}"
if [ -z "${VACSINE_BIN:-}" ]; then
  cargo build --release -q -p vacsine --bin vacsine
  VACSINE_BIN="$PWD/target/release/vacsine"
fi
# The hostile address, this run's own.
SRC="127.1.$(( $$ % 250 )).$(( ($$ / 250) % 250 + 2 ))"
work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for cap in 0 default; do
  extra=()
  [ "$cap" = 0 ] && extra=(--max-connections-per-client 0)
  rm -rf "$work/orch"
  prlimit --nofile=1024:1024 "$VACSINE_BIN" orchestrator --listen 127.0.0.1:0 --data "$work/orch" "${extra[@]}" >"$work/out" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do grep -q 'listening on' "$work/out" 2>/dev/null && break; sleep 0.1; done
  sleep 0.5
  echo "== cap per client: $cap"
  grep '^limits:' "$work/out"
  addr=$(grep -o 'https://[0-9.:]*' "$work/out" | head -1 | sed 's#https://##')
  python3 bench/hostile.py "$pid" "$addr" busy 0 | grep meanwhile | sed 's/meanwhile/with nothing held/'
  python3 bench/hostile.py "$pid" "$addr" busy "$M" "$SRC" | grep -v RSS
  kill "$pid"; wait "$pid" 2>/dev/null || true
  pid=
done
