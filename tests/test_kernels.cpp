// The kernels below the engine: the CPU kernel table against the documented
// per-element semantics (the special cases both backends share through
// kernels/scalar_math.hpp), and the boundary where a kernel's own error
// becomes the engine's DeviceError.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "engine/src/backend.hpp"
#include "kernels/cpu/backend.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/parallel.hpp"
#include "kernels/cpu/small_gemm.hpp"
#include "kernels/error.hpp"
#include "kernels/scalar_math.hpp"
#include "metatape/error.hpp"

namespace mt = metatape;
using mt::kernels::BinaryOp;
using mt::kernels::UnaryOp;
using K = mt::kernels::cpu::CpuKernels;

namespace {

// gemm on every shape with a dimension of 1 (routed to gemv or an
// untransposed product) and one without, every transpose, leading
// dimensions wider than the matrices (vectors spaced apart), beta 0 over
// NaN (ignored) and beta −0.5; against the sum written out in long double.
template <class T>
void check_gemm_degenerate(double tolerance) {
  struct Dims {
    std::int64_t m, n, k;
  };
  for (const Dims d : {Dims{1, 7, 5}, Dims{6, 1, 5}, Dims{6, 7, 1}, Dims{1, 1, 5}, Dims{1, 7, 1}, Dims{6, 1, 1},
                       Dims{1, 1, 1}, Dims{6, 7, 5}})
    for (const bool ta : {false, true})
      for (const bool tb : {false, true})
        for (const T beta : {T(0), T(-0.5)}) {
          // Stored A is [k, m] if transposed, else [m, k]; B [n, k] or [k, n]; 3 spare columns each.
          const std::int64_t lda = (ta ? d.m : d.k) + 3, ldb = (tb ? d.k : d.n) + 3, ldc = d.n + 3;
          std::vector<T> a(static_cast<std::size_t>((ta ? d.k : d.m) * lda)),
              b(static_cast<std::size_t>((tb ? d.n : d.k) * ldb));
          for (std::size_t i = 0; i < a.size(); ++i) a[i] = T(std::sin(1.0 + static_cast<double>(i)));
          for (std::size_t i = 0; i < b.size(); ++i) b[i] = T(std::cos(2.0 + 0.7 * static_cast<double>(i)));
          std::vector<T> c(static_cast<std::size_t>(d.m * ldc),
                           beta == T(0) ? std::numeric_limits<T>::quiet_NaN() : T(0.25));
          const std::vector<T> c0 = c;
          mt::kernels::cpu::gemm<T>(ta, tb, d.m, d.n, d.k, T(0.75), a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
          for (std::int64_t i = 0; i < d.m; ++i)
            for (std::int64_t j = 0; j < ldc; ++j) {
              const std::size_t at = static_cast<std::size_t>(i * ldc + j);
              CAPTURE(d.m);
              CAPTURE(d.n);
              CAPTURE(d.k);
              CAPTURE(ta);
              CAPTURE(tb);
              CAPTURE(beta);
              CAPTURE(i);
              CAPTURE(j);
              if (j >= d.n) {  // past the matrix: untouched
                CHECK((std::isnan(c0[at]) ? std::isnan(c[at]) : c[at] == c0[at]));
                continue;
              }
              long double sum = 0;
              for (std::int64_t l = 0; l < d.k; ++l)
                sum += static_cast<long double>(a[static_cast<std::size_t>(ta ? l * lda + i : i * lda + l)]) *
                       b[static_cast<std::size_t>(tb ? j * ldb + l : l * ldb + j)];
              const long double expected =
                  0.75L * sum + (beta == T(0) ? 0.0L : static_cast<long double>(beta) * c0[at]);
              CHECK(std::abs(static_cast<double>(c[at] - expected)) <= tolerance);
            }
        }
}

// Equal bits (so 0 and -0 differ), or both NaN.
template <class T>
bool same(T a, T b) {
  using Bits = std::conditional_t<sizeof(T) == 8, std::uint64_t, std::uint32_t>;
  return (std::isnan(a) && std::isnan(b)) || std::bit_cast<Bits>(a) == std::bit_cast<Bits>(b);
}

// The small-product kernel of one instruction set against its documented
// formula, bit for bit: s = fma(a_ip, b_pj, s) over p in order from 0 (for
// a single column of an untransposed A, 16 such lanes added pairwise), then
// c = fma(beta, c, alpha · s). Shapes cover full and partial register
// tiles (m around the 6-row tile, n around one and two vectors of either
// width, up to the 64 x 64 panel, and a single column, which runs as a
// row), every transpose, leading dimensions wider than the matrices, alpha
// 1 and 0.75, beta 0 over NaN and beta −0.5. Columns past n stay
// untouched; AVX2 refuses n below its tile, except a single column.
template <class T>
void check_small_gemm_bits(mt::kernels::cpu::SmallGemmIsa isa) {
  namespace cpu = mt::kernels::cpu;
  using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  for (const std::int64_t m : {1, 5, 6, 7, 13})
    for (const std::int64_t n : {1, 2, 7, 8, 9, 16, 17, 33, 40, 64})
      for (const std::int64_t k : {1, 3, 8, 17, 40, 64})
        for (const bool ta : {false, true})
          for (const bool tb : {false, true})
            for (const auto& [alpha, beta] : {std::pair{T(1), T(0)}, std::pair{T(0.75), T(-0.5)},
                                              std::pair{T(0.75), T(0)}, std::pair{T(1), T(-0.5)}}) {
              const std::int64_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 3, ldc = n + 3;
              std::vector<T> a(static_cast<std::size_t>((ta ? k : m) * lda)),
                  b(static_cast<std::size_t>((tb ? n : k) * ldb));
              for (std::size_t i = 0; i < a.size(); ++i) a[i] = T(std::sin(1.0 + static_cast<double>(i)));
              for (std::size_t i = 0; i < b.size(); ++i) b[i] = T(std::cos(2.0 + 0.7 * static_cast<double>(i)));
              std::vector<T> c(static_cast<std::size_t>(m * ldc),
                               beta == T(0) ? std::numeric_limits<T>::quiet_NaN() : T(0.25));
              const std::vector<T> c0 = c;
              const bool taken = cpu::small_gemm_with<T>(isa, ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb,
                                                         beta, c.data(), ldc);
              // Narrower than the kernel takes: refused, C untouched.
              REQUIRE(taken == (n == 1 || n >= cpu::small_gemm_min_columns<T>(isa)));
              if (!taken) {
                CHECK(std::equal(c.begin(), c.end(), c0.begin(), same<T>));
                continue;
              }
              bool all_same = true;
              for (std::int64_t i = 0; i < m; ++i)
                for (std::int64_t j = 0; j < ldc; ++j) {
                  const std::size_t at = static_cast<std::size_t>(i * ldc + j);
                  T expected = c0[at];
                  if (j < n) {
                    // 16 lanes added pairwise for a column of an
                    // untransposed A; one lane (in order) otherwise.
                    const int lane_count = n == 1 && !ta ? cpu::kSmallGemvLanes : 1;
                    T lanes[cpu::kSmallGemvLanes] = {};
                    for (std::int64_t p = 0; p < k; ++p) {
                      T& s = lanes[p % lane_count];
                      s = std::fma(a[static_cast<std::size_t>(ta ? p * lda + i : i * lda + p)],
                                   b[static_cast<std::size_t>(tb ? j * ldb + p : p * ldb + j)], s);
                    }
                    for (int w = lane_count / 2; w >= 1; w /= 2)
                      for (int l = 0; l < w; ++l) lanes[l] += lanes[l + w];
                    T s = lanes[0];
                    if (alpha != T(1)) s = alpha * s;
                    expected = beta == T(0) ? s : std::fma(beta, c0[at], s);
                  }
                  // Bits, not same(): the columns past n must keep their very NaN.
                  all_same = all_same && std::bit_cast<Bits>(c[at]) == std::bit_cast<Bits>(expected);
                }
              INFO("m " << m << " n " << n << " k " << k << " ta " << ta << " tb " << tb << " beta " << beta);
              CHECK(all_same);
            }
  // What the kernel does not take: one column longer than its chunk's
  // panel, an op(B) past the panel.
  std::vector<T> a(64 * 65, T(1)), b(65 * 64, T(1)), c(64 * 64, T(7));
  CHECK_FALSE(cpu::small_gemm_with<T>(isa, false, false, 4, 1, 65, T(1), a.data(), 65, b.data(), 1, T(0), c.data(), 1));
  CHECK_FALSE(
      cpu::small_gemm_with<T>(isa, false, false, 4, 64, 65, T(1), a.data(), 65, b.data(), 64, T(0), c.data(), 64));
  CHECK(c == std::vector<T>(64 * 64, T(7)));
}

template <class T>
const std::vector<T> kSpecial = {-std::numeric_limits<T>::infinity(),
                                 T(-1000),
                                 T(-2.5),
                                 T(-1),
                                 T(-0.0),
                                 T(0),
                                 std::numeric_limits<T>::denorm_min(),
                                 T(0.5),
                                 T(3),
                                 T(1000),
                                 std::numeric_limits<T>::infinity(),
                                 std::numeric_limits<T>::quiet_NaN()};

template <class T>
std::vector<T> unary_of(UnaryOp op, const std::vector<T>& x, double param = 0) {
  std::vector<T> y(x.size());
  K::unary<T>(op, x.data(), y.data(), static_cast<std::int64_t>(x.size()), param);
  return y;
}

template <class T>
void check_unary_special_values() {
  const std::vector<T>& x = kSpecial<T>;
  const T inf = std::numeric_limits<T>::infinity();
  const std::vector<T> sigmoid = unary_of(UnaryOp::sigmoid, x), relu = unary_of(UnaryOp::relu, x),
                       step = unary_of(UnaryOp::step, x), sign = unary_of(UnaryOp::sign, x),
                       finite = unary_of(UnaryOp::finite_or_zero, x);
  for (std::size_t i = 0; i < x.size(); ++i) {
    const T v = x[i];
    INFO("x = " << v);
    // sigmoid never overflows to NaN: exactly 0 and 1 in the tails.
    if (!std::isnan(v)) CHECK((sigmoid[i] >= T(0) && sigmoid[i] <= T(1)));
    if (v == -inf || v == T(-1000)) CHECK(sigmoid[i] == T(0));
    if (v == inf || v == T(1000)) CHECK(sigmoid[i] == T(1));
    if (std::isfinite(v) && std::abs(v) < T(10))
      CHECK(static_cast<double>(sigmoid[i]) ==
            doctest::Approx(1.0 / (1.0 + std::exp(-static_cast<double>(v)))).epsilon(1e-6));
    // relu keeps a NaN (it must reach the loss); its derivative and sign's
    // are 0 at NaN and at both zeros.
    CHECK(same(relu[i], std::isnan(v) ? v : (v < T(0) ? T(0) : v)));
    CHECK(step[i] == (v > T(0) ? T(1) : T(0)));
    CHECK(sign[i] == (v > T(0) ? T(1) : v < T(0) ? T(-1) : T(0)));
    CHECK(same(finite[i], std::isfinite(v) ? v : T(0)));
  }
  // The fast paths of pow give std::pow's bits.
  for (const double p : {1.0, 2.0, -1.0, 0.5, 3.0}) {
    INFO("p = " << p);
    const std::vector<T> y = unary_of(UnaryOp::pow, x, p);
    for (std::size_t i = 0; i < x.size(); ++i) CHECK(same(y[i], static_cast<T>(std::pow(x[i], static_cast<T>(p)))));
  }
  const std::vector<T> scaled = unary_of(UnaryOp::scale, x, -2), shifted = unary_of(UnaryOp::shift, x, 0.5),
                       negated = unary_of(UnaryOp::neg, x), absolute = unary_of(UnaryOp::abs, x);
  for (std::size_t i = 0; i < x.size(); ++i) {
    CHECK(same(scaled[i], x[i] * T(-2)));
    CHECK(same(shifted[i], x[i] + T(0.5)));
    CHECK(same(negated[i], -x[i]));
    CHECK(same(absolute[i], std::abs(x[i])));
  }
}

// The element loops (kernels/cpu/vector_clones.hpp) in the copy that
// element_loop_isa() names: each element must be its own formula's result,
// bit for bit (NaNs as NaN), as this file (built for the baseline, with no
// fused multiply-add) computes it. Lengths cross every vector width and
// leave tails; the arrays start one element past an alignment; the entries
// on either side of every output must stay as they were; special values
// meet one another in both operands.
template <class T>
void check_element_loops_bits() {
  constexpr std::int64_t kSpan = 1030;
  std::vector<T> pool(2 * kSpan + 2);
  for (std::size_t i = 0; i < pool.size(); ++i)
    pool[i] = T(std::sin(0.37 * static_cast<double>(i)) * std::exp(std::cos(1.3 * static_cast<double>(i)) * 4));
  const std::size_t specials = kSpecial<T>.size();
  for (std::size_t i = 0; i < pool.size(); i += 5) pool[i] = kSpecial<T>[(i / 5) % specials];
  for (std::size_t i = kSpan + 2; i < pool.size(); i += 7) pool[i] = kSpecial<T>[(i / 7) % specials];
  const T* x = pool.data() + 1;
  const T* y = pool.data() + kSpan + 2;  // the second operand: its own values, another phase of the specials
  const T sentinel = T(-12345.25);
  for (const std::int64_t n : {std::int64_t{1}, std::int64_t{5}, std::int64_t{16}, std::int64_t{17}, std::int64_t{40},
                               std::int64_t{63}, kSpan}) {
    CAPTURE(n);
    std::vector<T> out;
    // Runs `kernel` on out[1 .. n] (out filled with the sentinel first),
    // then checks out[0] and out[n + 1] kept it and out[1 + i] == want(i).
    auto check = [&](auto kernel, auto want, std::int64_t count) {
      out.assign(static_cast<std::size_t>(count) + 2, sentinel);
      kernel(out.data() + 1);
      CHECK(out.front() == sentinel);
      CHECK(out.back() == sentinel);
      for (std::int64_t i = 0; i < count; ++i) {
        CAPTURE(i);
        CHECK(same(out[static_cast<std::size_t>(i) + 1], static_cast<T>(want(i))));
      }
    };
    for (int code = 0; code <= static_cast<int>(UnaryOp::finite_or_zero); ++code)
      for (const double param : {1.5, 1.0, 2.0, -1.0}) {
        const UnaryOp op = static_cast<UnaryOp>(code);
        CAPTURE(code);
        CAPTURE(param);
        mt::kernels::with_unary_op(op, [&]<UnaryOp Op>(std::integral_constant<UnaryOp, Op>) {
          check([&](T* o) { K::unary<T>(op, x, o, n, param); },
                [&](std::int64_t i) { return mt::kernels::unary_value<Op>(x[i], static_cast<T>(param)); }, n);
        });
      }
    check([&](T* o) { K::multiply_by_mask<T>(UnaryOp::step, x, y, o, n); },
          [&](std::int64_t i) { return x[i] * mt::kernels::step(y[i]); }, n);
    check([&](T* o) { K::multiply_by_mask<T>(UnaryOp::sign, x, y, o, n); },
          [&](std::int64_t i) { return x[i] * mt::kernels::sign(y[i]); }, n);
    // x + param · y, the product rounded first (a fused multiply-add would
    // differ in the last bit wherever it rounds differently).
    for (const double param : {-0.01, 1.5, -3.0})
      check([&](T* o) { K::add_scaled<T>(x, y, o, n, param); },
            [&](std::int64_t i) {
              const T product = y[i] * static_cast<T>(param);
              return x[i] + product;
            },
            n);
    // Every branch of a broadcasting row: both operands whole, b one value,
    // a one value, and a read across a transposed [half, 2] layout.
    const std::int64_t half = n / 2, shape[] = {n}, unit[] = {1}, repeat[] = {0};
    const std::int64_t grid[] = {2, half}, across[] = {1, 2}, rows[] = {half, 1};
    const std::int64_t third = n / 3, bias_shape[] = {3, third}, whole_rows[] = {third, 1}, bias_rows[] = {0, 1};
    for (int code = 0; code <= static_cast<int>(BinaryOp::div); ++code) {
      const BinaryOp op = static_cast<BinaryOp>(code);
      CAPTURE(code);
      mt::kernels::with_binary_op(op, [&]<BinaryOp Op>(std::integral_constant<BinaryOp, Op>) {
        using mt::kernels::binary_value;
        check([&](T* o) { K::binary<T>(op, 1, shape, x, unit, y, unit, o); },
              [&](std::int64_t i) { return binary_value<Op>(x[i], y[i]); }, n);
        check([&](T* o) { K::binary<T>(op, 1, shape, x, unit, y + 3, repeat, o); },
              [&](std::int64_t i) { return binary_value<Op>(x[i], y[3]); }, n);
        check([&](T* o) { K::binary<T>(op, 1, shape, x + 5, repeat, y, unit, o); },
              [&](std::int64_t i) { return binary_value<Op>(x[5], y[i]); }, n);
        check([&](T* o) { K::binary<T>(op, 2, grid, x, across, y, rows, o); },
              [&](std::int64_t i) { return binary_value<Op>(x[(i % half) * 2 + i / half], y[i]); }, 2 * half);
        // A bias over rows, [3, third] (op) [1, third]: a block of three
        // rows of whole operands (AVX-512's masked short rows up to 64).
        if (third > 0)
          check([&](T* o) { K::binary<T>(op, 2, bias_shape, x, whole_rows, y, bias_rows, o); },
                [&](std::int64_t i) { return binary_value<Op>(x[i], y[i % third]); }, 3 * third);
      });
    }
    // Rows of [3, n/3] summed into one row, in order from 0 (from n = 16
    // the rows are at least 5 long, which is the row-addition loop).
    const std::int64_t in_shape[] = {3, third}, out_shape[] = {1, third};
    check([&](T* o) { K::sum_to<T>(2, in_shape, y, out_shape, o); },
          [&](std::int64_t j) { return ((T(0) + y[j]) + y[third + j]) + y[2 * third + j]; }, third);
    // An expansion of [1, third] to [3, third]: rows copied whole (AVX-512's
    // masked short rows up to 64).
    if (third > 0)
      check([&](T* o) { K::strided_copy<T>(2, bias_shape, x, bias_rows, o); },
            [&](std::int64_t i) { return x[i % third]; }, 3 * third);
    using Other = std::conditional_t<std::is_same_v<T, float>, double, float>;
    std::vector<Other> converted(static_cast<std::size_t>(n) + 2, Other(-1));
    K::convert<T, Other>(x, converted.data() + 1, n);
    CHECK(converted.front() == Other(-1));
    CHECK(converted.back() == Other(-1));
    for (std::int64_t i = 0; i < n; ++i)
      CHECK(same(converted[static_cast<std::size_t>(i) + 1], static_cast<Other>(x[i])));
  }
}

// A layer's product, C_i = relu(A_i B_i + bias_i), written out: the sum s
// as the small-product kernel forms it (one fused multiply-add chain in
// order; 16 lanes added pairwise for a single column of an untransposed
// A), then s + bias_j and relu, each rounded: what gemm_batched, binary add
// and unary relu give in turn.
template <class T>
std::vector<T> layer_expected(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, const std::vector<T>& a,
                              const std::vector<T>& b, const T* bias, std::int64_t stride_bias, bool relu,
                              std::int64_t count) {
  namespace cpu = mt::kernels::cpu;
  const std::int64_t lda = ta ? m : k, ldb = tb ? k : n;
  std::vector<T> c(static_cast<std::size_t>(count * m * n));
  for (std::int64_t t = 0; t < count; ++t)
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) {
        const int lane_count = n == 1 && !ta ? cpu::kSmallGemvLanes : 1;
        T lanes[cpu::kSmallGemvLanes] = {};
        for (std::int64_t p = 0; p < k; ++p)
          lanes[p % lane_count] = std::fma(a[static_cast<std::size_t>(t * m * k + (ta ? p * lda + i : i * lda + p))],
                                           b[static_cast<std::size_t>(t * k * n + (tb ? j * ldb + p : p * ldb + j))],
                                           lanes[p % lane_count]);
        for (int w = lane_count / 2; w >= 1; w /= 2)
          for (int l = 0; l < w; ++l) lanes[l] += lanes[l + w];
        T v = lanes[0];
        if (bias != nullptr) v = v + bias[t * stride_bias + j];
        c[static_cast<std::size_t>((t * m + i) * n + j)] = relu ? mt::kernels::relu(v) : v;
      }
  return c;
}

// Operands of a batch of `count` layers, with a NaN in A's first entry (a
// row of C stays NaN through the ReLU) and in one bias entry.
template <class T>
void fill_layer_operands(std::vector<T>& a, std::vector<T>& b, std::vector<T>& bias) {
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = T(std::sin(1.0 + static_cast<double>(i)));
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = T(std::cos(2.0 + 0.7 * static_cast<double>(i)));
  for (std::size_t i = 0; i < bias.size(); ++i) bias[i] = T(0.3 * std::sin(5.0 + static_cast<double>(i)));
  a[0] = std::numeric_limits<T>::quiet_NaN();
  bias[bias.size() / 2] = std::numeric_limits<T>::quiet_NaN();
}

// The small-product kernel of one instruction set finishing a layer (bias
// and ReLU in its registers) against layer_expected, bit for bit: full and
// partial tiles, every transpose, a bias per product, one shared (stride
// 0) and none, with and without the ReLU. A single column is refused (the
// engine finishes it separately), as are the widths the kernel refuses.
template <class T>
void check_small_linear_bits(mt::kernels::cpu::SmallGemmIsa isa) {
  namespace cpu = mt::kernels::cpu;
  using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  constexpr std::int64_t count = 3;
  for (const std::int64_t m : {1, 5, 10, 13})
    for (const std::int64_t n : {1, 2, 7, 16, 17, 40, 64})
      for (const std::int64_t k : {1, 8, 40})
        for (const bool ta : {false, true})
          for (const bool tb : {false, true})
            for (const std::int64_t stride_bias : {std::int64_t{-1}, std::int64_t{0}, n})
              for (const bool relu : {false, true}) {
                std::vector<T> a(static_cast<std::size_t>(count * m * k)), b(static_cast<std::size_t>(count * k * n)),
                    bias(static_cast<std::size_t>(count * n));
                fill_layer_operands(a, b, bias);
                const T* bias_ptr = stride_bias < 0 ? nullptr : bias.data();
                const std::int64_t step = stride_bias < 0 ? 0 : stride_bias;
                if (bias_ptr == nullptr && !relu) continue;  // a plain product: check_small_gemm_bits
                std::vector<T> c(static_cast<std::size_t>(count * m * n), T(7));
                const bool taken = cpu::small_linear_batched_with<T>(isa, ta, tb, m, n, k, a.data(), ta ? m : k, m * k,
                                                                     b.data(), tb ? k : n, k * n, c.data(), n, m * n,
                                                                     count, bias_ptr, step, relu);
                REQUIRE(taken == (n >= 2 && n >= cpu::small_gemm_min_columns<T>(isa)));
                if (!taken) {
                  CHECK(c == std::vector<T>(c.size(), T(7)));
                  continue;
                }
                const std::vector<T> expected = layer_expected(ta, tb, m, n, k, a, b, bias_ptr, step, relu, count);
                bool all_same = true;
                for (std::size_t i = 0; i < c.size(); ++i)
                  all_same = all_same && std::bit_cast<Bits>(c[i]) == std::bit_cast<Bits>(expected[i]);
                INFO("m " << m << " n " << n << " k " << k << " ta " << ta << " tb " << tb << " bias stride "
                          << stride_bias << " relu " << relu);
                CHECK(all_same);
              }
}

// The kernel table's linear_batched on every path it has: the small-product
// kernel's epilogue, its refusals (one column; op(B) past the panel, which
// OpenBLAS computes), a shared B and a shared bias, over 1 and 2 threads;
// against gemm_batched, then binary add, then unary relu through the same
// table, bit for bit.
template <class T>
void check_linear_batched_against_separate_passes() {
  using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  struct Case {
    std::int64_t m, n, k, count;
    bool shared_b, shared_bias;
  };
  for (const int threads : {1, 2}) {
    mt::kernels::cpu::set_threads(threads);
    for (const Case cs :
         {Case{10, 40, 40, 25, false, false}, Case{10, 1, 40, 25, false, false}, Case{7, 80, 70, 5, false, false},
          Case{10, 40, 40, 6, true, false}, Case{10, 40, 1, 4, false, true}, Case{3, 5, 4, 1, false, false}})
      for (const bool with_bias : {false, true})
        for (const bool relu : {false, true}) {
          const auto [m, n, k, count, shared_b, shared_bias] = cs;
          std::vector<T> a(static_cast<std::size_t>(count * m * k)), b(static_cast<std::size_t>(count * k * n)),
              bias(static_cast<std::size_t>(count * n));
          fill_layer_operands(a, b, bias);
          const std::int64_t stride_b = shared_b ? 0 : k * n, stride_bias = shared_bias ? 0 : n;
          const T* bias_ptr = with_bias ? bias.data() : nullptr;
          std::vector<T> fused(static_cast<std::size_t>(count * m * n)), separate(fused.size());
          K::linear_batched<T>(m, n, k, a.data(), m * k, b.data(), stride_b, bias_ptr, stride_bias, relu, fused.data(),
                               m * n, count);
          K::gemm_batched<T>(false, false, m, n, k, a.data(), m * k, b.data(), stride_b, separate.data(), m * n, count);
          if (with_bias) {
            const std::int64_t shape[] = {count, m, n}, c_strides[] = {m * n, n, 1},
                               bias_strides[] = {stride_bias, 0, 1};
            const std::vector<T> product = separate;
            K::binary<T>(BinaryOp::add, 3, shape, product.data(), c_strides, bias.data(), bias_strides,
                         separate.data());
          }
          if (relu) K::unary<T>(UnaryOp::relu, separate.data(), separate.data(), count * m * n, 0.0);
          bool all_same = true;
          for (std::size_t i = 0; i < fused.size(); ++i)
            all_same = all_same && std::bit_cast<Bits>(fused[i]) == std::bit_cast<Bits>(separate[i]);
          INFO("threads " << threads << " m " << m << " n " << n << " k " << k << " count " << count << " shared b "
                          << shared_b << " shared bias " << shared_bias << " bias " << with_bias << " relu " << relu);
          CHECK(all_same);
        }
  }
  mt::kernels::cpu::set_threads(1);
}

// gemm_batched_accumulate (C_i += op(A_i) op(B_i), a backward pass adding a
// product into an adjoint) against gemm_batched into a fresh array and then
// binary add, bit for bit, on each path: the small-product kernel (every
// transpose, k = 1, a single column), OpenBLAS (7 x 80 x 70, a single row),
// one product whose rows gemm splits over the threads, a batch sharing B;
// at 1 and 2 threads. Every k here is summed in one pass, as the kernel's
// contract requires for these bits.
template <class T>
void check_gemm_accumulate_against_product_and_add() {
  using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  struct Case {
    std::int64_t m, n, k, count;
    bool trans_a, trans_b, shared_b;
  };
  for (const int threads : {1, 2}) {
    mt::kernels::cpu::set_threads(threads);
    for (const Case cs : {Case{10, 40, 40, 25, false, false, false}, Case{10, 40, 40, 25, false, true, false},
                          Case{40, 40, 10, 25, true, false, false}, Case{40, 40, 10, 25, true, true, false},
                          Case{10, 40, 1, 25, false, true, false}, Case{10, 1, 40, 25, false, false, false},
                          Case{1, 40, 10, 25, true, false, false}, Case{7, 80, 70, 5, false, true, false},
                          Case{3000, 72, 50, 1, false, false, false}, Case{10, 40, 40, 6, false, false, true}}) {
      const auto [m, n, k, count, trans_a, trans_b, shared_b] = cs;
      std::vector<T> a(static_cast<std::size_t>(count * m * k)), b(static_cast<std::size_t>(count * k * n)),
          c(static_cast<std::size_t>(count * m * n));
      fill_layer_operands(a, b, c);
      const std::int64_t stride_b = shared_b ? 0 : k * n;
      std::vector<T> accumulated = c, product(c.size()), separate(c.size());
      K::gemm_batched_accumulate<T>(trans_a, trans_b, m, n, k, a.data(), m * k, b.data(), stride_b, accumulated.data(),
                                    m * n, count);
      K::gemm_batched<T>(trans_a, trans_b, m, n, k, a.data(), m * k, b.data(), stride_b, product.data(), m * n, count);
      const std::int64_t shape[] = {count * m * n}, strides[] = {1};
      K::binary<T>(BinaryOp::add, 1, shape, c.data(), strides, product.data(), strides, separate.data());
      bool all_same = true;
      for (std::size_t i = 0; i < c.size(); ++i)
        all_same = all_same && std::bit_cast<Bits>(accumulated[i]) == std::bit_cast<Bits>(separate[i]);
      INFO("threads " << threads << " m " << m << " n " << n << " k " << k << " count " << count << " trans " << trans_a
                      << trans_b << " shared b " << shared_b);
      CHECK(all_same);
    }
  }
  mt::kernels::cpu::set_threads(1);
}

// binary writing over its first operand (out = a, as an add into an
// adjoint in place) against the same call into a fresh array, bit for bit:
// rows of 1 to 70 entries (every masked tail of the short-row loop, and
// past it), a row of b per task broadcast over the task's rows.
template <class T>
void check_binary_in_place() {
  using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  for (const BinaryOp op : {BinaryOp::add, BinaryOp::mul})
    for (std::int64_t n = 1; n <= 70; ++n) {
      const std::int64_t tasks = 3, rows = 7;
      std::vector<T> a(static_cast<std::size_t>(tasks * rows * n)), b(static_cast<std::size_t>(tasks * n)), unused(1);
      fill_layer_operands(a, b, unused);
      const std::int64_t shape[] = {tasks, rows, n}, a_strides[] = {rows * n, n, 1}, b_strides[] = {n, 0, 1};
      std::vector<T> fresh(a.size()), in_place = a;
      K::binary<T>(op, 3, shape, a.data(), a_strides, b.data(), b_strides, fresh.data());
      K::binary<T>(op, 3, shape, in_place.data(), a_strides, b.data(), b_strides, in_place.data());
      bool all_same = true;
      for (std::size_t i = 0; i < a.size(); ++i)
        all_same = all_same && std::bit_cast<Bits>(in_place[i]) == std::bit_cast<Bits>(fresh[i]);
      INFO("op " << static_cast<int>(op) << " row of " << n);
      CHECK(all_same);
    }
}

// sum_to over rows, [tasks, rows, n] to [tasks, 1, n] (a task-batched
// bias's gradient) and [rows, n] to [1, n], at every row length from 2 to
// 70 (AVX-512's short rows hold up to four vectors of floats, eight of
// doubles, summed side by side): each entry the rows added in order from
// 0, bit for bit, and nothing written past the output. (Rows of one entry
// make the reduced axis the contiguous one, which sum_to folds in double.)
template <class T>
void check_sum_over_rows() {
  using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  const T sentinel = T(-12345.25);
  for (std::int64_t n = 2; n <= 70; ++n)
    for (const std::int64_t tasks : {std::int64_t{1}, std::int64_t{3}}) {
      const std::int64_t rows = 7;
      std::vector<T> x(static_cast<std::size_t>(tasks * rows * n)), unused_b(1), unused_bias(1);
      fill_layer_operands(x, unused_b, unused_bias);
      x[x.size() / 3] = -T(0);
      const std::int64_t in_shape[] = {tasks, rows, n}, out_shape[] = {tasks, 1, n};
      std::vector<T> out(static_cast<std::size_t>(tasks * n) + 2, sentinel);
      K::sum_to<T>(3, in_shape, x.data(), out_shape, out.data() + 1);
      bool all_same = out.front() == sentinel && out.back() == sentinel;
      for (std::int64_t t = 0; t < tasks; ++t)
        for (std::int64_t j = 0; j < n; ++j) {
          T want = T(0);
          for (std::int64_t r = 0; r < rows; ++r) want = want + x[static_cast<std::size_t>((t * rows + r) * n + j)];
          all_same = all_same &&
                     std::bit_cast<Bits>(out[static_cast<std::size_t>(t * n + j) + 1]) == std::bit_cast<Bits>(want);
        }
      INFO(tasks << " tasks, rows of " << n);
      CHECK(all_same);
    }
}

// check(isa) for the small-product kernel of each instruction set this CPU
// and build run; a message names each one skipped.
template <class Check>
void for_each_small_gemm_isa(Check check) {
  namespace cpu = mt::kernels::cpu;
  for (const cpu::SmallGemmIsa isa : {cpu::SmallGemmIsa::avx2, cpu::SmallGemmIsa::avx512}) {
    if (!cpu::cpu_runs(isa)) {
      MESSAGE("skipped the " << cpu::small_gemm_isa_name(isa) << " kernel: this CPU or build lacks it");
      continue;
    }
    INFO("kernel " << cpu::small_gemm_isa_name(isa));
    check(isa);
  }
}

}  // namespace

