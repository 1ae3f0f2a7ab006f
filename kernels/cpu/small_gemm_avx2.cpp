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
};

}  // namespace

METATAPE_DEFINE_SMALL_GEMM_KERNEL(small_gemm_avx2, Avx2)
METATAPE_DEFINE_IMPLICIT_GEMM_KERNEL(implicit_gemm_avx2, Avx2)

}  // namespace metatape::kernels::cpu
