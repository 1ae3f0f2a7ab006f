// The register tiles of the small-product kernel (small_gemm.hpp), written
// once over a vector type X and compiled once per instruction set, in its
// own translation unit with that set enabled (small_gemm_avx2.cpp,
// small_gemm_avx512.cpp). Everything here has internal linkage, so the two
// compilations never stand in for each other at link time.
//
// X supplies: T, V (one register of T), Mask, kLanes, splat(x) (x in every
// lane), mask(count) (lanes below count), load(p[, mask]),
// store(p, v[, mask]), fma(a, b, c) (a · b + c, one rounding), mul.
//
// A tile is MR rows of C by two vectors of columns: per step p of the sum,
// MR broadcasts of A's entries and two loads of B's row p feed 2·MR fused
// multiply-adds, every accumulator in a register. Columns past the last
// full pair of vectors take one (masked) vector at a time. Each entry of C
// is fma(a_ip, b_pj, c) for p = 0, 1, … from 0, whatever the vector width,
// so both instruction sets give the same bits.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "small_gemm.hpp"

namespace metatape::kernels::cpu {
namespace {

// fma(beta, c, alpha · acc) into one vector of C (alpha · acc rounded
// first; alpha = 1 skips it), written as one fused operation so that no
// compiler contraction can change it; beta = 0 never reads C (NaN there is
// ignored, as in GEMM). `mask` selects the lanes of a partial vector.
template <class X, class... Mask>
inline void finish(typename X::T* c, typename X::V acc, typename X::T alpha, typename X::T beta, Mask... mask) {
  using T = typename X::T;
  if (alpha != T(1)) acc = X::mul(X::splat(alpha), acc);
  if (beta != T(0)) acc = X::fma(X::splat(beta), X::load(c, mask...), acc);
  X::store(c, acc, mask...);
}

// MR rows of C (all n columns). a_row and a_col step A's entries down
// op(A)'s rows and along its columns; B is [k, n] with rows ldb apart.
template <class X, int MR>
void row_tile(std::int64_t n, std::int64_t k, const typename X::T* a, std::int64_t a_row, std::int64_t a_col,
              const typename X::T* b, std::int64_t ldb, typename X::T alpha, typename X::T beta, typename X::T* c,
              std::int64_t ldc) {
  using T = typename X::T;
  using V = typename X::V;
  constexpr int L = X::kLanes;
  std::int64_t j = 0;
  for (; j + 2 * L <= n; j += 2 * L) {
    V acc[MR][2];
    for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = X::splat(T(0));
    for (std::int64_t p = 0; p < k; ++p) {
      const V b0 = X::load(b + p * ldb + j), b1 = X::load(b + p * ldb + j + L);
      for (int r = 0; r < MR; ++r) {
        const V ar = X::splat(a[r * a_row + p * a_col]);
        acc[r][0] = X::fma(ar, b0, acc[r][0]);
        acc[r][1] = X::fma(ar, b1, acc[r][1]);
      }
    }
    for (int r = 0; r < MR; ++r) {
      finish<X>(c + r * ldc + j, acc[r][0], alpha, beta);
      finish<X>(c + r * ldc + j + L, acc[r][1], alpha, beta);
    }
  }
  for (; j < n; j += L) {
    const typename X::Mask lanes = X::mask(n - j < L ? n - j : L);
    V acc[MR];
    for (int r = 0; r < MR; ++r) acc[r] = X::splat(T(0));
    for (std::int64_t p = 0; p < k; ++p) {
      const V bp = X::load(b + p * ldb + j, lanes);
      for (int r = 0; r < MR; ++r) acc[r] = X::fma(X::splat(a[r * a_row + p * a_col]), bp, acc[r]);
    }
    for (int r = 0; r < MR; ++r) finish<X>(c + r * ldc + j, acc[r], alpha, beta, lanes);
  }
}

// dst[q][j] = src[j][q] for an 8 x 8 block of floats (rows lds and ldd
// apart), in AVX registers (both instruction sets have them).
inline void transpose_block(const float* src, std::int64_t lds, float* dst, std::int64_t ldd) {
  __m256 r[8];
  for (int q = 0; q < 8; ++q) r[q] = _mm256_loadu_ps(src + q * lds);
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s[8] = {_mm256_shuffle_ps(t0, t2, 0x44), _mm256_shuffle_ps(t0, t2, 0xEE),
                       _mm256_shuffle_ps(t1, t3, 0x44), _mm256_shuffle_ps(t1, t3, 0xEE),
                       _mm256_shuffle_ps(t4, t6, 0x44), _mm256_shuffle_ps(t4, t6, 0xEE),
                       _mm256_shuffle_ps(t5, t7, 0x44), _mm256_shuffle_ps(t5, t7, 0xEE)};
  for (int q = 0; q < 4; ++q) {
    _mm256_storeu_ps(dst + q * ldd, _mm256_permute2f128_ps(s[q], s[q + 4], 0x20));
    _mm256_storeu_ps(dst + (q + 4) * ldd, _mm256_permute2f128_ps(s[q], s[q + 4], 0x31));
  }
}

// The same for a 4 x 4 block of doubles.
inline void transpose_block(const double* src, std::int64_t lds, double* dst, std::int64_t ldd) {
  const __m256d r0 = _mm256_loadu_pd(src), r1 = _mm256_loadu_pd(src + lds), r2 = _mm256_loadu_pd(src + 2 * lds),
                r3 = _mm256_loadu_pd(src + 3 * lds);
  const __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
  const __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
  _mm256_storeu_pd(dst, _mm256_permute2f128_pd(t0, t2, 0x20));
  _mm256_storeu_pd(dst + ldd, _mm256_permute2f128_pd(t1, t3, 0x20));
  _mm256_storeu_pd(dst + 2 * ldd, _mm256_permute2f128_pd(t0, t2, 0x31));
  _mm256_storeu_pd(dst + 3 * ldd, _mm256_permute2f128_pd(t1, t3, 0x31));
}

// panel[p][j] = B[j][p]: op(B) of a transposed B ([n, k], rows ldb apart)
// laid out [k, n].
template <class T>
void transpose_into(std::int64_t n, std::int64_t k, const T* b, std::int64_t ldb, T* panel) {
  constexpr int kBlock = 32 / sizeof(T);  // one AVX register of T
  std::int64_t j = 0;
  for (; j + kBlock <= n; j += kBlock) {
    std::int64_t p = 0;
    for (; p + kBlock <= k; p += kBlock) transpose_block(b + j * ldb + p, ldb, panel + p * n + j, n);
    for (; p < k; ++p)
      for (int q = 0; q < kBlock; ++q) panel[p * n + j + q] = b[(j + q) * ldb + p];
  }
  for (; j < n; ++j)
    for (std::int64_t p = 0; p < k; ++p) panel[p * n + j] = b[j * ldb + p];
}

// C = alpha · op(A) op(B) + beta · C, for k · n <= kSmallGemmMaxPanel.
template <class X>
void small_product(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, typename X::T alpha,
                   const typename X::T* a, std::int64_t lda, const typename X::T* b, std::int64_t ldb,
                   typename X::T beta, typename X::T* c, std::int64_t ldc) {
  using T = typename X::T;
  alignas(64) T panel[kSmallGemmMaxPanel];
  if (trans_b) {
    transpose_into(n, k, b, ldb, panel);
    b = panel;
    ldb = n;
  }
  const std::int64_t a_row = trans_a ? 1 : lda, a_col = trans_a ? lda : 1;
  constexpr int MR = 6;
  std::int64_t i = 0;
  for (; i + MR <= m; i += MR)
    row_tile<X, MR>(n, k, a + i * a_row, a_row, a_col, b, ldb, alpha, beta, c + i * ldc, ldc);
  const T* ai = a + i * a_row;
  T* ci = c + i * ldc;
  switch (m - i) {
    case 5:
      return row_tile<X, 5>(n, k, ai, a_row, a_col, b, ldb, alpha, beta, ci, ldc);
    case 4:
      return row_tile<X, 4>(n, k, ai, a_row, a_col, b, ldb, alpha, beta, ci, ldc);
    case 3:
      return row_tile<X, 3>(n, k, ai, a_row, a_col, b, ldb, alpha, beta, ci, ldc);
    case 2:
      return row_tile<X, 2>(n, k, ai, a_row, a_col, b, ldb, alpha, beta, ci, ldc);
    case 1:
      return row_tile<X, 1>(n, k, ai, a_row, a_col, b, ldb, alpha, beta, ci, ldc);
    default:
      return;
  }
}

}  // namespace
}  // namespace metatape::kernels::cpu

// Defines small_gemm.hpp's kernel `name` for float and double as
// small_product over the vector traits Traits<T>, in the translation unit
// compiled for Traits' instruction set.
#define METATAPE_DEFINE_SMALL_GEMM_KERNEL(name, Traits)                                                              \
  template <class T>                                                                                                 \
  void name(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,         \
            std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {                        \
    small_product<Traits<T>>(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);                        \
  }                                                                                                                  \
  template void name<float>(bool, bool, std::int64_t, std::int64_t, std::int64_t, float, const float*, std::int64_t, \
                            const float*, std::int64_t, float, float*, std::int64_t);                                \
  template void name<double>(bool, bool, std::int64_t, std::int64_t, std::int64_t, double, const double*,            \
                             std::int64_t, const double*, std::int64_t, double, double*, std::int64_t);
