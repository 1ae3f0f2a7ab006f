#include "conv.hpp"

#include <algorithm>
#include <cstring>

#include "gemm.hpp"
#include "window_ops.hpp"

namespace metatape::kernels::cpu {
namespace {

// [images, channels, pixels] <-> [channels, images · pixels]: the layout
// change between NCHW planes and one GEMM over a chunk of images.
template <class T>
void planes_to_rows(const T* in, std::int64_t images, std::int64_t channels, std::int64_t pixels, T* out) {
  for (std::int64_t n = 0; n < images; ++n)
    for (std::int64_t c = 0; c < channels; ++c)
      std::memcpy(out + (c * images + n) * pixels, in + (n * channels + c) * pixels,
                  static_cast<std::size_t>(pixels) * sizeof(T));
}

template <class T>
void rows_to_planes(const T* in, std::int64_t images, std::int64_t channels, std::int64_t pixels, T* out) {
  for (std::int64_t n = 0; n < images; ++n)
    for (std::int64_t c = 0; c < channels; ++c)
      std::memcpy(out + (n * channels + c) * pixels, in + (c * images + n) * pixels,
                  static_cast<std::size_t>(pixels) * sizeof(T));
}

// g's planes as GEMM rows: for one image they already are; for several they
// are transposed into `block`.
template <class T>
const T* rows_of(const T* planes, std::int64_t images, std::int64_t channels, std::int64_t pixels, T* block) {
  if (images == 1) return planes;
  planes_to_rows(planes, images, channels, pixels, block);
  return block;
}

}  // namespace

std::int64_t conv_chunk(const ConvShape& s) {
  // With many pixels per image, one GEMM per image is already large, and its
  // [O, pixels] result is the image's NCHW planes: no transposition at all.
  if (s.pixels() >= 128) return 1;
  const std::int64_t per_image = (s.patch() + s.out_channels) * s.pixels();
  return std::clamp<std::int64_t>((std::int64_t{1} << 22) / std::max<std::int64_t>(per_image, 1), 1,
                                  std::max<std::int64_t>(s.images, 1));
}

std::int64_t conv_scratch_size(const ConvShape& s) { return (s.patch() + s.out_channels) * s.pixels() * conv_chunk(s); }

template <class T>
void conv2d_forward(const ConvShape& s, const T* x, const T* w, T* y, T* scratch) {
  const std::int64_t L = s.pixels(), P = s.patch(), O = s.out_channels, plane_in = s.in_channels * s.h * s.w;
  const std::int64_t chunk = conv_chunk(s);
  T* cols = scratch;                       // [P, nb · L]
  T* block = scratch + P * chunk * L;  // [O, nb · L]
  for (std::int64_t g = 0; g < s.groups; ++g) {
    const T* wg = w + g * O * P;
    for (std::int64_t n0 = 0; n0 < s.images; n0 += chunk) {
      const std::int64_t nb = std::min(chunk, s.images - n0);
      im2col<T>(x + (g * s.images + n0) * plane_in, 1, nb, s.in_channels, s.h, s.w, s.window, cols);
      T* planes = y + (g * s.images + n0) * O * L;
      gemm<T>(false, false, O, nb * L, P, T(1), wg, P, cols, nb * L, T(0), nb == 1 ? planes : block, nb * L);
      if (nb > 1) rows_to_planes(block, nb, O, L, planes);
    }
  }
}

template <class T>
void conv2d_input_grad(const ConvShape& s, const T* g, const T* w, T* dx, T* scratch) {
  const std::int64_t L = s.pixels(), P = s.patch(), O = s.out_channels, plane_in = s.in_channels * s.h * s.w;
  const std::int64_t chunk = conv_chunk(s);
  T* cols = scratch;
  T* block = scratch + P * chunk * L;
  for (std::int64_t grp = 0; grp < s.groups; ++grp) {
    const T* wg = w + grp * O * P;
    for (std::int64_t n0 = 0; n0 < s.images; n0 += chunk) {
      const std::int64_t nb = std::min(chunk, s.images - n0);
      const T* rows = rows_of(g + (grp * s.images + n0) * O * L, nb, O, L, block);
      gemm<T>(true, false, P, nb * L, O, T(1), wg, P, rows, nb * L, T(0), cols, nb * L);  // wᵀ g
      col2im<T>(cols, 1, nb, s.in_channels, s.h, s.w, s.window, dx + (grp * s.images + n0) * plane_in);
    }
  }
}

template <class T>
void conv2d_weight_grad(const ConvShape& s, const T* x, const T* g, T* dw, T* scratch) {
  const std::int64_t L = s.pixels(), P = s.patch(), O = s.out_channels, plane_in = s.in_channels * s.h * s.w;
  const std::int64_t chunk = conv_chunk(s);
  T* cols = scratch;
  T* block = scratch + P * chunk * L;
  for (std::int64_t grp = 0; grp < s.groups; ++grp) {
    T* dwg = dw + grp * O * P;
    if (s.images == 0) std::fill(dwg, dwg + O * P, T(0));
    for (std::int64_t n0 = 0; n0 < s.images; n0 += chunk) {
      const std::int64_t nb = std::min(chunk, s.images - n0);
      im2col<T>(x + (grp * s.images + n0) * plane_in, 1, nb, s.in_channels, s.h, s.w, s.window, cols);
      const T* rows = rows_of(g + (grp * s.images + n0) * O * L, nb, O, L, block);
      // dw += g colsᵀ, the first chunk overwriting.
      gemm<T>(false, true, O, P, nb * L, T(1), rows, nb * L, cols, nb * L, n0 == 0 ? T(0) : T(1), dwg, P);
    }
  }
}

#define METATAPE_CONV_INSTANTIATE(T)                                                \
  template void conv2d_forward<T>(const ConvShape&, const T*, const T*, T*, T*);    \
  template void conv2d_input_grad<T>(const ConvShape&, const T*, const T*, T*, T*); \
  template void conv2d_weight_grad<T>(const ConvShape&, const T*, const T*, T*, T*);

METATAPE_CONV_INSTANTIATE(float)
METATAPE_CONV_INSTANTIATE(double)
#undef METATAPE_CONV_INSTANTIATE

}  // namespace metatape::kernels::cpu
