// Symmetric eigendecomposition through LAPACK's ?syevd (OpenBLAS's), one
// matrix at a time (LAPACK has no batched driver; the batch is the caller's
// loop).
//
// The symmetric part S is formed in v, row-major; S is its own transpose, so
// its column-major view is S too and ?syevd reads it in place (lower
// triangle). The eigenvectors come back in the columns of the column-major
// result, which one in-place transposition turns into the columns of the
// row-major v.
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "kernels.hpp"
#include "lapack.hpp"

namespace metatape::kernels::cpu {
namespace {

// LAPACKE's NaN check reported its argument 5 (the matrix).
constexpr std::int64_t kNanInfo = -5;

// ?syevd's workspace for n x n matrices, asked of LAPACK once per batch.
template <class T>
struct SyevdWorkspace {
  std::vector<T> work;
  std::vector<lapack::integer> iwork;

  explicit SyevdWorkspace(lapack::integer n) {
    T work_size = 0;
    lapack::integer iwork_size = 0;
    T dummy_a = 0, dummy_w = 0;
    lapack::syevd('L', n, &dummy_a, n, &dummy_w, &work_size, -1, &iwork_size, -1);
    // The query answers in T, which rounds above 2^24 in float: never ask
    // for less than the documented minimum for eigenvectors,
    // 1 + 6n + 2n² (work) and 3 + 5n (iwork).
    const auto minimum_work = static_cast<std::size_t>(1 + 6 * std::int64_t{n} + 2 * std::int64_t{n} * n);
    const auto minimum_iwork = static_cast<std::size_t>(3 + 5 * std::int64_t{n});
    work.resize(std::max(static_cast<std::size_t>(std::max<T>(work_size, 1)), minimum_work));
    iwork.resize(std::max(static_cast<std::size_t>(std::max<lapack::integer>(iwork_size, 1)), minimum_iwork));
  }
};

template <class T>
void transpose_in_place(T* m, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = i + 1; j < n; ++j) std::swap(m[i * n + j], m[j * n + i]);
}

}  // namespace

std::int64_t eigh_scratch_size(std::int64_t, std::int64_t, bool) { return 0; }

template <class T>
void eigh_batched(const T* a, std::int64_t n, std::int64_t count, T* w, T* v, T*, std::int64_t* info) {
  if (n == 0) return;
  const auto dim = static_cast<lapack::integer>(n);
  SyevdWorkspace<T> ws(dim);
  for (std::int64_t b = 0; b < count; ++b) {
    const T* ab = a + b * n * n;
    T* vb = v + b * n * n;
    // The symmetric part, halves added: exact (no rounding, no overflow) for
    // an input that is already symmetric; and exactly symmetric itself.
    bool nan = false;
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < n; ++j) {
        vb[i * n + j] = T(0.5) * ab[i * n + j] + T(0.5) * ab[j * n + i];
        nan = nan || std::isnan(vb[i * n + j]);
      }
    if (nan) {
      info[b] = kNanInfo;
      continue;
    }
    info[b] = lapack::syevd('L', dim, vb, dim, w + b * n, ws.work.data(), static_cast<lapack::integer>(ws.work.size()),
                            ws.iwork.data(), static_cast<lapack::integer>(ws.iwork.size()));
    transpose_in_place(vb, n);
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
