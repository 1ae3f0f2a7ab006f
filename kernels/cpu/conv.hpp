// 2-D convolution as im2col + GEMM, in chunks of images so that the column
// buffer stays small (it is scratch, never saved for a backward pass).
// Groups are independent convolutions with their own weights: the task axis
// of a task-batched model. T is float or double.
//
//   x [groups, images, in_channels, h, w]
//   w [groups, out_channels, in_channels, kernel_h, kernel_w]
//   y [groups, images, out_channels, out_h, out_w]
#pragma once

#include <cstdint>

#include "../window.hpp"

namespace metatape::kernels::cpu {

struct ConvShape {
  std::int64_t groups, images, in_channels, h, w, out_channels;
  Window2d window;

  std::int64_t out_h() const { return window.out_h(h); }
  std::int64_t out_w() const { return window.out_w(w); }
  std::int64_t pixels() const { return out_h() * out_w(); }                               // per output plane
  std::int64_t patch() const { return in_channels * window.kernel_h * window.kernel_w; }  // GEMM inner dimension
  // Images per chunk: as many as keep the scratch near 1 Mi elements, at least 1.
  std::int64_t chunk() const;
  // Scratch elements the three functions need (columns + a transposed block).
  std::int64_t scratch_size() const;
};

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
