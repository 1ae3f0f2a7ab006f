#!/usr/bin/env bash
# Everything the CUDA backend needs a GPU for, in one run on a GPU machine:
# build with the CUDA backend (libmetatape-cuda.so, loaded by libmetatape on
# first use), run the whole suite (the cuda suite included),
# compute-sanitizer memcheck and racecheck on the CUDA suite, then the GPU
# benchmarks of metatape, PyTorch and JAX on the same GPU, and a report.
#
#   scripts/gpu_check.sh [OUT_DIR]        (default: $OUT, else build-gpu/out)
#
# On a GPU machine without Debian's libraries, carry the packages that
# scripts/gpu_env.sh lists in .devdeps/: it unpacks them and finds them.
#
# Measured on one NVIDIA H200 machine (16 cores, 2026-12-04), in pieces:
# the build 63 s, the CUDA suite 10 s, memcheck 5-15 s and racecheck about
# 30 s on the cases below, bench-cuda 10 s (--repeats 20), the PyTorch peer
# 55 s and the JAX peer 50 s; the whole CPU suite was not timed there.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-build-gpu/out}}
mkdir -p "$out"
# shellcheck source=scripts/gpu_env.sh
source scripts/gpu_env.sh
status=0
step() { echo "== $*"; }

step "GPU" | tee "$out/summary.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$out/summary.txt"

step "build (build-gpu, CUDA enabled)"
if ! { meson setup build-gpu -Dbuildtype=release -Dcuda=enabled -Dwerror=false >"$out/configure.log" 2>&1 ||
       meson configure build-gpu -Dcuda=enabled >>"$out/configure.log" 2>&1; } ||
   ! ninja -C build-gpu >"$out/build.log" 2>&1; then
  echo "build failed: see build.log" | tee -a "$out/summary.txt"
  tail -30 "$out/build.log"
  exit 1
fi
build-gpu/tools/metatape info | tee -a "$out/summary.txt"

# libmetatape.so links no CUDA library; the backend (libmetatape-cuda.so,
# beside it) is loaded by `metatape info` above, which pays for it here.
step "footprint" | tee -a "$out/summary.txt"
readelf -d build-gpu/engine/libmetatape.so | sed -n 's/.*(NEEDED).*\[\(.*\)\]/libmetatape.so needs \1/p' |
  tee -a "$out/summary.txt"
if [ -x /usr/bin/time ]; then
  /usr/bin/time -f "metatape info (CUDA loaded): peak %M KiB resident" build-gpu/tools/metatape info 2>&1 >/dev/null |
    tee -a "$out/summary.txt"
fi

step "tests (the whole suite, cuda included)"
meson test -C build-gpu --print-errorlogs --num-processes 4 >"$out/tests.log" 2>&1 || status=1
grep -E "^ *[0-9]+/[0-9]+ |^(Ok|Fail|Skipped):" "$out/tests.log" | tee -a "$out/summary.txt"

step "compute-sanitizer on the CUDA suite"
for tool in memcheck racecheck; do
  # The float64 gradchecks are long under the sanitizer: the op-by-op and
  # MAML comparisons exercise every kernel.
  compute-sanitizer --tool "$tool" --error-exitcode 99 build-gpu/tests/metatape-cuda-tests \
    --test-case="every op on the GPU matches the CPU*,exact MAML*,copies*,a captured step*,a step that reads*" >"$out/$tool.log" 2>&1
  code=$?
  echo "$tool: exit $code ($(grep -cE "ERROR SUMMARY: 0 errors|RACECHECK SUMMARY: 0 hazards" "$out/$tool.log") clean summaries)" |
    tee -a "$out/summary.txt"
  [ $code -eq 0 ] || status=1
done

step "benchmarks: metatape, PyTorch, JAX on this GPU"
build-gpu/bench/bench-cuda >"$out/bench_metatape.jsonl" 2>"$out/bench_metatape.err" || status=1
python3 bench/peers/maml_torch.py >"$out/bench_torch.jsonl" 2>"$out/bench_torch.err" || status=1
python3 bench/peers/maml_jax.py >"$out/bench_jax.jsonl" 2>"$out/bench_jax.err" || status=1
python3 bench/peers/report.py "$out"/bench_*.jsonl | tee "$out/report.md"
exit $status
