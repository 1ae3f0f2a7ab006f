#include "conv.hpp"

#include <algorithm>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <vector>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "../scalar_math.hpp"
#include "gemm.hpp"
#include "implicit_gemm.hpp"
#include "parallel.hpp"
#include "window_ops.hpp"

namespace metatape::kernels::cpu {
namespace {

// Input channels from which the implicit GEMM (or, without AVX2, the
// channels-last columns) takes a convolution. Its sums run over the input
// channels inside each tap, and with one channel (a first layer) it was 3-4x
// slower than the channels-first columns on the development VM; those
// columns' per-channel rows are few and long enough there.
constexpr std::int64_t kManyChannelsFrom = 8;
// Columns of a chunk's GEMM that OpenBLAS needs to come near its peak with
// 64 output channels, and the most scratch elements one chunk may take.
constexpr std::int64_t kTargetColumns = 256;
constexpr std::int64_t kMaxChunkScratch = std::int64_t{1} << 20;
// The most elements of one chunk's operands on the implicit-GEMM path, its
// padded planes (and the weight gradient's rows of g): 256 KiB of floats,
// which stay in the L2 cache while every tile of the chunk reads them.
constexpr std::int64_t kImplicitChunkElements = std::int64_t{1} << 16;
// Partial sums of an ungrouped weight gradient: a fixed number (never the
// thread count), each over a contiguous run of chunks.
constexpr std::int64_t kWeightGradSegments = 8;

std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

// [images, channels, pixels] <-> [channels, images · pixels]: the layout
// change between NCHW planes and one GEMM over a chunk of images.
template <class T>
void planes_to_rows(const T* in, std::int64_t images, std::int64_t channels, std::int64_t pixels, T* out) {
  for (std::int64_t n = 0; n < images; ++n)
    for (std::int64_t c = 0; c < channels; ++c)
      std::memcpy(out + (c * images + n) * pixels, in + (n * channels + c) * pixels,
                  static_cast<std::size_t>(pixels) * sizeof(T));
}

// One plane's values as the forward leaves them: plus b when there is a
// bias, then max(·, 0) when the ReLU is fused (scalar_math's relu, so the
// same bits as a relu op after the convolution).
template <class T>
void finish_plane(const T* from, std::int64_t pixels, const T* b, bool relu, T* to) {
  if (b == nullptr && !relu) {
    if (to != from) std::memcpy(to, from, static_cast<std::size_t>(pixels) * sizeof(T));
    return;
  }
  const T bias = b == nullptr ? T(0) : *b;  // a value: a store through `to` could alias *b
  if (b == nullptr)
    for (std::int64_t i = 0; i < pixels; ++i) to[i] = kernels::relu(from[i]);
  else if (relu)
    for (std::int64_t i = 0; i < pixels; ++i) to[i] = kernels::relu(from[i] + bias);
  else
    for (std::int64_t i = 0; i < pixels; ++i) to[i] = from[i] + bias;
}

// The way back, each plane finished (finish_plane) with bias[c] (none when
// bias is null) on channel c.
template <class T>
void rows_to_planes(const T* in, std::int64_t images, std::int64_t channels, std::int64_t pixels, const T* bias,
                    bool relu, T* out) {
  for (std::int64_t n = 0; n < images; ++n)
    for (std::int64_t c = 0; c < channels; ++c)
      finish_plane(in + (c * images + n) * pixels, pixels, bias == nullptr ? nullptr : bias + c, relu,
                   out + (n * channels + c) * pixels);
}

// g's planes as GEMM rows: for one image they already are; for several they
// are transposed into `block`.
template <class T>
const T* rows_of(const T* planes, std::int64_t images, std::int64_t channels, std::int64_t pixels, T* block) {
  if (images == 1) return planes;
  planes_to_rows(planes, images, channels, pixels, block);
  return block;
}

// a [rows, cols] (leading dimension lda) -> b [cols, rows] (ldb) for the
// block [r0, r1) × [c0, c1).
template <class T>
void transpose_block(const T* a, std::int64_t lda, T* b, std::int64_t ldb, std::int64_t r0, std::int64_t r1,
                     std::int64_t c0, std::int64_t c1) {
  for (std::int64_t r = r0; r < r1; ++r)
    for (std::int64_t c = c0; c < c1; ++c) b[c * ldb + r] = a[r * lda + c];
}

// a [rows, cols] (rows lda apart) -> b [cols, rows] (rows ldb apart).
// Floats go four by four through SSE registers (x86-64's baseline), the
// ragged edges and doubles element by element.
template <class T>
void transpose_matrix(const T* a, std::int64_t rows, std::int64_t cols, std::int64_t lda, T* b, std::int64_t ldb) {
  std::int64_t r4 = 0, c4 = 0;
#ifdef __SSE2__
  if constexpr (std::is_same_v<T, float>) {
    r4 = rows / 4 * 4;
    c4 = cols / 4 * 4;
    // Column blocks outside: each pass of the inner loop completes four
    // rows of b while reading one cache line from each row of a, which
    // stays in L1 for the next three column blocks.
    for (std::int64_t c = 0; c < c4; c += 4)
      for (std::int64_t r = 0; r < r4; r += 4) {
        __m128 x0 = _mm_loadu_ps(a + r * lda + c), x1 = _mm_loadu_ps(a + (r + 1) * lda + c),
               x2 = _mm_loadu_ps(a + (r + 2) * lda + c), x3 = _mm_loadu_ps(a + (r + 3) * lda + c);
        _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
        _mm_storeu_ps(b + c * ldb + r, x0);
        _mm_storeu_ps(b + (c + 1) * ldb + r, x1);
        _mm_storeu_ps(b + (c + 2) * ldb + r, x2);
        _mm_storeu_ps(b + (c + 3) * ldb + r, x3);
      }
  }
#endif
  transpose_block(a, lda, b, ldb, 0, r4, c4, cols);    // right edge of the SIMD blocks
  transpose_block(a, lda, b, ldb, r4, rows, 0, cols);  // bottom rows (all, without SIMD)
}

// Each image [rows, cols] -> [cols, rows]: NCHW <-> NHWC.
template <class T>
void transpose_images(const T* in, std::int64_t images, std::int64_t rows, std::int64_t cols, T* out) {
  for (std::int64_t n = 0; n < images; ++n)
    transpose_matrix(in + n * rows * cols, rows, cols, cols, out + n * rows * cols, rows);
}

// Weights [count, C, K] <-> [count, K, C] (K = kh·kw): the column order of
// the channels-last im2col.
template <class T>
void weights_to_channels_last(const T* w, std::int64_t count, std::int64_t channels, std::int64_t k, T* out) {
  for (std::int64_t i = 0; i < count; ++i)
    for (std::int64_t c = 0; c < channels; ++c)
      for (std::int64_t j = 0; j < k; ++j) out[(i * k + j) * channels + c] = w[(i * channels + c) * k + j];
}

template <class T>
void weights_from_channels_last(const T* in, std::int64_t count, std::int64_t channels, std::int64_t k, T* w) {
  for (std::int64_t i = 0; i < count; ++i)
    for (std::int64_t c = 0; c < channels; ++c)
      for (std::int64_t j = 0; j < k; ++j) w[(i * channels + c) * k + j] = in[(i * k + j) * channels + c];
}

// One worker's scratch: a chunk's columns, its output rows, its images
// transposed (channels-last) and a weight-gradient accumulator.
template <class T>
struct Work {
  T *cols, *block, *images, *acc;
};

template <class T>
Work<T> work_of(const ConvShape& s, const ConvPlan& p, T* slot) {
  const std::int64_t columns = p.chunk * p.pixels;
  Work<T> w{};
  w.cols = slot;
  if (p.implicit != SmallGemmIsa::none) return w;  // the implicit path lays out the slot itself
  w.block = w.cols + p.patch * columns;
  w.images = w.block + s.out_channels * columns;
  w.acc = w.images + (p.channels_last ? p.chunk * s.in_channels * s.h * s.w : 0);
  return w;
}

// body(item, work) for item in [0, items), the items cut into contiguous
// runs, one per worker; each worker has its own scratch slot.
template <class T, class F>
void for_each_item(const ConvShape& s, const ConvPlan& p, std::int64_t items, T* slots, F&& body) {
  const std::int64_t workers = std::min(p.workers, parallel_chunks(items, 1));
  parallel_for(workers, 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t k = begin; k < end; ++k) {
      const Work<T> work = work_of(s, p, slots + k * p.per_worker);
      for (std::int64_t i = items * k / workers; i < items * (k + 1) / workers; ++i) body(i, work);
    }
  });
}

