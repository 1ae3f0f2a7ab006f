// Derivatives beyond the second: closed forms and finite differences of
// lower-order derivatives, on compositions of ops.
#include <doctest/doctest.h>

#include <cmath>

#include "test_util.hpp"

namespace mt = metatape;
using mt::DType;
using mt::Tensor;

namespace {

using mt::testing::directional;

constexpr DType f64 = DType::f64;

double dot(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += mt::sum(a[i] * b[i]).item();
  return s;
}

// Rosenbrock in n dimensions: Σ 100 (x_{i+1} - x_i²)² + (1 - x_i)².
Tensor rosenbrock(const Tensor& x) {
  const std::int64_t n = x.dim(0);
  const Tensor head = mt::slice(x, 0, 0, n - 1), tail = mt::slice(x, 0, 1, n);
  return mt::sum(100.0 * mt::square(tail - mt::square(head)) + mt::square(1.0 - head));
}

// Its Hessian in closed form.
std::vector<std::vector<double>> rosenbrock_hessian(const std::vector<double>& x) {
  const std::size_t n = x.size();
  std::vector<std::vector<double>> h(n, std::vector<double>(n, 0.0));
  for (std::size_t i = 0; i < n; ++i) {
    if (i + 1 < n) {
      h[i][i] += 1200 * x[i] * x[i] - 400 * x[i + 1] + 2;
      h[i][i + 1] = h[i + 1][i] = -400 * x[i];
    }
    if (i > 0) h[i][i] += 200;
  }
  return h;
}

}  // namespace

