// Data movement: strided copies (expand, permute), axis slices, row and
// element gathers with their scattering adjoints. Raw pointers and shapes
// in; T is float, double or int64.
#pragma once

#include <cstdint>

namespace metatape::kernels::cpu {

// out (contiguous, `shape`, rank <= 5)[i] = x at strides `x_strides`
// (0 repeats an element: expand; a permutation of x's strides: permute).
template <class T>
void strided_copy(int rank, const std::int64_t* shape, const T* x, const std::int64_t* x_strides, T* out);

// Copies src, viewed as [outer, count, inner], into dst, viewed as
// [outer, length, inner], at positions start..start+count of the middle axis
// (concat, pad). Leaves the rest of dst alone.
template <class T>
void copy_into_axis(const T* src, std::int64_t outer, std::int64_t count, std::int64_t inner, T* dst,
                    std::int64_t length, std::int64_t start);

// The inverse: dst [outer, count, inner] = src [outer, length, inner] at
// start..start+count of the middle axis (slice).
template <class T>
void copy_from_axis(const T* src, std::int64_t outer, std::int64_t length, std::int64_t inner, std::int64_t start,
                    std::int64_t count, T* dst);

// out[r, :] = x[index[r], :] for r < n; rows are row_size long.
// Indices must already be validated.
template <class T>
void gather_rows(const T* x, std::int64_t row_size, const std::int64_t* index, std::int64_t n, T* out);

// out[index[r], :] += g[r, :]; out (out_rows x row_size) is zeroed first.
template <class T>
void scatter_rows_add(const T* g, std::int64_t row_size, const std::int64_t* index, std::int64_t n, T* out,
                      std::int64_t out_rows);

// out[i] = x[index[i]] for i < n.
template <class T>
void take(const T* x, const std::int64_t* index, std::int64_t n, T* out);

// out[i] = i * classes + labels[i]: the flat position of row i's label in a
// [n, classes] array. Labels outside [0, classes) are clamped into it (the
// caller checks them where it can; this keeps every read in bounds).
void label_positions(const std::int64_t* labels, std::int64_t n, std::int64_t classes, std::int64_t* out);

// out[index[i]] += g[i]; out (out_numel entries) is zeroed first.
template <class T>
void scatter_add(const T* g, const std::int64_t* index, std::int64_t n, T* out, std::int64_t out_numel);

}  // namespace metatape::kernels::cpu