TEST_SUITE("kernels") {
  TEST_CASE("gemm with a dimension of 1: every transpose and leading dimension, beta 0 ignores NaN") {
    check_gemm_degenerate<float>(1e-5);
    check_gemm_degenerate<double>(1e-13);
  }

  TEST_CASE("the small-product kernels, AVX2 and AVX-512: each entry one fused multiply-add chain, bit for bit") {
    for_each_small_gemm_isa([](mt::kernels::cpu::SmallGemmIsa isa) {
      check_small_gemm_bits<float>(isa);
      check_small_gemm_bits<double>(isa);
    });
  }

  TEST_CASE("the small-product kernels finish a layer: bias and ReLU in the registers, the bits of separate passes") {
    for_each_small_gemm_isa([](mt::kernels::cpu::SmallGemmIsa isa) {
      check_small_linear_bits<float>(isa);
      check_small_linear_bits<double>(isa);
    });
  }

  TEST_CASE("linear_batched equals gemm_batched, binary add and unary relu on every path, at 1 and 2 threads") {
    check_linear_batched_against_separate_passes<float>();
    check_linear_batched_against_separate_passes<double>();
  }

  TEST_CASE("gemm_batched_accumulate equals gemm_batched then binary add on every path, at 1 and 2 threads") {
    check_gemm_accumulate_against_product_and_add<float>();
    check_gemm_accumulate_against_product_and_add<double>();
  }

  TEST_CASE("binary over its first operand equals binary into a fresh array, every row length") {
    check_binary_in_place<float>();
    check_binary_in_place<double>();
  }

  TEST_CASE("sum_to over rows adds them in order from 0, every row length") {
    check_sum_over_rows<float>();
    check_sum_over_rows<double>();
  }

  TEST_CASE("unary kernels on the CPU: overflow-free sigmoid, NaN through relu, pow's exact fast paths") {
    check_unary_special_values<double>();
    check_unary_special_values<float>();
  }

  TEST_CASE("the backward masks of relu and abs are products: an infinite gradient under a zero mask is NaN") {
    const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
    const std::vector<double> g = {inf, 2, nan, inf, -4}, x = {-1, 5, 1, 0, -2};
    std::vector<double> by_step(g.size()), by_sign(g.size());
    K::multiply_by_mask<double>(UnaryOp::step, g.data(), x.data(), by_step.data(), 5);
    K::multiply_by_mask<double>(UnaryOp::sign, g.data(), x.data(), by_sign.data(), 5);
    CHECK(std::isnan(by_step[0]));  // inf · 0
    CHECK(by_step[1] == 2);
    CHECK(std::isnan(by_step[2]));
    CHECK(std::isnan(by_step[3]));  // inf · step(0)
    CHECK(by_step[4] == 0);
    CHECK(by_sign[0] == -inf);
    CHECK(by_sign[1] == 2);
    CHECK(std::isnan(by_sign[2]));
    CHECK(std::isnan(by_sign[3]));  // inf · sign(0)
    CHECK(by_sign[4] == 4);
  }

  TEST_CASE("the element loops' vector copies give every element its formula's bits, tails and offsets included") {
    namespace cpu = mt::kernels::cpu;
    for (const cpu::SmallGemmIsa isa : {cpu::SmallGemmIsa::none, cpu::SmallGemmIsa::avx2, cpu::SmallGemmIsa::avx512}) {
      if (!cpu::cpu_runs(isa)) {
        MESSAGE("skipped the " << cpu::small_gemm_isa_name(isa) << " copy: this CPU or build lacks it");
        continue;
      }
      INFO("copy " << cpu::small_gemm_isa_name(isa));
      const cpu::ElementLoopIsaScope scope(isa);
      CHECK(cpu::element_loop_isa() == isa);
      check_element_loops_bits<float>();
      check_element_loops_bits<double>();
    }
  }

  TEST_CASE("2x2 max-pooling and its adjoint: every copy gives a direct loop's maxima, indices and bits") {
    namespace cpu = mt::kernels::cpu;
    mt::kernels::Window2d window;
    window.kernel_h = window.kernel_w = window.stride_h = window.stride_w = 2;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    // Conv4's map sizes, odd sizes (a column and a row past the windows),
    // and rows of more than 16 windows (two vectors); values on a coarse
    // grid so that windows tie, with signed zeros.
    for (const auto& [h, w] : std::vector<std::pair<std::int64_t, std::int64_t>>{
             {28, 28}, {14, 14}, {7, 7}, {3, 3}, {2, 2}, {5, 9}, {4, 40}, {6, 34}}) {
      CAPTURE(h);
      CAPTURE(w);
      constexpr std::int64_t planes = 6;
      const std::int64_t oh_n = h / 2, ow_n = w / 2, pooled = planes * oh_n * ow_n;
      std::vector<float> x(static_cast<std::size_t>(planes * h * w));
      for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 7919) % 9) - 4.0f;
      for (std::size_t i = 3; i < x.size(); i += 11) x[i] = (i % 2 != 0) ? -0.0f : 0.0f;
      x[static_cast<std::size_t>(2 * h * w + w + 1)] = nan;  // plane 2: the general loop
      // The direct loop: candidates in window order, a later one taking over
      // only if strictly greater, or NaN.
      std::vector<float> want_y(static_cast<std::size_t>(pooled));
      std::vector<std::int64_t> want_index(want_y.size());
      for (std::int64_t p = 0; p < planes; ++p)
        for (std::int64_t oh = 0; oh < oh_n; ++oh)
          for (std::int64_t ow = 0; ow < ow_n; ++ow) {
            std::int64_t best = p * h * w + 2 * oh * w + 2 * ow;
            for (const std::int64_t at : {best + 1, best + w, best + w + 1})
              if (!(x[static_cast<std::size_t>(at)] <= x[static_cast<std::size_t>(best)]) &&
                  !std::isnan(x[static_cast<std::size_t>(best)]))
                best = at;
            const auto o = static_cast<std::size_t>((p * oh_n + oh) * ow_n + ow);
            want_index[o] = best;
            want_y[o] = x[static_cast<std::size_t>(best)];
          }
      std::vector<float> g(want_y.size());
      for (std::size_t i = 0; i < g.size(); ++i) g[i] = (i % 5 == 0) ? -0.0f : 0.25f * static_cast<float>(i % 13) - 1;
      std::vector<float> want_dx(x.size(), 0.0f);
      for (std::size_t i = 0; i < g.size(); ++i) want_dx[static_cast<std::size_t>(want_index[i])] += g[i];
      // Plane 4's first window points at an input of its second: the vector
      // rows give such a plane to the scatter.
      std::vector<std::int64_t> moved = want_index;
      moved[static_cast<std::size_t>(4 * oh_n * ow_n)] = 4 * h * w + (w > 2 ? 2 : w);
      std::vector<float> moved_dx(x.size(), 0.0f);
      for (std::size_t i = 0; i < g.size(); ++i) moved_dx[static_cast<std::size_t>(moved[i])] += g[i];
      for (const cpu::SmallGemmIsa isa :
           {cpu::SmallGemmIsa::none, cpu::SmallGemmIsa::avx2, cpu::SmallGemmIsa::avx512}) {
        if (!cpu::cpu_runs(isa)) continue;
        INFO("copy " << cpu::small_gemm_isa_name(isa));
        const cpu::ElementLoopIsaScope scope(isa);
        std::vector<float> y(want_y.size(), -7.0f), dx(x.size(), -7.0f);
        std::vector<std::int64_t> index(want_index.size(), -1);
        K::max_pool<float>(x.data(), planes, h, w, window, y.data(), index.data());
        CHECK(index == want_index);
        for (std::size_t i = 0; i < y.size(); ++i) CHECK(same(y[i], want_y[i]));
        K::max_unpool<float>(g.data(), index.data(), planes, h, w, window, dx.data());
        for (std::size_t i = 0; i < dx.size(); ++i) CHECK(same(dx[i], want_dx[i]));
        K::max_unpool<float>(g.data(), moved.data(), planes, h, w, window, dx.data());
        for (std::size_t i = 0; i < dx.size(); ++i) CHECK(same(dx[i], moved_dx[i]));
      }
    }
  }

  TEST_CASE("binary kernels broadcast a row across a matrix, for every op") {
    const std::vector<double> a = {1, 2, 3, 4, 5, 6}, b = {10, 20, 30};
    const std::int64_t shape[] = {2, 3}, a_strides[] = {3, 1}, b_strides[] = {0, 1};
    const struct {
      BinaryOp op;
      double (*f)(double, double);
    } cases[] = {{BinaryOp::add, [](double u, double v) { return u + v; }},
                 {BinaryOp::sub, [](double u, double v) { return u - v; }},
                 {BinaryOp::mul, [](double u, double v) { return u * v; }},
                 {BinaryOp::div, [](double u, double v) { return u / v; }}};
    for (const auto& c : cases) {
      std::vector<double> out(6);
      K::binary<double>(c.op, 2, shape, a.data(), a_strides, b.data(), b_strides, out.data());
      for (int i = 0; i < 6; ++i) CHECK(out[i] == c.f(a[i], b[i % 3]));
    }
  }

  TEST_CASE("arg-maxima: the first maximum wins ties, a NaN wins and stays, in reductions and pooling alike") {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    // Rows of x [3, 4] along the middle axis (outer 3, inner 1).
    const std::vector<double> x = {2, 5, 5, 1, 1, nan, 9, nan, -1, -1, -1, -1};
    std::vector<std::int64_t> index(3);
    K::argmax_axis<double>(x.data(), 3, 4, 1, index.data());
    CHECK(index == std::vector<std::int64_t>{1, 5, 8});
    // The same rows as 2 x 2 windows of one 2 x 6 image.
    const std::vector<double> image = {2, 5, 1, nan, -1, -1, 5, 1, 9, nan, -1, -1};
    mt::kernels::Window2d window;
    window.kernel_h = window.kernel_w = window.stride_h = window.stride_w = 2;
    std::vector<std::int64_t> pooled(3);
    std::vector<double> maxima(3);
    K::max_pool<double>(image.data(), 1, 2, 6, window, maxima.data(), pooled.data());
    CHECK(pooled == std::vector<std::int64_t>{1, 3, 4});
    CHECK(maxima[0] == 5);
    CHECK(std::isnan(maxima[1]));
    CHECK(maxima[2] == -1);
    // One row: the 2×2 windows are clipped to it (the general path).
    const std::vector<double> row = {1, 2, 4, 3};
    K::max_pool<double>(row.data(), 1, 1, 4, window, maxima.data(), pooled.data());
    CHECK(std::vector<double>(maxima.begin(), maxima.begin() + 2) == std::vector<double>{2, 4});
    CHECK(std::vector<std::int64_t>(pooled.begin(), pooled.begin() + 2) == std::vector<std::int64_t>{1, 2});
  }

  TEST_CASE("label positions clamp a label outside [0, classes) into it, so reads stay in bounds") {
    const std::vector<std::int64_t> labels = {-3, 1, 9, 3};
    std::vector<std::int64_t> out(4);
    K::label_positions(labels.data(), 4, 4, out.data());
    CHECK(out == std::vector<std::int64_t>{0, 5, 11, 15});
  }

  TEST_CASE("a kernel's failure reaches the caller as the engine's DeviceError, with the kernel's message") {
    const std::string message = "cudaMalloc failed: cudaErrorMemoryAllocation: out of memory";
    CHECK_THROWS_WITH_AS(mt::detail::on_device([&] { throw mt::kernels::KernelError(message); }), message.c_str(),
                         mt::DeviceError);
    // Anything else passes through as it was, and so do results.
    CHECK_THROWS_WITH_AS(mt::detail::on_device([] { throw mt::ValueError("take: index 3"); }), "take: index 3",
                         mt::ValueError);
    CHECK(mt::detail::on_device([] { return 42; }) == 42);
  }
}
