// Reductions: sums to a broadcast shape, arg-maxima, log-softmax.
#include "../scalar_math.hpp"
#include "common.cuh"
#include "kernels.hpp"

namespace metatape::kernels::cuda {
namespace {

// How sum_to walks x: an output position is a point in the kept dimensions;
// the values it sums are the points of the reduced dimensions.
struct SumPlan {
  int kept_rank = 0, reduced_rank = 0;
  std::int64_t kept_shape[5] = {}, kept_stride[5] = {};        // x's strides along the kept dimensions
  std::int64_t reduced_shape[5] = {}, reduced_stride[5] = {};  // and along the reduced ones
};

__device__ inline std::int64_t offset_of(std::int64_t i, int rank, const std::int64_t* shape,
                                         const std::int64_t* stride) {
  std::int64_t offset = 0;
  for (int d = rank - 1; d >= 0; --d) {
    offset += (i % shape[d]) * stride[d];
    i /= shape[d];
  }
  return offset;
}

// out [outputs]: one block per output (grid-stride over outputs), the block's
// threads splitting its `reduced` values, summed in double in a fixed order.
template <class T>
__global__ void sum_blocks_kernel(SumPlan p, const T* x, T* out, std::int64_t outputs, std::int64_t reduced) {
  __shared__ double shared[kThreads];
  for (std::int64_t o = blockIdx.x; o < outputs; o += gridDim.x) {
    const std::int64_t base = offset_of(o, p.kept_rank, p.kept_shape, p.kept_stride);
    double acc = 0;
    for (std::int64_t r = threadIdx.x; r < reduced; r += blockDim.x)
      acc += static_cast<double>(x[base + offset_of(r, p.reduced_rank, p.reduced_shape, p.reduced_stride)]);
    const double total = block_sum(acc, shared);
    if (threadIdx.x == 0) out[o] = static_cast<T>(total);
  }
}

// out [outputs]: one thread per output, for short reductions.
template <class T>
__global__ void sum_threads_kernel(SumPlan p, const T* x, T* out, std::int64_t outputs, std::int64_t reduced) {
  for (std::int64_t o = global_index(); o < outputs; o += global_stride()) {
    const std::int64_t base = offset_of(o, p.kept_rank, p.kept_shape, p.kept_stride);
    double acc = 0;
    for (std::int64_t r = 0; r < reduced; ++r)
      acc += static_cast<double>(x[base + offset_of(r, p.reduced_rank, p.reduced_shape, p.reduced_stride)]);
    out[o] = static_cast<T>(acc);
  }
}

// x [outer, length, inner] -> index [outer, inner]: the first maximum (NaN wins).
template <class T>
__global__ void argmax_kernel(const T* x, std::int64_t outer, std::int64_t length, std::int64_t inner,
                              std::int64_t* index) {
  for (std::int64_t t = global_index(); t < outer * inner; t += global_stride()) {
    const std::int64_t o = t / inner, i = t % inner, base = o * length * inner + i;
    std::int64_t best = base;
    for (std::int64_t l = 1; l < length; ++l) {
      if (isnan(x[best])) break;
      const std::int64_t at = base + l * inner;
      if (beats_max(x[at], x[best])) best = at;
    }
    index[t] = best;
  }
}

// x, y [outer, length, inner]: one thread per (outer, inner) row.
template <class T>
__global__ void log_softmax_kernel(const T* x, T* y, std::int64_t outer, std::int64_t length, std::int64_t inner) {
  for (std::int64_t t = global_index(); t < outer * inner; t += global_stride()) {
    const std::int64_t o = t / inner, i = t % inner;
    const T* xr = x + o * length * inner + i;
    T* yr = y + o * length * inner + i;
    T max = -INFINITY;
    for (std::int64_t l = 0; l < length; ++l) max = xr[l * inner] > max ? xr[l * inner] : max;
    if (!isfinite(max)) max = isnan(max) ? max : T(0);  // rows of -inf stay -inf, not NaN
    // x enters only through x - max, as in the CPU kernel: the result (and
    // every derivative computed from it) does not change when all logits shift.
    const double m = static_cast<double>(max);
    double sum = 0;
    for (std::int64_t l = 0; l < length; ++l) sum += exp(static_cast<double>(xr[l * inner]) - m);
    const double log_sum = log(sum);
    for (std::int64_t l = 0; l < length; ++l)
      yr[l * inner] = static_cast<T>((static_cast<double>(xr[l * inner]) - m) - log_sum);
  }
}

}  // namespace

template <class T>
void sum_to(int rank, const std::int64_t* in_shape, const T* x, const std::int64_t* out_shape, T* out) {
  SumPlan p;
  std::int64_t stride = 1, outputs = 1, reduced = 1;
  // Build from the innermost dimension out, then reverse into row-major order.
  std::int64_t ks[5], kst[5], rs[5], rst[5];
  for (int d = rank - 1; d >= 0; --d) {
    if (in_shape[d] == 1) continue;  // nothing to walk (and not an innermost axis)
    if (out_shape[d] == 1) {
      rs[p.reduced_rank] = in_shape[d];
      rst[p.reduced_rank++] = stride;
      reduced *= in_shape[d];
    } else {
      ks[p.kept_rank] = in_shape[d];
      kst[p.kept_rank++] = stride;
      outputs *= in_shape[d];
    }
    stride *= in_shape[d];
  }
  for (int i = 0; i < p.kept_rank; ++i) {
    p.kept_shape[i] = ks[p.kept_rank - 1 - i];
    p.kept_stride[i] = kst[p.kept_rank - 1 - i];
  }
  for (int i = 0; i < p.reduced_rank; ++i) {
    p.reduced_shape[i] = rs[p.reduced_rank - 1 - i];
    p.reduced_stride[i] = rst[p.reduced_rank - 1 - i];
  }
  if (outputs == 0) return;
  // A block per output splits a long reduction, but when the innermost axis
  // is kept its threads read x with a stride; with outputs enough for a wave
  // of blocks on an H100/H200 (132 SMs x 256 threads) a thread per output
  // reads neighbouring addresses instead. A heuristic, not yet timed on a GPU.
  const bool innermost_kept = p.kept_rank > 0 && p.kept_stride[p.kept_rank - 1] == 1;
  if (reduced >= 64 && !(innermost_kept && outputs >= 32768)) {
    sum_blocks_kernel<T><<<static_cast<unsigned>(std::min<std::int64_t>(outputs, 65535)), kThreads, 0, stream()>>>(
        p, x, out, outputs, reduced);
    check_launch("sum_blocks_kernel");
  } else {
    sum_threads_kernel<T><<<blocks_for(outputs), kThreads, 0, stream()>>>(p, x, out, outputs, reduced);
    check_launch("sum_threads_kernel");
  }
}

template <class T>
void argmax_axis(const T* x, std::int64_t outer, std::int64_t length, std::int64_t inner, std::int64_t* index) {
  if (outer * inner == 0) return;
  argmax_kernel<T><<<blocks_for(outer * inner), kThreads, 0, stream()>>>(x, outer, length, inner, index);
  check_launch("argmax_kernel");
}

template <class T>
void log_softmax(const T* x, T* y, std::int64_t outer, std::int64_t length, std::int64_t inner) {
  if (outer * inner == 0) return;
  log_softmax_kernel<T><<<blocks_for(outer * inner), kThreads, 0, stream()>>>(x, y, outer, length, inner);
  check_launch("log_softmax_kernel");
}

#define METATAPE_CUDA_REDUCE(T)                                                                              \
  template void sum_to<T>(int, const std::int64_t*, const T*, const std::int64_t*, T*);                     \
  template void argmax_axis<T>(const T*, std::int64_t, std::int64_t, std::int64_t, std::int64_t*);          \
  template void log_softmax<T>(const T*, T*, std::int64_t, std::int64_t, std::int64_t);
METATAPE_CUDA_REDUCE(float)
METATAPE_CUDA_REDUCE(double)
#undef METATAPE_CUDA_REDUCE

}  // namespace metatape::kernels::cuda
