// Symmetric eigendecomposition through cuSOLVER's ?syevd, one matrix at a
// time on this thread's stream. cuSOLVER is column-major: the symmetric part
// is the same matrix in either order, and its eigenvectors come back as
// columns of a column-major matrix, which a cuBLAS transpose turns into
// columns of the row-major result.
#include <cusolverDn.h>

#include <string>
#include <thread>

#include "common.cuh"
#include "kernels.hpp"

namespace metatape::kernels::cuda {
namespace {

template <class T>
int syevd_workspace(int n) {
  int lwork = 0;
  if constexpr (std::is_same_v<T, float>)
    check(cusolverDnSsyevd_bufferSize(solver(), CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, nullptr, n,
                                      nullptr, &lwork),
          "cusolverDnSsyevd_bufferSize");
  else
    check(cusolverDnDsyevd_bufferSize(solver(), CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, nullptr, n,
                                      nullptr, &lwork),
          "cusolverDnDsyevd_bufferSize");
  return lwork;
}

// Elements of T that hold `count` ints (the status words), rounded up.
template <class T>
std::int64_t int_slots(std::int64_t count) {
  return (count * static_cast<std::int64_t>(sizeof(int)) + static_cast<std::int64_t>(sizeof(T)) - 1) /
         static_cast<std::int64_t>(sizeof(T));
}

__global__ void widen_status(const int* status, std::int64_t count, std::int64_t* info) {
  for (std::int64_t i = global_index(); i < count; i += global_stride()) info[i] = status[i];
}

// One thread per mask entry; each finds its matrix's scale itself (n reads),
// which costs less than a second launch at the sizes eigh is used for.
template <class T>
__global__ void gap_mask(const T* w, std::int64_t n, std::int64_t count, double rel_tol, T* mask) {
  for (std::int64_t i = global_index(); i < count * n * n; i += global_stride()) {
    const std::int64_t b = i / (n * n), j = (i / n) % n, k = i % n;
    const T* wb = w + b * n;
    double scale = 0;
    for (std::int64_t l = 0; l < n; ++l) scale = fmax(scale, fabs(static_cast<double>(wb[l])));
    mask[i] = fabs(static_cast<double>(wb[k]) - static_cast<double>(wb[j])) > rel_tol * scale ? T(1) : T(0);
  }
}

}  // namespace

std::int64_t eigh_scratch_size(std::int64_t n, std::int64_t count, bool f64) {
  if (n == 0 || count == 0) return 0;
  const int dim = static_cast<int>(n);
  if (f64) return n * n + syevd_workspace<double>(dim) + int_slots<double>(count);
  return n * n + syevd_workspace<float>(dim) + int_slots<float>(count);
}

template <class T>
void eigh_batched(const T* a, std::int64_t n, std::int64_t count, T* w, T* v, T* scratch, std::int64_t* info) {
  if (n == 0 || count == 0) return;
  const int dim = static_cast<int>(n);
  const int lwork = syevd_workspace<T>(dim);
  T* sym = scratch;
  T* work = scratch + n * n;
  int* status = reinterpret_cast<int*>(work + lwork);
  const T half = T(0.5), one = T(1), zero = T(0);
  for (std::int64_t b = 0; b < count; ++b) {
    const T* ab = a + b * n * n;
    T* vb = v + b * n * n;
    if constexpr (std::is_same_v<T, float>) {
      check(cublasSgeam(blas(), CUBLAS_OP_N, CUBLAS_OP_T, dim, dim, &half, ab, dim, &half, ab, dim, sym, dim),
            "cublasSgeam");
      check(cusolverDnSsyevd(solver(), CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, dim, sym, dim, w + b * n, work,
                             lwork, status + b),
            "cusolverDnSsyevd");
      check(cublasSgeam(blas(), CUBLAS_OP_T, CUBLAS_OP_T, dim, dim, &one, sym, dim, &zero, sym, dim, vb, dim),
            "cublasSgeam");
    } else {
      check(cublasDgeam(blas(), CUBLAS_OP_N, CUBLAS_OP_T, dim, dim, &half, ab, dim, &half, ab, dim, sym, dim),
            "cublasDgeam");
      check(cusolverDnDsyevd(solver(), CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, dim, sym, dim, w + b * n, work,
                             lwork, status + b),
            "cusolverDnDsyevd");
      check(cublasDgeam(blas(), CUBLAS_OP_T, CUBLAS_OP_T, dim, dim, &one, sym, dim, &zero, sym, dim, vb, dim),
            "cublasDgeam");
    }
  }
  widen_status<<<blocks_for(count), kThreads, 0, stream()>>>(status, count, info);
  check_launch("widen_status");
}

template <class T>
void eigh_gap_mask(const T* w, std::int64_t n, std::int64_t count, double rel_tol, T* mask) {
  if (n == 0 || count == 0) return;
  gap_mask<T><<<blocks_for(count * n * n), kThreads, 0, stream()>>>(w, n, count, rel_tol, mask);
  check_launch("eigh_gap_mask");
}

template void eigh_batched<float>(const float*, std::int64_t, std::int64_t, float*, float*, float*, std::int64_t*);
template void eigh_batched<double>(const double*, std::int64_t, std::int64_t, double*, double*, double*, std::int64_t*);
template void eigh_gap_mask<float>(const float*, std::int64_t, std::int64_t, double, float*);
template void eigh_gap_mask<double>(const double*, std::int64_t, std::int64_t, double, double*);

}  // namespace metatape::kernels::cuda
