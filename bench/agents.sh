#!/usr/bin/env bash
# Many simulated agents long-polling one orchestrator (release build, loopback): each agent
# has its own HPKE key and its own HTTPS connection and keeps a 25 s long poll open. Reports
# the orchestrator process's resident memory (steady and peak), CPU, threads and sockets
# held, sampled from /proc over SECONDS once every agent is polling.
#
#   bash bench/agents.sh [N=1000] [SECONDS=30]
#   VACSINE_BENCH_PG=postgres://USER:PASSWORD@127.0.0.1:5432/DB bash bench/agents.sh 10000
#     (the PostgreSQL store instead of SQLite; it makes schema `vacsine` in DB and leaves it:
#     use a scratch database)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000}"
SECS="${2:-30}"
# One socket per agent on each side, plus the files each process keeps open.
want=$((N + 1024))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
  echo "the open-file limit is $hard; $N agents need about $want (raise the hard limit: limits.conf or systemd LimitNOFILE)" >&2
  exit 1
fi
ulimit -n "$want"
cargo build --release -q -p vacsine-orch --example agents
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/examples/agents"
work=$(mktemp -d)
orch_pid=
cleanup() {
  [ -n "$orch_pid" ] && kill "$orch_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
"$BIN" serve "$work/orch" ${VACSINE_BENCH_PG:+"$VACSINE_BENCH_PG"} >"$work/orch.log" 2>&1 &
orch_pid=$!
for _ in $(seq 1 100); do [ -s "$work/orch/operator.json" ] && break; sleep 0.1; done
[ -s "$work/orch/operator.json" ] || { cat "$work/orch.log" >&2; exit 1; }
grep '^store:' "$work/orch.log" || true
"$BIN" drive "$work/orch" "$N" "$orch_pid" "$SECS"
