// Threading knobs of the CPU backend.
#include "kernels/cpu/gemm.hpp"
#include "metatape/engine.hpp"
#include "metatape/error.hpp"

namespace metatape {

void set_num_threads(int threads) {
  if (threads < 1) throw ValueError("set_num_threads: threads must be >= 1, got " + std::to_string(threads));
  kernels::cpu::set_blas_threads(threads);
}

int num_threads() { return kernels::cpu::blas_threads(); }

}  // namespace metatape
