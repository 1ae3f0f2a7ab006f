// 2×2 max-pooling at stride 2 (Conv4's pooling) and its adjoint in
// AVX-512 vectors of floats, sixteen windows at a time.
//
// The plane loops of window_ops.cpp compare the four candidates of one
// window at a time, about 11 cycles a window on Conv4's 28×28 maps, where
// the pass over the map is several times cheaper; GCC does not vectorise
// them (their rows are 14, 7 or 3 windows long, shorter than its vector
// loop's prologue and epilogue). Here a row of windows is read as two
// input rows, the even and odd columns separated by one permutation each,
// and the row's last vector is masked to it.
//
// Same results as the plane loops, which the pooling tests compare on
// every size Conv4 uses: the maximum is a choice, not arithmetic, made by
// the same strict comparisons in the same order (so the first maximum wins
// ties and -0 against +0 keeps the earlier one), and the adjoint writes
// 0 + g where the window's index points and +0 elsewhere, as zeroing the
// plane then adding g does. Neither handles NaN: max_pool_row reports one
// and its caller pools the plane the general way; max_unpool_row reports an
// index outside its window and its caller scatters the plane instead.
// float only, x86-64 builds only (METATAPE_SMALL_GEMM), called only where
// element_loop_isa() is AVX-512.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "avx512_vectors.hpp"
#include "small_gemm.hpp"

namespace metatape::kernels::cpu::pool_rows {

// Whether the vector rows are the copy in use.
inline bool in_use() { return element_loop_isa() == SmallGemmIsa::avx512; }

// The fewest windows a row must have for the adjoint's vector rows: each
// row costs about a hundred instructions (index comparisons in two halves,
// two interleaving stores per input row), more than zeroing a plane and
// adding a few gradients. Measured on Conv4's maps (bench-ab-kernels, the
// vector rows against the scatter): 28×28 (14 windows a row) 0.83x the
// scatter's time, 14×14 (7) 1.31x and 7×7 (3) 3.9x.
inline constexpr std::int64_t kMinUnpoolWindows = 8;

namespace detail {

// The even and odd entries of the 2·count floats at p (count <= 16), as
// lanes 0..count-1 of *even and *odd; the other lanes are 0.
[[gnu::target("avx512f")]] inline void split_pairs(const float* p, std::int64_t count, __m512* even, __m512* odd) {
  const std::int64_t entries = 2 * count;
  const __m512 lo = _mm512_maskz_loadu_ps(lanes_left<float>(entries), p);
  const __m512 hi = _mm512_maskz_loadu_ps(lanes_left<float>(entries > 16 ? entries - 16 : 0), p + 16);
  const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  *even = _mm512_permutex2var_ps(lo, evens, hi);
  *odd = _mm512_permutex2var_ps(lo, odds, hi);
}

// The inverse: the 2·count floats at p from lanes 0..count-1 of even and odd.
[[gnu::target("avx512f")]] inline void join_pairs(float* p, std::int64_t count, __m512 even, __m512 odd) {
  const std::int64_t entries = 2 * count;
  const __m512i low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  _mm512_mask_storeu_ps(p, lanes_left<float>(entries), _mm512_permutex2var_ps(even, low, odd));
  if (entries > 16)
    _mm512_mask_storeu_ps(p + 16, lanes_left<float>(entries - 16), _mm512_permutex2var_ps(even, high, odd));
}

// The flat index of each of sixteen windows' first input, base + 2·lane,
// as int64 in two halves: lanes 0-7 in *lo, 8-15 in *hi.
[[gnu::target("avx512f")]] inline void window_starts(std::int64_t base, __m512i* lo, __m512i* hi) {
  const __m512i start = _mm512_set1_epi64(base);
  *lo = _mm512_add_epi64(start, _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14));
  *hi = _mm512_add_epi64(start, _mm512_setr_epi64(16, 18, 20, 22, 24, 26, 28, 30));
}

// 16 int32 lanes widened to int64 and added to their windows' starts
// (window_starts of base), stored as `count` int64 at out.
[[gnu::target("avx512f")]] inline void store_indices(std::int64_t* out, std::int64_t count, __m512i offsets,
                                                     std::int64_t base) {
  __m512i start_lo, start_hi;
  window_starts(base, &start_lo, &start_hi);
  // The masked forms with every lane set: GCC 12 warns of an uninitialised
  // value inside the unmasked extraction and widening.
  const __m512i lo =
      _mm512_add_epi64(start_lo, _mm512_maskz_cvtepi32_epi64(0xFF, _mm512_maskz_extracti64x4_epi64(0xF, offsets, 0)));
  const __m512i hi =
      _mm512_add_epi64(start_hi, _mm512_maskz_cvtepi32_epi64(0xFF, _mm512_maskz_extracti64x4_epi64(0xF, offsets, 1)));
  const __mmask16 m = lanes_left<float>(count);
  _mm512_mask_storeu_epi64(out, static_cast<__mmask8>(m & 0xFF), lo);
  if (count > 8) _mm512_mask_storeu_epi64(out + 8, static_cast<__mmask8>(m >> 8), hi);
}

// The lanes of 16 int64 (lo: lanes 0-7, hi: 8-15) equal to k.
[[gnu::target("avx512f")]] inline __mmask16 equal(__m512i lo, __m512i hi, __m512i k) {
  return static_cast<__mmask16>(_mm512_cmpeq_epi64_mask(lo, k) | (_mm512_cmpeq_epi64_mask(hi, k) << 8));
}

}  // namespace detail

