// Data movement: strided copies (expand, permute), axis slices, row and
// element gathers with their scattering adjoints. T is float, double or int64.
//
// Threads: every kernel but scatter_add is spread over the pool when large,
// each output written by one thread in the serial order, so the results are
// bit-identical at any thread count. scatter_add (indices in any order, any
// of them repeated) stays on one thread.
#include "kernels.hpp"

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "../scalar_math.hpp"
#include "parallel.hpp"
#include "parallel_loop.hpp"
#include "strided.hpp"
#if METATAPE_SMALL_GEMM
#include "short_rows.hpp"
#endif

namespace metatape::kernels::cpu {

namespace {

// A block of strided_copy's rows (operand 0 the output, 1 x), x's entries
// `step` apart along a row. Short rows of floats go to AVX-512's masked
// vectors (short_rows.hpp).
template <class T>
void copy_rows(T* out, const T* x, const RowBlock& block, std::int64_t n, std::int64_t step) {
#if METATAPE_SMALL_GEMM
  if constexpr (std::is_floating_point_v<T>)
    if (step == 1 && short_rows::takes(n)) return short_rows::copy(out, x, block, n);
#endif
  for (std::int64_t r = 0; r < block.rows; ++r) {
    T* o = out + r * block.stride[0];
    const T* xr = x + r * block.stride[1];
    if (step == 1) {
      std::memcpy(o, xr, static_cast<std::size_t>(n) * sizeof(T));
    } else if (step == 0) {
      const T v = *xr;
      for (std::int64_t i = 0; i < n; ++i) o[i] = v;
    } else {
      for (std::int64_t i = 0; i < n; ++i) o[i] = xr[i * step];
    }
  }
}

}  // namespace

template <class T>
void strided_copy(int rank, const std::int64_t* shape, const T* x, const std::int64_t* x_strides, T* out) {
  std::int64_t out_strides[kMaxLoopRank];
  contiguous_strides(rank, shape, out_strides);
  const std::int64_t* strides[2] = {out_strides, x_strides};
  const StridedLoop loop = make_loop(rank, shape, 2, strides);
  parallel_for_each_block(loop, widest_dimension(loop, 0), kStreamGrain,
                          [&](const std::int64_t* off, std::int64_t n, const std::int64_t* s, const RowBlock& block) {
                            copy_rows(out + off[0], x + off[1], block, n, s[1]);
                          });
}

template <class T>
void copy_into_axis(const T* src, std::int64_t outer, std::int64_t count, std::int64_t inner, T* dst,
                    std::int64_t length, std::int64_t start) {
  const std::size_t block = static_cast<std::size_t>(count * inner) * sizeof(T);
  parallel_for(outer, items_grain(count * inner), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t o = begin; o < end; ++o)
      std::memcpy(dst + (o * length + start) * inner, src + o * count * inner, block);
  });
}

template <class T>
void copy_from_axis(const T* src, std::int64_t outer, std::int64_t length, std::int64_t inner, std::int64_t start,
                    std::int64_t count, T* dst) {
  const std::size_t block = static_cast<std::size_t>(count * inner) * sizeof(T);
  parallel_for(outer, items_grain(count * inner), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t o = begin; o < end; ++o)
      std::memcpy(dst + o * count * inner, src + (o * length + start) * inner, block);
  });
}

template <class T>
void gather_rows(const T* x, std::int64_t row_size, const std::int64_t* index, std::int64_t n, T* out) {
  const std::size_t bytes = static_cast<std::size_t>(row_size) * sizeof(T);
  parallel_for(n, items_grain(row_size), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t r = begin; r < end; ++r) std::memcpy(out + r * row_size, x + index[r] * row_size, bytes);
  });
}

template <class T>
void scatter_rows_add(const T* g, std::int64_t row_size, const std::int64_t* index, std::int64_t n, T* out,
                      std::int64_t out_rows) {
  fill(out, out_rows * row_size, T(0));
  // Rows may repeat an index, so the pool splits the columns instead: each
  // thread adds all rows, in order, into its own columns.
  parallel_for(row_size, items_grain(n), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t r = 0; r < n; ++r) {
      T* o = out + index[r] * row_size;
      const T* gr = g + r * row_size;
      for (std::int64_t i = begin; i < end; ++i) o[i] += gr[i];
    }
  });
}

template <class T>
void take(const T* x, const std::int64_t* index, std::int64_t n, T* out) {
  parallel_for(n, kStreamGrain, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) out[i] = x[index[i]];
  });
}

void label_positions(const std::int64_t* labels, std::int64_t n, std::int64_t classes, std::int64_t* out) {
  parallel_for(n, kStreamGrain, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) out[i] = label_position(i, labels[i], classes);
  });
}

template <class T>
void scatter_add(const T* g, const std::int64_t* index, std::int64_t n, T* out, std::int64_t out_numel) {
  fill(out, out_numel, T(0));
  for (std::int64_t i = 0; i < n; ++i) out[index[i]] += g[i];
}

#define METATAPE_LAYOUT_INSTANTIATE(T)                                                                                 \
  template void strided_copy<T>(int, const std::int64_t*, const T*, const std::int64_t*, T*);                          \
  template void copy_into_axis<T>(const T*, std::int64_t, std::int64_t, std::int64_t, T*, std::int64_t, std::int64_t); \
  template void copy_from_axis<T>(const T*, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t, T*); \
  template void gather_rows<T>(const T*, std::int64_t, const std::int64_t*, std::int64_t, T*);                         \
  template void scatter_rows_add<T>(const T*, std::int64_t, const std::int64_t*, std::int64_t, T*, std::int64_t);      \
  template void take<T>(const T*, const std::int64_t*, std::int64_t, T*);                                              \
  template void scatter_add<T>(const T*, const std::int64_t*, std::int64_t, T*, std::int64_t);

METATAPE_LAYOUT_INSTANTIATE(float)
METATAPE_LAYOUT_INSTANTIATE(double)
METATAPE_LAYOUT_INSTANTIATE(std::int64_t)
#undef METATAPE_LAYOUT_INSTANTIATE

}  // namespace metatape::kernels::cpu
