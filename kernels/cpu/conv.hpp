// 2-D convolution (ConvShape, types.hpp) as im2col + GEMM, in chunks of
// images so that the column buffer stays small (it is scratch, never saved
// for a backward pass). T is float or double.
#pragma once

#include <cstdint>

#include "../types.hpp"

namespace metatape::kernels::cpu {

// Images per chunk: one when each image has >= 128 output pixels (its GEMM
// is large enough on its own), else as many as keep the scratch near 1 Mi
// elements.
std::int64_t conv_chunk(const ConvShape& s);
// Scratch elements the three functions need (columns + a transposed block).
std::int64_t conv_scratch_size(const ConvShape& s);

// y = x ⋆ w.
template <class T>
void conv2d_forward(const ConvShape& s, const T* x, const T* w, T* y, T* scratch);

// dx = the adjoint of x ↦ x ⋆ w applied to g (shaped like y); written in full.
template <class T>
void conv2d_input_grad(const ConvShape& s, const T* g, const T* w, T* dx, T* scratch);

// dw = the adjoint of w ↦ x ⋆ w applied to g; written in full.
template <class T>
void conv2d_weight_grad(const ConvShape& s, const T* x, const T* g, T* dw, T* scratch);

}  // namespace metatape::kernels::cpu
