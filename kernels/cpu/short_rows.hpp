// Rows too short for the compiler's element loops, in AVX-512 vectors with
// the last one masked.
//
// The broadcasting kernels walk blocks of rows (strided.hpp's
// for_each_block). Where a row is long the compiler's vector loop is what
// one would write; where it is short — a task-batched MLP's bias rows,
// [T, K, 40] against [T, 1, 40], and their sums — the loop for a length
// known only at run time (trip count, alias checks, then narrower and
// narrower epilogues) cost about 14 cycles a row over the arithmetic, and a
// [25, 10, 40] bias add took 1.7x as long as a contiguous add of the same
// size. Here a row of n entries is ceil(n / lanes) vector operations, the
// last one masked to the row: no epilogue, nothing read or written past
// the row.
//
// Each lane computes what binary_value (scalar_math.hpp) computes: one IEEE
// add, subtract, multiply or divide, rounded once, so the bits equal the
// other copies' (the element-loop tests compare them). x86-64 builds only
// (METATAPE_SMALL_GEMM), and called only where element_loop_isa() is
// AVX-512.
#pragma once

#include <cstdint>

#include "../types.hpp"
#include "avx512_vectors.hpp"
#include "compile_time_count.hpp"
#include "small_gemm.hpp"
#include "strided.hpp"