// One row of ow_n windows: input rows r0 and r1 = r0 + w; window ow's
// maximum into values[ow] and its flat index, at0 + 2·ow + one of {0, 1, w,
// w + 1}, into out[ow]. False, with values and out partly written, if an
// input is NaN.
[[gnu::target("avx512f")]] inline bool max_pool_row(const float* r0, std::int64_t ow_n, std::int64_t w,
                                                    std::int64_t at0, float* values, std::int64_t* out) {
  const __m512i one = _mm512_set1_epi32(1), right_below = _mm512_set1_epi32(static_cast<int>(w + 1));
  const __m512i below = _mm512_set1_epi32(static_cast<int>(w));
  __mmask16 nan = 0;
  for (std::int64_t ow = 0; ow < ow_n; ow += 16) {
    const std::int64_t count = ow_n - ow < 16 ? ow_n - ow : 16;
    __m512 a, b, c, d;
    detail::split_pairs(r0 + 2 * ow, count, &a, &b);
    detail::split_pairs(r0 + w + 2 * ow, count, &c, &d);
    nan |= _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(c, d, _CMP_UNORD_Q);
    // Strictly greater takes over, in the order a, b, c, d.
    const __mmask16 take_b = _mm512_cmp_ps_mask(b, a, _CMP_GT_OQ);
    const __m512 ab = _mm512_mask_blend_ps(take_b, a, b);
    const __mmask16 take_c = _mm512_cmp_ps_mask(c, ab, _CMP_GT_OQ);
    const __m512 abc = _mm512_mask_blend_ps(take_c, ab, c);
    const __mmask16 take_d = _mm512_cmp_ps_mask(d, abc, _CMP_GT_OQ);
    __m512i offset = _mm512_maskz_mov_epi32(take_b, one);
    offset = _mm512_mask_mov_epi32(offset, take_c, below);
    offset = _mm512_mask_mov_epi32(offset, take_d, right_below);
    _mm512_mask_storeu_ps(values + ow, lanes_left<float>(count), _mm512_mask_blend_ps(take_d, abc, d));
    detail::store_indices(out + ow, count, offset, at0 + 2 * ow);
  }
  return nan == 0;
}

