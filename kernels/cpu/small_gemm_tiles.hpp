// The register tiles of the small-product kernel (small_gemm.hpp), written
// once over a vector type X and compiled once per instruction set, in its
// own translation unit with that set enabled (small_gemm_avx2.cpp,
// small_gemm_avx512.cpp). Everything here has internal linkage, so the two
// compilations never stand in for each other at link time.
//
// X supplies: T, V (one register of T), Mask, kLanes, splat(x) (x in every
// lane), mask(count) (lanes below count), load(p[, mask]),
// store(p, v[, mask]), fma(a, b, c) (a · b + c, one rounding), mul, add,
// select(mask, if_set, otherwise), fold(v) (the lanes added pairwise: lane
// l + kLanes/2 into l, and so on down to lane 0).
//
// A tile is MR rows of C by NV vectors of columns (up to 8 rows by 4
// vectors with AVX-512's 32 registers, 2 vectors with AVX2's 16): per step
// p of the sum, MR broadcasts of A's entries and NV loads of B's row p feed
// MR·NV fused multiply-adds, every accumulator in a register; the last
// vector of a row of C is masked where n is not a multiple of the width.
// Each entry of C is fma(a_ip, b_pj, c) for p = 0, 1, … from 0, whatever
// the vector width or tile, so both instruction sets give the same bits.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "compile_time_count.hpp"
#include "small_gemm.hpp"

