#include "window_ops.hpp"

#include <cmath>

namespace metatape::kernels::cpu {

template <class T>
void im2col(const T* x, std::int64_t groups, std::int64_t images, std::int64_t channels, std::int64_t h,
            std::int64_t w, const Window2d& win, T* cols) {
  const std::int64_t oh_n = win.out_h(h), ow_n = win.out_w(w);
  const std::int64_t columns = images * oh_n * ow_n;
  const std::int64_t rows = channels * win.kernel_h * win.kernel_w;
  for (std::int64_t g = 0; g < groups; ++g) {
    for (std::int64_t c = 0; c < channels; ++c) {
      for (std::int64_t ki = 0; ki < win.kernel_h; ++ki) {
        for (std::int64_t kj = 0; kj < win.kernel_w; ++kj) {
          const std::int64_t row = (c * win.kernel_h + ki) * win.kernel_w + kj;
          T* col_row = cols + (g * rows + row) * columns;
          for (std::int64_t n = 0; n < images; ++n) {
            const T* plane = x + ((g * images + n) * channels + c) * h * w;
            for (std::int64_t oh = 0; oh < oh_n; ++oh) {
              const std::int64_t ih = oh * win.stride_h - win.pad_h + ki;
              T* out = col_row + (n * oh_n + oh) * ow_n;
              if (ih < 0 || ih >= h) {
                for (std::int64_t ow = 0; ow < ow_n; ++ow) out[ow] = T(0);
                continue;
              }
              for (std::int64_t ow = 0; ow < ow_n; ++ow) {
                const std::int64_t iw = ow * win.stride_w - win.pad_w + kj;
                out[ow] = (iw >= 0 && iw < w) ? plane[ih * w + iw] : T(0);
              }
            }
          }
        }
      }
    }
  }
}

template <class T>
void col2im(const T* cols, std::int64_t groups, std::int64_t images, std::int64_t channels, std::int64_t h,
            std::int64_t w, const Window2d& win, T* x) {
  const std::int64_t oh_n = win.out_h(h), ow_n = win.out_w(w);
  const std::int64_t columns = images * oh_n * ow_n;
  const std::int64_t rows = channels * win.kernel_h * win.kernel_w;
  const std::int64_t total = groups * images * channels * h * w;
  for (std::int64_t i = 0; i < total; ++i) x[i] = T(0);
  for (std::int64_t g = 0; g < groups; ++g) {
    for (std::int64_t c = 0; c < channels; ++c) {
      for (std::int64_t ki = 0; ki < win.kernel_h; ++ki) {
        for (std::int64_t kj = 0; kj < win.kernel_w; ++kj) {
          const std::int64_t row = (c * win.kernel_h + ki) * win.kernel_w + kj;
          const T* col_row = cols + (g * rows + row) * columns;
          for (std::int64_t n = 0; n < images; ++n) {
            T* plane = x + ((g * images + n) * channels + c) * h * w;
            for (std::int64_t oh = 0; oh < oh_n; ++oh) {
              const std::int64_t ih = oh * win.stride_h - win.pad_h + ki;
              if (ih < 0 || ih >= h) continue;
              const T* in = col_row + (n * oh_n + oh) * ow_n;
              for (std::int64_t ow = 0; ow < ow_n; ++ow) {
                const std::int64_t iw = ow * win.stride_w - win.pad_w + kj;
                if (iw >= 0 && iw < w) plane[ih * w + iw] += in[ow];
              }
            }
          }
        }
      }
    }
  }
}

template <class T>
void max_pool_argmax(const T* x, std::int64_t planes, std::int64_t h, std::int64_t w, const Window2d& win,
                     std::int64_t* index) {
  const std::int64_t oh_n = win.out_h(h), ow_n = win.out_w(w);
  for (std::int64_t p = 0; p < planes; ++p) {
    const std::int64_t base = p * h * w;
    for (std::int64_t oh = 0; oh < oh_n; ++oh) {
      for (std::int64_t ow = 0; ow < ow_n; ++ow) {
        std::int64_t best = -1;
        for (std::int64_t ki = 0; ki < win.kernel_h; ++ki) {
          const std::int64_t ih = oh * win.stride_h - win.pad_h + ki;
          if (ih < 0 || ih >= h) continue;
          for (std::int64_t kj = 0; kj < win.kernel_w; ++kj) {
            const std::int64_t iw = ow * win.stride_w - win.pad_w + kj;
            if (iw < 0 || iw >= w) continue;
            const std::int64_t at = base + ih * w + iw;
            // NaN wins, so that it propagates as in torch.max_pool2d.
            if (best < 0 || (!std::isnan(x[best]) && (x[at] > x[best] || std::isnan(x[at])))) best = at;
          }
        }
        index[(p * oh_n + oh) * ow_n + ow] = best;
      }
    }
  }
}

#define METATAPE_WINDOW_INSTANTIATE(T)                                                                         \
  template void im2col<T>(const T*, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t,     \
                          const Window2d&, T*);                                                                \
  template void col2im<T>(const T*, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t,     \
                          const Window2d&, T*);                                                                \
  template void max_pool_argmax<T>(const T*, std::int64_t, std::int64_t, std::int64_t, const Window2d&,        \
                                   std::int64_t*);

METATAPE_WINDOW_INSTANTIATE(float)
METATAPE_WINDOW_INSTANTIATE(double)
#undef METATAPE_WINDOW_INSTANTIATE

}  // namespace metatape::kernels::cpu
