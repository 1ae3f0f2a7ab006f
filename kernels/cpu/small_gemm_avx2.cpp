// The small-product and implicit-GEMM kernels for AVX2 and FMA (this file
// is compiled with -mavx2 -mfma; small_gemm.cpp calls them only where the
// CPU has both).
#include "implicit_gemm_tiles.hpp"
#include "small_gemm_tiles.hpp"

namespace metatape::kernels::cpu {
namespace {

template <class T>
struct Avx2;

template <>
struct Avx2<float> {
  using T = float;
  using V = __m256;
  using Mask = __m256i;
  static constexpr int kLanes = 8;
  static V splat(T x) { return _mm256_set1_ps(x); }
  static Mask mask(std::int64_t count) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static V load(const T* p) { return _mm256_loadu_ps(p); }
  static V load(const T* p, Mask m) { return _mm256_maskload_ps(p, m); }
  static void store(T* p, V v) { _mm256_storeu_ps(p, v); }
  static void store(T* p, V v, Mask m) { _mm256_maskstore_ps(p, m, v); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }  // b where either is NaN, or both are zeros
  static V select(Mask m, V if_set, V otherwise) { return _mm256_blendv_ps(otherwise, if_set, _mm256_castsi256_ps(m)); }
  // Lane l += lane l + 4, then + 2, + 1: lane 0.
  static T fold(V v) {
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
  }
};

template <>
struct Avx2<double> {
  using T = double;
  using V = __m256d;
  using Mask = __m256i;
  static constexpr int kLanes = 4;
  static V splat(T x) { return _mm256_set1_pd(x); }
  static Mask mask(std::int64_t count) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(count), _mm256_setr_epi64x(0, 1, 2, 3));
  }
  static V load(const T* p) { return _mm256_loadu_pd(p); }
  static V load(const T* p, Mask m) { return _mm256_maskload_pd(p, m); }
  static void store(T* p, V v) { _mm256_storeu_pd(p, v); }
  static void store(T* p, V v, Mask m) { _mm256_maskstore_pd(p, m, v); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static V mul(V a, V b) { return _mm256_mul_pd(a, b); }
  static V add(V a, V b) { return _mm256_add_pd(a, b); }
  static V max(V a, V b) { return _mm256_max_pd(a, b); }
  static V select(Mask m, V if_set, V otherwise) { return _mm256_blendv_pd(otherwise, if_set, _mm256_castsi256_pd(m)); }
  // Lane l += lane l + 2, then + 1: lane 0.
  static T fold(V v) {
    const __m128d q = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(q, _mm_unpackhi_pd(q, q)));
  }
};

}  // namespace

METATAPE_DEFINE_SMALL_GEMM_KERNEL(small_gemm_avx2, Avx2)
METATAPE_DEFINE_IMPLICIT_GEMM_KERNEL(implicit_gemm_avx2, Avx2)

}  // namespace metatape::kernels::cpu