// The weights in the plan's column order: w itself, or its channels-last
// permutation written to the front of the scratch.
template <class T>
const T* plan_weights(const ConvShape& s, const ConvPlan& p, const T* w, T* scratch) {
  if (!p.channels_last) return w;
  weights_to_channels_last(w, s.groups * s.out_channels, s.in_channels, s.window.kernel_h * s.window.kernel_w, scratch);
  return scratch;
}

// The first image and the image count of chunk `c`.
std::pair<std::int64_t, std::int64_t> chunk_images(const ConvShape& s, const ConvPlan& p, std::int64_t c) {
  const std::int64_t n0 = c * p.chunk;
  return {n0, std::min(p.chunk, s.images - n0)};
}

// dst [O, P] (the plan's column order) = beta · dst + g colsᵀ over chunk c of
// group grp.
template <class T>
void weight_grad_chunk(const ConvShape& s, const ConvPlan& p, const T* x, const T* g, std::int64_t grp, std::int64_t c,
                       const Work<T>& work, T* dst, T beta) {
  const std::int64_t L = p.pixels, P = p.patch, O = s.out_channels, plane_in = s.in_channels * s.h * s.w;
  const auto [n0, nb] = chunk_images(s, p, c);
  const T* xs = x + (grp * s.images + n0) * plane_in;
  const T* rows = rows_of(g + (grp * s.images + n0) * O * L, nb, O, L, work.block);
  if (p.channels_last) {
    transpose_images(xs, nb, s.in_channels, s.h * s.w, work.images);
    im2col_channels_last<T>(work.images, nb, s.in_channels, s.h, s.w, s.window, work.cols);  // [nb·L, P]
    gemm<T>(false, false, O, P, nb * L, T(1), rows, nb * L, work.cols, P, beta, dst, P);
  } else {
    im2col<T>(xs, 1, nb, s.in_channels, s.h, s.w, s.window, work.cols);  // [P, nb·L]
    gemm<T>(false, true, O, P, nb * L, T(1), rows, nb * L, work.cols, nb * L, beta, dst, P);
  }
}

