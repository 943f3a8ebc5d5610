# Sourced by the orchestrator benchmarks: a release build (or $VACSINE_BIN), a scratch folder removed at exit
# with every process started (`pids`), an orchestrator on loopback (`orch_pid`, `url`, `pin`,
# `op`: the CLI's arguments to reach it), and `start_agent SITE NAME`: a site and its agent
# (`agent_pid`).
# VACSINE_BIN=path: measure that binary instead (e.g. two builds side by side in one run).
if [ -n "${VACSINE_BIN:-}" ]; then
  BIN="$VACSINE_BIN"
else
  cargo build --release -q -p vacsine --bin vacsine
  BIN="$PWD/target/release/vacsine"
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$BIN" orchestrator --listen 127.0.0.1:0 --data "$work/orch" >"$work/orch.log" 2>&1 &
pids+=($!)
orch_pid=$!
for _ in $(seq 1 100); do [ -s "$work/orch/operator.json" ] && break; sleep 0.1; done
url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$work/orch/operator.json")
pin=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pin"])' "$work/orch/operator.json")
op=(--orchestrator-data "$work/orch")

start_agent() { # SITE NAME: the agent's data in $work/NAME, its log in $work/NAME.log
  local key
  key=$("$BIN" site create "$1" "${op[@]}" --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["intake_key"])')
  "$BIN" agent --orchestrator "$url" --intake-key "$key" --name "$2" --pin "$pin" --data "$work/$2" >"$work/$2.log" 2>&1 &
  pids+=($!)
  agent_pid=$!
  for _ in $(seq 1 100); do grep -q "vacsine agent" "$work/$2.log" && break; sleep 0.1; done
}
