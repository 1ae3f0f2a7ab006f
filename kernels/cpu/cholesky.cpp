// Cholesky factorisation (LAPACK potrf, OpenBLAS's own) and triangular
// solves (BLAS trsm), one call per matrix of a batch.
//
// A row-major matrix is the column-major view of its transpose, and A is
// symmetric: factoring the column-major view's upper triangle (A = UᵀU)
// reads the row-major lower triangle and leaves L = Uᵀ there, with no copy.
#include <cblas.h>

#include <cmath>
#include <type_traits>

#include "kernels.hpp"
#include "lapack.hpp"

namespace metatape::kernels::cpu {
namespace {

// Whether the row-major lower triangle of the n x n matrix m (what potrf
// reads) holds NaN. potrf itself may stop at an earlier minor, or report the
// NaN as a minor that is not positive: this names it for what it is.
template <class T>
bool lower_has_nan(const T* m, std::int64_t n) {
  for (std::int64_t r = 0; r < n; ++r)
    for (std::int64_t c = 0; c <= r; ++c)
      if (std::isnan(m[r * n + c])) return true;
  return false;
}

// LAPACKE's NaN check reported its argument 4 (the matrix).
constexpr std::int64_t kNanInfo = -4;

}  // namespace

template <class T>
std::int64_t cholesky_batched(T* a, std::int64_t n, std::int64_t count, std::int64_t* info) {
  const auto dim = static_cast<lapack::integer>(n);
  for (std::int64_t i = 0; i < count; ++i) {
    T* m = a + i * n * n;
    const std::int64_t status = lower_has_nan(m, n) ? kNanInfo : lapack::potrf('U', dim, m, dim > 0 ? dim : 1);
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
