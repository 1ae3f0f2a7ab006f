// The meta-NTK (docs/methods.md §4): Φ = ΨΨᵀ against the literal block
// formula, its identities (symmetry, PSD, τ = 0, t = ∞, monotonicity in τ,
// task permutations), the unrolled-MAML meta-Jacobian of a linear model, the
// ANIL kernel, the kernel-regression prediction and the errors. float64.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "metatape/functional.hpp"
#include "metatape/meta/architecture_ranking.hpp"
#include "metatape/meta/maml.hpp"
#include "metatape/meta/meta_ntk.hpp"
#include "test_util.hpp"

namespace mt = metatape;
namespace meta = metatape::meta;
using mt::Tensor;
using mt::testing::relative_error;
using mt::testing::throws_error;

namespace {

constexpr auto f64 = mt::DType::f64;

Tensor randn(std::int64_t rows, std::int64_t cols, mt::Generator& gen) {
  return mt::normal(mt::Shape{rows, cols}, 0.0, 1.0, gen, f64);
}

// A meta-batch of standard normal inputs x [tasks, n', d] and [tasks, n, d],
// drawn support first; with outputs > 0 also normal targets [.., outputs],
// each drawn right after its inputs.
meta::TaskBatch gaussian_batch(std::int64_t tasks, std::int64_t n_support, std::int64_t n_query, std::int64_t d,
                               std::int64_t outputs, mt::Generator& gen) {
  meta::TaskBatch batch;
  batch.support_x = mt::normal(mt::Shape{tasks, n_support, d}, 0, 1, gen, f64);
  if (outputs > 0) batch.support_y = mt::normal(mt::Shape{tasks, n_support, outputs}, 0, 1, gen, f64);
  batch.query_x = mt::normal(mt::Shape{tasks, n_query, d}, 0, 1, gen, f64);
  if (outputs > 0) batch.query_y = mt::normal(mt::Shape{tasks, n_query, outputs}, 0, 1, gen, f64);
  return batch;
}

// A task of random features: n query rows, n' support rows, width d.
meta::MetaNtkTask random_task(std::int64_t n, std::int64_t n_support, std::int64_t d, mt::Generator& gen) {
  meta::MetaNtkTask task;
  task.query = randn(n, d, gen);
  task.support = randn(n_support, d, gen);
  task.loss_scale = 2.0 / static_cast<double>(n_support);
  return task;
}

std::vector<meta::MetaNtkTask> random_tasks(int count, std::int64_t n, std::int64_t n_support, std::int64_t d,
                                            std::uint64_t seed) {
  mt::Generator gen(seed);
  std::vector<meta::MetaNtkTask> tasks;
  for (int i = 0; i < count; ++i) tasks.push_back(random_task(n, n_support, d, gen));
  return tasks;
}

// Block (i, j) of Φ.
Tensor block(const meta::MetaNtkResult& r, std::size_t i, std::size_t j) {
  return mt::slice(mt::slice(r.phi, 0, r.offsets[i], r.offsets[i + 1]), 1, r.offsets[j], r.offsets[j + 1]);
}

bool exactly_symmetric(const Tensor& a) {
  const std::vector<double> v = a.to_vector(), t = mt::transpose(a).to_vector();
  return v == t;
}

double max_abs(const Tensor& a) {
  double m = 0;
  for (double v : a.to_vector()) m = std::max(m, std::abs(v));
  return m;
}

meta::MetaNtkOptions steps(double lr, std::int64_t tau) {
  meta::MetaNtkOptions o;
  o.form = meta::KernelForm::steps;
  o.inner_lr = lr;
  o.inner_steps = tau;
  return o;
}

// The unrolled meta-Jacobian [T·n·C, D]: the query outputs after the inner
// loop of `config` (config.inner_steps steps, recorded) differentiated with
// respect to the parameters params[i], i in `wrt` (flattened, concatenated
// in that order); the others are held at their values.
Tensor unrolled_meta_jacobian(const meta::Model& model, const meta::MetaConfig& config,
                              const std::vector<Tensor>& params, const meta::TaskBatch& batch,
                              const std::vector<std::size_t>& wrt) {
  auto adapted_outputs = [&](const std::vector<Tensor>& varied) {
    std::vector<Tensor> theta = params;
    for (std::size_t k = 0; k < wrt.size(); ++k) theta[wrt[k]] = varied[k];
    const meta::Adapted a = meta::adapt(model, meta::Loss::mse, config, meta::MetaParams{theta, {}}, batch,
                                        config.inner_steps, {.record = true});
    return model.forward(a.params, batch.query_x);
  };
  std::vector<Tensor> primals;
  for (std::size_t i : wrt) primals.push_back(params[i]);
  return mt::concat(mt::jacobian(adapted_outputs, primals, {.flatten = true}), 1);
}

meta::MetaNtkOptions flow(double time, double inverse_ridge = 1e-3) {
  meta::MetaNtkOptions o;
  o.form = meta::KernelForm::flow;
  o.time = time;
  o.inverse_ridge = inverse_ridge;
  return o;
}

}  // namespace

