// Sliding-window kernels: im2col / col2im for convolution as a GEMM, and the
// arg-max of each pooling window. T is float or double.
#pragma once

#include <cstdint>

#include "../types.hpp"

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

// x is `planes` images of h x w; index is [planes, out_h, out_w]: the flat
// index into x of each window's first maximum. Padding is never chosen.
template <class T>
void max_pool_argmax(const T* x, std::int64_t planes, std::int64_t h, std::int64_t w, const Window2d& win,
                     std::int64_t* index);

}  // namespace metatape::kernels::cpu
