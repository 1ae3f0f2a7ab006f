// The public meta:: API: every entry point refuses malformed parameters and
// batches with a typed error naming the tensor; adapt() is the inner loop of
// the meta-gradient; ragged batches equal the mean of one-task calls; models
// and losses take one task without the task axis.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>

#include "meta_test_util.hpp"
#include "metatape/meta/evaluation.hpp"
#include "metatape/meta/kernel_adaptation.hpp"
#include "metatape/meta/maml.hpp"
#include "test_util.hpp"

namespace mt = metatape;
namespace meta = metatape::meta;
using mt::DType;
using mt::Tensor;

namespace {

using mt::testing::random_meta_params;

constexpr DType f64 = DType::f64;

double max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  return mt::max(mt::abs(mt::flatten(a - b)), 0).item();
}

double max_abs_diff(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, max_abs_diff(a[i], b[i]));
  return worst;
}

meta::TaskBatch sinusoid(std::int64_t tasks, std::int64_t support, std::int64_t query, std::uint64_t seed) {
  mt::Generator gen(seed);
  return meta::SinusoidTasks().sample(tasks, support, query, gen, f64);
}

meta::TaskBatch with_task_axis(const meta::TaskBatch& b, std::int64_t t) { return b.slice(t, t + 1); }

// One malformed argument set: what to change, and the error it must give.
struct Malformed {
  std::string name;
  meta::MetaConfig config;
  std::function<void(meta::MetaParams&, meta::TaskBatch&)> spoil;
  std::string expected;  // a part of the message
  enum Kind { value, shape, dtype } kind;
  bool batch_only = false;  // evaluate() draws its own batch
};

