#include "window_ops.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "../scalar_math.hpp"
#include "parallel.hpp"
#if METATAPE_SMALL_GEMM
#include "pool_rows.hpp"
#endif

namespace metatape::kernels::cpu {
namespace {

// The output columns [lo, hi) whose input column ow·stride − pad + offset
// lies inside [0, size): outside them the window reads padding.
void valid_range(std::int64_t out, std::int64_t stride, std::int64_t pad, std::int64_t offset, std::int64_t size,
                 std::int64_t& lo, std::int64_t& hi) {
  // ow·stride ≥ pad − offset  and  ow·stride ≤ size − 1 + pad − offset
  const std::int64_t first = pad - offset, last = size - 1 + pad - offset;
  lo = first <= 0 ? 0 : (first + stride - 1) / stride;
  hi = last < 0 ? 0 : std::min(out, last / stride + 1);
  if (hi < lo) hi = lo;
}

}  // namespace

template <class T>
void im2col(const T* x, std::int64_t groups, std::int64_t images, std::int64_t channels, std::int64_t h, std::int64_t w,
            const Window2d& win, T* cols) {
  const std::int64_t oh_n = win.out_h(h), ow_n = win.out_w(w);
  const std::int64_t columns = images * oh_n * ow_n;
  const std::int64_t rows = channels * win.kernel_h * win.kernel_w;
  for (std::int64_t g = 0; g < groups; ++g) {
    for (std::int64_t c = 0; c < channels; ++c) {
      for (std::int64_t ki = 0; ki < win.kernel_h; ++ki) {
        for (std::int64_t kj = 0; kj < win.kernel_w; ++kj) {
          const std::int64_t row = (c * win.kernel_h + ki) * win.kernel_w + kj;
          T* col_row = cols + (g * rows + row) * columns;
          std::int64_t lo, hi;
          valid_range(ow_n, win.stride_w, win.pad_w, kj, w, lo, hi);
          for (std::int64_t n = 0; n < images; ++n) {
            const T* plane = x + ((g * images + n) * channels + c) * h * w;
            for (std::int64_t oh = 0; oh < oh_n; ++oh) {
              const std::int64_t ih = oh * win.stride_h - win.pad_h + ki;
              T* out = col_row + (n * oh_n + oh) * ow_n;
              if (ih < 0 || ih >= h) {
                std::fill(out, out + ow_n, T(0));
                continue;
              }
              std::fill(out, out + lo, T(0));
              const T* in = plane + ih * w - win.pad_w + kj;  // in[ow · stride] for ow in [lo, hi)
              if (win.stride_w == 1)
                std::copy(in + lo, in + hi, out + lo);
              else
                for (std::int64_t ow = lo; ow < hi; ++ow) out[ow] = in[ow * win.stride_w];
              std::fill(out + hi, out + ow_n, T(0));
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
  std::fill(x, x + groups * images * channels * h * w, T(0));
  for (std::int64_t g = 0; g < groups; ++g) {
    for (std::int64_t c = 0; c < channels; ++c) {
      for (std::int64_t ki = 0; ki < win.kernel_h; ++ki) {
        for (std::int64_t kj = 0; kj < win.kernel_w; ++kj) {
          const std::int64_t row = (c * win.kernel_h + ki) * win.kernel_w + kj;
          const T* col_row = cols + (g * rows + row) * columns;
          std::int64_t lo, hi;
          valid_range(ow_n, win.stride_w, win.pad_w, kj, w, lo, hi);
          for (std::int64_t n = 0; n < images; ++n) {
            T* plane = x + ((g * images + n) * channels + c) * h * w;
            for (std::int64_t oh = 0; oh < oh_n; ++oh) {
              const std::int64_t ih = oh * win.stride_h - win.pad_h + ki;
              if (ih < 0 || ih >= h) continue;
              const T* in = col_row + (n * oh_n + oh) * ow_n;
              T* out = plane + ih * w - win.pad_w + kj;
              for (std::int64_t ow = lo; ow < hi; ++ow) out[ow * win.stride_w] += in[ow];
            }
          }
        }
      }
    }
  }
}

namespace {

// For channels-last windows: output pixel (oh, ow), window row ki reads
// input row ih and columns iw0 + kj for kj in [0, kernel_w). The columns
// inside the image are the run [kj0, kj1) (empty if ih is outside), which
// starts at input pixel `at` of the image.
struct WindowRun {
  std::int64_t kj0, kj1, at;
};

inline WindowRun window_run(const Window2d& win, std::int64_t h, std::int64_t w, std::int64_t oh, std::int64_t ow,
                            std::int64_t ki) {
  const std::int64_t ih = oh * win.stride_h - win.pad_h + ki;
  if (ih < 0 || ih >= h) return {0, 0, 0};
  const std::int64_t iw0 = ow * win.stride_w - win.pad_w;
  // Clamped to [0, kernel_w]: with padding wider than the window, a window
  // can lie wholly left or right of the image.
  const std::int64_t kj0 = std::clamp<std::int64_t>(-iw0, 0, win.kernel_w);
  const std::int64_t kj1 = std::max(kj0, std::min(win.kernel_w, w - iw0));
  return kj1 > kj0 ? WindowRun{kj0, kj1, ih * w + iw0 + kj0} : WindowRun{0, 0, 0};
}

}  // namespace

template <class T>
void im2col_channels_last(const T* x, std::int64_t images, std::int64_t channels, std::int64_t h, std::int64_t w,
                          const Window2d& win, T* cols) {
  const std::int64_t oh_n = win.out_h(h), ow_n = win.out_w(w);
  const std::int64_t row_len = win.kernel_w * channels, patch = win.kernel_h * row_len;
  for (std::int64_t n = 0; n < images; ++n) {
    const T* image = x + n * h * w * channels;
    for (std::int64_t oh = 0; oh < oh_n; ++oh)
      for (std::int64_t ow = 0; ow < ow_n; ++ow) {
        T* row = cols + ((n * oh_n + oh) * ow_n + ow) * patch;
        for (std::int64_t ki = 0; ki < win.kernel_h; ++ki) {
          // Each value written once: padding as zeros, the run copied.
          const WindowRun r = window_run(win, h, w, oh, ow, ki);
          T* out = row + ki * row_len;
          std::fill(out, out + r.kj0 * channels, T(0));
          std::copy(image + r.at * channels, image + (r.at + r.kj1 - r.kj0) * channels, out + r.kj0 * channels);
          std::fill(out + r.kj1 * channels, out + row_len, T(0));
        }
      }
  }
}

template <class T>
void col2im_channels_last(const T* cols, std::int64_t images, std::int64_t channels, std::int64_t h, std::int64_t w,
                          const Window2d& win, T* x) {
  const std::int64_t oh_n = win.out_h(h), ow_n = win.out_w(w);
  const std::int64_t row_len = win.kernel_w * channels, patch = win.kernel_h * row_len;
  std::fill(x, x + images * h * w * channels, T(0));
  for (std::int64_t n = 0; n < images; ++n) {
    T* image = x + n * h * w * channels;
    for (std::int64_t oh = 0; oh < oh_n; ++oh)
      for (std::int64_t ow = 0; ow < ow_n; ++ow) {
        const T* row = cols + ((n * oh_n + oh) * ow_n + ow) * patch;
        for (std::int64_t ki = 0; ki < win.kernel_h; ++ki) {
          const WindowRun r = window_run(win, h, w, oh, ow, ki);
          T* out = image + r.at * channels;
          const T* in = row + ki * row_len + r.kj0 * channels;
          const std::int64_t len = (r.kj1 - r.kj0) * channels;
#pragma omp simd
          for (std::int64_t i = 0; i < len; ++i) out[i] += in[i];
        }
      }
  }
}

template <class T>
bool contains_nan(const T* x, std::int64_t n) {
  int any = 0;
#pragma omp simd reduction(| : any)
  for (std::int64_t i = 0; i < n; ++i) any |= x[i] != x[i];
  return any != 0;
}

// Candidate `at` replaces the current best if it beats it (beats_max: the
// first maximum wins ties, NaN propagates). Branch-free, for the compiler.
template <class T>
inline void challenge(const T* x, std::int64_t at, std::int64_t& best, T& best_value) {
  const T v = x[at];
  const bool take = beats_max(v, best_value);
  best = take ? at : best;
  best_value = take ? v : best_value;
}

// max_pool of plane p with 2×2 windows at stride 2, no padding, and no NaN
// in the plane: four candidates, selects instead of branches (the data are
// random, a branch would mispredict half the time). Each index plus shift.
template <class T>
void max_pool_2x2_plane(const T* x, std::int64_t p, std::int64_t h, std::int64_t w, T* y, std::int64_t* index,
                        std::int64_t shift) {
  const std::int64_t oh_n = h / 2, ow_n = w / 2;
  for (std::int64_t oh = 0; oh < oh_n; ++oh) {
    const T* r0 = x + p * h * w + 2 * oh * w;
    const T* r1 = r0 + w;
    std::int64_t* out = index + (p * oh_n + oh) * ow_n;
    T* values = y + (p * oh_n + oh) * ow_n;
    const std::int64_t at0 = p * h * w + 2 * oh * w + shift;
    for (std::int64_t ow = 0; ow < ow_n; ++ow) {
      const T a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
      // Strictly greater takes over, so the first maximum wins ties;
      // arithmetic on the comparisons keeps it free of branches.
      const std::int64_t take_b = b > a;
      const T ab = std::max(a, b);
      const std::int64_t best_ab = take_b;
      const std::int64_t take_c = c > ab;
      const T abc = std::max(ab, c);
      const std::int64_t best_abc = best_ab + take_c * (w - best_ab);
      const std::int64_t take_d = d > abc;
      out[ow] = at0 + 2 * ow + best_abc + take_d * (w + 1 - best_abc);
      values[ow] = std::max(abc, d);
    }
  }
}

// max_pool of plane p, any window, NaN or not. Each index plus shift.
template <class T>
void max_pool_plane(const T* x, std::int64_t p, std::int64_t h, std::int64_t w, const Window2d& win, T* y,
                    std::int64_t* index, std::int64_t shift) {
  const std::int64_t oh_n = win.out_h(h), ow_n = win.out_w(w), base = p * h * w;
  for (std::int64_t oh = 0; oh < oh_n; ++oh) {
    // The window's rows and columns inside the image: padding never wins.
    const std::int64_t ih0 = std::max<std::int64_t>(oh * win.stride_h - win.pad_h, 0);
    const std::int64_t ih1 = std::min(oh * win.stride_h - win.pad_h + win.kernel_h, h);
    for (std::int64_t ow = 0; ow < ow_n; ++ow) {
      const std::int64_t iw0 = std::max<std::int64_t>(ow * win.stride_w - win.pad_w, 0);
      const std::int64_t iw1 = std::min(ow * win.stride_w - win.pad_w + win.kernel_w, w);
      std::int64_t best = base + ih0 * w + iw0;
      T best_value = x[best];
      for (std::int64_t ih = ih0; ih < ih1; ++ih) {
        for (std::int64_t iw = iw0; iw < iw1; ++iw) {
          challenge(x, base + ih * w + iw, best, best_value);
        }
      }
      index[(p * oh_n + oh) * ow_n + ow] = best + shift;
      y[(p * oh_n + oh) * ow_n + ow] = best_value;
    }
  }
}

namespace {

// Whether the windows are 2×2 at stride 2 without padding, on planes they fit.
bool two_by_two(const Window2d& win, std::int64_t h, std::int64_t w) {
  return win.kernel_h == 2 && win.kernel_w == 2 && win.stride_h == 2 && win.stride_w == 2 && win.pad_h == 0 &&
         win.pad_w == 0 && h >= 2 && w >= 2;
}

// Whether pooling by `win` on h×w planes of T (or its adjoint) runs in
// pool_rows.hpp's AVX-512 rows: 2×2 windows, float, AVX-512 the element
// loops' copy, rows narrow enough for the rows' 32-bit offsets within a
// window (w + 1), and for the adjoint rows of at least
// pool_rows::kMinUnpoolWindows windows.
template <class T>
bool vector_rows(const Window2d& win, std::int64_t h, std::int64_t w, bool adjoint) {
#if METATAPE_SMALL_GEMM
  const std::int64_t min_windows = adjoint ? pool_rows::kMinUnpoolWindows : 1;
  return std::is_same_v<T, float> && two_by_two(win, h, w) && w / 2 >= min_windows && w < (std::int64_t{1} << 30) &&
         pool_rows::in_use();
#else
  (void)win, (void)h, (void)w, (void)adjoint;
  return false;
#endif
}

// pool_rows' plane functions, for float; never called for double.
template <class T>
bool pool_plane_in_rows(const T* x, std::int64_t p, std::int64_t h, std::int64_t w, T* y, std::int64_t* index,
                        std::int64_t shift) {
#if METATAPE_SMALL_GEMM
  if constexpr (std::is_same_v<T, float>) return pool_rows::max_pool_plane(x, p, h, w, y, index, shift);
#endif
  (void)x, (void)p, (void)h, (void)w, (void)y, (void)index, (void)shift;
  return false;
}
template <class T>
bool unpool_plane_in_rows(const T* g, const std::int64_t* index, std::int64_t p, std::int64_t h, std::int64_t w,
                          T* dx) {
#if METATAPE_SMALL_GEMM
  if constexpr (std::is_same_v<T, float>) return pool_rows::max_unpool_plane(g, index, p, h, w, dx);
#endif
  (void)g, (void)index, (void)p, (void)h, (void)w, (void)dx;
  return false;
}

}  // namespace

// max_pool over planes [p0, p1): indices relative to x, plus index_shift.
// Each plane is checked for NaN just before it is pooled, while it is in
// cache (by the AVX-512 rows as they read it, which give the plane to the
// general loop if they meet one).
template <class T>
void max_pool_planes(const T* x, std::int64_t p0, std::int64_t p1, std::int64_t h, std::int64_t w, const Window2d& win,
                     T* y, std::int64_t* index, std::int64_t index_shift) {
  const bool pairs = two_by_two(win, h, w), rows = vector_rows<T>(win, h, w, false);
  for (std::int64_t p = p0; p < p1; ++p) {
    if (rows && pool_plane_in_rows(x, p, h, w, y, index, index_shift)) continue;
    if (pairs && !contains_nan(x + p * h * w, h * w))
      max_pool_2x2_plane(x, p, h, w, y, index, index_shift);
    else
      max_pool_plane(x, p, h, w, win, y, index, index_shift);
  }
}

// The planes are independent: spread over the thread pool.
template <class T>
void max_pool(const T* x, std::int64_t planes, std::int64_t h, std::int64_t w, const Window2d& win, T* y,
              std::int64_t* index) {
  parallel_for(planes, items_grain(h * w, kPlaneGrain),
               [&](std::int64_t begin, std::int64_t end) { max_pool_planes(x, begin, end, h, w, win, y, index, 0); });
}

// Plane by plane: each is zeroed and receives its gradients while it is in
// cache (one pass over dx, not a fill of the whole and a scattered second
// pass), in the same order at any thread count; or, on rows long enough
// (pool_rows::kMinUnpoolWindows), written whole by the AVX-512 rows, which
// give the plane back to the scatter if an index lies outside its window.
template <class T>
void max_unpool(const T* g, const std::int64_t* index, std::int64_t planes, std::int64_t h, std::int64_t w,
                const Window2d& win, T* dx) {
  const std::int64_t outputs = win.out_h(h) * win.out_w(w);
  const bool rows = vector_rows<T>(win, h, w, true);
  parallel_for(planes, items_grain(h * w, kPlaneGrain), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t p = begin; p < end; ++p) {
      if (rows && unpool_plane_in_rows(g, index, p, h, w, dx)) continue;
      std::fill(dx + p * h * w, dx + (p + 1) * h * w, T(0));
      for (std::int64_t i = p * outputs; i < (p + 1) * outputs; ++i) dx[index[i]] += g[i];
    }
  });
}

#define METATAPE_WINDOW_INSTANTIATE(T)                                                                               \
  template void im2col<T>(const T*, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t,            \
                          const Window2d&, T*);                                                                      \
  template void col2im<T>(const T*, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t,            \
                          const Window2d&, T*);                                                                      \
  template void max_pool<T>(const T*, std::int64_t, std::int64_t, std::int64_t, const Window2d&, T*, std::int64_t*); \
  template void max_unpool<T>(const T*, const std::int64_t*, std::int64_t, std::int64_t, std::int64_t,               \
                              const Window2d&, T*);                                                                  \
  template void max_pool_planes<T>(const T*, std::int64_t, std::int64_t, std::int64_t, std::int64_t, const Window2d&, \
                                   T*, std::int64_t*, std::int64_t);                                                  \
  template void im2col_channels_last<T>(const T*, std::int64_t, std::int64_t, std::int64_t, std::int64_t,            \
                                        const Window2d&, T*);                                                        \
  template void col2im_channels_last<T>(const T*, std::int64_t, std::int64_t, std::int64_t, std::int64_t,            \
                                        const Window2d&, T*);

METATAPE_WINDOW_INSTANTIATE(float)
METATAPE_WINDOW_INSTANTIATE(double)
#undef METATAPE_WINDOW_INSTANTIATE

}  // namespace metatape::kernels::cpu