// to[0, n) = from[0, n), four floats (two doubles) at a time in SSE
// registers: the planes' rows are short (2 to 28 values), and a library
// call per row (what the compiler makes of std::copy or a plain loop) cost
// as much as the copy.
template <class T>
void copy_row(const T* from, std::int64_t n, T* to) {
  std::int64_t i = 0;
#ifdef __SSE2__
  if constexpr (std::is_same_v<T, float>)
    for (; i + 4 <= n; i += 4) _mm_storeu_ps(to + i, _mm_loadu_ps(from + i));
  else
    for (; i + 2 <= n; i += 2) _mm_storeu_pd(to + i, _mm_loadu_pd(from + i));
#endif
  for (; i < n; ++i) to[i] = from[i];
}

// planes [count, h, w] into padded [count, padded_h, padded_w] at (top,
// left). Only those values are written: the zeros around them are the
// slot's, written once per call (zero_padded_planes) and never overwritten, since
// every chunk puts its values at the same places.
template <class T>
void copy_into_padded(const T* planes, std::int64_t count, std::int64_t h, std::int64_t w, const ConvPlan& p,
                      T* padded) {
  for (std::int64_t i = 0; i < count; ++i) {
    T* to = padded + i * p.padded_h * p.padded_w + p.top * p.padded_w + p.left;
    for (std::int64_t r = 0; r < h; ++r) copy_row(planes + (i * h + r) * w, w, to + r * p.padded_w);
  }
}

// The padded planes at the front of every worker's slot (`planes` elements
// each) set to zero: the padding that copy_into_padded leaves alone.
template <class T>
void zero_padded_planes(const ConvPlan& p, std::int64_t planes, T* slots) {
  for (std::int64_t k = 0; k < p.workers; ++k) std::fill_n(slots + k * p.per_worker, planes, T(0));
}

// The rows of B, per group of w [G, O, C, K] (K = kh·kw taps): the
// forward's, w transposed to [C·K, O] (row c·K + t for channel c at tap t),
// and the input gradient's, each output channel's [C, K] transposed to
// [K, C] (row o·K + t for output channel o at tap t).
template <class T>
void forward_rows_of_b(const ConvShape& s, const T* w, T* packed) {
  const std::int64_t O = s.out_channels, P = s.patch();
  for (std::int64_t grp = 0; grp < s.groups; ++grp) transpose_matrix(w + grp * O * P, O, P, P, packed + grp * O * P, O);
}

template <class T>
void input_grad_rows_of_b(const ConvShape& s, const T* w, T* packed) {
  const std::int64_t K = s.window.kernel_h * s.window.kernel_w;
  transpose_images(w, s.groups * s.out_channels, s.in_channels, K, packed);
}

