// Knobs of the backends: CPU threads, GPU TF32.
//
// Threads: the CPU kernels' pool (kernels/cpu/parallel.hpp) is the only
// source of compute threads. OpenBLAS runs every product on the thread that
// calls it, and gemm splits a large product over the pool itself; were
// OpenBLAS left at its own default (one thread per core), a product called
// from a pool thread would start OpenBLAS's threads too, n x n threads on n
// cores.
//
// What decides the count, first match wins: set_num_threads (the CLI's
// --threads, default 1); METATAPE_NUM_THREADS in the environment when the
// library loads; 1. OPENBLAS_NUM_THREADS (or GOTO_NUM_THREADS,
// OMP_NUM_THREADS, which OpenBLAS also reads) never changes it: the variable
// only sets how many threads OpenBLAS's pthreads build starts when *it*
// loads, before any code of ours runs, and those threads then sleep unused
// because OpenBLAS is set to one thread right after. Setting
// OPENBLAS_NUM_THREADS=1 saves starting them at all.
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <system_error>
#include <thread>

#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/parallel.hpp"
#include "kernels/cpu/small_gemm.hpp"
#include "metatape/engine.hpp"
#include "metatape/error.hpp"
#ifdef METATAPE_CUDA
#include "kernels/cuda/runtime.hpp"
#endif

namespace metatape {
namespace {

// METATAPE_NUM_THREADS as a thread count, or 0 when unset. A value that is
// not an integer in [1, max_num_threads()] is reported on stderr and
// ignored: this runs while the library loads, where an exception would
// terminate the program before main.
int threads_from_environment() {
  const char* text = std::getenv("METATAPE_NUM_THREADS");
  if (text == nullptr || *text == '\0') return 0;
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(text, &end, 10);
  if (errno == 0 && *end == '\0' && value >= 1 && value <= max_num_threads()) return static_cast<int>(value);
  std::fprintf(stderr, "metatape: ignoring METATAPE_NUM_THREADS=%s: expected an integer from 1 to %d\n", text,
               max_num_threads());
  return 0;
}

// At load: OpenBLAS to one thread, then the pool to the environment's count.
[[maybe_unused]] const bool configured_at_load = [] {
  kernels::cpu::set_blas_single_threaded();
  if (const int threads = threads_from_environment(); threads > 0) {
    try {
      kernels::cpu::set_threads(threads);
    } catch (const std::system_error& e) {
      std::fprintf(stderr, "metatape: METATAPE_NUM_THREADS=%d: could not start the threads (%s); using 1\n", threads,
                   e.what());
    }
  }
  return true;
}();

}  // namespace

int max_num_threads() { return 4 * static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

void set_num_threads(int threads) {
  if (threads < 1 || threads > max_num_threads())
    throw ValueError("set_num_threads: threads must be >= 1 and <= " + std::to_string(max_num_threads()) +
                     " (4 x the hardware threads), got " + std::to_string(threads));
  // Resizing the pool from one of its own chunks would wait on itself.
  if (kernels::cpu::in_parallel_region())
    throw ValueError("set_num_threads: called from inside a parallel kernel; call it between kernels");
  // Again here: an embedder may have raised OpenBLAS's count since load.
  kernels::cpu::set_blas_single_threaded();
  try {
    kernels::cpu::set_threads(threads);
  } catch (const std::system_error& e) {
    throw DeviceError("set_num_threads: could not start " + std::to_string(threads) + " threads: " + e.what());
  }
}

int num_threads() { return kernels::cpu::threads(); }

CpuGemmKernels cpu_gemm_kernels() {
  return {kernels::cpu::blas_core_name(), kernels::cpu::small_gemm_isa_name(kernels::cpu::small_gemm_isa())};
}

void for_each_on_threads(std::int64_t n, const std::function<void(std::int64_t)>& body) {
  kernels::cpu::parallel_for_unsplit(n, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) body(i);
  });
}

#ifdef METATAPE_CUDA
void set_allow_tf32(bool allow) { kernels::cuda::set_allow_tf32(allow); }
bool allow_tf32() { return kernels::cuda::allow_tf32(); }
#else
void set_allow_tf32(bool) {}
bool allow_tf32() { return false; }
#endif

}  // namespace metatape
