#!/usr/bin/env bash
# Store and forward across a cut (issue 16 item 5): N events fed at a site whose link to the
# orchestrator is cut at the network level (a namespace's veth down), the cut held CUT_S
# seconds, the link restored, the orchestrator's store counted until it holds every event:
# none lost, none doubled. Prints the ingest rate, the upload time and the agent's disk use.
# Needs root (ip netns), sqlite3.
#
#   bash bench/cut_million.sh [N=1000000] [CUT_S=600]
#   BENCH_RELEASE=1 bash bench/cut_million.sh          # a release build
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-1000000}"
CUT_S="${2:-600}"
PROFILE=()
[ "${BENCH_RELEASE:-0}" = 1 ] && PROFILE=(--release)
VACSINE_BENCH_EVENTS="$N" VACSINE_BENCH_CUT_S="$CUT_S" cargo test -q "${PROFILE[@]}" -p vacsine --test it -- \
  --ignored --nocapture --exact \
  orchestrator::cut_million::bench_issue16_a_million_events_across_a_cut_none_lost_none_doubled 2>&1 \
  | grep -E '^[|]|^fed|at the orchestrator after|panicked|assert'
