// The softmax family (log_softmax, softmax, cross_entropy, logsumexp) against
// a long-double reference at large logits, its invariance under shifting all
// logits by one constant, and the zero derivatives of shift-invariant losses
// to third order.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "metatape/engine.hpp"
#include "test_util.hpp"

namespace mt = metatape;
using mt::DType;
using mt::Tensor;

namespace {

constexpr DType f64 = DType::f64, f32 = DType::f32;

double unit_roundoff(DType dtype) { return dtype == f64 ? 0x1p-53 : 0x1p-24; }

// `value` rounded to `dtype`, as from_vector will store it.
double representable(double value, DType dtype) {
  return dtype == f64 ? value : static_cast<double>(static_cast<float>(value));
}

// rows x classes logits centre + U(-4, 4), rounded to `dtype`.
std::vector<double> logits_near(double centre, std::int64_t rows, std::int64_t classes, DType dtype,
                                std::uint64_t seed) {
  mt::Generator gen(seed);
  std::vector<double> x(static_cast<std::size_t>(rows * classes));
  for (double& v : x) v = representable(centre + 8 * (gen.uniform01() - 0.5), dtype);
  return x;
}

// One row in long double, from the stored (rounded) logits.
struct RowReference {
  std::vector<long double> log_softmax;
  long double logsumexp;
};
RowReference reference_row(const double* x, std::int64_t n) {
  long double max = x[0], sum = 0;
  for (std::int64_t i = 1; i < n; ++i) max = std::max<long double>(max, x[i]);
  for (std::int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<long double>(x[i]) - max);
  RowReference r;
  r.logsumexp = max + std::log(sum);
  for (std::int64_t i = 0; i < n; ++i) r.log_softmax.push_back((static_cast<long double>(x[i]) - max) - std::log(sum));
  return r;
}

// The k-th derivative of f at the scalar t0, by k nested grads with create_graph.
std::vector<double> derivatives(const std::function<Tensor(const Tensor&)>& f, double t0, DType dtype, int order) {
  mt::TapeScope scope;
  Tensor t = mt::scalar(t0, dtype);
  t.requires_grad_();
  Tensor d = f(t);
  std::vector<double> result;
  for (int k = 0; k < order; ++k) {
    d = mt::grad(d, t, {.create_graph = true});
    result.push_back(d.item());
  }
  return result;
}

// The public take_along_last names itself in its errors; naming another op
// (cross_entropy does) is internal, not a parameter callers see.
template <class T>
concept takes_a_caller_name = requires(const T& x) {
  mt::take_along_last(x, x, "caller");
};
static_assert(!takes_a_caller_name<Tensor>);

}  // namespace

