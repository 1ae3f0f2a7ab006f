// Sliding windows: im2col / col2im, convolution as a GEMM (conv.cpp). T is
// float or double. window_ops.cpp also defines the kernels max_pool and
// max_unpool; batch normalisation's pooled kernels (norm.cpp) share
// max_pool's plane loops.
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

// The same in channels-last order: x is [images, h, w, channels] and cols
// [images * out_h * out_w, kernel_h * kernel_w * channels]: row (image, oh,
// ow), column (ki, kj, c). A window row inside the image is one contiguous
// run of kernel_w · channels values.
template <class T>
void im2col_channels_last(const T* x, std::int64_t images, std::int64_t channels, std::int64_t h, std::int64_t w,
                          const Window2d& win, T* cols);

// Its adjoint: x ([images, h, w, channels], zeroed here) accumulates every
// entry of cols where im2col_channels_last read it from, in a fixed order.
template <class T>
void col2im_channels_last(const T* cols, std::int64_t images, std::int64_t channels, std::int64_t h, std::int64_t w,
                          const Window2d& win, T* x);

// max_pool (kernels.hpp) over the planes [p0, p1) only, on the calling
// thread, each index plus index_shift: flat into x, as the kernel writes
// them, or, where x is a buffer holding one map of a larger tensor, shifted
// to that map's place in it.
template <class T>
void max_pool_planes(const T* x, std::int64_t p0, std::int64_t p1, std::int64_t h, std::int64_t w, const Window2d& win,
                     T* y, std::int64_t* index, std::int64_t index_shift);

}  // namespace metatape::kernels::cpu