TEST_SUITE("meta-ntk") {
  TEST_CASE("Φ = ΨΨᵀ is exactly symmetric and PSD, and equals the literal block formula to 1e-8") {
    const auto tasks = random_tasks(3, 4, 5, 12, 7);
    for (const meta::MetaNtkOptions& o : {steps(0.05, 3), flow(0.7), flow(INFINITY)}) {
      const meta::MetaNtkResult r = meta::meta_ntk(tasks, o);
      CHECK(r.phi.shape() == mt::Shape{12, 12});
      CHECK(exactly_symmetric(r.phi));
      CHECK(r.eigenvalues.front() >= -1e-12 * r.eigenvalues.back());
      CHECK(relative_error(meta::meta_ntk_block_formula(tasks, o), r.phi) < 1e-8);
    }
  }

  TEST_CASE("the literal block formula cancels where Φ is small; ΨΨᵀ stays exactly symmetric") {
    // Queries next to the supports at t = ∞: Φ is a small difference of large terms.
    auto tasks = random_tasks(3, 4, 6, 12, 7);
    mt::Generator gen(5);
    for (auto& t : tasks) t.query = mt::slice(t.support, 0, 0, 4) + randn(4, 12, gen) * 1e-3;
    const meta::MetaNtkOptions o = flow(INFINITY, 1e-6);
    const meta::MetaNtkResult r = meta::meta_ntk(tasks, o);
    const Tensor literal = meta::meta_ntk_block_formula(tasks, o);
    CHECK(exactly_symmetric(r.phi));
    CHECK_FALSE(exactly_symmetric(literal));  // off by rounding of the cancelled terms (~1e-10 relative)
    CHECK(relative_error(literal, r.phi) < 1e-8);
    CHECK(r.eigenvalues.front() > 0);
  }

  TEST_CASE("τ = 0 gives Φ = Θ(X, X) over the stacked query sets") {
    const auto tasks = random_tasks(3, 3, 4, 8, 11);
    const meta::MetaNtkResult r = meta::meta_ntk(tasks, steps(0.1, 0));
    const Tensor q = mt::concat({tasks[0].query, tasks[1].query, tasks[2].query}, 0);
    CHECK(relative_error(r.phi, mt::matmul(q, q, false, true)) < 1e-15);
  }

  TEST_CASE("query = support at t = ∞ gives Φ_ii ≈ 0 (the Schur complement vanishes)") {
    auto tasks = random_tasks(2, 4, 4, 10, 13);
    for (auto& t : tasks) t.query = t.support;
    const meta::MetaNtkResult r = meta::meta_ntk(tasks, flow(INFINITY, 1e-10));
    const Tensor theta = mt::matmul(tasks[0].query, tasks[0].query, false, true);
    CHECK(max_abs(block(r, 0, 0)) < 1e-8 * max_abs(theta));
    CHECK(max_abs(block(r, 1, 1)) < 1e-8 * max_abs(theta));
    // Every projection vanishes, so the off-diagonal blocks do too.
    CHECK(max_abs(block(r, 0, 1)) < 1e-8 * max_abs(theta));
  }

  TEST_CASE("Φ_ii is non-increasing in τ in the Loewner order") {
    const auto tasks = random_tasks(2, 3, 5, 9, 17);
    // A stable step: c·α·λmax(K') < 1.
    const Tensor k = mt::matmul(tasks[0].support, tasks[0].support, false, true);
    const double lr = 0.9 / (tasks[0].loss_scale * meta::symmetric_eigenvalues(k).back());
    Tensor previous;
    for (std::int64_t tau = 0; tau <= 5; ++tau) {
      const Tensor phi00 = block(meta::meta_ntk(tasks, steps(lr, tau)), 0, 0);
      if (previous.defined()) {
        const Tensor difference = previous - phi00;
        const std::vector<double> ev = meta::symmetric_eigenvalues((difference + mt::transpose(difference)) * 0.5);
        CHECK(ev.front() >= -1e-10 * max_abs(previous));
        CHECK(ev.back() > 0);  // it does decrease
      }
      previous = phi00;
    }
  }

  TEST_CASE("permuting the tasks permutes Φ's blocks") {
    const auto tasks = random_tasks(3, 2, 3, 7, 19);
    const std::vector<meta::MetaNtkTask> permuted = {tasks[2], tasks[0], tasks[1]};
    const std::vector<std::size_t> from = {2, 0, 1};
    const meta::MetaNtkResult a = meta::meta_ntk(tasks, steps(0.05, 2));
    const meta::MetaNtkResult b = meta::meta_ntk(permuted, steps(0.05, 2));
    for (std::size_t i = 0; i < 3; ++i)
      for (std::size_t j = 0; j < 3; ++j) CHECK(relative_error(block(b, i, j), block(a, from[i], from[j])) < 1e-14);
  }

  TEST_CASE("the unrolled-MAML meta-Jacobian of a linear model is Ψ, and its Gram matrix is Φ") {
    // f = xᵀw + b, linear in θ = (w, b): its features are G(x) = [x, 1].
    const std::int64_t d = 3, tasks = 2, n_support = 4, n_query = 3, tau = 3;
    const double lr = 0.2;
    const meta::Mlp model({d, 1});
    mt::Generator gen(23);
    const std::vector<Tensor> params = model.init(gen, f64);
    const meta::TaskBatch batch = gaussian_batch(tasks, n_support, n_query, d, 1, gen);
    meta::MetaConfig config;
    config.algorithm = meta::Algorithm::maml;
    config.inner_steps = tau;
    config.inner_lr = lr;
    // The adapted query outputs as a function of θ, τ SGD steps of metatape's inner loop.
    const Tensor jac = unrolled_meta_jacobian(model, config, params, batch, {0, 1});  // [T·n, d + 1]
    std::vector<meta::MetaNtkTask> features;
    auto with_ones = [](const Tensor& x) { return mt::concat({x, mt::ones(mt::Shape{x.dim(0), 1}, f64)}, 1); };
    for (std::int64_t i = 0; i < tasks; ++i) {
      meta::MetaNtkTask t;
      t.query = with_ones(mt::squeeze(mt::slice(batch.query_x, 0, i, i + 1), 0));
      t.support = with_ones(mt::squeeze(mt::slice(batch.support_x, 0, i, i + 1), 0));
      t.loss_scale = 2.0 / static_cast<double>(n_support);
      features.push_back(t);
    }
    const meta::MetaNtkResult r = meta::meta_ntk(features, steps(lr, tau));
    CHECK(relative_error(r.projections, jac) < 1e-12);
    CHECK(relative_error(r.phi, mt::matmul(jac, jac, false, true)) < 1e-12);
    // The features from the model's Jacobian rows agree with [x, 1].
    const meta::MetaNtkResult m = meta::meta_ntk(model, params, batch, steps(lr, tau));
    CHECK(relative_error(m.phi, r.phi) < 1e-12);
  }

  TEST_CASE(
      "two outputs: the meta-Jacobian is Ψ in full mode (c = 2/(n'·C)), and the trace kernel is its per-output "
      "block") {
    // f = xᵀW + b with W [d, 2]: J_c(x) J_c'(x')ᵀ = δ_cc' (xᵀx' + 1), so the full kernel is the trace kernel ⊗ I.
    const std::int64_t d = 2, tasks = 2, n_support = 3, n_query = 2, tau = 2, outputs = 2;
    const double lr = 0.3;
    const meta::Mlp model({d, outputs});
    mt::Generator gen(27);
    const std::vector<Tensor> params = model.init(gen, f64);
    const meta::TaskBatch batch = gaussian_batch(tasks, n_support, n_query, d, outputs, gen);
    meta::MetaConfig config;
    config.inner_steps = tau;
    config.inner_lr = lr;
    const Tensor jac = unrolled_meta_jacobian(model, config, params, batch, {0, 1});  // rows (t, i, c)
    meta::MetaNtkOptions o = steps(lr, tau);
    o.mode = meta::KernelMode::full;
    const meta::MetaNtkResult full = meta::meta_ntk(model, params, batch, o);
    CHECK(relative_error(full.projections, jac) < 1e-12);
    o.mode = meta::KernelMode::trace;
    const meta::MetaNtkResult trace = meta::meta_ntk(model, params, batch, o);
    const std::int64_t n = tasks * n_query;
    for (std::int64_t c = 0; c < outputs; ++c) {
      const Tensor rows = mt::squeeze(mt::slice(mt::reshape(full.phi, {n, outputs, n, outputs}), 1, c, c + 1), 1);
      const Tensor per_output = mt::squeeze(mt::slice(rows, 2, c, c + 1), 2);
      CHECK(relative_error(trace.phi, per_output) < 1e-12);
    }
  }

  TEST_CASE("ANIL: K is the head kernel in T_i and K(X_i, X'_i); with the head = everything it is MAML") {
    auto tasks = random_tasks(2, 3, 4, 10, 29);
    for (auto& t : tasks) {
      t.query_head = mt::slice(t.query, 1, 6, 10);
      t.support_head = mt::slice(t.support, 1, 6, 10);
    }
    meta::MetaNtkOptions o = steps(0.1, 2);
    o.anil = true;
    const meta::MetaNtkResult r = meta::meta_ntk(tasks, o);
    // By hand: P = G(X) − K_h(X, X') T(K_h(X', X')) G(X').
    const auto& t0 = tasks[0];
    const Tensor kh = mt::matmul(t0.support_head, t0.support_head, false, true);
    const Tensor t = mt::sgd_steps_operator(kh, t0.loss_scale * 0.1, 2);
    const Tensor p0 =
        t0.query - mt::matmul(mt::matmul(mt::matmul(t0.query_head, t0.support_head, false, true), t), t0.support);
    CHECK(relative_error(mt::slice(r.projections, 0, 0, 3), p0) < 1e-13);
    CHECK(relative_error(meta::meta_ntk_block_formula(tasks, o), r.phi) < 1e-8);
    const meta::MetaNtkResult maml = meta::meta_ntk(tasks, steps(0.1, 2));
    CHECK(relative_error(maml.phi, r.phi) > 1e-3);  // a different kernel
    for (auto& task : tasks) {
      task.query_head = task.query;
      task.support_head = task.support;
    }
    CHECK(relative_error(meta::meta_ntk(tasks, o).phi, maml.phi) < 1e-14);
  }

  TEST_CASE("ANIL features of a model are the head's Jacobian columns") {
    const meta::Mlp model({2, 5, 1}, meta::Activation::tanh);
    mt::Generator gen(31);
    const std::vector<Tensor> params = model.init(gen, f64);
    const meta::TaskBatch batch = gaussian_batch(2, 3, 2, 2, 0, gen);
    meta::MetaNtkOptions o = steps(0.3, 1);
    o.anil = true;
    const auto tasks = meta::meta_ntk_tasks(model, params, batch, o);
    REQUIRE(tasks.size() == 2);
    // Parameters w1 [2,5], b1 [5], w2 [5,1], b2 [1]: the head is the last 6 columns.
    CHECK(relative_error(tasks[1].support_head, mt::slice(tasks[1].support, 1, 15, 21)) < 1e-15);
    CHECK(tasks[0].loss_scale == doctest::Approx(2.0 / 3.0));
    const meta::MetaNtkResult r = meta::meta_ntk(tasks, o);
    CHECK(exactly_symmetric(r.phi));
    CHECK(r.eigenvalues.front() >= -1e-12 * r.eigenvalues.back());
  }

  TEST_CASE("ANIL's unrolled meta-Jacobian with respect to the head is Ψ's head columns") {
    // With the body fixed the adapted outputs are linear in the head, so the
    // identity is exact for any body (tanh here).
    const meta::Mlp model({2, 5, 1}, meta::Activation::tanh);
    mt::Generator gen(33);
    std::vector<Tensor> params = model.init(gen, f64);
    params[0] = mt::normal(mt::Shape{2, 5}, 0, 1, gen, f64);  // a body far from linear
    const meta::TaskBatch batch = gaussian_batch(2, 4, 3, 2, 1, gen);
    meta::MetaConfig config;
    config.algorithm = meta::Algorithm::anil;
    config.inner_steps = 2;
    config.inner_lr = 0.4;
    const Tensor jac = unrolled_meta_jacobian(model, config, params, batch, {2, 3});  // the head's columns
    meta::MetaNtkOptions o = steps(0.4, 2);
    o.anil = true;
    const meta::MetaNtkResult r = meta::meta_ntk(model, params, batch, o);
    CHECK(relative_error(mt::slice(r.projections, 1, 15, 21), jac) < 1e-12);
  }

  TEST_CASE("a model's Φ at τ = 0 is its empirical NTK over the stacked query sets: symmetric PSD") {
    const meta::Mlp model({3, 6, 2}, meta::Activation::tanh);
    mt::Generator gen(35);
    const std::vector<Tensor> params = model.init(gen, f64);
    const meta::TaskBatch batch = gaussian_batch(3, 2, 4, 3, 0, gen);
    const meta::MetaNtkResult r = meta::meta_ntk(model, params, batch, steps(0.5, 0));
    const Tensor theta = meta::empirical_ntk(model, params, mt::reshape(batch.query_x, {12, 3}));  // trace mode
    CHECK(relative_error(r.phi, theta) < 1e-12);
    CHECK(exactly_symmetric(r.phi));
    CHECK(r.eigenvalues.front() >= -1e-12 * r.eigenvalues.back());
  }

  TEST_CASE("on the sinusoid's 1-D inputs Φ is numerically singular: κ means something only with a ridge") {
    const meta::Mlp model({1, 40, 40, 1});
    mt::Generator gen(39);
    const std::vector<Tensor> params = model.init(gen, f64);
    const meta::TaskBatch batch = meta::SinusoidTasks().sample(3, 5, 10, gen, f64);
    meta::MetaNtkOptions o = steps(0.01, 1);
    const meta::MetaNtkResult bare = meta::meta_ntk(model, params, batch, o);
    CHECK(bare.condition_number > 1e10);  // 1e16 and beyond, or +inf: rounding decides
    o.ridge = 1e-6;
    const meta::MetaNtkResult ridged = meta::meta_ntk(model, params, batch, o);
    CHECK(ridged.condition_number == meta::ridged_condition_number(bare.eigenvalues, 1e-6));
    CHECK(ridged.condition_number < 1e10);
    CHECK(ridged.condition_number > 1.0);
  }

  TEST_CASE("trace and full modes agree for one output; κ is stated with its ridge") {
    const meta::Mlp model({3, 8, 1}, meta::Activation::tanh);
    mt::Generator gen(37);
    const std::vector<Tensor> params = model.init(gen, f64);
    const meta::TaskBatch batch = gaussian_batch(2, 3, 4, 3, 0, gen);
    meta::MetaNtkOptions o = steps(0.5, 2);
    const meta::MetaNtkResult trace = meta::meta_ntk(model, params, batch, o);
    o.mode = meta::KernelMode::full;
    o.ridge = 1e-3;
    const meta::MetaNtkResult full = meta::meta_ntk(model, params, batch, o);
    CHECK(relative_error(full.phi, trace.phi) < 1e-14);
    CHECK(full.ridge == 1e-3);
    const double lo = full.eigenvalues.front(), hi = full.eigenvalues.back();
    CHECK(full.condition_number == doctest::Approx((hi + 1e-3) / (lo + 1e-3)).epsilon(1e-12));
    CHECK(meta::ridged_condition_number({-1e-9, 1.0}, 0.0) == std::numeric_limits<double>::infinity());
  }

  TEST_CASE("prediction: F_0 at t = 0; interpolates Y on the training query points as t → ∞") {
    const auto tasks = random_tasks(2, 3, 2, 20, 41);  // Ψ [6, 20]: Φ positive definite
    const meta::MetaNtkResult r = meta::meta_ntk(tasks, steps(0.1, 1));
    mt::Generator gen(43);
    const Tensor f0 = randn(6, 2, gen), y = randn(6, 2, gen);
    const auto test_tasks = random_tasks(1, 4, 2, 20, 47);
    const Tensor cross = meta::meta_ntk_cross(test_tasks, r.projections, steps(0.1, 1));
    CHECK(cross.shape() == mt::Shape{4, 6});
    const Tensor f0_test = randn(4, 2, gen);
    CHECK(relative_error(meta::meta_ntk_predict(r.phi, cross, f0, y, f0_test, 0.5, 0.0), f0_test) == 0.0);
    // At the training points Φ(X, X) = Φ: F_t → Y once η λmin t ≫ 1.
    const double t = 60.0 / (0.5 * r.eigenvalues.front());
    CHECK(relative_error(meta::meta_ntk_predict(r.phi, r.phi, f0, y, f0, 0.5, t), y) < 1e-9);
    // Finite t: the test prediction moves but does not interpolate anything.
    const Tensor mid = meta::meta_ntk_predict(r.phi, cross, f0, y, f0_test, 0.5, 1.0);
    CHECK(relative_error(mid, f0_test) > 1e-6);
  }

  TEST_CASE("errors: empty support, mismatched tasks, t = ∞ without ε, the ridge form, bad prediction shapes") {
    auto tasks = random_tasks(2, 3, 3, 6, 53);
    auto empty = tasks;
    empty[1].support = mt::zeros(mt::Shape{0, 6}, f64);
    CHECK(throws_error<mt::ValueError>([&] { meta::meta_ntk(empty, steps(0.1, 1)); }, {"task 1.support", "empty"}));
    mt::Generator gen(2);
    auto mismatched = tasks;
    mismatched[1].query = randn(3, 5, gen);
    CHECK(throws_error<mt::ShapeError>([&] { meta::meta_ntk(mismatched, steps(0.1, 1)); }, {"task 1"}));
    auto narrow = tasks;
    narrow[1] = random_task(3, 3, 5, gen);
    CHECK(throws_error<mt::ShapeError>([&] { meta::meta_ntk(narrow, steps(0.1, 1)); }, {"task 1", "task 0"}));
    CHECK(throws_error<mt::ValueError>([&] { meta::meta_ntk(tasks, flow(INFINITY, 0.0)); }, {"inf", "inverse_ridge"}));
    meta::MetaNtkOptions ridge = steps(0.1, 1);
    ridge.form = meta::KernelForm::ridge;
    CHECK(throws_error<mt::ValueError>([&] { meta::meta_ntk(tasks, ridge); }, {"ridge"}));
    CHECK(throws_error<mt::ValueError>([&] { meta::meta_ntk({}, steps(0.1, 1)); }, {"no tasks"}));
    meta::MetaNtkOptions anil = steps(0.1, 1);
    anil.anil = true;
    CHECK(throws_error<mt::ValueError>([&] { meta::meta_ntk(tasks, anil); }, {"query_head"}));
    const meta::MetaNtkResult r = meta::meta_ntk(tasks, steps(0.1, 1));
    const Tensor f = mt::zeros(mt::Shape{6, 1}, f64);
    CHECK(throws_error<mt::ShapeError>([&] { meta::meta_ntk_predict(r.phi, r.phi, f, f, randn(5, 1, gen), 1, 1); },
                                       {"f0_test [5, 1]"}));
    CHECK(throws_error<mt::ValueError>([&] { meta::meta_ntk_predict(r.phi, r.phi, f, f, f, 1, INFINITY); }, {"time"}));
    // A model's batch with an empty support set.
    const meta::Mlp model({2, 3, 1});
    const std::vector<Tensor> params = model.init(gen, f64);
    meta::TaskBatch batch;
    batch.support_x = mt::zeros(mt::Shape{2, 0, 2}, f64);
    batch.query_x = mt::zeros(mt::Shape{2, 3, 2}, f64);
    CHECK(
        throws_error<mt::ValueError>([&] { meta::meta_ntk(model, params, batch, steps(0.1, 1)); }, {"empty support"}));
    batch.support_x = mt::zeros(mt::Shape{3, 2, 2}, f64);
    CHECK(throws_error<mt::ShapeError>([&] { meta::meta_ntk(model, params, batch, steps(0.1, 1)); },
                                       {"support_x [3, 2, 2]", "query_x [2, 3, 2]"}));
  }
}

