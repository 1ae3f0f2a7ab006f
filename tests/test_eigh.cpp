// eigh: the decomposition itself (reconstruction, orthonormality, order,
// known spectra, batches), its errors, and its derivatives: spectral
// functions against finite differences up to third order, eigenvalue losses
// at a repeated eigenvalue, and the symmetric gradient of a non-symmetric
// input.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "gradcheck.hpp"
#include "test_util.hpp"

namespace mt = metatape;
using mt::DType;
using mt::Tensor;

namespace {

constexpr DType f64 = DType::f64;

Tensor eye(std::int64_t n, DType dtype) {
  std::vector<double> values(static_cast<std::size_t>(n * n), 0.0);
  for (std::int64_t i = 0; i < n; ++i) values[static_cast<std::size_t>(i * n + i)] = 1.0;
  return mt::from_vector(values, mt::Shape{n, n}, dtype);
}

Tensor symmetric_part(const Tensor& a) { return 0.5 * (a + mt::transpose(a)); }

// V diag(c) Vᵀ: blind to the eigenvectors' signs.
Tensor spectral(const Tensor& v, const Tensor& c) { return mt::matmul(v * mt::unsqueeze(c, -2), v, false, true); }

// A symmetric positive definite [..., n, n] with eigenvalues in [1, 1 + n]
// about one apart: Q diag(1..n + noise) Qᵀ, Q from eigh of a random matrix.
Tensor spd_distinct(const mt::Shape& shape, mt::Generator& gen) {
  const std::int64_t n = shape[shape.rank() - 1];
  const Tensor q = mt::eigh(mt::normal(shape, 0, 1, gen, f64)).vectors;
  mt::Shape values_shape(shape.dims().first(static_cast<std::size_t>(shape.rank() - 1)));
  std::vector<double> ramp;
  for (std::int64_t i = 0; i < values_shape.numel(); ++i) ramp.push_back(1.0 + static_cast<double>(i % n));
  const Tensor w = mt::from_vector(ramp, values_shape, f64) + mt::uniform(values_shape, -0.2, 0.2, gen, f64);
  return symmetric_part(spectral(q, w));
}

// U diag((expm1(−t w))/w) Uᵀ, t = 0.7: the flow-time matrix function of the
// kernel forms, through the eigenbasis.
Tensor flow_function(const Tensor& a) {
  const mt::EighResult e = mt::eigh(a);
  return spectral(e.vectors, (mt::exp(-0.7 * e.values) - 1.0) / e.values);
}

double max_abs(const Tensor& x) {
  double m = 0;
  for (double v : x.to_vector()) m = std::max(m, std::abs(v));
  return m;
}

void check_decomposition(const Tensor& a, double tol) {
  const mt::EighResult e = mt::eigh(a);
  const std::int64_t n = a.dim(-1);
  REQUIRE(e.values.shape().numel() * n == a.numel());
  CHECK(e.vectors.shape() == a.shape());
  CHECK(max_abs(spectral(e.vectors, e.values) - symmetric_part(a)) <= tol * std::max(1.0, max_abs(a)));
  CHECK(max_abs(mt::matmul(e.vectors, e.vectors, true, false) - eye(n, a.dtype())) <= tol);
  const std::vector<double> w = e.values.to_vector();
  for (std::size_t i = 0; i < w.size(); ++i)
    if (i % static_cast<std::size_t>(n) != 0) CHECK(w[i - 1] <= w[i]);
}

}  // namespace

