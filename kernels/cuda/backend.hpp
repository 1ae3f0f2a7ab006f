// The CUDA kernel table: the members of CpuKernels (kernels/cpu/backend.hpp)
// over device memory, each queued on this thread's stream. Plain C++: the
// engine includes it without nvcc, in builds with the CUDA backend.
#pragma once

#include "kernels.hpp"

namespace metatape::kernels::cuda {

struct CudaKernels {
  // --- elementwise (elementwise.cu) ---
  template <class T>
  static void unary(UnaryOp op, const T* x, T* y, std::int64_t n, double param) {
    cuda::unary<T>(op, x, y, n, param);
  }
  template <class T>
  static void multiply_by_mask(UnaryOp op, const T* g, const T* x, T* out, std::int64_t n) {
    cuda::multiply_by_mask<T>(op, g, x, out, n);
  }
  template <class T>
  static void binary(BinaryOp op, int rank, const std::int64_t* shape, const T* a, const std::int64_t* a_strides,
                     const T* b, const std::int64_t* b_strides, T* out) {
    cuda::binary<T>(op, rank, shape, a, a_strides, b, b_strides, out);
  }
  template <class From, class To>
  static void convert(const From* x, To* y, std::int64_t n) {
    cuda::convert<From, To>(x, y, n);
  }
  template <class T>
  static void fill(T* y, std::int64_t n, T value) {
    cuda::fill<T>(y, n, value);
  }
  template <class T>
  static void copy(const T* x, T* y, std::int64_t n) {
    cuda::copy<T>(x, y, n);
  }

  // --- reductions (reduce.cu) ---
  template <class T>
  static void sum_to(int rank, const std::int64_t* in_shape, const T* x, const std::int64_t* out_shape, T* out) {
    cuda::sum_to<T>(rank, in_shape, x, out_shape, out);
  }
  template <class T>
  static void argmax_axis(const T* x, std::int64_t outer, std::int64_t length, std::int64_t inner,
                          std::int64_t* index) {
    cuda::argmax_axis<T>(x, outer, length, inner, index);
  }
  template <class T>
  static void log_softmax(const T* x, T* y, std::int64_t outer, std::int64_t length, std::int64_t inner) {
    cuda::log_softmax<T>(x, y, outer, length, inner);
  }

  // --- data movement (layout.cu) ---
  template <class T>
  static void strided_copy(int rank, const std::int64_t* shape, const T* x, const std::int64_t* x_strides, T* out) {
    cuda::strided_copy<T>(rank, shape, x, x_strides, out);
  }
  template <class T>
  static void copy_into_axis(const T* src, std::int64_t outer, std::int64_t count, std::int64_t inner, T* dst,
                             std::int64_t length, std::int64_t start) {
    cuda::copy_into_axis<T>(src, outer, count, inner, dst, length, start);
  }
  template <class T>
  static void copy_from_axis(const T* src, std::int64_t outer, std::int64_t length, std::int64_t inner,
                             std::int64_t start, std::int64_t count, T* dst) {
    cuda::copy_from_axis<T>(src, outer, length, inner, start, count, dst);
  }
  template <class T>
  static void gather_rows(const T* x, std::int64_t row_size, const std::int64_t* index, std::int64_t n, T* out) {
    cuda::gather_rows<T>(x, row_size, index, n, out);
  }
  template <class T>
  static void scatter_rows_add(const T* g, std::int64_t row_size, const std::int64_t* index, std::int64_t n, T* out,
                               std::int64_t out_rows) {
    cuda::scatter_rows_add<T>(g, row_size, index, n, out, out_rows);
  }
  template <class T>
  static void take(const T* x, const std::int64_t* index, std::int64_t n, T* out) {
    cuda::take<T>(x, index, n, out);
  }
  template <class T>
  static void scatter_add(const T* g, const std::int64_t* index, std::int64_t n, T* out, std::int64_t out_numel) {
    cuda::scatter_add<T>(g, index, n, out, out_numel);
  }
  static void label_positions(const std::int64_t* labels, std::int64_t n, std::int64_t classes, std::int64_t* out) {
    cuda::label_positions(labels, n, classes, out);
  }

  // --- matrix products (gemm.cu): C_i = op(A_i) op(B_i) for i < count, the
  // i-th matrices stride_* elements apart (0 repeats one) ---
  template <class T>
  static void gemm_batched(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, const T* a,
                           std::int64_t stride_a, const T* b, std::int64_t stride_b, T* c, std::int64_t stride_c,
                           std::int64_t count) {
    cuda::gemm_batched<T>(trans_a, trans_b, m, n, k, a, stride_a, b, stride_b, c, stride_c, count);
  }

  // --- convolution (conv.cu) ---
  static std::int64_t conv_scratch_size(const ConvShape& s) { return cuda::conv_scratch_size(s); }
  template <class T>
  static void conv2d_forward(const ConvShape& s, const T* x, const T* w, T* y, T* scratch) {
    cuda::conv2d_forward<T>(s, x, w, y, scratch);
  }
  template <class T>
  static void conv2d_input_grad(const ConvShape& s, const T* g, const T* w, T* dx, T* scratch) {
    cuda::conv2d_input_grad<T>(s, g, w, dx, scratch);
  }
  template <class T>
  static void conv2d_weight_grad(const ConvShape& s, const T* x, const T* g, T* dw, T* scratch) {
    cuda::conv2d_weight_grad<T>(s, x, g, dw, scratch);
  }

  // --- batch normalisation (norm.cu) ---
  template <class T>
  static void batch_norm_forward(const NormShape& s, const T* x, const T* gamma, const T* beta, T* y) {
    cuda::batch_norm_forward<T>(s, x, gamma, beta, y);
  }
  template <class T>
  static void batch_norm_backward(const NormShape& s, const T* x, const T* gamma, const T* beta, const T* g, T* dx,
                                  T* dgamma, T* dbeta) {
    cuda::batch_norm_backward<T>(s, x, gamma, beta, g, dx, dgamma, dbeta);
  }

  // --- pooling (pool.cu) ---
  template <class T>
  static void max_pool_argmax(const T* x, std::int64_t planes, std::int64_t h, std::int64_t w, const Window2d& win,
                              std::int64_t* index) {
    cuda::max_pool_argmax<T>(x, planes, h, w, win, index);
  }
};

}  // namespace metatape::kernels::cuda
