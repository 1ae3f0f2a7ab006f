#!/usr/bin/env bash
# Meta-iterations per second of Conv4 5-way 1-shot on Fashion-MNIST,
# meta-batch 32, one thread per process: one process, then `mpirun -np 2`
# with the deterministic and the fast reduction; medians of REPEATS runs of
# ITERATIONS iterations each, and the scaling efficiency (speed-up / 2).
#   bench/distributed_throughput.sh path/to/metatape [ITERATIONS [REPEATS]]
set -euo pipefail
metatape=$1
iterations=${2:-4}
repeats=${3:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
launcher=(mpirun --oversubscribe)
[ "$(id -u)" -eq 0 ] && launcher+=(--allow-run-as-root)
run=(train --task fashion-mnist --model conv4 --ways 5 --shots 1 --queries 15 --meta-batch 32 --inner-lr 0.4
  --iterations "$iterations" --checkpoint-every 0 --threads 1 --quiet)

# rate LABEL COMMAND...: the median it/s of REPEATS runs (from the summary line).
rate() {
  local label=$1 rates=() i
  shift
  for ((i = 0; i < repeats; i++)); do
    rm -rf "$work/run"
    rates+=("$("$@" --out "$work/run" | sed -nE 's/.* ([0-9.e+-]+) it\/s$/\1/p')")
  done
  printf '%s\n' "${rates[@]}" | sort -g | sed -n "$(((repeats + 1) / 2))p" >"$work/$label"
  echo "$label: $(cat "$work/$label") it/s (runs: ${rates[*]})"
}

rate one "$metatape" "${run[@]}"
rate two "${launcher[@]}" -np 2 "$metatape" "${run[@]}"
rate two-fast "${launcher[@]}" -np 2 "$metatape" "${run[@]}" --reduction fast
for label in two two-fast; do
  awk -v one="$(cat "$work/one")" -v two="$(cat "$work/$label")" -v l="$label" \
    'BEGIN { printf "%s: speed-up %.2fx, scaling efficiency %.0f%%\n", l, two / one, 50 * two / one }'
done
