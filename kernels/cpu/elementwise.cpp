// Elementwise kernels: maps over contiguous arrays and broadcasting binary
// ops. The per-element formulas are kernels/scalar_math.hpp's, shared with
// the CUDA kernels.
#include "kernels.hpp"

#include <cstring>

#include "../scalar_math.hpp"
#include "parallel.hpp"
#include "parallel_loop.hpp"
#include "strided.hpp"
#include "vector_clones.hpp"
#if METATAPE_SMALL_GEMM
#include "short_rows.hpp"
#endif

namespace metatape::kernels::cpu {
namespace {

// y[i] = f(x[i]) for i < n: a plain loop the compiler vectorises, except
// where f calls the C library (exp, log, tanh, pow, sqrt; sigmoid through
// exp), whose copies stay scalar.
template <class T, class F>
void map_row(const T* x, T* y, std::int64_t n, F f) {
  run_vectorised([&] {
    for (std::int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
  });
}

// out[i] = f(a[i], b[i]) for i < n.
template <class T, class F>
void zip_row(const T* a, const T* b, T* out, std::int64_t n, F f) {
  run_vectorised([&] {
    for (std::int64_t i = 0; i < n; ++i) out[i] = f(a[i], b[i]);
  });
}

// y[i] = x[i], converted (exactly, or rounded to nearest).
template <class From, class To>
void convert_row(const From* x, To* y, std::int64_t n) {
  run_vectorised([&] {
    for (std::int64_t i = 0; i < n; ++i) y[i] = static_cast<To>(x[i]);
  });
}

// map_row over the pool when n is large: chunks of at least `grain`
// elements.
template <class T, class F>
void map(const T* x, T* y, std::int64_t n, std::int64_t grain, F f) {
  parallel_for(n, grain, [&](std::int64_t begin, std::int64_t end) { map_row(x + begin, y + begin, end - begin, f); });
}

// What one element of a unary op costs, as a chunk size.
std::int64_t unary_grain(UnaryOp op) {
  switch (op) {
    case UnaryOp::exp:
    case UnaryOp::log:
    case UnaryOp::sqrt:
    case UnaryOp::tanh:
    case UnaryOp::sigmoid:
    case UnaryOp::pow:
      return kMathGrain;
    default:
      return kStreamGrain;
  }
}

// A block of innermost rows of a broadcasting binary op (for_each_block),
// in one call. The branches give the compiler unit-stride loops to
// vectorise in the common layouts; short rows of whole operands go to
// AVX-512's masked vectors where that is the copy in use (short_rows.hpp).
template <BinaryOp Op, class T>
void binary_rows(T* out, const T* a, const T* b, const RowBlock& block, std::int64_t n, std::int64_t sa,
                 std::int64_t sb) {
#if METATAPE_SMALL_GEMM
  if (sa == 1 && sb == 1 && short_rows::takes(n)) return short_rows::binary<Op>(out, a, b, block, n);
#endif
  const auto f = [](T u, T v) { return binary_value<Op>(u, v); };
  run_vectorised([&] {
    for (std::int64_t r = 0; r < block.rows; ++r) {
      T* o = out + r * block.stride[0];
      const T* ar = a + r * block.stride[1];
      const T* br = b + r * block.stride[2];
      if (sa == 1 && sb == 1) {
        for (std::int64_t i = 0; i < n; ++i) o[i] = f(ar[i], br[i]);
      } else if (sa == 1 && sb == 0) {
        const T bv = *br;
        for (std::int64_t i = 0; i < n; ++i) o[i] = f(ar[i], bv);
      } else if (sa == 0 && sb == 1) {
        const T av = *ar;
        for (std::int64_t i = 0; i < n; ++i) o[i] = f(av, br[i]);
      } else {
        for (std::int64_t i = 0; i < n; ++i) o[i] = f(ar[i * sa], br[i * sb]);
      }
    }
  });
}

template <BinaryOp Op, class T>
void binary_loop(int rank, const std::int64_t* shape, const T* a, const std::int64_t* a_strides, const T* b,
                 const std::int64_t* b_strides, T* out) {
  const std::int64_t grain = Op == BinaryOp::div ? kMathGrain : kStreamGrain;
  std::int64_t out_strides[kMaxLoopRank];
  contiguous_strides(rank, shape, out_strides);
  const std::int64_t* strides[3] = {out_strides, a_strides, b_strides};
  const StridedLoop loop = make_loop(rank, shape, 3, strides);
  // Every output element is written once, so any dimension may be cut.
  parallel_for_each_block(loop, widest_dimension(loop, 0), grain,
                          [&](const std::int64_t* off, std::int64_t n, const std::int64_t* s, const RowBlock& block) {
                            // The output is contiguous and never broadcast, so its inner stride is 1.
                            binary_rows<Op>(out + off[0], a + off[1], b + off[2], block, n, s[1], s[2]);
                          });
}

}  // namespace

// Set when the library loads; zero-initialised before that, which is the
// baseline copy.
std::atomic<SmallGemmIsa> element_loop_copy{small_gemm_isa()};

template <class T>
void unary(UnaryOp op, const T* x, T* y, std::int64_t n, double param) {
  const T p = static_cast<T>(param);
  // power()'s exact fast paths, chosen once per call so that their loops
  // vectorise (backward rules produce these exponents).
  if (op == UnaryOp::pow && (p == T(1) || p == T(2) || p == T(-1))) {
    if (p == T(1)) return map(x, y, n, kStreamGrain, [](T v) { return power(v, T(1)); });
    if (p == T(2)) return map(x, y, n, kStreamGrain, [](T v) { return power(v, T(2)); });
    return map(x, y, n, kMathGrain, [](T v) { return power(v, T(-1)); });
  }
  with_unary_op(op, [&]<UnaryOp Op>(std::integral_constant<UnaryOp, Op>) {
    map(x, y, n, unary_grain(op), [p](T v) { return unary_value<Op>(v, p); });
  });
}

template <class T>
void multiply_by_mask(UnaryOp op, const T* g, const T* x, T* out, std::int64_t n) {
  parallel_for(n, kStreamGrain, [&](std::int64_t begin, std::int64_t end) {
    if (op == UnaryOp::step) {
      zip_row(g + begin, x + begin, out + begin, end - begin, [](T gv, T xv) { return gv * step(xv); });
    } else {  // sign
      zip_row(g + begin, x + begin, out + begin, end - begin, [](T gv, T xv) { return gv * sign(xv); });
    }
  });
}

template <class T>
void add_scaled(const T* x, const T* y, T* out, std::int64_t n, double param) {
  const T p = static_cast<T>(param);
  parallel_for(n, kStreamGrain, [&](std::int64_t begin, std::int64_t end) {
    zip_row(x + begin, y + begin, out + begin, end - begin, [p](T xv, T yv) { return xv + yv * p; });
  });
}

template <class T>
void binary(BinaryOp op, int rank, const std::int64_t* shape, const T* a, const std::int64_t* a_strides, const T* b,
            const std::int64_t* b_strides, T* out) {
  with_binary_op(op, [&]<BinaryOp Op>(std::integral_constant<BinaryOp, Op>) {
    binary_loop<Op>(rank, shape, a, a_strides, b, b_strides, out);
  });
}

template <class From, class To>
void convert(const From* x, To* y, std::int64_t n) {
  parallel_for(n, kStreamGrain,
               [&](std::int64_t begin, std::int64_t end) { convert_row(x + begin, y + begin, end - begin); });
}

template <class T>
void fill(T* y, std::int64_t n, T value) {
  parallel_for(n, kStreamGrain, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) y[i] = value;
  });
}

template <class T>
void copy(const T* x, T* y, std::int64_t n) {
  parallel_for(n, kStreamGrain, [&](std::int64_t begin, std::int64_t end) {
    std::memcpy(y + begin, x + begin, static_cast<std::size_t>(end - begin) * sizeof(T));
  });
}

template void unary<float>(UnaryOp, const float*, float*, std::int64_t, double);
template void unary<double>(UnaryOp, const double*, double*, std::int64_t, double);
template void multiply_by_mask<float>(UnaryOp, const float*, const float*, float*, std::int64_t);
template void multiply_by_mask<double>(UnaryOp, const double*, const double*, double*, std::int64_t);
template void add_scaled<float>(const float*, const float*, float*, std::int64_t, double);
template void add_scaled<double>(const double*, const double*, double*, std::int64_t, double);
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
template void copy<float>(const float*, float*, std::int64_t);
template void copy<double>(const double*, double*, std::int64_t);
template void copy<std::int64_t>(const std::int64_t*, std::int64_t*, std::int64_t);

}  // namespace metatape::kernels::cpu