TEST_SUITE("meta-ntk") {
  TEST_CASE("rank_values: smallest first, ties share the smallest rank, +inf last, NaN refused") {
    CHECK(meta::rank_values({3.0, 1.0, INFINITY, 1.0}) == std::vector<std::int64_t>{3, 1, 4, 1});
    CHECK(meta::rank_values({5.0, 7.0, 7.0}, true) == std::vector<std::int64_t>{3, 1, 1});
    CHECK(throws_error<mt::ValueError>([] { meta::rank_values({1.0, NAN}); }, {"value 1", "NaN"}));
  }

  TEST_CASE("linear regions of a 1-D ReLU network are its breakpoints in range plus one") {
    const meta::Mlp relu({1, 3, 1});
    // h = relu(x − b) with breakpoints at −1, 0 and 7: two of them inside [−5, 5].
    const std::vector<Tensor> params = {
        mt::from_vector({1.0, 1.0, 1.0}, mt::Shape{1, 3}, f64), mt::from_vector({1.0, 0.0, -7.0}, mt::Shape{3}, f64),
        mt::from_vector({1.0, 1.0, 1.0}, mt::Shape{3, 1}, f64), mt::zeros(mt::Shape{1}, f64)};
    mt::Generator gen(59);
    const Tensor x = mt::uniform(mt::Shape{400, 1}, -5.0, 5.0, gen, f64);
    CHECK(meta::count_linear_regions(relu, params, x) == 3);
    const meta::Mlp smooth({1, 3, 1}, meta::Activation::tanh);
    CHECK(meta::count_linear_regions(smooth, params, x) == 1);
  }

  TEST_CASE("rank_architectures: ranks summed, best first, equal candidates tie, deterministic") {
    meta::RankingConfig config;
    config.input_dim = 4;
    config.tasks = 2;
    config.shots = 3;
    config.queries = 3;
    config.region_samples = 200;
    config.ntk.ridge = 1e-8;
    std::vector<meta::CandidateSpec> candidates(4);
    candidates[0] = {.name = "narrow", .hidden = {2}};
    candidates[1] = {.name = "wide", .hidden = {16, 16}};
    candidates[2] = {.name = "wide-again", .hidden = {16, 16}};
    candidates[3] = {.name = "conv", .model = "conv4", .channels = 2};
    config.image_size = 16;
    // conv4 needs images, an MLP vectors: one ranking per input kind.
    const std::vector<meta::CandidateSpec> mlps(candidates.begin(), candidates.begin() + 3);
    const meta::Ranking r = meta::rank_architectures(mlps, config);
    REQUIRE(r.scores.size() == 3);
    for (const auto& s : r.scores) {
      CHECK(s.combined == s.rank_condition + s.rank_regions);
      CHECK(std::isfinite(s.condition_number));
      CHECK(s.condition_number >= 1.0);
    }
    CHECK(r.scores[1].condition_number == r.scores[2].condition_number);
    CHECK(r.scores[1].regions == r.scores[2].regions);
    CHECK(r.scores[1].rank_condition == r.scores[2].rank_condition);
    CHECK(r.scores[1].regions > r.scores[0].regions);  // 32 ReLUs cut 4-D space into more pieces than 2
    for (std::size_t k = 1; k < r.order.size(); ++k)
      CHECK(r.scores[r.order[k - 1]].combined <= r.scores[r.order[k]].combined);
    const meta::Ranking again = meta::rank_architectures(mlps, config);
    CHECK(again.scores[0].condition_number == r.scores[0].condition_number);
    const meta::Ranking conv = meta::rank_architectures({candidates[3]}, config);
    CHECK(conv.scores[0].regions > 1);
    CHECK(conv.scores[0].rank_condition == 1);
  }

  TEST_CASE("ranking errors name the candidate and the field") {
    meta::RankingConfig config;
    config.region_samples = 10;
    const meta::CandidateSpec good{.name = "a", .hidden = {4}};
    CHECK(throws_error<mt::ValueError>(
        [&] {
          meta::rank_architectures({good, {.name = "b", .hidden = {4, 0}}}, config);
        },
        {"candidate 1 ('b')", "'hidden'"}));
    CHECK(throws_error<mt::ValueError>(
        [&] {
          meta::rank_architectures({good, {.name = "c", .model = "rnn"}}, config);
        },
        {"candidate 1 ('c')", "'model'", "rnn"}));
    CHECK(throws_error<mt::ValueError>(
        [&] {
          meta::rank_architectures({good, good}, config);
        },
        {"candidate 1 ('a')", "'name'"}));
    config.task = "sinusoid";
    CHECK(throws_error<mt::ValueError>(
        [&] {
          meta::rank_architectures({good, {.name = "d", .model = "conv4"}}, config);
        },
        {"candidate 1 ('d')", "conv4", "gaussian"}));
    config.task = "spiral";
    CHECK(throws_error<mt::ValueError>([&] { meta::rank_architectures({good}, config); }, {"spiral"}));
    CHECK(
        throws_error<mt::ValueError>([&] { meta::rank_architectures({}, meta::RankingConfig{}); }, {"no candidates"}));
  }
}
