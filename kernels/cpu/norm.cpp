// Batch normalisation with batch statistics (NormShape, types.hpp), fused.
// Statistics accumulate in double. The (group, channel) slices are spread
// over the thread pool; each is computed whole by one thread, and what is
// summed across slices (a shared gamma's and beta's gradients) is summed
// afterwards in slice order, so results do not depend on the thread count.
#include "kernels.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "parallel.hpp"

#include "../scalar_math.hpp"

namespace metatape::kernels::cpu {
namespace {

// Mean and 1/√(var + eps) of one (group, channel) slice: `batch` rows of
// `spatial` values, `stride` apart. Each row is summed in T as a simd
// reduction (vectorised, in a fixed order), rows are added in double.
template <class T>
void moments(const T* x, std::int64_t batch, std::int64_t spatial, std::int64_t stride, double eps, double& mean,
             double& rstd) {
  const double count = static_cast<double>(batch * spatial);
  double sum = 0;
  for (std::int64_t n = 0; n < batch; ++n) {
    const T* row = x + n * stride;
    T row_sum = 0;
#pragma omp simd reduction(+ : row_sum)
    for (std::int64_t i = 0; i < spatial; ++i) row_sum += row[i];
    sum += static_cast<double>(row_sum);
  }
  mean = sum / count;
  const T m = static_cast<T>(mean);
  double squares = 0;  // two passes: no cancellation
  for (std::int64_t n = 0; n < batch; ++n) {
    const T* row = x + n * stride;
    T row_squares = 0;
#pragma omp simd reduction(+ : row_squares)
    for (std::int64_t i = 0; i < spatial; ++i) row_squares += (row[i] - m) * (row[i] - m);
    squares += static_cast<double>(row_squares);
  }
  rstd = 1.0 / std::sqrt(squares / count + eps);
}

}  // namespace

// Calls f(slice, offset, affine, mean, rstd, scale, shift) for every
// (group, channel) slice, slice = group · channels + channel, in parallel:
// where it starts in x, its index in gamma and beta, its statistics, and the
// forward's affine map y = x · scale + shift.
template <class T, class F>
void for_each_slice(const NormShape& s, const T* x, const T* gamma, const T* beta, F&& f) {
  const std::int64_t stride = s.channels * s.spatial;  // between batch entries
  // Slices of at least ~16 Ki values per chunk: less is not worth a thread.
  const std::int64_t grain =
      std::max<std::int64_t>(1, (std::int64_t{1} << 14) / std::max<std::int64_t>(s.batch * s.spatial, 1));
  parallel_for(s.groups * s.channels, grain, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t slice = begin; slice < end; ++slice) {
      const std::int64_t g = slice / s.channels, c = slice % s.channels;
      const std::int64_t offset = g * s.batch * stride + c * s.spatial;
      const std::int64_t affine = s.per_group_affine ? g * s.channels + c : c;
      double mean, rstd;
      moments(x + offset, s.batch, s.spatial, stride, s.eps, mean, rstd);
      T scale, shift;
      norm_affine(mean, rstd, gamma[affine], beta[affine], scale, shift);
      f(slice, offset, affine, mean, rstd, scale, shift);
    }
  });
}

template <class T>
void batch_norm_forward(const NormShape& s, const T* x, const T* gamma, const T* beta, T* y) {
  const std::int64_t stride = s.channels * s.spatial;
  for_each_slice(s, x, gamma, beta,
                 [&](std::int64_t, std::int64_t offset, std::int64_t, double, double, T scale, T shift) {
                   for (std::int64_t n = 0; n < s.batch; ++n) {
                     const T* xr = x + offset + n * stride;
                     T* yr = y + offset + n * stride;
                     if (s.relu) {
                       for (std::int64_t i = 0; i < s.spatial; ++i) yr[i] = relu(xr[i] * scale + shift);
                     } else {
                       for (std::int64_t i = 0; i < s.spatial; ++i) yr[i] = xr[i] * scale + shift;
                     }
                   }
                 });
}

