// The meta-gradient study tools (docs/methods.md §7): Lanczos against dense
// eigendecompositions, the inner- and meta-loss Hessian operators against
// dense Hessians and finite differences, the per-task exact and first-order
// meta-gradients against independent computations and their identities, the
// spread statistics by hand, and analyze() on an MLP and a small Conv4.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "meta_test_util.hpp"
#include "metatape/functional.hpp"
#include "metatape/meta/analysis.hpp"
#include "metatape/meta/meta_ntk.hpp"
#include "test_util.hpp"

namespace mt = metatape;
namespace meta = metatape::meta;
using mt::DType;
using mt::Tensor;
using mt::testing::throws_error;

namespace {

constexpr DType f64 = DType::f64;
using Rows = std::vector<std::vector<double>>;

// --- dense linear algebra for the references ---

// The symmetric matrix a [n, n] (row-major values) as an operator.
meta::SymmetricOperator dense_operator(const std::vector<double>& a, std::int64_t n) {
  return [a, n](const std::vector<double>& v) {
    std::vector<double> y(static_cast<std::size_t>(n), 0.0);
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < n; ++j) y[i] += a[i * n + j] * v[j];
    return y;
  };
}

// Eigenvalues of the symmetric a [n, n], decreasing (the engine's eigh).
std::vector<double> dense_top(const std::vector<double>& a, std::int64_t n) {
  std::vector<double> values = mt::eigh(mt::from_vector(a, {n, n}, f64)).values.to_vector();
  std::reverse(values.begin(), values.end());
  return values;
}

// A random symmetric [n, n] with standard normal entries.
std::vector<double> random_symmetric(std::int64_t n, std::uint64_t seed) {
  mt::Generator gen(seed);
  const Tensor g = mt::normal({n, n}, 0, 1, gen, f64);
  return ((g + mt::transpose(g)) * 0.5).to_vector();
}

std::vector<double> diagonal(const std::vector<double>& d) {
  const std::size_t n = d.size();
  std::vector<double> a(n * n, 0.0);
  for (std::size_t i = 0; i < n; ++i) a[i * n + i] = d[i];
  return a;
}

// The distance from x to the nearest of `values`.
double distance_to_spectrum(double x, const std::vector<double>& values) {
  double best = INFINITY;
  for (double v : values) best = std::min(best, std::abs(x - v));
  return best;
}

double max_abs_difference(const std::vector<double>& a, const std::vector<double>& b) {
  double worst = a.size() == b.size() ? 0.0 : INFINITY;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

// ‖a − b‖ / ‖b‖ over flat vectors.
double relative(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  double diff = 0, ref = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff += (a[i] - b[i]) * (a[i] - b[i]);
    ref += b[i] * b[i];
  }
  return std::sqrt(diff / ref);
}

