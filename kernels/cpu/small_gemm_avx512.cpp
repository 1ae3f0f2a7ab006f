// The small-product and implicit-GEMM kernels for AVX-512F (this file is
// compiled with -mavx512f; small_gemm.cpp calls them only where the CPU has
// it), over the vector traits of avx512_vectors.hpp.
#include "avx512_vectors.hpp"
#include "implicit_gemm_tiles.hpp"
#include "small_gemm_tiles.hpp"

namespace metatape::kernels::cpu {

METATAPE_DEFINE_SMALL_GEMM_KERNEL(small_gemm_avx512, Avx512)
METATAPE_DEFINE_IMPLICIT_GEMM_KERNEL(implicit_gemm_avx512, Avx512)

}  // namespace metatape::kernels::cpu
