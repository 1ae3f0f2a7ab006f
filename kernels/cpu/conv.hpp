// 2-D convolution (ConvShape, types.hpp) as im2col + GEMM, in chunks of
// images so that the column buffer stays small (it is scratch, never saved
// for a backward pass). The kernels are declared in kernels.hpp; this is the
// chunking they share.
#pragma once

#include <cstdint>

#include "kernels.hpp"

namespace metatape::kernels::cpu {

// Images per chunk: one when each image has >= 128 output pixels (its GEMM
// is large enough on its own), else as many as keep the scratch near 1 Mi
// elements.
std::int64_t conv_chunk(const ConvShape& s);

}  // namespace metatape::kernels::cpu
