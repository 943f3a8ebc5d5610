#!/usr/bin/env bash
# Time to mitigate (issue 16): two sites in network namespaces named after the test process,
# an attacker namespace, a real orchestrator and agents of the built binary, real nftables.
# (1) event at a site cut off from the orchestrator → ban in effect there; (2) decision at one
# site → in effect at the other. Prints p50/p99. Needs root (ip netns, nft), python3.
#
#   bash bench/response.sh [N=50]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-50}"
VACSINE_BENCH_N="$N" cargo test -q -p vacsine --test it -- --ignored --nocapture --exact \
  orchestrator::respond::bench_issue16_time_to_mitigate 2>&1 | grep -E '^[|]'
