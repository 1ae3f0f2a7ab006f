// Reductions: sums to a broadcast shape, arg-maxima, log-softmax.
// Raw pointers and shapes in; T is float or double.
#pragma once

#include <cstdint>

namespace metatape::kernels::cpu {

// x has `in_shape` (rank <= 5); out has `out_shape` of the same rank with 1
// wherever x is summed over (the inverse of broadcasting). out is written in
// full. Rows summed along a reduced innermost axis accumulate in double.
template <class T>
void sum_to(int rank, const std::int64_t* in_shape, const T* x, const std::int64_t* out_shape, T* out);

// x viewed as [outer, length, inner]; index[o, i] = the flat index into x of
// the first maximum along the middle axis. NaN compares as a maximum so that
// it propagates.
template <class T>
void argmax_axis(const T* x, std::int64_t outer, std::int64_t length, std::int64_t inner, std::int64_t* index);

// x, y viewed as [outer, length, inner]: y = x - logsumexp(x) along the middle
// axis, with the maximum subtracted first so exp never overflows.
template <class T>
void log_softmax(const T* x, T* y, std::int64_t outer, std::int64_t length, std::int64_t inner);

}  // namespace metatape::kernels::cpu
