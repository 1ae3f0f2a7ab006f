// Grouped 2-D convolution (ConvShape, types.hpp) as im2col + cuBLAS, over
// chunks of images sized to the scratch:
//   forward       per image  y_n [O, L] = W [O, P] · cols_n [P, L]   (one strided-batched GEMM, W shared)
//   input grad    per image  cols_n = Wᵀ g_n, then col2im            (one strided-batched GEMM)
//   weight grad   dW [O, P] += rows(g) [O, nb·L] · colsᵀ [nb·L, P]  (one GEMM per chunk)
// with P = in_channels · kernel_h · kernel_w and L = out_h · out_w. The
// per-image layouts are the NCHW planes themselves, so forward and input
// grad move no data besides im2col/col2im. col2im gathers (each input pixel
// sums the columns that read it), so it needs no atomics and is
// deterministic.
#include "../scalar_math.hpp"
#include "common.cuh"
#include "gemm.cuh"
#include "kernels.hpp"

namespace metatape::kernels::cuda {
namespace {

// Where im2col puts element (row r, image n, pixel l): r · row_stride +
// n · image_stride + l. Per image [nb, P, L]: row_stride L, image_stride P·L.
// As GEMM rows [P, nb·L]: row_stride nb·L, image_stride L.
struct ColumnLayout {
  std::int64_t row_stride, image_stride;
};

// x [nb, C, H, W] -> cols (layout above); padding reads as 0.
template <class T>
__global__ void im2col_kernel(const T* x, ConvShape s, std::int64_t nb, ColumnLayout layout, T* cols) {
  const std::int64_t L = s.pixels(), P = s.patch(), out_w = s.out_w();
  const std::int64_t n_total = nb * P * L;
  for (std::int64_t i = global_index(); i < n_total; i += global_stride()) {
    const std::int64_t l = i % L, r = (i / L) % P, n = i / (L * P);
    const std::int64_t kj = r % s.window.kernel_w, ki = (r / s.window.kernel_w) % s.window.kernel_h,
                       c = r / (s.window.kernel_w * s.window.kernel_h);
    const std::int64_t oh = l / out_w, ow = l % out_w;
    const std::int64_t ih = oh * s.window.stride_h - s.window.pad_h + ki,
                       iw = ow * s.window.stride_w - s.window.pad_w + kj;
    const bool inside = ih >= 0 && ih < s.h && iw >= 0 && iw < s.w;
    cols[r * layout.row_stride + n * layout.image_stride + l] =
        inside ? x[((n * s.in_channels + c) * s.h + ih) * s.w + iw] : T(0);
  }
}

// cols (layout above) -> dx [nb, C, H, W]: each input pixel sums the column
// entries that read it.
template <class T>
__global__ void col2im_kernel(const T* cols, ConvShape s, std::int64_t nb, ColumnLayout layout, T* dx) {
  const std::int64_t out_h = s.out_h(), out_w = s.out_w();
  const std::int64_t n_total = nb * s.in_channels * s.h * s.w;
  for (std::int64_t i = global_index(); i < n_total; i += global_stride()) {
    const std::int64_t iw = i % s.w, ih = (i / s.w) % s.h, c = (i / (s.w * s.h)) % s.in_channels,
                       n = i / (s.w * s.h * s.in_channels);
    double sum = 0;
    for (std::int64_t ki = 0; ki < s.window.kernel_h; ++ki) {
      const std::int64_t top = ih + s.window.pad_h - ki;  // = oh · stride_h
      if (top < 0 || top % s.window.stride_h != 0) continue;
      const std::int64_t oh = top / s.window.stride_h;
      if (oh >= out_h) continue;
      for (std::int64_t kj = 0; kj < s.window.kernel_w; ++kj) {
        const std::int64_t left = iw + s.window.pad_w - kj;
        if (left < 0 || left % s.window.stride_w != 0) continue;
        const std::int64_t ow = left / s.window.stride_w;
        if (ow >= out_w) continue;
        const std::int64_t r = (c * s.window.kernel_h + ki) * s.window.kernel_w + kj;
        sum += static_cast<double>(cols[r * layout.row_stride + n * layout.image_stride + oh * out_w + ow]);
      }
    }
    dx[i] = static_cast<T>(sum);
  }
}

// g [nb, O, L] -> rows [O, nb·L]
template <class T>
__global__ void planes_to_rows_kernel(const T* g, std::int64_t nb, std::int64_t channels, std::int64_t pixels,
                                      T* rows) {
  const std::int64_t n_total = nb * channels * pixels;
  for (std::int64_t i = global_index(); i < n_total; i += global_stride()) {
    const std::int64_t l = i % pixels, o = (i / pixels) % channels, n = i / (pixels * channels);
    rows[(o * nb + n) * pixels + l] = g[i];
  }
}

// Images per chunk: as many as keep the scratch near 32 Mi elements.
std::int64_t chunk_of(const ConvShape& s) {
  const std::int64_t per_image = (s.patch() + s.out_channels) * s.pixels();
  return std::clamp<std::int64_t>((std::int64_t{1} << 25) / std::max<std::int64_t>(per_image, 1), 1,
                                  std::max<std::int64_t>(s.images, 1));
}

// y [n, O, L] += bias[o] on every pixel of channel o (when bias is not
// null), then max(·, 0) when relu.
template <class T>
__global__ void finish_output_kernel(T* y, std::int64_t n, std::int64_t channels, std::int64_t pixels, const T* bias,
                                     bool relu) {
  for (std::int64_t i = global_index(); i < n; i += global_stride()) {
    const T v = bias == nullptr ? y[i] : y[i] + bias[(i / pixels) % channels];
    y[i] = relu ? kernels::relu(v) : v;
  }
}

}  // namespace

std::int64_t conv_scratch_size(const ConvShape& s) { return (s.patch() + s.out_channels) * s.pixels() * chunk_of(s); }

template <class T>
void conv2d_forward(const ConvShape& s, const T* x, const T* w, const T* bias, std::int64_t bias_group_stride, T* y,
                    T* scratch) {
  const std::int64_t L = s.pixels(), P = s.patch(), O = s.out_channels, plane_in = s.in_channels * s.h * s.w;
  const std::int64_t chunk = chunk_of(s);
  for (std::int64_t g = 0; g < s.groups; ++g) {
    for (std::int64_t n0 = 0; n0 < s.images; n0 += chunk) {
      const std::int64_t nb = std::min(chunk, s.images - n0);
      im2col_kernel<T><<<blocks_for(nb * P * L), kThreads, 0, stream()>>>(x + (g * s.images + n0) * plane_in, s, nb,
                                                                          {L, P * L}, scratch);
      check_launch("im2col_kernel");
      gemm_strided<T>(false, false, O, L, P, T(1), w + g * O * P, 0, scratch, P * L, T(0),
                      y + (g * s.images + n0) * O * L, O * L, nb);
      if (bias != nullptr || s.relu) {
        finish_output_kernel<T><<<blocks_for(nb * O * L), kThreads, 0, stream()>>>(
            y + (g * s.images + n0) * O * L, nb * O * L, O, L, bias == nullptr ? nullptr : bias + g * bias_group_stride,
            s.relu);
        check_launch("finish_output_kernel");
      }
    }
  }
}

template <class T>
void conv2d_input_grad(const ConvShape& s, const T* g, const T* w, T* dx, T* scratch) {
  const std::int64_t L = s.pixels(), P = s.patch(), O = s.out_channels, plane_in = s.in_channels * s.h * s.w;
  const std::int64_t chunk = chunk_of(s);
  for (std::int64_t grp = 0; grp < s.groups; ++grp) {
    for (std::int64_t n0 = 0; n0 < s.images; n0 += chunk) {
      const std::int64_t nb = std::min(chunk, s.images - n0);
      gemm_strided<T>(true, false, P, L, O, T(1), w + grp * O * P, 0, g + (grp * s.images + n0) * O * L, O * L, T(0),
                      scratch, P * L, nb);  // cols_n = wᵀ g_n
      col2im_kernel<T><<<blocks_for(nb * plane_in), kThreads, 0, stream()>>>(scratch, s, nb, {L, P * L},
                                                                             dx + (grp * s.images + n0) * plane_in);
      check_launch("col2im_kernel");
    }
  }
}

template <class T>
void conv2d_weight_grad(const ConvShape& s, const T* x, const T* g, T* dw, T* scratch) {
  const std::int64_t L = s.pixels(), P = s.patch(), O = s.out_channels, plane_in = s.in_channels * s.h * s.w;
  const std::int64_t chunk = chunk_of(s);
  T* cols = scratch;                  // [P, nb · L]
  T* rows = scratch + P * chunk * L;  // [O, nb · L]
  for (std::int64_t grp = 0; grp < s.groups; ++grp) {
    T* dwg = dw + grp * O * P;
    if (s.images == 0) fill<T>(dwg, O * P, T(0));
    for (std::int64_t n0 = 0; n0 < s.images; n0 += chunk) {
      const std::int64_t nb = std::min(chunk, s.images - n0);
      im2col_kernel<T><<<blocks_for(nb * P * L), kThreads, 0, stream()>>>(x + (grp * s.images + n0) * plane_in, s, nb,
                                                                          {nb * L, L}, cols);
      check_launch("im2col_kernel");
      planes_to_rows_kernel<T>
          <<<blocks_for(nb * O * L), kThreads, 0, stream()>>>(g + (grp * s.images + n0) * O * L, nb, O, L, rows);
      check_launch("planes_to_rows_kernel");
      // dw += rows colsᵀ, the first chunk overwriting.
      gemm_strided<T>(false, true, O, P, nb * L, T(1), rows, 0, cols, 0, n0 == 0 ? T(0) : T(1), dwg, 0, 1);
    }
  }
}

#define METATAPE_CUDA_CONV(T)                                                                            \
  template void conv2d_forward<T>(const ConvShape&, const T*, const T*, const T*, std::int64_t, T*, T*); \
  template void conv2d_input_grad<T>(const ConvShape&, const T*, const T*, T*, T*);                      \
  template void conv2d_weight_grad<T>(const ConvShape&, const T*, const T*, T*, T*);
METATAPE_CUDA_CONV(float)
METATAPE_CUDA_CONV(double)
#undef METATAPE_CUDA_CONV

}  // namespace metatape::kernels::cuda
