// Max-pooling: each window's maximum and the index of its first maximum, and
// the adjoint that routes gradients back to those indices.
#include "../scalar_math.hpp"
#include "common.cuh"
#include "kernels.hpp"

namespace metatape::kernels::cuda {
namespace {

// x [planes, h, w] -> y, index [planes, out_h, out_w]: each window's maximum
// and the flat index into x of its first maximum; NaN wins and stays;
// padding is never chosen.
template <class T>
__global__ void max_pool_kernel(const T* x, std::int64_t planes, std::int64_t h, std::int64_t w, Window2d win, T* y,
                                std::int64_t* index) {
  const std::int64_t out_h = win.out_h(h), out_w = win.out_w(w), n = planes * out_h * out_w;
  for (std::int64_t i = global_index(); i < n; i += global_stride()) {
    const std::int64_t ow = i % out_w, oh = (i / out_w) % out_h, p = i / (out_w * out_h);
    const std::int64_t ih0 = max(oh * win.stride_h - win.pad_h, std::int64_t{0});
    const std::int64_t ih1 = min(oh * win.stride_h - win.pad_h + win.kernel_h, h);
    const std::int64_t iw0 = max(ow * win.stride_w - win.pad_w, std::int64_t{0});
    const std::int64_t iw1 = min(ow * win.stride_w - win.pad_w + win.kernel_w, w);
    const std::int64_t base = p * h * w;
    std::int64_t best = base + ih0 * w + iw0;
    T best_value = x[best];
    for (std::int64_t ih = ih0; ih < ih1; ++ih)
      for (std::int64_t iw = iw0; iw < iw1; ++iw) {
        const T v = x[base + ih * w + iw];
        if (beats_max(v, best_value)) {
          best = base + ih * w + iw;
          best_value = v;
        }
      }
    index[i] = best;
    y[i] = best_value;
  }
}

// One thread per plane [h, w] of dx: zero it, then add its window
// gradients in order. A plane's entries are written by its thread alone, so
// overlapping windows need no atomics and the sums have the CPU's order.
template <class T>
__global__ void max_unpool_kernel(const T* g, const std::int64_t* index, std::int64_t planes, std::int64_t plane,
                                  std::int64_t outputs, T* dx) {
  for (std::int64_t p = global_index(); p < planes; p += global_stride()) {
    for (std::int64_t i = p * plane; i < (p + 1) * plane; ++i) dx[i] = T(0);
    for (std::int64_t i = p * outputs; i < (p + 1) * outputs; ++i) dx[index[i]] += g[i];
  }
}

}  // namespace

template <class T>
void max_pool(const T* x, std::int64_t planes, std::int64_t h, std::int64_t w, const Window2d& win, T* y,
              std::int64_t* index) {
  const std::int64_t n = planes * win.out_h(h) * win.out_w(w);
  if (n == 0) return;
  max_pool_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(x, planes, h, w, win, y, index);
  check_launch("max_pool_kernel");
}

template <class T>
void max_unpool(const T* g, const std::int64_t* index, std::int64_t planes, std::int64_t h, std::int64_t w,
                const Window2d& win, T* dx) {
  if (planes == 0 || h * w == 0) return;
  max_unpool_kernel<T>
      <<<blocks_for(planes), kThreads, 0, stream()>>>(g, index, planes, h * w, win.out_h(h) * win.out_w(w), dx);
  check_launch("max_unpool_kernel");
}

template void max_pool<float>(const float*, std::int64_t, std::int64_t, std::int64_t, const Window2d&, float*,
                              std::int64_t*);
template void max_pool<double>(const double*, std::int64_t, std::int64_t, std::int64_t, const Window2d&, double*,
                               std::int64_t*);
template void max_unpool<float>(const float*, const std::int64_t*, std::int64_t, std::int64_t, std::int64_t,
                                const Window2d&, float*);
template void max_unpool<double>(const double*, const std::int64_t*, std::int64_t, std::int64_t, std::int64_t,
                                 const Window2d&, double*);

}  // namespace metatape::kernels::cuda
