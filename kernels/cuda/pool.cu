// The arg-max of each pooling window (the values are then gathered by take,
// whose adjoint routes gradients to them).
#include "../scalar_math.hpp"
#include "common.cuh"
#include "kernels.hpp"

namespace metatape::kernels::cuda {
namespace {

// x [planes, h, w] -> index [planes, out_h, out_w]: flat index into x of each
// window's first maximum; NaN wins and stays; padding is never chosen.
template <class T>
__global__ void max_pool_argmax_kernel(const T* x, std::int64_t planes, std::int64_t h, std::int64_t w, Window2d win,
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
  }
}

}  // namespace

template <class T>
void max_pool_argmax(const T* x, std::int64_t planes, std::int64_t h, std::int64_t w, const Window2d& win,
                     std::int64_t* index) {
  const std::int64_t n = planes * win.out_h(h) * win.out_w(w);
  if (n == 0) return;
  max_pool_argmax_kernel<T><<<blocks_for(n), kThreads, 0, stream()>>>(x, planes, h, w, win, index);
  check_launch("max_pool_argmax_kernel");
}

template void max_pool_argmax<float>(const float*, std::int64_t, std::int64_t, std::int64_t, const Window2d&,
                                     std::int64_t*);
template void max_pool_argmax<double>(const double*, std::int64_t, std::int64_t, std::int64_t, const Window2d&,
                                      std::int64_t*);

}  // namespace metatape::kernels::cuda
