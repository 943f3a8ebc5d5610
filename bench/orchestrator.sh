#!/usr/bin/env bash
# Orchestrator and agent on loopback (release build): dispatch latency from a run's creation
# to its agent starting the step (the step record's start minus the run's creation, both
# stamped on this machine's clock), p50/p99 over N runs submitted one after the other while
# the agent long-polls; the agent's and the orchestrator's RSS when idle.
#
#   bash bench/orchestrator.sh [N=200]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-200}"
. bench/orch-common.sh
start_agent bench bench-1
sleep 3
idle_agent=$(ps -o rss= -p "$agent_pid" | tr -d ' ')
idle_orch=$(ps -o rss= -p "$orch_pid" | tr -d ' ')

cat >"$work/wf.yaml" <<'EOF'
apiVersion: vacsine.io/v1
kind: Workflow
metadata:
  name: bench-step
spec:
  steps:
    - id: one
      uses: command
      with:
        argv: ["true"]
EOF
echo "submitting $N runs, one after the other" >&2
for i in $(seq 1 "$N"); do
  "$BIN" run "$work/wf.yaml" --site bench "${op[@]}" --format json >/dev/null
done
"$BIN" runs --all-sites --limit "$N" "${op[@]}" --format json >"$work/runs.json"
: >"$work/records"
python3 -c 'import json,sys; [print(r["id"]) for r in json.load(open(sys.argv[1]))]' "$work/runs.json" |
  while read -r id; do "$BIN" logs "$id" "${op[@]}" --format json | head -1 | sed "s/^/$id /" >>"$work/records"; done
python3 - "$work/runs.json" "$work/records" "$idle_agent" "$idle_orch" <<'EOF'
import json, sys
from datetime import datetime
runs = {r["id"]: r for r in json.load(open(sys.argv[1]))}
lat = []
for line in open(sys.argv[2]):
    rid, rec = line.split(" ", 1)
    rec = json.loads(rec)
    created = datetime.fromisoformat(runs[rid]["created"].replace("Z", "+00:00"))
    started = datetime.fromisoformat(rec["started_at"].replace("Z", "+00:00"))
    lat.append((started - created).total_seconds() * 1000)
lat.sort()
def pct(p):
    return lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))]
print(f"dispatch latency (run created -> step started), {len(lat)} runs: p50 {pct(50):.1f} ms, p99 {pct(99):.1f} ms, max {lat[-1]:.1f} ms")
print(f"idle RSS: agent {int(sys.argv[3]) / 1024:.1f} MiB, orchestrator {int(sys.argv[4]) / 1024:.1f} MiB")
EOF
