// Knobs of the backends: CPU threads, GPU TF32.
#include "kernels/cpu/gemm.hpp"
#include "metatape/engine.hpp"
#include "metatape/error.hpp"
#ifdef METATAPE_CUDA
#include "kernels/cuda/runtime.hpp"
#endif

namespace metatape {

void set_num_threads(int threads) {
  if (threads < 1) throw ValueError("set_num_threads: threads must be >= 1, got " + std::to_string(threads));
  kernels::cpu::set_blas_threads(threads);
}

int num_threads() { return kernels::cpu::blas_threads(); }

#ifdef METATAPE_CUDA
void set_allow_tf32(bool allow) { kernels::cuda::set_allow_tf32(allow); }
bool allow_tf32() { return kernels::cuda::allow_tf32(); }
#else
void set_allow_tf32(bool) {}
bool allow_tf32() { return false; }
#endif

}  // namespace metatape
