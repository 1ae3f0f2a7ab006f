// The CPU kernel table: every kernel the engine calls, as static members, so
// that an op's forward is written once against a table and runs on the CPU
// (this struct) or the GPU (kernels/cuda/backend.hpp's CudaKernels, with the
// same members). Pointers are host memory.
#pragma once

#include <algorithm>
#include <cstring>

#include "conv.hpp"
#include "elementwise.hpp"
#include "gemm.hpp"
#include "layout.hpp"
#include "norm.hpp"
#include "reduce.hpp"
#include "window_ops.hpp"

namespace metatape::kernels::cpu {

struct CpuKernels {
  // --- elementwise (elementwise.hpp) ---
  template <class T>
  static void unary(UnaryOp op, const T* x, T* y, std::int64_t n, double param) {
    cpu::unary<T>(op, x, y, n, param);
  }
  template <class T>
  static void multiply_by_mask(UnaryOp op, const T* g, const T* x, T* out, std::int64_t n) {
    cpu::multiply_by_mask<T>(op, g, x, out, n);
  }
  template <class T>
  static void binary(BinaryOp op, int rank, const std::int64_t* shape, const T* a, const std::int64_t* a_strides,
                     const T* b, const std::int64_t* b_strides, T* out) {
    cpu::binary<T>(op, rank, shape, a, a_strides, b, b_strides, out);
  }
  template <class From, class To>
  static void convert(const From* x, To* y, std::int64_t n) {
    cpu::convert<From, To>(x, y, n);
  }
  template <class T>
  static void fill(T* y, std::int64_t n, T value) {
    cpu::fill<T>(y, n, value);
  }
  template <class T>
  static void copy(const T* x, T* y, std::int64_t n) {
    if (n > 0) std::memcpy(y, x, static_cast<std::size_t>(n) * sizeof(T));
  }

  // --- reductions (reduce.hpp) ---
  template <class T>
  static void sum_to(int rank, const std::int64_t* in_shape, const T* x, const std::int64_t* out_shape, T* out) {
    cpu::sum_to<T>(rank, in_shape, x, out_shape, out);
  }
  template <class T>
  static void argmax_axis(const T* x, std::int64_t outer, std::int64_t length, std::int64_t inner,
                          std::int64_t* index) {
    cpu::argmax_axis<T>(x, outer, length, inner, index);
  }
  template <class T>
  static void log_softmax(const T* x, T* y, std::int64_t outer, std::int64_t length, std::int64_t inner) {
    cpu::log_softmax<T>(x, y, outer, length, inner);
  }

  // --- data movement (layout.hpp) ---
  template <class T>
  static void strided_copy(int rank, const std::int64_t* shape, const T* x, const std::int64_t* x_strides, T* out) {
    cpu::strided_copy<T>(rank, shape, x, x_strides, out);
  }
  template <class T>
  static void copy_into_axis(const T* src, std::int64_t outer, std::int64_t count, std::int64_t inner, T* dst,
                             std::int64_t length, std::int64_t start) {
    cpu::copy_into_axis<T>(src, outer, count, inner, dst, length, start);
  }
  template <class T>
  static void copy_from_axis(const T* src, std::int64_t outer, std::int64_t length, std::int64_t inner,
                             std::int64_t start, std::int64_t count, T* dst) {
    cpu::copy_from_axis<T>(src, outer, length, inner, start, count, dst);
  }
  template <class T>
  static void gather_rows(const T* x, std::int64_t row_size, const std::int64_t* index, std::int64_t n, T* out) {
    cpu::gather_rows<T>(x, row_size, index, n, out);
  }
  template <class T>
  static void scatter_rows_add(const T* g, std::int64_t row_size, const std::int64_t* index, std::int64_t n, T* out,
                               std::int64_t out_rows) {
    cpu::scatter_rows_add<T>(g, row_size, index, n, out, out_rows);
  }
  template <class T>
  static void take(const T* x, const std::int64_t* index, std::int64_t n, T* out) {
    cpu::take<T>(x, index, n, out);
  }
  template <class T>
  static void scatter_add(const T* g, const std::int64_t* index, std::int64_t n, T* out, std::int64_t out_numel) {
    cpu::scatter_add<T>(g, index, n, out, out_numel);
  }
  static void label_positions(const std::int64_t* labels, std::int64_t n, std::int64_t classes, std::int64_t* out) {
    cpu::label_positions(labels, n, classes, out);
  }

  // --- matrix products (gemm.hpp): C_i = op(A_i) op(B_i) for i < count, the
  // i-th matrices stride_* elements apart (0 repeats one) ---
  template <class T>
  static void gemm_batched(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, const T* a,
                           std::int64_t stride_a, const T* b, std::int64_t stride_b, T* c, std::int64_t stride_c,
                           std::int64_t count) {
    const std::int64_t lda = trans_a ? m : k, ldb = trans_b ? k : n;
    for (std::int64_t i = 0; i < count; ++i)
      cpu::gemm<T>(trans_a, trans_b, m, n, k, T(1), a + i * stride_a, lda, b + i * stride_b, ldb, T(0),
                   c + i * stride_c, n);
  }

  // --- convolution (conv.hpp) ---
  static std::int64_t conv_scratch_size(const ConvShape& s) { return cpu::conv_scratch_size(s); }
  template <class T>
  static void conv2d_forward(const ConvShape& s, const T* x, const T* w, T* y, T* scratch) {
    cpu::conv2d_forward<T>(s, x, w, y, scratch);
  }
  template <class T>
  static void conv2d_input_grad(const ConvShape& s, const T* g, const T* w, T* dx, T* scratch) {
    cpu::conv2d_input_grad<T>(s, g, w, dx, scratch);
  }
  template <class T>
  static void conv2d_weight_grad(const ConvShape& s, const T* x, const T* g, T* dw, T* scratch) {
    cpu::conv2d_weight_grad<T>(s, x, g, dw, scratch);
  }

  // --- batch normalisation (norm.hpp) ---
  template <class T>
  static void batch_norm_forward(const NormShape& s, const T* x, const T* gamma, const T* beta, T* y) {
    cpu::batch_norm_forward<T>(s, x, gamma, beta, y);
  }
  template <class T>
  static void batch_norm_backward(const NormShape& s, const T* x, const T* gamma, const T* beta, const T* g, T* dx,
                                  T* dgamma, T* dbeta) {
    cpu::batch_norm_backward<T>(s, x, gamma, beta, g, dx, dgamma, dbeta);
  }

  // --- pooling (window_ops.hpp) ---
  template <class T>
  static void max_pool_argmax(const T* x, std::int64_t planes, std::int64_t h, std::int64_t w, const Window2d& win,
                              std::int64_t* index) {
    cpu::max_pool_argmax<T>(x, planes, h, w, win, index);
  }
};

}  // namespace metatape::kernels::cpu
