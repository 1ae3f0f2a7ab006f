// Data movement: strided copies, axis slices, gathers and their scattering
// adjoints. The scatters accumulate with atomicAdd (double atomics need
// compute capability 6.0, below every architecture CUDA 13 builds for).
#include "../scalar_math.hpp"
#include "common.cuh"
#include "kernels.hpp"

namespace metatape::kernels::cuda {
namespace {

// out [n] contiguous; x read at strides (operand 1 of s)
template <class T>
__global__ void strided_copy_kernel(Strided5 s, const T* x, T* out, std::int64_t n) {
  std::int64_t offset[2];
  for (std::int64_t i = global_index(); i < n; i += global_stride()) {
    strided_offsets(s, i, 2, offset);
    out[i] = x[offset[1]];
  }
}

// src [outer, count, inner] -> dst [outer, length, inner] at start
template <class T>
__global__ void into_axis_kernel(const T* src, std::int64_t outer, std::int64_t count, std::int64_t inner, T* dst,
                                 std::int64_t length, std::int64_t start) {
  const std::int64_t n = outer * count * inner;
  for (std::int64_t i = global_index(); i < n; i += global_stride()) {
    const std::int64_t o = i / (count * inner), rest = i % (count * inner);
    dst[(o * length + start) * inner + rest] = src[i];
  }
}

// src [outer, length, inner] at start -> dst [outer, count, inner]
template <class T>
__global__ void from_axis_kernel(const T* src, std::int64_t outer, std::int64_t length, std::int64_t inner,
                                 std::int64_t start, std::int64_t count, T* dst) {
  const std::int64_t n = outer * count * inner;
  for (std::int64_t i = global_index(); i < n; i += global_stride()) {
    const std::int64_t o = i / (count * inner), rest = i % (count * inner);
    dst[i] = src[(o * length + start) * inner + rest];
  }
}

// out [n, row_size] = x[index[r], :]
template <class T>
__global__ void gather_rows_kernel(const T* x, std::int64_t row_size, const std::int64_t* index, std::int64_t n,
                                   T* out) {
  for (std::int64_t i = global_index(); i < n * row_size; i += global_stride())
    out[i] = x[index[i / row_size] * row_size + i % row_size];
}

// out [out_rows, row_size] (zeroed first) += g [n, row_size] at rows index
template <class T>
__global__ void scatter_rows_kernel(const T* g, std::int64_t row_size, const std::int64_t* index, std::int64_t n,
                                    T* out) {
  for (std::int64_t i = global_index(); i < n * row_size; i += global_stride())
    atomicAdd(out + index[i / row_size] * row_size + i % row_size, g[i]);
}

template <class T>
__global__ void take_kernel(const T* x, const std::int64_t* index, std::int64_t n, T* out) {
  for (std::int64_t i = global_index(); i < n; i += global_stride()) out[i] = x[index[i]];
}

// out [n] = i * classes + labels[i], labels clamped into [0, classes)
__global__ void label_positions_kernel(const std::int64_t* labels, std::int64_t n, std::int64_t classes,
                                       std::int64_t* out) {
  for (std::int64_t i = global_index(); i < n; i += global_stride()) out[i] = label_position(i, labels[i], classes);
}

template <class T>
__global__ void scatter_add_kernel(const T* g, const std::int64_t* index, std::int64_t n, T* out) {
  for (std::int64_t i = global_index(); i < n; i += global_stride()) atomicAdd(out + index[i], g[i]);
}

}  // namespace

template <class T>
void strided_copy(int rank, const std::int64_t* shape, const T* x, const std::int64_t* x_strides, T* out) {
  Strided5 s;
  s.rank = rank;
  std::int64_t n = 1;
  for (int d = rank - 1; d >= 0; --d) {
    s.shape[d] = shape[d];
    s.stride[0][d] = n;
    s.stride[1][d] = x_strides[d];
    n *= shape[d];
  }
  if (n == 0) return;
  strided_copy_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(s, x, out, n);
  check_launch("strided_copy_kernel");
}

template <class T>
void copy_into_axis(const T* src, std::int64_t outer, std::int64_t count, std::int64_t inner, T* dst,
                    std::int64_t length, std::int64_t start) {
  const std::int64_t n = outer * count * inner;
  if (n == 0) return;
  into_axis_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(src, outer, count, inner, dst, length, start);
  check_launch("into_axis_kernel");
}

template <class T>
void copy_from_axis(const T* src, std::int64_t outer, std::int64_t length, std::int64_t inner, std::int64_t start,
                    std::int64_t count, T* dst) {
  const std::int64_t n = outer * count * inner;
  if (n == 0) return;
  from_axis_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(src, outer, length, inner, start, count, dst);
  check_launch("from_axis_kernel");
}

template <class T>
void gather_rows(const T* x, std::int64_t row_size, const std::int64_t* index, std::int64_t n, T* out) {
  if (n * row_size == 0) return;
  gather_rows_kernel<T><<<blocks_for(n * row_size), kThreads, 0, stream()>>>(x, row_size, index, n, out);
  check_launch("gather_rows_kernel");
}

template <class T>
void scatter_rows_add(const T* g, std::int64_t row_size, const std::int64_t* index, std::int64_t n, T* out,
                      std::int64_t out_rows) {
  fill<T>(out, out_rows * row_size, T(0));
  if (n * row_size == 0) return;
  scatter_rows_kernel<T><<<blocks_for(n * row_size), kThreads, 0, stream()>>>(g, row_size, index, n, out);
  check_launch("scatter_rows_kernel");
}

template <class T>
void take(const T* x, const std::int64_t* index, std::int64_t n, T* out) {
  if (n == 0) return;
  take_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(x, index, n, out);
  check_launch("take_kernel");
}

template <class T>
void scatter_add(const T* g, const std::int64_t* index, std::int64_t n, T* out, std::int64_t out_numel) {
  fill<T>(out, out_numel, T(0));
  if (n == 0) return;
  scatter_add_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(g, index, n, out);
  check_launch("scatter_add_kernel");
}

void label_positions(const std::int64_t* labels, std::int64_t n, std::int64_t classes, std::int64_t* out) {
  if (n == 0) return;
  label_positions_kernel<<<blocks_for(n), kThreads, 0, stream()>>>(labels, n, classes, out);
  check_launch("label_positions_kernel");
}

#define METATAPE_CUDA_MOVE(T)                                                                                   \
  template void strided_copy<T>(int, const std::int64_t*, const T*, const std::int64_t*, T*);                  \
  template void copy_into_axis<T>(const T*, std::int64_t, std::int64_t, std::int64_t, T*, std::int64_t,        \
                                  std::int64_t);                                                               \
  template void copy_from_axis<T>(const T*, std::int64_t, std::int64_t, std::int64_t, std::int64_t,            \
                                  std::int64_t, T*);
METATAPE_CUDA_MOVE(float)
METATAPE_CUDA_MOVE(double)
METATAPE_CUDA_MOVE(std::int64_t)
#undef METATAPE_CUDA_MOVE

#define METATAPE_CUDA_GATHER(T)                                                                                 \
  template void gather_rows<T>(const T*, std::int64_t, const std::int64_t*, std::int64_t, T*);                 \
  template void scatter_rows_add<T>(const T*, std::int64_t, const std::int64_t*, std::int64_t, T*,             \
                                    std::int64_t);                                                             \
  template void take<T>(const T*, const std::int64_t*, std::int64_t, T*);                                      \
  template void scatter_add<T>(const T*, const std::int64_t*, std::int64_t, T*, std::int64_t);
METATAPE_CUDA_GATHER(float)
METATAPE_CUDA_GATHER(double)
#undef METATAPE_CUDA_GATHER

}  // namespace metatape::kernels::cuda