TEST_SUITE("eigh") {
  TEST_CASE("V diag(w) Vᵀ reproduces A, V is orthonormal, w ascends: single, batched, f32 and f64") {
    mt::Generator gen(11);
    for (const mt::Shape& shape :
         {mt::Shape{1, 1}, mt::Shape{5, 5}, mt::Shape{3, 6, 6}, mt::Shape{2, 3, 4, 4}, mt::Shape{40, 40}}) {
      const Tensor a = symmetric_part(mt::normal(shape, 0, 1, gen, f64));
      INFO(shape.str());
      check_decomposition(a, 1e-12);
      check_decomposition(a.to(DType::f32), 2e-5);
    }
  }

  TEST_CASE("a batch is each matrix decomposed alone") {
    mt::Generator gen(12);
    const Tensor a = symmetric_part(mt::normal({3, 4, 4}, 0, 1, gen, f64));
    const Tensor w = mt::eigh(a).values;
    for (std::int64_t b = 0; b < 3; ++b) {
      const Tensor one = mt::reshape(mt::slice(a, 0, b, b + 1), {4, 4});
      CHECK(mt::testing::same_bits({mt::reshape(mt::slice(w, 0, b, b + 1), {4})}, {mt::eigh(one).values}));
    }
  }

  TEST_CASE("known spectra: a diagonal matrix and the 2 x 2 closed form") {
    const mt::EighResult d = mt::eigh(mt::from_vector({3, 0, 0, 0, -1, 0, 0, 0, 2}, {3, 3}, f64));
    CHECK(d.values.to_vector() == std::vector<double>{-1, 2, 3});
    // Eigenvectors are the unit vectors e2, e3, e1 (up to sign).
    CHECK(mt::square(d.vectors).to_vector() == std::vector<double>{0, 0, 1, 1, 0, 0, 0, 1, 0});
    for (const auto& [p, q, r] : {std::tuple{2.0, 0.5, -1.0}, std::tuple{1.0, 3.0, 1.0}, std::tuple{-4.0, 1e-3, 7.0}}) {
      const mt::EighResult e = mt::eigh(mt::from_vector({p, q, q, r}, {2, 2}, f64));
      const double mid = (p + r) / 2, radius = std::hypot((p - r) / 2, q);
      const std::vector<double> w = e.values.to_vector();
      CHECK(w[0] == doctest::Approx(mid - radius).epsilon(1e-14));
      CHECK(w[1] == doctest::Approx(mid + radius).epsilon(1e-14));
      // (A − w0 I) v0 = 0.
      const std::vector<double> v = e.vectors.to_vector();
      CHECK(std::abs((p - w[0]) * v[0] + q * v[2]) < 1e-13);
    }
  }

  TEST_CASE("a non-symmetric input is read through its symmetric part, and its gradient is symmetric") {
    mt::Generator gen(13);
    const Tensor a = mt::normal({4, 4}, 0, 1, gen, f64);
    const mt::EighResult e = mt::eigh(a), s = mt::eigh(symmetric_part(a));
    CHECK(mt::testing::same_bits({e.values}, {s.values}));
    mt::TapeScope scope;
    Tensor x = a.detach();
    x.requires_grad_();
    const Tensor b = mt::normal({4, 4}, 0, 1, gen, f64);
    const mt::EighResult ex = mt::eigh(x);
    const Tensor loss =
        mt::sum(spectral(ex.vectors, mt::from_vector({1, -2, 0.5, 3}, {4}, f64)) * b) + mt::sum(mt::square(ex.values));
    const Tensor g = mt::grad(loss, x);
    CHECK(mt::testing::same_bits({g}, {mt::transpose(g)}));
    CHECK(max_abs(g) > 0.1);
  }

  TEST_CASE("bad input: shape, dtype, NaN and inf with the batch index, an undefined tensor") {
    using mt::testing::throws_error;
    CHECK(throws_error<mt::ShapeError>([] { mt::eigh(mt::zeros({3}, f64)); }, {"eigh", "[3]", "square"}));
    CHECK(throws_error<mt::ShapeError>([] { mt::eigh(mt::zeros({2, 3, 4}, f64)); }, {"eigh", "[2, 3, 4]"}));
    CHECK(throws_error<mt::DTypeError>([] { mt::eigh(mt::zeros({2, 2}, DType::i64)); }, {"eigh", "i64"}));
    CHECK(throws_error<mt::ValueError>([] { mt::eigh(Tensor{}); }, {"eigh", "undefined"}));
    std::vector<double> values(2 * 3 * 3 * 3, 0.0);
    values[(1 * 3 + 2) * 9 + 1 * 3 + 0] = std::numeric_limits<double>::quiet_NaN();
    const Tensor with_nan = mt::from_vector(values, {2, 3, 3, 3}, f64);
    CHECK(throws_error<mt::ValueError>([&] { mt::eigh(with_nan); },
                                       {"eigh", "batch index [1, 2]", "nan", "row 1, column 0"}));
    CHECK(throws_error<mt::ValueError>(
        [] {
          mt::eigh(mt::from_vector({1, 0, INFINITY, 1}, {2, 2}, DType::f32));
        },
        {"eigh", "inf", "row 1"}));
  }

  TEST_CASE("an empty batch and n = 0") {
    const mt::EighResult e = mt::eigh(mt::zeros({0, 3, 3}, f64));
    CHECK(e.values.shape() == mt::Shape{0, 3});
    const mt::EighResult z = mt::eigh(mt::zeros({2, 0, 0}, f64));
    CHECK(z.vectors.shape() == mt::Shape{2, 0, 0});
  }

  TEST_CASE("the flow function U diag(expm1(-t w)/w) Uᵀ: gradients to third order against finite differences") {
    mt::Generator gen(14);
    for (const mt::Shape& shape : {mt::Shape{4, 4}, mt::Shape{2, 3, 3}}) {
      INFO(shape.str());
      const Tensor a = spd_distinct(shape, gen);
      const mt::testing::Function f = [](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{flow_function(in[0])};
      };
      const auto first = mt::testing::gradcheck(f, {a}, {true});
      INFO(first.message);
      CHECK(first.ok);
      const auto second = mt::testing::gradgradcheck(f, {a}, {true});
      INFO(second.message);
      CHECK(second.ok);
      // Third order: the second-order check of the gradient of a scalar of f.
      const Tensor probe = mt::normal(shape, 0, 1, gen, f64);
      const mt::testing::Function df = [&probe](const std::vector<Tensor>& in) {
        // The finite differences call this on constants: differentiate a copy then.
        const Tensor x = in[0].requires_grad() ? in[0] : in[0].detach().requires_grad_();
        return std::vector<Tensor>{mt::grad(mt::sum(flow_function(x) * probe), x, {.create_graph = true})};
      };
      const auto third = mt::testing::gradgradcheck(df, {a}, {true});
      INFO(third.message);
      CHECK(third.ok);
    }
  }

  TEST_CASE("the flow function in the eigenbasis equals its power series") {
    mt::Generator gen(15);
    const Tensor a = scale(spd_distinct({4, 4}, gen), 0.1);
    // (e^{−tA} − I) A⁻¹ = Σ_{k≥1} (−t)^k A^{k−1} / k!
    Tensor term = eye(4, f64), series = mt::zeros({4, 4}, f64);
    double coefficient = 1;
    for (int k = 1; k < 30; ++k) {
      coefficient *= -0.7 / k;
      series = series + coefficient * term;
      term = mt::matmul(term, a);
    }
    CHECK(mt::testing::relative_error(flow_function(a), series) < 1e-13);
  }

  TEST_CASE("eigenvalue losses at a repeated eigenvalue: I + a rank-1 perturbation") {
    // A = I + 0.3 u uᵀ, ‖u‖ = 1: eigenvalue 1 three times, 1.3 once.
    const Tensor u = mt::from_vector({0.5, -0.5, 0.5, 0.5}, {4, 1}, f64);
    const Tensor uu = mt::matmul(u, u, false, true);
    const Tensor a = eye(4, f64) + 0.3 * uu;
    const std::vector<double> w = mt::eigh(a).values.to_vector();
    CHECK(w[2] - w[0] < 1e-14);
    // tr(A³) = Σ w³ is smooth: gradient 3A²; the largest (simple) eigenvalue
    // has gradient u uᵀ; Σ w + Σ (V Vᵀ ∘ B) has gradient I (V Vᵀ = I), which
    // reaches F at the repeated gaps through V̄.
    mt::Generator gen(16);
    const Tensor b = mt::normal({4, 4}, 0, 1, gen, f64);
    const std::function<Tensor(const Tensor&)> losses[] = {
        [](const Tensor& x) { return mt::sum(mt::pow(mt::eigh(x).values, 3)); },
        [](const Tensor& x) { return mt::sum(mt::slice(mt::eigh(x).values, 0, 3, 4)); },
        [&b](const Tensor& x) {
          const mt::EighResult e = mt::eigh(x);
          return mt::sum(e.values) + mt::sum(mt::matmul(e.vectors, e.vectors, false, true) * b);
        },
    };
    const Tensor expected[] = {3.0 * mt::matmul(a, a), uu, eye(4, f64)};
    for (int k = 0; k < 3; ++k) {
      INFO("loss " << k);
      mt::TapeScope scope;
      Tensor x = a.detach();
      x.requires_grad_();
      const Tensor g = mt::grad(losses[k](x), x);
      CHECK(mt::testing::relative_error(g, expected[k]) < 1e-12);
      const auto check = mt::testing::gradcheck(
          [&](const std::vector<Tensor>& in) { return std::vector<Tensor>{losses[k](in[0])}; }, {a}, {true});
      INFO(check.message);
      CHECK(check.ok);
    }
  }
}
