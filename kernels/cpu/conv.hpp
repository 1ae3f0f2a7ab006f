// 2-D convolution (ConvShape, types.hpp) as im2col + GEMM over chunks of
// images, the chunks spread over the thread pool (parallel.hpp). The kernels
// are declared in kernels.hpp; this is the plan they share.
//
// Two layouts of the im2col columns, chosen by the input channels:
//  - channels-first (few input channels, e.g. a first layer of 1 or 3): cols
//    [C·kh·kw, images·pixels], one row per (c, ki, kj), as NCHW gives them;
//  - channels-last (many input channels): the chunk's images are transposed
//    to [images, H, W, C] first, and cols is [images·pixels, kh·kw·C]: each
//    output pixel's window is kh runs of kw·C contiguous values, copied
//    whole, instead of C·kh·kw runs of a few pixels each. The weights are
//    permuted to [O, kh, kw, C] to match (O·C·kh·kw values, once per call).
// Scratch (never saved for a backward pass) holds the permuted weights and,
// per worker, one chunk's columns, its output rows and its transposed
// images; the weight gradient of an ungrouped convolution (not per task)
// also keeps a fixed number of partial sums (each over a run of chunks),
// added in order, so that every result is independent of the thread count.
#pragma once

#include <cstdint>

#include "kernels.hpp"

namespace metatape::kernels::cpu {

struct ConvPlan {
  bool channels_last;
  std::int64_t pixels, patch;  // L = out_h·out_w; P = C·kh·kw
  std::int64_t chunk;          // images per chunk (one GEMM)
  std::int64_t chunks;         // chunks per group
  std::int64_t workers;        // scratch slots: at most available_threads(), at most groups·chunks
  std::int64_t per_worker;     // scratch elements per slot
  std::int64_t weights;        // permuted weights (channels-last), all groups
  std::int64_t segments;       // weight-gradient partial sums (ungrouped, not per task), each over a run of chunks
  std::int64_t partials;       // their elements
};

enum class ConvKind { forward, input_grad, weight_grad };

// The plan of shape `s` for one of the three kernels at the current thread
// count.
ConvPlan conv_plan(const ConvShape& s, ConvKind kind);

}  // namespace metatape::kernels::cpu