std::vector<Malformed> malformed_cases() {
  const meta::MetaConfig maml{.algorithm = meta::Algorithm::maml, .inner_steps = 1, .inner_lr = 0.1};
  const meta::MetaConfig sgd{.algorithm = meta::Algorithm::metasgd, .inner_steps = 1, .inner_lr = 0.1};
  const meta::MetaConfig lslr{.inner_steps = 2, .learned_layer_rates = true};
  const auto empty = [](meta::MetaParams& p, meta::TaskBatch&) { p.rates.clear(); };
  const auto half = [](meta::MetaParams& p, meta::TaskBatch&) { p.rates.resize(2); };
  const auto scalar = [](meta::MetaParams& p, meta::TaskBatch&) {
    for (Tensor& r : p.rates) r = mt::full(mt::Shape{}, 0.1, f64);
  };
  using M = Malformed;
  return {
      {"meta-sgd, no rates", sgd, empty, "params.rates holds 0 tensors", M::value},
      {"meta-sgd, half the rates", sgd, half, "params.rates holds 2 tensors", M::value},
      {"meta-sgd, scalar rates", sgd, scalar, "rates[0] (for w1) has shape [], expected [1, 8]", M::shape},
      {"meta-sgd, a misshapen rate", sgd,
       [](meta::MetaParams& p, meta::TaskBatch&) { p.rates[3] = mt::full({2}, 0.1, f64); },
       "rates[3] (for b2) has shape [2], expected [1]", M::shape},
      {"meta-sgd, an f32 rate", sgd,
       [](meta::MetaParams& p, meta::TaskBatch&) { p.rates[1] = p.rates[1].to(DType::f32); },
       "rates[1] (for b1) is f32, the parameters are f64", M::dtype},
      {"meta-sgd, an undefined rate", sgd, [](meta::MetaParams& p, meta::TaskBatch&) { p.rates[2] = Tensor(); },
       "rates[2] (for w2) is undefined", M::value},
      {"maml given rates", maml,
       [](meta::MetaParams& p, meta::TaskBatch&) { p.rates.push_back(mt::full(mt::Shape{}, 0.1, f64)); },
       "maml learns no inner rates", M::value},
      {"lslr, rates of the wrong shape", lslr,
       [](meta::MetaParams& p, meta::TaskBatch&) {
         p.rates[0] = mt::full({2, 3}, 0.1, f64);
       },
       "rates[0] (per layer and inner step) has shape [2, 3], expected [2, 2]", M::shape},
      {"lslr, no rates", lslr, empty, "params.rates holds 0 tensors", M::value},
      {"a parameter missing", maml, [](meta::MetaParams& p, meta::TaskBatch&) { p.model.pop_back(); },
       "params.model holds 3 tensors, mlp 1-8-1 relu has 4 parameters", M::value},
      {"a bias with an extra axis", maml,
       [](meta::MetaParams& p, meta::TaskBatch&) {
         p.model[1] = mt::zeros({1, 8}, f64);
       },
       "params.model[1] (b1) has shape [1, 8], expected [8]", M::shape},
      {"an f32 parameter among f64", maml,
       [](meta::MetaParams& p, meta::TaskBatch&) { p.model[2] = p.model[2].to(DType::f32); },
       "params.model[2] (w2) is f32, the parameters are f64", M::dtype},
      {"integer parameters", maml,
       [](meta::MetaParams& p, meta::TaskBatch&) {
         for (Tensor& t : p.model) t = mt::from_indices(std::vector<std::int64_t>(t.numel(), 0), t.shape());
       },
       "parameters must be f32 or f64", M::dtype},
      {"undefined query targets", maml, [](meta::MetaParams&, meta::TaskBatch& b) { b.query_y = Tensor(); },
       "batch.query_y is undefined", M::value, true},
      {"fewer query tasks", maml,
       [](meta::MetaParams&, meta::TaskBatch& b) { b.query_x = mt::slice(b.query_x, 0, 0, 2); },
       "batch.query_x [2, 4, 1] holds 2 tasks, batch.support_x [3, 5, 1] holds 3", M::shape, true},
      {"inputs of the wrong width", maml,
       [](meta::MetaParams&, meta::TaskBatch& b) {
         b.support_x = mt::ones({3, 5, 2}, f64);
       },
       "batch.support_x has shape [3, 5, 2], mlp 1-8-1 relu takes [3, 5, 1]", M::shape, true},
      {"inputs without the task axis", maml,
       [](meta::MetaParams&, meta::TaskBatch& b) { b.query_x = mt::ones({4}, f64); },
       "batch.query_x must be [tasks, points, ...], got [4]", M::shape, true},
      {"f32 inputs", maml, [](meta::MetaParams&, meta::TaskBatch& b) { b.support_x = b.support_x.to(DType::f32); },
       "batch.support_x is f32, the parameters are f64", M::dtype, true},
      {"targets without the output axis", maml,
       [](meta::MetaParams&, meta::TaskBatch& b) {
         b.support_y = mt::reshape(b.support_y, {3, 5});
       },
       "batch.support_y (mse targets) has shape [3, 5], expected [3, 5, 1]", M::shape, true},
      {"fewer targets than inputs", maml,
       [](meta::MetaParams&, meta::TaskBatch& b) { b.query_y = mt::slice(b.query_y, 1, 0, 3); },
       "batch.query_y (mse targets) has shape [3, 3, 1], expected [3, 4, 1]", M::shape, true},
      {"integer regression targets", maml,
       [](meta::MetaParams&, meta::TaskBatch& b) {
         b.query_y = mt::from_indices(std::vector<std::int64_t>(12, 0), {3, 4, 1});
       },
       "batch.query_y (mse targets) is i64", M::dtype, true},
      {"a support set of no points", maml,
       [](meta::MetaParams&, meta::TaskBatch& b) {
         b.support_x = mt::zeros({3, 0, 1}, f64);
         b.support_y = mt::zeros({3, 0, 1}, f64);
       },
       "batch.support_x [3, 0, 1] has no points", M::shape, true},
  };
}

// Every public entry point that takes parameters (and a batch), run on them.
std::vector<std::pair<std::string,
                      std::function<void(const meta::MetaConfig&, const meta::MetaParams&, const meta::TaskBatch&)>>>
