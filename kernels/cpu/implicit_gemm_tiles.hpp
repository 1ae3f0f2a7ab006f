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
// finished tile is stored straight from its registers, a row's columns
// being contiguous in the output. (Output columns a plane apart, NCHW's
// channels, took one scalar store each: 44% of the kernel's time on a
// stride-2 input gradient, 14×14 planes, on an Intel Xeon.)
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
// 0 (or from dst's values when p.accumulate), plus the bias, stored at
// dst[r][0, NV · kLanes): row r's columns, contiguous.
template <class X, int NV, bool Masked>
void implicit_block(const ImplicitGemm<typename X::T>& p, const std::int64_t* a_at, std::int64_t j,
                    typename X::Mask lanes, typename X::T* const* dst) {
  using T = typename X::T;
  using V = typename X::V;
  constexpr int MR = kImplicitRows, L = X::kLanes;
  const auto load = [lanes](const T* from) {
    if constexpr (Masked)
      return X::load(from, lanes);
    else
      return X::load(from);
  };
  V acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = p.accumulate ? load(dst[r] + v * L) : X::splat(T(0));
  for (std::int64_t t = 0; t < p.taps; ++t) {
    const T* a[MR];
    for (int r = 0; r < MR; ++r) a[r] = p.a + a_at[r] + p.tap_a[t];
    const T* b = p.b + p.tap_b[t] + j;
    for (std::int64_t d = 0; d < p.depth; ++d, b += p.b_step) {
      V bv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) bv[v] = load(b + v * L);
      const std::int64_t at = d * p.depth_stride;
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const V ar = X::splat(a[r][at]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[r][v] = X::fma(ar, bv[v], acc[r][v]);
      }
    }
  }
  if (p.bias != nullptr) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const V bias = load(p.bias + j + v * L);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) acc[r][v] = X::add(acc[r][v], bias);
    }
  }
  if (p.relu) {  // max(0, v): v < 0 gives 0, and a NaN or −0 stays (the second operand's)
    const V zero = X::splat(T(0));
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = X::max(zero, acc[r][v]);
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if constexpr (Masked)
        X::store(dst[r] + v * L, acc[r][v], lanes);
      else
        X::store(dst[r] + v * L, acc[r][v]);
    }
}

// Rows of MR at a time (a short last tile repeats its last row, whose
// results go to a spare row), columns NV vectors at a time, then one masked
// vector at a time. Each row's outputs are contiguous: out[out_at(r) + j].
template <class X>
void implicit_product(const ImplicitGemm<typename X::T>& p) {
  using T = typename X::T;
  constexpr int MR = kImplicitRows, L = X::kLanes;
  constexpr int NV = sizeof(typename X::V) == 64 ? 4 : 2;  // accumulators that fit the register file
  const std::int64_t rows = p.extent[0] * p.extent[1] * p.extent[2];
  const std::int64_t full = p.n / (NV * L) * (NV * L);
  alignas(64) T spare[NV * L] = {};  // where a short tile's repeated rows go
  for (std::int64_t r0 = 0; r0 < rows; r0 += MR) {
    const int count = static_cast<int>(smaller(MR, rows - r0));
    std::int64_t a_at[MR];
    T* out_row[MR];
    for (int r = 0; r < MR; ++r) {
      const std::int64_t row = r0 + smaller(r, count - 1);
      const std::int64_t i2 = row % p.extent[2], i1 = row / p.extent[2] % p.extent[1],
                         i0 = row / (p.extent[1] * p.extent[2]);
      a_at[r] = p.a_base + i0 * p.a_step[0] + i1 * p.a_step[1] + i2 * p.a_step[2];
      out_row[r] = p.out + p.out_base + i0 * p.out_step[0] + i1 * p.out_step[1] + i2 * p.out_step[2];
    }
    T* dst[MR];
    const auto point_at = [&](std::int64_t j) {
      for (int r = 0; r < MR; ++r) dst[r] = r < count ? out_row[r] + j : spare;
    };
    std::int64_t j = 0;
    for (; j < full; j += NV * L) {
      point_at(j);
      implicit_block<X, NV, false>(p, a_at, j, X::mask(L), dst);
    }
    for (; j < p.n; j += L) {
      point_at(j);
      implicit_block<X, 1, true>(p, a_at, j, X::mask(smaller(L, p.n - j)), dst);
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
