// AVX-512F registers of float and double, and the operations the kernels
// use on them: the vector type X of the small-product and implicit-GEMM
// tiles (small_gemm_tiles.hpp, implicit_gemm_tiles.hpp, compiled in
// small_gemm_avx512.cpp), of the short element rows (short_rows.hpp) and of
// the pooling rows (pool_rows.hpp), the last two included by kernels built
// for the baseline. Each function carries the
// avx512f target itself, so that a baseline translation unit may include
// this and call it from its own AVX-512 functions; everything has internal
// linkage, so no two compilations stand in for each other at link time.
// Partial vectors use AVX-512's lane masks.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace metatape::kernels::cpu {
namespace {

template <class T>
struct Avx512;

template <>
struct Avx512<float> {
  using T = float;
  using V = __m512;
  using Mask = __mmask16;
  static constexpr int kLanes = 16;
  [[gnu::target("avx512f")]] static V splat(T x) { return _mm512_set1_ps(x); }
  [[gnu::target("avx512f")]] static Mask mask(std::int64_t count) { return static_cast<Mask>((1u << count) - 1); }
  [[gnu::target("avx512f")]] static V load(const T* p) { return _mm512_loadu_ps(p); }
  [[gnu::target("avx512f")]] static V load(const T* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  [[gnu::target("avx512f")]] static void store(T* p, V v) { _mm512_storeu_ps(p, v); }
  [[gnu::target("avx512f")]] static void store(T* p, V v, Mask m) { _mm512_mask_storeu_ps(p, m, v); }
  [[gnu::target("avx512f")]] static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  [[gnu::target("avx512f")]] static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  [[gnu::target("avx512f")]] static V add(V a, V b) { return _mm512_add_ps(a, b); }
  [[gnu::target("avx512f")]] static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  [[gnu::target("avx512f")]] static V div(V a, V b) { return _mm512_div_ps(a, b); }
  // b where either is NaN, or both are zeros; the masked form with every
  // lane set, as in fold below (GCC 12 warns inside the unmasked one).
  [[gnu::target("avx512f")]] static V max(V a, V b) { return _mm512_mask_max_ps(a, 0xFFFF, a, b); }
  [[gnu::target("avx512f")]] static V select(Mask m, V if_set, V otherwise) {
    return _mm512_mask_blend_ps(m, otherwise, if_set);
  }
  // Lane l += lane l + 8, then + 4, + 2, + 1: lane 0, in 512-bit registers
  // throughout, by the masked forms of the shuffles with every lane set:
  // GCC 12 warns of an uninitialised value inside the unmasked intrinsics
  // and the 512-to-256-bit casts.
  [[gnu::target("avx512f")]] static T fold(V v) {
    v = _mm512_add_ps(v, _mm512_mask_shuffle_f32x4(v, 0xFFFF, v, v, 0xEE));  // 128-bit blocks 2, 3 onto 0, 1
    v = _mm512_add_ps(v, _mm512_mask_shuffle_f32x4(v, 0xFFFF, v, v, 0x01));  // block 1 onto 0
    v = _mm512_add_ps(v, _mm512_mask_permute_ps(v, 0xFFFF, v, 0x0E));        // lanes 2, 3 onto 0, 1
    v = _mm512_add_ps(v, _mm512_mask_permute_ps(v, 0xFFFF, v, 0x01));        // lane 1 onto 0
    return _mm512_cvtss_f32(v);
  }
};

template <>
struct Avx512<double> {
  using T = double;
  using V = __m512d;
  using Mask = __mmask8;
  static constexpr int kLanes = 8;
  [[gnu::target("avx512f")]] static V splat(T x) { return _mm512_set1_pd(x); }
  [[gnu::target("avx512f")]] static Mask mask(std::int64_t count) { return static_cast<Mask>((1u << count) - 1); }
  [[gnu::target("avx512f")]] static V load(const T* p) { return _mm512_loadu_pd(p); }
  [[gnu::target("avx512f")]] static V load(const T* p, Mask m) { return _mm512_maskz_loadu_pd(m, p); }
  [[gnu::target("avx512f")]] static void store(T* p, V v) { _mm512_storeu_pd(p, v); }
  [[gnu::target("avx512f")]] static void store(T* p, V v, Mask m) { _mm512_mask_storeu_pd(p, m, v); }
  [[gnu::target("avx512f")]] static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  [[gnu::target("avx512f")]] static V mul(V a, V b) { return _mm512_mul_pd(a, b); }
  [[gnu::target("avx512f")]] static V add(V a, V b) { return _mm512_add_pd(a, b); }
  [[gnu::target("avx512f")]] static V sub(V a, V b) { return _mm512_sub_pd(a, b); }
  [[gnu::target("avx512f")]] static V div(V a, V b) { return _mm512_div_pd(a, b); }
  [[gnu::target("avx512f")]] static V max(V a, V b) { return _mm512_mask_max_pd(a, 0xFF, a, b); }
  [[gnu::target("avx512f")]] static V select(Mask m, V if_set, V otherwise) {
    return _mm512_mask_blend_pd(m, otherwise, if_set);
  }
  // Lane l += lane l + 4, then + 2, + 1: lane 0 (as the float one).
  [[gnu::target("avx512f")]] static T fold(V v) {
    v = _mm512_add_pd(v, _mm512_mask_shuffle_f64x2(v, 0xFF, v, v, 0xEE));  // 128-bit blocks 2, 3 onto 0, 1
    v = _mm512_add_pd(v, _mm512_mask_shuffle_f64x2(v, 0xFF, v, v, 0x01));  // block 1 onto 0
    v = _mm512_add_pd(v, _mm512_mask_permute_pd(v, 0xFF, v, 0x01));        // lane 1 onto 0
    return _mm512_cvtsd_f64(v);
  }
};

// The mask of a row's vector that starts `left` entries (0 or more) before
// the row's end: every lane when `left` fills the vector.
template <class T>
[[gnu::target("avx512f")]] inline typename Avx512<T>::Mask lanes_left(std::int64_t left) {
  return Avx512<T>::mask(left < Avx512<T>::kLanes ? left : Avx512<T>::kLanes);
}

}  // namespace
}  // namespace metatape::kernels::cpu
