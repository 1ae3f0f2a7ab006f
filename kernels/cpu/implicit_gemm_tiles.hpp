// The register tiles of the implicit-GEMM kernel (implicit_gemm.hpp), over
// the same vector traits X as the small-product kernel
// (small_gemm_tiles.hpp), compiled once per instruction set in that set's
// translation unit.
//
// A tile is MR rows by NV vectors of columns: per step d of the sum, NV
// loads of B's row and MR broadcasts of A's entries (each from its own row's
// place in the planes) feed MR · NV fused multiply-adds, every accumulator
// in a register (AVX-512: 6 × 4 of 32 registers; AVX2: 6 × 2 of 16).
// Columns past the last full block take one masked vector at a time. The
// finished tile goes through a small buffer to the output, whose columns
// are out_stride apart (a plane each, or 1 for the weight gradient's sums).
// (Parking the accumulators between taps, so that one tap's rows of B serve
// a panel of tiles from L1, was slower on the development VM's AMD EPYC:
// the rows of B stream from L2 fast enough.)
#pragma once

#include <cstdint>

#include "implicit_gemm.hpp"

namespace metatape::kernels::cpu {
namespace {

constexpr int kImplicitRows = 6;

// std::min without <algorithm>: this header is compiled with AVX2 or
// AVX-512 enabled, and an instantiation of a standard template here could
// stand in for the baseline one at link time.
constexpr std::int64_t smaller(std::int64_t a, std::int64_t b) { return a < b ? a : b; }

// The MR rows' accumulators for the columns [j, j + NV · kLanes) (the last
// vector masked by `lanes` when Masked), summed over every tap and step from
// 0 (or from tile's values when p.accumulate), written to
// tile[r · NV · kLanes + ·].
template <class X, int NV, bool Masked>
void implicit_block(const ImplicitGemm<typename X::T>& p, const std::int64_t* a_at, std::int64_t j,
                    typename X::Mask lanes, typename X::T* tile) {
  using T = typename X::T;
  using V = typename X::V;
  constexpr int MR = kImplicitRows, L = X::kLanes;
  V acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) {
      if (!p.accumulate)
        acc[r][v] = X::splat(T(0));
      else if constexpr (Masked)
        acc[r][v] = X::load(tile + r * NV * L + v * L, lanes);
      else
        acc[r][v] = X::load(tile + r * NV * L + v * L);
    }
  for (std::int64_t t = 0; t < p.taps; ++t) {
    const T* a[MR];
    for (int r = 0; r < MR; ++r) a[r] = p.a + a_at[r] + p.tap_a[t];
    const T* b = p.b + p.tap_b[t] + j;
    for (std::int64_t d = 0; d < p.depth; ++d, b += p.b_step) {
      V bv[NV];
      for (int v = 0; v < NV; ++v) {
        if constexpr (Masked)
          bv[v] = X::load(b + v * L, lanes);
        else
          bv[v] = X::load(b + v * L);
      }
      const std::int64_t at = d * p.depth_stride;
      for (int r = 0; r < MR; ++r) {
        const V ar = X::splat(a[r][at]);
        for (int v = 0; v < NV; ++v) acc[r][v] = X::fma(ar, bv[v], acc[r][v]);
      }
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) X::store(tile + r * NV * L + v * L, acc[r][v]);
}

template <class X>
void implicit_product(const ImplicitGemm<typename X::T>& p) {
  using T = typename X::T;
  constexpr int MR = kImplicitRows, L = X::kLanes;
  constexpr int NV = sizeof(typename X::V) == 64 ? 4 : 2;  // accumulators that fit the register file
  const std::int64_t rows = p.extent[0] * p.extent[1] * p.extent[2];
  const std::int64_t full = p.n / (NV * L) * (NV * L);
  alignas(64) T tile[MR * NV * L];
  for (std::int64_t r0 = 0; r0 < rows; r0 += MR) {
    const int count = static_cast<int>(smaller(MR, rows - r0));
    std::int64_t a_at[MR], out_at[MR];
    for (int r = 0; r < MR; ++r) {
      const std::int64_t row = r0 + smaller(r, count - 1);  // a short tile repeats its last row
      const std::int64_t i2 = row % p.extent[2], i1 = row / p.extent[2] % p.extent[1],
                         i0 = row / (p.extent[1] * p.extent[2]);
      a_at[r] = p.a_base + i0 * p.a_step[0] + i1 * p.a_step[1] + i2 * p.a_step[2];
      out_at[r] = p.out_base + i0 * p.out_step[0] + i1 * p.out_step[1] + i2 * p.out_step[2];
    }
    // The output's columns [j, j + width) to the tile (to go on from them),
    // and back with the bias; rows past `count` repeat the last.
    const auto read = [&](std::int64_t j, std::int64_t width, std::int64_t tile_row) {
      for (int r = 0; r < MR; ++r)
        for (std::int64_t c = 0; c < width; ++c)
          tile[r * tile_row + c] = p.out[out_at[smaller(r, count - 1)] + (j + c) * p.out_stride];
    };
    const auto write = [&](std::int64_t j, std::int64_t width, std::int64_t tile_row) {
      for (int r = 0; r < count; ++r)
        for (std::int64_t c = 0; c < width; ++c) {
          const T value = tile[r * tile_row + c];
          p.out[out_at[r] + (j + c) * p.out_stride] = p.bias == nullptr ? value : value + p.bias[j + c];
        }
    };
    std::int64_t j = 0;
    for (; j < full; j += NV * L) {
      if (p.accumulate) read(j, NV * L, NV * L);
      implicit_block<X, NV, false>(p, a_at, j, X::mask(L), tile);
      write(j, NV * L, NV * L);
    }
    for (; j < p.n; j += L) {
      const std::int64_t width = smaller(L, p.n - j);
      if (p.accumulate) read(j, width, L);
      implicit_block<X, 1, true>(p, a_at, j, X::mask(width), tile);
      write(j, width, L);
    }
  }
}

}  // namespace
}  // namespace metatape::kernels::cpu

// Defines implicit_gemm.hpp's kernel `name` for float and double over the
// vector traits Traits<T>, in the translation unit compiled for Traits'
// instruction set.
#define METATAPE_DEFINE_IMPLICIT_GEMM_KERNEL(name, Traits) \
  template <class T>                                       \
  void name(const ImplicitGemm<T>& p) {                    \
    implicit_product<Traits<T>>(p);                        \
  }                                                        \
  template void name<float>(const ImplicitGemm<float>&);   \
  template void name<double>(const ImplicitGemm<double>&);