entry_points(const meta::Model& model, meta::Loss loss, bool with_evaluate) {
  using Call = std::function<void(const meta::MetaConfig&, const meta::MetaParams&, const meta::TaskBatch&)>;
  std::vector<std::pair<std::string, Call>> calls = {
      {"meta_gradient",
       [&model, loss](auto& c, auto& p, auto& b) { (void)meta::meta_gradient(model, loss, c, p, b, 0); }},
      {"meta_gradient_tensors",
       [&model, loss](auto& c, auto& p, auto& b) { (void)meta::meta_gradient_tensors(model, loss, c, p, b, 0); }},
      {"meta_gradient (ragged)",
       [&model, loss](auto& c, auto& p, auto& b) {
         (void)meta::meta_gradient(model, loss, c, p, meta::RaggedTaskBatch{{b}}, 0);
       }},
      {"adapt", [&model, loss](auto& c, auto& p, auto& b) { (void)meta::adapt(model, loss, c, p, b, 1); }},
      {"adapt (recorded, ragged)",
       [&model, loss](auto& c, auto& p, auto& b) {
         (void)meta::adapt(model, loss, c, p, meta::RaggedTaskBatch{{b}}, 1, {.record = true});
       }},
      {"adaptation_curve",
       [&model, loss](auto& c, auto& p, auto& b) { (void)meta::adaptation_curve(model, loss, c, p, b, 2); }},
      {"adaptation_curve (ragged)",
       [&model, loss](auto& c, auto& p, auto& b) {
         (void)meta::adaptation_curve(model, loss, c, p, meta::RaggedTaskBatch{{b}}, 2);
       }},
      {"query_curve", [&model, loss](auto& c, auto& p, auto& b) { (void)meta::query_curve(model, loss, c, p, b, 2); }},
      {"query_curve (ragged)",
       [&model, loss](auto& c, auto& p, auto& b) {
         (void)meta::query_curve(model, loss, c, p, meta::RaggedTaskBatch{{b}}, 2);
       }},
      {"CapturedMetaGradient",
       [&model, loss](auto& c, auto& p, auto& b) { (void)meta::CapturedMetaGradient(model, loss, c)(p, b); }},
  };
  if (with_evaluate)
    calls.push_back({"evaluate", [&model, loss](auto& c, auto& p, auto&) {
                       (void)meta::evaluate(model, loss, c, p, meta::SinusoidTasks(), {.tasks = 2, .steps = 1}, f64);
                     }});
  return calls;
}

}  // namespace

