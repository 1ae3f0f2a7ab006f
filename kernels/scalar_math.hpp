// The per-element formulas of the kernels, written once for both backends:
// the CPU loops and the CUDA threads call these, so that the two compute the
// same function with the same special cases (a NaN through relu, sigmoid
// without overflow, the exact fast paths of pow). Host and device functions.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "types.hpp"

namespace metatape::kernels {

// 1 / (1 + e^-v) without overflow: e^v is only taken for v < 0.
template <class T>
METATAPE_HOST_DEVICE T sigmoid(T v) {
  if (v >= T(0)) return T(1) / (T(1) + std::exp(-v));
  const T e = std::exp(v);
  return e / (T(1) + e);
}

// max(v, 0); NaN stays NaN (a comparison with NaN is false).
template <class T>
METATAPE_HOST_DEVICE T relu(T v) {
  return v < T(0) ? T(0) : v;
}

// relu's derivative: 1 if v > 0 else 0 (NaN gives 0).
template <class T>
METATAPE_HOST_DEVICE T step(T v) {
  return v > T(0) ? T(1) : T(0);
}

// abs's derivative: -1, 0 or 1.
template <class T>
METATAPE_HOST_DEVICE T sign(T v) {
  return T((v > T(0)) - (v < T(0)));
}

// v^p. The exponents whose power is a single correctly rounded operation
// give the same bits as std::pow, much faster (backward rules produce them).
template <class T>
METATAPE_HOST_DEVICE T power(T v, T p) {
  if (p == T(1)) return v;
  if (p == T(2)) return v * v;
  if (p == T(-1)) return T(1) / v;
  return std::pow(v, p);
}

// The unary op `op` of v (types.hpp lists them), with param p. An op added
// to UnaryOp without a line here leaves this without a return, an error
// under -Werror (-Wreturn-type), as with_unary_op's switch is (-Wswitch).
template <UnaryOp op, class T>
METATAPE_HOST_DEVICE T unary_value(T v, T p) {
  if constexpr (op == UnaryOp::neg) return -v;
  if constexpr (op == UnaryOp::exp) return std::exp(v);
  if constexpr (op == UnaryOp::log) return std::log(v);
  if constexpr (op == UnaryOp::sqrt) return std::sqrt(v);
  if constexpr (op == UnaryOp::tanh) return std::tanh(v);
  if constexpr (op == UnaryOp::sigmoid) return sigmoid(v);
  if constexpr (op == UnaryOp::relu) return relu(v);
  if constexpr (op == UnaryOp::abs) return std::abs(v);
  if constexpr (op == UnaryOp::step) return step(v);
  if constexpr (op == UnaryOp::sign) return sign(v);
  if constexpr (op == UnaryOp::pow) return power(v, p);
  if constexpr (op == UnaryOp::scale) return v * p;
  if constexpr (op == UnaryOp::shift) return v + p;
  if constexpr (op == UnaryOp::finite_or_zero) return std::isfinite(v) ? v : T(0);
}

template <BinaryOp op, class T>
METATAPE_HOST_DEVICE T binary_value(T a, T b) {
  if constexpr (op == BinaryOp::add) return a + b;
  if constexpr (op == BinaryOp::sub) return a - b;
  if constexpr (op == BinaryOp::mul) return a * b;
  if constexpr (op == BinaryOp::div) return a / b;
}

// f(std::integral_constant<UnaryOp, op>{}): a run-time op code as a
// compile-time one, so that a loop calling unary_value<op> inside f is
// compiled once per op, with the branch outside it.
template <class F>
METATAPE_HOST_DEVICE decltype(auto) with_unary_op(UnaryOp op, F&& f) {
  using U = UnaryOp;
  switch (op) {
    case U::neg:
      return f(std::integral_constant<U, U::neg>{});
    case U::exp:
      return f(std::integral_constant<U, U::exp>{});
    case U::log:
      return f(std::integral_constant<U, U::log>{});
    case U::sqrt:
      return f(std::integral_constant<U, U::sqrt>{});
    case U::tanh:
      return f(std::integral_constant<U, U::tanh>{});
    case U::sigmoid:
      return f(std::integral_constant<U, U::sigmoid>{});
    case U::relu:
      return f(std::integral_constant<U, U::relu>{});
    case U::abs:
      return f(std::integral_constant<U, U::abs>{});
    case U::step:
      return f(std::integral_constant<U, U::step>{});
    case U::sign:
      return f(std::integral_constant<U, U::sign>{});
    case U::pow:
      return f(std::integral_constant<U, U::pow>{});
    case U::scale:
      return f(std::integral_constant<U, U::scale>{});
    case U::shift:
      return f(std::integral_constant<U, U::shift>{});
    case U::finite_or_zero:
      break;
  }
  return f(std::integral_constant<U, U::finite_or_zero>{});
}

// As with_unary_op, for a binary op code.
template <class F>
METATAPE_HOST_DEVICE decltype(auto) with_binary_op(BinaryOp op, F&& f) {
  using B = BinaryOp;
  switch (op) {
    case B::add:
      return f(std::integral_constant<B, B::add>{});
    case B::sub:
      return f(std::integral_constant<B, B::sub>{});
    case B::mul:
      return f(std::integral_constant<B, B::mul>{});
    case B::div:
      break;
  }
  return f(std::integral_constant<B, B::div>{});
}

// Whether v takes over from best as the running maximum: strictly greater
// (so the first maximum wins ties), or NaN while best is not (so a NaN
// propagates, as in torch.max and max_pool2d). Argmax and max pooling.
template <class T>
METATAPE_HOST_DEVICE bool beats_max(T v, T best) {
  return !(v <= best) && !std::isnan(best);
}

// The flat position of row i's label in a [n, classes] array. A label
// outside [0, classes) is clamped into it, so that every read stays in
// bounds (the engine refuses such labels where it can see them).
METATAPE_HOST_DEVICE inline std::int64_t label_position(std::int64_t i, std::int64_t label, std::int64_t classes) {
  return i * classes + (label < 0 ? 0 : label >= classes ? classes - 1 : label);
}

// Batch normalisation's affine map for one (group, channel), y = x · scale +
// shift, from the statistics (in double) and that channel's gamma and beta.
// Both backends compute it so, in T: the fused ReLU's mask in the backward
// recomputes the forward's pre-activation bit for bit from it.
template <class T>
METATAPE_HOST_DEVICE void norm_affine(double mean, double rstd, T gamma, T beta, T& scale, T& shift) {
  scale = static_cast<T>(rstd * static_cast<double>(gamma));
  shift = static_cast<T>(static_cast<double>(beta) - mean * rstd * static_cast<double>(gamma));
}

}  // namespace metatape::kernels
