// Task-weighted outer losses (docs/methods.md §3): the rules' properties, the
// detached weighted meta-gradient against Σ_t w_t ∇L_t computed task by task,
// the differentiated one against finite differences, plain MAML's bits kept,
// and the weights in every outer loop and in the trainer's records.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "meta_test_util.hpp"
#include "metatape/meta/maml.hpp"
#include "metatape/meta/task_weighting.hpp"
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
using Rule = meta::TaskWeighting;

meta::MetaConfig with_rule(meta::MetaConfig config, Rule rule, double temperature = 0.5, bool differentiate = false) {
  config.weighting = {.rule = rule, .temperature = temperature, .differentiate = differentiate};
  return config;
}

std::vector<double> weights_of(const meta::TaskWeightingConfig& config, const std::vector<double>& losses) {
  return meta::task_weights(config, mt::from_vector(losses, {static_cast<std::int64_t>(losses.size())}, f64))
      .to_vector();
}

double sum_of(const std::vector<double>& xs, bool absolute = false) {
  double total = 0;
  for (double x : xs) total += absolute ? std::abs(x) : x;
  return total;
}

// Agreement weights by hand from per-task gradients given as rows.
std::vector<double> agreement_by_hand(const std::vector<std::vector<double>>& g) {
  std::vector<double> mean(g[0].size(), 0.0), dots;
  for (const auto& row : g)
    for (std::size_t j = 0; j < row.size(); ++j) mean[j] += row[j] / static_cast<double>(g.size());
  for (const auto& row : g) {
    double d = 0;
    for (std::size_t j = 0; j < row.size(); ++j) d += row[j] * mean[j];
    dots.push_back(d);
  }
  const double total = sum_of(dots, true);
  for (double& d : dots) d /= total;
  return dots;
}

// One task's meta-gradient over the model parameters, flattened.
std::vector<double> flat(const std::vector<Tensor>& grads, std::size_t count) {
  std::vector<double> out;
  for (std::size_t i = 0; i < count; ++i)
    for (double v : grads[i].to_vector()) out.push_back(v);
  return out;
}

// Σ_t w_t ∇L_t with ∇L_t from uniform meta_gradient calls on one task each;
// also returns the per-task model gradients, flattened (agreement's g_t).
std::vector<Tensor> weighted_by_task(const meta::Model& model, const meta::MetaConfig& config,
                                     const meta::MetaParams& p, const meta::TaskBatch& batch,
                                     const std::vector<double>& w, std::vector<std::vector<double>>& per_task) {
  meta::MetaConfig single = config;
  single.weighting = {};
  std::vector<Tensor> out;
  for (std::int64_t t = 0; t < batch.tasks(); ++t) {
    const auto g = meta::meta_gradient(model, meta::Loss::mse, single, p, batch.slice(t, t + 1), 7).grads;
    per_task.push_back(flat(g, p.model.size()));
    out.resize(g.size());
    for (std::size_t i = 0; i < g.size(); ++i) {
      const Tensor term = g[i] * w[static_cast<std::size_t>(t)];
      out[i] = out[i].defined() ? out[i] + term : term;
    }
  }
  return out;
}

// The worst relative error of the meta-gradient along random directions
// against the central difference of the meta-loss (meta_test_util.hpp).
double directional_fd_error(const meta::Model& model, const meta::MetaConfig& config, const meta::MetaParams& p,
                            const meta::TaskBatch& batch, int directions) {
  const auto at = [&](const std::vector<Tensor>& all) {
    return meta::meta_gradient(model, meta::Loss::mse, config, meta::MetaParams::from_all(all, p.model.size()), batch,
                               0)
        .meta_loss;
  };
  const std::vector<Tensor> g = meta::meta_gradient(model, meta::Loss::mse, config, p, batch, 0).grads;
  return mt::testing::directional_fd_error(at, p.all(), g, directions, 77);
}

}  // namespace

