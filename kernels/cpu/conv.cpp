#include "conv.hpp"

#include <algorithm>
#include <cstring>
#include <type_traits>
#ifdef __SSE2__
#include <xmmintrin.h>
#endif

#include "gemm.hpp"
#include "parallel.hpp"
#include "window_ops.hpp"

namespace metatape::kernels::cpu {
namespace {

// Input channels from which the channels-last columns pay for the transposes
// around them (below, the per-channel rows are few and long enough).
constexpr std::int64_t kChannelsLastFrom = 8;
// Columns of a chunk's GEMM that OpenBLAS needs to come near its peak with
// 64 output channels, and the most scratch elements one chunk may take.
constexpr std::int64_t kTargetColumns = 256;
constexpr std::int64_t kMaxChunkScratch = std::int64_t{1} << 20;
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

// The way back, plus bias[c] on channel c's pixels when bias is not null.
template <class T>
void rows_to_planes(const T* in, std::int64_t images, std::int64_t channels, std::int64_t pixels, const T* bias,
                    T* out) {
  for (std::int64_t n = 0; n < images; ++n)
    for (std::int64_t c = 0; c < channels; ++c) {
      const T* from = in + (c * images + n) * pixels;
      T* to = out + (n * channels + c) * pixels;
      if (bias == nullptr) {
        std::memcpy(to, from, static_cast<std::size_t>(pixels) * sizeof(T));
      } else {
        const T b = bias[c];
        for (std::int64_t i = 0; i < pixels; ++i) to[i] = from[i] + b;
      }
    }
}

// planes [channels, pixels] += bias[c] on every pixel of channel c.
template <class T>
void add_bias(T* planes, std::int64_t channels, std::int64_t pixels, const T* bias) {
  for (std::int64_t c = 0; c < channels; ++c) {
    const T b = bias[c];
    T* plane = planes + c * pixels;
    for (std::int64_t i = 0; i < pixels; ++i) plane[i] += b;
  }
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

// Each image [rows, cols] -> [cols, rows]: NCHW <-> NHWC. Floats go four by
// four through SSE registers (x86-64's baseline), the ragged edges and
// doubles element by element.
template <class T>
void transpose_images(const T* in, std::int64_t images, std::int64_t rows, std::int64_t cols, T* out) {
  for (std::int64_t n = 0; n < images; ++n) {
    const T* a = in + n * rows * cols;
    T* b = out + n * rows * cols;
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
          __m128 x0 = _mm_loadu_ps(a + r * cols + c), x1 = _mm_loadu_ps(a + (r + 1) * cols + c),
                 x2 = _mm_loadu_ps(a + (r + 2) * cols + c), x3 = _mm_loadu_ps(a + (r + 3) * cols + c);
          _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
          _mm_storeu_ps(b + c * rows + r, x0);
          _mm_storeu_ps(b + (c + 1) * rows + r, x1);
          _mm_storeu_ps(b + (c + 2) * rows + r, x2);
          _mm_storeu_ps(b + (c + 3) * rows + r, x3);
        }
    }
#endif
    transpose_block(a, cols, b, rows, 0, r4, c4, cols);    // right edge of the SIMD blocks
    transpose_block(a, cols, b, rows, r4, rows, 0, cols);  // bottom rows (all, without SIMD)
  }
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

}  // namespace

ConvPlan conv_plan(const ConvShape& s, ConvKind kind) {
  ConvPlan p{};
  p.channels_last = s.in_channels >= kChannelsLastFrom;
  p.pixels = s.pixels();
  p.patch = s.patch();
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
  const std::int64_t workers = s.cpu_workers > 0 ? s.cpu_workers : available_threads();
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

// y [G, N, O, L] = w ⋆ x, chunk by chunk: y's rows [O, nb·L] = W cols. The
// bias is added to each chunk's output while it is in cache (as it is copied
// to y's planes, or in place when the GEMM wrote them), not in a pass of its
// own over y.
template <class T>
void conv2d_forward(const ConvShape& s, const T* x, const T* w, const T* bias, std::int64_t bias_group_stride, T* y,
                    T* scratch) {
  const ConvPlan p = conv_plan(s, ConvKind::forward);
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
      rows_to_planes(work.block, nb, O, L, b, planes);
    else if (b != nullptr)
      add_bias(planes, O, L, b);
  });
}

// dx = D(g, w): cols = Wᵀ g's rows, then col2im.
template <class T>
void conv2d_input_grad(const ConvShape& s, const T* g, const T* w, T* dx, T* scratch) {
  const ConvPlan p = conv_plan(s, ConvKind::input_grad);
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

// dw = E(x, g) = Σ over images of g colsᵀ. Grouped (or one task's, by one
// worker): one item per group, its chunks summed in order. Ungrouped: one item per segment (a run of chunks
// summed in order) into its own partial sum, then the partials added in
// segment order. Either way the sums' order does not depend on the thread
// count.
template <class T>
void conv2d_weight_grad(const ConvShape& s, const T* x, const T* g, T* dw, T* scratch) {
  const ConvPlan p = conv_plan(s, ConvKind::weight_grad);
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
