#!/usr/bin/env bash
# Hostile clients against one orchestrator (loopback): its RSS under N stalled
# unauthenticated uploads (half to an operator route, half to an agent route, each announcing
# 2 MB and stalling after what the socket takes of 1.9 MB), and a normal request's latency
# (GET /v1/hello over a new TLS connection, 20 times) while M connections are held in the TLS
# handshake, under an open-file limit of 1,024.
#
#   bash bench/hostile.sh [N=200] [M=1000]    (VACSINE_BIN=… to use another binary)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-200}"
M="${2:-1000}"
if [ -z "${VACSINE_BIN:-}" ]; then
  cargo build --release -q -p vacsine --bin vacsine
  VACSINE_BIN="$PWD/target/release/vacsine"
fi
work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
prlimit --nofile=1024:1024 "$VACSINE_BIN" orchestrator --listen 127.0.0.1:0 --data "$work/orch" >"$work/out" 2>&1 &
pid=$!
for _ in $(seq 1 100); do grep -q 'listening on' "$work/out" 2>/dev/null && break; sleep 0.1; done
sleep 0.5
grep '^limits:' "$work/out" || echo "(no limits printed: a binary from before them)"
addr=$(grep -o 'https://[0-9.:]*' "$work/out" | head -1 | sed 's#https://##')
python3 bench/hostile.py "$pid" "$addr" uploads "$N"
python3 bench/hostile.py "$pid" "$addr" held "$M"
