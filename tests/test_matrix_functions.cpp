// phi1, gradient_flow_operator and sgd_steps_operator: values against an
// eigenbasis reference (eigh with expm1) and against their series, the
// identities they satisfy, their limits, batching, errors, and derivatives up
// to third order, also at singular kernels.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <vector>

#include "gradcheck.hpp"
#include "test_util.hpp"

namespace mt = metatape;
using mt::DType;
using mt::Tensor;
using mt::testing::directional;
using mt::testing::relative_error;
using mt::testing::throws_error;

namespace {

constexpr DType f64 = DType::f64;

Tensor identity(std::int64_t n) {
  std::vector<double> v(static_cast<std::size_t>(n * n), 0.0);
  for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i * n + i)] = 1.0;
  return mt::from_vector(v, {n, n}, f64);
}

// U diag(g(μ)) Uᵀ with g(μ) = −expm1(−tμ)/μ (t at μ = 0) for one symmetric K.
Tensor flow_reference(const Tensor& k, double t) {
  const mt::EighResult e = mt::eigh(k);
  std::vector<double> g = e.values.to_vector();
  for (double& mu : g) mu = mu == 0 ? t : -std::expm1(-t * mu) / mu;
  const auto n = static_cast<std::int64_t>(g.size());
  const Tensor scaled = e.vectors * mt::from_vector(g, {1, n}, f64);
  return mt::matmul(scaled, e.vectors, false, true);
}

// M Mᵀ / n with M [n, rank]: positive semi-definite, singular when rank < n.
Tensor random_psd(std::int64_t n, std::int64_t rank, mt::Generator& gen) {
  const Tensor m = mt::uniform({n, rank}, -1, 1, gen, f64);
  return mt::matmul(m, m, false, true) / static_cast<double>(n);
}

Tensor power(const Tensor& a, std::int64_t k) {
  Tensor p = identity(a.shape()[0]);
  for (std::int64_t i = 0; i < k; ++i) p = mt::matmul(a, p);
  return p;
}

double max_abs(const Tensor& x) {
  double m = 0;
  for (double v : x.to_vector()) m = std::max(m, std::abs(v));
  return m;
}

}  // namespace

