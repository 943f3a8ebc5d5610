#!/usr/bin/env bash
# Step-by-step dispatch across sites (release build, loopback): one orchestrator, two sites,
# an agent each. A chain of N trivial steps alternating between the sites (each `needs` the
# previous), run as one run spanning sites: every step is queued for its site, leased by its
# agent, run, confirmed, and only then the next one is sent. The peer, measured in the same
# run: the same chain at one site, run whole by its agent (no per-step round trip). Reported:
# the median per-step cost of each (the gap from one step's end to the next one's start, from
# the records), over R rounds.
#
#   bash bench/spanning.sh [N=40] [R=3]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-40}"
R="${2:-3}"
. bench/orch-common.sh
for s in a b; do start_agent "edge-$s" "edge-$s-1"; done
sleep 2

chain() { # $1 name, $2 = 1 to alternate sites
  printf 'apiVersion: vacsine.io/v1\nkind: Workflow\nmetadata:\n  name: %s\nspec:\n  concurrency: 1\n  steps:\n' "$1"
  for i in $(seq 1 "$N"); do
    printf '    - id: s%d\n      uses: command\n      with:\n        argv: ["true"]\n' "$i"
    [ "$i" -gt 1 ] && printf '      needs: [s%d]\n' $((i - 1))
    if [ "$2" = 1 ]; then
      if [ $((i % 2)) = 0 ]; then printf '      runsOn: edge-b\n'; else printf '      runsOn: edge-a\n'; fi
    fi
  done
}
chain across 1 >"$work/across.yaml"
chain whole 0 >"$work/whole.yaml"

: >"$work/gaps"
for r in $(seq 1 "$R"); do
  for wf in across whole; do
    "$BIN" run "$work/$wf.yaml" --site edge-a "${op[@]}" --format json >"$work/$wf-$r.jsonl"
    python3 - "$work/$wf-$r.jsonl" "$wf" >>"$work/gaps" <<'EOF'
import json, sys
from datetime import datetime
recs = [json.loads(l) for l in open(sys.argv[1])]
t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
wall = (max(t(r["finished_at"]) for r in recs) - min(t(r["started_at"]) for r in recs)) * 1000
print(sys.argv[2], "wall", wall / len(recs))
for r in recs:
    print(sys.argv[2], "step", r["duration_ms"])
EOF
  done
done
python3 - "$work/gaps" "$N" "$R" <<'EOF'
import sys, statistics
d = {}
for l in open(sys.argv[1]):
    k, kind, v = l.split()
    d.setdefault((k, kind), []).append(float(v))
m = lambda k, kind: statistics.median(d[(k, kind)])
print(f"{sys.argv[2]} steps x {sys.argv[3]} rounds (medians)")
print(f"  spanning sites: {m('across','step'):.1f} ms per step as the orchestrator sees it (queue, lease, run, confirm), {m('across','wall'):.1f} ms of wall time per step")
print(f"  whole at one site: {m('whole','step'):.1f} ms per step (the agent's engine alone), {m('whole','wall'):.1f} ms of wall time per step")
print(f"  ratio of wall time per step, spanning / whole: {m('across','wall') / max(m('whole','wall'), 0.001):.1f}")
EOF