template <class T>
void implicit_forward(const ConvShape& s, const ConvPlan& p, const T* x, const T* w, const T* bias,
                      std::int64_t bias_group_stride, T* y, T* scratch) {
  const auto& win = s.window;
  const std::int64_t C = s.in_channels, O = s.out_channels, K = win.kernel_h * win.kernel_w;
  forward_rows_of_b(s, w, scratch);
  std::vector<std::int64_t> tap_a, tap_b;
  for (std::int64_t ki = 0; ki < win.kernel_h; ++ki)
    for (std::int64_t kj = 0; kj < win.kernel_w; ++kj) {
      tap_a.push_back(ki * p.padded_w + kj);
      tap_b.push_back((ki * win.kernel_w + kj) * O);
    }
  const std::int64_t plane = p.padded_h * p.padded_w;
  zero_padded_planes(p, p.per_worker, scratch + p.weights);  // the slot is the planes
  for_each_item(s, p, s.groups * p.chunks, scratch + p.weights, [&](std::int64_t item, const Work<T>& work) {
    const std::int64_t grp = item / p.chunks;
    const auto [n0, nb] = chunk_images(s, p, item % p.chunks);
    T* padded = work.cols;  // the implicit path's slot: the padded planes, then the chunk's output
    T* channels_last = padded + p.chunk * C * plane;
    copy_into_padded(x + (grp * s.images + n0) * C * s.h * s.w, nb * C, s.h, s.w, p, padded);
    // Rows: the chunk's output pixels (image, oh, ow), reading the padded x
    // at (oh·sh, ow·sw) plus the tap's (ki, kj); the sum over the taps, then
    // the input channels. They go to [pixels, O] per image, then NCHW.
    ImplicitGemm<T> product{};
    product.a = padded;
    product.a_step[0] = C * plane, product.a_step[1] = win.stride_h * p.padded_w, product.a_step[2] = win.stride_w;
    product.extent[0] = nb, product.extent[1] = s.out_h(), product.extent[2] = s.out_w();
    product.tap_a = tap_a.data(), product.tap_b = tap_b.data();
    product.taps = static_cast<std::int64_t>(tap_a.size());
    product.depth = C, product.depth_stride = plane;
    product.b = scratch + grp * K * C * O, product.b_step = K * O, product.n = O;
    product.bias = bias == nullptr ? nullptr : bias + grp * bias_group_stride;
    product.relu = s.relu;
    product.out = channels_last;
    product.out_step[0] = O * p.pixels, product.out_step[1] = s.out_w() * O, product.out_step[2] = O;
    implicit_gemm(p.implicit, product);
    transpose_images(channels_last, nb, p.pixels, O, y + (grp * s.images + n0) * O * p.pixels);
  });
}

// The input pixels of one stride phase (ih + pad_h ≡ phase_h mod stride_h,
// and the same across) and the taps their windows meet (ki ≡ phase_h,
// kj ≡ phase_w): input pixel ih = phase_h + sh·u − pad_h receives g at
// oh = u − (ki − phase_h)/sh from tap ki, so every pixel of the phase reads
// g at the same offsets from its own (u, v).
struct StridePhase {
  std::int64_t first_u, count_u, first_v, count_v;  // the phase's pixels: u, v from first, count of them
  std::int64_t out_base;                            // ih·W + iw of its first pixel
  std::vector<std::int64_t> tap_a, tap_b;
};

std::vector<StridePhase> stride_phases(const ConvShape& s, const ConvPlan& p) {
  const auto& win = s.window;
  const std::int64_t C = s.in_channels;
  // The u of the phase's pixels: those with 0 <= phase + stride·u − pad < extent.
  const auto span = [](std::int64_t phase, std::int64_t stride, std::int64_t pad, std::int64_t extent) {
    const std::int64_t first = pad > phase ? ceil_div(pad - phase, stride) : 0, last_at = extent - 1 + pad - phase;
    return std::pair{first, last_at < 0 ? 0 : std::max<std::int64_t>(last_at / stride - first + 1, 0)};
  };
  std::vector<StridePhase> phases;
  for (std::int64_t ph = 0; ph < win.stride_h; ++ph)
    for (std::int64_t pw = 0; pw < win.stride_w; ++pw) {
      StridePhase phase;
      std::tie(phase.first_u, phase.count_u) = span(ph, win.stride_h, win.pad_h, s.h);
      std::tie(phase.first_v, phase.count_v) = span(pw, win.stride_w, win.pad_w, s.w);
      if (phase.count_u == 0 || phase.count_v == 0) continue;
      phase.out_base =
          (ph + win.stride_h * phase.first_u - win.pad_h) * s.w + (pw + win.stride_w * phase.first_v - win.pad_w);
      for (std::int64_t ki = ph; ki < win.kernel_h; ki += win.stride_h)
        for (std::int64_t kj = pw; kj < win.kernel_w; kj += win.stride_w) {
          phase.tap_a.push_back(-((ki - ph) / win.stride_h) * p.padded_w - (kj - pw) / win.stride_w);
          phase.tap_b.push_back((ki * win.kernel_w + kj) * C);
        }
      phases.push_back(std::move(phase));
    }
  return phases;
}

