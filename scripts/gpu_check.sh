#!/usr/bin/env bash
# Everything the CUDA backend needs a GPU for, in one run on a GPU machine:
# build with the CUDA backend (libmetatape-cuda.so, loaded by libmetatape on
# first use); the tests that use the GPU; compute-sanitizer memcheck and
# racecheck on the CUDA suite; the GPU benchmarks of metatape, PyTorch and
# JAX on the same GPU and their report; where each MAML step's GPU time goes
# (bench-cuda-kernels); and last the whole suite, CPU tests included.
#
#   scripts/gpu_check.sh [OUT_DIR]        (default: $OUT, else build-gpu/out)
#
# On a GPU machine without Debian's libraries, carry the packages that
# scripts/gpu_env.sh lists in .devdeps/: it unpacks them and finds them.
#
# Measured on one NVIDIA H200 machine (16 cores, 2026-12-04): the build
# 58 s; the CUDA suite 10 s; memcheck and racecheck 54 s together;
# bench-cuda 10 s, the PyTorch peer 47 s, the JAX peer 50-90 s. The whole
# suite took over 300 s there: every test passed but `cli`, which met its
# 300 s limit (23 s on the 2-core development VM; where its time went there
# was not found: OpenBLAS ran its Prescott kernels on that machine).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-build-gpu/out}}
mkdir -p "$out"
# shellcheck source=scripts/gpu_env.sh
source scripts/gpu_env.sh
status=0
step() { echo "== [${SECONDS} s] $*"; }  # seconds since the script started

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

# The GPU's own results come first, so that a lease that ends early still
# holds them; the CPU suite runs last.
step "tests that use the GPU" | tee -a "$out/summary.txt"
gpu_tests=$(meson test -C build-gpu --list 2>/dev/null | sed 's|.* / ||' | grep -xE 'cuda|cuda-backend|footprint|nccl-.*')
# shellcheck disable=SC2086 # one test name per word
meson test -C build-gpu --no-rebuild --print-errorlogs $gpu_tests >"$out/tests-gpu.log" 2>&1 || status=1
grep -E "^ *[0-9]+/[0-9]+ |^(Ok|Fail|Skipped|Timeout):" "$out/tests-gpu.log" | tee -a "$out/summary.txt"

step "compute-sanitizer on the CUDA suite" | tee -a "$out/summary.txt"
for tool in memcheck racecheck; do
  # The float64 gradchecks are long under the sanitizer: the op-by-op and
  # MAML comparisons exercise every kernel. Not "a step that reads values
  # on the host": it fails a graph capture on purpose, and the sanitizer
  # counts the refused calls as errors.
  compute-sanitizer --tool "$tool" --error-exitcode 99 build-gpu/tests/metatape-cuda-tests \
    --test-case="every op on the GPU matches the CPU*,exact MAML*,copies*,a captured step*" >"$out/$tool.log" 2>&1
  code=$?
  echo "$tool: exit $code ($(grep -cE "ERROR SUMMARY: 0 errors|RACECHECK SUMMARY: 0 hazards" "$out/$tool.log") clean summaries)" |
    tee -a "$out/summary.txt"
  [ $code -eq 0 ] || status=1
done

step "benchmarks: metatape, PyTorch, JAX on this GPU" | tee -a "$out/summary.txt"
build-gpu/bench/bench-cuda >"$out/bench_metatape.jsonl" 2>"$out/bench_metatape.err" || status=1
python3 bench/peers/maml_torch.py >"$out/bench_torch.jsonl" 2>"$out/bench_torch.err" || status=1
python3 bench/peers/maml_jax.py >"$out/bench_jax.jsonl" 2>"$out/bench_jax.err" || status=1
python3 bench/peers/report.py "$out"/bench_*.jsonl | tee "$out/report.md"

step "where each step's GPU time goes, kernel by kernel (CUPTI)" | tee -a "$out/summary.txt"
if [ -x build-gpu/bench/bench-cuda-kernels ]; then
  build-gpu/bench/bench-cuda-kernels >"$out/kernels.md" 2>&1 || status=1
  grep -E "^(## |wall )" "$out/kernels.md" | tee -a "$out/summary.txt"
else
  echo "not built: CUPTI was not found" | tee -a "$out/summary.txt"
fi
step "tests (the whole suite)" | tee -a "$out/summary.txt"
meson test -C build-gpu --no-rebuild --print-errorlogs --num-processes 4 >"$out/tests.log" 2>&1 || status=1
grep -E "^ *[0-9]+/[0-9]+ |^(Ok|Fail|Skipped|Timeout):" "$out/tests.log" | tee -a "$out/summary.txt"

step "done, exit $status" | tee -a "$out/summary.txt"
exit $status
