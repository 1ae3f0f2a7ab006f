#include "gemm.hpp"

#include <cblas.h>

#include <type_traits>

#include "kernels.hpp"

namespace metatape::kernels::cpu {
namespace {

// Scales C by beta where a product with k = 0 contributes nothing; BLAS
// implementations differ on whether they touch C then.
template <class T>
void scale_rows(std::int64_t m, std::int64_t n, T beta, T* c, std::int64_t ldc) {
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
}

}  // namespace

template <class T>
void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
          std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) return scale_rows(m, n, beta, c, ldc);
  const auto ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
  const auto dims = [](std::int64_t v) { return static_cast<blasint>(v); };
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, ta, tb, dims(m), dims(n), dims(k), alpha, a, dims(lda), b, dims(ldb), beta, c,
                dims(ldc));
  else
    cblas_dgemm(CblasRowMajor, ta, tb, dims(m), dims(n), dims(k), alpha, a, dims(lda), b, dims(ldb), beta, c,
                dims(ldc));
}

template <class T>
void gemm_batched(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, const T* a,
                  std::int64_t stride_a, const T* b, std::int64_t stride_b, T* c, std::int64_t stride_c,
                  std::int64_t count) {
  const std::int64_t lda = trans_a ? m : k, ldb = trans_b ? k : n;
  for (std::int64_t i = 0; i < count; ++i)
    gemm<T>(trans_a, trans_b, m, n, k, T(1), a + i * stride_a, lda, b + i * stride_b, ldb, T(0), c + i * stride_c, n);
}

template void gemm<float>(bool, bool, std::int64_t, std::int64_t, std::int64_t, float, const float*, std::int64_t,
                          const float*, std::int64_t, float, float*, std::int64_t);
template void gemm<double>(bool, bool, std::int64_t, std::int64_t, std::int64_t, double, const double*, std::int64_t,
                           const double*, std::int64_t, double, double*, std::int64_t);

template void gemm_batched<float>(bool, bool, std::int64_t, std::int64_t, std::int64_t, const float*, std::int64_t,
                                  const float*, std::int64_t, float*, std::int64_t, std::int64_t);
template void gemm_batched<double>(bool, bool, std::int64_t, std::int64_t, std::int64_t, const double*, std::int64_t,
                                   const double*, std::int64_t, double*, std::int64_t, std::int64_t);

void set_blas_threads(int threads) { openblas_set_num_threads(threads < 1 ? 1 : threads); }
int blas_threads() { return openblas_get_num_threads(); }

}  // namespace metatape::kernels::cpu
