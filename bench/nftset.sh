#!/usr/bin/env bash
# Decisions as data (issue 16): the `nftset` executor in a fresh network namespace (named
# after the test process), against real nftables. Loads N bans (default 100,000) in one call,
# which is one `nft -f -` transaction, then times single adds (new, and already present) and
# single deletes against that full set; prints medians. Needs root (ip netns, nft).
# Also times plain `nft -f` loading the same N elements, as the floor the executor stands on.
#
#   bash bench/nftset.sh [N=100000]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-100000}"
PROFILE="${VACSINE_BENCH_PROFILE:-dev}"
echo "== executor (cargo test profile: $PROFILE)"
VACSINE_BENCH_N="$N" VACSINE_REQUIRE_NFT=1 cargo test -q -p vacsine-engine --profile "$PROFILE" \
  --test it -- --ignored --nocapture --exact nftset::bench_nftset 2>&1 |
  grep -E '^(\||nftset)'

echo "== floor: nft -f alone, same skeleton and $N elements"
ns="vdsbench-floor-$$"
ip netns add "$ns"
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
script=$(mktemp)
trap 'ip netns del "$ns" 2>/dev/null || true; rm -f "$script"' EXIT
{
  echo "add table inet t"
  echo "add set inet t ban4 { type ipv4_addr; flags timeout; }"
  echo "add chain inet t input { type filter hook input priority -10; policy accept; }"
  echo "add rule inet t input ip saddr @ban4 drop"
  printf 'add element inet t ban4 { '
  python3 -c "
import ipaddress,sys
b=int(ipaddress.IPv4Address('10.0.0.0'))
sys.stdout.write(', '.join(str(ipaddress.IPv4Address(b+i))+' timeout 4h' for i in range($N)))"
  echo ' }'
} > "$script"
t0=$(date +%s%N)
ip netns exec "$ns" nft -f "$script"
t1=$(date +%s%N)
echo "| nft -f, $N elements, one transaction | $(( (t1 - t0) / 1000000 )) ms |"
