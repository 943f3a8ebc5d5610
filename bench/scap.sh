#!/usr/bin/env bash
# Whole-profile evaluation of one Debian node: `vacsine scap eval` (release build, cold cache
# and warm cache) against `oscap xccdf eval` offline on the same node, runs alternated, then
# N nodes evaluated concurrently by one `vacsine scap eval`. Prints medians, ratios, RSS.
#
#   bash bench/scap.sh [RUNS=7] [NODES=50] [PROFILE=anssi_np_nt28_high]
#
# Needs: Docker, oscap + ssg-debian (Debian packages openscap-scanner, ssg-debian), GNU time.
# The node is the demo's Debian base image (built from Debian's packages on first use by
# `vacsine demo`), declared Debian 11 for SSG 0.1.65's benchmark platform.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-7}"
NODES="${2:-50}"
PROFILE="${3:-anssi_np_nt28_high}"
DS=/usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml
PREFIX="vacsine-bench-scap-$$"
work=$(mktemp -d)
cleanup() {
  docker ps -aq --filter "label=vacsine.bench=$PREFIX" | xargs -r docker rm -f >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release -q -p vacsine --bin vacsine
BIN=target/release/vacsine
IMAGE=$(docker images --format '{{.Repository}}:{{.Tag}}' 'vacsine-demo/debian' | head -1)
if [ -z "$IMAGE" ]; then
  echo "no vacsine-demo/debian image: run \`$BIN demo\` once (it builds it)" >&2
  exit 1
fi

start_node() {
  docker run -d --label "vacsine.bench=$PREFIX" --name "$1" --network none "$IMAGE" sleep infinity >/dev/null
  docker exec "$1" sh -c 'echo 11.11 > /etc/debian_version'
}
target_yaml() { # name containers...
  local name=$1; shift
  printf 'apiVersion: vacsine.io/v1\nkind: Target\nmetadata: {name: %s}\nspec:\n  driver: docker\n  nodes:\n' "$name"
  local i=0
  for c in "$@"; do printf '    - {name: n%d, container: %s, roles: [any]}\n' "$i" "$c"; i=$((i + 1)); done
}

one="$PREFIX-0"
start_node "$one"
pid=$(docker inspect -f '{{.State.Pid}}' "$one")
target_yaml bench "$one" > "$work/one.yaml"
export VACSINE_SCAP_CACHE="$work/cache"

# time_of CMD... → "seconds KiB"; the command must exit 0 or 2 (2: some rule fails).
time_of() {
  local rc=0
  /usr/bin/time -f 'BENCH %e %M' -o "$work/t" "$@" >"$work/out" 2>"$work/err" || rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ]; then
    echo "failed ($rc): $*" >&2; cat "$work/err" >&2; exit 1
  fi
  awk '/^BENCH/ {print $2, $3}' "$work/t"
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

: > "$work/oscap"; : > "$work/cold"; : > "$work/warm"
for i in $(seq 1 "$RUNS"); do
  echo "run $i/$RUNS" >&2
  OSCAP_PROBE_ROOT="/proc/$pid/root" time_of oscap xccdf eval --profile "xccdf_org.ssgproject.content_profile_$PROFILE" "$DS" >> "$work/oscap"
  rm -rf "$work/cache"
  time_of "$BIN" scap eval "$DS" --profile "$PROFILE" --target "$work/one.yaml" --format json >> "$work/cold"
  time_of "$BIN" scap eval "$DS" --profile "$PROFILE" --target "$work/one.yaml" --format json >> "$work/warm"
done
# oscap leaves its temporary files in the scanned root (seen: two ~36 MB files per scan).
docker exec "$one" sh -c 'rm -f /tmp/oscap* 2>/dev/null' || true

report() { # name file
  local t m
  t=$(cut -d' ' -f1 "$2" | median)
  m=$(cut -d' ' -f2 "$2" | median)
  echo "$1 $t $m"
}
read -r _ ot om < <(report oscap "$work/oscap")
read -r _ ct cm < <(report cold "$work/cold")
read -r _ wt wm < <(report warm "$work/warm")
echo
echo "profile $PROFILE, one Debian node, $RUNS alternated runs (medians):"
printf '  %-34s %7.3f s  %7d KiB\n' "oscap xccdf eval (offline)" "$ot" "$om"
printf '  %-34s %7.3f s  %7d KiB   %5.1fx faster, %5.1fx less memory\n' "vacsine scap eval, cold cache" "$ct" "$cm" "$(echo "$ot / $ct" | bc -l)" "$(echo "$om / $cm" | bc -l)"
printf '  %-34s %7.3f s  %7d KiB   %5.1fx faster, %5.1fx less memory\n' "vacsine scap eval, warm cache" "$wt" "$wm" "$(echo "$ot / $wt" | bc -l)" "$(echo "$om / $wm" | bc -l)"

# N nodes at once.
names=()
for i in $(seq 1 "$NODES"); do
  names+=("$PREFIX-n$i")
  start_node "$PREFIX-n$i" &
  [ $((i % 10)) -eq 0 ] && wait
done
wait
target_yaml site "${names[@]}" > "$work/site.yaml"
: > "$work/site"
for i in 1 2 3; do
  time_of "$BIN" scap eval "$DS" --profile "$PROFILE" --target "$work/site.yaml" --format json >> "$work/site"
done
read -r _ st sm < <(report site "$work/site")
printf '\n%d nodes in one `vacsine scap eval` (warm cache, median of 3): %.2f s wall, %.1f nodes/s, %d KiB RSS\n' \
  "$NODES" "$st" "$(echo "$NODES / $st" | bc -l)" "$sm"
