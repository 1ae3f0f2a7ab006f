// Cholesky factorisation (cuSOLVER potrf) and triangular solves (cuBLAS
// trsm), one call per matrix of a batch, on this thread's stream.
//
// As on the CPU (kernels/cpu/cholesky.cpp), a row-major matrix is the
// column-major view of its transpose: potrf on the view's upper triangle
// reads the row-major lower one and leaves L there; a row-major solve
// op(L) X = B is the column-major Xᵀ op(L)ᵀ = Bᵀ, a right-side solve with
// the view of L, which is upper.
#include <cusolverDn.h>

#include <string>
#include <thread>
#include <vector>

#include "common.cuh"
#include "kernels.hpp"
#include "runtime.hpp"

namespace metatape::kernels::cuda {
namespace {

// Device memory from this thread's pool, given back when it goes out of
// scope (stream-ordered: work queued before the release still sees it).
class Scratch {
 public:
  explicit Scratch(std::size_t bytes) { data_ = device_allocate(bytes > 0 ? bytes : 1, &capacity_, &owner_); }
  ~Scratch() { device_release(data_, capacity_, owner_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void* get() const { return data_; }

 private:
  void* data_ = nullptr;
  std::size_t capacity_ = 0;
  void* owner_ = nullptr;
};

// Zeroes the strict upper triangle of `count` row-major n x n matrices.
template <class T>
__global__ void zero_upper_kernel(T* a, std::int64_t n, std::int64_t total) {
  for (std::int64_t i = global_index(); i < total; i += global_stride()) {
    const std::int64_t col = i % n, row = (i / n) % n;
    if (col > row) a[i] = T(0);
  }
}

}  // namespace

template <class T>
std::int64_t cholesky_batched(T* a, std::int64_t n, std::int64_t count, std::int64_t* info) {
  if (n == 0 || count == 0) return -1;
  const int N = static_cast<int>(n);
  cusolverDnHandle_t handle = solver();
  int lwork = 0;
  if constexpr (std::is_same_v<T, float>)
    check(cusolverDnSpotrf_bufferSize(handle, CUBLAS_FILL_MODE_UPPER, N, a, N, &lwork), "cusolverDnSpotrf_bufferSize");
  else
    check(cusolverDnDpotrf_bufferSize(handle, CUBLAS_FILL_MODE_UPPER, N, a, N, &lwork), "cusolverDnDpotrf_bufferSize");
  Scratch work(static_cast<std::size_t>(lwork) * sizeof(T));
  Scratch status(static_cast<std::size_t>(count) * sizeof(int));
  T* w = static_cast<T*>(work.get());
  int* dev_info = static_cast<int*>(status.get());
  for (std::int64_t i = 0; i < count; ++i) {
    if constexpr (std::is_same_v<T, float>)
      check(cusolverDnSpotrf(handle, CUBLAS_FILL_MODE_UPPER, N, a + i * n * n, N, w, lwork, dev_info + i),
            "cusolverDnSpotrf");
    else
      check(cusolverDnDpotrf(handle, CUBLAS_FILL_MODE_UPPER, N, a + i * n * n, N, w, lwork, dev_info + i),
            "cusolverDnDpotrf");
  }
  const std::int64_t total = count * n * n;
  zero_upper_kernel<T><<<blocks_for(total), kThreads, 0, stream()>>>(a, n, total);
  check_launch("zero_upper_kernel");
  std::vector<int> host(static_cast<std::size_t>(count));
  copy_device_to_host(host.data(), dev_info, host.size() * sizeof(int));  // waits for the factorisations
  for (std::int64_t i = 0; i < count; ++i)
    if (host[static_cast<std::size_t>(i)] != 0) {
      *info = host[static_cast<std::size_t>(i)];
      return i;
    }
  return -1;
}

template <class T>
void trsm_lower_batched(bool transpose, std::int64_t n, std::int64_t k, const T* l, T* b, std::int64_t count) {
  if (n == 0 || k == 0) return;
  const int N = static_cast<int>(n), K = static_cast<int>(k);
  const cublasOperation_t op = transpose ? CUBLAS_OP_T : CUBLAS_OP_N;
  const T one = T(1);
  for (std::int64_t i = 0; i < count; ++i) {
    if constexpr (std::is_same_v<T, float>)
      check(cublasStrsm(blas(), CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_UPPER, op, CUBLAS_DIAG_NON_UNIT, K, N, &one,
                        l + i * n * n, N, b + i * n * k, K),
            "cublasStrsm");
    else
      check(cublasDtrsm(blas(), CUBLAS_SIDE_RIGHT, CUBLAS_FILL_MODE_UPPER, op, CUBLAS_DIAG_NON_UNIT, K, N, &one,
                        l + i * n * n, N, b + i * n * k, K),
            "cublasDtrsm");
  }
}

#define METATAPE_CUDA_CHOLESKY(T)                                                           \
  template std::int64_t cholesky_batched<T>(T*, std::int64_t, std::int64_t, std::int64_t*); \
  template void trsm_lower_batched<T>(bool, std::int64_t, std::int64_t, const T*, T*, std::int64_t);
METATAPE_CUDA_CHOLESKY(float)
METATAPE_CUDA_CHOLESKY(double)
#undef METATAPE_CUDA_CHOLESKY

}  // namespace metatape::kernels::cuda
