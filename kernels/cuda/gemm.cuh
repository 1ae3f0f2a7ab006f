// Internal to the CUDA kernels: the strided-batched GEMM,
// C_i = alpha op(A_i) op(B_i) + beta C_i, row-major (conv.cu uses the beta).
// The C_i must tile one span (stride_c == m n, or 0 with count 1): with k = 0
// the whole span is scaled by beta, gaps included.
#pragma once

#include <cstdint>

namespace metatape::kernels::cuda {

template <class T>
void gemm_strided(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
                  std::int64_t stride_a, const T* b, std::int64_t stride_b, T beta, T* c, std::int64_t stride_c,
                  std::int64_t count);

}  // namespace metatape::kernels::cuda
