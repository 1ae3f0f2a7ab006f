// Kernel adaptation and Meta-RKHS-I against the identities of
// docs/methods.md §2: on a linear model the three closed forms are ridge
// regression, gradient flow and unrolled SGD; their limits; their exact
// meta-gradients against finite differences; the errors of singular kernels.
#include <doctest/doctest.h>

#include <cmath>

#include "meta_test_util.hpp"
#include "metatape/meta/evaluation.hpp"
#include "metatape/meta/maml.hpp"
#include "metatape/meta/trainer.hpp"
#include "test_util.hpp"

namespace mt = metatape;
namespace meta = metatape::meta;
using mt::DType;
using mt::Tensor;
using mt::testing::relative_error;
using mt::testing::throws_error;

namespace {

constexpr DType f64 = DType::f64;

meta::MetaConfig kernel_config(meta::KernelForm form, double time = 1.0, double ridge = 0.0,
                               meta::KernelMode mode = meta::KernelMode::trace,
                               meta::KernelGradient gradient = meta::KernelGradient::exact) {
  meta::MetaConfig config{.algorithm = meta::Algorithm::kernel, .inner_steps = 3, .inner_lr = 0.05};
  config.kernel = {.form = form, .time = time, .ridge = ridge, .gradient = gradient, .mode = mode};
  return config;
}

// Random regression tasks: x [T, n, dims], y [T, n, outputs].
meta::TaskBatch random_batch(std::int64_t tasks, std::int64_t support, std::int64_t query, std::int64_t dims,
                             std::int64_t outputs, std::uint64_t seed) {
  mt::Generator gen(seed);
  return {mt::normal({tasks, support, dims}, 0, 1, gen, f64), mt::normal({tasks, support, outputs}, 0, 1, gen, f64),
          mt::normal({tasks, query, dims}, 0, 1, gen, f64), mt::normal({tasks, query, outputs}, 0, 1, gen, f64)};
}

// Non-trivial parameters of a model (for a tanh MLP: in its smooth, curved regime).
meta::MetaParams random_params(const meta::Model& model, std::uint64_t seed, double scale = 0.6) {
  mt::Generator gen(seed);
  meta::MetaParams p;
  for (const meta::ParamInfo& info : model.parameters()) p.model.push_back(mt::normal(info.shape, 0, scale, gen, f64));
  return p;
}

Tensor predict(const meta::Model& model, const meta::MetaConfig& config, const meta::MetaParams& p,
               const meta::TaskBatch& batch, meta::Loss loss = meta::Loss::mse) {
  return meta::kernel_adapt(model, loss, config, p, batch).query_prediction;
}

// Features φ(x) = (x, 1) of the linear model f = xᵀw + b: [T, n, dims + 1].
Tensor features(const Tensor& x) { return mt::concat({x, mt::ones({x.dim(0), x.dim(1), 1}, f64)}, 2); }

// The primal (parameter-space) solution of a linear model: f(X) + Φq δ with
// δ = V diag(g(μ)) Vᵀ c Φsᵀ r, for H = c ΦsᵀΦs = V diag(μ) Vᵀ. Gradient flow
// for time t has g(μ) = (1 − e^{−tμ})/μ, ridge regression (ΦsᵀΦs + λI)⁻¹Φsᵀ
// is g(μ) = 1/(μ + cλ). A different route from the dual (kernel) forms: an
// eigendecomposition of the small parameter-space matrix.
Tensor primal_solution(const meta::Model& model, const meta::MetaParams& p, const meta::TaskBatch& batch,
                       const std::function<double(double)>& g) {
  const Tensor phi_s = features(batch.support_x), phi_q = features(batch.query_x);
  const double c = 2.0 / static_cast<double>(batch.support_x.dim(1));
  const Tensor r = batch.support_y - model.forward(p.model, batch.support_x);
  const auto [mu, v] = mt::eigh(c * mt::matmul(phi_s, phi_s, true, false));
  std::vector<double> gv = mu.to_vector();
  for (double& x : gv) x = g(x);
  const Tensor gm = mt::from_vector(gv, mu.shape(), f64);
  const Tensor b = mt::matmul(phi_s, r, true, false) * c;                                    // [T, P, 1]
  const Tensor delta = mt::matmul(v, mt::unsqueeze(gm, 2) * mt::matmul(v, b, true, false));  // [T, P, 1]
  return model.forward(p.model, batch.query_x) + mt::matmul(phi_q, delta);
}

// ‖g − g_fd‖ / ‖g_fd‖ over every coordinate, g the meta-gradient and g_fd
// the central difference of the meta-loss.
double fd_error(const meta::Model& model, meta::Loss loss, const meta::MetaConfig& config, const meta::MetaParams& p,
                const meta::TaskBatch& batch, double eps = 1e-6) {
  const auto value = [&](const std::vector<Tensor>& all) {
    return meta::meta_gradient(model, loss, config, meta::MetaParams{all, {}}, batch, 0).meta_loss;
  };
  const std::vector<Tensor> g = meta::meta_gradient(model, loss, config, p, batch, 0).grads;
  double diff = 0, ref = 0;
  for (std::size_t i = 0; i < p.model.size(); ++i) {
    const std::vector<double> analytic = g[i].to_vector();
    std::vector<double> values = p.model[i].to_vector();
    for (std::size_t j = 0; j < values.size(); ++j) {
      const double saved = values[j];
      std::vector<Tensor> plus = p.model, minus = p.model;
      values[j] = saved + eps;
      plus[i] = mt::from_vector(values, p.model[i].shape(), f64);
      values[j] = saved - eps;
      minus[i] = mt::from_vector(values, p.model[i].shape(), f64);
      values[j] = saved;
      const double numeric = (value(plus) - value(minus)) / (2 * eps);
      diff += (analytic[j] - numeric) * (analytic[j] - numeric);
      ref += numeric * numeric;
    }
  }
  return std::sqrt(diff / ref);
}

// The worst relative error of the meta-gradient along random directions
// against the central difference of the meta-loss (meta_test_util.hpp).
double directional_fd_error(const meta::Model& model, meta::Loss loss, const meta::MetaConfig& config,
                            const meta::MetaParams& p, const meta::TaskBatch& batch, int directions) {
  const auto value = [&](const std::vector<Tensor>& all) {
    return meta::meta_gradient(model, loss, config, meta::MetaParams{all, {}}, batch, 0).meta_loss;
  };
  const std::vector<Tensor> g = meta::meta_gradient(model, loss, config, p, batch, 0).grads;
  return mt::testing::directional_fd_error(value, p.model, g, directions);
}

}  // namespace

