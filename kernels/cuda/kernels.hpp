// The CUDA kernels, declared in plain C++ for the kernel table
// (backend.hpp). Pointers are device memory; every call is queued on this
// thread's stream (runtime.hpp) and returns without waiting. The semantics
// of each are those of its CPU namesake in kernels/cpu/; where the two may
// differ in the last bits (order of summation, atomics), it says so.
#pragma once

#include <cstdint>

#include "../types.hpp"

namespace metatape::kernels::cuda {

// --- elementwise.cu ---
template <class T>
void unary(UnaryOp op, const T* x, T* y, std::int64_t n, double param);
template <class T>
void multiply_by_mask(UnaryOp op, const T* g, const T* x, T* out, std::int64_t n);
template <class T>
void binary(BinaryOp op, int rank, const std::int64_t* shape, const T* a, const std::int64_t* a_strides, const T* b,
            const std::int64_t* b_strides, T* out);
template <class From, class To>
void convert(const From* x, To* y, std::int64_t n);
template <class T>
void fill(T* y, std::int64_t n, T value);
template <class T>
void copy(const T* x, T* y, std::int64_t n);

// --- reduce.cu --- (sums accumulate in double, in a fixed tree order: the
// result may differ from the CPU's in the last bits, not from run to run)
template <class T>
void sum_to(int rank, const std::int64_t* in_shape, const T* x, const std::int64_t* out_shape, T* out);
template <class T>
void argmax_axis(const T* x, std::int64_t outer, std::int64_t length, std::int64_t inner, std::int64_t* index);
template <class T>
void log_softmax(const T* x, T* y, std::int64_t outer, std::int64_t length, std::int64_t inner);

// --- layout.cu --- (the scatters add with atomics: repeated indices sum in
// an order that may change from run to run)
template <class T>
void strided_copy(int rank, const std::int64_t* shape, const T* x, const std::int64_t* x_strides, T* out);
template <class T>
void copy_into_axis(const T* src, std::int64_t outer, std::int64_t count, std::int64_t inner, T* dst,
                    std::int64_t length, std::int64_t start);
template <class T>
void copy_from_axis(const T* src, std::int64_t outer, std::int64_t length, std::int64_t inner, std::int64_t start,
                    std::int64_t count, T* dst);
template <class T>
void gather_rows(const T* x, std::int64_t row_size, const std::int64_t* index, std::int64_t n, T* out);
template <class T>
void scatter_rows_add(const T* g, std::int64_t row_size, const std::int64_t* index, std::int64_t n, T* out,
                      std::int64_t out_rows);
template <class T>
void take(const T* x, const std::int64_t* index, std::int64_t n, T* out);
template <class T>
void scatter_add(const T* g, const std::int64_t* index, std::int64_t n, T* out, std::int64_t out_numel);
void label_positions(const std::int64_t* labels, std::int64_t n, std::int64_t classes, std::int64_t* out);

// --- gemm.cu --- (cuBLAS; TF32 only when runtime.hpp's set_allow_tf32)
template <class T>
void gemm_batched(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, const T* a,
                  std::int64_t stride_a, const T* b, std::int64_t stride_b, T* c, std::int64_t stride_c,
                  std::int64_t count);

// --- conv.cu ---
std::int64_t conv_scratch_size(const ConvShape& s);
template <class T>
void conv2d_forward(const ConvShape& s, const T* x, const T* w, T* y, T* scratch);
template <class T>
void conv2d_input_grad(const ConvShape& s, const T* g, const T* w, T* dx, T* scratch);
template <class T>
void conv2d_weight_grad(const ConvShape& s, const T* x, const T* g, T* dw, T* scratch);

// --- norm.cu ---
template <class T>
void batch_norm_forward(const NormShape& s, const T* x, const T* gamma, const T* beta, T* y);
template <class T>
void batch_norm_backward(const NormShape& s, const T* x, const T* gamma, const T* beta, const T* g, T* dx, T* dgamma,
                         T* dbeta);

// --- pool.cu ---
template <class T>
void max_pool_argmax(const T* x, std::int64_t planes, std::int64_t h, std::int64_t w, const Window2d& win,
                     std::int64_t* index);

}  // namespace metatape::kernels::cuda
