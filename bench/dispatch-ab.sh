#!/usr/bin/env bash
# The store's dispatch + confirm throughput (lease a run, add its record, finish it), two
# commits compared in one session: their `bench_dispatch_confirm` test binaries are run
# alternately, so the machine's noise falls on both alike. Prints the median of the runs per
# store and number of agents, and after/before.
#
#   bash bench/dispatch-ab.sh BEFORE [AFTER] [RUNS]
#     BEFORE, AFTER  commits (AFTER: HEAD); RUNS: runs of each (default 4)
#   VACSINE_TEST_PG=postgres://USER:PASS@127.0.0.1:5432/DB   also PostgreSQL
#   TMPDIR=/dev/shm   the SQLite file on tmpfs: the store's own cost without the disk's flushes
#
# Each commit is checked out in a worktree of its own under target/ab/ and built into this
# checkout's target folder (dependencies shared), debug profile as in the README's figures.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
if [ $# -lt 1 ] || [ $# -gt 3 ]; then
  sed -n '7,10p' "$0" | sed 's/^# \{0,3\}//' >&2
  exit 1
fi
before=$(git rev-parse --verify -q "$1^{commit}") || { echo "dispatch-ab: no commit \`$1\`" >&2; exit 1; }
after=$(git rev-parse --verify -q "${2:-HEAD}^{commit}") || { echo "dispatch-ab: no commit \`${2:-HEAD}\`" >&2; exit 1; }
runs=${3:-4}
case "$runs" in '' | *[!0-9]* | 0) echo "dispatch-ab: RUNS must be a positive number, not \`$runs\`" >&2; exit 1 ;; esac

target="$PWD/target"
ab="$target/ab"
mkdir -p "$ab"
out="$ab/runs-$$.txt"
: >"$out"

# The test binary of commit $1 (its path on stdout).
build() {
  local rev=$1 tree="$ab/tree-${1:0:12}"
  [ -d "$tree" ] || git worktree add -q --detach "$tree" "$rev"
  echo "building ${rev:0:12}…" >&2
  (cd "$tree" && CARGO_TARGET_DIR="$target" cargo test -q -p vacsine-orch --lib --no-run \
    --message-format=json 2>/dev/null) |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "vacsine_orch":
        print(m["executable"])'
}
bin_before=$(build "$before")
bin_after=$(build "$after")
[ -x "$bin_before" ] && [ -x "$bin_after" ] || { echo "dispatch-ab: a build failed (build it in its worktree under $ab to see why)" >&2; exit 1; }

for i in $(seq 1 "$runs"); do
  for side in before after; do
    bin=bin_$side
    echo "run $i/$runs: $side" >&2
    # The test reads its own crate's files: run it from that crate's folder.
    (cd "$ab/tree-$([ $side = before ] && echo "${before:0:12}" || echo "${after:0:12}")/crates/vacsine-orch" &&
      "${!bin}" --ignored --nocapture --exact store::tests::bench_dispatch_confirm 2>&1) |
      awk -v side="$side" '$1 ~ /^(sqlite|postgres)$/ && NF == 3 { print side, $1, $2, $3 }' >>"$out"
  done
done

python3 - "$out" "${before:0:12}" "${after:0:12}" <<'EOF'
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    side, store, workers, rate = line.split()
    rows[(store, int(workers), side)].append(float(rate))
print(f"dispatch + confirm, steps/s, median of the runs: before {sys.argv[2]}, after {sys.argv[3]}")
print(f"{'store':<10} {'agents':>6} {'before':>10} {'after':>10} {'after/before':>13}")
for store in ("sqlite", "postgres"):
    for w in sorted({k[1] for k in rows if k[0] == store}):
        b, a = rows.get((store, w, "before")), rows.get((store, w, "after"))
        if b and a:
            mb, ma = statistics.median(b), statistics.median(a)
            print(f"{store:<10} {w:>6} {mb:>10.0f} {ma:>10.0f} {ma / mb:>13.2f}")
EOF
