// MAML and its variants against finite differences of the outer loss and the
// identities of docs/methods.md §1.
#include <doctest/doctest.h>

#include <cmath>

#include "meta_test_util.hpp"
#include "metatape/meta/maml.hpp"
#include "metatape/meta/optim.hpp"
#include "metatape/meta/trainer.hpp"
#include "test_util.hpp"

namespace mt = metatape;
namespace meta = metatape::meta;
using mt::DType;
using mt::Tensor;

namespace {

using mt::testing::random_meta_params;
using mt::testing::sinusoid_batch;

constexpr DType f64 = DType::f64;

struct Setup {
  const meta::Model& model;
  meta::Loss loss;
  meta::MetaConfig config;
  meta::MetaParams params;
  meta::TaskBatch batch;
};

double meta_loss_at(const Setup& s, const std::vector<Tensor>& all) {
  return meta::meta_gradient(s.model, s.loss, s.config, meta::MetaParams::from_all(all, s.params.model.size()), s.batch,
                             0)
      .meta_loss;
}

// ‖g − g_fd‖ / ‖g_fd‖ with g_fd the central difference of the outer loss in
// every coordinate of every meta-parameter.
double full_fd_error(const Setup& s, double eps = 1e-6) {
  const std::vector<Tensor> all = s.params.all();
  const std::vector<Tensor> g = meta::meta_gradient(s.model, s.loss, s.config, s.params, s.batch, 0).grads;
  double diff = 0, ref = 0;
  for (std::size_t i = 0; i < all.size(); ++i) {
    const std::vector<double> analytic = g[i].to_vector();
    std::vector<double> values = all[i].to_vector();
    for (std::size_t j = 0; j < values.size(); ++j) {
      const double saved = values[j];
      std::vector<Tensor> plus = all, minus = all;
      values[j] = saved + eps;
      plus[i] = mt::from_vector(values, all[i].shape(), f64);
      values[j] = saved - eps;
      minus[i] = mt::from_vector(values, all[i].shape(), f64);
      values[j] = saved;
      const double numeric = (meta_loss_at(s, plus) - meta_loss_at(s, minus)) / (2 * eps);
      diff += (analytic[j] - numeric) * (analytic[j] - numeric);
      ref += numeric * numeric;
    }
  }
  return std::sqrt(diff / ref);
}

// The worst relative error of the meta-gradient along random directions
// against the central difference of the meta-loss (meta_test_util.hpp).
double directional_fd_error(const Setup& s, int directions) {
  const std::vector<Tensor> g = meta::meta_gradient(s.model, s.loss, s.config, s.params, s.batch, 0).grads;
  return mt::testing::directional_fd_error([&](const std::vector<Tensor>& all) { return meta_loss_at(s, all); },
                                           s.params.all(), g, directions);
}

}  // namespace