// The adjoint of one row of ow_n windows: g[ow] to the input where
// index[ow] points (0 + g there, +0 at the window's other three), into
// rows r0 and r0 + w of dx. False, with those rows partly written, if an
// index is not one of its window's four.
[[gnu::target("avx512f")]] inline bool max_unpool_row(const float* g, const std::int64_t* index, std::int64_t ow_n,
                                                      std::int64_t w, std::int64_t at0, float* r0) {
  const __m512 zero = _mm512_setzero_ps();
  const __m512i one = _mm512_set1_epi64(1), below = _mm512_set1_epi64(w), right_below = _mm512_set1_epi64(w + 1);
  __mmask16 outside = 0;
  for (std::int64_t ow = 0; ow < ow_n; ow += 16) {
    const std::int64_t count = ow_n - ow < 16 ? ow_n - ow : 16;
    const __mmask16 live = lanes_left<float>(count);
    // Each index relative to its window's first input, per half of the lanes.
    __m512i start_lo, start_hi;
    detail::window_starts(at0 + 2 * ow, &start_lo, &start_hi);
    const __m512i lo =
        _mm512_sub_epi64(_mm512_maskz_loadu_epi64(static_cast<__mmask8>(live & 0xFF), index + ow), start_lo);
    const __m512i hi =
        _mm512_sub_epi64(_mm512_maskz_loadu_epi64(static_cast<__mmask8>(live >> 8), index + ow + 8), start_hi);
    const __mmask16 top_left = detail::equal(lo, hi, _mm512_setzero_si512()) & live;
    const __mmask16 top_right = detail::equal(lo, hi, one) & live;
    const __mmask16 bottom_left = detail::equal(lo, hi, below) & live;
    const __mmask16 bottom_right = detail::equal(lo, hi, right_below) & live;
    outside |= live & ~(top_left | top_right | bottom_left | bottom_right);
    const __m512 v = _mm512_add_ps(zero, _mm512_maskz_loadu_ps(live, g + ow));
    detail::join_pairs(r0 + 2 * ow, count, _mm512_maskz_mov_ps(top_left, v), _mm512_maskz_mov_ps(top_right, v));
    detail::join_pairs(r0 + w + 2 * ow, count, _mm512_maskz_mov_ps(bottom_left, v),
                       _mm512_maskz_mov_ps(bottom_right, v));
  }
  return outside == 0;
}

// Plane p of x ([planes, h, w]) pooled into y and index ([planes, h / 2,
// w / 2]), each index plus shift; false, the plane's outputs partly
// written, if it holds a NaN where a window reads.
[[gnu::target("avx512f")]] inline bool max_pool_plane(const float* x, std::int64_t p, std::int64_t h, std::int64_t w,
                                                      float* y, std::int64_t* index, std::int64_t shift) {
  const std::int64_t oh_n = h / 2, ow_n = w / 2;
  bool finite = true;
  for (std::int64_t oh = 0; oh < oh_n; ++oh) {
    const std::int64_t at0 = p * h * w + 2 * oh * w, out = (p * oh_n + oh) * ow_n;
    finite = max_pool_row(x + at0, ow_n, w, at0 + shift, y + out, index + out) && finite;
  }
  return finite;
}

// The adjoint of plane p: every entry of dx's plane written, the column and
// row past the windows (odd w, odd h) zero. False, the plane partly
// written, if an index lies outside its window.
[[gnu::target("avx512f")]] inline bool max_unpool_plane(const float* g, const std::int64_t* index, std::int64_t p,
                                                        std::int64_t h, std::int64_t w, float* dx) {
  const std::int64_t oh_n = h / 2, ow_n = w / 2;
  float* plane = dx + p * h * w;
  bool inside = true;
  for (std::int64_t oh = 0; oh < oh_n; ++oh) {
    const std::int64_t at0 = p * h * w + 2 * oh * w, out = (p * oh_n + oh) * ow_n;
    inside = max_unpool_row(g + out, index + out, ow_n, w, at0, dx + at0) && inside;
    if (w % 2 != 0) plane[2 * oh * w + w - 1] = plane[(2 * oh + 1) * w + w - 1] = 0.0f;
  }
  if (h % 2 != 0)
    for (std::int64_t j = 0; j < w; ++j) plane[(h - 1) * w + j] = 0.0f;
  return inside;
}

}  // namespace metatape::kernels::cpu::pool_rows
