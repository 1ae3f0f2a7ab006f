// Iteration over up to three same-shaped strided operands, the machinery
// behind broadcasting, reduction to a broadcast shape, expansion and
// permutation. A stride of 0 repeats an element (broadcast, or accumulate
// into one output entry). Dimensions are collapsed first, so the common
// cases (contiguous operands, a broadcast row, a reduced trailing axis)
// become one or two flat loops the compiler vectorises.
#pragma once

#include <cstdint>

namespace metatape::kernels::cpu {

inline constexpr int kMaxLoopRank = 5;
inline constexpr int kMaxOperands = 3;

struct StridedLoop {
  int rank = 0;  // >= 1 after make_loop
  std::int64_t shape[kMaxLoopRank] = {};
  std::int64_t stride[kMaxOperands][kMaxLoopRank] = {};  // in elements
  int operands = 0;
};

// Builds a loop over `shape` (rank <= 5) with each operand's strides, then
// merges adjacent dimensions that every operand walks contiguously and drops
// dimensions of size 1. The result has rank >= 1.
inline StridedLoop make_loop(int rank, const std::int64_t* shape, int operands, const std::int64_t* const* strides) {
  StridedLoop loop;
  loop.operands = operands;
  for (int d = 0; d < rank; ++d) {
    if (shape[d] == 1) continue;  // contributes nothing to any offset
    const int r = loop.rank;
    bool mergeable = r > 0;
    for (int o = 0; o < operands && mergeable; ++o) mergeable = loop.stride[o][r - 1] == strides[o][d] * shape[d];
    if (mergeable) {
      loop.shape[r - 1] *= shape[d];
      for (int o = 0; o < operands; ++o) loop.stride[o][r - 1] = strides[o][d];
    } else {
      loop.shape[r] = shape[d];
      for (int o = 0; o < operands; ++o) loop.stride[o][r] = strides[o][d];
      ++loop.rank;
    }
  }
  if (loop.rank == 0) {  // a single element
    loop.rank = 1;
    loop.shape[0] = 1;
    for (int o = 0; o < operands; ++o) loop.stride[o][0] = 0;
  }
  return loop;
}

// Calls inner(offset[operands], length, inner_stride[operands]) once per
// innermost row, walking the outer dimensions in row-major order. The
// element count of a loop is at most the output size, so int64 is enough.
template <class Inner>
void for_each_row(const StridedLoop& loop, Inner&& inner) {
  const int outer_rank = loop.rank - 1;
  const std::int64_t length = loop.shape[outer_rank];
  std::int64_t inner_stride[kMaxOperands] = {};
  for (int o = 0; o < loop.operands; ++o) inner_stride[o] = loop.stride[o][outer_rank];

  std::int64_t index[kMaxLoopRank] = {};
  std::int64_t offset[kMaxOperands] = {};
  std::int64_t rows = 1;
  for (int d = 0; d < outer_rank; ++d) rows *= loop.shape[d];
  for (std::int64_t row = 0; row < rows; ++row) {
    inner(static_cast<const std::int64_t*>(offset), length, static_cast<const std::int64_t*>(inner_stride));
    // Odometer increment over the outer dimensions.
    for (int d = outer_rank - 1; d >= 0; --d) {
      ++index[d];
      for (int o = 0; o < loop.operands; ++o) offset[o] += loop.stride[o][d];
      if (index[d] < loop.shape[d]) break;
      for (int o = 0; o < loop.operands; ++o) offset[o] -= loop.stride[o][d] * loop.shape[d];
      index[d] = 0;
    }
  }
}

// The rows of a block (for_each_block): `rows` innermost rows, operand o's
// rows stride[o] apart.
struct RowBlock {
  std::int64_t rows = 1;
  std::int64_t stride[kMaxOperands] = {};
};

// for_each_row with the two innermost dimensions handed over together:
// inner(offset[operands], length, inner_stride[operands], block) once per
// block of block.rows innermost rows, which the kernel walks in order, each
// row whole (the loop's own order). One call where for_each_row makes
// `rows`: for rows of 40 (a task-batched bias, [tasks, K, 40]) the call per
// row cost more than its arithmetic.
template <class Inner>
void for_each_block(const StridedLoop& loop, Inner&& inner) {
  if (loop.rank < 2)
    return for_each_row(
        loop, [&](const std::int64_t* off, std::int64_t n, const std::int64_t* s) { inner(off, n, s, RowBlock{}); });
  StridedLoop blocks = loop;  // the outer dimensions, and one row per block
  const int middle = loop.rank - 2;
  RowBlock block;
  block.rows = loop.shape[middle];
  for (int o = 0; o < loop.operands; ++o) {
    block.stride[o] = loop.stride[o][middle];
    blocks.stride[o][middle] = loop.stride[o][middle + 1];
  }
  blocks.shape[middle] = loop.shape[middle + 1];
  blocks.rank = loop.rank - 1;
  for_each_row(blocks, [&](const std::int64_t* off, std::int64_t n, const std::int64_t* s) {
    inner(off, n, s, static_cast<const RowBlock&>(block));
  });
}

// Row-major strides of a contiguous shape.
inline void contiguous_strides(int rank, const std::int64_t* shape, std::int64_t* strides) {
  std::int64_t s = 1;
  for (int d = rank - 1; d >= 0; --d) {
    strides[d] = s;
    s *= shape[d];
  }
}

// Strides that read an operand of shape `in` (rank <= out_rank, aligned to
// the right) as if it had shape `out`: 0 along broadcast dimensions.
inline void broadcast_strides(int in_rank, const std::int64_t* in, int out_rank, const std::int64_t* out,
                              std::int64_t* strides) {
  std::int64_t s = 1;
  for (int d = out_rank - 1; d >= 0; --d) {
    const int di = d - (out_rank - in_rank);
    if (di < 0 || (in[di] == 1 && out[d] != 1)) {
      strides[d] = 0;
    } else {
      strides[d] = s;
    }
    if (di >= 0) s *= in[di];
  }
}

}  // namespace metatape::kernels::cpu
