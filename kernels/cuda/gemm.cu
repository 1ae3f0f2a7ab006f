// Matrix products through cuBLAS. cuBLAS is column-major; a row-major
// C = op(A) op(B) is the column-major Cᵀ = op(B)ᵀ op(A)ᵀ, so the operands
// are passed swapped and no transpose is ever copied.
#include "../scalar_math.hpp"
#include "common.cuh"
#include "gemm.cuh"
#include "kernels.hpp"

namespace metatape::kernels::cuda {

template <class T>
void gemm_strided(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
                  std::int64_t stride_a, const T* b, std::int64_t stride_b, T beta, T* c, std::int64_t stride_c,
                  std::int64_t count) {
  if (m == 0 || n == 0 || count == 0) return;
  if (k == 0) {  // an empty sum: C_i = beta C_i, as the CPU's gemm (cuBLAS refuses the ld of 0)
    const std::int64_t span = (count - 1) * stride_c + m * n;  // callers' C_i are contiguous m x n blocks
    if (beta == T(0))
      fill<T>(c, span, T(0));
    else if (beta != T(1))
      unary<T>(UnaryOp::scale, c, c, span, static_cast<double>(beta));
    return;
  }
  const int lda = static_cast<int>(trans_a ? m : k), ldb = static_cast<int>(trans_b ? k : n);
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int M = static_cast<int>(m), N = static_cast<int>(n), K = static_cast<int>(k);
  if constexpr (std::is_same_v<T, float>) {
    check(cublasSgemmStridedBatched(blas(), op_b, op_a, N, M, K, &alpha, b, ldb, stride_b, a, lda, stride_a, &beta, c,
                                    N, stride_c, static_cast<int>(count)),
          "cublasSgemmStridedBatched");
  } else {
    check(cublasDgemmStridedBatched(blas(), op_b, op_a, N, M, K, &alpha, b, ldb, stride_b, a, lda, stride_a, &beta, c,
                                    N, stride_c, static_cast<int>(count)),
          "cublasDgemmStridedBatched");
  }
}

template <class T>
void gemm_batched(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, const T* a,
                  std::int64_t stride_a, const T* b, std::int64_t stride_b, T* c, std::int64_t stride_c,
                  std::int64_t count) {
  gemm_strided<T>(trans_a, trans_b, m, n, k, T(1), a, stride_a, b, stride_b, T(0), c, stride_c, count);
}

template <class T>
void gemm_batched_accumulate(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, const T* a,
                             std::int64_t stride_a, const T* b, std::int64_t stride_b, T* c, std::int64_t stride_c,
                             std::int64_t count) {
  gemm_strided<T>(trans_a, trans_b, m, n, k, T(1), a, stride_a, b, stride_b, T(1), c, stride_c, count);
}

// C_i (count blocks of m x n, stride_c apart) = relu(C_i + bias_i) in place,
// bias_i a row of n (null: none): the bits of binary add then unary relu.
template <class T>
__global__ void finish_layer_kernel(std::int64_t m, std::int64_t n, const T* bias, std::int64_t stride_bias, bool relu,
                                    T* c, std::int64_t stride_c, std::int64_t total) {
  for (std::int64_t e = global_index(); e < total; e += global_stride()) {
    const std::int64_t i = e / (m * n), j = e % n;
    T& out = c[i * stride_c + e % (m * n)];
    T v = out;
    if (bias != nullptr) v = v + bias[i * stride_bias + j];
    out = relu ? kernels::relu(v) : v;
  }
}

template <class T>
void linear_batched(std::int64_t m, std::int64_t n, std::int64_t k, const T* a, std::int64_t stride_a, const T* b,
                    std::int64_t stride_b, const T* bias, std::int64_t stride_bias, bool relu, T* c,
                    std::int64_t stride_c, std::int64_t count) {
  gemm_strided<T>(false, false, m, n, k, T(1), a, stride_a, b, stride_b, T(0), c, stride_c, count);
  const std::int64_t total = count * m * n;
  if (total == 0 || (bias == nullptr && !relu)) return;
  finish_layer_kernel<T>
      <<<blocks_for(total), kThreads, 0, stream()>>>(m, n, bias, stride_bias, relu, c, stride_c, total);
  check_launch("finish_layer_kernel");
}

#define METATAPE_CUDA_GEMM(T)                                                                                     \
  template void gemm_strided<T>(bool, bool, std::int64_t, std::int64_t, std::int64_t, T, const T*, std::int64_t, \
                                const T*, std::int64_t, T, T*, std::int64_t, std::int64_t);                     \
  template void gemm_batched<T>(bool, bool, std::int64_t, std::int64_t, std::int64_t, const T*, std::int64_t,    \
                                const T*, std::int64_t, T*, std::int64_t, std::int64_t);                     \
  template void gemm_batched_accumulate<T>(bool, bool, std::int64_t, std::int64_t, std::int64_t, const T*,        \
                                           std::int64_t, const T*, std::int64_t, T*, std::int64_t, std::int64_t); \
  template void linear_batched<T>(std::int64_t, std::int64_t, std::int64_t, const T*, std::int64_t, const T*,     \
                                  std::int64_t, const T*, std::int64_t, bool, T*, std::int64_t, std::int64_t);
METATAPE_CUDA_GEMM(float)
METATAPE_CUDA_GEMM(double)
#undef METATAPE_CUDA_GEMM

}  // namespace metatape::kernels::cuda
