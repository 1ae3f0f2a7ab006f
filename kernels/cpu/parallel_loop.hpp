// A strided loop (strided.hpp) spread over the CPU kernels' pool by cutting
// one of its dimensions into ranges. Each chunk walks its slab in the same
// row-major order as the whole loop, so an output entry that several rows
// accumulate into (a sum_to) receives them in the same order as serially,
// provided the cut dimension is one the output is not reduced along.
#pragma once

#include <algorithm>
#include <cstdint>

#include "parallel.hpp"
#include "strided.hpp"

namespace metatape::kernels::cpu {

// The dimension with the most entries among those where `operand`'s stride
// is nonzero, or -1 if there is none (operand 0 broadcast along every
// dimension: a full reduction).
inline int widest_dimension(const StridedLoop& loop, int operand) {
  int best = -1;
  for (int d = 0; d < loop.rank; ++d)
    if (loop.stride[operand][d] != 0 && (best < 0 || loop.shape[d] > loop.shape[best])) best = d;
  return best;
}

// walk(loop, inner) (for_each_row or for_each_block) with dimension `dim`
// cut into ranges over the pool, each range at least `grain_elements`
// elements of the loop; inner gets absolute offsets. dim < 0 runs the loop
// serially.
template <class Walk, class Inner>
void parallel_walk(const StridedLoop& loop, int dim, std::int64_t grain_elements, Walk&& walk, Inner&& inner) {
  std::int64_t numel = 1;
  for (int d = 0; d < loop.rank; ++d) numel *= loop.shape[d];
  if (dim < 0 || numel == 0) return walk(loop, inner);
  const std::int64_t slice = numel / loop.shape[dim];  // elements per index of dim
  const std::int64_t grain = std::max<std::int64_t>(1, grain_elements / std::max<std::int64_t>(slice, 1));
  if (parallel_chunks(loop.shape[dim], grain) == 1) return walk(loop, inner);
  parallel_for(loop.shape[dim], grain, [&](std::int64_t begin, std::int64_t end) {
    StridedLoop part = loop;
    part.shape[dim] = end - begin;
    std::int64_t base[kMaxOperands] = {};
    for (int o = 0; o < loop.operands; ++o) base[o] = begin * loop.stride[o][dim];
    walk(part, [&](const std::int64_t* off, const auto&... rest) {
      std::int64_t at[kMaxOperands] = {};
      for (int o = 0; o < loop.operands; ++o) at[o] = base[o] + off[o];
      inner(static_cast<const std::int64_t*>(at), rest...);
    });
  });
}

// for_each_row(loop, inner) over the pool (parallel_walk).
template <class Inner>
void parallel_for_each_row(const StridedLoop& loop, int dim, std::int64_t grain_elements, Inner&& inner) {
  parallel_walk(
      loop, dim, grain_elements, [](const StridedLoop& part, auto&& f) { for_each_row(part, f); }, inner);
}

// for_each_block(loop, inner) over the pool (parallel_walk): a cut of the
// block's dimension gives each chunk a block of fewer rows.
template <class Inner>
void parallel_for_each_block(const StridedLoop& loop, int dim, std::int64_t grain_elements, Inner&& inner) {
  parallel_walk(
      loop, dim, grain_elements, [](const StridedLoop& part, auto&& f) { for_each_block(part, f); }, inner);
}

}  // namespace metatape::kernels::cpu