namespace metatape::kernels::cpu {
namespace {

// How a product finishes each entry s of op(A) op(B): plain, c = s (alpha
// = 1 and beta = 0 known at compile time: the engine's products, so no
// store waits on a test of them); accumulating, c = c + s (alpha = 1 and
// beta = 1 known at compile time: a gradient added into an adjoint, the
// bits of binary add); scaled, c = fma(beta, c, alpha · s); linear,
// c = relu(s + bias_j), a layer's epilogue (METATAPE_SMALL_GEMM_EPILOGUE).
// Finish carries the run-time values of the kind chosen; `bias` points at
// the bias entry of the columns at hand.
enum class FinishKind { plain, accumulating, scaled, linear };
template <class T>
struct Finish {
  T alpha = T(1), beta = T(0);
  const T* bias = nullptr;
  bool relu = false;
};

// One vector of C, `column` entries past the columns `f` stands at: a
// layer's acc + bias then max(0, ·), which keeps a NaN or −0 (the second
// operand's) as relu does; the kinds that read C already hold their
// results (combine_with_c); then the store. `mask` selects the lanes of a
// partial vector.
template <class X, FinishKind kKind, class... Mask>
inline void finish(typename X::T* c, typename X::V acc, const Finish<typename X::T>& f, int column, Mask... mask) {
  using T = typename X::T;
  if constexpr (kKind == FinishKind::linear) {
    if (f.bias != nullptr) acc = X::add(acc, X::load(f.bias + column, mask...));
    if (f.relu) acc = X::max(X::splat(T(0)), acc);
  }
  X::store(c, acc, mask...);
}

// Vector registers of X's instruction set (32 with AVX-512, 16 with AVX2),
// the vectors of columns a tile may span, and the rows of a tile of NV
// vectors: its MR · NV accumulators, NV vectors of B's row and one
// broadcast must fit the registers (8 rows at most).
template <class X>
inline constexpr int kVectorRegisters = sizeof(typename X::V) == 64 ? 32 : 16;
template <class X>
inline constexpr int kMaxTileVectors = kVectorRegisters<X> == 32 ? 4 : 2;
template <class X, int NV>
inline constexpr int kMaxTileRows = (kVectorRegisters<X> - 1 - NV) / NV < 8 ? (kVectorRegisters<X> - 1 - NV) / NV : 8;

// The tile's sums combined with its entries of C, for the kinds that read
// C: accumulating, acc + c; scaled, fma(beta, c, alpha · acc) (alpha · acc
// rounded first; alpha = 1 skips it), written as one fused operation so
// that no compiler contraction can change it, and beta = 0 never reads C
// (NaN there is ignored, as in GEMM). Every entry is read before the tile
// stores any: a row's masked last vector spans the next row's first
// entries, and a read of C after that masked store waited for it to reach
// the cache (loads interleaved with the stores made [40 x 10]ᵀ [10 x 40]
// take twice as long as the plain product; read first, 1.16 times).
template <class X, FinishKind kKind, int MR, int NV, bool kPartial>
inline void combine_with_c(typename X::V (&acc)[MR][NV], const typename X::T* c, std::int64_t ldc,
                           const Finish<typename X::T>& f, typename X::Mask last) {
  using T = typename X::T;
  constexpr int L = X::kLanes;
  if constexpr (kKind == FinishKind::scaled) {
    if (f.alpha != T(1))
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[r][v] = X::mul(X::splat(f.alpha), acc[r][v]);
    if (f.beta == T(0)) return;
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const typename X::V cv =
          kPartial && v == NV - 1 ? X::load(c + r * ldc + v * L, last) : X::load(c + r * ldc + v * L);
      acc[r][v] = kKind == FinishKind::scaled ? X::fma(X::splat(f.beta), cv, acc[r][v]) : X::add(cv, acc[r][v]);
    }
}

// One register tile: MR rows of C by NV vectors of columns, the last
// vector's lanes cut to `last` when kPartial. a_row and a_col step A's
// entries down op(A)'s rows and along its columns; B is [k, NV vectors]
// with rows ldb apart. The loops over rows and vectors are unrolled by
// pragma: GCC 12 at -O3 left some of these nests rolled (18 and more
// accumulators) and kept the accumulators in memory, storing each one on
// every step of the sum, which halved the speed of [40 x 10] x [10 x 40].
template <class X, FinishKind kKind, int MR, int NV, bool kPartial>
void tile(std::int64_t k, const typename X::T* a, std::int64_t a_row, std::int64_t a_col, const typename X::T* b,
          std::int64_t ldb, const Finish<typename X::T>& f, typename X::T* c, std::int64_t ldc, typename X::Mask last) {
  using T = typename X::T;
  using V = typename X::V;
  constexpr int L = X::kLanes;
  V acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = X::splat(T(0));
  for (std::int64_t p = 0; p < k; ++p) {
    V bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      bv[v] = kPartial && v == NV - 1 ? X::load(b + p * ldb + v * L, last) : X::load(b + p * ldb + v * L);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const V ar = X::splat(a[r * a_row + p * a_col]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = X::fma(ar, bv[v], acc[r][v]);
    }
  }
  if constexpr (kKind == FinishKind::accumulating || kKind == FinishKind::scaled)
    combine_with_c<X, kKind, MR, NV, kPartial>(acc, c, ldc, f, last);
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if (kPartial && v == NV - 1)
        finish<X, kKind>(c + r * ldc + v * L, acc[r][v], f, v * L, last);
      else
        finish<X, kKind>(c + r * ldc + v * L, acc[r][v], f, v * L);
    }
}

// The m rows of a block of NV vectors of columns, in tiles of at most
// kMaxTileRows rows, the rows shared out evenly (10 rows as 5 + 5, not
// 8 + 2, whose 2-row tile has too few accumulators to hide the latency of
// its fused multiply-adds).
template <class X, FinishKind kKind, int NV, bool kPartial>
void column_block(std::int64_t m, std::int64_t k, const typename X::T* a, std::int64_t a_row, std::int64_t a_col,
                  const typename X::T* b, std::int64_t ldb, const Finish<typename X::T>& f, typename X::T* c,
                  std::int64_t ldc, typename X::Mask last) {
  constexpr int kRows = kMaxTileRows<X, NV>;
  // One tile needs no division (a product's few hundred multiply-adds
  // would otherwise wait on two of them).
  const std::int64_t tiles = (m + kRows - 1) / kRows, base = tiles == 1 ? m : m / tiles,
                     extra = tiles == 1 ? 0 : m % tiles;
  for (std::int64_t t = 0, i = 0; t < tiles; ++t) {
    const int rows = static_cast<int>(base + (t < extra ? 1 : 0));
    const auto* ai = a + i * a_row;
    auto* ci = c + i * ldc;
    with_count<kRows>(rows, [&](auto count) {
      tile<X, kKind, decltype(count)::value, NV, kPartial>(k, ai, a_row, a_col, b, ldb, f, ci, ldc, last);
    });
    i += rows;
  }
}

// C = op(A) op(B), finished as `f` says, for op(B) [k, n] with rows ldb
// apart: blocks of columns of up to kMaxTileVectors vectors, the vectors
// shared out evenly (64 floats on AVX-512 as 2 + 2 vectors, not 3 + 1), the
// last vector of C's row masked where n is not a whole number of vectors.
template <class X, FinishKind kKind>
void tiles(std::int64_t m, std::int64_t n, std::int64_t k, const typename X::T* a, std::int64_t a_row,
           std::int64_t a_col, const typename X::T* b, std::int64_t ldb, const Finish<typename X::T>& f,
           typename X::T* c, std::int64_t ldc) {
  constexpr int L = X::kLanes, kMax = kMaxTileVectors<X>;
  const std::int64_t vectors = (n + L - 1) / L, blocks = (vectors + kMax - 1) / kMax;
  for (std::int64_t block = 0, j = 0; block < blocks; ++block) {
    const std::int64_t nv = blocks == 1 ? vectors : vectors / blocks + (block < vectors % blocks ? 1 : 0);
    const std::int64_t width = n - j < nv * L ? n - j : nv * L;
    const bool partial = width % L != 0;
    const typename X::Mask last = X::mask(partial ? width % L : L);
    Finish<typename X::T> fj = f;  // the bias of this block's columns
    if (kKind == FinishKind::linear && f.bias != nullptr) fj.bias = f.bias + j;
    with_count<kMax>(nv, [&](auto count) {
      constexpr int NV = decltype(count)::value;
      if (partial)
        column_block<X, kKind, NV, true>(m, k, a, a_row, a_col, b + j, ldb, fj, c + j, ldc, last);
      else
        column_block<X, kKind, NV, false>(m, k, a, a_row, a_col, b + j, ldb, fj, c + j, ldc, last);
    });
    j += width;
  }
}

// dst[q][j] = src[j][q] for an 8 x 8 block of floats (rows lds and ldd
// apart), in AVX registers (both instruction sets have them). Each register
// starts as two half rows four rows apart (rows j and j + 4, columns c to
// c + 3), the upper half inserted from memory: that insert is not a
// shuffle-port operation, so the transpose needs 16 shuffles, not the 24
// of whole-row loads and a final exchange of halves. The shuffles were what
// a transposed B's panel cost (they share the port with half the
// multiply-adds of the tiles that read it).
inline void transpose_block(const float* src, std::int64_t lds, float* dst, std::int64_t ldd) {
  __m256 r[8];
  for (int q = 0; q < 8; ++q) {
    const float* low = src + (q % 4) * lds + (q / 4) * 4;  // row q mod 4, columns 0-3 or 4-7
    r[q] = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(low)), _mm_loadu_ps(low + 4 * lds), 1);
  }
  // r[0..3]: columns 0-3 of rows (j, j + 4); r[4..7]: columns 4-7.
  for (int h = 0; h < 8; h += 4) {
    const __m256 t0 = _mm256_unpacklo_ps(r[h], r[h + 1]), t1 = _mm256_unpackhi_ps(r[h], r[h + 1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[h + 2], r[h + 3]), t3 = _mm256_unpackhi_ps(r[h + 2], r[h + 3]);
    _mm256_storeu_ps(dst + (h + 0) * ldd, _mm256_shuffle_ps(t0, t2, 0x44));
    _mm256_storeu_ps(dst + (h + 1) * ldd, _mm256_shuffle_ps(t0, t2, 0xEE));
    _mm256_storeu_ps(dst + (h + 2) * ldd, _mm256_shuffle_ps(t1, t3, 0x44));
    _mm256_storeu_ps(dst + (h + 3) * ldd, _mm256_shuffle_ps(t1, t3, 0xEE));
  }
}