TEST_SUITE("task-weighting") {
  TEST_CASE("names round-trip; bad names and temperatures are refused naming the field") {
    for (Rule rule : meta::kTaskWeightings) CHECK(meta::parse_task_weighting(meta::task_weighting_name(rule)) == rule);
    CHECK(mt::testing::throws_error<mt::ValueError>([] { (void)meta::parse_task_weighting("softmx"); },
                                                    {"unknown task weighting 'softmx'", "agreement"}));
    for (double bad : {0.0, -1.0, std::nan(""), std::numeric_limits<double>::infinity()}) {
      INFO(bad);
      const meta::TaskWeightingConfig c{.rule = Rule::softmax, .temperature = bad};
      CHECK(mt::testing::throws_error<mt::ValueError>([&] { c.validate(); }, {"temperature"}));
      // Every outer loop's configuration checks it.
      CHECK(mt::testing::throws_error<mt::ValueError>([&] { meta::MetaConfig{.weighting = c}.validate(); },
                                                      {"task weighting", "temperature"}));
    }
    for (Rule rule : meta::kTaskWeightings)
      for (bool differentiate : {false, true})
        CHECK_NOTHROW(meta::TaskWeightingConfig{.rule = rule, .differentiate = differentiate}.validate());
  }

  TEST_CASE("the rules' weights: non-negative, summing to 1, uniform for equal losses, permuted with the tasks") {
    const std::vector<double> losses = {0.3, 1.7, 0.9, 2.4}, permuted = {2.4, 0.3, 1.7, 0.9};
    for (Rule rule : {Rule::uniform, Rule::softmax, Rule::normalised}) {
      INFO(meta::task_weighting_name(rule));
      const meta::TaskWeightingConfig c{.rule = rule, .temperature = 0.7};
      const auto w = weights_of(c, losses), wp = weights_of(c, permuted);
      CHECK(sum_of(w) == doctest::Approx(1.0).epsilon(1e-15));
      for (std::size_t t = 0; t < 4; ++t) CHECK(w[t] >= 0);
      const std::vector<std::size_t> from = {3, 0, 1, 2};
      for (std::size_t t = 0; t < 4; ++t) CHECK(wp[t] == doctest::Approx(w[from[t]]).epsilon(1e-15));
      for (double x : weights_of(c, {1.3, 1.3, 1.3})) CHECK(x == doctest::Approx(1.0 / 3).epsilon(1e-15));
    }
    // Harder tasks weigh more, by the formulas.
    const auto soft = weights_of({.rule = Rule::softmax, .temperature = 0.7}, losses);
    const auto norm = weights_of({.rule = Rule::normalised}, losses);
    for (std::size_t t = 0; t < 4; ++t) {
      double z = 0;
      for (double l : losses) z += std::exp(l / 0.7);
      CHECK(soft[t] == doctest::Approx(std::exp(losses[t] / 0.7) / z).epsilon(1e-14));
      CHECK(norm[t] == doctest::Approx(losses[t] / 5.3).epsilon(1e-14));
    }
  }

  TEST_CASE("softmax tends to uniform as T° → ∞ and to one-hot as T° → 0; normalised ignores the losses' scale") {
    const std::vector<double> losses = {0.3, 1.7, 0.9, 1.6};
    for (double x : weights_of({.rule = Rule::softmax, .temperature = 1e9}, losses))
      CHECK(x == doctest::Approx(0.25).epsilon(1e-8));
    const auto cold = weights_of({.rule = Rule::softmax, .temperature = 1e-3}, losses);
    CHECK(cold[1] > 1 - 1e-12);
    const auto w = weights_of({.rule = Rule::normalised}, losses);
    const auto scaled = weights_of({.rule = Rule::normalised}, {0.3 * 7.3, 1.7 * 7.3, 0.9 * 7.3, 1.6 * 7.3});
    for (std::size_t t = 0; t < 4; ++t) CHECK(scaled[t] == doctest::Approx(w[t]).epsilon(1e-15));
  }

  TEST_CASE("agreement: g_t·ḡ / Σ|g_j·ḡ|, negative for a task against the mean, permuted with the tasks") {
    const meta::TaskWeightingConfig c{.rule = Rule::agreement};
    const auto run = [&](const std::vector<double>& rows) {
      const Tensor g = mt::from_vector(rows, {3, 2}, f64);
      return meta::task_weights(c, mt::zeros({3}, f64), [&] { return std::vector<Tensor>{g}; }).to_vector();
    };
    const auto w = run({1, 0, 0, 1, 1, 1});  // ḡ = (2/3, 2/3): dots 2/3, 2/3, 4/3
    CHECK(w[0] == doctest::Approx(0.25).epsilon(1e-15));
    CHECK(w[1] == doctest::Approx(0.25).epsilon(1e-15));
    CHECK(w[2] == doctest::Approx(0.5).epsilon(1e-15));
    const auto against = run({1, 0, 1, 0, -1, 0.5});  // ḡ = (1/3, 1/6): dots 1/3, 1/3, -1/4
    CHECK(against[2] < 0);
    CHECK(sum_of(against, true) == doctest::Approx(1.0).epsilon(1e-15));
    const auto expected = agreement_by_hand({{1, 0}, {1, 0}, {-1, 0.5}});
    for (std::size_t t = 0; t < 3; ++t) CHECK(against[t] == doctest::Approx(expected[t]).epsilon(1e-15));
    const auto swapped = run({-1, 0.5, 1, 0, 1, 0});
    CHECK(swapped[0] == doctest::Approx(against[2]).epsilon(1e-15));
  }

  TEST_CASE("softmax at a temperature whose inverse overflows the dtype gives the one-hot limit, not NaN") {
    for (DType dtype : {DType::f32, f64}) {
      const Tensor losses = mt::from_vector({0.5, 2.0, 1.0}, {3}, dtype);
      for (double temperature : {1e-30, 1e-300}) {
        INFO(mt::dtype_name(dtype) << ", T° = " << temperature);
        const std::vector<double> w =
            meta::task_weights({.rule = Rule::softmax, .temperature = temperature}, losses).to_vector();
        CHECK(w == std::vector<double>{0.0, 1.0, 0.0});
      }
    }
  }

  TEST_CASE("detached weights record nothing; differentiated ones are on the tape") {
    mt::TapeScope scope;
    const Tensor losses = mt::from_vector({0.5, 1.5, 1.0}, {3}, f64).requires_grad_();
    for (Rule rule : {Rule::softmax, Rule::normalised}) {
      CHECK_FALSE(meta::task_weights({.rule = rule}, losses).requires_grad());
      CHECK(meta::task_weights({.rule = rule, .differentiate = true}, losses).requires_grad());
    }
  }

  TEST_CASE("bad losses and gradients are refused naming the task") {
    const meta::TaskWeightingConfig soft{.rule = Rule::softmax}, norm{.rule = Rule::normalised};
    CHECK(mt::testing::throws_error<mt::ValueError>(
        [&] {
          (void)weights_of(soft, {0.1, std::nan(""), 0.2});
        },
        {"softmax", "task 1"}));
    CHECK(mt::testing::throws_error<mt::ValueError>(
        [&] {
          (void)weights_of(norm, {0.1, 0.3, std::numeric_limits<double>::infinity()});
        },
        {"task 2"}));
    CHECK(mt::testing::throws_error<mt::ValueError>(
        [&] {
          (void)weights_of(norm, {0.1, -0.3});
        },
        {"task 1", "negative"}));
    CHECK(mt::testing::throws_error<mt::ValueError>([&] { (void)weights_of(norm, {0.0, 0.0}); }, {"sum to 0"}));
    CHECK(mt::testing::throws_error<mt::ValueError>(
        [&] {
          (void)weights_of({.rule = Rule::agreement}, {1.0, 2.0});
        },
        {"agreement", "meta-gradient"}));
    CHECK(mt::testing::throws_error<mt::ValueError>(
        [&] {
          (void)meta::task_weights({.rule = Rule::agreement}, mt::zeros({2}, f64), [] {
            return std::vector<Tensor>{mt::zeros({2, 3}, f64)};
          });
        },
        {"orthogonal"}));
    CHECK(mt::testing::throws_error<mt::ShapeError>(
        [&] {
          (void)meta::task_weights(soft, mt::zeros({2, 2}, f64));
        },
        {"[T]", "[2, 2]"}));
  }

  TEST_CASE("uniform is plain MAML bit for bit: the mean of the adapted query losses") {
    const meta::Mlp model({1, 6, 6, 1}, meta::Activation::tanh);
    const std::int64_t tasks = 7;
    const auto batch = sinusoid_batch(tasks, 5, 17);
    // The outer loss by hand from adapt(): per task slice when looped.
    const auto by_hand = [&](const meta::MetaConfig& config, const std::vector<Tensor>& leaves) {
      const std::int64_t parts = config.task_batched ? 1 : tasks;
      Tensor outer;
      for (std::int64_t t = 0; t < parts; ++t) {
        const auto part = config.task_batched ? batch : batch.slice(t, t + 1);
        const auto adapted = meta::adapt(model, meta::Loss::mse, config, {leaves, {}}, part, config.inner_steps,
                                         {.record = true, .history = true});
        std::vector<Tensor> losses;
        for (const auto& fast : adapted.history)
          losses.push_back(meta::per_task_loss(meta::Loss::mse, model.forward(fast, part.query_x), part.query_y));
        const auto v = meta::multi_step_weights(config.inner_steps, 0, config.msl_anneal_iterations);
        Tensor term = config.multi_step_loss
                          ? mt::add(mt::scale(mt::mean(losses[1]), v[0]), mt::scale(mt::mean(losses[2]), v[1]))
                          : mt::mean(losses.back());
        if (!config.task_batched) term = mt::scale(term, 1.0 / static_cast<double>(tasks));
        outer = outer.defined() ? mt::add(outer, term) : term;
      }
      return outer;
    };
    for (const auto& [msl, batched] : {std::pair{false, true}, std::pair{true, true}, std::pair{false, false}}) {
      const meta::MetaConfig config{
          .inner_steps = 2, .inner_lr = 0.05, .multi_step_loss = msl, .task_batched = batched};
      const auto p = random_meta_params(model, config, 5);
      const auto step = meta::meta_gradient(model, meta::Loss::mse, config, p, batch, 0);
      CHECK(step.task_weights == std::vector<double>(tasks, 1.0 / static_cast<double>(tasks)));
      mt::TapeScope scope;
      std::vector<Tensor> leaves;
      for (const Tensor& x : p.model) leaves.push_back(x.detach().requires_grad_());
      const Tensor outer = by_hand(config, leaves);
      INFO("multi-step loss " << msl << ", batched " << batched);
      CHECK(mt::testing::same_bits({outer.detach()}, {mt::scalar(step.meta_loss, f64)}));
      if (msl) {
        // The reference records θ^1's query loss after the second inner step,
        // the outer loop before it: the backward then sums the two paths into
        // θ^1 in the other order, so the last bits may differ.
        CHECK(mt::testing::relative_error(mt::grad(outer, leaves), step.grads) < 1e-14);
      } else {
        CHECK(mt::testing::same_bits(mt::grad(outer, leaves), step.grads));
      }
    }
  }

  TEST_CASE("detached weights give Σ_t w_t ∇L_t exactly, the weights from the tasks' losses or gradients") {
    const meta::Mlp model({1, 6, 6, 1}, meta::Activation::tanh);
    const auto batch = sinusoid_batch(4, 5, 19);
    const meta::MetaConfig maml{.inner_steps = 2, .inner_lr = 0.05};
    meta::MetaConfig msl = maml;
    msl.multi_step_loss = true;
    msl.msl_anneal_iterations = 10;
    const meta::MetaConfig anil{.algorithm = meta::Algorithm::anil, .inner_steps = 1, .inner_lr = 0.1};
    const meta::MetaConfig metasgd{.algorithm = meta::Algorithm::metasgd, .inner_steps = 1, .inner_lr = 0.05};
    const meta::MetaConfig pretrain{.algorithm = meta::Algorithm::pretrain};
    const meta::MetaConfig kernel{.algorithm = meta::Algorithm::kernel, .kernel = {.form = meta::KernelForm::flow}};
    const meta::MetaConfig rkhs{.algorithm = meta::Algorithm::metarkhs1, .rkhs_alpha = 0.05};
    for (const auto& [name, base] :
         {std::pair{"maml", maml}, std::pair{"maml++ multi-step", msl}, std::pair{"anil", anil},
          std::pair{"metasgd", metasgd}, std::pair{"pretrain", pretrain}, std::pair{"kernel", kernel},
          std::pair{"metarkhs1", rkhs}}) {
      for (Rule rule : {Rule::softmax, Rule::normalised, Rule::agreement}) {
        INFO(std::string(name) << ", " << meta::task_weighting_name(rule));
        const meta::MetaConfig config = with_rule(base, rule);
        const auto p = random_meta_params(model, config, 23);
        const auto step = meta::meta_gradient(model, meta::Loss::mse, config, p, batch, 7);
        std::vector<std::vector<double>> per_task;
        const auto expected = weighted_by_task(model, config, p, batch, step.task_weights, per_task);
        CHECK(mt::testing::relative_error(step.grads, expected) < 1e-13);
        // The weights are the rule's: of the reported losses, or of the
        // tasks' own meta-gradients over the model's parameters (with the
        // multi-step loss, of the final losses': not what a task's call gives).
        if (!(rule == Rule::agreement && config.multi_step_loss)) {
          const auto w =
              rule == Rule::agreement ? agreement_by_hand(per_task) : weights_of(config.weighting, step.task_losses);
          for (std::size_t t = 0; t < 4; ++t) CHECK(step.task_weights[t] == doctest::Approx(w[t]).epsilon(1e-12));
        }
        if (!config.multi_step_loss) {
          double loss = 0;
          for (std::size_t t = 0; t < 4; ++t) loss += step.task_weights[t] * step.task_losses[t];
          CHECK(step.meta_loss == doctest::Approx(loss).epsilon(1e-14));
        }
      }
    }
  }

  TEST_CASE("differentiated weights differ from detached ones and match finite differences") {
    const meta::Mlp model({1, 5, 5, 1}, meta::Activation::tanh);
    const auto batch = sinusoid_batch(3, 4, 29);
    const meta::MetaConfig maml{.inner_steps = 1, .inner_lr = 0.05};
    const meta::MetaConfig pretrain{.algorithm = meta::Algorithm::pretrain};
    const meta::MetaConfig kernel{.algorithm = meta::Algorithm::kernel, .kernel = {.form = meta::KernelForm::flow}};
    const meta::MetaConfig rkhs{.algorithm = meta::Algorithm::metarkhs1, .rkhs_alpha = 0.05};
    for (const auto& [name, base] : {std::pair{"maml", maml}, std::pair{"pretrain", pretrain},
                                     std::pair{"kernel", kernel}, std::pair{"metarkhs1", rkhs}}) {
      for (Rule rule : {Rule::softmax, Rule::normalised, Rule::agreement}) {
        INFO(std::string(name) << ", " << meta::task_weighting_name(rule));
        const meta::MetaConfig exact = with_rule(base, rule, 0.5, true), detached = with_rule(base, rule, 0.5, false);
        const auto p = random_meta_params(model, exact, 31);
        const auto a = meta::meta_gradient(model, meta::Loss::mse, exact, p, batch, 0);
        const auto b = meta::meta_gradient(model, meta::Loss::mse, detached, p, batch, 0);
        CHECK(a.meta_loss == doctest::Approx(b.meta_loss).epsilon(1e-14));
        // The weights' own derivative is a visible part of the gradient.
        CHECK(mt::testing::relative_error(a.grads, b.grads) > 1e-6);
        CHECK(directional_fd_error(model, exact, p, batch, 3) < 1e-6);
      }
    }
  }

  TEST_CASE("the looped meta-batch equals the task-batched one under every rule") {
    const meta::Mlp model({1, 6, 6, 1}, meta::Activation::tanh);
    const auto batch = sinusoid_batch(4, 5, 37);
    for (bool msl : {false, true}) {
      for (Rule rule : meta::kTaskWeightings) {
        for (bool differentiate : {false, true}) {
          INFO(meta::task_weighting_name(rule) << (msl ? " + msl" : "") << (differentiate ? ", differentiated" : ""));
          meta::MetaConfig batched =
              with_rule({.inner_steps = 2, .inner_lr = 0.05, .multi_step_loss = msl}, rule, 0.5, differentiate);
          meta::MetaConfig looped = batched;
          looped.task_batched = false;
          const auto p = random_meta_params(model, batched, 41);
          const auto gb = meta::meta_gradient(model, meta::Loss::mse, batched, p, batch, 3);
          const auto gl = meta::meta_gradient(model, meta::Loss::mse, looped, p, batch, 3);
          CHECK(gb.meta_loss == doctest::Approx(gl.meta_loss).epsilon(1e-13));
          CHECK(mt::testing::relative_error(gb.grads, gl.grads) < 1e-12);
          for (std::size_t t = 0; t < 4; ++t)
            CHECK(gb.task_weights[t] == doctest::Approx(gl.task_weights[t]).epsilon(1e-12));
        }
      }
    }
  }

  TEST_CASE("Reptile steps along Σ_t w_t (θ − θ_t^τ), weighted by the query losses or the directions' agreement") {
    const meta::Mlp model({1, 8, 1}, meta::Activation::tanh);
    const auto batch = sinusoid_batch(4, 5, 43);
    for (Rule rule : meta::kTaskWeightings) {
      INFO(meta::task_weighting_name(rule));
      const meta::MetaConfig config =
          with_rule({.algorithm = meta::Algorithm::reptile, .inner_steps = 2, .inner_lr = 0.1}, rule);
      const auto p = random_meta_params(model, config, 47);
      const auto step = meta::meta_gradient(model, meta::Loss::mse, config, p, batch, 0);
      const auto adapted = meta::adapt(model, meta::Loss::mse, config, p, batch, 2);
      std::vector<std::vector<double>> directions(4);
      std::vector<Tensor> expected(p.model.size());
      std::vector<double> w = step.task_weights;
      for (std::size_t i = 0; i < p.model.size(); ++i)
        for (std::int64_t t = 0; t < 4; ++t) {
          const Tensor d = p.model[i] - mt::squeeze(mt::slice(adapted.params[i], 0, t, t + 1), 0);
          for (double v : d.to_vector()) directions[static_cast<std::size_t>(t)].push_back(v);
          const Tensor term = d * w[static_cast<std::size_t>(t)];
          expected[i] = expected[i].defined() ? expected[i] + term : term;
        }
      CHECK(mt::testing::relative_error(step.grads, expected) < 1e-12);
      const auto rule_weights =
          rule == Rule::agreement ? agreement_by_hand(directions) : weights_of(config.weighting, step.task_losses);
      for (std::size_t t = 0; t < 4; ++t) CHECK(w[t] == doctest::Approx(rule_weights[t]).epsilon(1e-12));
      if (rule != Rule::uniform) CHECK(std::abs(w[0] - 0.25) > 1e-6);
    }
  }

  TEST_CASE("ragged batches: uniform weights reported, other rules refused") {
    const meta::Mlp model({1, 4, 1}, meta::Activation::tanh);
    meta::RaggedTaskBatch ragged;
    ragged.groups = {sinusoid_batch(2, 3, 51), sinusoid_batch(1, 5, 52)};
    const meta::MetaConfig config{.inner_steps = 1, .inner_lr = 0.05};
    const auto p = random_meta_params(model, config, 53);
    CHECK(meta::meta_gradient(model, meta::Loss::mse, config, p, ragged, 0).task_weights ==
          std::vector<double>(3, 1.0 / 3));
    CHECK(mt::testing::throws_error<mt::ValueError>(
        [&] { (void)meta::meta_gradient(model, meta::Loss::mse, with_rule(config, Rule::softmax), p, ragged, 0); },
        {"softmax", "ragged"}));
  }

  TEST_CASE("the trainer records the weights, and a resumed weighted run equals an uninterrupted one") {
    const meta::Mlp model({1, 8, 8, 1});
    const meta::SinusoidTasks tasks;
    for (Rule rule : meta::kTaskWeightings) {
      INFO(meta::task_weighting_name(rule));
      meta::TrainOptions o;
      o.meta = with_rule({.inner_steps = 1, .inner_lr = 0.02}, rule, 2.0);
      o.meta_batch = 3;
      o.shots = o.queries = 4;
      o.seed = 5;
      meta::Trainer straight(model, meta::Loss::mse, tasks, o), first(model, meta::Loss::mse, tasks, o);
      std::vector<meta::IterationRecord> records;
      for (int i = 0; i < 5; ++i) records.push_back(straight.step());
      for (const auto& r : records) {
        REQUIRE(r.task_weights.size() == 3);
        CHECK(sum_of(r.task_weights, rule == Rule::agreement) == doctest::Approx(1.0).epsilon(1e-6));
        if (rule == Rule::softmax || rule == Rule::normalised) {
          const auto w = weights_of(o.meta.weighting, r.task_losses);
          for (std::size_t t = 0; t < 3; ++t) CHECK(r.task_weights[t] == doctest::Approx(w[t]).epsilon(1e-5));
        }
      }
      for (int i = 0; i < 3; ++i) (void)first.step();
      meta::Trainer resumed(model, meta::Loss::mse, tasks, o);
      resumed.restore(first.checkpoint("{}"));
      for (int i = 3; i < 5; ++i)
        CHECK(resumed.step().task_weights == records[static_cast<std::size_t>(i)].task_weights);
      CHECK(mt::testing::same_bits(straight.params().all(), resumed.params().all()));
    }
  }

  TEST_CASE("a loss the weights cannot use stops the trainer where it was") {
    const meta::Mlp model({1, 8, 1}, meta::Activation::tanh);
    const meta::SinusoidTasks tasks;
    meta::TrainOptions o;
    // An absurd inner rate: the adapted network's query losses overflow.
    o.meta = with_rule({.inner_steps = 1, .inner_lr = 1e300}, Rule::softmax);
    o.meta_batch = 3;
    o.dtype = f64;
    meta::Trainer trainer(model, meta::Loss::mse, tasks, o);
    const auto before = trainer.checkpoint("");
    CHECK(mt::testing::throws_error<mt::ValueError>([&] { (void)trainer.step(); }, {"softmax", "the loss of task"}));
    const auto after = trainer.checkpoint("");
    CHECK(trainer.iteration() == 0);
    CHECK(after.task_rng_position == before.task_rng_position);
    CHECK(mt::testing::same_bits(after.params, before.params));
  }
}