TEST_SUITE("kernel-adaptation") {
  TEST_CASE("linear model: ridge is ridge regression, flow is gradient flow, steps is unrolled SGD") {
    const std::int64_t dims = 3;
    const meta::Mlp model({dims, 1});
    const auto batch = random_batch(2, 6, 5, dims, 1, 1);
    const auto p = random_params(model, 2);
    const double c = 2.0 / 6;
    SUBCASE("ridge") {
      const double lambda = 0.3;
      const Tensor expected = primal_solution(model, p, batch, [&](double mu) { return 1.0 / (mu + c * lambda); });
      CHECK(relative_error(predict(model, kernel_config(meta::KernelForm::ridge, 1, lambda), p, batch), expected) <
            1e-12);
    }
    SUBCASE("flow") {
      for (double t : {0.1, 1.0, 7.0}) {
        const Tensor expected =
            primal_solution(model, p, batch, [&](double mu) { return mu > 0 ? -std::expm1(-t * mu) / mu : t; });
        INFO("t = " << t);
        CHECK(relative_error(predict(model, kernel_config(meta::KernelForm::flow, t), p, batch), expected) < 1e-12);
      }
    }
    SUBCASE("steps, one and several outputs, trace and full kernels") {
      for (std::int64_t outputs : {1, 2}) {
        const meta::Mlp wide({dims, outputs});
        const auto tasks = random_batch(2, 6, 5, dims, outputs, 3);
        const auto q = random_params(wide, 4);
        for (int tau : {0, 1, 4}) {
          for (meta::KernelMode mode : {meta::KernelMode::trace, meta::KernelMode::full}) {
            meta::MetaConfig config = kernel_config(meta::KernelForm::steps, 1, 0, mode);
            config.inner_steps = tau;
            meta::MetaConfig maml = config;
            maml.algorithm = meta::Algorithm::maml;
            const auto adapted = meta::adapt(wide, meta::Loss::mse, maml, q, tasks, tau);
            const Tensor expected = wide.forward(adapted.params, tasks.query_x);
            INFO("outputs " << outputs << ", τ = " << tau << ", mode " << std::string(meta::kernel_mode_name(mode)));
            CHECK(relative_error(predict(wide, config, q, tasks), expected) < 1e-12);
          }
        }
      }
    }
  }

  TEST_CASE("limits: t = 0 and λ → ∞ give f_θ; t → ∞ and λ → 0 interpolate the support labels") {
    const meta::Mlp model({2, 8, 1}, meta::Activation::tanh);
    auto batch = random_batch(2, 5, 4, 2, 1, 5);
    const auto p = random_params(model, 6);
    const Tensor f = model.forward(p.model, batch.query_x);
    CHECK(relative_error(predict(model, kernel_config(meta::KernelForm::flow, 0), p, batch), f) == 0);
    CHECK(relative_error(predict(model, kernel_config(meta::KernelForm::ridge, 1, 1e12), p, batch), f) < 1e-9);
    // Query = support: the interpolating limits reproduce the support labels.
    batch.query_x = batch.support_x;
    batch.query_y = batch.support_y;
    const Tensor ridge0 = predict(model, kernel_config(meta::KernelForm::ridge, 1, 0), p, batch);
    CHECK(relative_error(ridge0, batch.support_y) < 1e-8);
    const Tensor long_flow = predict(model, kernel_config(meta::KernelForm::flow, 1e7), p, batch);
    CHECK(relative_error(long_flow, batch.support_y) < 1e-6);
    CHECK(relative_error(long_flow, ridge0) < 1e-6);
    // A short flow moves away from f_θ but does not interpolate.
    CHECK(relative_error(predict(model, kernel_config(meta::KernelForm::flow, 0.1), p, batch), batch.support_y) > 1e-3);
  }

  TEST_CASE("a short flow is one MAML step with α = t, to first order in t") {
    const meta::Mlp model({2, 8, 1}, meta::Activation::tanh);
    const auto batch = random_batch(2, 5, 4, 2, 1, 7);
    const auto p = random_params(model, 8);
    const Tensor f = model.forward(p.model, batch.query_x);
    const auto gap = [&](double t) {
      meta::MetaConfig maml{.algorithm = meta::Algorithm::maml, .inner_steps = 1, .inner_lr = t};
      const Tensor step = model.forward(meta::adapt(model, meta::Loss::mse, maml, p, batch, 1).params, batch.query_x);
      const Tensor flow = predict(model, kernel_config(meta::KernelForm::flow, t), p, batch);
      return std::pair{relative_error(flow, step), relative_error(flow, f)};
    };
    const auto [gap1, move1] = gap(1e-3);
    const auto [gap2, move2] = gap(5e-4);
    CHECK(gap1 < 0.05 * move1);                             // the O(t²) difference is small against the O(t) move
    CHECK(gap1 / gap2 == doctest::Approx(4).epsilon(0.1));  // and shrinks as t²
  }

  TEST_CASE("‖∇θ L‖² = c² rᵀ Ks r for the mean MSE (c = 2/(n'·C))") {
    const meta::Mlp model({2, 6, 2}, meta::Activation::tanh);
    const auto batch = random_batch(1, 5, 1, 2, 2, 9);
    const auto p = random_params(model, 10);
    const Tensor x = mt::squeeze(batch.support_x, 0), y = mt::squeeze(batch.support_y, 0);
    double norm = 0;
    {
      mt::TapeScope scope;
      std::vector<Tensor> leaves;
      for (const Tensor& t : p.model) leaves.push_back(t.detach().requires_grad_());
      for (const Tensor& g : mt::grad(meta::per_task_loss(meta::Loss::mse, model.forward(leaves, x), y), leaves))
        norm += mt::sum(g * g).item();
    }
    const Tensor r = mt::reshape(y - model.forward(p.model, x), {10, 1});
    const Tensor k = meta::empirical_ntk(model, p.model, x, {.mode = meta::KernelMode::full});
    const double c = 2.0 / 10;
    CHECK(norm == doctest::Approx(c * c * mt::matmul(mt::matmul(r, k, true, false), r).item()).epsilon(1e-12));
  }

  TEST_CASE("permuting the support points leaves every form's prediction unchanged") {
    const meta::Mlp model({2, 8, 2}, meta::Activation::tanh);
    const auto batch = random_batch(2, 5, 4, 2, 2, 11);
    const auto p = random_params(model, 12);
    const Tensor order = mt::from_indices({3, 0, 4, 2, 1}, {5});
    auto permuted = batch;
    const auto permute_points = [&](const Tensor& t) {
      return mt::permute(mt::gather_rows(mt::permute(t, {1, 0, 2}), order), {1, 0, 2});
    };
    permuted.support_x = permute_points(batch.support_x);
    permuted.support_y = permute_points(batch.support_y);
    for (meta::KernelMode mode : {meta::KernelMode::trace, meta::KernelMode::full})
      for (const auto& config :
           {kernel_config(meta::KernelForm::ridge, 1, 0.1, mode), kernel_config(meta::KernelForm::flow, 2, 0, mode),
            kernel_config(meta::KernelForm::flow, INFINITY, 0.01, mode),
            kernel_config(meta::KernelForm::steps, 1, 0, mode)}) {
        INFO(std::string(meta::kernel_form_name(config.kernel.form))
             << " " << std::string(meta::kernel_mode_name(mode)));
        const Tensor a = predict(model, config, p, batch), b = predict(model, config, p, permuted);
        CHECK(relative_error(a, b) < 1e-12);
        CHECK(relative_error(a, model.forward(p.model, batch.query_x)) > 1e-3);  // it did adapt
      }
  }

  TEST_CASE("the exact meta-gradient of every form equals the finite difference") {
    const meta::Mlp model({2, 4, 2}, meta::Activation::tanh);
    const auto batch = random_batch(2, 4, 3, 2, 2, 13);
    const auto p = random_params(model, 14);
    for (meta::KernelMode mode : {meta::KernelMode::trace, meta::KernelMode::full})
      for (const auto& config :
           {kernel_config(meta::KernelForm::ridge, 1, 0.1, mode), kernel_config(meta::KernelForm::flow, 0.7, 0, mode),
            kernel_config(meta::KernelForm::flow, INFINITY, 0.05, mode),
            kernel_config(meta::KernelForm::steps, 1, 0, mode)}) {
        INFO(std::string(meta::kernel_form_name(config.kernel.form))
             << " t = " << config.kernel.time << " " << std::string(meta::kernel_mode_name(mode)));
        CHECK(fd_error(model, meta::Loss::mse, config, p, batch) < 1e-6);
      }
  }

  TEST_CASE("kernel_adapt with record differentiates like the meta-gradient; without it nothing is recorded") {
    const meta::Mlp model({2, 5, 1}, meta::Activation::tanh);
    const auto batch = random_batch(2, 4, 3, 2, 1, 28);
    const auto p = random_params(model, 29);
    const auto config = kernel_config(meta::KernelForm::steps);
    const auto expected = meta::meta_gradient(model, meta::Loss::mse, config, p, batch, 0).grads;
    mt::TapeScope scope;
    meta::MetaParams leaves;
    for (const Tensor& t : p.model) leaves.model.push_back(t.detach().requires_grad_());
    const auto recorded = meta::kernel_adapt(model, meta::Loss::mse, config, leaves, batch, true);
    CHECK(relative_error(mt::grad(mt::mean(recorded.query_loss), leaves.model), expected) < 1e-13);
    const auto detached = meta::kernel_adapt(model, meta::Loss::mse, config, leaves, batch);
    CHECK_FALSE(detached.query_prediction.requires_grad());
    CHECK_FALSE(detached.query_loss.requires_grad());
  }

  TEST_CASE("few-shot classification with a small Conv4: the exact meta-gradient along random directions") {
    for (bool batch_norm : {false, true}) {
      const meta::Conv4 model(
          {.in_channels = 1, .image_size = 8, .channels = 3, .classes = 3, .strided = true, .batch_norm = batch_norm});
      mt::Generator gen(30);
      const auto batch = mt::testing::RandomImageTasks({.ways = 3, .channels = 1, .size = 8}).sample(2, 3, 3, gen, f64);
      // Finn et al.'s zero biases leave a dead unit's pre-activation at exactly
      // 0, where ReLU's derivative, hence the kernel, jumps: move off it.
      meta::MetaParams p{model.init(gen, f64), {}};
      for (Tensor& t : p.model) t = t + mt::normal(t.shape(), 0, 0.1, gen, f64);
      for (const auto& config : {kernel_config(meta::KernelForm::flow, 2, 0, meta::KernelMode::full),
                                 kernel_config(meta::KernelForm::ridge, 1, 0.1, meta::KernelMode::trace)}) {
        INFO("batch norm " << batch_norm << ", " << std::string(meta::kernel_form_name(config.kernel.form)));
        CHECK(directional_fd_error(model, meta::Loss::cross_entropy, config, p, batch, 2) < 1e-6);
      }
    }
  }

  TEST_CASE("the fixed-kernel gradient equals the exact one when Θ does not depend on θ, and only then") {
    const auto grads = [](const meta::Model& model, meta::KernelGradient gradient, const meta::MetaParams& p,
                          const meta::TaskBatch& batch) {
      const auto config = kernel_config(meta::KernelForm::flow, 1.5, 0, meta::KernelMode::trace, gradient);
      return meta::meta_gradient(model, meta::Loss::mse, config, p, batch, 0).grads;
    };
    const meta::Mlp linear({3, 1});
    const auto linear_batch = random_batch(2, 5, 4, 3, 1, 15);
    const auto lp = random_params(linear, 16);
    CHECK(relative_error(grads(linear, meta::KernelGradient::fixed, lp, linear_batch),
                         grads(linear, meta::KernelGradient::exact, lp, linear_batch)) < 1e-13);
    const meta::Mlp mlp({3, 6, 1}, meta::Activation::tanh);
    const auto mp = random_params(mlp, 17);
    CHECK(relative_error(grads(mlp, meta::KernelGradient::fixed, mp, linear_batch),
                         grads(mlp, meta::KernelGradient::exact, mp, linear_batch)) > 1e-3);
  }

  TEST_CASE("classification regresses one-hot labels with the MSE") {
    const meta::Mlp model({2, 6, 3}, meta::Activation::tanh);
    auto values = random_batch(2, 6, 4, 2, 3, 19);
    const auto p = random_params(model, 20);
    meta::TaskBatch labelled = values;
    labelled.support_y = mt::from_indices({0, 1, 2, 0, 1, 2, 2, 2, 1, 1, 0, 0}, {2, 6});
    labelled.query_y = mt::from_indices({1, 0, 2, 1, 2, 2, 0, 0}, {2, 4});
    const auto one_hot = [](const std::vector<double>& labels, std::int64_t n) {
      std::vector<double> v(labels.size() * 3, 0.0);
      for (std::size_t i = 0; i < labels.size(); ++i) v[i * 3 + static_cast<std::size_t>(labels[i])] = 1;
      return mt::from_vector(v, {2, n, 3}, f64);
    };
    values.support_y = one_hot(labelled.support_y.to_vector(), 6);
    values.query_y = one_hot(labelled.query_y.to_vector(), 4);
    const auto config = kernel_config(meta::KernelForm::flow, 2, 0, meta::KernelMode::full);
    const auto a = meta::kernel_adapt(model, meta::Loss::cross_entropy, config, p, labelled);
    const auto b = meta::kernel_adapt(model, meta::Loss::mse, config, p, values);
    CHECK(relative_error(a.query_prediction, b.query_prediction) == 0);
    CHECK(relative_error(a.query_loss, b.query_loss) == 0);
    CHECK(fd_error(model, meta::Loss::cross_entropy, config, p, labelled) < 1e-6);
    labelled.query_y = mt::from_indices({1, 0, 3, 1, 2, 2, 0, 0}, {2, 4});
    CHECK(
        throws_error<mt::ValueError>([&] { meta::kernel_adapt(model, meta::Loss::cross_entropy, config, p, labelled); },
                                     {"batch.query_y", "label 3", "[0, 3)"}));
  }

  TEST_CASE("singular support kernels: the ridge form refuses with the condition number, flow stays finite") {
    const meta::Mlp model({2, 8, 1}, meta::Activation::tanh);
    auto batch = random_batch(2, 4, 3, 2, 1, 21);
    const auto p = random_params(model, 22);
    // Task 1's support points 0 and 2 coincide: Ks has two equal rows.
    std::vector<double> xs = batch.support_x.to_vector();
    for (int d = 0; d < 2; ++d) xs[static_cast<std::size_t>(8 + 4 + d)] = xs[static_cast<std::size_t>(8 + d)];
    batch.support_x = mt::from_vector(xs, batch.support_x.shape(), f64);
    CHECK(throws_error<mt::ValueError>([&] { predict(model, kernel_config(meta::KernelForm::ridge, 1, 0), p, batch); },
                                       {"task 1", "condition number", "--ridge"}));
    for (const auto& config :
         {kernel_config(meta::KernelForm::flow, 3), kernel_config(meta::KernelForm::steps),
          kernel_config(meta::KernelForm::ridge, 1, 1e-3), kernel_config(meta::KernelForm::flow, INFINITY, 1e-3)}) {
      const auto step = meta::meta_gradient(model, meta::Loss::mse, config, p, batch, 0);
      CHECK(std::isfinite(step.meta_loss));
      for (const Tensor& g : step.grads)
        for (double v : g.to_vector()) REQUIRE(std::isfinite(v));
    }
    // Nearly coincident points (1e-9 apart) in task 0: Cholesky might factor
    // Ks and solve to noise; the condition number refuses it first.
    for (int d = 0; d < 2; ++d) xs[static_cast<std::size_t>(2 + d)] = xs[static_cast<std::size_t>(6 + d)] + 1e-9;
    for (int d = 0; d < 2; ++d) xs[static_cast<std::size_t>(8 + 4 + d)] += 0.5;  // task 1 regular again
    batch.support_x = mt::from_vector(xs, batch.support_x.shape(), f64);
    CHECK(throws_error<mt::ValueError>([&] { predict(model, kernel_config(meta::KernelForm::ridge, 1, 0), p, batch); },
                                       {"task 0", "condition number", "--ridge"}));
    CHECK_NOTHROW(predict(model, kernel_config(meta::KernelForm::ridge, 1, 1e-6), p, batch));
    // NaN in the targets or the parameters is refused, not returned, by every form.
    auto nan_targets = batch;
    nan_targets.support_y = mt::full(batch.support_y.shape(), NAN, f64);
    CHECK(throws_error<mt::ValueError>(
        [&] { predict(model, kernel_config(meta::KernelForm::flow, 1), p, nan_targets); }, {"task 0", "nan"}));
    CHECK(throws_error<mt::ValueError>([&] { predict(model, kernel_config(meta::KernelForm::steps), p, nan_targets); },
                                       {"task 0", "nan"}));
    auto bad = p;
    bad.model[2] = mt::full(bad.model[2].shape(), NAN, f64);
    CHECK(throws_error<mt::ValueError>([&] { predict(model, kernel_config(meta::KernelForm::flow, 1), bad, batch); }));
    CHECK(throws_error<mt::ValueError>(
        [&] { predict(model, kernel_config(meta::KernelForm::ridge, 1, 1), bad, batch); }));
    CHECK(throws_error<mt::ValueError>([&] { predict(model, kernel_config(meta::KernelForm::steps), bad, batch); }));
  }

  TEST_CASE("kernel configurations: validation and names") {
    using meta::KernelForm;
    const auto refused = [](const meta::MetaConfig& config, std::initializer_list<std::string_view> parts) {
      return throws_error<mt::ValueError>([&] { config.validate(); }, parts);
    };
    CHECK(refused(kernel_config(KernelForm::flow, -1), {"kernel time", ">= 0"}));
    CHECK(refused(kernel_config(KernelForm::flow, NAN), {"kernel time"}));
    CHECK(refused(kernel_config(KernelForm::ridge, 1, -0.1), {"ridge", ">= 0"}));
    CHECK(refused(kernel_config(KernelForm::flow, INFINITY, 0), {"inf", "ridge > 0"}));
    CHECK(refused(kernel_config(KernelForm::flow, 1, 0, meta::KernelMode::diagonal), {"trace or full", "diagonal"}));
    auto msl = kernel_config(KernelForm::flow);
    msl.multi_step_loss = true;
    CHECK(refused(msl, {"multi-step", "kernel"}));
    msl.algorithm = meta::Algorithm::metarkhs1;
    CHECK(refused(msl, {"multi-step", "metarkhs1"}));
    auto lslr = kernel_config(KernelForm::flow);
    lslr.learned_layer_rates = true;
    CHECK(refused(lslr, {"LSLR"}));
    auto rkhs = meta::MetaConfig{.algorithm = meta::Algorithm::metarkhs1};
    rkhs.rkhs_alpha = -1;
    CHECK(refused(rkhs, {"rkhs_alpha"}));
    CHECK_NOTHROW(kernel_config(KernelForm::flow, INFINITY, 1e-3).validate());
    for (KernelForm form : {KernelForm::ridge, KernelForm::flow, KernelForm::steps})
      CHECK(meta::parse_kernel_form(std::string(meta::kernel_form_name(form))) == form);
    for (meta::KernelGradient g : {meta::KernelGradient::exact, meta::KernelGradient::fixed})
      CHECK(meta::parse_kernel_gradient(meta::kernel_gradient_name(g)) == g);
    CHECK(throws_error<mt::ValueError>([] { meta::parse_kernel_form("newton"); }, {"newton", "ridge, flow, steps"}));
    CHECK(throws_error<mt::ValueError>([] { meta::parse_kernel_gradient("stop"); }, {"stop", "exact, fixed"}));
    // Rates belong to Meta-SGD and LSLR; the kernel algorithm learns none.
    const meta::Mlp model({1, 4, 1});
    auto p = random_params(model, 23);
    p.rates = p.model;
    CHECK(throws_error<mt::ValueError>(
        [&] {
          meta::kernel_adapt(model, meta::Loss::mse, kernel_config(KernelForm::flow), p,
                             random_batch(1, 2, 2, 1, 1, 1));
        },
        {"no inner rates"}));
  }

  TEST_CASE("meta-test: the kernel curve is before and after the closed form; adapt refuses the kernel") {
    const meta::Mlp model({1, 8, 1}, meta::Activation::tanh);
    const auto p = random_params(model, 24);
    mt::Generator gen(25);
    const auto batch = meta::SinusoidTasks().sample(4, 5, 6, gen, f64);
    const auto config = kernel_config(meta::KernelForm::flow, 3);
    const auto curve = meta::adaptation_curve(model, meta::Loss::mse, config, p, batch, 10);
    REQUIRE(curve.size() == 2);
    const auto adapted = meta::kernel_adapt(model, meta::Loss::mse, config, p, batch);
    const auto before = meta::per_task_loss(meta::Loss::mse, model.forward(p.model, batch.query_x), batch.query_y);
    CHECK(curve[0] == before.to_vector());
    CHECK(curve[1] == adapted.query_loss.to_vector());
    CHECK(curve[1] != curve[0]);
    // evaluate: the same two rows over its own tasks (drawn as it documents),
    // also with steps = 0, which gives a MAML curve only one row.
    const meta::EvaluationOptions options{.tasks = 6, .shots = 5, .queries = 5, .steps = 0, .chunk = 6};
    const auto summary = meta::evaluate(model, meta::Loss::mse, config, p, meta::SinusoidTasks(), options, f64);
    mt::Generator eval_gen(meta::derive_seed(options.seed, 2));
    const auto eval_batch = meta::SinusoidTasks().sample(6, 5, 5, eval_gen, f64);
    const auto expected = meta::summarize(meta::adaptation_curve(model, meta::Loss::mse, config, p, eval_batch, 0));
    REQUIRE(summary.size() == 2);
    REQUIRE(expected.size() == 2);
    for (std::size_t k = 0; k < 2; ++k) {
      CHECK(summary[k].mean == expected[k].mean);
      CHECK(summary[k].ci95 == expected[k].ci95);
    }
    CHECK(summary[1].mean != summary[0].mean);
    CHECK(throws_error<mt::ValueError>([&] { meta::adapt(model, meta::Loss::mse, config, p, batch, 1); },
                                       {"function space", "kernel_adapt"}));
  }

  TEST_CASE("Meta-RKHS-I: its value is L − α c² rᵀΘr per task and its gradient the finite difference") {
    const meta::Mlp model({2, 5, 1}, meta::Activation::tanh);
    const auto batch = random_batch(3, 3, 2, 2, 1, 26);
    const auto p = random_params(model, 27);
    meta::MetaConfig config{.algorithm = meta::Algorithm::metarkhs1, .inner_lr = 0.05};
    config.rkhs_alpha = 0.3;
    const auto step = meta::meta_gradient(model, meta::Loss::mse, config, p, batch, 0);
    // Direct: on the 5 points of a task, L = mean (f − y)², ∇L = −c Jᵀ r, so
    // ‖∇L‖² = c² rᵀ Θ r with c = 2/5.
    const Tensor x = mt::concat({batch.support_x, batch.query_x}, 1),
                 y = mt::concat({batch.support_y, batch.query_y}, 1);
    const Tensor r = y - model.forward(p.model, x);
    const Tensor k = meta::empirical_ntk(model, p.model, x, {.mode = meta::KernelMode::full});
    const double c = 2.0 / 5;
    const std::vector<double> loss = meta::per_task_loss(meta::Loss::mse, model.forward(p.model, x), y).to_vector();
    const std::vector<double> penalty = mt::matmul(mt::matmul(r, k, true, false), r).to_vector();
    double mean = 0;
    for (std::size_t t = 0; t < 3; ++t) {
      const double expected = loss[t] - config.rkhs_alpha * c * c * penalty[t];
      CHECK(step.task_losses[t] == doctest::Approx(expected).epsilon(1e-12));
      mean += expected / 3;
    }
    CHECK(step.meta_loss == doctest::Approx(mean).epsilon(1e-12));
    CHECK(fd_error(model, meta::Loss::mse, config, p, batch) < 1e-6);
    // At meta-test it fine-tunes by SGD at inner_lr, as the pretrained baseline does.
    meta::MetaConfig pretrain = config;
    pretrain.algorithm = meta::Algorithm::pretrain;
    CHECK(meta::adaptation_curve(model, meta::Loss::mse, config, p, batch, 2) ==
          meta::adaptation_curve(model, meta::Loss::mse, pretrain, p, batch, 2));
  }
}