TEST_SUITE("softmax-numerics") {
  // The error of each output is bounded by a few units of rounding of the
  // shifted values (x - max and log Σ exp(x - max)), whatever the size of x:
  // the bound is the same at logits near 1 and near 1e8.
  TEST_CASE("log_softmax, softmax, cross_entropy and logsumexp match a long-double reference at large logits") {
    const std::int64_t rows = 6, classes = 7;
    for (DType dtype : {f64, f32}) {
      const double u = unit_roundoff(dtype);
      for (double centre : {1.0, 1e4, 1e8, -1e8}) {
        INFO(std::string(mt::dtype_name(dtype)) << " logits near " << centre);
        const std::vector<double> values = logits_near(centre, rows, classes, dtype, 7);
        const Tensor x = mt::from_vector(values, {rows, classes}, dtype);
        std::vector<std::int64_t> labels;
        for (std::int64_t r = 0; r < rows; ++r) labels.push_back((3 * r + 1) % classes);
        const std::vector<double> logp = mt::log_softmax(x, 1).to_vector(), p = mt::softmax(x, 1).to_vector(),
                                  lse = mt::logsumexp(x, 1).to_vector();
        const double ce = mt::cross_entropy(x, mt::from_indices(labels, {rows})).item();
        long double ce_ref = 0, ce_scale = 0;
        for (std::int64_t r = 0; r < rows; ++r) {
          const RowReference ref = reference_row(values.data() + r * classes, classes);
          for (std::int64_t c = 0; c < classes; ++c) {
            const std::size_t at = static_cast<std::size_t>(r * classes + c);
            const long double y = ref.log_softmax[static_cast<std::size_t>(c)];
            INFO("row " << r << ", class " << c);
            CHECK(std::fabs(static_cast<double>(logp[at] - y)) <= 4 * u * (1 + std::fabs(static_cast<double>(y))));
            CHECK(std::fabs(static_cast<double>(p[at] - std::exp(y))) <=
                  8 * u * (1 + std::fabs(static_cast<double>(y))) * static_cast<double>(std::exp(y)));
          }
          // logsumexp grows with the logits, so its accuracy is relative.
          const long double l = ref.logsumexp;
          CHECK(std::fabs(static_cast<double>(lse[static_cast<std::size_t>(r)] - l)) <=
                4 * u * std::max(1.0, std::fabs(static_cast<double>(l))));
          const long double picked = ref.log_softmax[static_cast<std::size_t>(labels[static_cast<std::size_t>(r)])];
          ce_ref -= picked / rows;
          ce_scale = std::max(ce_scale, std::fabs(picked));
        }
        CHECK(std::fabs(static_cast<double>(ce - ce_ref)) <= 8 * u * (1 + static_cast<double>(ce_scale)));
      }
    }
  }

  // With logits and shift exactly representable, x + c - (max + c) is the
  // same floating-point number as x - max, so every value and derivative is
  // bit for bit the same.
  TEST_CASE("shifting all logits by a constant changes no value and no derivative, bit for bit") {
    const std::int64_t rows = 3, classes = 5;
    const Tensor labels = mt::from_indices({4, 0, 2}, {rows});
    std::vector<double> base;  // multiples of 1/8 in [-4, 4]: exact after any of the shifts below
    for (std::int64_t i = 0; i < rows * classes; ++i) base.push_back(static_cast<double>((i * 37) % 65 - 32) / 8);
    const Tensor direction = mt::from_vector(logits_near(0, rows, classes, f64, 3), {rows, classes}, f64);
    for (DType dtype : {f64, f32}) {
      const std::vector<double> shifts =
          dtype == f64 ? std::vector<double>{1e8, -1e8, 0x1p45, -3e12} : std::vector<double>{0x1p20, -0x1p20, 1e5};
      // Every value, first and second derivative (Hessian-vector products) of each op at x + c.
      const auto evaluate = [&](double c) {
        std::vector<double> shifted = base;
        for (double& v : shifted) v += c;
        mt::TapeScope scope;
        Tensor x = mt::from_vector(shifted, {rows, classes}, dtype);
        x.requires_grad_();
        const Tensor v = direction.to(dtype);
        std::vector<Tensor> out = {mt::log_softmax(x, 1), mt::softmax(x, 1), mt::cross_entropy(x, labels)};
        const std::vector<Tensor> losses = {mt::sum(out[0] * v), mt::sum(out[1] * v), out[2],
                                            mt::sum(mt::logsumexp(x, 1) * mt::reshape(mt::slice(v, 1, 0, 1), {rows}))};
        for (const Tensor& loss : losses) {
          const Tensor g = mt::grad(loss, x, {.create_graph = true});
          out.push_back(g);
          out.push_back(mt::grad(mt::sum(g * v), x));
        }
        return out;
      };
      const std::vector<Tensor> at_zero = evaluate(0);
      for (double c : shifts) {
        const std::vector<Tensor> at_c = evaluate(c);
        for (std::size_t i = 0; i < at_zero.size(); ++i) {
          INFO(std::string(mt::dtype_name(dtype)) << ", shift " << c << ", output " << i);
          CHECK(mt::testing::same_bits({at_c[i]}, {at_zero[i]}));
        }
      }
    }
  }

  // cross_entropy([u, u]) is log 2 for every u, so all its derivatives
  // through u(x) = (-1.49269 / x)^5 vanish; at x = 0.3969, u ≈ -749 and
  // u' ≈ 9.4e3, so an error of one rounding of |u| in the log-probabilities
  // would come back amplified by u'^3 ≈ 8e11 in the third derivative.
  TEST_CASE("cross_entropy of two equal logits has zero derivatives to third order") {
    const auto loss = [](const Tensor& x) {
      const Tensor u = mt::pow(-1.49269 / x, 5.0);
      const Tensor logits = mt::reshape(mt::stack({u, u}), {1, 2});
      return mt::cross_entropy(logits, mt::from_indices({0}, {1}));
    };
    for (DType dtype : {f64, f32}) {
      const std::vector<double> d = derivatives(loss, 0.3969, dtype, 3);
      for (int k = 0; k < 3; ++k) {
        INFO(std::string(mt::dtype_name(dtype)) << ", derivative " << k + 1);
        CHECK(d[static_cast<std::size_t>(k)] == 0.0);
      }
    }
  }

  // Σ_i w_i log_softmax(x + s 1)_i does not depend on s. Its s-derivatives
  // are Σw (1 - Σp) and relatives, which in floating point are not exactly 0
  // (Σp is 1 up to about one rounding per class) but bounded independently
  // of the size of x.
  TEST_CASE("a loss of log_softmax(x + s) has zero s-derivatives to third order, whatever the size of x") {
    const std::int64_t classes = 6;
    for (DType dtype : {f64, f32}) {
      const double u = unit_roundoff(dtype);
      for (double centre : {0.0, 1e4, 1e8}) {
        const Tensor x = mt::from_vector(logits_near(centre, 1, classes, dtype, 5), {classes}, dtype);
        const Tensor w = mt::from_vector(logits_near(0, 1, classes, f64, 9), {classes}, dtype);
        const double w_norm = mt::sum(mt::abs(w)).item();
        const auto loss = [&](const Tensor& s) { return mt::sum(w * mt::log_softmax(x + s)); };
        const std::vector<double> d = derivatives(loss, 0.0, dtype, 3);
        for (int k = 0; k < 3; ++k) {
          INFO(std::string(mt::dtype_name(dtype)) << ", logits near " << centre << ", derivative " << k + 1);
          CHECK(std::fabs(d[static_cast<std::size_t>(k)]) <= 2 * classes * u * w_norm);
        }
      }
    }
  }
}