template <class T>
void implicit_input_grad(const ConvShape& s, const ConvPlan& p, const T* g, const T* w, T* dx, T* scratch) {
  const auto& win = s.window;
  const std::int64_t C = s.in_channels, O = s.out_channels, K = win.kernel_h * win.kernel_w, HW = s.h * s.w;
  const std::int64_t plane = p.padded_h * p.padded_w;
  input_grad_rows_of_b(s, w, scratch);
  const std::vector<StridePhase> phases = stride_phases(s, p);
  zero_padded_planes(p, p.per_worker, scratch + p.weights);  // the slot is the planes
  for_each_item(s, p, s.groups * p.chunks, scratch + p.weights, [&](std::int64_t item, const Work<T>& work) {
    const std::int64_t grp = item / p.chunks;
    const auto [n0, nb] = chunk_images(s, p, item % p.chunks);
    T* padded = work.cols;  // the implicit path's slot: the padded planes, then the chunk's dx
    T* channels_last = padded + p.chunk * O * plane;
    copy_into_padded(g + (grp * s.images + n0) * O * p.pixels, nb * O, s.out_h(), s.out_w(), p, padded);
    for (const StridePhase& phase : phases) {
      ImplicitGemm<T> product{};
      product.a = padded;
      product.a_base = (phase.first_u + p.top) * p.padded_w + (phase.first_v + p.left);
      product.a_step[0] = O * plane, product.a_step[1] = p.padded_w, product.a_step[2] = 1;
      product.extent[0] = nb, product.extent[1] = phase.count_u, product.extent[2] = phase.count_v;
      product.tap_a = phase.tap_a.data(), product.tap_b = phase.tap_b.data();
      product.taps = static_cast<std::int64_t>(phase.tap_a.size());
      product.depth = O, product.depth_stride = plane;
      product.b = scratch + grp * K * O * C, product.b_step = K * C, product.n = C;
      product.out = channels_last;  // [HW, C] per image
      product.out_base = phase.out_base * C;
      product.out_step[0] = C * HW, product.out_step[1] = win.stride_h * s.w * C,
      product.out_step[2] = win.stride_w * C;
      implicit_gemm(p.implicit, product);
    }
    transpose_images(channels_last, nb, HW, C, dx + (grp * s.images + n0) * C * HW);
  });
}

// dw = E(x, g) with rows (c, ki, kj) of one block of input channels, the
// sum over the group's images chunk after chunk: x's planes of the block's
// channels padded (per_block planes apart, so that every block reads them
// at the same offsets), g transposed to [pixels, O] (the rows of B), and the
// accumulators [rows, O] carried from chunk to chunk (each entry one chain
// over every image in order, whatever the chunk size or the thread count),
// then permuted into dw [O, C, kh, kw].
template <class T>
void implicit_weight_grad(const ConvShape& s, const ConvPlan& p, const T* x, const T* g, T* dw, T* scratch) {
  const auto& win = s.window;
  const std::int64_t C = s.in_channels, O = s.out_channels, K = win.kernel_h * win.kernel_w, L = p.pixels;
  const std::int64_t OH = s.out_h(), OW = s.out_w(), plane = p.padded_h * p.padded_w, plane_in = s.h * s.w;
  const std::int64_t per_block = p.block_channels;  // the last block may have fewer
  std::vector<std::int64_t> tap_a, tap_b;           // (image, output row) pairs of the longest chunk
  for (std::int64_t n = 0; n < p.chunk; ++n)
    for (std::int64_t oh = 0; oh < OH; ++oh) {
      tap_a.push_back(n * per_block * plane + oh * win.stride_h * p.padded_w);
      tap_b.push_back((n * L + oh * OW) * O);
    }
  zero_padded_planes(p, p.chunk * per_block * plane, scratch);
  for_each_item(s, p, s.groups * p.channel_blocks, scratch, [&](std::int64_t item, const Work<T>& work) {
    const std::int64_t grp = item / p.channel_blocks, block = item % p.channel_blocks;
    const std::int64_t c0 = block * per_block, channels = std::min(per_block, C - c0);
    T* padded = work.cols;  // this path's slot: padded planes, g's rows, the accumulators
    T* g_rows = padded + p.chunk * per_block * plane;
    T* acc = g_rows + p.chunk * L * O;
    ImplicitGemm<T> product{};
    product.a = padded;
    product.a_step[0] = plane, product.a_step[1] = p.padded_w, product.a_step[2] = 1;
    product.extent[0] = channels, product.extent[1] = win.kernel_h, product.extent[2] = win.kernel_w;
    product.tap_a = tap_a.data(), product.tap_b = tap_b.data();
    product.depth = OW, product.depth_stride = win.stride_w;
    product.b = g_rows, product.b_step = O, product.n = O;
    product.out = acc;
    product.out_step[0] = K * O, product.out_step[1] = win.kernel_w * O, product.out_step[2] = O;
    if (p.chunks == 0) std::fill(acc, acc + channels * K * O, T(0));
    for (std::int64_t c = 0; c < p.chunks; ++c) {
      const auto [n0, nb] = chunk_images(s, p, c);
      const T* xs = x + (grp * s.images + n0) * C * plane_in;
      for (std::int64_t n = 0; n < nb; ++n)
        copy_into_padded(xs + (n * C + c0) * plane_in, channels, s.h, s.w, p, padded + n * per_block * plane);
      transpose_images(g + (grp * s.images + n0) * O * L, nb, O, L, g_rows);
      product.taps = nb * OH;
      product.accumulate = c > 0;
      implicit_gemm(p.implicit, product);
    }
    transpose_matrix(acc, channels * K, O, O, dw + grp * O * C * K + c0 * K, C * K);
  });
}

