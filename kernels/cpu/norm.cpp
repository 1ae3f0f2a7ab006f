// Batch normalisation with batch statistics (NormShape, types.hpp), fused.
//
// x is [groups, batch, channels, spatial]; a slice is one (group, channel):
// `batch` rows of `spatial` values, channels·spatial apart. Every pass walks
// the rows in memory order (group, batch entry, channel), not slice after
// slice: a slice's rows are short runs far apart, and visiting them one
// slice at a time defeats the prefetcher (measured 3x slower per pass on
// Conv4's 28×28 layers).
//
// Statistics accumulate in double, in one pass: each row's mean and sum of
// squared deviations, merged into its slice's in batch order (the pairwise
// update of Chan, Golub and LeVeque), which has no cancellation. The slices
// are spread over the thread pool in contiguous chunks; each slice is
// computed whole by one thread in the same order, and what is summed across
// slices (a shared gamma's and beta's gradients) is summed afterwards in
// slice order, so results do not depend on the thread count.
#include "kernels.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "lane_sum.hpp"
#include "parallel.hpp"
#include "window_ops.hpp"

#include "../scalar_math.hpp"

namespace metatape::kernels::cpu {
namespace {

// Calls row(slice, offset) for every row of the slices [begin, end), in
// memory order; offset is where the row starts in x.
template <class F>
void for_each_row(const NormShape& s, std::int64_t begin, std::int64_t end, F&& row) {
  for (std::int64_t g = begin / s.channels; g * s.channels < end; ++g) {
    const std::int64_t first = std::max(begin, g * s.channels), last = std::min(end, (g + 1) * s.channels);
    for (std::int64_t n = 0; n < s.batch; ++n) {
      const std::int64_t batch_entry = (g * s.batch + n) * s.channels - g * s.channels;  // + slice = its channel
      for (std::int64_t slice = first; slice < last; ++slice) row(slice, (batch_entry + slice) * s.spatial);
    }
  }
}

// Where slice's γ and β are: its own with an affine per group, else its channel's.
std::int64_t affine_of(const NormShape& s, std::int64_t slice) {
  return s.per_group_affine ? slice : slice % s.channels;
}

// The running mean and sum of squared deviations of a slice's rows seen so
// far, all rows `spatial` long. `reciprocals[k]` is 1 / (k + 1): the update
// of row k divides by its index, and a table (and 1 / spatial, given) keeps
// divisions out of the per-row work, which dominates for small rows (3×3
// maps).
template <class T>
struct Moments {
  double mean = 0, squares = 0;
  std::int64_t rows = 0;

