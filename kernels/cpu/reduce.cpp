// Reductions: sums to a broadcast shape, arg-maxima, log-softmax.
//
// Threads: each kernel is spread over its outputs, never inside one sum, so
// every output is summed in the same order at any thread count and the
// results are bit-identical. The exception is a sum of a whole tensor to one
// number (nothing to spread over), which stays on one thread.
#include "kernels.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "../scalar_math.hpp"
#include "parallel.hpp"
#include "parallel_loop.hpp"
#include "strided.hpp"
#include "vector_clones.hpp"
#if METATAPE_SMALL_GEMM
#include "short_rows.hpp"
#endif

namespace metatape::kernels::cpu {
namespace {

// Σ x[i] in double, as a simd reduction: the additions no longer wait on one
// another, and the order (hence the result) is fixed at compile time.
template <class T>
double sum_contiguous(const T* x, std::int64_t n) {
  double total = 0.0;
#pragma omp simd reduction(+ : total)
  for (std::int64_t i = 0; i < n; ++i) total += static_cast<double>(x[i]);
  return total;
}

// o[i] += x[i] for i < n, over a block of rows (for_each_block; operand 0
// is x, 1 the output), row after row.
template <class T>
void add_rows(T* o, const T* x, const RowBlock& block, std::int64_t n) {
#if METATAPE_SMALL_GEMM
  if (short_rows::takes(n)) return short_rows::accumulate(o, x, block, n);
#endif
  run_vectorised([&] {
    for (std::int64_t r = 0; r < block.rows; ++r) {
      T* orow = o + r * block.stride[1];
      const T* xrow = x + r * block.stride[0];
      for (std::int64_t i = 0; i < n; ++i) orow[i] += xrow[i];
    }
  });
}

template <class T>
double sum_strided(const T* x, std::int64_t n, std::int64_t stride) {
  double total = 0.0;
  for (std::int64_t i = 0; i < n; ++i) total += static_cast<double>(x[i * stride]);
  return total;
}

// One row of log_softmax: `length` entries `inner` apart.
template <class T>
void log_softmax_row(const T* xr, T* yr, std::int64_t length, std::int64_t inner) {
  T max = -std::numeric_limits<T>::infinity();
  for (std::int64_t l = 0; l < length; ++l) max = xr[l * inner] > max ? xr[l * inner] : max;
  // All -inf (or empty) rows: keep max finite so x - max stays -inf, not NaN.
  if (!std::isfinite(max)) max = std::isnan(max) ? max : T(0);
  // x enters only through x - max (in double: for float logits exact, or
  // far below float precision). Adding log Σ back onto max first would
  // round at the scale of |x|, and the result, with every derivative
  // computed from it, would move when all logits shift; as written,
  // x + c and max + c give the same x - max.
  const double m = static_cast<double>(max);
  double sum = 0.0;
  for (std::int64_t l = 0; l < length; ++l) sum += std::exp(static_cast<double>(xr[l * inner]) - m);
  const double log_sum = std::log(sum);
  for (std::int64_t l = 0; l < length; ++l)
    yr[l * inner] = static_cast<T>((static_cast<double>(xr[l * inner]) - m) - log_sum);
}

}  // namespace

template <class T>
void sum_to(int rank, const std::int64_t* in_shape, const T* x, const std::int64_t* out_shape, T* out) {
  std::int64_t out_numel = 1;
  for (int d = 0; d < rank; ++d) out_numel *= out_shape[d];
  fill(out, out_numel, T(0));

  std::int64_t x_strides[kMaxLoopRank], out_strides[kMaxLoopRank];
  contiguous_strides(rank, in_shape, x_strides);
  broadcast_strides(rank, out_shape, rank, in_shape, out_strides);
  const std::int64_t* strides[2] = {x_strides, out_strides};
  const StridedLoop loop = make_loop(rank, in_shape, 2, strides);
  // Cut only along a dimension the output keeps: each output entry then
  // lies in one chunk, which adds its rows in the serial order (a block's
  // rows in order, each row whole).
  parallel_for_each_block(loop, widest_dimension(loop, 1), kStreamGrain,
                          [&](const std::int64_t* off, std::int64_t n, const std::int64_t* s, const RowBlock& block) {
                            if (s[0] == 1 && s[1] == 1) return add_rows(out + off[1], x + off[0], block, n);
                            for (std::int64_t r = 0; r < block.rows; ++r) {
                              const T* xr = x + off[0] + r * block.stride[0];
                              T* o = out + off[1] + r * block.stride[1];
                              if (s[1] == 0) {  // the row folds into one entry
                                *o += static_cast<T>(s[0] == 1 ? sum_contiguous(xr, n) : sum_strided(xr, n, s[0]));
                              } else {
                                for (std::int64_t i = 0; i < n; ++i) o[i * s[1]] += xr[i * s[0]];
                              }
                            }
                          });
}

template <class T>
void argmax_axis(const T* x, std::int64_t outer, std::int64_t length, std::int64_t inner, std::int64_t* index) {
  // Over the outputs q = o·inner + i, each a scan of `length` entries.
  const std::int64_t grain = items_grain(length);
  parallel_for(outer * inner, grain, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t q = begin; q < end; ++q) {
      const std::int64_t base = (q / inner) * length * inner + q % inner;
      std::int64_t best = base;
      for (std::int64_t l = 1; l < length; ++l) {
        const std::int64_t at = base + l * inner;
        if (std::isnan(x[best])) break;
        if (beats_max(x[at], x[best])) best = at;
      }
      index[q] = best;
    }
  });
}

template <class T>
void log_softmax(const T* x, T* y, std::int64_t outer, std::int64_t length, std::int64_t inner) {
  // Over the rows q = o·inner + i; each entry costs an exp.
  const std::int64_t grain = items_grain(length, kMathGrain);
  parallel_for(outer * inner, grain, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t q = begin; q < end; ++q) {
      const std::int64_t o = q / inner, i = q % inner;
      log_softmax_row(x + o * length * inner + i, y + o * length * inner + i, length, inner);
    }
  });
}

template void sum_to<float>(int, const std::int64_t*, const float*, const std::int64_t*, float*);
template void sum_to<double>(int, const std::int64_t*, const double*, const std::int64_t*, double*);
template void argmax_axis<float>(const float*, std::int64_t, std::int64_t, std::int64_t, std::int64_t*);
template void argmax_axis<double>(const double*, std::int64_t, std::int64_t, std::int64_t, std::int64_t*);
template void log_softmax<float>(const float*, float*, std::int64_t, std::int64_t, std::int64_t);
template void log_softmax<double>(const double*, double*, std::int64_t, std::int64_t, std::int64_t);

}  // namespace metatape::kernels::cpu
