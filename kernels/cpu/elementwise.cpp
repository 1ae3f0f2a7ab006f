#include "elementwise.hpp"

#include <cmath>

#include "strided.hpp"

namespace metatape::kernels::cpu {
namespace {

template <class T, class F>
void map(const T* x, T* y, std::int64_t n, F f) {
  for (std::int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

template <class T>
T stable_sigmoid(T x) {
  if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
  const T e = std::exp(x);
  return e / (T(1) + e);
}

// One innermost row of a broadcasting binary op. The branches give the
// compiler unit-stride loops to vectorise in the common layouts.
template <class T, class F>
void binary_row(T* out, const T* a, const T* b, std::int64_t n, std::int64_t sa, std::int64_t sb, F f) {
  if (sa == 1 && sb == 1) {
    for (std::int64_t i = 0; i < n; ++i) out[i] = f(a[i], b[i]);
  } else if (sa == 1 && sb == 0) {
    const T bv = *b;
    for (std::int64_t i = 0; i < n; ++i) out[i] = f(a[i], bv);
  } else if (sa == 0 && sb == 1) {
    const T av = *a;
    for (std::int64_t i = 0; i < n; ++i) out[i] = f(av, b[i]);
  } else {
    for (std::int64_t i = 0; i < n; ++i) out[i] = f(a[i * sa], b[i * sb]);
  }
}

template <class T, class F>
void binary_loop(int rank, const std::int64_t* shape, const T* a, const std::int64_t* a_strides, const T* b,
                 const std::int64_t* b_strides, T* out, F f) {
  std::int64_t out_strides[kMaxLoopRank];
  contiguous_strides(rank, shape, out_strides);
  const std::int64_t* strides[3] = {out_strides, a_strides, b_strides};
  const StridedLoop loop = make_loop(rank, shape, 3, strides);
  for_each_row(loop, [&](const std::int64_t* off, std::int64_t n, const std::int64_t* s) {
    // The output is contiguous and never broadcast, so its inner stride is 1.
    binary_row(out + off[0], a + off[1], b + off[2], n, s[1], s[2], f);
  });
}

}  // namespace

template <class T>
void unary(UnaryOp op, const T* x, T* y, std::int64_t n, double param) {
  const T p = static_cast<T>(param);
  switch (op) {
    case UnaryOp::neg:
      return map(x, y, n, [](T v) { return -v; });
    case UnaryOp::exp:
      return map(x, y, n, [](T v) { return std::exp(v); });
    case UnaryOp::log:
      return map(x, y, n, [](T v) { return std::log(v); });
    case UnaryOp::sqrt:
      return map(x, y, n, [](T v) { return std::sqrt(v); });
    case UnaryOp::tanh:
      return map(x, y, n, [](T v) { return std::tanh(v); });
    case UnaryOp::sigmoid:
      return map(x, y, n, [](T v) { return stable_sigmoid(v); });
    case UnaryOp::relu:
      return map(x, y, n, [](T v) { return v < T(0) ? T(0) : v; });  // NaN stays NaN
    case UnaryOp::abs:
      return map(x, y, n, [](T v) { return std::abs(v); });
    case UnaryOp::step:
      return map(x, y, n, [](T v) { return v > T(0) ? T(1) : T(0); });
    case UnaryOp::sign:
      return map(x, y, n, [](T v) { return T((v > T(0)) - (v < T(0))); });
    case UnaryOp::pow:
      // Exponents whose power is a single correctly rounded operation give the
      // same bits as std::pow, much faster (backward rules produce them).
      if (param == 1.0) return map(x, y, n, [](T v) { return v; });
      if (param == 2.0) return map(x, y, n, [](T v) { return v * v; });
      if (param == -1.0) return map(x, y, n, [](T v) { return T(1) / v; });
      return map(x, y, n, [p](T v) { return std::pow(v, p); });
    case UnaryOp::scale:
      return map(x, y, n, [p](T v) { return v * p; });
    case UnaryOp::shift:
      return map(x, y, n, [p](T v) { return v + p; });
    case UnaryOp::finite_or_zero:
      return map(x, y, n, [](T v) { return std::isfinite(v) ? v : T(0); });
  }
}

template <class T>
void multiply_by_mask(UnaryOp op, const T* g, const T* x, T* out, std::int64_t n) {
  if (op == UnaryOp::step) {
    for (std::int64_t i = 0; i < n; ++i) out[i] = x[i] > T(0) ? g[i] : T(0) * g[i];
  } else {  // sign
    for (std::int64_t i = 0; i < n; ++i) out[i] = g[i] * T((x[i] > T(0)) - (x[i] < T(0)));
  }
}

template <class T>
void binary(BinaryOp op, int rank, const std::int64_t* shape, const T* a, const std::int64_t* a_strides, const T* b,
            const std::int64_t* b_strides, T* out) {
  switch (op) {
    case BinaryOp::add:
      return binary_loop(rank, shape, a, a_strides, b, b_strides, out, [](T u, T v) { return u + v; });
    case BinaryOp::sub:
      return binary_loop(rank, shape, a, a_strides, b, b_strides, out, [](T u, T v) { return u - v; });
    case BinaryOp::mul:
      return binary_loop(rank, shape, a, a_strides, b, b_strides, out, [](T u, T v) { return u * v; });
    case BinaryOp::div:
      return binary_loop(rank, shape, a, a_strides, b, b_strides, out, [](T u, T v) { return u / v; });
  }
}

template <class From, class To>
void convert(const From* x, To* y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] = static_cast<To>(x[i]);
}

template <class T>
void fill(T* y, std::int64_t n, T value) {
  for (std::int64_t i = 0; i < n; ++i) y[i] = value;
}

template void unary<float>(UnaryOp, const float*, float*, std::int64_t, double);
template void unary<double>(UnaryOp, const double*, double*, std::int64_t, double);
template void multiply_by_mask<float>(UnaryOp, const float*, const float*, float*, std::int64_t);
template void multiply_by_mask<double>(UnaryOp, const double*, const double*, double*, std::int64_t);
template void binary<float>(BinaryOp, int, const std::int64_t*, const float*, const std::int64_t*, const float*,
                            const std::int64_t*, float*);
template void binary<double>(BinaryOp, int, const std::int64_t*, const double*, const std::int64_t*, const double*,
                             const std::int64_t*, double*);
template void convert<float, double>(const float*, double*, std::int64_t);
template void convert<double, float>(const double*, float*, std::int64_t);
template void convert<float, float>(const float*, float*, std::int64_t);
template void convert<double, double>(const double*, double*, std::int64_t);
template void fill<float>(float*, std::int64_t, float);
template void fill<double>(double*, std::int64_t, double);
template void fill<std::int64_t>(std::int64_t*, std::int64_t, std::int64_t);

}  // namespace metatape::kernels::cpu
