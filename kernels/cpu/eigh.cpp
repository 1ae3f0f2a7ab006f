// Symmetric eigendecomposition through LAPACKE's ?syevd, one matrix at a
// time (LAPACK has no batched driver; the batch is the caller's loop).
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels.hpp"

namespace metatape::kernels::cpu {

std::int64_t eigh_scratch_size(std::int64_t, std::int64_t, bool) { return 0; }

template <class T>
void eigh_batched(const T* a, std::int64_t n, std::int64_t count, T* w, T* v, T*, std::int64_t* info) {
  if (n == 0) return;
  const auto dim = static_cast<lapack_int>(n);
  for (std::int64_t b = 0; b < count; ++b) {
    const T* ab = a + b * n * n;
    T* vb = v + b * n * n;
    // The symmetric part, halves added: exact (no rounding, no overflow) for
    // an input that is already symmetric.
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < n; ++j) vb[i * n + j] = T(0.5) * ab[i * n + j] + T(0.5) * ab[j * n + i];
    lapack_int status;
    if constexpr (std::is_same_v<T, float>)
      status = LAPACKE_ssyevd(LAPACK_ROW_MAJOR, 'V', 'L', dim, vb, dim, w + b * n);
    else
      status = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'L', dim, vb, dim, w + b * n);
    info[b] = status;
  }
}

template <class T>
void eigh_gap_mask(const T* w, std::int64_t n, std::int64_t count, double rel_tol, T* mask) {
  for (std::int64_t b = 0; b < count; ++b) {
    const T* wb = w + b * n;
    double scale = 0;
    for (std::int64_t k = 0; k < n; ++k) scale = std::max(scale, std::abs(static_cast<double>(wb[k])));
    const double tol = rel_tol * scale;
    T* mb = mask + b * n * n;
    for (std::int64_t j = 0; j < n; ++j)
      for (std::int64_t k = 0; k < n; ++k)
        mb[j * n + k] = std::abs(static_cast<double>(wb[k]) - static_cast<double>(wb[j])) > tol ? T(1) : T(0);
  }
}

template void eigh_batched<float>(const float*, std::int64_t, std::int64_t, float*, float*, float*, std::int64_t*);
template void eigh_batched<double>(const double*, std::int64_t, std::int64_t, double*, double*, double*, std::int64_t*);
template void eigh_gap_mask<float>(const float*, std::int64_t, std::int64_t, double, float*);
template void eigh_gap_mask<double>(const double*, std::int64_t, std::int64_t, double, double*);

}  // namespace metatape::kernels::cpu
