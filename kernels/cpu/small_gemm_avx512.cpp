// The small-product and implicit-GEMM kernels for AVX-512F (this file is
// compiled with -mavx512f; small_gemm.cpp calls them only where the CPU has
// it). Partial vectors use AVX-512's lane masks.
#include "implicit_gemm_tiles.hpp"
#include "small_gemm_tiles.hpp"

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
  static V splat(T x) { return _mm512_set1_ps(x); }
  static Mask mask(std::int64_t count) { return static_cast<Mask>((1u << count) - 1); }
  static V load(const T* p) { return _mm512_loadu_ps(p); }
  static V load(const T* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  static void store(T* p, V v) { _mm512_storeu_ps(p, v); }
  static void store(T* p, V v, Mask m) { _mm512_mask_storeu_ps(p, m, v); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  // b where either is NaN, or both are zeros; the masked form with every
  // lane set, as in fold below (GCC 12 warns inside the unmasked one).
  static V max(V a, V b) { return _mm512_mask_max_ps(a, 0xFFFF, a, b); }
  static V select(Mask m, V if_set, V otherwise) { return _mm512_mask_blend_ps(m, otherwise, if_set); }
  // Lane l += lane l + 8, then + 4, + 2, + 1: lane 0, in 512-bit registers
  // throughout, by the masked forms of the shuffles with every lane set:
  // GCC 12 warns of an uninitialised value inside the unmasked intrinsics
  // and the 512-to-256-bit casts.
  static T fold(V v) {
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
  static V splat(T x) { return _mm512_set1_pd(x); }
  static Mask mask(std::int64_t count) { return static_cast<Mask>((1u << count) - 1); }
  static V load(const T* p) { return _mm512_loadu_pd(p); }
  static V load(const T* p, Mask m) { return _mm512_maskz_loadu_pd(m, p); }
  static void store(T* p, V v) { _mm512_storeu_pd(p, v); }
  static void store(T* p, V v, Mask m) { _mm512_mask_storeu_pd(p, m, v); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static V mul(V a, V b) { return _mm512_mul_pd(a, b); }
  static V add(V a, V b) { return _mm512_add_pd(a, b); }
  static V max(V a, V b) { return _mm512_mask_max_pd(a, 0xFF, a, b); }
  static V select(Mask m, V if_set, V otherwise) { return _mm512_mask_blend_pd(m, otherwise, if_set); }
  // Lane l += lane l + 4, then + 2, + 1: lane 0 (as the float one).
  static T fold(V v) {
    v = _mm512_add_pd(v, _mm512_mask_shuffle_f64x2(v, 0xFF, v, v, 0xEE));  // 128-bit blocks 2, 3 onto 0, 1
    v = _mm512_add_pd(v, _mm512_mask_shuffle_f64x2(v, 0xFF, v, v, 0x01));  // block 1 onto 0
    v = _mm512_add_pd(v, _mm512_mask_permute_pd(v, 0xFF, v, 0x01));        // lane 1 onto 0
    return _mm512_cvtsd_f64(v);
  }
};

}  // namespace

METATAPE_DEFINE_SMALL_GEMM_KERNEL(small_gemm_avx512, Avx512)
METATAPE_DEFINE_IMPLICIT_GEMM_KERNEL(implicit_gemm_avx512, Avx512)

}  // namespace metatape::kernels::cpu