// One (group, channel) of batch_norm_backward; Relu masks g by the fused
// ReLU's derivative. Written as plain loops with simd reductions so that the
// compiler vectorises them (the order of the additions is fixed at compile
// time, so results are reproducible).
template <class T, bool Relu>
void backward_channel(const NormShape& s, std::int64_t offset, const T* x, const T* g, T* dx, double mean, double rstd,
                      T scale, T shift, double gamma, double& total_g, double& total_g_xhat) {
  // Locals and restrict-qualified rows: the loops below must not re-read
  // the shape through a pointer that a store might alias, or they stay scalar.
  const std::int64_t stride = s.channels * s.spatial, spatial = s.spatial, batch = s.batch;
  // The forward's pre-activation, recomputed bit for bit, decides the mask; a
  // multiplication by 0 or 1 (not a branch) lets a NaN gradient through as
  // relu's backward would, and is the form GCC vectorises ("keep ? 1 : 0").
  double sum_g = 0, sum_gd = 0;  // Σ g and Σ g (x − mean): rows in T, across rows in double
  const T m = static_cast<T>(mean);
  for (std::int64_t n = 0; n < batch; ++n) {
    const T* __restrict xr = x + offset + n * stride;
    const T* __restrict gr = g + offset + n * stride;
    T row_g = 0, row_gd = 0;
#pragma omp simd reduction(+ : row_g, row_gd)
    for (std::int64_t i = 0; i < spatial; ++i) {
      const T keep = Relu ? step(xr[i] * scale + shift) : T(1);
      const T gv = gr[i] * keep;
      row_g += gv;
      row_gd += gv * (xr[i] - m);
    }
    sum_g += static_cast<double>(row_g);
    sum_gd += static_cast<double>(row_gd);
  }
  total_g = sum_g;
  total_g_xhat = sum_gd * rstd;
  // dx = k (g − mean(g) − x̂ mean(g x̂)) = a·g + b·x + c, one fused pass.
  const double count = static_cast<double>(batch * spatial), k = rstd * gamma;
  const double mean_g = total_g / count, mean_g_xhat = total_g_xhat / count;
  const T a = static_cast<T>(k), b = static_cast<T>(-k * mean_g_xhat * rstd);
  const T c = static_cast<T>(-k * mean_g + k * mean_g_xhat * rstd * mean);
  for (std::int64_t n = 0; n < batch; ++n) {
    const T* __restrict xr = x + offset + n * stride;
    const T* __restrict gr = g + offset + n * stride;
    T* __restrict out = dx + offset + n * stride;
#pragma omp simd
    for (std::int64_t i = 0; i < spatial; ++i) {
      const T keep = Relu ? step(xr[i] * scale + shift) : T(1);
      out[i] = a * (gr[i] * keep) + b * xr[i] + c;
    }
  }
}

template <class T>
void batch_norm_backward(const NormShape& s, const T* x, const T* gamma, const T* beta, const T* g, T* dx, T* dgamma,
                         T* dbeta) {
  const std::int64_t affine_size = s.per_group_affine ? s.groups * s.channels : s.channels;
  std::vector<double> totals(static_cast<std::size_t>(2 * s.groups * s.channels));  // Σ g, Σ g x̂ per slice
  for_each_slice(
      s, x, gamma, beta,
      [&](std::int64_t slice, std::int64_t offset, std::int64_t affine, double mean, double rstd, T scale, T shift) {
        double* total = totals.data() + 2 * slice;
        const double k = static_cast<double>(gamma[affine]);
        if (s.relu)
          backward_channel<T, true>(s, offset, x, g, dx, mean, rstd, scale, shift, k, total[0], total[1]);
        else
          backward_channel<T, false>(s, offset, x, g, dx, mean, rstd, scale, shift, k, total[0], total[1]);
      });
  for (std::int64_t a = 0; a < affine_size; ++a) dgamma[a] = dbeta[a] = T(0);
  for (std::int64_t slice = 0; slice < s.groups * s.channels; ++slice) {
    const std::int64_t affine = s.per_group_affine ? slice : slice % s.channels;
    dbeta[affine] += static_cast<T>(totals[static_cast<std::size_t>(2 * slice)]);
    dgamma[affine] += static_cast<T>(totals[static_cast<std::size_t>(2 * slice + 1)]);
  }
}

template void batch_norm_forward<float>(const NormShape&, const float*, const float*, const float*, float*);
template void batch_norm_forward<double>(const NormShape&, const double*, const double*, const double*, double*);
template void batch_norm_backward<float>(const NormShape&, const float*, const float*, const float*, const float*,
                                         float*, float*, float*);
template void batch_norm_backward<double>(const NormShape&, const double*, const double*, const double*, const double*,
                                          double*, double*, double*);

}  // namespace metatape::kernels::cpu
