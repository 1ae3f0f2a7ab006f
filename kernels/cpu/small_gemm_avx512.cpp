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
};

}  // namespace

METATAPE_DEFINE_SMALL_GEMM_KERNEL(small_gemm_avx512, Avx512)
METATAPE_DEFINE_IMPLICIT_GEMM_KERNEL(implicit_gemm_avx512, Avx512)

}  // namespace metatape::kernels::cpu