// The same for a 4 x 4 block of doubles: registers of two half rows two
// rows apart, then one unpack per column.
inline void transpose_block(const double* src, std::int64_t lds, double* dst, std::int64_t ldd) {
  __m256d r[4];
  for (int q = 0; q < 4; ++q) {
    const double* low = src + (q % 2) * lds + (q / 2) * 2;  // row q mod 2, columns 0-1 or 2-3
    r[q] = _mm256_insertf128_pd(_mm256_castpd128_pd256(_mm_loadu_pd(low)), _mm_loadu_pd(low + 2 * lds), 1);
  }
  _mm256_storeu_pd(dst, _mm256_unpacklo_pd(r[0], r[1]));
  _mm256_storeu_pd(dst + ldd, _mm256_unpackhi_pd(r[0], r[1]));
  _mm256_storeu_pd(dst + 2 * ldd, _mm256_unpacklo_pd(r[2], r[3]));
  _mm256_storeu_pd(dst + 3 * ldd, _mm256_unpackhi_pd(r[2], r[3]));
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

// One entry of C, finished as `finish` does a vector's lanes. The fused
// multiply-add is the compiler's builtin, not std::fma: an inline standard
// function instantiated here, compiled for AVX2 or AVX-512, could stand in
// for the baseline copy at link time.
// Only plain and scaled products reach a single column.
template <FinishKind kKind, class T>
inline void finish_entry(T& out, T sum, const Finish<T>& f) {
  static_assert(kKind != FinishKind::linear, "a layer's product is never a single column (small_linear_takes)");
  if constexpr (kKind == FinishKind::plain) {
    out = sum;
  } else if constexpr (kKind == FinishKind::accumulating) {
    out = out + sum;
  } else {
    const T s = f.alpha == T(1) ? sum : f.alpha * sum;
    if (f.beta == T(0))
      out = s;
    else if constexpr (sizeof(T) == sizeof(float))
      out = __builtin_fmaf(f.beta, out, s);
    else
      out = __builtin_fma(f.beta, out, s);
  }
}

// A single column of C (n = 1) with A stored untransposed: entry i is the
// dot product of A's row i with op(B)'s column, both contiguous, summed in
// kSmallGemvLanes interleaved chains (lane l takes p = l, l + 16, … in
// order, by fused multiply-adds from 0) that are then added pairwise, lane
// l + 8 into l, then + 4, + 2, + 1. One chain over all of k waited 4 cycles
// per step: [10 x 40] times a vector took 1.8x OpenBLAS's sgemv. The lanes
// are the same on every instruction set (two AVX2 registers make 16 float
// lanes), so are the bits.
template <class X, FinishKind kKind>
void dot_column(bool trans_b, std::int64_t m, std::int64_t k, const typename X::T* a, std::int64_t lda,
                const typename X::T* b, std::int64_t ldb, const Finish<typename X::T>& f, typename X::T* c,
                std::int64_t ldc) {
  using T = typename X::T;
  using V = typename X::V;
  constexpr int L = X::kLanes, G = kSmallGemvLanes / L;  // registers per group of lanes
  alignas(64) T column[kSmallGemvMaxDepth];
  if (!trans_b && ldb != 1) {
    for (std::int64_t p = 0; p < k; ++p) column[p] = b[p * ldb];
    b = column;
  }
  for (std::int64_t i = 0; i < m; ++i) {
    const T* row = a + i * lda;
    V acc[G];
    for (int g = 0; g < G; ++g) acc[g] = X::splat(T(0));
    for (std::int64_t p0 = 0; p0 < k; p0 += kSmallGemvLanes)
      for (int g = 0; g < G && p0 + g * L < k; ++g) {
        const std::int64_t p = p0 + g * L;
        if (k - p >= L) {
          acc[g] = X::fma(X::load(row + p), X::load(b + p), acc[g]);
        } else {  // lanes past k keep their sums (a -0 stays -0)
          const typename X::Mask lanes = X::mask(k - p);
          acc[g] = X::select(lanes, X::fma(X::load(row + p, lanes), X::load(b + p, lanes), acc[g]), acc[g]);
        }
      }
    for (int w = G / 2; w >= 1; w /= 2)
      for (int g = 0; g < w; ++g) acc[g] = X::add(acc[g], acc[g + w]);
    finish_entry<kKind>(c[i * ldc], X::fold(acc[0]), f);
  }
}

// A single column of C (n = 1) with A stored transposed ([k, m]) as the row
// Cᵀ = op(B)ᵀ Aᵀ: the vectors run along A's rows and C's m entries, and
// each entry is the chain fma(a_ip, b_p, s) over p in order (the factors
// commute). Straight into C when its column is contiguous; otherwise by
// chunks through a local row, finished entry by entry.
template <class X, FinishKind kKind>
void column_product(bool trans_a, bool trans_b, std::int64_t m, std::int64_t k, const typename X::T* a,
                    std::int64_t lda, const typename X::T* b, std::int64_t ldb, const Finish<typename X::T>& f,
                    typename X::T* c, std::int64_t ldc) {
  using T = typename X::T;
  if (!trans_a) return dot_column<X, kKind>(trans_b, m, k, a, lda, b, ldb, f, c, ldc);
  const std::int64_t b_step = trans_b ? 1 : ldb;  // op(B)'s column, entry p
  if (ldc == 1) return tiles<X, kKind>(1, m, k, b, 0, b_step, a, lda, f, c, 0);
  constexpr std::int64_t kChunk = 64;
  alignas(64) T sums[kChunk];
  for (std::int64_t i0 = 0; i0 < m; i0 += kChunk) {
    const std::int64_t chunk = m - i0 < kChunk ? m - i0 : kChunk;
    tiles<X, FinishKind::plain>(1, chunk, k, b, 0, b_step, a + i0, lda, Finish<T>{}, sums, 0);
    for (std::int64_t i = 0; i < chunk; ++i) finish_entry<kKind>(c[(i0 + i) * ldc], sums[i], f);
  }
}

// C = op(A) op(B), finished as `f` says, for a shape small_gemm_takes (a
// layer's: small_linear_takes).
template <class X, FinishKind kKind>
void small_product(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, const typename X::T* a,
                   std::int64_t lda, const typename X::T* b, std::int64_t ldb, const Finish<typename X::T>& f,
                   typename X::T* c, std::int64_t ldc) {
  using T = typename X::T;
  if constexpr (kKind != FinishKind::linear)
    if (n == 1) return column_product<X, kKind>(trans_a, trans_b, m, k, a, lda, b, ldb, f, c, ldc);
  // With k = 1, a transposed B of contiguous entries is already its one row.
  if (k == 1 && trans_b && ldb == 1) trans_b = false;
  alignas(64) T panel[kSmallGemmMaxPanel];
  if (trans_b) {
    transpose_into(n, k, b, ldb, panel);
    b = panel;
    ldb = n;
  }
  tiles<X, kKind>(m, n, k, a, trans_a ? 1 : lda, trans_a ? lda : 1, b, ldb, f, c, ldc);
}

// `count` products, the i-th at a + i · stride_a, b + i · stride_b and
// c + i · stride_c, in one call: for the [10 x 40] products of a
// task-batched MLP the call chain per product cost as much as its sums.
// With a bias or relu, a layer's (alpha = 1, beta = 0), the i-th bias row
// at bias + i · stride_bias.
template <class X>
void small_products(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, typename X::T alpha,
                    const typename X::T* a, std::int64_t lda, std::int64_t stride_a, const typename X::T* b,
                    std::int64_t ldb, std::int64_t stride_b, typename X::T beta, typename X::T* c, std::int64_t ldc,
                    std::int64_t stride_c, std::int64_t count, const typename X::T* bias, std::int64_t stride_bias,
                    bool relu) {
  using T = typename X::T;
  if (bias != nullptr || relu) {
    for (std::int64_t i = 0; i < count; ++i)
      small_product<X, FinishKind::linear>(trans_a, trans_b, m, n, k, a + i * stride_a, lda, b + i * stride_b, ldb,
                                           Finish<T>{.bias = bias ? bias + i * stride_bias : nullptr, .relu = relu},
                                           c + i * stride_c, ldc);
    return;
  }
  const Finish<T> f{.alpha = alpha, .beta = beta};
  const auto product = alpha != T(1)  ? small_product<X, FinishKind::scaled>
                       : beta == T(0) ? small_product<X, FinishKind::plain>
                       : beta == T(1) ? small_product<X, FinishKind::accumulating>
                                      : small_product<X, FinishKind::scaled>;
  for (std::int64_t i = 0; i < count; ++i)
    product(trans_a, trans_b, m, n, k, a + i * stride_a, lda, b + i * stride_b, ldb, f, c + i * stride_c, ldc);
}

}  // namespace
}  // namespace metatape::kernels::cpu

// Defines small_gemm.hpp's kernel `name` for float and double as
// small_products over the vector traits Traits<T>, in the translation unit
// compiled for Traits' instruction set.
#define METATAPE_DEFINE_SMALL_GEMM_KERNEL(name, Traits)                                                           \
  template <class T>                                                                                              \
  void name(METATAPE_SMALL_GEMM_PARAMETERS(T), METATAPE_SMALL_GEMM_EPILOGUE(T)) {                                 \
    small_products<Traits<T>>(trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc, \
                              stride_c, count, bias, stride_bias, relu);                                          \
  }                                                                                                               \
  template void name<float>(METATAPE_SMALL_GEMM_PARAMETERS(float), METATAPE_SMALL_GEMM_EPILOGUE(float));          \
  template void name<double>(METATAPE_SMALL_GEMM_PARAMETERS(double), METATAPE_SMALL_GEMM_EPILOGUE(double));
