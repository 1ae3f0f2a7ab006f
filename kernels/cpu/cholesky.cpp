// Cholesky factorisation (LAPACK potrf through LAPACKE) and triangular solves
// (BLAS trsm), one call per matrix of a batch.
//
// A row-major matrix is the column-major view of its transpose, and A is
// symmetric: factoring the column-major view's upper triangle (A = UᵀU)
// reads the row-major lower triangle and leaves L = Uᵀ there, with no copy
// (LAPACKE's row-major interface would transpose into a buffer and back).
#include <cblas.h>
#include <lapacke.h>

#include <type_traits>

#include "kernels.hpp"

namespace metatape::kernels::cpu {

template <class T>
std::int64_t cholesky_batched(T* a, std::int64_t n, std::int64_t count, std::int64_t* info) {
  const auto dim = static_cast<lapack_int>(n);
  for (std::int64_t i = 0; i < count; ++i) {
    T* m = a + i * n * n;
    lapack_int status = 0;
    if constexpr (std::is_same_v<T, float>)
      status = LAPACKE_spotrf(LAPACK_COL_MAJOR, 'U', dim, m, dim > 0 ? dim : 1);
    else
      status = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'U', dim, m, dim > 0 ? dim : 1);
    if (status != 0) {
      *info = status;
      return i;
    }
    // potrf leaves the other triangle as it was.
    for (std::int64_t r = 0; r < n; ++r)
      for (std::int64_t c = r + 1; c < n; ++c) m[r * n + c] = T(0);
  }
  return -1;
}

template <class T>
void trsm_lower_batched(bool transpose, std::int64_t n, std::int64_t k, const T* l, T* b, std::int64_t count) {
  if (n == 0 || k == 0) return;
  const auto trans = transpose ? CblasTrans : CblasNoTrans;
  const auto N = static_cast<blasint>(n), K = static_cast<blasint>(k);
  for (std::int64_t i = 0; i < count; ++i) {
    if constexpr (std::is_same_v<T, float>)
      cblas_strsm(CblasRowMajor, CblasLeft, CblasLower, trans, CblasNonUnit, N, K, 1.0f, l + i * n * n, N,
                  b + i * n * k, K);
    else
      cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, trans, CblasNonUnit, N, K, 1.0, l + i * n * n, N, b + i * n * k,
                  K);
  }
}

template std::int64_t cholesky_batched<float>(float*, std::int64_t, std::int64_t, std::int64_t*);
template std::int64_t cholesky_batched<double>(double*, std::int64_t, std::int64_t, std::int64_t*);
template void trsm_lower_batched<float>(bool, std::int64_t, std::int64_t, const float*, float*, std::int64_t);
template void trsm_lower_batched<double>(bool, std::int64_t, std::int64_t, const double*, double*, std::int64_t);

}  // namespace metatape::kernels::cpu
