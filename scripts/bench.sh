#!/usr/bin/env bash
# Builds and runs the benchmarks with repetitions; prints medians and keeps
# the full JSON in build/bench-engine.json. Close other work first: the
# figures are only as quiet as the machine.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
install_missing_packages
configure_and_build build -Dbuildtype=release >/dev/null
build/bench/bench-engine --benchmark_repetitions="${REPETITIONS:-10}" --benchmark_report_aggregates_only=true \
  --benchmark_out=build/bench-engine.json --benchmark_out_format=json "$@" | grep -E "median|^Run|^[A-Za-z(]|---"
