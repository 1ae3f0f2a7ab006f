// Sliding windows: im2col / col2im, convolution as a GEMM (conv.cpp). T is
// float or double. window_ops.cpp also defines the kernel max_pool_argmax.
#pragma once

#include <cstdint>

#include "kernels.hpp"

namespace metatape::kernels::cpu {

// x is [groups, images, channels, h, w]; cols is
// [groups, channels * kernel_h * kernel_w, images * out_h * out_w]: row
// (c, ki, kj), column (image, oh, ow). Padding reads as 0. Grouping by task
// lets one GEMM per group multiply its weights with all its images at once.
template <class T>
void im2col(const T* x, std::int64_t groups, std::int64_t images, std::int64_t channels, std::int64_t h, std::int64_t w,
            const Window2d& win, T* cols);

// The adjoint of im2col: x (same layout, zeroed here) accumulates every
// column entry at the input position it was read from; padding drops out.
template <class T>
void col2im(const T* cols, std::int64_t groups, std::int64_t images, std::int64_t channels, std::int64_t h,
            std::int64_t w, const Window2d& win, T* x);

}  // namespace metatape::kernels::cpu