  void add_row(const T* __restrict row, std::int64_t spatial, double inverse_spatial, const double* reciprocals) {
    const double n = static_cast<double>(spatial);
    const double row_mean =
        static_cast<double>(lane_sum<T>(spatial, [&](std::int64_t i) { return row[i]; })) * inverse_spatial;
    // Deviations from the row mean rounded to T, then corrected in double:
    // Σ (x − m)² = Σ (x − c)² − n (m − c)².
    const T centre = static_cast<T>(row_mean);
    const double off = row_mean - static_cast<double>(centre);
    const double row_squares = static_cast<double>(lane_sum<T>(
                                   spatial, [&](std::int64_t i) { return (row[i] - centre) * (row[i] - centre); })) -
                               n * off * off;
    // Merged with the rows before (k of them): mean += δ / (k + 1),
    // squares += row_squares + δ² n k / (k + 1).
    const double delta = row_mean - mean, weight = reciprocals[rows];
    mean += delta * weight;
    squares += row_squares + delta * delta * n * (1.0 - weight);
    ++rows;
  }
};

// A slice's statistics and the forward's affine map y = x · scale + shift.
template <class T>
struct SliceMap {
  double mean, rstd;
  T scale, shift;
};

// The SliceMap of each slice in [begin, end), one pass over their rows.
template <class T>
std::vector<SliceMap<T>> slice_maps(const NormShape& s, const T* x, const T* gamma, const T* beta, std::int64_t begin,
                                    std::int64_t end) {
  std::vector<double> reciprocals(static_cast<std::size_t>(s.batch));
  for (std::size_t k = 0; k < reciprocals.size(); ++k) reciprocals[k] = 1.0 / static_cast<double>(k + 1);
  const double inverse_spatial = 1.0 / static_cast<double>(s.spatial);
  std::vector<Moments<T>> moments(static_cast<std::size_t>(end - begin));
  for_each_row(s, begin, end, [&](std::int64_t slice, std::int64_t offset) {
    moments[static_cast<std::size_t>(slice - begin)].add_row(x + offset, s.spatial, inverse_spatial,
                                                             reciprocals.data());
  });
  std::vector<SliceMap<T>> maps(moments.size());
  for (std::int64_t slice = begin; slice < end; ++slice) {
    const Moments<T>& m = moments[static_cast<std::size_t>(slice - begin)];
    SliceMap<T>& map = maps[static_cast<std::size_t>(slice - begin)];
    const std::int64_t affine = affine_of(s, slice);
    map.mean = m.mean;
    map.rstd = 1.0 / std::sqrt(m.squares / static_cast<double>(s.batch * s.spatial) + s.eps);
    norm_affine(map.mean, map.rstd, gamma[affine], beta[affine], map.scale, map.shift);
  }
  return maps;
}

// Calls chunk(begin, end, maps) for contiguous chunks of slices in parallel,
// maps[slice − begin] being the slice's statistics.
template <class T, class F>
void for_each_chunk(const NormShape& s, const T* x, const T* gamma, const T* beta, F&& chunk) {
  if (s.batch * s.spatial == 0) return;  // no values: nothing to normalise, Σ g and Σ g x̂ stay 0
  parallel_for(
      s.groups * s.channels, items_grain(s.batch * s.spatial, kPlaneGrain),
      [&](std::int64_t begin, std::int64_t end) { chunk(begin, end, slice_maps(s, x, gamma, beta, begin, end)); });
}

// One row of the forward: yr = xr · scale + shift, then max(0, ·) if relu.
template <class T>
void normalise_row(const NormShape& s, const SliceMap<T>& map, const T* __restrict xr, T* __restrict yr) {
  const T scale = map.scale, shift = map.shift;
  if (s.relu) {
    for (std::int64_t i = 0; i < s.spatial; ++i) yr[i] = relu(xr[i] * scale + shift);
  } else {
    for (std::int64_t i = 0; i < s.spatial; ++i) yr[i] = xr[i] * scale + shift;
  }
}

// The smallest maps (entries) that the pooled batch norm works one at a time
// in a buffer of the thread's; smaller ones go through a whole tensor in
// scratch, the two kernels in turn. Per map the buffer costs a call into
// the pooling loops (forward) or two scatters (backward), which on small
// maps outweigh the memory it saves. bench-engine, every map size worked a
// map at a time, over the two kernels in turn, at 1 / 2 threads (one run;
// bench/RESULTS.md has another):
//   forward:  28 × 28 0.63x / 0.95x the time, 14 × 14 0.91x / 0.76x,
//             7 × 7 1.13x / 1.3x, 3 × 3 1.4x / 1.1x;
//   backward: 28 × 28 1.07x / 1.95x, 14 × 14 1.40x / 1.69x: slower, and
//             kept on 28 × 28 maps only for the memory it saves (15 MB a
//             task: the pooled Conv4 4-task step peaks at 74.0 MiB; with
//             scratch on every map size, at 88.3).
constexpr std::int64_t kMinPooledMap = 100, kMinUnpooledMap = 400;
bool pool_map_by_map(const NormShape& s) { return s.spatial >= kMinPooledMap; }
bool unpool_map_by_map(const NormShape& s) { return s.spatial >= kMinUnpooledMap; }

}  // namespace

template <class T>
void batch_norm_forward(const NormShape& s, const T* x, const T* gamma, const T* beta, T* y) {
  for_each_chunk(s, x, gamma, beta, [&](std::int64_t begin, std::int64_t end, const std::vector<SliceMap<T>>& maps) {
    for_each_row(s, begin, end, [&](std::int64_t slice, std::int64_t offset) {
      normalise_row(s, maps[static_cast<std::size_t>(slice - begin)], x + offset, y + offset);
    });
  });
}

// On maps of kMinPooledMap entries or more each map is normalised into a
// buffer of the thread's and pooled from there while it is in L1: the
// normalised maps never reach memory, which on Conv4's first block (15 MB
// of query maps) saves a write and a read of them at memory's pace. The
// plane loops are max_pool's, so the values and indices are its own.
template <class T>
void batch_norm_max_pool_forward(const NormShape& s, std::int64_t h, std::int64_t w, const T* x, const T* gamma,
                                 const T* beta, T* y, std::int64_t* index, T* scratch) {
  if (!pool_map_by_map(s)) {
    batch_norm_forward(s, x, gamma, beta, scratch);
    max_pool(scratch, s.groups * s.batch * s.channels, h, w, kNormPoolWindow, y, index);
    return;
  }
  const std::int64_t outputs = kNormPoolWindow.out_h(h) * kNormPoolWindow.out_w(w);
  for_each_chunk(s, x, gamma, beta, [&](std::int64_t begin, std::int64_t end, const std::vector<SliceMap<T>>& maps) {
    std::vector<T> normalised(static_cast<std::size_t>(s.spatial));
    for_each_row(s, begin, end, [&](std::int64_t slice, std::int64_t offset) {
      normalise_row(s, maps[static_cast<std::size_t>(slice - begin)], x + offset, normalised.data());
      // The map is plane offset / spatial of x, pooled as plane 0 of the
      // buffer with its indices shifted to where the map lies in x.
      const std::int64_t first_output = offset / s.spatial * outputs;
      max_pool_planes(normalised.data(), 0, 1, h, w, kNormPoolWindow, y + first_output, index + first_output, offset);
    });
  });
}

namespace {

// batch_norm_backward over the slices [begin, end): dx, and each slice's
// Σ g and Σ g x̂ into totals[2·slice], totals[2·slice + 1]. Relu masks g by
// the fused ReLU's derivative: the forward's pre-activation, recomputed bit
// for bit, times 0 or 1 (not a branch), which lets a NaN gradient through as
// relu's backward would and is the form GCC vectorises.
//
// grad_row(offset) gives the row of g at offset, valid until the next call:
// g + offset, or a map of the pooled kernel's unpooled into a buffer.
template <class T, bool Relu, class GradRow>
void backward_chunk(const NormShape& s, std::int64_t begin, std::int64_t end, const std::vector<SliceMap<T>>& maps,
                    const T* x, const T* gamma, GradRow&& grad_row, T* dx, double* totals) {
  const std::int64_t spatial = s.spatial;
  // Σ g and Σ g (x − mean): each row in T, rows added in double.
  for (std::int64_t slice = begin; slice < end; ++slice) totals[2 * slice] = totals[2 * slice + 1] = 0;
  std::vector<T> masked_buffer(static_cast<std::size_t>(Relu ? spatial : 0));
  T* __restrict masked_row = masked_buffer.data();
  for_each_row(s, begin, end, [&](std::int64_t slice, std::int64_t offset) {
    const SliceMap<T>& map = maps[static_cast<std::size_t>(slice - begin)];
    const T scale = map.scale, shift = map.shift, m = static_cast<T>(map.mean);
    const T* __restrict xr = x + offset;
    const T* __restrict gr = grad_row(offset);
    const T* __restrict gm = gr;  // g masked by the ReLU, in a row buffer so the sums below vectorise
    if (Relu) {
#pragma omp simd
      for (std::int64_t i = 0; i < spatial; ++i) masked_row[i] = gr[i] * step(xr[i] * scale + shift);
      gm = masked_row;
    }
    totals[2 * slice] += static_cast<double>(lane_sum<T>(spatial, [&](std::int64_t i) { return gm[i]; }));
    totals[2 * slice + 1] +=
        static_cast<double>(lane_sum<T>(spatial, [&](std::int64_t i) { return gm[i] * (xr[i] - m); }));
  });
  // dx = k (g − mean(g) − x̂ mean(g x̂)) = a·g + b·x + c, one fused pass.
  struct Coefficients {
    T a, b, c;
  };
  std::vector<Coefficients> coefficients(maps.size());
  const double count = static_cast<double>(s.batch * spatial);
  for (std::int64_t slice = begin; slice < end; ++slice) {
    const SliceMap<T>& map = maps[static_cast<std::size_t>(slice - begin)];
    const std::int64_t affine = affine_of(s, slice);
    totals[2 * slice + 1] *= map.rstd;  // Σ g x̂
    const double k = map.rstd * static_cast<double>(gamma[affine]);
    const double mean_g = totals[2 * slice] / count, mean_g_xhat = totals[2 * slice + 1] / count;
    coefficients[static_cast<std::size_t>(slice - begin)] = {
        static_cast<T>(k), static_cast<T>(-k * mean_g_xhat * map.rstd),
        static_cast<T>(-k * mean_g + k * mean_g_xhat * map.rstd * map.mean)};
  }
  for_each_row(s, begin, end, [&](std::int64_t slice, std::int64_t offset) {
    const SliceMap<T>& map = maps[static_cast<std::size_t>(slice - begin)];
    const Coefficients& k = coefficients[static_cast<std::size_t>(slice - begin)];
    const T scale = map.scale, shift = map.shift, a = k.a, b = k.b, c = k.c;
    const T* __restrict xr = x + offset;
    const T* __restrict gr = grad_row(offset);
    T* __restrict out = dx + offset;
    for (std::int64_t i = 0; i < spatial; ++i)
      out[i] = a * (gr[i] * (Relu ? step(xr[i] * scale + shift) : T(1))) + b * xr[i] + c;
  });
}

// The backward over every chunk of slices, g's rows from make_grad_row()
// (one per chunk, as each thread needs its own buffer), and the affine
// gradients summed from the slices' totals in slice order.
template <class T, class MakeGradRow>
void backward(const NormShape& s, const T* x, const T* gamma, const T* beta, MakeGradRow&& make_grad_row, T* dx,
              T* dgamma, T* dbeta) {
  const std::int64_t affine_size = s.per_group_affine ? s.groups * s.channels : s.channels;
  std::vector<double> totals(static_cast<std::size_t>(2 * s.groups * s.channels));  // Σ g, Σ g x̂ per slice
  for_each_chunk(s, x, gamma, beta, [&](std::int64_t begin, std::int64_t end, const std::vector<SliceMap<T>>& maps) {
    if (s.relu)
      backward_chunk<T, true>(s, begin, end, maps, x, gamma, make_grad_row(), dx, totals.data());
    else
      backward_chunk<T, false>(s, begin, end, maps, x, gamma, make_grad_row(), dx, totals.data());
  });
  for (std::int64_t a = 0; a < affine_size; ++a) dgamma[a] = dbeta[a] = T(0);
  for (std::int64_t slice = 0; slice < s.groups * s.channels; ++slice) {
    const std::int64_t affine = affine_of(s, slice);
    dbeta[affine] += static_cast<T>(totals[static_cast<std::size_t>(2 * slice)]);
    dgamma[affine] += static_cast<T>(totals[static_cast<std::size_t>(2 * slice + 1)]);
  }
}

}  // namespace

template <class T>
void batch_norm_backward(const NormShape& s, const T* x, const T* gamma, const T* beta, const T* g, T* dx, T* dgamma,
                         T* dbeta) {
  const auto rows_of_g = [g] { return [g](std::int64_t offset) { return g + offset; }; };
  backward(s, x, gamma, beta, rows_of_g, dx, dgamma, dbeta);
}

// On maps of kMinUnpooledMap entries or more, g's map is unpooled into a
// buffer of the thread's, once for the sums and once for dx: the unpooled
// gradient never reaches memory (a 15 MB write and two reads on Conv4's
// 28 × 28 query maps). The buffer stays zero but for the entries the last
// map wrote, which are cleared before the next map's: a scatter of the
// map's outputs, each entry 0 + g as max_unpool writes it (the same bits),
// without zeroing the whole map each time. Smaller maps go through a whole
// unpooled tensor in scratch.
template <class T>
void batch_norm_max_pool_backward(const NormShape& s, std::int64_t h, std::int64_t w, const T* x, const T* gamma,
                                  const T* beta, const T* g, const std::int64_t* index, T* dx, T* dgamma, T* dbeta,
                                  T* scratch) {
  if (!unpool_map_by_map(s)) {
    max_unpool(g, index, s.groups * s.batch * s.channels, h, w, kNormPoolWindow, scratch);
    batch_norm_backward(s, x, gamma, beta, scratch, dx, dgamma, dbeta);
    return;
  }
  const std::int64_t outputs = kNormPoolWindow.out_h(h) * kNormPoolWindow.out_w(w);
  struct UnpooledRows {
    std::int64_t spatial, outputs;
    const T* g;
    const std::int64_t* index;
    std::vector<T> unpooled;             // zero but at `written`
    std::vector<std::int64_t> written;  // the last map's entries, relative to it
    const T* operator()(std::int64_t offset) {
      for (const std::int64_t i : written) unpooled[static_cast<std::size_t>(i)] = T(0);
      const std::int64_t first_output = offset / spatial * outputs;
      for (std::int64_t i = 0; i < outputs; ++i) {
        const std::int64_t at = index[first_output + i] - offset;
        written[static_cast<std::size_t>(i)] = at;
        unpooled[static_cast<std::size_t>(at)] += g[first_output + i];
      }
      return unpooled.data();
    }
  };
  const auto unpooled_rows = [&] {
    return UnpooledRows{s.spatial, outputs, g, index, std::vector<T>(static_cast<std::size_t>(s.spatial)),
                        std::vector<std::int64_t>(static_cast<std::size_t>(outputs))};
  };
  backward(s, x, gamma, beta, unpooled_rows, dx, dgamma, dbeta);
}

// The backward's need covers the forward's (kMinUnpooledMap >= kMinPooledMap).
std::int64_t batch_norm_max_pool_scratch_size(const NormShape& s) {
  static_assert(kMinUnpooledMap >= kMinPooledMap);
  return unpool_map_by_map(s) ? 0 : s.groups * s.batch * s.channels * s.spatial;
}

template void batch_norm_forward<float>(const NormShape&, const float*, const float*, const float*, float*);
template void batch_norm_forward<double>(const NormShape&, const double*, const double*, const double*, double*);
template void batch_norm_backward<float>(const NormShape&, const float*, const float*, const float*, const float*,
                                         float*, float*, float*);
template void batch_norm_backward<double>(const NormShape&, const double*, const double*, const double*, const double*,
                                          double*, double*, double*);
template void batch_norm_max_pool_forward<float>(const NormShape&, std::int64_t, std::int64_t, const float*,
                                                 const float*, const float*, float*, std::int64_t*, float*);
template void batch_norm_max_pool_forward<double>(const NormShape&, std::int64_t, std::int64_t, const double*,
                                                  const double*, const double*, double*, std::int64_t*, double*);
template void batch_norm_max_pool_backward<float>(const NormShape&, std::int64_t, std::int64_t, const float*,
                                                  const float*, const float*, const float*, const std::int64_t*,
                                                  float*, float*, float*, float*);
template void batch_norm_max_pool_backward<double>(const NormShape&, std::int64_t, std::int64_t, const double*,
                                                   const double*, const double*, const double*, const std::int64_t*,
                                                   double*, double*, double*, double*);

}  // namespace metatape::kernels::cpu
