// Elementwise kernels: grid-stride loops, one element per thread per
// iteration. The op code is a kernel argument: every thread takes the same
// branch, so the switch costs nothing next to the memory traffic.
#include "../scalar_math.hpp"
#include "common.cuh"
#include "kernels.hpp"

namespace metatape::kernels::cuda {
namespace {

// The op's formula (scalar_math.hpp). Every thread takes the same branch.
template <class T>
__device__ T apply_unary(UnaryOp op, T v, T p) {
  return with_unary_op(op, [&]<UnaryOp Op>(std::integral_constant<UnaryOp, Op>) { return unary_value<Op>(v, p); });
}

// x, y [n]
template <class T>
__global__ void unary_kernel(UnaryOp op, const T* x, T* y, std::int64_t n, T p) {
  for (std::int64_t i = global_index(); i < n; i += global_stride()) y[i] = apply_unary(op, x[i], p);
}

// g, x, out [n]: out = g · step(x) or g · sign(x)
template <class T>
__global__ void mask_kernel(bool sign, const T* g, const T* x, T* out, std::int64_t n) {
  for (std::int64_t i = global_index(); i < n; i += global_stride()) {
    out[i] = g[i] * (sign ? kernels::sign(x[i]) : step(x[i]));
  }
}

// x, y, out [n]: out = x + y · p, the product rounded before the sum as on
// the CPU (__fmul_rn and __dmul_rn are never contracted into a fused
// multiply-add).
__device__ inline float rounded_product(float a, float b) { return __fmul_rn(a, b); }
__device__ inline double rounded_product(double a, double b) { return __dmul_rn(a, b); }
template <class T>
__global__ void add_scaled_kernel(const T* x, const T* y, T* out, std::int64_t n, T p) {
  for (std::int64_t i = global_index(); i < n; i += global_stride()) out[i] = x[i] + rounded_product(y[i], p);
}

template <class T>
__device__ T apply_binary(BinaryOp op, T a, T b) {
  return with_binary_op(op, [&]<BinaryOp Op>(std::integral_constant<BinaryOp, Op>) { return binary_value<Op>(a, b); });
}

// out [n] (contiguous); a, b read at broadcast strides (operands 1 and 2 of s)
template <class T>
__global__ void binary_kernel(BinaryOp op, Strided5 s, const T* a, const T* b, T* out, std::int64_t n) {
  std::int64_t offset[3];
  for (std::int64_t i = global_index(); i < n; i += global_stride()) {
    strided_offsets(s, i, 3, offset);
    out[i] = apply_binary(op, a[offset[1]], b[offset[2]]);
  }
}

// a, b, out [n]: the common case of equal shapes, without index arithmetic
template <class T>
__global__ void binary_flat_kernel(BinaryOp op, const T* a, const T* b, T* out, std::int64_t n) {
  for (std::int64_t i = global_index(); i < n; i += global_stride()) out[i] = apply_binary(op, a[i], b[i]);
}

template <class From, class To>
__global__ void convert_kernel(const From* x, To* y, std::int64_t n) {
  for (std::int64_t i = global_index(); i < n; i += global_stride()) y[i] = static_cast<To>(x[i]);
}

template <class T>
__global__ void fill_kernel(T* y, std::int64_t n, T value) {
  for (std::int64_t i = global_index(); i < n; i += global_stride()) y[i] = value;
}

}  // namespace

template <class T>
void unary(UnaryOp op, const T* x, T* y, std::int64_t n, double param) {
  if (n == 0) return;
  unary_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(op, x, y, n, static_cast<T>(param));
  check_launch("unary_kernel");
}

template <class T>
void multiply_by_mask(UnaryOp op, const T* g, const T* x, T* out, std::int64_t n) {
  if (n == 0) return;
  mask_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(op == UnaryOp::sign, g, x, out, n);
  check_launch("mask_kernel");
}

template <class T>
void add_scaled(const T* x, const T* y, T* out, std::int64_t n, double param) {
  if (n == 0) return;
  add_scaled_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(x, y, out, n, static_cast<T>(param));
  check_launch("add_scaled_kernel");
}

template <class T>
void binary(BinaryOp op, int rank, const std::int64_t* shape, const T* a, const std::int64_t* a_strides, const T* b,
            const std::int64_t* b_strides, T* out) {
  Strided5 s;
  s.rank = rank;
  std::int64_t n = 1;
  bool flat = true;
  for (int d = rank - 1; d >= 0; --d) {
    s.shape[d] = shape[d];
    s.stride[0][d] = n;  // the output is contiguous
    s.stride[1][d] = a_strides[d];
    s.stride[2][d] = b_strides[d];
    flat = flat && (shape[d] == 1 || (a_strides[d] == n && b_strides[d] == n));
    n *= shape[d];
  }
  if (n == 0) return;
  if (flat) {
    binary_flat_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(op, a, b, out, n);
    check_launch("binary_flat_kernel");
  } else {
    binary_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(op, s, a, b, out, n);
    check_launch("binary_kernel");
  }
}

template <class From, class To>
void convert(const From* x, To* y, std::int64_t n) {
  if (n == 0) return;
  convert_kernel<From, To><<<blocks_for(n), kThreads, 0, stream()>>>(x, y, n);
  check_launch("convert_kernel");
}

template <class T>
void fill(T* y, std::int64_t n, T value) {
  if (n == 0) return;
  fill_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(y, n, value);
  check_launch("fill_kernel");
}

template <class T>
void copy(const T* x, T* y, std::int64_t n) {
  if (n == 0) return;
  check(cudaMemcpyAsync(y, x, static_cast<std::size_t>(n) * sizeof(T), cudaMemcpyDeviceToDevice, stream()),
        "cudaMemcpyAsync (copy)");
}

#define METATAPE_CUDA_FLOAT(T)                                                                         \
  template void unary<T>(UnaryOp, const T*, T*, std::int64_t, double);                                 \
  template void multiply_by_mask<T>(UnaryOp, const T*, const T*, T*, std::int64_t);                    \
  template void add_scaled<T>(const T*, const T*, T*, std::int64_t, double);                           \
  template void binary<T>(BinaryOp, int, const std::int64_t*, const T*, const std::int64_t*, const T*, \
                          const std::int64_t*, T*);
METATAPE_CUDA_FLOAT(float)
METATAPE_CUDA_FLOAT(double)
#undef METATAPE_CUDA_FLOAT

template void convert<float, double>(const float*, double*, std::int64_t);
template void convert<double, float>(const double*, float*, std::int64_t);
template void convert<float, float>(const float*, float*, std::int64_t);
template void convert<double, double>(const double*, double*, std::int64_t);
template void fill<float>(float*, std::int64_t, float);
template void fill<double>(double*, std::int64_t, double);
template void fill<std::int64_t>(std::int64_t*, std::int64_t, std::int64_t);
template void copy<float>(const float*, float*, std::int64_t);
template void copy<double>(const double*, double*, std::int64_t);
template void copy<std::int64_t>(const std::int64_t*, std::int64_t*, std::int64_t);

}  // namespace metatape::kernels::cuda
