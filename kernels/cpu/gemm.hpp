// Matrix products through OpenBLAS. Row-major; a transpose is a flag, never
// a copy. T is float or double.
#pragma once

#include <cstdint>

namespace metatape::kernels::cpu {

// C (m x n, leading dimension ldc) = alpha * op(A) op(B) + beta * C, where
// op(A) is m x k (A stored k x m when trans_a) and op(B) is k x n.
// Dimensions must fit in a 32-bit int (the engine checks).
template <class T>
void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
          std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc);

// Threads OpenBLAS may use (>= 1).
void set_blas_threads(int threads);
int blas_threads();

}  // namespace metatape::kernels::cpu
