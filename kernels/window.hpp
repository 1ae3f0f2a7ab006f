// The geometry of a 2-D sliding window (convolution, pooling), shared by the
// CPU and CUDA kernels.
#pragma once

#include <cstdint>

namespace metatape::kernels {

struct Window2d {
  std::int64_t kernel_h = 1, kernel_w = 1;
  std::int64_t stride_h = 1, stride_w = 1;
  std::int64_t pad_h = 0, pad_w = 0;  // zeros (convolution) or never-chosen (pooling) on each side

  // Output extent for an input extent; <= 0 means the window does not fit.
  std::int64_t out_h(std::int64_t h) const { return (h + 2 * pad_h - kernel_h) / stride_h + 1; }
  std::int64_t out_w(std::int64_t w) const { return (w + 2 * pad_w - kernel_w) / stride_w + 1; }
};

}  // namespace metatape::kernels
