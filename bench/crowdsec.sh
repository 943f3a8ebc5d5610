#!/usr/bin/env bash
# Compatible enforcement (issue 16 item 7): a decision made at the orchestrator → in effect at
# a Vacsine site (agent long poll) vs. in effect through the real crowdsec-firewall-bouncer
# polling the orchestrator's CrowdSec bouncer API, with its default update_frequency (10s)
# and a short one, all in the same run; then the real crowdsec LAPI as the peer (cscli
# decisions add → its own bouncer), when it can run here. Prints p50/p99 tables.
# Needs root (ip netns, nft), crowdsec-firewall-bouncer (see .ci/run).
#
#   bash bench/crowdsec.sh [N=20] [SHORT=100ms]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-20}"
SHORT="${2:-100ms}"
VACSINE_BENCH_N="$N" VACSINE_BENCH_SHORT="$SHORT" cargo test -q -p vacsine --test it -- \
  --ignored --nocapture --exact orchestrator::crowdsec::bench_issue16_crowdsec 2>&1 | grep -E '^[|]'
