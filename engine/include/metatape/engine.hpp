// metatape's engine in one include: tensors, ops, the tape and grad().
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "metatape/captured_step.hpp"
#include "metatape/error.hpp"
#include "metatape/functional.hpp"
#include "metatape/ops.hpp"
#include "metatape/random.hpp"
#include "metatape/shape.hpp"
#include "metatape/tape.hpp"
#include "metatape/tensor.hpp"

namespace metatape {

// Threads the CPU kernels use, the calling thread included: one pool for
// the elementwise, reduction and data-movement kernels, convolutions and
// matrix products (OpenBLAS itself is kept at one thread, so the pool is the
// only source of threads). Ops are still recorded and run one at a time per
// tape; a kernel spreads its own work. Results do not depend on the count,
// except where a kernel's header says its summation order does; at a fixed
// count they are bit-reproducible.
//
// The count is set_num_threads's argument, else METATAPE_NUM_THREADS from
// the environment when the library loads, else 1; OPENBLAS_NUM_THREADS does
// not change it. Throws ValueError unless 1 <= threads <= max_num_threads(),
// or when called from inside a kernel's parallel region; DeviceError if the
// threads cannot be started.
void set_num_threads(int threads);
int num_threads();
// 4 x the hardware threads: more only contend.
int max_num_threads();

// What the CPU's matrix products run on, as `metatape info` prints it:
// OpenBLAS's kernel set (its core name; OPENBLAS_CORETYPE in the environment
// can force one) and the instruction set of our small-product kernel
// ("avx512", "avx2", or "none", where OpenBLAS takes every product).
struct CpuGemmKernels {
  std::string blas_core;
  std::string small_products;
};
CpuGemmKernels cpu_gemm_kernels();

// Calls body(i) for every i in [0, n), spread over the CPU threads in
// contiguous runs of i, one run per thread: parallelism over whole
// computations (the tasks of a meta-batch) rather than inside each kernel.
// Each call runs whole on one thread, and every CPU kernel it calls runs on
// that thread alone, as at num_threads() == 1, so what a call computes does
// not depend on the thread count. Each thread records on its own tape: a
// call differentiates what it recorded (inside a TapeScope) and hands back
// detached tensors. While a CapturedStep records on this thread, the calls
// run here, in order. The first exception a call throws is rethrown once the
// others are done. For CPU work: each thread has its own GPU stream, and
// nothing here synchronises them.
void for_each_on_threads(std::int64_t n, const std::function<void(std::int64_t)>& body);

// Let float32 matrix products on the GPU use TF32 (faster on Ampere and
// later; about 1e-3 relative error). Off by default; no effect on the CPU or
// in a build without the CUDA backend.
void set_allow_tf32(bool allow);
bool allow_tf32();

}  // namespace metatape