std::vector<double> flat(const std::vector<Tensor>& ts) {
  std::vector<double> out;
  for (const Tensor& t : ts) {
    const std::vector<double> v = t.to_vector();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

// The Hessian blocks of the functional hessian as one [P, P] row-major matrix.
std::vector<double> assemble(const std::vector<std::vector<Tensor>>& blocks, const std::vector<Tensor>& params) {
  const std::int64_t n = meta::flat_size(params);
  std::vector<double> a(static_cast<std::size_t>(n * n));
  std::int64_t row0 = 0;
  for (std::size_t i = 0; i < params.size(); ++i) {
    std::int64_t col0 = 0;
    for (std::size_t j = 0; j < params.size(); ++j) {
      const std::vector<double> b = blocks[i][j].to_vector();  // [numel_i, numel_j]
      const std::int64_t ni = params[i].numel(), nj = params[j].numel();
      for (std::int64_t r = 0; r < ni; ++r)
        for (std::int64_t c = 0; c < nj; ++c) a[(row0 + r) * n + col0 + c] = b[r * nj + c];
      col0 += nj;
    }
    row0 += params[i].numel();
  }
  return a;
}

// --- the small models ---

struct MlpSetup {
  meta::Mlp model{{1, 6, 6, 1}, meta::Activation::tanh};
  std::vector<Tensor> params = mt::testing::random_meta_params(model, {}, 5).model;
  meta::TaskBatch batch = mt::testing::sinusoid_batch(3, 5, 17);
  double inner_lr = 0.05;
};

// The mean support loss, written out here (independent of analysis.cpp).
Tensor inner_loss(const MlpSetup& s, const std::vector<Tensor>& p) {
  return mt::mean(meta::per_task_loss(meta::Loss::mse, s.model.forward(p, s.batch.support_x), s.batch.support_y));
}

// MAML's meta-loss by a loop over tasks and steps, each inner gradient
// recorded: the reference the meta-loss Hessian is checked against.
Tensor maml_loss(const MlpSetup& s, const std::vector<Tensor>& p, int steps) {
  Tensor total;
  for (std::int64_t t = 0; t < s.batch.tasks(); ++t) {
    const meta::TaskBatch one = s.batch.slice(t, t + 1);
    std::vector<Tensor> fast = p;
    for (int k = 0; k < steps; ++k) {
      const Tensor support =
          mt::mean(meta::per_task_loss(meta::Loss::mse, s.model.forward(fast, one.support_x), one.support_y));
      const std::vector<Tensor> g = mt::grad(support, fast, {.create_graph = true});
      for (std::size_t i = 0; i < fast.size(); ++i) fast[i] = fast[i] - s.inner_lr * g[i];
    }
    const Tensor query =
        mt::mean(meta::per_task_loss(meta::Loss::mse, s.model.forward(fast, one.query_x), one.query_y));
    total = total.defined() ? total + query : query;
  }
  return total * (1.0 / static_cast<double>(s.batch.tasks()));
}

std::vector<double> random_vector(std::int64_t n, std::uint64_t seed) {
  mt::Generator gen(seed);
  return mt::normal({n}, 0, 1, gen, f64).to_vector();
}

// Each task's MAML meta-gradient from meta_gradient on that task alone.
Rows looped_meta_gradients(const MlpSetup& s, meta::Algorithm algorithm, int steps) {
  const meta::MetaConfig config{.algorithm = algorithm, .inner_steps = steps, .inner_lr = s.inner_lr};
  Rows rows;
  for (std::int64_t t = 0; t < s.batch.tasks(); ++t)
    rows.push_back(
        flat(meta::meta_gradient(s.model, meta::Loss::mse, config, {s.params, {}}, s.batch.slice(t, t + 1), 0).grads));
  return rows;
}

}  // namespace

TEST_SUITE("analysis") {
  TEST_CASE("Lanczos: a diagonal spectrum with a gap, and an invariant subspace found early") {
    // 10, 9, 8 above 97 values spread over [0, 1]: 30 steps resolve the top three.
    std::vector<double> d{10, 9, 8};
    for (int i = 0; i < 97; ++i) d.push_back(i / 96.0);
    const auto result = meta::lanczos_top_eigenvalues(dense_operator(diagonal(d), 100), 100,
                                                      {.eigenvalues = 3, .iterations = 30, .seed = 4});
    CHECK(result.iterations == 30);
    CHECK(max_abs_difference(result.eigenvalues, {10, 9, 8}) < 1e-10);
    REQUIRE(result.residuals.size() == 3);
    for (double r : result.residuals) CHECK(r < 1e-8);

    // Three distinct values: the Krylov space is invariant after 3 steps.
    const auto early = meta::lanczos_top_eigenvalues(dense_operator(diagonal({5, 2, 2, -1, 5, 2, -1, 2}), 8), 8,
                                                     {.eigenvalues = 5, .iterations = 8});
    CHECK(early.iterations == 3);
    CHECK(max_abs_difference(early.eigenvalues, {5, 2, -1}) < 1e-12);
    for (double r : early.residuals) CHECK(r < 1e-12);
  }

  TEST_CASE("Lanczos: a random symmetric matrix against its dense eigendecomposition") {
    const std::int64_t n = 40;
    const std::vector<double> a = random_symmetric(n, 8);
    const std::vector<double> exact = dense_top(a, n);
    // The full Krylov space: every Ritz value is an eigenvalue.
    const auto full = meta::lanczos_top_eigenvalues(dense_operator(a, n), n, {.eigenvalues = 6, .iterations = 40});
    CHECK(full.iterations == 40);
    CHECK(max_abs_difference(full.eigenvalues, std::vector<double>(exact.begin(), exact.begin() + 6)) < 1e-10);
    // Fewer steps: each Ritz value lies within its residual bound of the spectrum.
    const auto part = meta::lanczos_top_eigenvalues(dense_operator(a, n), n, {.eigenvalues = 4, .iterations = 15});
    REQUIRE(part.eigenvalues.size() == 4);
    CHECK(std::is_sorted(part.eigenvalues.rbegin(), part.eigenvalues.rend()));
    for (std::size_t i = 0; i < 4; ++i)
      CHECK(distance_to_spectrum(part.eigenvalues[i], exact) <= part.residuals[i] + 1e-12);
    CHECK(std::abs(part.eigenvalues[0] - exact[0]) < 1e-2 * std::abs(exact[0]));
  }

  TEST_CASE("Lanczos: full reorthogonalisation leaves no ghost copy of a converged value") {
    // A dominant 100 over [0, 1] converges in a few steps; without
    // reorthogonalisation it returns as a second copy long before step 60.
    std::vector<double> d{100};
    for (int i = 0; i < 59; ++i) d.push_back(i / 58.0);
    const auto result =
        meta::lanczos_top_eigenvalues(dense_operator(diagonal(d), 60), 60, {.eigenvalues = 2, .iterations = 60});
    REQUIRE(result.eigenvalues.size() == 2);
    CHECK(std::abs(result.eigenvalues[0] - 100) < 1e-10);
    CHECK(std::abs(result.eigenvalues[1] - 1) < 1e-10);
  }

  TEST_CASE("Lanczos: more iterations than the order are capped at it") {
    const std::vector<double> a = random_symmetric(4, 3);
    const auto result = meta::lanczos_top_eigenvalues(dense_operator(a, 4), 4, {.eigenvalues = 6, .iterations = 30});
    CHECK(result.iterations == 4);
    CHECK(max_abs_difference(result.eigenvalues, dense_top(a, 4)) < 1e-12);
    const auto one = meta::lanczos_top_eigenvalues(dense_operator({-3}, 1), 1, {.eigenvalues = 1, .iterations = 5});
    CHECK(max_abs_difference(one.eigenvalues, {-3}) == 0.0);
    // The zero operator: an invariant subspace at once.
    const auto zero = meta::lanczos_top_eigenvalues(dense_operator(std::vector<double>(9, 0.0), 3), 3, {});
    CHECK(zero.iterations == 1);
    CHECK(max_abs_difference(zero.eigenvalues, {0}) == 0.0);
  }

  TEST_CASE("Lanczos: bad arguments and a bad operator are ValueErrors") {
    const auto identity = [](const std::vector<double>& v) { return v; };
    CHECK(throws_error<mt::ValueError>([&] { meta::lanczos_top_eigenvalues(identity, 0, {}); }, {"n", ">= 1", "0"}));
    CHECK(throws_error<mt::ValueError>([&] { meta::lanczos_top_eigenvalues(identity, 5, {.eigenvalues = 0}); },
                                       {"eigenvalues (k)", "0"}));
    CHECK(throws_error<mt::ValueError>(
        [&] { meta::lanczos_top_eigenvalues(identity, 5, {.eigenvalues = 4, .iterations = 3}); },
        {"iterations (m)", "m = 3", "k = 4"}));
    CHECK(throws_error<mt::ValueError>([&] { meta::lanczos_top_eigenvalues({}, 5, {}); }, {"operator", "empty"}));
    const auto short_result = [](const std::vector<double>& v) { return std::vector<double>(v.size() - 1, 1.0); };
    CHECK(throws_error<mt::ValueError>([&] { meta::lanczos_top_eigenvalues(short_result, 5, {}); },
                                       {"returned 4 values", "of 5", "iteration 1"}));
    int calls = 0;
    const auto nan_later = [&](const std::vector<double>& v) {
      std::vector<double> y = v;
      for (std::size_t i = 0; i < y.size(); ++i) y[i] *= static_cast<double>(i + 1);
      if (++calls == 2) y[1] = std::numeric_limits<double>::quiet_NaN();
      return y;
    };
    CHECK(throws_error<mt::ValueError>([&] { meta::lanczos_top_eigenvalues(nan_later, 5, {}); },
                                       {"non-finite", "iteration 2"}));
  }

  TEST_CASE("the inner-loss Hessian operator equals the dense Hessian; Lanczos on it its eigendecomposition") {
    const MlpSetup s;
    const std::int64_t n = meta::flat_size(s.params);
    CHECK(n == 6 + 6 + 36 + 6 + 6 + 1);
    const std::vector<double> dense = assemble(
        mt::hessian([&](const std::vector<Tensor>& p) { return inner_loss(s, p); }, s.params, {.flatten = true}),
        s.params);
    const meta::SymmetricOperator op = meta::inner_loss_hessian(s.model, meta::Loss::mse, s.params, s.batch);
    const std::vector<double> v = random_vector(n, 3);
    CHECK(relative(op(v), dense_operator(dense, n)(v)) < 1e-12);

    const std::vector<double> exact = dense_top(dense, n);
    const auto full = meta::lanczos_top_eigenvalues(op, n, {.eigenvalues = 3, .iterations = static_cast<int>(n)});
    CHECK(max_abs_difference(full.eigenvalues, {exact[0], exact[1], exact[2]}) < 1e-9 * std::abs(exact[0]));
    const auto part = meta::lanczos_top_eigenvalues(op, n, {.eigenvalues = 3, .iterations = 20});
    for (std::size_t i = 0; i < part.eigenvalues.size(); ++i)
      CHECK(distance_to_spectrum(part.eigenvalues[i], exact) <= part.residuals[i] + 1e-10);
    CHECK(std::abs(part.eigenvalues[0] - exact[0]) < 1e-6 * std::abs(exact[0]));
  }

  TEST_CASE("the meta-loss Hessian operator equals the dense Hessian of MAML's loss and differences of its gradient") {
    const MlpSetup s;
    const std::int64_t n = meta::flat_size(s.params);
    for (int steps : {1, 2}) {
      INFO("τ = " << steps);
      const std::vector<double> dense =
          assemble(mt::hessian([&](const std::vector<Tensor>& p) { return maml_loss(s, p, steps); }, s.params,
                               {.flatten = true}),
                   s.params);
      const meta::SymmetricOperator op =
          meta::meta_loss_hessian(s.model, meta::Loss::mse, s.params, s.batch, s.inner_lr, steps);
      const std::vector<double> v = random_vector(n, 11);
      const std::vector<double> hv = op(v);
      CHECK(relative(hv, dense_operator(dense, n)(v)) < 1e-10);

      // The central difference of meta_gradient (maml.hpp) along v.
      const meta::MetaConfig config{.algorithm = meta::Algorithm::maml, .inner_steps = steps, .inner_lr = s.inner_lr};
      const double eps = 1e-5;
      const auto gradient_at = [&](double t) {
        std::vector<Tensor> p;
        std::size_t offset = 0;
        for (const Tensor& q : s.params) {
          std::vector<double> values = q.to_vector();
          for (double& x : values) x += t * v[offset++];
          p.push_back(mt::from_vector(values, q.shape(), f64));
        }
        return flat(meta::meta_gradient(s.model, meta::Loss::mse, config, {p, {}}, s.batch, 0).grads);
      };
      const std::vector<double> plus = gradient_at(eps), minus = gradient_at(-eps);
      std::vector<double> fd(plus.size());
      for (std::size_t i = 0; i < fd.size(); ++i) fd[i] = (plus[i] - minus[i]) / (2 * eps);
      CHECK(relative(hv, fd) < 1e-6);

      const std::vector<double> exact = dense_top(dense, n);
      const auto full = meta::lanczos_top_eigenvalues(op, n, {.eigenvalues = 3, .iterations = static_cast<int>(n)});
      CHECK(max_abs_difference(full.eigenvalues, {exact[0], exact[1], exact[2]}) < 1e-9 * std::abs(exact[0]));
    }
  }

  TEST_CASE("the Hessian operators: float32 parameters, τ = 0, and errors") {
    const MlpSetup s;
    const std::int64_t n = meta::flat_size(s.params);
    std::vector<Tensor> p32;
    for (const Tensor& p : s.params) p32.push_back(p.to(DType::f32));
    meta::TaskBatch b32 = s.batch;
    for (Tensor* t : {&b32.support_x, &b32.support_y, &b32.query_x, &b32.query_y}) *t = t->to(DType::f32);
    const std::vector<double> v = random_vector(n, 5);
    const auto op64 = meta::meta_loss_hessian(s.model, meta::Loss::mse, s.params, s.batch, s.inner_lr, 1);
    const auto op32 = meta::meta_loss_hessian(s.model, meta::Loss::mse, p32, b32, s.inner_lr, 1);
    CHECK(relative(op32(v), op64(v)) < 1e-4);

    // No inner step: the meta-loss is the query loss, whose Hessian this is too.
    meta::TaskBatch swapped = s.batch;
    std::swap(swapped.support_x, swapped.query_x);
    std::swap(swapped.support_y, swapped.query_y);
    CHECK(relative(meta::meta_loss_hessian(s.model, meta::Loss::mse, s.params, s.batch, s.inner_lr, 0)(v),
                   meta::inner_loss_hessian(s.model, meta::Loss::mse, s.params, swapped)(v)) < 1e-12);

    CHECK(throws_error<mt::ValueError>([&] { op64(std::vector<double>(3, 1.0)); },
                                       {"meta_loss_hessian", "3 values", std::to_string(n)}));
    CHECK(throws_error<mt::ValueError>(
        [&] { meta::meta_loss_hessian(s.model, meta::Loss::mse, s.params, s.batch, -0.1, 1); }, {"inner_lr"}));
    CHECK(throws_error<mt::ValueError>(
        [&] { meta::meta_loss_hessian(s.model, meta::Loss::mse, s.params, s.batch, 0.1, -1); }, {"inner_steps", "-1"}));
    meta::TaskBatch bad = s.batch;
    bad.support_y = mt::zeros({3, 5, 2}, f64);
    CHECK(throws_error<mt::ShapeError>([&] { meta::inner_loss_hessian(s.model, meta::Loss::mse, s.params, bad); },
                                       {"inner_loss_hessian", "support_y"}));
    std::vector<Tensor> missing(s.params.begin(), s.params.end() - 1);
    CHECK(throws_error<mt::Error>([&] { meta::inner_loss_hessian(s.model, meta::Loss::mse, missing, s.batch); },
                                  {"inner_loss_hessian"}));
  }

  TEST_CASE(
      "per-task meta-gradients equal one-task meta_gradient calls, finite differences and the adapted query gradient") {
    const MlpSetup s;
    for (int steps : {1, 2}) {
      INFO("τ = " << steps);
      const Rows g = meta::task_meta_gradients(s.model, meta::Loss::mse, s.params, s.batch, s.inner_lr, steps, false);
      const Rows f = meta::task_meta_gradients(s.model, meta::Loss::mse, s.params, s.batch, s.inner_lr, steps, true);
      const Rows g_loop = looped_meta_gradients(s, meta::Algorithm::maml, steps);
      const Rows f_loop = looped_meta_gradients(s, meta::Algorithm::fomaml, steps);
      REQUIRE(g.size() == 3);
      REQUIRE(f.size() == 3);
      const meta::MetaConfig maml{.algorithm = meta::Algorithm::maml, .inner_steps = steps, .inner_lr = s.inner_lr};
      const meta::Adapted adapted = meta::adapt(s.model, meta::Loss::mse, maml, {s.params, {}}, s.batch, steps);
      for (std::int64_t t = 0; t < 3; ++t) {
        CHECK(relative(g[t], g_loop[t]) < 1e-12);
        CHECK(relative(f[t], f_loop[t]) < 1e-12);
        const meta::TaskBatch one = s.batch.slice(t, t + 1);
        // g_t is the gradient of task t's own meta-loss.
        const auto task_loss = [&](const std::vector<Tensor>& p) {
          const meta::Adapted a = meta::adapt(s.model, meta::Loss::mse, maml, {p, {}}, one, steps);
          return meta::per_task_loss(meta::Loss::mse, s.model.forward(a.params, one.query_x), one.query_y).item();
        };
        std::vector<Tensor> g_tensors;
        std::size_t offset = 0;
        for (const Tensor& p : s.params) {
          g_tensors.push_back(
              mt::from_vector(std::span<const double>(g[t].data() + offset, p.numel()), p.shape(), f64));
          offset += static_cast<std::size_t>(p.numel());
        }
        CHECK(mt::testing::directional_fd_error(task_loss, s.params, g_tensors, 3) < 1e-6);
        // f_t is the query loss's gradient at the adapted parameters θ_t^τ.
        mt::TapeScope scope;
        std::vector<Tensor> at;
        for (const Tensor& p : adapted.params) at.push_back(mt::squeeze(mt::slice(p, 0, t, t + 1), 0).requires_grad_());
        const Tensor query = meta::per_task_loss(meta::Loss::mse, s.model.forward(at, one.query_x), one.query_y);
        CHECK(relative(f[t], flat(mt::grad(mt::sum(query), at))) < 1e-12);
      }
    }
  }

  TEST_CASE("one inner step: exact = (I − α H_t) first-order, with H_t task t's inner-loss Hessian") {
    // dθ'/dθ = I − α∇²L(θ; support_t) is symmetric, so g_t = (I − αH_t) f_t:
    // the second-order term in isolation (docs/methods.md §1).
    const MlpSetup s;
    const Rows g = meta::task_meta_gradients(s.model, meta::Loss::mse, s.params, s.batch, s.inner_lr, 1, false);
    const Rows f = meta::task_meta_gradients(s.model, meta::Loss::mse, s.params, s.batch, s.inner_lr, 1, true);
    for (std::int64_t t = 0; t < 3; ++t) {
      const std::vector<double> hf =
          meta::inner_loss_hessian(s.model, meta::Loss::mse, s.params, s.batch.slice(t, t + 1))(f[t]);
      std::vector<double> expected = f[t];
      for (std::size_t i = 0; i < expected.size(); ++i) expected[i] -= s.inner_lr * hf[i];
      CHECK(relative(g[t], expected) < 1e-12);
      CHECK(relative(g[t], f[t]) > 1e-3);  // the term is not negligible here
    }
  }

  TEST_CASE("exact and first order agree without an inner step or with α = 0") {
    const MlpSetup s;
    for (auto [lr, steps] : {std::pair{s.inner_lr, 0}, std::pair{0.0, 2}}) {
      INFO("α = " << lr << ", τ = " << steps);
      const meta::MetaGradientComparison c =
          meta::compare_meta_gradients(s.model, meta::Loss::mse, s.params, s.batch, lr, steps);
      REQUIRE(c.cosine.size() == 3);
      for (std::size_t t = 0; t < 3; ++t) {
        CHECK(std::abs(c.cosine[t] - 1) < 1e-14);
        CHECK(c.norm_ratio[t] == 1.0);
        CHECK(c.exact_norm[t] == c.first_order_norm[t]);
        CHECK(c.exact_norm[t] > 0);
      }
      CHECK(std::abs(c.mean_cosine - 1) < 1e-14);
      CHECK(c.mean_norm_ratio == 1.0);
      CHECK(c.exact_variance == c.first_order_variance);
      CHECK(c.exact_snr == c.first_order_snr);
    }
    const meta::MetaGradientComparison c =
        meta::compare_meta_gradients(s.model, meta::Loss::mse, s.params, s.batch, s.inner_lr, 2);
    CHECK(c.mean_cosine < 1 - 1e-6);
  }

  TEST_CASE("the spread statistics by hand") {
    // g: (1,0), (0,1), (2,2): mean (1,1); deviations (0,−1), (−1,0), (1,1):
    // Σ‖·‖² = 4, variance 4/(3−1) = 2, SNR ‖(1,1)‖²/(2/3) = 3.
    // f: (1,0), (1,0), (1,0): mean (1,0), variance 0, SNR +inf.
    const Rows g{{1, 0}, {0, 1}, {2, 2}};
    const Rows f{{1, 0}, {1, 0}, {1, 0}};
    const meta::MetaGradientComparison c = meta::summarize_meta_gradients(g, f);
    CHECK(max_abs_difference(c.exact_norm, {1, 1, std::sqrt(8.0)}) < 1e-15);
    CHECK(max_abs_difference(c.first_order_norm, {1, 1, 1}) == 0.0);
    CHECK(max_abs_difference(c.cosine, {1, 0, std::sqrt(0.5)}) < 1e-15);
    CHECK(max_abs_difference(c.norm_ratio, {1, 1, 1 / std::sqrt(8.0)}) < 1e-15);
    CHECK(std::abs(c.mean_cosine - std::sqrt(0.5)) < 1e-15);
    CHECK(std::abs(c.mean_norm_ratio - 1 / std::sqrt(2.0)) < 1e-15);
    CHECK(std::abs(c.exact_variance - 2) < 1e-15);
    CHECK(std::abs(c.exact_snr - 3) < 1e-14);
    CHECK(c.first_order_variance == 0.0);
    CHECK(c.first_order_snr == INFINITY);
    // One task: no spread.
    const meta::MetaGradientComparison one = meta::summarize_meta_gradients({{3, 4}}, {{3, 4}});
    CHECK(one.exact_variance == 0.0);
    CHECK(one.exact_snr == INFINITY);
    CHECK(one.mean_cosine == 1.0);
    CHECK(std::isnan(meta::summarize_meta_gradients({{0, 0}}, {{1, 0}}).cosine[0]));

    CHECK(throws_error<mt::ValueError>([&] { meta::summarize_meta_gradients({}, {}); }, {"0 exact", "0 first-order"}));
    CHECK(throws_error<mt::ValueError>(
        [&] {
          meta::summarize_meta_gradients({{1, 0}, {1}}, {{1, 0}, {1, 0}});
        },
        {"task 1", "1 (exact)", "2 (first order)"}));
  }

  TEST_CASE("compare_meta_gradients on a 3-task batch: its statistics from the per-task gradients") {
    const MlpSetup s;
    const meta::MetaGradientComparison c =
        meta::compare_meta_gradients(s.model, meta::Loss::mse, s.params, s.batch, s.inner_lr, 1);
    const Rows g = looped_meta_gradients(s, meta::Algorithm::maml, 1);
    const Rows f = looped_meta_gradients(s, meta::Algorithm::fomaml, 1);
    const auto norm = [](const std::vector<double>& a) {
      double x = 0;
      for (double v : a) x += v * v;
      return std::sqrt(x);
    };
    const auto dot = [](const std::vector<double>& a, const std::vector<double>& b) {
      double x = 0;
      for (std::size_t i = 0; i < a.size(); ++i) x += a[i] * b[i];
      return x;
    };
    std::vector<double> gm(g[0].size()), fm(g[0].size());
    for (std::size_t i = 0; i < gm.size(); ++i) {
      gm[i] = (g[0][i] + g[1][i] + g[2][i]) / 3;
      fm[i] = (f[0][i] + f[1][i] + f[2][i]) / 3;
    }
    // The mean is the batch's MAML meta-gradient.
    const meta::MetaConfig maml{.algorithm = meta::Algorithm::maml, .inner_steps = 1, .inner_lr = s.inner_lr};
    CHECK(relative(gm, flat(meta::meta_gradient(s.model, meta::Loss::mse, maml, {s.params, {}}, s.batch, 0).grads)) <
          1e-12);
    double variance = 0;
    for (const auto& row : g)
      for (std::size_t i = 0; i < gm.size(); ++i) variance += (row[i] - gm[i]) * (row[i] - gm[i]) / 2;
    for (std::size_t t = 0; t < 3; ++t) {
      CHECK(std::abs(c.cosine[t] - dot(g[t], f[t]) / (norm(g[t]) * norm(f[t]))) < 1e-12);
      CHECK(std::abs(c.norm_ratio[t] - norm(f[t]) / norm(g[t])) < 1e-12);
    }
    CHECK(std::abs(c.mean_cosine - dot(gm, fm) / (norm(gm) * norm(fm))) < 1e-12);
    CHECK(std::abs(c.exact_variance - variance) < 1e-12 * variance);
    CHECK(std::abs(c.exact_snr - dot(gm, gm) / (variance / 3)) < 1e-12 * c.exact_snr);

    CHECK(throws_error<mt::ValueError>(
        [&] { meta::compare_meta_gradients(s.model, meta::Loss::mse, s.params, s.batch, s.inner_lr, -1); },
        {"inner_steps", "-1"}));
    CHECK(throws_error<mt::ValueError>(
        [&] { meta::compare_meta_gradients(s.model, meta::Loss::mse, s.params, s.batch, NAN, 1); }, {"inner_lr"}));
    std::vector<Tensor> nan_params = s.params;
    nan_params[0] = mt::full(nan_params[0].shape(), NAN, f64);
    CHECK(throws_error<mt::ValueError>(
        [&] { meta::compare_meta_gradients(s.model, meta::Loss::mse, nan_params, s.batch, s.inner_lr, 1); },
        {"task 0", "not finite"}));
  }

  TEST_CASE("analyze: an MLP regression batch, every stage, consistent with the separate calls") {
    const MlpSetup s;
    std::vector<std::string> seen;
    const meta::AnalysisOptions options{
        .inner_lr = s.inner_lr,
        .inner_steps = 2,
        .lanczos = {.eigenvalues = 3, .iterations = 12, .seed = 7},
        .meta_ntk_ridge = 1e-3,
        .progress = [&](const char* stage, int index, int count) {
          seen.push_back(std::string(stage) + " " + std::to_string(index) + "/" + std::to_string(count));
        }};
    const meta::Analysis a = meta::analyze(s.model, meta::Loss::mse, s.params, s.batch, options);
    CHECK(seen ==
          std::vector<std::string>{"meta-gradients 0/4", "inner Hessian 1/4", "meta Hessian 2/4", "meta-NTK 3/4"});

    const meta::MetaGradientComparison c =
        meta::compare_meta_gradients(s.model, meta::Loss::mse, s.params, s.batch, s.inner_lr, 2);
    CHECK(a.gradients.cosine == c.cosine);
    CHECK(a.gradients.norm_ratio == c.norm_ratio);
    CHECK(a.gradients.exact_snr == c.exact_snr);
    CHECK(a.gradients.first_order_variance == c.first_order_variance);
    const std::int64_t n = meta::flat_size(s.params);
    const auto inner = meta::lanczos_top_eigenvalues(
        meta::inner_loss_hessian(s.model, meta::Loss::mse, s.params, s.batch), n, options.lanczos);
    const auto outer = meta::lanczos_top_eigenvalues(
        meta::meta_loss_hessian(s.model, meta::Loss::mse, s.params, s.batch, s.inner_lr, 2), n, options.lanczos);
    CHECK(a.inner_hessian.eigenvalues == inner.eigenvalues);
    CHECK(a.inner_hessian.residuals == inner.residuals);
    CHECK(a.meta_hessian.eigenvalues == outer.eigenvalues);
    CHECK(a.meta_hessian.eigenvalues != a.inner_hessian.eigenvalues);
    const meta::MetaNtkResult phi = meta::meta_ntk(
        s.model, s.params, s.batch, {.inner_lr = s.inner_lr, .inner_steps = 2, .ridge = options.meta_ntk_ridge});
    CHECK(a.meta_ntk_eigenvalues == phi.eigenvalues);
    CHECK(a.meta_ntk_eigenvalues.size() == 15);  // 3 tasks × 5 query points
    CHECK(a.meta_ntk_ridge == 1e-3);
    CHECK(a.meta_ntk_condition == phi.condition_number);
    CHECK(std::isfinite(a.meta_ntk_condition));
    CHECK(a.meta_ntk_condition >= 1);

    // The costly stages off.
    seen.clear();
    meta::AnalysisOptions light = options;
    light.hessians = false;
    light.meta_ntk = false;
    const meta::Analysis b = meta::analyze(s.model, meta::Loss::mse, s.params, s.batch, light);
    CHECK(seen == std::vector<std::string>{"meta-gradients 0/1"});
    CHECK(b.gradients.cosine == c.cosine);
    CHECK(b.inner_hessian.eigenvalues.empty());
    CHECK(b.meta_hessian.eigenvalues.empty());
    CHECK(b.meta_ntk_eigenvalues.empty());
    CHECK(std::isnan(b.meta_ntk_condition));

    // Bad options are refused before the first stage.
    seen.clear();
    meta::AnalysisOptions bad = options;
    bad.lanczos.iterations = 1;
    CHECK(throws_error<mt::ValueError>([&] { meta::analyze(s.model, meta::Loss::mse, s.params, s.batch, bad); },
                                       {"iterations (m)"}));
    bad = options;
    bad.meta_ntk_ridge = -1;
    CHECK(throws_error<mt::ValueError>([&] { meta::analyze(s.model, meta::Loss::mse, s.params, s.batch, bad); },
                                       {"ridge"}));
    bad = options;
    bad.inner_lr = INFINITY;
    CHECK(throws_error<mt::ValueError>([&] { meta::analyze(s.model, meta::Loss::mse, s.params, s.batch, bad); },
                                       {"inner_lr"}));
    CHECK(seen.empty());
  }

  TEST_CASE("analyze: a small Conv4 on a classification batch, float32 parameters") {
    const meta::Conv4 model({.in_channels = 1, .image_size = 16, .channels = 2, .classes = 3});
    mt::Generator gen(29);
    const meta::TaskBatch batch =
        mt::testing::RandomImageTasks({.ways = 3, .size = 16}).sample(2, 3, 3, gen, DType::f32);
    const std::vector<Tensor> params = model.init(gen, DType::f32);
    const meta::AnalysisOptions options{
        .inner_lr = 0.1, .inner_steps = 1, .lanczos = {.eigenvalues = 2, .iterations = 6}};
    const meta::Analysis a = meta::analyze(model, meta::Loss::cross_entropy, params, batch, options);
    const auto all_finite = [](const std::vector<double>& v) {
      return std::all_of(v.begin(), v.end(), [](double x) { return std::isfinite(x); });
    };
    const meta::MetaGradientComparison& g = a.gradients;
    CHECK(g.cosine.size() == 2);
    CHECK(all_finite(g.cosine));
    CHECK(all_finite(g.norm_ratio));
    CHECK(all_finite(g.exact_norm));
    CHECK(all_finite(g.first_order_norm));
    for (double x : g.cosine) CHECK(std::abs(x) <= 1 + 1e-12);
    CHECK(all_finite(
        {g.mean_cosine, g.mean_norm_ratio, g.exact_variance, g.first_order_variance, g.exact_snr, g.first_order_snr}));
    CHECK(a.inner_hessian.eigenvalues.size() == 2);
    CHECK(a.meta_hessian.eigenvalues.size() == 2);
    CHECK(all_finite(a.inner_hessian.eigenvalues));
    CHECK(all_finite(a.meta_hessian.eigenvalues));
    CHECK(all_finite(a.meta_hessian.residuals));
    CHECK(a.meta_ntk_eigenvalues.size() == 2 * 3);  // trace mode: one row per query image
    CHECK(all_finite(a.meta_ntk_eigenvalues));
    CHECK(std::isfinite(a.meta_ntk_condition));
    // The per-task gradients against a one-task meta_gradient each (float32).
    for (const bool first_order : {false, true}) {
      const Rows rows = meta::task_meta_gradients(model, meta::Loss::cross_entropy, params, batch, 0.1, 1, first_order);
      const meta::MetaConfig config{.algorithm = first_order ? meta::Algorithm::fomaml : meta::Algorithm::maml,
                                    .inner_steps = 1,
                                    .inner_lr = 0.1};
      for (std::int64_t t = 0; t < 2; ++t) {
        INFO("first order " << first_order << ", task " << t);
        const auto step =
            meta::meta_gradient(model, meta::Loss::cross_entropy, config, {params, {}}, batch.slice(t, t + 1), 0);
        CHECK(relative(rows[t], flat(step.grads)) < 1e-5);
      }
    }
  }
}