namespace metatape::kernels::cpu::short_rows {

// The longest row taken: four vectors of floats. Longer rows are the
// compiler's loop's, whose per-row cost is small next to theirs.
inline constexpr std::int64_t kMaxLength = 64;

// Whether rows of n entries (unit inner strides) go here: short enough,
// and AVX-512 the element loops' copy in use.
inline bool takes(std::int64_t n) { return n <= kMaxLength && element_loop_isa() == SmallGemmIsa::avx512; }

// binary_value<Op> on whole vectors.
template <BinaryOp Op, class T>
[[gnu::target("avx512f")]] inline typename Avx512<T>::V apply(typename Avx512<T>::V a, typename Avx512<T>::V b) {
  if constexpr (Op == BinaryOp::add) return Avx512<T>::add(a, b);
  if constexpr (Op == BinaryOp::sub) return Avx512<T>::sub(a, b);
  if constexpr (Op == BinaryOp::mul) return Avx512<T>::mul(a, b);
  if constexpr (Op == BinaryOp::div) return Avx512<T>::div(a, b);
}

// out = a (op) b on each row of a block whose rows all have unit inner
// strides (operands 0, 1, 2: out, a, b, as binary_rows takes them), n <=
// kMaxLength entries a row.
//
// Where out is a (an add into an adjoint in place), each row of a is
// loaded before the row above it is stored: a row's masked last store
// spans the next row's first entries, and a load after it waited for it to
// reach the cache ([25, 10, 40] plus a row per task in place: 2.0 µs row by
// row, 1.47 read ahead, against 1.2-1.5 into a new array). Other calls keep
// the plain row loop, which the read-ahead's run-time vector count slowed.
template <BinaryOp Op, class T>
[[gnu::target("avx512f")]] void binary(T* out, const T* a, const T* b, const RowBlock& block, std::int64_t n) {
  using Z = Avx512<T>;
  const auto mask = [n](std::int64_t i) { return lanes_left<T>(n - i); };
  if (out != a || block.stride[0] != block.stride[1]) {
    for (std::int64_t r = 0; r < block.rows; ++r) {
      T* o = out + r * block.stride[0];
      const T* ar = a + r * block.stride[1];
      const T* br = b + r * block.stride[2];
      for (std::int64_t i = 0; i < n; i += Z::kLanes)
        Z::store(o + i, apply<Op, T>(Z::load(ar + i, mask(i)), Z::load(br + i, mask(i))), mask(i));
    }
    return;
  }
  constexpr int kMaxVectors = static_cast<int>(kMaxLength / Z::kLanes);
  const int vectors = static_cast<int>((n + Z::kLanes - 1) / Z::kLanes);
  typename Z::V row[kMaxVectors];
  for (int v = 0; v < vectors && block.rows > 0; ++v) row[v] = Z::load(a + v * Z::kLanes, mask(v * Z::kLanes));
  for (std::int64_t r = 0; r < block.rows; ++r) {
    T* o = out + r * block.stride[0];
    const T* br = b + r * block.stride[2];
    typename Z::V result[kMaxVectors];
    for (int v = 0; v < vectors; ++v)
      result[v] = apply<Op, T>(row[v], Z::load(br + v * Z::kLanes, mask(v * Z::kLanes)));
    if (r + 1 < block.rows)
      for (int v = 0; v < vectors; ++v) row[v] = Z::load(o + block.stride[0] + v * Z::kLanes, mask(v * Z::kLanes));
    for (int v = 0; v < vectors; ++v) Z::store(o + v * Z::kLanes, result[v], mask(v * Z::kLanes));
  }
}

// The sum over a block's rows into one output row o (n entries in kVectors
// vectors, the last one masked): the row's vectors summed side by side,
// each in its own register, so their chains of adds overlap (one vector's
// chain after another's waited for each add: a [25, 10, 40] sum over the
// rows of each task took 0.78 us, about 8 times its loads' pace).
template <int kVectors, class T>
[[gnu::target("avx512f")]] void sum_rows_into(T* o, const T* x, std::int64_t rows, std::int64_t row_stride,
                                              std::int64_t n) {
  using Z = Avx512<T>;
  typename Z::Mask mask[kVectors];
  typename Z::V sum[kVectors];
#pragma GCC unroll 8
  for (int v = 0; v < kVectors; ++v) {
    mask[v] = lanes_left<T>(n - v * Z::kLanes);
    sum[v] = Z::load(o + v * Z::kLanes, mask[v]);
  }
  for (std::int64_t r = 0; r < rows; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < kVectors; ++v) sum[v] = Z::add(sum[v], Z::load(x + r * row_stride + v * Z::kLanes, mask[v]));
#pragma GCC unroll 8
  for (int v = 0; v < kVectors; ++v) Z::store(o + v * Z::kLanes, sum[v], mask[v]);
}

// o += x on each row of a block with unit inner strides (operand 0 is x,
// 1 the output, as sum_to's add_rows takes them), row after row: each
// entry of o adds the rows' entries in row order. Where every row adds
// into the same output row (a sum over the block's rows) the sums stay in
// registers, each vector loaded and stored once: a masked store cannot
// forward to the next row's load of the same entries, which waited for it.
template <class T>
[[gnu::target("avx512f")]] void accumulate(T* o, const T* x, const RowBlock& block, std::int64_t n) {
  using Z = Avx512<T>;
  if (block.stride[1] == 0) {
    constexpr int kMaxVectors = static_cast<int>(kMaxLength / Z::kLanes);
    const int vectors = static_cast<int>((n + Z::kLanes - 1) / Z::kLanes);
    with_count<kMaxVectors>(vectors, [&](auto count) {
      sum_rows_into<decltype(count)::value>(o, x, block.rows, block.stride[0], n);
    });
    return;
  }
  for (std::int64_t r = 0; r < block.rows; ++r) {
    T* orow = o + r * block.stride[1];
    const T* xrow = x + r * block.stride[0];
    for (std::int64_t i = 0; i < n; i += Z::kLanes) {
      const typename Z::Mask m = lanes_left<T>(n - i);
      Z::store(orow + i, Z::add(Z::load(orow + i, m), Z::load(xrow + i, m)), m);
    }
  }
}

// out = x on each row of a block with unit inner strides (operand 0 is the
// output, 1 is x, as strided_copy takes them): an expansion's rows, where a
// call of memcpy per row of 40 floats cost more than the copy.
template <class T>
[[gnu::target("avx512f")]] void copy(T* out, const T* x, const RowBlock& block, std::int64_t n) {
  using Z = Avx512<T>;
  for (std::int64_t r = 0; r < block.rows; ++r) {
    T* o = out + r * block.stride[0];
    const T* xr = x + r * block.stride[1];
    for (std::int64_t i = 0; i < n; i += Z::kLanes) {
      const typename Z::Mask m = lanes_left<T>(n - i);
      Z::store(o + i, Z::load(xr + i, m), m);
    }
  }
}

}  // namespace metatape::kernels::cpu::short_rows