TEST_SUITE("meta-api") {
  TEST_CASE("every public meta:: function refuses malformed parameters and batches with a typed error") {
    const meta::Mlp model({1, 8, 1});
    for (const Malformed& m : malformed_cases()) {
      meta::MetaParams p = random_meta_params(model, m.config, 3);
      meta::TaskBatch b = sinusoid(3, 5, 4, 4);
      m.spoil(p, b);
      for (const auto& [name, call] : entry_points(model, meta::Loss::mse, !m.batch_only)) {
        INFO(m.name << " → " << name);
        const auto run = [&, &call = call] { call(m.config, p, b); };
        const std::string message = m.kind == Malformed::value ? mt::testing::throws_error<mt::ValueError>(run).message
                                    : m.kind == Malformed::shape
                                        ? mt::testing::throws_error<mt::ShapeError>(run).message
                                        : mt::testing::throws_error<mt::DTypeError>(run).message;
        INFO(message);
        CHECK(message.find(m.expected) != std::string::npos);
        // The entry point is named first (meta_gradient_tensors as meta_gradient).
        CHECK(name.rfind(message.substr(0, message.find(':')), 0) == 0);
      }
    }
  }

  TEST_CASE("cross-entropy labels are checked against the predictions; empty ragged batches are refused") {
    const meta::Mlp model({2, 4, 3});
    const meta::MetaConfig config{.inner_steps = 1};
    const meta::MetaParams p = random_meta_params(model, config, 1);
    mt::Generator gen(2);
    const Tensor x = mt::normal({2, 3, 2}, 0, 1, gen, f64);
    const Tensor labels = mt::from_indices({0, 1, 2, 2, 1, 0}, {2, 3});
    const auto gradient = [&](const Tensor& support_y) {
      return [&, support_y] {
        (void)meta::meta_gradient(model, meta::Loss::cross_entropy, config, p, meta::TaskBatch{x, support_y, x, labels},
                                  0);
      };
    };
    CHECK(mt::testing::throws_error<mt::DTypeError>(gradient(mt::zeros({2, 3}, f64)))
              .message.find("batch.support_y (cross-entropy labels) must be i64, got f64") != std::string::npos);
    CHECK(mt::testing::throws_error<mt::ShapeError>(gradient(mt::reshape(labels, {2, 3, 1})))
              .message.find("batch.support_y (cross-entropy labels) has shape [2, 3, 1], expected [2, 3]") !=
          std::string::npos);
    (void)meta::meta_gradient(model, meta::Loss::cross_entropy, config, p, meta::TaskBatch{x, labels, x, labels},
                              0);  // well formed
    CHECK(mt::testing::throws_error<mt::ValueError>(gradient(mt::from_indices({0, 1, 3, 2, 1, 0}, {2, 3})))
              .message.find("label 3") != std::string::npos);  // a class the model does not have
    CHECK(mt::testing::throws_error<mt::ValueError>([&] {
            (void)meta::meta_gradient(model, meta::Loss::mse, config, p, meta::RaggedTaskBatch{}, 0);
          }).message.find("meta_gradient: the ragged batch has no groups") != std::string::npos);
  }

  TEST_CASE("adapt: one and two steps equal hand-written SGD steps, per algorithm") {
    const meta::Mlp model({1, 6, 6, 1}, meta::Activation::tanh);
    const meta::TaskBatch batch = sinusoid(3, 5, 4, 7);
    for (meta::Algorithm a : {meta::Algorithm::maml, meta::Algorithm::metasgd, meta::Algorithm::anil}) {
      INFO(meta::algorithm_name(a));
      const meta::MetaConfig config{.algorithm = a, .inner_steps = 1, .inner_lr = 0.07};
      const meta::MetaParams p = random_meta_params(model, config, 11);
      const std::vector<std::size_t> head = model.head();
      const auto adapts = [&](std::size_t i) {
        return a != meta::Algorithm::anil || std::find(head.begin(), head.end(), i) != head.end();
      };
      for (int steps : {1, 2}) {
        const meta::Adapted adapted = meta::adapt(model, meta::Loss::mse, config, p, batch, steps);
        REQUIRE(adapted.params.size() == p.model.size());
        for (std::int64_t t = 0; t < batch.tasks(); ++t) {
          // θ ← θ − α ⊙ ∇_θ L(θ; support_t), written out with grad() on one task.
          std::vector<Tensor> theta = p.model;
          for (int k = 0; k < steps; ++k) {
            mt::TapeScope scope;
            std::vector<Tensor> leaves;
            for (const Tensor& w : theta) leaves.push_back(w.detach().requires_grad_());
            const meta::TaskBatch task = with_task_axis(batch, t);
            const Tensor loss =
                mt::sum(meta::per_task_loss(meta::Loss::mse, model.forward(leaves, task.support_x), task.support_y));
            const std::vector<Tensor> g = mt::grad(loss, leaves);
            for (std::size_t i = 0; i < theta.size(); ++i) {
              if (!adapts(i)) continue;
              const Tensor step = a == meta::Algorithm::metasgd ? p.rates[i] * g[i] : 0.07 * g[i];
              theta[i] = (theta[i] - step).detach();
            }
          }
          for (std::size_t i = 0; i < theta.size(); ++i) {
            const Tensor mine = mt::squeeze(mt::slice(adapted.params[i], 0, t, t + 1), 0);
            CHECK(max_abs_diff(mine, theta[i]) <= 1e-14);
          }
        }
      }
    }
  }

  TEST_CASE("adapt, recorded: a query loss of the result differentiates to meta_gradient's gradients") {
    const meta::Mlp model({1, 6, 6, 1}, meta::Activation::tanh);
    const meta::TaskBatch batch = sinusoid(4, 5, 6, 8);
    const std::vector<std::pair<std::string, meta::MetaConfig>> configs = {
        {"maml", {.algorithm = meta::Algorithm::maml, .inner_steps = 2, .inner_lr = 0.05}},
        {"fomaml", {.algorithm = meta::Algorithm::fomaml, .inner_steps = 2, .inner_lr = 0.05}},
        {"metasgd", {.algorithm = meta::Algorithm::metasgd, .inner_steps = 2, .inner_lr = 0.05}},
        {"anil", {.algorithm = meta::Algorithm::anil, .inner_steps = 2, .inner_lr = 0.05}},
        {"lslr", {.algorithm = meta::Algorithm::maml, .inner_steps = 2, .learned_layer_rates = true}},
    };
    for (const auto& [name, config] : configs) {
      INFO(name);
      const meta::MetaParams p = random_meta_params(model, config, 12);
      const meta::MetaStep reference = meta::meta_gradient(model, meta::Loss::mse, config, p, batch, 0);
      mt::TapeScope scope;
      std::vector<Tensor> leaves;
      for (const Tensor& t : p.all()) leaves.push_back(t.detach().requires_grad_());
      const meta::MetaParams recorded = meta::MetaParams::from_all(leaves, p.model.size());
      const meta::Adapted adapted =
          meta::adapt(model, meta::Loss::mse, config, recorded, batch, config.inner_steps, {.record = true});
      const Tensor outer =
          mt::mean(meta::per_task_loss(meta::Loss::mse, model.forward(adapted.params, batch.query_x), batch.query_y));
      CHECK(outer.item() == doctest::Approx(reference.meta_loss).epsilon(1e-14));
      const std::vector<Tensor> grads = mt::grad(outer, leaves);
      for (std::size_t i = 0; i < grads.size(); ++i) {
        INFO("tensor " << i);
        const double scale = mt::max(mt::abs(mt::flatten(reference.grads[i])), 0).item();
        CHECK(max_abs_diff(grads[i], reference.grads[i]) <= 1e-13 * scale);
      }
    }
  }

  TEST_CASE("adapt's history starts at θ, ends at the result and gives the adaptation curve") {
    const meta::Mlp model({1, 8, 1});
    const meta::MetaConfig config{.algorithm = meta::Algorithm::anil, .inner_steps = 1, .inner_lr = 0.1};
    const meta::MetaParams p = random_meta_params(model, config, 5);
    const meta::TaskBatch batch = sinusoid(3, 5, 4, 9);
    const meta::Adapted adapted = meta::adapt(model, meta::Loss::mse, config, p, batch, 3, {.history = true});
    REQUIRE(adapted.history.size() == 4);
    CHECK(max_abs_diff(adapted.history.back(), adapted.params) == 0);
    CHECK(max_abs_diff(adapted.history.front(), meta::per_task(p.model, 3)) == 0);
    CHECK(max_abs_diff(adapted.params[0], meta::per_task({p.model[0]}, 3)[0]) == 0);  // ANIL: the body stays
    CHECK(max_abs_diff(adapted.params[2], meta::per_task({p.model[2]}, 3)[0]) > 0);   // the head adapts
    const auto curve = meta::adaptation_curve(model, meta::Loss::mse, config, p, batch, 3);
    for (std::size_t k = 0; k < curve.size(); ++k) {
      const Tensor losses =
          meta::per_task_loss(meta::Loss::mse, model.forward(adapted.history[k], batch.query_x), batch.query_y);
      CHECK(max_abs_diff(losses, mt::from_vector(curve[k], {3}, f64)) <= 1e-13);
    }
  }

  TEST_CASE("a ragged batch's meta-gradient is the mean of one-task calls") {
    const meta::Mlp model({1, 6, 6, 1}, meta::Activation::tanh);
    // Tasks of 3, 5 and 8 support and 2, 7 and 4 query points; the first two
    // also as one group of two equal tasks beside them.
    const std::vector<meta::TaskBatch> tasks = {sinusoid(1, 3, 2, 21), sinusoid(1, 5, 7, 22), sinusoid(1, 8, 4, 23)};
    const meta::TaskBatch pair = sinusoid(2, 4, 4, 24);
    const std::vector<std::pair<std::string, meta::MetaConfig>> configs = {
        {"maml", {.algorithm = meta::Algorithm::maml, .inner_steps = 2, .inner_lr = 0.05}},
        {"metasgd", {.algorithm = meta::Algorithm::metasgd, .inner_steps = 1, .inner_lr = 0.05}},
        {"maml++", {.inner_steps = 3, .learned_layer_rates = true, .multi_step_loss = true}},
        {"anil", {.algorithm = meta::Algorithm::anil, .inner_steps = 1, .inner_lr = 0.05}},
        {"reptile", {.algorithm = meta::Algorithm::reptile, .inner_steps = 2, .inner_lr = 0.05}},
        {"pretrain", {.algorithm = meta::Algorithm::pretrain}},
    };
    for (const auto& [name, config] : configs) {
      INFO(name);
      const meta::MetaParams p = random_meta_params(model, config, 13);
      meta::RaggedTaskBatch ragged;
      for (const meta::TaskBatch& t : tasks)  // through add_task: tensors without the task axis
        ragged.add_task(mt::squeeze(t.support_x, 0), mt::squeeze(t.support_y, 0), mt::squeeze(t.query_x, 0),
                        mt::squeeze(t.query_y, 0));
      ragged.groups.push_back(pair);
      const meta::MetaStep step = meta::meta_gradient(model, meta::Loss::mse, config, p, ragged, 40);
      // The reference: five one-task calls, averaged.
      std::vector<meta::TaskBatch> singles = tasks;
      singles.push_back(with_task_axis(pair, 0));
      singles.push_back(with_task_axis(pair, 1));
      double loss = 0;
      std::vector<Tensor> grads;
      std::vector<double> task_losses;
      for (const meta::TaskBatch& one : singles) {
        const meta::MetaStep s = meta::meta_gradient(model, meta::Loss::mse, config, p, one, 40);
        loss += s.meta_loss / 5;
        task_losses.push_back(s.task_losses[0]);
        grads.resize(s.grads.size());
        for (std::size_t i = 0; i < s.grads.size(); ++i)
          grads[i] = grads[i].defined() ? grads[i] + s.grads[i] / 5.0 : s.grads[i] / 5.0;
      }
      CHECK(step.meta_loss == doctest::Approx(loss).epsilon(1e-14));
      REQUIRE(step.task_losses.size() == 5);
      for (std::size_t t = 0; t < 5; ++t) CHECK(step.task_losses[t] == doctest::Approx(task_losses[t]).epsilon(1e-13));
      for (std::size_t i = 0; i < grads.size(); ++i) {
        INFO("tensor " << i);
        const double scale = mt::max(mt::abs(mt::flatten(grads[i])), 0).item();
        CHECK(max_abs_diff(step.grads[i], grads[i]) <= 1e-13 * scale);
      }
      // The evaluation and adapt paths take it too: each group's tasks in turn.
      const auto curve = meta::adaptation_curve(model, meta::Loss::mse, config, p, ragged, 2);
      const auto adapted = meta::adapt(model, meta::Loss::mse, config, p, ragged, 2);
      REQUIRE(adapted.size() == 4);
      for (std::size_t t = 0; t < 5; ++t) {
        const std::size_t group = std::min<std::size_t>(t, 3), within = t < 3 ? 0 : t - 3;
        const meta::TaskBatch& b = ragged.groups[group];
        const Tensor losses =
            meta::per_task_loss(meta::Loss::mse, model.forward(adapted[group].params, b.query_x), b.query_y);
        CHECK(losses.to_vector()[within] == doctest::Approx(curve[2][t]).epsilon(1e-13));
      }
    }
  }

  TEST_CASE("Mlp and Conv4 take one task without the task axis; errors name the caller's shapes") {
    const meta::Mlp mlp({4, 5, 3});
    mt::Generator gen(31);
    const std::vector<Tensor> w = mlp.init(gen, f64);
    const Tensor x = mt::normal({6, 4}, 0, 1, gen, f64);
    const Tensor y = mlp.forward(w, x);
    CHECK(y.shape() == mt::Shape{6, 3});
    CHECK(max_abs_diff(y, mt::squeeze(mlp.forward(w, mt::unsqueeze(x, 0)), 0)) == 0);
    std::vector<Tensor> bad = w;
    bad[3] = mt::zeros({1, 3}, f64);  // b2 with a stray axis
    const std::string unbatched = mt::testing::throws_error<mt::ShapeError>([&] { (void)mlp.forward(bad, x); }).message;
    CHECK(unbatched.find("parameter b2 has shape [1, 3], expected [3]") != std::string::npos);
    CHECK(unbatched.find("[1, 1, 3]") == std::string::npos);
    CHECK(mt::testing::throws_error<mt::ShapeError>([&] {
            (void)mlp.forward(w, mt::zeros({6, 5}, f64));
          }).message.find("inputs must be [points, 4], got [6, 5]") != std::string::npos);
    // Through the meta API the parameter is named as passed, not as the
    // per-task copy [T, 1, 3] it would become.
    meta::MetaParams p{bad, {}};
    const std::string through_meta =
        mt::testing::throws_error<mt::ShapeError>([&] {
          (void)meta::meta_gradient(mlp, meta::Loss::mse, {}, p,
                                    meta::TaskBatch{mt::zeros({2, 3, 4}, f64), mt::zeros({2, 3, 3}, f64),
                                                    mt::zeros({2, 3, 4}, f64), mt::zeros({2, 3, 3}, f64)},
                                    0);
        }).message;
    CHECK(through_meta.find("params.model[3] (b2) has shape [1, 3], expected [3]") != std::string::npos);
    CHECK(through_meta.find("[2, 1, 3]") == std::string::npos);

    const meta::Conv4 conv({.in_channels = 1, .image_size = 16, .channels = 2, .classes = 3});
    const std::vector<Tensor> cw = conv.init(gen, f64);
    const Tensor images = mt::normal({4, 1, 16, 16}, 0, 1, gen, f64);
    const Tensor logits = conv.forward(cw, images);
    CHECK(logits.shape() == mt::Shape{4, 3});
    CHECK(max_abs_diff(logits, mt::squeeze(conv.forward(cw, mt::unsqueeze(images, 0)), 0)) == 0);
    CHECK(mt::testing::throws_error<mt::ShapeError>([&] {
            (void)conv.forward(cw, mt::zeros({4, 2, 16, 16}, f64));
          }).message.find("inputs must be [points, 1, 16, 16], got [4, 2, 16, 16]") != std::string::npos);
  }

  TEST_CASE("per_task_loss takes one task without the task axis") {
    mt::Generator gen(32);
    const Tensor prediction = mt::normal({5, 3}, 0, 1, gen, f64), target = mt::normal({5, 3}, 0, 1, gen, f64);
    const Tensor mse = meta::per_task_loss(meta::Loss::mse, prediction, target);
    CHECK(mse.rank() == 0);
    CHECK(mse.item() == doctest::Approx(mt::mean(mt::square(prediction - target)).item()).epsilon(1e-15));
    const Tensor labels = mt::from_indices({0, 2, 1, 1, 0}, {5});
    const Tensor ce = meta::per_task_loss(meta::Loss::cross_entropy, prediction, labels);
    CHECK(ce.rank() == 0);
    CHECK(ce.item() == doctest::Approx(meta::per_task_loss(meta::Loss::cross_entropy, mt::unsqueeze(prediction, 0),
                                                           mt::unsqueeze(labels, 0))
                                           .to_vector()[0])
                           .epsilon(1e-15));
    CHECK(mt::testing::throws_error<mt::ShapeError>([&] {
            (void)meta::per_task_loss(meta::Loss::mse, prediction, mt::zeros({5}, f64));
          }).message.find("mse targets [5] do not match predictions [5, 3]") != std::string::npos);
    CHECK(mt::testing::throws_error<mt::ShapeError>([&] {
            (void)meta::per_task_loss(meta::Loss::cross_entropy, prediction, mt::unsqueeze(labels, 0));
          }).message.find("labels must be i64 [5] for predictions [5, 3], got i64 [1, 5]") != std::string::npos);
  }

  TEST_CASE("per_task_accuracy counts the points whose first largest output is the label") {
    // Task 0: rows predict 2, 0 (a tie between 0 and 1: the first wins), 1;
    // task 1: 1, 1, 2.
    const Tensor logits = mt::from_vector({0, 1, 5, 3, 3, 0, -1, 2, 1,  //
                                           0, 4, 1, 2, 3, 3, 0, 0, 1},
                                          {2, 3, 3}, f64);
    const std::vector<double> accuracy =
        meta::per_task_accuracy(logits, mt::from_indices({2, 0, 0, /**/ 1, 2, 2}, {2, 3}));
    REQUIRE(accuracy.size() == 2);
    CHECK(accuracy[0] == doctest::Approx(2.0 / 3));
    CHECK(accuracy[1] == doctest::Approx(2.0 / 3));
    const Tensor poisoned = mt::from_vector({0, 1, 5, 3, 3, 0, -1, 2, 1,  //
                                             0, 4, 1, 2, 3, 3, 0, NAN, 1},
                                            {2, 3, 3}, f64);
    const std::vector<double> with_nan =
        meta::per_task_accuracy(poisoned, mt::from_indices({2, 0, 0, /**/ 1, 2, 2}, {2, 3}));
    CHECK(with_nan[0] == doctest::Approx(2.0 / 3));
    CHECK(std::isnan(with_nan[1]));
    CHECK(mt::testing::throws_error<mt::ShapeError>([&] {
            (void)meta::per_task_accuracy(mt::zeros({3, 3}, f64), mt::from_indices({0, 1, 2}, {3}));
          }).message.find("logits must be [tasks, points, classes], got [3, 3]") != std::string::npos);
    CHECK(mt::testing::throws_error<mt::DTypeError>([&] {
            (void)meta::per_task_accuracy(logits, mt::zeros({2, 3}, f64));
          }).message.find("labels must be i64") != std::string::npos);
  }

  TEST_CASE("query_curve: accuracy rows are those of the adapted parameters' outputs; evaluate summarises them") {
    const meta::Mlp model({2, 6, 3}, meta::Activation::tanh);
    for (const meta::Algorithm algorithm : {meta::Algorithm::maml, meta::Algorithm::kernel}) {
      CAPTURE(meta::algorithm_name(algorithm));
      meta::MetaConfig config{.algorithm = algorithm, .inner_steps = 2, .inner_lr = 0.3};
      config.kernel.form = meta::KernelForm::steps;
      const meta::MetaParams p = random_meta_params(model, config, 4);
      mt::Generator gen(5);
      const Tensor labels = mt::from_indices({0, 1, 2, 2, 1, 0, 0, 0, 1, 2, 1, 2}, {3, 4});
      const meta::TaskBatch batch{mt::normal({3, 4, 2}, 0, 1, gen, f64), labels, mt::normal({3, 4, 2}, 0, 1, gen, f64),
                                  labels};
      const meta::QueryCurve curve = meta::query_curve(model, meta::Loss::cross_entropy, config, p, batch, 2);
      CHECK(curve.loss == meta::adaptation_curve(model, meta::Loss::cross_entropy, config, p, batch, 2));
      REQUIRE(curve.accuracy.size() == curve.loss.size());
      CHECK(curve.accuracy.front() == meta::per_task_accuracy(model.forward(p.model, batch.query_x), labels));
      if (algorithm == meta::Algorithm::kernel) {
        const meta::KernelAdapted adapted = meta::kernel_adapt(model, meta::Loss::cross_entropy, config, p, batch);
        CHECK(curve.accuracy.back() == meta::per_task_accuracy(adapted.query_prediction, labels));
      } else {
        const meta::Adapted adapted = meta::adapt(model, meta::Loss::cross_entropy, config, p, batch, 2);
        CHECK(curve.accuracy.back() == meta::per_task_accuracy(model.forward(adapted.params, batch.query_x), labels));
      }
      CHECK(meta::query_curve(
                model, meta::Loss::mse, config, p,
                meta::TaskBatch{batch.support_x, mt::zeros({3, 4, 3}, f64), batch.query_x, mt::zeros({3, 4, 3}, f64)},
                2)
                .accuracy.empty());
    }
    const std::vector<meta::StepSummary> summary = meta::summarize(meta::QueryCurve{{{1.0, 3.0}}, {{0.5, 1.0}}});
    REQUIRE(summary.front().accuracy.has_value());
    CHECK(summary.front().accuracy->mean == doctest::Approx(0.75));
    CHECK(summary.front().accuracy->ci95 == doctest::Approx(1.96 * std::sqrt(0.125) / std::sqrt(2.0)));
    CHECK_FALSE(meta::summarize({{1.0, 3.0}}).front().accuracy.has_value());
  }

  TEST_CASE("evaluate: adapting fewer tasks at a time draws the same tasks and gives the same summaries") {
    // The samplers draw task by task, and each task adapts on its own.
    const meta::Mlp model({1, 8, 1}, meta::Activation::tanh);
    const meta::MetaConfig maml{.inner_steps = 1, .inner_lr = 0.3};
    const meta::MetaParams p = random_meta_params(model, maml, 6);
    const auto evaluated = [&](std::int64_t chunk) {
      return meta::evaluate(model, meta::Loss::mse, maml, p, meta::SinusoidTasks(),
                            {.tasks = 7, .shots = 3, .queries = 4, .steps = 2, .chunk = chunk}, f64);
    };
    const std::vector<meta::StepSummary> whole = evaluated(200);
    for (const std::int64_t chunk : {1, 3}) {
      const std::vector<meta::StepSummary> parts = evaluated(chunk);
      REQUIRE(parts.size() == whole.size());
      for (std::size_t k = 0; k < whole.size(); ++k) {
        CHECK(parts[k].mean == doctest::Approx(whole[k].mean).epsilon(1e-12));
        CHECK(parts[k].ci95 == doctest::Approx(whole[k].ci95).epsilon(1e-12));
      }
    }
  }

  TEST_CASE(
      "the sinusoid mixture: its amplitudes come from both components; at probability 0 the stream is unchanged") {
    mt::Generator a(7), b(7);
    const meta::TaskBatch plain = meta::SinusoidTasks().sample(4, 3, 2, a, f64);
    const meta::TaskBatch zero = meta::SinusoidTasks({.mixture_probability = 0.0}).sample(4, 3, 2, b, f64);
    CHECK(mt::testing::same_bits({plain.support_y, plain.query_x}, {zero.support_y, zero.query_x}));

    // Amplitudes in [0.1, 0.5] or [4, 5]: a task's largest |y| over many
    // points tells which component it came from.
    mt::Generator gen(3);
    const meta::SinusoidTasks mixture(
        {.amplitude_low = 0.1, .amplitude_high = 0.5, .mixture_probability = 0.3, .mixture_low = 4, .mixture_high = 5});
    const std::vector<double> y = mixture.sample(200, 50, 1, gen, f64).support_y.to_vector();
    int high = 0;
    for (int t = 0; t < 200; ++t) {
      double peak = 0;
      for (int i = 0; i < 50; ++i) peak = std::max(peak, std::abs(y[static_cast<std::size_t>(t * 50 + i)]));
      CHECK((peak <= 0.5 || (peak > 2 && peak <= 5)));
      high += peak > 2;
    }
    CHECK(high > 30);  // 60 expected
    CHECK(high < 90);
    CHECK(mt::testing::throws_error<mt::ValueError>([] { meta::SinusoidTasks({.mixture_probability = 1.5}); },
                                                    {"mixture probability must be in [0, 1]"}));
  }
}