TEST_SUITE("maml") {
  TEST_CASE("exact meta-gradient of an MLP equals the finite difference, τ = 1, 2, 3, and variants") {
    const meta::Mlp model({1, 6, 6, 1}, meta::Activation::tanh);
    const auto batch = sinusoid_batch(3, 5, 17);
    struct Case {
      const char* name;
      meta::MetaConfig config;
    };
    const std::vector<Case> cases = {
        {"maml τ=1", {.algorithm = meta::Algorithm::maml, .inner_steps = 1, .inner_lr = 0.05}},
        {"maml τ=2", {.algorithm = meta::Algorithm::maml, .inner_steps = 2, .inner_lr = 0.05}},
        {"maml τ=3", {.algorithm = meta::Algorithm::maml, .inner_steps = 3, .inner_lr = 0.05}},
        {"meta-sgd τ=2", {.algorithm = meta::Algorithm::metasgd, .inner_steps = 2, .inner_lr = 0.05}},
        {"anil τ=2", {.algorithm = meta::Algorithm::anil, .inner_steps = 2, .inner_lr = 0.05}},
        {"maml++ lslr + multi-step loss τ=3",
         {.algorithm = meta::Algorithm::maml,
          .inner_steps = 3,
          .inner_lr = 0.05,
          .learned_layer_rates = true,
          .multi_step_loss = true,
          .msl_anneal_iterations = 4}},
        {"looped over tasks τ=2",
         {.algorithm = meta::Algorithm::maml, .inner_steps = 2, .inner_lr = 0.05, .task_batched = false}},
    };
    for (const Case& c : cases) {
      INFO(c.name);
      const Setup s{model, meta::Loss::mse, c.config, random_meta_params(model, c.config, 5), batch};
      CHECK(full_fd_error(s) < 1e-6);
    }
  }

  TEST_CASE("exact meta-gradient of a small Conv4 equals the finite difference") {
    const meta::Conv4 model({.in_channels = 1, .image_size = 16, .channels = 3, .classes = 3});
    mt::Generator pixels(23);
    const auto batch = mt::testing::RandomImageTasks({.ways = 3, .size = 16}).sample(2, 3, 6, pixels, f64);
    for (int steps : {1, 2}) {
      const meta::MetaConfig config{.algorithm = meta::Algorithm::maml, .inner_steps = steps, .inner_lr = 0.1};
      mt::Generator gen(31);
      const Setup s{model, meta::Loss::cross_entropy, config, meta::init_meta_params(model, config, gen, f64), batch};
      INFO("τ = " << steps);
      CHECK(directional_fd_error(s, 3) < 1e-6);
    }
    // The strided variant, averaging the last feature map.
    const meta::Conv4 strided({.in_channels = 1, .image_size = 16, .channels = 3, .classes = 3, .strided = true});
    const meta::MetaConfig config{.algorithm = meta::Algorithm::maml, .inner_steps = 1, .inner_lr = 0.1};
    mt::Generator gen(37);
    const Setup s{strided, meta::Loss::cross_entropy, config, meta::init_meta_params(strided, config, gen, f64),
                  mt::testing::RandomImageTasks({.ways = 3, .size = 16}).sample(2, 3, 6, gen, f64)};
    CHECK(directional_fd_error(s, 3) < 1e-6);
  }

  TEST_CASE("task-batched meta-gradients equal task-by-task ones") {
    const meta::Mlp mlp({1, 8, 8, 1});
    const meta::Conv4 conv({.in_channels = 1, .image_size = 16, .channels = 2, .classes = 2});
    for (meta::Algorithm a :
         {meta::Algorithm::maml, meta::Algorithm::fomaml, meta::Algorithm::metasgd, meta::Algorithm::anil}) {
      for (bool lslr : {false, true}) {
        if (lslr && a != meta::Algorithm::maml) continue;
        meta::MetaConfig batched{
            .algorithm = a, .inner_steps = 2, .inner_lr = 0.03, .learned_layer_rates = lslr, .multi_step_loss = lslr};
        meta::MetaConfig looped = batched;
        looped.task_batched = false;
        INFO(std::string(meta::algorithm_name(a)) << (lslr ? " + lslr + msl" : ""));
        {
          const auto p = random_meta_params(mlp, batched, 3);
          const auto batch = sinusoid_batch(4, 5, 41);
          const auto gb = meta::meta_gradient(mlp, meta::Loss::mse, batched, p, batch, 7);
          const auto gl = meta::meta_gradient(mlp, meta::Loss::mse, looped, p, batch, 7);
          CHECK(gb.meta_loss == doctest::Approx(gl.meta_loss).epsilon(1e-13));
          for (std::size_t i = 0; i < gb.grads.size(); ++i)
            CHECK(mt::testing::relative_error(gb.grads[i], gl.grads[i]) < 1e-12);
          CHECK(gb.task_losses.size() == 4);
        }
        {
          mt::Generator gen(8);
          const auto p = meta::init_meta_params(conv, batched, gen, f64);
          const auto batch = mt::testing::RandomImageTasks({.ways = 2, .size = 16}).sample(3, 4, 2, gen, f64);
          const auto gb = meta::meta_gradient(conv, meta::Loss::cross_entropy, batched, p, batch, 7);
          const auto gl = meta::meta_gradient(conv, meta::Loss::cross_entropy, looped, p, batch, 7);
          // Conv biases feed batch norm, which removes them: their true
          // gradient is 0 and both sides are rounding noise, so compare all
          // gradients together, relative to their joint norm.
          CHECK(mt::testing::relative_error(gb.grads, gl.grads) < 1e-12);
        }
      }
    }
  }

  TEST_CASE("linear model: τ SGD steps match the kernel closed form of docs/methods.md §1") {
    // f(x) = xᵀw + b is linear in θ = (w, b) with features φ(x) = (x, 1), so
    // K = φφᵀ = X Xᵀ + 1. For the mean-squared-error inner loss the step in
    // function space has the effective rate α' = 2α/n' (the loss's 2/n').
    const std::int64_t dims = 3, support = 4, query = 5;
    const double alpha = 0.05;
    const meta::Mlp model({dims, 1});
    mt::Generator gen(12);
    const meta::TaskBatch batch{
        mt::normal({1, support, dims}, 0, 1, gen, f64), mt::normal({1, support, 1}, 0, 1, gen, f64),
        mt::normal({1, query, dims}, 0, 1, gen, f64), mt::normal({1, query, 1}, 0, 1, gen, f64)};
    const meta::MetaConfig config{.algorithm = meta::Algorithm::maml, .inner_steps = 3, .inner_lr = alpha};
    const meta::MetaParams p = random_meta_params(model, config, 4);
    const auto curve = meta::adaptation_curve(model, meta::Loss::mse, config, p, batch, 3);

    // The closed form, by hand: Ks, Kq, and f = f0 + Kq Ks⁻¹ (I − (I − α'Ks)^τ) r.
    const auto xs = batch.support_x.to_vector(), xq = batch.query_x.to_vector();
    const auto ys = batch.support_y.to_vector(), yq = batch.query_y.to_vector();
    const auto w = p.model[0].to_vector();
    const double b = p.model[1].item();
    const auto kernel = [&](const std::vector<double>& a, std::int64_t i, const std::vector<double>& c,
                            std::int64_t j) {
      double k = 1;
      for (std::int64_t d = 0; d < dims; ++d)
        k += a[static_cast<std::size_t>(i * dims + d)] * c[static_cast<std::size_t>(j * dims + d)];
      return k;
    };
    const auto f0 = [&](const std::vector<double>& x, std::int64_t i) {
      double f = b;
      for (std::int64_t d = 0; d < dims; ++d)
        f += x[static_cast<std::size_t>(i * dims + d)] * w[static_cast<std::size_t>(d)];
      return f;
    };
    for (int tau = 0; tau <= 3; ++tau) {
      // (I − (I − α'Ks)^τ) r = Σ_{j<τ} (I − α'Ks)^j α'Ks r; then Ks⁻¹ cancels: the
      // prediction is f0 + Kq Σ_{j<τ} (I − α'Ks)^j α' r. No inverse needed.
      const double rate = 2 * alpha / support;
      std::vector<double> term(support), acc(support, 0.0);
      for (std::int64_t i = 0; i < support; ++i)
        term[static_cast<std::size_t>(i)] = rate * (ys[static_cast<std::size_t>(i)] - f0(xs, i));
      for (int j = 0; j < tau; ++j) {
        for (std::int64_t i = 0; i < support; ++i)
          acc[static_cast<std::size_t>(i)] += term[static_cast<std::size_t>(i)];
        std::vector<double> next(support);
        for (std::int64_t i = 0; i < support; ++i) {
          double ks_term = 0;
          for (std::int64_t k = 0; k < support; ++k)
            ks_term += kernel(xs, i, xs, k) * term[static_cast<std::size_t>(k)];
          next[static_cast<std::size_t>(i)] = term[static_cast<std::size_t>(i)] - rate * ks_term;
        }
        term = next;
      }
      double mse = 0;
      for (std::int64_t q = 0; q < query; ++q) {
        double f = f0(xq, q);
        for (std::int64_t k = 0; k < support; ++k) f += kernel(xq, q, xs, k) * acc[static_cast<std::size_t>(k)];
        mse += (f - yq[static_cast<std::size_t>(q)]) * (f - yq[static_cast<std::size_t>(q)]) / query;
      }
      INFO("τ = " << tau);
      CHECK(curve[static_cast<std::size_t>(tau)][0] == doctest::Approx(mse).epsilon(1e-12));
    }
  }

  TEST_CASE("first-order equals exact when the inner loss is linear in θ") {
    // Inner loss c·θ (its Hessian is zero), outer loss Σ tanh(θ')²: the
    // recorded inner backward contributes nothing, so both agree exactly —
    // and differ once the inner loss is quadratic.
    mt::Generator gen(2);
    const Tensor theta0 = mt::normal({5}, 0, 1, gen, f64), c = mt::normal({5}, 0, 1, gen, f64);
    const auto meta_grad = [&](bool exact, bool quadratic) {
      mt::TapeScope scope;
      Tensor theta = theta0.detach();
      theta.requires_grad_();
      const Tensor inner = quadratic ? mt::sum(c * theta * theta) : mt::sum(c * theta);
      const Tensor g = mt::grad(inner, theta, {.create_graph = exact});
      const Tensor adapted = theta - 0.1 * g;
      return mt::grad(mt::sum(mt::square(mt::tanh(adapted))), theta);
    };
    CHECK(mt::testing::relative_error(meta_grad(false, false), meta_grad(true, false)) == 0.0);
    CHECK(mt::testing::relative_error(meta_grad(false, true), meta_grad(true, true)) > 1e-3);
  }

  TEST_CASE("ANIL adapts only the head yet gives the body a meta-gradient") {
    const meta::Mlp model({1, 8, 8, 1}, meta::Activation::tanh);
    const meta::MetaConfig anil{.algorithm = meta::Algorithm::anil, .inner_steps = 1, .inner_lr = 0.1};
    const auto p = random_meta_params(model, anil, 6);
    const auto batch = sinusoid_batch(3, 5, 7);
    const auto step = meta::meta_gradient(model, meta::Loss::mse, anil, p, batch, 0);
    CHECK(mt::sum(mt::abs(step.grads[0])).item() > 0);  // body weights
    // Adapting the head alone differs from adapting everything.
    const meta::MetaConfig maml{.algorithm = meta::Algorithm::maml, .inner_steps = 1, .inner_lr = 0.1};
    CHECK(step.meta_loss != meta::meta_gradient(model, meta::Loss::mse, maml, p, batch, 0).meta_loss);
  }

  TEST_CASE("Reptile's direction is θ − mean θ' = α · mean support gradient for one step") {
    const meta::Mlp model({1, 8, 1});
    const meta::MetaConfig reptile{.algorithm = meta::Algorithm::reptile, .inner_steps = 1, .inner_lr = 0.1};
    const auto p = random_meta_params(model, reptile, 8);
    const auto batch = sinusoid_batch(4, 5, 9);
    const auto step = meta::meta_gradient(model, meta::Loss::mse, reptile, p, batch, 0);
    // The same by hand: each task's support gradient, averaged.
    std::vector<Tensor> expected(p.model.size());
    for (std::int64_t t = 0; t < 4; ++t) {
      mt::TapeScope scope;
      std::vector<Tensor> leaves;
      for (const Tensor& x : p.model) leaves.push_back(x.detach().requires_grad_());
      const auto sub = batch.slice(t, t + 1);
      const auto g = mt::grad(
          mt::sum(meta::per_task_loss(meta::Loss::mse, model.forward(leaves, sub.support_x), sub.support_y)), leaves);
      for (std::size_t i = 0; i < g.size(); ++i)
        expected[i] = expected[i].defined() ? expected[i] + g[i].detach() * 0.025 : g[i].detach() * 0.025;
    }
    for (std::size_t i = 0; i < expected.size(); ++i)
      CHECK(mt::testing::relative_error(step.grads[i], expected[i]) < 1e-12);
  }

  TEST_CASE("the adaptation curve starts at the unadapted loss and matches training's inner loop") {
    const meta::Mlp model({1, 8, 8, 1});
    const meta::MetaConfig config{.algorithm = meta::Algorithm::maml, .inner_steps = 1, .inner_lr = 0.05};
    const auto p = random_meta_params(model, config, 10);
    const auto batch = sinusoid_batch(5, 5, 11);
    const auto curve = meta::adaptation_curve(model, meta::Loss::mse, config, p, batch, 2);
    REQUIRE(curve.size() == 3);
    const auto step = meta::meta_gradient(model, meta::Loss::mse, config, p, batch, 0);
    for (std::size_t t = 0; t < 5; ++t) CHECK(curve[1][t] == doctest::Approx(step.task_losses[t]).epsilon(1e-13));
    mt::NoGradScope no_grad;
    const auto unadapted = meta::per_task_loss(meta::Loss::mse, model.forward(p.model, batch.query_x), batch.query_y);
    for (std::size_t t = 0; t < 5; ++t) CHECK(curve[0][t] == doctest::Approx(unadapted.to_vector()[t]).epsilon(1e-14));
  }

  TEST_CASE("an inner step is θ − α ∇ Σ_t L_t on the support sets, bit for bit, recorded or not") {
    // The inner loop writes the step as θ + (−α)·g, whose backward is one op
    // shorter; negation is exact and x − y is x + (−y), so the values (none
    // of them NaN here) are those of θ − α·g in every bit.
    const meta::Mlp model({1, 8, 8, 1});
    const meta::MetaConfig config{.algorithm = meta::Algorithm::maml, .inner_steps = 1, .inner_lr = 0.037};
    for (const DType dtype : {DType::f32, f64}) {
      CAPTURE(mt::dtype_name(dtype));
      mt::Generator gen(5);
      const meta::MetaParams p = meta::init_meta_params(model, config, gen, dtype);
      const meta::TaskBatch batch = meta::SinusoidTasks().sample(4, 5, 5, gen, dtype);
      std::vector<Tensor> expected;
      {
        mt::TapeScope scope;
        std::vector<Tensor> copies = meta::per_task(p.model, batch.tasks());
        for (Tensor& c : copies) c.requires_grad_();
        const Tensor objective =
            mt::sum(meta::per_task_loss(meta::Loss::mse, model.forward(copies, batch.support_x), batch.support_y));
        const std::vector<Tensor> g = mt::grad(objective, copies);
        for (std::size_t i = 0; i < copies.size(); ++i)
          expected.push_back(mt::sub(copies[i], mt::scale(g[i], config.inner_lr)).detach());
      }
      for (const bool record : {false, true}) {
        CAPTURE(record);
        mt::TapeScope scope;
        const meta::Adapted adapted = meta::adapt(model, meta::Loss::mse, config, p, batch, 1, {.record = record});
        std::vector<Tensor> values;
        for (const Tensor& t : adapted.params) values.push_back(t.detach());
        CHECK(mt::testing::same_bits(values, expected));
      }
    }
  }

  TEST_CASE("pretrain's gradient is the gradient of the mean loss over all points") {
    const meta::Mlp model({1, 8, 1});
    const meta::MetaConfig config{.algorithm = meta::Algorithm::pretrain};
    const auto p = random_meta_params(model, config, 12);
    const auto batch = sinusoid_batch(3, 4, 13);
    const auto step = meta::meta_gradient(model, meta::Loss::mse, config, p, batch, 0);
    mt::TapeScope scope;
    std::vector<Tensor> leaves;
    for (const Tensor& x : p.model) leaves.push_back(x.detach().requires_grad_());
    const Tensor pred = mt::concat({model.forward(leaves, batch.support_x), model.forward(leaves, batch.query_x)}, 1);
    const Tensor y = mt::concat({batch.support_y, batch.query_y}, 1);
    const auto g = mt::grad(mt::mse_loss(pred, y), leaves);
    for (std::size_t i = 0; i < g.size(); ++i) CHECK(mt::testing::relative_error(step.grads[i], g[i]) < 1e-13);
  }

  TEST_CASE("multi-step loss weights: uniform first, annealed to the last step, always summing to 1") {
    const auto start = meta::multi_step_weights(5, 0, 100);
    for (double w : start) CHECK(w == doctest::Approx(0.2));
    const auto end = meta::multi_step_weights(5, 100, 100);
    for (int k = 0; k < 4; ++k) CHECK(end[static_cast<std::size_t>(k)] == doctest::Approx(0.006));
    CHECK(end[4] == doctest::Approx(1 - 4 * 0.006));
    for (std::int64_t it : {0, 13, 50, 100, 1000}) {
      double total = 0;
      for (double w : meta::multi_step_weights(5, it, 100)) total += w;
      CHECK(total == doctest::Approx(1.0));
    }
    CHECK(meta::multi_step_weights(1, 0, 100) == std::vector<double>{1.0});
  }

  TEST_CASE("Adam matches its formula; clipping bounds the global norm") {
    std::vector<Tensor> params = {mt::from_vector({1.0, -2.0}, {2}, f64)};
    meta::Adam adam(0.1);
    const std::vector<double> g1 = {0.5, -1.0}, g2 = {0.25, 2.0};
    adam.step(params, {mt::from_vector(g1, {2}, f64)});
    adam.step(params, {mt::from_vector(g2, {2}, f64)});
    for (std::size_t i = 0; i < 2; ++i) {
      double theta = i == 0 ? 1.0 : -2.0, m = 0, v = 0;
      for (int t = 1; t <= 2; ++t) {
        const double g = t == 1 ? g1[i] : g2[i];
        m = 0.9 * m + 0.1 * g;
        v = 0.999 * v + 0.001 * g * g;
        theta -= 0.1 / (1 - std::pow(0.9, t)) * m / (std::sqrt(v) / std::sqrt(1 - std::pow(0.999, t)) + 1e-8);
      }
      CHECK(params[0].to_vector()[i] == doctest::Approx(theta).epsilon(1e-14));
    }
    std::vector<Tensor> grads = {mt::from_vector({3.0, 4.0}, {2}, f64), mt::from_vector({12.0}, {1}, f64)};
    CHECK(meta::clip_grad_norm(grads, 6.5) == doctest::Approx(13.0));
    CHECK(meta::global_norm(grads) == doctest::Approx(6.5).epsilon(1e-6));
  }

  TEST_CASE("bad configurations and inputs are refused with clear messages") {
    const meta::Mlp model({1, 4, 1});
    CHECK(mt::testing::throws_error([] { (void)meta::parse_algorithm("mamal"); }, {"unknown algorithm 'mamal'"}));
    CHECK(mt::testing::throws_error([] { meta::MetaConfig{.inner_steps = -1}.validate(); },
                                    {"inner steps must be >= 0"}));
    CHECK(mt::testing::throws_error(
        [] { meta::MetaConfig{.algorithm = meta::Algorithm::anil, .learned_layer_rates = true}.validate(); },
        {"LSLR"}));
    CHECK(mt::testing::throws_error(
        [&] {
          mt::Generator gen(1);
          const auto p = meta::init_meta_params(model, {}, gen, f64);
          const auto batch = sinusoid_batch(2, 3, 1);
          meta::TaskBatch wrong = batch;
          wrong.support_x = mt::ones({2, 3, 2}, f64);
          (void)meta::meta_gradient(model, meta::Loss::mse, {}, p, wrong, 0);
        },
        {"batch.support_x has shape [2, 3, 2], mlp 1-4-1 relu takes [2, 3, 1]"}));
    CHECK(
        mt::testing::throws_error([] { (void)meta::make_optimizer("adagrad", 0.1); }, {"unknown optimizer 'adagrad'"}));
    CHECK(mt::testing::throws_error(
        [] {
          meta::TrainOptions o;
          o.device = mt::Device::cuda;
          o.replay = true;
          o.meta.multi_step_loss = true;
          o.meta.inner_steps = 2;
          o.validate();
        },
        {"cannot use the multi-step loss"}));
  }
}
