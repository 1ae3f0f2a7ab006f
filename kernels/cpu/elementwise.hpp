// Elementwise kernels: maps over contiguous arrays and broadcasting binary
// ops. Raw pointers and shapes in; T is float or double.
#pragma once

#include <cstdint>

#include "../types.hpp"

namespace metatape::kernels::cpu {


// y[i] = op(x[i]) for i < n. y may alias x.
template <class T>
void unary(UnaryOp op, const T* x, T* y, std::int64_t n, double param);

// out[i] = g[i] * op(x[i]) with op step or sign: the backward of relu and
// abs in one pass, without a mask tensor. out may alias g.
template <class T>
void multiply_by_mask(UnaryOp op, const T* g, const T* x, T* out, std::int64_t n);

// out (contiguous, `shape` of rank <= 5) = a op b, with a and b read through
// strides in elements (0 along broadcast dimensions).
template <class T>
void binary(BinaryOp op, int rank, const std::int64_t* shape, const T* a, const std::int64_t* a_strides, const T* b,
            const std::int64_t* b_strides, T* out);

// y[i] = x[i] converted (float <-> double).
template <class From, class To>
void convert(const From* x, To* y, std::int64_t n);

template <class T>
void fill(T* y, std::int64_t n, T value);

}  // namespace metatape::kernels::cpu
