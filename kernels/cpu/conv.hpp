// 2-D convolution (ConvShape, types.hpp) over chunks of images, the chunks
// spread over the thread pool (parallel.hpp). The kernels are declared in
// kernels.hpp; this is the plan they share.
//
// Three ways to the same sums, chosen by the shape:
//  - implicit GEMM (many input channels, where the CPU has AVX2 or AVX-512:
//    implicit_gemm.hpp): a chunk's planes are copied once into zero-padded
//    planes (x's for the forward and the weight gradient, g's for the input
//    gradient; the zeros written once per call), and the product reads its
//    patch entries there, with no column matrix. B's rows are the
//    weights transposed to [C·kh·kw, O] (forward) or to [O, kh·kw, C]
//    (input gradient), O·C·kh·kw values once per call, and for the weight
//    gradient g's planes transposed to [pixels, O], chunk by chunk. The
//    input gradient runs once per stride phase (the input pixels whose
//    windows meet the same taps); the weight gradient once per group and
//    block of input channels, its sums carried over every chunk of images;
//  - im2col + GEMM, channels-first (few input channels, e.g. a first layer
//    of 1 or 3): cols [C·kh·kw, images·pixels], one row per (c, ki, kj), as
//    NCHW gives them;
//  - im2col + GEMM, channels-last (many input channels, without AVX2): the
//    chunk's images are transposed to [images, H, W, C] first, and cols is
//    [images·pixels, kh·kw·C]: each output pixel's window is kh runs of kw·C
//    contiguous values, copied whole, instead of C·kh·kw runs of a few
//    pixels each. The weights are permuted to [O, kh, kw, C] to match
//    (O·C·kh·kw values, once per call).
// Scratch (never saved for a backward pass) holds the packed weights and,
// per worker, one chunk's padded planes (and the weight gradient's rows of g
// and sums), or its columns, output rows and transposed images; the im2col
// weight gradient of an ungrouped convolution (not per task) also keeps a
// fixed number of partial sums (each over a run of chunks), added in order,
// so that every result is independent of the thread count.
#pragma once

#include <atomic>
#include <cstdint>

#include "kernels.hpp"
#include "small_gemm.hpp"

namespace metatape::kernels::cpu {

struct ConvPlan {
  SmallGemmIsa implicit;       // the implicit GEMM's instruction set; none: im2col + GEMM
  bool channels_last;          // im2col's layout (false on the implicit GEMM's plans)
  std::int64_t pixels, patch;  // L = out_h·out_w; P = C·kh·kw
  std::int64_t chunk;          // images per chunk (one GEMM, or one pass of the implicit GEMM's tiles)
  std::int64_t chunks;         // chunks per group
  std::int64_t workers;        // scratch slots: at most available_threads(), at most the items
  std::int64_t per_worker;     // scratch elements per slot
  std::int64_t weights;        // permuted weights (channels-last) or the implicit GEMM's rows of B, all groups
  std::int64_t segments;  // im2col weight-gradient partial sums (ungrouped, not per task), each over a run of chunks
  std::int64_t partials;  // their elements
  // Implicit GEMM: each image's padded planes (x's or g's), `top` rows and
  // `left` columns of zeros before the values; the weight gradient's blocks
  // of input channels per group (items: groups · channel_blocks, not
  // groups · chunks) and the channels of each (the last may have fewer).
  std::int64_t padded_h, padded_w, top, left;
  std::int64_t channel_blocks, block_channels;
};

enum class ConvKind { forward, input_grad, weight_grad };

// The plan of shape `s` for one of the three kernels at the current thread
// count.
ConvPlan conv_plan(const ConvShape& s, ConvKind kind);

// The instruction set of the implicit-GEMM path (none: im2col + GEMM for
// every kernel): small_gemm_isa() unless a ConvIsaScope has chosen another.
extern std::atomic<SmallGemmIsa> conv_copy;
inline SmallGemmIsa conv_isa() { return conv_copy.load(std::memory_order_relaxed); }

// The convolution kernels plan with `isa` while it lives (IsaChoiceScope).
class ConvIsaScope : public IsaChoiceScope {
 public:
  explicit ConvIsaScope(SmallGemmIsa isa) : IsaChoiceScope(conv_copy, isa, "ConvIsaScope") {}
};

}  // namespace metatape::kernels::cpu
