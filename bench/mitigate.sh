#!/usr/bin/env bash
# Time to mitigate at a cut-off edge (issue 16): an event line written to a log the site
# follows (`vacsine agent ingest --follow`, the path of the agent's decoy logs) → the
# attacker's next SYN dropped, observed from the attacker's namespace (a prober connecting
# every millisecond). Prints p50/p99/max. Needs root (ip netns, nft), python3.
#
#   bash bench/mitigate.sh [N=50]
#   BENCH_RELEASE=1 bash bench/mitigate.sh [N]     # a release build
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-50}"
PROFILE=()
[ "${BENCH_RELEASE:-0}" = 1 ] && PROFILE=(--release)
VACSINE_BENCH_N="$N" cargo test -q "${PROFILE[@]}" -p vacsine --test it -- --ignored --nocapture --exact \
  orchestrator::mitigate::bench_issue16_event_at_a_cut_off_edge_to_the_attackers_packet_dropped 2>&1 \
  | grep -E '^[|]|panicked|assert'
