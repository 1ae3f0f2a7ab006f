#!/usr/bin/env bash
# Builds and runs the benchmarks, one thread, medians of repeated runs:
#   bench-engine          per-op overhead, GEMM against raw OpenBLAS, an MLP gradient,
#                         each Conv4 convolution against raw sgemm at its GEMM sizes
#   bench-maml            meta-gradient step time and memory, batched and looped
#   bench-kernel          the empirical NTK, a Hessian-vector product, and the
#                         kernel-adaptation step beside the exact MAML step
#   bench-data            reading Fashion-MNIST and drawing episodes (installs
#                         Debian's dataset-fashion-mnist)
#   bench-maml-libtorch   the same steps (1 and 2 threads), NTK and HVP against libtorch (with
#                         --with-libtorch, which installs Debian's libtorch-dev, about 1 GB)
#   bench-distributed     under mpirun -np 2: all-reduce times, the cost model for many hosts, and
#                         Conv4's meta-iterations per second with 1 and 2 processes (where MPI was built)
# Not run here, for comparing two builds of the library: bench-ab-kernels (their
# CPU kernels alternated in one process) and bench/alternate.sh (a program, round by round).
# Full outputs go to build/bench-*.txt. Close other work first: the figures
# are only as quiet as the machine.
set -euo pipefail
source "$(dirname "$0")/setup.sh"

with_libtorch=0
for arg in "$@"; do
  case "$arg" in
    --with-libtorch) with_libtorch=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done
if ((with_libtorch)); then metatape_packages+=(libtorch-dev); fi
install_missing_packages
install_dataset_packages
# Reconfigure so that meson notices a newly installed libtorch.
configure_and_build build -Dbuildtype=release -Dbenchmarks=enabled >/dev/null
if ((with_libtorch)) && [ ! -x build/bench/bench-maml-libtorch ]; then
  meson setup --reconfigure build >/dev/null
  ninja -C build >/dev/null
fi

export OPENBLAS_NUM_THREADS=1
echo "== bench-engine (medians of 10)"
build/bench/bench-engine --benchmark_repetitions=10 --benchmark_report_aggregates_only=true \
  --benchmark_min_time=0.3 | tee build/bench-engine.txt | grep -E "median"
echo "== bench-maml (medians of 5)"
build/bench/bench-maml --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
  | tee build/bench-maml.txt | grep -E "median"
echo "== bench-kernel (medians of 10)"
build/bench/bench-kernel --benchmark_repetitions=10 --benchmark_report_aggregates_only=true \
  | tee build/bench-kernel.txt | grep -E "median"
echo "== bench-data (medians of 5)"
build/bench/bench-data --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
  | tee build/bench-data.txt | grep -E "median"
if [ -x build/bench/bench-maml-libtorch ]; then
  echo "== bench-maml-libtorch"
  build/bench/bench-maml-libtorch --threads 1 --repeats 21 --only maml | tee build/bench-maml-libtorch.txt
  # Two threads: metatape's pool, and as many OpenBLAS threads for libtorch.
  build/bench/bench-maml-libtorch --threads 2 --repeats 21 --only maml | tee -a build/bench-maml-libtorch.txt
  build/bench/bench-maml-libtorch --threads 1 --repeats 21 --only ntk | tee -a build/bench-maml-libtorch.txt
  build/bench/bench-maml-libtorch --threads 1 --repeats 51 --only hvp | tee -a build/bench-maml-libtorch.txt
elif ((with_libtorch)); then
  echo "bench.sh: libtorch-dev is installed but bench-maml-libtorch was not built" >&2
  exit 1
fi
# The meta-batch over processes (MPI): the all-reduce cost model and the
# Conv4 throughput with 1 and 2 processes (one thread each).
if [ -x build/bench/bench-distributed ]; then
  launcher=(mpirun --oversubscribe)
  [ "$(id -u)" -eq 0 ] && launcher+=(--allow-run-as-root)
  echo "== bench-distributed (2 processes)"
  "${launcher[@]}" -np 2 build/bench/bench-distributed | tee build/bench-distributed.txt
  echo "== distributed throughput (Conv4 5-way 1-shot, meta-batch 32)"
  bench/distributed_throughput.sh build/tools/metatape 3 5 | tee -a build/bench-distributed.txt
fi