// The implicit GEMM's plan (p.implicit set) for `workers` threads.
void plan_implicit(const ConvShape& s, ConvKind kind, std::int64_t workers, ConvPlan& p) {
  const auto& win = s.window;
  const std::int64_t O = s.out_channels, K = win.kernel_h * win.kernel_w;
  // At most one worker per kMultiplyAddGrain of the call's work: a support
  // set's 4x4 layer (3M multiply-adds) took 2.4x as long at two threads as
  // at one.
  const std::int64_t work = s.groups * s.images * p.pixels * O * p.patch;
  const std::int64_t useful_workers = std::clamp<std::int64_t>(work / kMultiplyAddGrain, 1, workers);
  std::int64_t channels = s.in_channels;  // of the padded planes per image
  if (kind != ConvKind::input_grad) {     // x's planes, padded as the window pads them
    p.top = win.pad_h, p.left = win.pad_w;
    p.padded_h = s.h + 2 * win.pad_h, p.padded_w = s.w + 2 * win.pad_w;
  } else {  // g's planes, with room for every offset a stride phase's tap reads
    channels = O;
    p.top = (win.kernel_h - 1) / win.stride_h, p.left = (win.kernel_w - 1) / win.stride_w;
    p.padded_h = p.top + std::max(s.out_h(), (s.h - 1 + win.pad_h) / win.stride_h + 1);
    p.padded_w = p.left + std::max(s.out_w(), (s.w - 1 + win.pad_w) / win.stride_w + 1);
  }
  const std::int64_t groups = std::max<std::int64_t>(s.groups, 1), images = std::max<std::int64_t>(s.images, 1);
  std::int64_t items_per_group = 1;
  if (kind == ConvKind::weight_grad) {
    // One item per group and block of input channels, each summing all of
    // its group's chunks: blocks enough to give every useful worker one,
    // none of them empty.
    const std::int64_t wanted = std::clamp<std::int64_t>(ceil_div(useful_workers, groups), 1, s.in_channels);
    channels = p.block_channels = ceil_div(s.in_channels, wanted);
    p.channel_blocks = items_per_group = ceil_div(s.in_channels, channels);
  }
  // Per image: its padded planes, and g's rows [pixels, O] (weight
  // gradient) or the output channels-last (forward: [pixels, O]; input
  // gradient: [h·w, C]).
  const std::int64_t outputs = kind == ConvKind::input_grad ? s.in_channels * s.h * s.w : p.pixels * O;
  const std::int64_t per_image = std::max<std::int64_t>(channels * p.padded_h * p.padded_w, 1) + outputs;
  p.chunk = std::clamp<std::int64_t>(kImplicitChunkElements / per_image, 1, images);
  if (kind != ConvKind::weight_grad)  // chunks enough to give every useful worker one
    p.chunk = std::min(p.chunk, ceil_div(images, ceil_div(useful_workers, groups)));
  p.chunks = ceil_div(s.images, p.chunk);
  if (kind != ConvKind::weight_grad) items_per_group = p.chunks;
  p.workers = std::clamp<std::int64_t>(useful_workers, 1, std::max<std::int64_t>(s.groups * items_per_group, 1));
  p.per_worker = p.chunk * per_image + (kind == ConvKind::weight_grad ? channels * K * O : 0);  // + the sums
  p.weights = kind == ConvKind::weight_grad ? 0 : s.groups * O * p.patch;
}

}  // namespace

// Set when the library loads; zero-initialised before that, which is
// im2col + GEMM everywhere.
std::atomic<SmallGemmIsa> conv_copy{small_gemm_isa()};

