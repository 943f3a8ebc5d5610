#!/usr/bin/env bash
# Retention and queries at 100,000 runs (issue 19 item 4), debug build by default
# (PROFILE=release for a release build):
#  1. an orchestrator store filled with N ended runs (two records each);
#  2. the queries behind GET /v1/status and GET /v1/runs through the store, with this
#     build's indexes and without them, and the status query as it was before;
#  3. GET /v1/status and GET /v1/runs over HTTPS against the real orchestrator on that store
#     (curl, one request at a time), p50/p99;
#  4. an agent folder after N events (journal runs of one record, acknowledged outbox items):
#     its size before and after one retention pass with the default policy.
#
#   bash bench/retention.sh [N=100000]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-100000}"
PROFILE="${PROFILE:-debug}"
flag=()
[ "$PROFILE" = release ] && flag=(--release)
cargo build -q "${flag[@]}" -p vacsine --bin vacsine
cargo build -q "${flag[@]}" -p vacsine-orch --example retention
BIN="$PWD/target/$PROFILE/vacsine"
EX="$PWD/target/$PROFILE/examples/retention"
work=$(mktemp -d)
orch_pid=
cleanup() {
  [ -n "$orch_pid" ] && kill "$orch_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== store filled with $N runs ($PROFILE build)"
"$EX" fill "$work/orch" "$N"
echo "== store queries (through the Store trait)"
"$EX" queries "$work/orch"

echo "== HTTPS, the real orchestrator (--gc-every 0: the store stays as filled)"
"$BIN" orchestrator --listen 127.0.0.1:0 --data "$work/orch" --gc-every 0 >"$work/orch.log" 2>&1 &
orch_pid=$!
for _ in $(seq 1 300); do [ -s "$work/orch/operator.json" ] && break; sleep 0.1; done
url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$work/orch/operator.json")
token=$(cat "$work/orch/operator.token")
hdr="Authorization: Bearer $token"
measure() { # PATH COUNT: p50/p99 of each request's time, one after the other on one
  # kept-alive connection (as the CLI and a dashboard use it; a debug build's TLS handshake
  # alone takes about 15 ms and is not what is measured)
  local path=$1 n=$2 f="$work/times" urls=()
  for _ in $(seq 1 "$n"); do urls+=("$url$path"); done
  curl -sk -H "$hdr" -w '%{stderr}%{time_total}\n' "${urls[@]}" >/dev/null 2>"$f"
  python3 - "$f" "$path" <<'PY'
import sys
v = sorted(float(x) * 1000 for x in open(sys.argv[1]))
at = lambda q: v[round((len(v) - 1) * q)]
print(f"  GET {sys.argv[2]:<40} p50 {at(0.5):7.2f} ms  p99 {at(0.99):7.2f} ms  ({len(v)} requests)")
PY
}
curl -sk -o /dev/null -H "$hdr" "$url/v1/status"
measure /v1/status 200
measure "/v1/runs?limit=50" 200
measure "/v1/runs?site=bench&limit=50" 200
next=$(curl -sk -H "$hdr" "$url/v1/runs?limit=1000" | python3 -c 'import json,sys; print(json.load(sys.stdin)["next"])')
measure "/v1/runs?limit=50&before=$next" 200
kill "$orch_pid"; wait "$orch_pid" 2>/dev/null || true; orch_pid=

echo "== store: one retention pass with the default policy"
ls -l "$work/orch/orchestrator.db" | awk '{print "  before: " $5 " bytes"}'
"$BIN" gc --data "$work/orch" || true
ls -l "$work/orch/orchestrator.db" | awk '{print "  after:  " $5 " bytes"}'

echo "== agent folder after $N events"
"$EX" agent "$work/agent" "$N"
