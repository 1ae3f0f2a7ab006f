#!/usr/bin/env bash
# Two builds of libmetatape under one benchmark program, alternated round by
# round, for a machine whose speed drifts too much between separate runs:
#
#   bench/alternate.sh OLD_LIB_DIR NEW_LIB_DIR ROUNDS FILTER [PROGRAM]
#
# OLD_LIB_DIR and NEW_LIB_DIR each hold a copy of build/engine/libmetatape.so*
# (the build before and after a change); PROGRAM (default bench-maml, under
# build/bench/) runs against each in turn through LD_LIBRARY_PATH, every
# round being the median of 3 repetitions of the benchmarks FILTER selects.
# For each benchmark it prints both builds' medians over the rounds and the
# median of the per-round ratios, new over old, with every round's ratio.
set -euo pipefail
if (($# < 4)); then
  sed -n '2,12p' "$0" >&2
  exit 2
fi
old=$1 new=$2 rounds=$3 filter=$4 program=${5:-bench-maml}
root=$(cd "$(dirname "$0")/.." && pwd)
for dir in "$old" "$new"; do
  if [[ ! -e "$dir/libmetatape.so.0" ]]; then
    echo "alternate.sh: $dir has no libmetatape.so.0" >&2
    exit 2
  fi
done
if ! [[ "$rounds" =~ ^[1-9][0-9]*$ ]]; then
  echo "alternate.sh: ROUNDS must be a positive integer, got '$rounds'" >&2
  exit 2
fi
for ((r = 0; r < rounds; ++r)); do
  for build in old new; do
    dir=$old
    [[ $build == new ]] && dir=$new
    LD_LIBRARY_PATH=$dir "$root/build/bench/$program" --benchmark_filter="$filter" --benchmark_repetitions=3 \
      --benchmark_min_time=0.2 --benchmark_report_aggregates_only=true 2>/dev/null |
      awk -v build=$build '$1 ~ /_median$/ {print build, $1, $2}'
  done
done | python3 -c '
import collections, statistics, sys
times = collections.defaultdict(lambda: collections.defaultdict(list))
for line in sys.stdin:
    build, name, t = line.split()
    times[name][build].append(float(t))
for name, t in times.items():
    ratios = [n / o for o, n in zip(t["old"], t["new"])]
    rounds = " ".join("%.2f" % r for r in ratios)
    print("%s: old %g, new %g, new/old %.3f (rounds: %s)"
          % (name, statistics.median(t["old"]), statistics.median(t["new"]), statistics.median(ratios), rounds))
'