ConvPlan conv_plan(const ConvShape& s, ConvKind kind) {
  ConvPlan p{};
  const bool many_channels = s.in_channels >= kManyChannelsFrom;
  p.implicit = many_channels ? conv_isa() : SmallGemmIsa::none;
  p.channels_last = many_channels && p.implicit == SmallGemmIsa::none;
  p.pixels = s.pixels();
  p.patch = s.patch();
  const std::int64_t workers = s.cpu_workers > 0 ? s.cpu_workers : available_threads();
  if (p.implicit != SmallGemmIsa::none) {
    plan_implicit(s, kind, workers, p);
    return p;
  }
  const std::int64_t L = std::max<std::int64_t>(p.pixels, 1), O = s.out_channels;
  const std::int64_t cap = std::max<std::int64_t>(kMaxChunkScratch / ((p.patch + O) * L), 1);
  // An image with >= 128 output pixels is a large enough GEMM on its own, and
  // the forward's and input gradient's GEMM then writes or reads the NCHW
  // planes directly: a larger chunk would add a copy of y (or g) through
  // memory, which costs more than the larger GEMM gains.
  const bool alone = kind != ConvKind::weight_grad && L >= 128;
  p.chunk = alone ? 1 : std::min(ceil_div(kTargetColumns, L), cap);
  p.chunk = std::clamp<std::int64_t>(p.chunk, 1, std::max<std::int64_t>(s.images, 1));
  p.chunks = ceil_div(s.images, p.chunk);
  p.workers = std::clamp<std::int64_t>(workers, 1, std::max<std::int64_t>(s.groups * p.chunks, 1));
  p.per_worker =
      p.chunk * L * (p.patch + O) + (p.channels_last ? p.chunk * s.in_channels * s.h * s.w + O * p.patch : 0);
  p.weights = p.channels_last ? s.groups * O * p.patch : 0;
  // One group's weight gradient is cut into partial sums that several
  // workers can share, except where it must have the bits of a many-task
  // call, which sums each group's chunks in order: a per-task call with one
  // worker (at one thread, or inside an unsplit run).
  const bool in_order = s.groups > 1 || (s.per_task && workers == 1);
  p.segments = in_order ? 0 : std::min(p.chunks, kWeightGradSegments);
  p.partials = p.segments * O * p.patch;
  return p;
}

std::int64_t conv_scratch_size(const ConvShape& s) {
  std::int64_t size = 0;
  for (const ConvKind kind : {ConvKind::forward, ConvKind::input_grad, ConvKind::weight_grad}) {
    const ConvPlan p = conv_plan(s, kind);
    size = std::max(size, p.weights + p.workers * p.per_worker + p.partials);
  }
  return size;
}

// y [G, N, O, L] = w ⋆ x: the implicit GEMM where the plan takes it, else
// chunk by chunk y's rows [O, nb·L] = W cols. Either way the bias is added
// to each chunk's output while it is in cache (as the tile or the rows are
// written to y's planes, or in place when the GEMM wrote them), not in a
// pass of its own over y.
template <class T>
void conv2d_forward(const ConvShape& s, const T* x, const T* w, const T* bias, std::int64_t bias_group_stride, T* y,
                    T* scratch) {
  const ConvPlan p = conv_plan(s, ConvKind::forward);
  if (p.implicit != SmallGemmIsa::none) return implicit_forward(s, p, x, w, bias, bias_group_stride, y, scratch);
  const std::int64_t L = p.pixels, P = p.patch, O = s.out_channels, plane_in = s.in_channels * s.h * s.w;
  const T* wk = plan_weights(s, p, w, scratch);
  for_each_item(s, p, s.groups * p.chunks, scratch + p.weights, [&](std::int64_t item, const Work<T>& work) {
    const std::int64_t grp = item / p.chunks;
    const auto [n0, nb] = chunk_images(s, p, item % p.chunks);
    const T* xs = x + (grp * s.images + n0) * plane_in;
    T* planes = y + (grp * s.images + n0) * O * L;
    T* out = nb == 1 ? planes : work.block;  // one image's rows are its planes
    if (p.channels_last) {
      transpose_images(xs, nb, s.in_channels, s.h * s.w, work.images);
      im2col_channels_last<T>(work.images, nb, s.in_channels, s.h, s.w, s.window, work.cols);  // [nb·L, P]
      gemm<T>(false, true, O, nb * L, P, T(1), wk + grp * O * P, P, work.cols, P, T(0), out, nb * L);
    } else {
      im2col<T>(xs, 1, nb, s.in_channels, s.h, s.w, s.window, work.cols);  // [P, nb·L]
      gemm<T>(false, false, O, nb * L, P, T(1), wk + grp * O * P, P, work.cols, nb * L, T(0), out, nb * L);
    }
    const T* b = bias == nullptr ? nullptr : bias + grp * bias_group_stride;
    if (nb > 1)
      rows_to_planes(work.block, nb, O, L, b, s.relu, planes);
    else if (b != nullptr || s.relu)
      rows_to_planes(planes, 1, O, L, b, s.relu, planes);  // in place
  });
}

