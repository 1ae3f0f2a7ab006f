// A convolution's matrix product without its im2col copy ("implicit GEMM"):
// each entry of the patch matrix is read where it lies in the (zero-padded)
// NCHW planes, broadcast into a register tile, and never written out.
//
//   out[out_at(r) + j] = Σ_t Σ_d A(r; t, d) · b[tap_b[t] + d · b_step + j]  (+ bias[j])
//   A(r; t, d) = a[a_at(r) + tap_a[t] + d · depth_stride]
//
// for every row r and column j < n. Row r is the point (i0, i1, i2) of the
// grid extent[0] × extent[1] × extent[2], taken in row-major order, and its
// offsets are affine in it: a_at(r) = a_base + Σ i_k · a_step[k], and the
// same for out_at with out_base and out_step. conv.cpp describes all three
// kernels of a convolution this way:
//  - forward: rows are output pixels; t the window's taps; d input
//    channels; j output channels (out is channels-last, [pixels, O]);
//  - input gradient: rows are the input pixels of one stride phase; t that
//    phase's taps; d output channels; j input channels (out is
//    channels-last, [pixels, C]);
//  - weight gradient: rows are (input channel, ki, kj); t an (image, output
//    row) pair; d the output column; j output channels; B is g transposed
//    to [pixels, O], and the sum continues over chunks of images
//    (`accumulate`).
// B's rows for tap t and step d start at tap_b[t] + d · b_step: the
// forward's are the weights [O, C·kh·kw] transposed, so a channel's rows are
// kh·kw·O apart.
//
// Each result is one fused multiply-add chain over t, then d, from 0 (or,
// when accumulate, from out's value: the chain of an earlier call goes on),
// then plus bias[j] rounded once, then the ReLU if fused: the same bits on either instruction set,
// wherever the row falls in the register tiles and however the rows are
// split between calls.
#pragma once

#include <cstdint>

#include "small_gemm.hpp"

namespace metatape::kernels::cpu {

template <class T>
struct ImplicitGemm {
  const T* a;
  std::int64_t a_base;
  std::int64_t a_step[3];
  std::int64_t extent[3];
  const std::int64_t* tap_a;  // [taps]
  const std::int64_t* tap_b;  // [taps]
  std::int64_t taps;
  std::int64_t depth, depth_stride;
  const T* b;  // rows of n, as tap_b and b_step say
  std::int64_t b_step, n;
  const T* bias;      // [n], or null
  bool relu = false;  // max(·, 0) after the bias (NaN and −0 kept, as scalar_math's relu)
  T* out;
  std::int64_t out_base;
  std::int64_t out_step[3];
  bool accumulate = false;  // start from out's values (bias must be null)
};

// Runs the product with the kernel of `isa`, which cpu_runs(isa) must allow
// and which is not SmallGemmIsa::none.
template <class T>
void implicit_gemm(SmallGemmIsa isa, const ImplicitGemm<T>& p);

// Each instruction set's kernel (implicit_gemm_tiles.hpp).
template <class T>
void implicit_gemm_avx2(const ImplicitGemm<T>& p);
template <class T>
void implicit_gemm_avx512(const ImplicitGemm<T>& p);

}  // namespace metatape::kernels::cpu