TEST_SUITE("higher-order") {
  TEST_CASE("derivatives of order 1 to 4 of tanh(a x) match their closed forms") {
    const double a = 1.7;
    for (double x0 : {-1.3, -0.2, 0.0, 0.45, 2.0}) {
      mt::TapeScope scope;
      Tensor x = mt::scalar(x0, f64);
      x.requires_grad_();
      const double t = std::tanh(a * x0), s = 1 - t * t;
      const double expected[] = {a * s, -2 * a * a * t * s, -2 * a * a * a * s * (1 - 3 * t * t),
                                 8 * a * a * a * a * t * s * (2 - 3 * t * t)};
      Tensor d = mt::tanh(a * x);
      for (int order = 1; order <= 4; ++order) {
        d = mt::grad(d, x, {.create_graph = true});
        INFO("x = " << x0 << ", order " << order);
        CHECK(d.item() == doctest::Approx(expected[order - 1]).epsilon(1e-12));
      }
    }
  }

  TEST_CASE("the Hessian of Rosenbrock's function matches its closed form") {
    const std::vector<double> x0 = {-1.2, 1.0, 0.3, 2.1, -0.7};
    const auto expected = rosenbrock_hessian(x0);
    mt::TapeScope scope;
    Tensor x = mt::from_vector(x0, {5}, f64);
    x.requires_grad_();
    const Tensor g = mt::grad(rosenbrock(x), x, {.create_graph = true});
    for (std::int64_t i = 0; i < 5; ++i) {
      const Tensor row = mt::grad(mt::reshape(mt::slice(g, 0, i, i + 1), mt::Shape{}), x);
      const std::vector<double> got = row.to_vector();
      for (std::size_t j = 0; j < 5; ++j) {
        INFO("H[" << i << "][" << j << "]");
        CHECK(got[j] == doctest::Approx(expected[static_cast<std::size_t>(i)][j]).epsilon(1e-13));
      }
    }
  }

  TEST_CASE("a Hessian-vector product by double backward matches a finite difference of gradients") {
    mt::Generator gen(3);
    const Tensor x = mt::uniform({16, 3}, -1, 1, gen, f64), y = mt::uniform({16, 2}, -1, 1, gen, f64);
    const std::vector<Tensor> theta = {mt::normal({3, 8}, 0, 0.8, gen, f64), mt::normal({8}, 0, 0.1, gen, f64),
                                       mt::normal({8, 2}, 0, 0.8, gen, f64)};
    std::vector<Tensor> v;
    for (const Tensor& t : theta) v.push_back(mt::normal(t.shape(), 0, 1, gen, f64));
    const auto loss = [&](const std::vector<Tensor>& p) {
      return mt::mse_loss(mt::matmul(mt::sigmoid(mt::matmul(x, p[0]) + p[1]), p[2]), y);
    };
    const auto gradient = [&](const std::vector<Tensor>& at) {
      mt::TapeScope scope;
      std::vector<Tensor> p;
      for (const Tensor& t : at) p.push_back(t.detach().requires_grad_());
      return mt::grad(loss(p), p);
    };
    std::vector<Tensor> hv;
    {
      mt::TapeScope scope;
      std::vector<Tensor> p;
      for (const Tensor& t : theta) p.push_back(t.detach().requires_grad_());
      const auto g = mt::grad(loss(p), p, {.create_graph = true});
      Tensor gv = mt::sum(g[0] * v[0]) + mt::sum(g[1] * v[1]) + mt::sum(g[2] * v[2]);
      hv = mt::grad(gv, p);
    }
    const double eps = 1e-5;
    std::vector<Tensor> plus, minus;
    for (std::size_t i = 0; i < theta.size(); ++i) {
      plus.push_back(theta[i] + eps * v[i]);
      minus.push_back(theta[i] - eps * v[i]);
    }
    const auto gp = gradient(plus), gm = gradient(minus);
    for (std::size_t i = 0; i < theta.size(); ++i) {
      const Tensor fd = (gp[i] - gm[i]) / (2 * eps);
      INFO("parameter " << i);
      CHECK(mt::testing::relative_error(hv[i], fd) < 1e-8);
    }
    // And the quadratic form agrees with the second difference of the loss.
    const double second = (loss(plus).item() - 2 * loss(theta).item() + loss(minus).item()) / (eps * eps);
    CHECK(dot(hv, v) == doctest::Approx(second).epsilon(1e-4));
  }

  TEST_CASE("batch_norm_max_pool2d has the bits of max_pool2d after batch_norm: values, gradients, second order") {
    // Task-batched [T, N, C, H, W] with an affine per task and the fused
    // ReLU, as Conv4 has it. 7 × 6 maps go through whole tensors on the
    // CPU, 21 × 20 maps one at a time both ways; odd H leaves a row out of
    // every window.
    const std::int64_t sizes[][2] = {{7, 6}, {21, 20}};
    for (const DType dtype : {DType::f32, f64})
      for (const auto& [h, w] : sizes) {
        CAPTURE(dtype);
        CAPTURE(h);
        mt::Generator gen(17);
        const Tensor x0 = mt::normal({2, 3, 4, h, w}, 0, 1, gen, dtype);
        const Tensor gamma0 = mt::uniform({2, 4}, 0.5, 1.5, gen, dtype);
        const Tensor beta0 = mt::uniform({2, 4}, -0.5, 0.5, gen, dtype);
        const Tensor weights = mt::normal({2, 3, 4, h / 2, w / 2}, 0, 1, gen, dtype);
        const mt::BatchNormOptions options{.eps = 1e-3, .group_axes = 1, .relu = true};
        // Σ weights·pooled, its gradient (recorded), and the gradient of Σ gradient².
        const auto derivatives = [&](bool fused) {
          mt::TapeScope scope;
          std::vector<Tensor> p = {x0.detach().requires_grad_(), gamma0.detach().requires_grad_(),
                                   beta0.detach().requires_grad_()};
          const Tensor pooled = fused ? mt::batch_norm_max_pool2d(p[0], p[1], p[2], options)
                                      : mt::max_pool2d(mt::batch_norm(p[0], p[1], p[2], options), {.kernel = 2});
          const Tensor loss = mt::sum(pooled * weights);
          const std::vector<Tensor> plain = mt::grad(loss, p);
          const std::vector<Tensor> first = mt::grad(loss, p, {.create_graph = true});
          Tensor squares = mt::sum(mt::square(first[0]));
          for (std::size_t i = 1; i < first.size(); ++i) squares = squares + mt::sum(mt::square(first[i]));
          std::vector<Tensor> all = {pooled.detach()};
          for (const Tensor& t : plain) all.push_back(t);
          for (const Tensor& t : first) all.push_back(t.detach());
          for (const Tensor& t : mt::grad(squares, p, {.allow_unused = true})) all.push_back(t);  // β's is zero
          return all;
        };
        CHECK(mt::testing::same_bits(derivatives(true), derivatives(false)));
      }
  }

  TEST_CASE("third directional derivatives of composites match differences of second ones") {
    mt::Generator gen(11);
    const Tensor w = mt::normal({4, 3}, 0, 0.7, gen, f64);
    const Tensor labels = mt::from_indices({0, 2, 1, 1, 0}, {5});
    const std::vector<std::pair<const char*, std::function<Tensor(const Tensor&)>>> cases = {
        {"sum tanh(x W)", [&](const Tensor& x) { return mt::sum(mt::tanh(mt::matmul(x, w))); }},
        {"cross_entropy(x W)", [&](const Tensor& x) { return mt::cross_entropy(mt::matmul(x, w), labels); }},
        {"take_along_last of rank-3 log-probabilities",
         [&](const Tensor& x) {
           const Tensor logp = mt::log_softmax(mt::reshape(mt::matmul(x, w), {5, 1, 3}), 2);
           return mt::sum(mt::square(mt::take_along_last(logp, mt::reshape(labels, {5, 1}))));
         }},
        {"logsumexp of a softmax-weighted sum",
         [&](const Tensor& x) { return mt::sum(mt::logsumexp(mt::softmax(x, 1) * x, 1)); }},
        {"batch_norm then sigmoid",
         [&](const Tensor& x) {
           return mt::sum(mt::sigmoid(mt::batch_norm(x, mt::ones({4}, f64), mt::zeros({4}, f64))) * x);
         }},
    };
    const Tensor x0 = mt::uniform({5, 4}, -1, 1, gen, f64), u = mt::normal({5, 4}, 0, 1, gen, f64);
    // Fourth-order central differences: truncation error O(h⁴).
    const double h = 1e-4;
    const auto derivative_of = [&](const std::function<Tensor(const Tensor&)>& f, int order) {
      const auto at = [&](double t) { return directional(f, x0 + t * u, u, order); };
      return (at(-2 * h) - 8 * at(-h) + 8 * at(h) - at(2 * h)) / (12 * h);
    };
    for (const auto& [name, f] : cases) {
      INFO(std::string(name));
      CHECK(directional(f, x0, u, 3) == doctest::Approx(derivative_of(f, 2)).epsilon(1e-8).scale(1.0));
      CHECK(directional(f, x0, u, 2) == doctest::Approx(derivative_of(f, 1)).epsilon(1e-8).scale(1.0));
    }
  }

  TEST_CASE("mixed partials of x² y³ to third order") {
    mt::TapeScope scope;
    Tensor x = mt::scalar(1.5, f64), y = mt::scalar(-0.8, f64);
    x.requires_grad_();
    y.requires_grad_();
    const Tensor f = mt::square(x) * mt::pow(y, 3.0);
    const auto g = mt::grad(f, {x, y}, {.create_graph = true});    // 2x y³, 3x² y²
    const Tensor fxy = mt::grad(g[0], y, {.create_graph = true});  // 6x y²
    const Tensor fxyy = mt::grad(fxy, y, {.create_graph = true});  // 12x y
    const Tensor fxxyy = mt::grad(fxyy, x);                        // 12 y
    CHECK(g[0].item() == doctest::Approx(2 * 1.5 * std::pow(-0.8, 3)));
    CHECK(g[1].item() == doctest::Approx(3 * 1.5 * 1.5 * 0.64));
    CHECK(fxy.item() == doctest::Approx(6 * 1.5 * 0.64));
    CHECK(fxyy.item() == doctest::Approx(12 * 1.5 * -0.8));
    CHECK(fxxyy.item() == doctest::Approx(12 * -0.8));
  }
}