// dx = D(g, w): the implicit GEMM where the plan takes it, else cols = Wᵀ
// g's rows, then col2im.
template <class T>
void conv2d_input_grad(const ConvShape& s, const T* g, const T* w, T* dx, T* scratch) {
  const ConvPlan p = conv_plan(s, ConvKind::input_grad);
  if (p.implicit != SmallGemmIsa::none) return implicit_input_grad(s, p, g, w, dx, scratch);
  const std::int64_t L = p.pixels, P = p.patch, O = s.out_channels, plane_in = s.in_channels * s.h * s.w;
  const T* wk = plan_weights(s, p, w, scratch);
  for_each_item(s, p, s.groups * p.chunks, scratch + p.weights, [&](std::int64_t item, const Work<T>& work) {
    const std::int64_t grp = item / p.chunks;
    const auto [n0, nb] = chunk_images(s, p, item % p.chunks);
    const T* rows = rows_of(g + (grp * s.images + n0) * O * L, nb, O, L, work.block);
    T* dxs = dx + (grp * s.images + n0) * plane_in;
    if (p.channels_last) {
      gemm<T>(true, false, nb * L, P, O, T(1), rows, nb * L, wk + grp * O * P, P, T(0), work.cols, P);
      col2im_channels_last<T>(work.cols, nb, s.in_channels, s.h, s.w, s.window, work.images);
      transpose_images(work.images, nb, s.h * s.w, s.in_channels, dxs);
    } else {
      gemm<T>(true, false, P, nb * L, O, T(1), wk + grp * O * P, P, rows, nb * L, T(0), work.cols, nb * L);
      col2im<T>(work.cols, 1, nb, s.in_channels, s.h, s.w, s.window, dxs);
    }
  });
}

// dw = E(x, g) = Σ over images of g colsᵀ: the implicit GEMM where the plan
// takes it (implicit_weight_grad), else on im2col's columns. There,
// grouped (or one task's, by one worker): one item per group, its chunks
// summed in order; ungrouped: one item per segment (a run of chunks summed
// in order) into its own partial sum, then the partials added in segment
// order. Either way the sums' order does not depend on the thread count.
template <class T>
void conv2d_weight_grad(const ConvShape& s, const T* x, const T* g, T* dw, T* scratch) {
  const ConvPlan p = conv_plan(s, ConvKind::weight_grad);
  if (p.implicit != SmallGemmIsa::none) return implicit_weight_grad(s, p, x, g, dw, scratch);
  const std::int64_t O = s.out_channels, P = p.patch, K = s.window.kernel_h * s.window.kernel_w;
  T* partials = scratch + p.weights + p.workers * p.per_worker;
  if (p.segments == 0) {
    for_each_item(s, p, s.groups, scratch + p.weights, [&](std::int64_t grp, const Work<T>& work) {
      T* dst = p.channels_last ? work.acc : dw + grp * O * P;
      if (p.chunks == 0) std::fill(dst, dst + O * P, T(0));
      for (std::int64_t c = 0; c < p.chunks; ++c) weight_grad_chunk(s, p, x, g, grp, c, work, dst, T(c == 0 ? 0 : 1));
      if (p.channels_last) weights_from_channels_last(work.acc, O, s.in_channels, K, dw + grp * O * P);
    });
    return;
  }
  for_each_item(s, p, p.segments, scratch + p.weights, [&](std::int64_t seg, const Work<T>& work) {
    T* part = partials + seg * O * P;
    const std::int64_t c0 = p.chunks * seg / p.segments, c1 = p.chunks * (seg + 1) / p.segments;
    for (std::int64_t c = c0; c < c1; ++c) weight_grad_chunk(s, p, x, g, 0, c, work, part, T(c == c0 ? 0 : 1));
  });
  T* sum = p.channels_last ? scratch : dw;  // the permuted weights' slot is free now
  std::fill(sum, sum + O * P, T(0));
  for (std::int64_t seg = 0; seg < p.segments; ++seg) {
    const T* part = partials + seg * O * P;
    for (std::int64_t i = 0; i < O * P; ++i) sum[i] += part[i];
  }
  if (p.channels_last) weights_from_channels_last(sum, O, s.in_channels, K, dw);
}

#define METATAPE_CONV_INSTANTIATE(T)                                                                     \
  template void conv2d_forward<T>(const ConvShape&, const T*, const T*, const T*, std::int64_t, T*, T*); \
  template void conv2d_input_grad<T>(const ConvShape&, const T*, const T*, T*, T*);                      \
  template void conv2d_weight_grad<T>(const ConvShape&, const T*, const T*, T*, T*);

METATAPE_CONV_INSTANTIATE(float)
METATAPE_CONV_INSTANTIATE(double)
#undef METATAPE_CONV_INSTANTIATE

}  // namespace metatape::kernels::cpu