TEST_SUITE("matrix-functions") {
  TEST_CASE("gradient_flow_operator matches the eigenbasis form for ‖tK‖ from 1e-3 to 1e3, singular K included") {
    mt::Generator gen(11);
    std::vector<Tensor> kernels = {random_psd(5, 5, gen), random_psd(5, 3, gen), random_psd(4, 1, gen)};
    // A zero eigenvalue on purpose, and duplicate rows (a repeated support point).
    Tensor x = mt::uniform({3, 2}, -1, 1, gen, f64);
    x = mt::concat({x, mt::slice(x, 0, 0, 1)}, 0);
    kernels.push_back(mt::matmul(x, x, false, true));
    for (const Tensor& k : kernels) {
      const double norm = max_abs(k) * static_cast<double>(k.shape()[0]);
      for (double tk : {1e-3, 1e-1, 1.0, 10.0, 1e3}) {
        const double t = tk / norm;
        CAPTURE(t);
        CHECK(relative_error({mt::gradient_flow_operator(k, t)}, {flow_reference(k, t)}) < 1e-12);
      }
    }
  }

  TEST_CASE("phi1 of a non-symmetric matrix equals its series; phi1(0) = I") {
    mt::Generator gen(3);
    const Tensor z = mt::uniform({4, 4}, -0.8, 0.8, gen, f64);
    Tensor term = identity(4), series = identity(4);
    for (int k = 1; k < 60; ++k) {
      term = mt::matmul(z, term) / static_cast<double>(k + 1);
      series = series + term;
    }
    CHECK(relative_error({mt::phi1(z)}, {series}) < 1e-13);
    CHECK(relative_error({mt::phi1(mt::zeros({3, 3}, f64))}, {identity(3)}) == 0);
    // Z φ₁(Z) + I = e^Z, and e^Z e^{−Z} = I.
    const Tensor e = mt::matmul(z, mt::phi1(z)) + identity(4);
    const Tensor e_neg = mt::matmul(-z, mt::phi1(-z)) + identity(4);
    CHECK(relative_error({mt::matmul(e, e_neg)}, {identity(4)}) < 1e-13);
  }

  TEST_CASE("K · sgd_steps_operator = I − (I − αK)^τ; τ = 0 gives 0, τ = 1 gives αI") {
    mt::Generator gen(5);
    const Tensor k = random_psd(4, 2, gen);
    const double alpha = 0.4;
    for (std::int64_t steps : {1, 2, 7, 30}) {
      CAPTURE(steps);
      const Tensor lhs = mt::matmul(k, mt::sgd_steps_operator(k, alpha, steps));
      const Tensor rhs = identity(4) - power(identity(4) - k * alpha, steps);
      CHECK(relative_error({lhs}, {rhs}) < 1e-12);
    }
    CHECK(max_abs(mt::sgd_steps_operator(k, alpha, 0)) == 0);
    CHECK(relative_error({mt::sgd_steps_operator(k, alpha, 1)}, {identity(4) * alpha}) == 0);
    // Small steps approach the flow: τ steps of α = t/τ.
    const double t = 1.5;
    CHECK(relative_error({mt::sgd_steps_operator(k, t / 4000, 4000)}, {mt::gradient_flow_operator(k, t)}) < 1e-3);
  }

  TEST_CASE("limits of the flow: t·I at K = 0 and at t = 0, K⁻¹ as t → ∞, tI − t²K/2 for small t") {
    mt::Generator gen(7);
    const Tensor k = random_psd(4, 4, gen) + identity(4) * 0.5;
    CHECK(relative_error({mt::gradient_flow_operator(mt::zeros({3, 3}, f64), 2.5)}, {identity(3) * 2.5}) == 0);
    CHECK(max_abs(mt::gradient_flow_operator(k, 0.0)) == 0);
    const Tensor inverse = mt::gradient_flow_operator(k, 200.0);
    CHECK(relative_error({mt::matmul(k, inverse)}, {identity(4)}) < 1e-12);
    const double t = 1e-3;
    const Tensor expansion = identity(4) * t - k * (t * t / 2);
    // The next term is t³K²/6: relative error ~t²‖K‖²/6 ≈ 1e-6.
    CHECK(relative_error({mt::gradient_flow_operator(k, t)}, {expansion}) < 1e-5);
  }

  TEST_CASE("a batch [T, n, n] is each matrix alone, though the squarings follow the largest norm in the batch") {
    mt::Generator gen(9);
    const Tensor a = random_psd(3, 3, gen), b = random_psd(3, 1, gen) * 200.0;
    const Tensor batch = mt::stack({a, b});
    const Tensor flow = mt::gradient_flow_operator(batch, 0.3);
    const Tensor steps = mt::sgd_steps_operator(batch, 0.01, 5);
    CHECK(flow.shape() == mt::Shape{2, 3, 3});
    CHECK(relative_error({mt::squeeze(mt::slice(flow, 0, 0, 1), 0)}, {flow_reference(a, 0.3)}) < 1e-12);
    CHECK(relative_error({mt::squeeze(mt::slice(flow, 0, 1, 2), 0)}, {flow_reference(b, 0.3)}) < 1e-12);
    CHECK(relative_error({mt::squeeze(mt::slice(steps, 0, 1, 2), 0)}, {mt::sgd_steps_operator(b, 0.01, 5)}) < 1e-14);
    CHECK(mt::sgd_steps_operator(batch, 0.1, 1).shape() == mt::Shape{2, 3, 3});
  }

  TEST_CASE("first and second derivatives against finite differences, at a singular K") {
    mt::Generator gen(13);
    const Tensor k = random_psd(3, 1, gen);  // rank 1: two zero eigenvalues
    const auto flow = [](const std::vector<Tensor>& in) {
      return std::vector<Tensor>{mt::gradient_flow_operator(in[0], 1.3)};
    };
    const auto steps = [](const std::vector<Tensor>& in) {
      return std::vector<Tensor>{mt::sgd_steps_operator(in[0], 0.3, 5)};
    };
    for (const auto& f : {mt::testing::Function(flow), mt::testing::Function(steps)}) {
      const auto first = mt::testing::gradcheck(f, {k}, {true});
      CHECK_MESSAGE(first.ok, first.message);
      const auto second = mt::testing::gradgradcheck(f, {k}, {true});
      CHECK_MESSAGE(second.ok, second.message);
    }
  }

  TEST_CASE("third directional derivative of a loss through the flow, at a singular K, against differences") {
    mt::Generator gen(17);
    const Tensor k = random_psd(3, 2, gen);
    const Tensor r = mt::uniform({3, 1}, -1, 1, gen, f64);
    const Tensor u = random_psd(3, 3, gen);  // a symmetric direction
    // rᵀ G(K) r, the shape of a kernel-adaptation loss.
    const auto loss = [&](const Tensor& kk) {
      return mt::sum(mt::matmul(r, mt::matmul(mt::gradient_flow_operator(kk, 2.0), r), true, false));
    };
    const double h = 1e-3;
    const double third = directional(loss, k, u, 3);
    const double numeric = (directional(loss, k + u * h, u, 2) - directional(loss, k - u * h, u, 2)) / (2 * h);
    CHECK(std::isfinite(third));
    CHECK(std::abs(third - numeric) <= 1e-6 * (1 + std::abs(numeric)));
  }

  TEST_CASE("bad input: typed errors naming the op and the shape") {
    CHECK(throws_error<mt::ShapeError>([] { mt::phi1(mt::zeros({2, 3}, f64)); }, {"phi1", "[2, 3]"}));
    CHECK(throws_error<mt::ShapeError>([] { mt::gradient_flow_operator(mt::zeros({3}, f64), 1); },
                                       {"gradient_flow_operator", "[3]"}));
    CHECK(throws_error<mt::DTypeError>(
        [] {
          mt::sgd_steps_operator(mt::zeros({2, 2}, DType::i64), 0.1, 2);
        },
        {"sgd_steps_operator", "i64"}));
    CHECK(throws_error<mt::ValueError>([] { mt::gradient_flow_operator(identity(2), -1); }, {"t", ">= 0"}));
    CHECK(throws_error<mt::ValueError>([] { mt::gradient_flow_operator(identity(2), INFINITY); }, {"finite"}));
    CHECK(throws_error<mt::ValueError>([] { mt::sgd_steps_operator(identity(2), 0.1, -1); }, {"steps"}));
    CHECK(throws_error<mt::ValueError>([] { mt::sgd_steps_operator(identity(2), NAN, 3); }, {"alpha"}));
    CHECK(throws_error<mt::ValueError>([] { mt::phi1(identity(2) * NAN); }, {"phi1", "NaN"}));
  }
}
