// The figures of kernel meta-learning, measured by training and evaluating
// through the library (docs/methods.md §2–4). Each experiment prints a
// Markdown table and writes its plots (SVG) and raw numbers (JSON) into the
// output directory:
//
//   experiments kernel-vs-maml [iterations] [out]   kernel adaptation against MAML, sinusoid K = 5, 10
//   experiments weighting [iterations] [seeds] [out] task weighting on a heterogeneous sinusoid
//   experiments width [steps] [out]                 Meta-NTK prediction against MAML-trained networks
//   experiments ranking [iterations] [out]          training-free scores against trained MSE
//
// Settings are fixed before the runs and printed with the results; nothing
// is tuned toward a conclusion.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "metatape/meta/architecture_ranking.hpp"
#include "metatape/meta/checkpoint.hpp"
#include "metatape/meta/evaluation.hpp"
#include "metatape/meta/meta_ntk.hpp"
#include "metatape/meta/trainer.hpp"
#include "tools/svg.hpp"

namespace meta = metatape::meta;
namespace tools = metatape::tools;
namespace fs = std::filesystem;
using metatape::DType;

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Mean and 95% half-width of a sample (normal approximation, as evaluate()).
meta::StepSummary mean_ci(const std::vector<double>& values) { return meta::summarize({values}).front(); }

struct Checkpointed {
  std::int64_t iteration;
  double train_seconds;  // meta-training time so far, evaluations excluded
  meta::StepSummary mse;
};

struct Outcome {
  std::vector<meta::StepSummary> final_eval;  // the protocol's 600 tasks, after 0..steps steps (or closed form)
  double train_seconds = 0;
  std::vector<Checkpointed> curve;  // quick evaluations during training
};

// The post-adaptation row of an evaluation: the closed form's for the
// kernel algorithm, the last step's for the others.
const meta::StepSummary& adapted(const std::vector<meta::StepSummary>& eval) { return eval.back(); }

constexpr std::size_t kLastRow = static_cast<std::size_t>(-1);

// Trains `options` for `iterations` on `tasks`, evaluating every
// `iterations / points` iterations on `quick` tasks (the curve keeps row
// `curve_row` of each evaluation: an inner step, or the last row), then on
// the protocol's.
Outcome train_and_evaluate(const meta::Model& model, const meta::TaskSampler& tasks, const meta::TrainOptions& options,
                           std::int64_t iterations, int points, const meta::EvaluationOptions& quick,
                           const meta::EvaluationOptions& protocol, std::size_t curve_row = kLastRow) {
  meta::Trainer trainer(model, meta::Loss::mse, tasks, options);
  Outcome out;
  const std::int64_t every = std::max<std::int64_t>(1, iterations / points);
  while (trainer.iteration() < iterations) {
    const auto start = std::chrono::steady_clock::now();
    const std::int64_t until = std::min(iterations, trainer.iteration() + every);
    while (trainer.iteration() < until) (void)trainer.step();
    out.train_seconds += seconds_since(start);
    const auto eval =
        meta::evaluate(model, meta::Loss::mse, options.meta, trainer.params(), tasks, quick, options.dtype);
    out.curve.push_back(
        {trainer.iteration(), out.train_seconds, curve_row == kLastRow ? adapted(eval) : eval[curve_row]});
  }
  out.final_eval =
      meta::evaluate(model, meta::Loss::mse, options.meta, trainer.params(), tasks, protocol, options.dtype);
  return out;
}

meta::TrainOptions reference_options(std::int64_t shots, std::uint64_t seed) {
  meta::TrainOptions o;
  o.meta.algorithm = meta::Algorithm::maml;
  o.meta.inner_steps = 1;
  o.meta.inner_lr = 0.01;
  o.meta_batch = 25;
  o.shots = shots;
  o.queries = shots;
  o.seed = seed;
  o.dtype = DType::f32;
  return o;
}

std::string cell(const meta::StepSummary& s) {
  char text[64];
  std::snprintf(text, sizeof text, "%.3f ± %.3f", s.mean, s.ci95);
  return text;
}

void write_text(const fs::path& path, const std::string& text) {
  meta::write_file_atomically(path.string(), text);
  std::printf("wrote %s\n", path.c_str());
}

// --- kernel adaptation against MAML ----------------------------------------

struct KernelVariant {
  std::string label;
  meta::KernelForm form;
  meta::KernelGradient gradient;
};

void kernel_vs_maml(std::int64_t iterations, const fs::path& out) {
  const meta::Mlp model({1, 40, 40, 1});
  const meta::SinusoidTasks tasks;
  // The closed forms' settings, fixed before any run: the steps form is
  // MAML's own inner loop (α = 0.01, τ = 1) linearised; flow runs for the
  // time of ten such steps; ridge uses λ = 0.1 (of the order of the kernel's
  // smallest useful eigenvalues at initialisation, not tuned).
  const double flow_time = 0.1, ridge = 0.1;
  const std::vector<KernelVariant> variants = {
      {"kernel steps, exact", meta::KernelForm::steps, meta::KernelGradient::exact},
      {"kernel steps, fixed", meta::KernelForm::steps, meta::KernelGradient::fixed},
      {"kernel flow, exact", meta::KernelForm::flow, meta::KernelGradient::exact},
      {"kernel flow, fixed", meta::KernelForm::flow, meta::KernelGradient::fixed},
      {"kernel ridge, exact", meta::KernelForm::ridge, meta::KernelGradient::exact},
      {"kernel ridge, fixed", meta::KernelForm::ridge, meta::KernelGradient::fixed},
  };
  nlohmann::json report = nlohmann::json::array();
  std::printf(
      "\nSinusoid, 1-40-40-1 ReLU MLP, meta-batch 25, Adam 1e-3, %lld iterations, float32; MAML exact, α = "
      "0.01, one inner step; kernel: trace NTK, steps α = 0.01 τ = 1, flow t = %g, ridge λ = %g. Post-adaptation "
      "MSE on 600 fresh tasks (95%% CI): MAML after 1 and 10 steps, kernel in closed form.\n\n",
      static_cast<long long>(iterations), flow_time, ridge);
  std::printf("| K | method | post-adaptation MSE | training time (s) | time to reach MAML's MSE (s) |\n");
  std::printf("| --- | --- | --- | --- | --- |\n");
  for (std::int64_t shots : {5, 10}) {
    const meta::EvaluationOptions quick{.tasks = 200, .shots = shots, .queries = shots, .steps = 10, .seed = 11};
    const meta::EvaluationOptions protocol{.tasks = 600, .shots = shots, .queries = shots, .steps = 10, .seed = 1};
    tools::Chart chart{"Sinusoid K = " + std::to_string(shots) + ": post-adaptation MSE during meta-training",
                       "meta-training time (s)",
                       "MSE (200 tasks)",
                       true,
                       {}};
    const meta::TrainOptions maml_options = reference_options(shots, 1);
    const Outcome maml = train_and_evaluate(model, tasks, maml_options, iterations, 20, quick, protocol);
    const meta::StepSummary maml_final = adapted(maml.final_eval);
    std::printf("| %lld | MAML, 1 step | %s | %.1f | |\n", static_cast<long long>(shots),
                cell(maml.final_eval[1]).c_str(), maml.train_seconds);
    std::printf("| %lld | MAML, 10 steps | %s | | |\n", static_cast<long long>(shots), cell(maml_final).c_str());
    nlohmann::json row{{"shots", shots},
                       {"maml_1_step", maml.final_eval[1].mean},
                       {"maml_10_steps", maml_final.mean},
                       {"maml_seconds", maml.train_seconds}};
    const auto add_series = [&](const std::string& label, const Outcome& o, std::size_t colour) {
      tools::Series s{label, {}, {}, {}, tools::palette(colour)};
      for (const Checkpointed& c : o.curve) {
        s.x.push_back(c.train_seconds);
        s.y.push_back(c.mse.mean);
      }
      chart.series.push_back(s);
    };
    add_series("MAML (10 steps)", maml, 0);
    std::size_t colour = 1;
    for (const KernelVariant& v : variants) {
      meta::TrainOptions o = maml_options;
      o.meta.algorithm = meta::Algorithm::kernel;
      o.meta.kernel = {
          .form = v.form, .time = flow_time, .ridge = ridge, .gradient = v.gradient, .mode = meta::KernelMode::trace};
      std::string reached = "not reached";
      Outcome k;
      try {
        k = train_and_evaluate(model, tasks, o, iterations, 20, quick, protocol);
      } catch (const metatape::Error& e) {
        std::printf("| %lld | %s | failed: %s | | |\n", static_cast<long long>(shots), v.label.c_str(), e.what());
        row[v.label] = e.what();
        continue;
      }
      for (const Checkpointed& c : k.curve)
        if (c.mse.mean <= maml_final.mean) {
          reached = std::to_string(c.train_seconds).substr(0, 6) + " (it. " + std::to_string(c.iteration) + ")";
          break;
        }
      std::printf("| %lld | %s | %s | %.1f | %s |\n", static_cast<long long>(shots), v.label.c_str(),
                  cell(adapted(k.final_eval)).c_str(), k.train_seconds, reached.c_str());
      row[v.label] = {{"mse", adapted(k.final_eval).mean},
                      {"ci95", adapted(k.final_eval).ci95},
                      {"seconds", k.train_seconds},
                      {"reached", reached}};
      add_series(v.label, k, colour++);
    }
    report.push_back(row);
    write_text(out / ("kernel_vs_maml_k" + std::to_string(shots) + ".svg"), tools::render_svg(chart));
  }
  write_text(out / "kernel_vs_maml.json", report.dump(2) + "\n");
}

// --- task weighting on a heterogeneous distribution --------------------------

void weighting(std::int64_t iterations, int seeds, const fs::path& out) {
  const meta::Mlp model({1, 40, 40, 1});
  const meta::SinusoidTasks tasks(meta::kSinusoidMixture);
  struct Rule {
    std::string label;
    meta::TaskWeightingConfig config;
  };
  const std::vector<Rule> rules = {
      {"uniform", {}},
      {"softmax T=1", {.rule = meta::TaskWeighting::softmax, .temperature = 1.0}},
      {"normalised", {.rule = meta::TaskWeighting::normalised}},
      {"agreement", {.rule = meta::TaskWeighting::agreement}},
  };
  const meta::EvaluationOptions quick{.tasks = 200, .shots = 10, .queries = 10, .steps = 10, .seed = 11};
  const meta::EvaluationOptions protocol{.tasks = 600, .shots = 10, .queries = 10, .steps = 10, .seed = 1};
  tools::Chart chart{"Heterogeneous sinusoid: MSE after one inner step (as trained) during meta-training",
                     "meta-iteration",
                     "MSE (200 tasks; mean over seeds)",
                     true,
                     {}};
  nlohmann::json report = nlohmann::json::array();
  std::printf(
      "\n%s; MAML exact, α = 0.01, one inner step, K = 10, meta-batch 25, Adam 1e-3, %lld iterations, "
      "float32, %d seeds. Final: the 600-task MSE after one inner step (the trained inner loop), mean over seeds "
      "with the 95%% CI across seeds; and per seed after 10 steps, where the inner loop can diverge on "
      "high-amplitude tasks (inf/nan: some task's loss overflowed).\n\n",
      tasks.describe().c_str(), static_cast<long long>(iterations), seeds);
  std::printf(
      "| weighting | MSE after 1 step (mean over seeds ± 95%% CI) | per seed | after 10 steps, per seed |\n"
      "| --- | --- | --- | --- |\n");
  for (std::size_t r = 0; r < rules.size(); ++r) {
    std::vector<double> finals, finals10;
    std::vector<std::vector<double>> curves;
    std::vector<double> iteration_axis;
    std::string per_seed, per_seed10;
    for (int seed = 1; seed <= seeds; ++seed) {
      meta::TrainOptions o = reference_options(10, static_cast<std::uint64_t>(seed));
      o.meta.weighting = rules[r].config;
      const Outcome k = train_and_evaluate(model, tasks, o, iterations, 20, quick, protocol, 1);
      finals.push_back(k.final_eval[1].mean);
      finals10.push_back(adapted(k.final_eval).mean);
      per_seed += (per_seed.empty() ? "" : ", ") + std::to_string(finals.back()).substr(0, 5);
      per_seed10 += (per_seed10.empty() ? "" : ", ") + std::to_string(finals10.back()).substr(0, 5);
      curves.emplace_back();
      iteration_axis.clear();
      for (const Checkpointed& c : k.curve) {
        curves.back().push_back(c.mse.mean);
        iteration_axis.push_back(static_cast<double>(c.iteration));
      }
    }
    const meta::StepSummary final_mse = mean_ci(finals);
    std::printf("| %s | %s | %s | %s |\n", rules[r].label.c_str(), cell(final_mse).c_str(), per_seed.c_str(),
                per_seed10.c_str());
    tools::Series s{rules[r].label, iteration_axis, {}, {}, tools::palette(r)};
    for (std::size_t i = 0; i < iteration_axis.size(); ++i) {
      std::vector<double> at;
      for (const auto& c : curves) at.push_back(c[i]);
      const meta::StepSummary m = mean_ci(at);
      s.y.push_back(m.mean);
      s.error.push_back(m.ci95);
    }
    chart.series.push_back(s);
    report.push_back({{"weighting", rules[r].label},
                      {"mse_1_step", finals},
                      {"mse_10_steps", finals10},
                      {"curve_iterations", iteration_axis},
                      {"curves", curves}});
  }
  write_text(out / "weighting.svg", tools::render_svg(chart));
  write_text(out / "weighting.json", report.dump(2) + "\n");
}

// --- the Meta-NTK prediction against MAML-trained networks of growing width --

// Adapted query outputs [T·n, 1] of every task after MAML's inner loop.
metatape::Tensor adapted_queries(const meta::Model& model, const meta::MetaConfig& config,
                                 const std::vector<metatape::Tensor>& params, const meta::TaskBatch& batch) {
  const meta::Adapted a = meta::adapt(model, meta::Loss::mse, config, {params, {}}, batch, config.inner_steps);
  metatape::NoGradScope no_grad;
  const metatape::Tensor f = model.forward(a.params, batch.query_x);  // [T, n, 1]
  return metatape::reshape(f, {f.dim(0) * f.dim(1), 1});
}

struct WidthResult {
  double gap = 0;    // ‖F_net − F_pred‖ / ‖F_net − F_0‖ on the test tasks' queries
  double moved = 0;  // ‖F_net − F_0‖ / ‖F_0 − Y‖: how far training moved the outputs
  double train_loss = 0;
};

// MAML (exact, τ inner steps) by full-batch outer gradient descent on fixed
// training tasks, in float64, against Φ's prediction at the same outer time.
// L_meta is the mean query MSE over B tasks of n points, so one step of size
// lr moves F by −lr·Φ·(2/(B·n))(F − Y): η·t = lr · steps · 2/(B·n).
WidthResult width_point(std::int64_t width, std::uint64_t seed, int steps, double lr, double inner_lr) {
  const meta::Mlp model({1, width, 1}, meta::MlpOptions{.parameterization = meta::Parameterization::ntk});
  const meta::SinusoidTasks sampler;
  metatape::Generator task_gen(100 + seed), init_gen(seed);
  const std::int64_t tasks = 5, points = 5;
  const meta::TaskBatch train = sampler.sample(tasks, points, points, task_gen, DType::f64);
  const meta::TaskBatch test = sampler.sample(tasks, points, points, task_gen, DType::f64);
  const meta::MetaConfig config{.inner_steps = 1, .inner_lr = inner_lr};
  std::vector<metatape::Tensor> params = model.init(init_gen, DType::f64);

  const meta::MetaNtkOptions options{.form = meta::KernelForm::steps, .inner_lr = inner_lr, .inner_steps = 1};
  const std::vector<meta::MetaNtkTask> train_tasks = meta::meta_ntk_tasks(model, params, train, options);
  const meta::MetaNtkResult phi = meta::meta_ntk(train_tasks, options);
  const metatape::Tensor cross =
      meta::meta_ntk_cross(meta::meta_ntk_tasks(model, params, test, options), phi.projections, options);
  const metatape::Tensor f0_train = adapted_queries(model, config, params, train);
  const metatape::Tensor f0_test = adapted_queries(model, config, params, test);
  const metatape::Tensor y_train = metatape::reshape(train.query_y, {tasks * points, 1});
  const double eta_t = lr * steps * 2.0 / static_cast<double>(tasks * points);
  const metatape::Tensor predicted = meta::meta_ntk_predict(phi.phi, cross, f0_train, y_train, f0_test, 1.0, eta_t);

  WidthResult out;
  for (int k = 0; k < steps; ++k) {
    const meta::MetaStep step = meta::meta_gradient(model, meta::Loss::mse, config, {params, {}}, train, k);
    metatape::NoGradScope no_grad;
    for (std::size_t i = 0; i < params.size(); ++i)
      params[i] = metatape::sub(params[i], metatape::scale(step.grads[i], lr));
    out.train_loss = step.meta_loss;
  }
  const metatape::Tensor trained = adapted_queries(model, config, params, test);
  const auto norm = [](const metatape::Tensor& a, const metatape::Tensor& b) {
    const std::vector<double> x = a.to_vector(), y = b.to_vector();
    double s = 0;
    for (std::size_t i = 0; i < x.size(); ++i) s += (x[i] - y[i]) * (x[i] - y[i]);
    return std::sqrt(s);
  };
  const metatape::Tensor y_test = metatape::reshape(test.query_y, {tasks * points, 1});
  out.gap = norm(trained, predicted) / norm(trained, f0_test);
  out.moved = norm(trained, f0_test) / norm(f0_test, y_test);
  return out;
}

void width(int steps, const fs::path& out) {
  const std::vector<std::int64_t> widths = {256, 512, 1024, 2048, 4096, 8192};
  const int seeds = 3;
  const double lr = 2.5 / steps;  // the same outer time for every step count: more steps, closer to the flow
  std::printf(
      "\nOne-hidden-layer ReLU MLP 1-m-1 in NTK parameterisation (with bias), float64; 5 fixed sinusoid "
      "training tasks and 5 test tasks of 5 support + 5 query points; MAML exact, one inner step of size α; "
      "outer full-batch gradient descent, lr %g, %d steps. Gap: ‖F_net − F_Φ‖ / ‖F_net − F_0‖ over the test "
      "tasks' adapted query outputs (F_Φ the Meta-NTK prediction at the same outer time); mean ± 95%% CI over "
      "%d seeds.\n\n| α | width | gap | outputs moved (‖F_net − F_0‖/‖F_0 − Y‖) | final meta-loss |\n"
      "| --- | --- | --- | --- | --- |\n",
      lr, steps, seeds);
  tools::Chart chart{"Meta-NTK prediction against trained MAML, by width", "width", "relative gap", true, {}};
  nlohmann::json report = nlohmann::json::array();
  const std::vector<double> inner_lrs = {0.1, 0.02};
  for (std::size_t a = 0; a < inner_lrs.size(); ++a) {
    tools::Series series{"α = " + std::to_string(inner_lrs[a]).substr(0, 4), {}, {}, {}, tools::palette(a)};
    series.markers = true;
    for (std::int64_t m : widths) {
      std::vector<double> gaps, moved, losses;
      for (int seed = 1; seed <= seeds; ++seed) {
        const WidthResult r = width_point(m, static_cast<std::uint64_t>(seed), steps, lr, inner_lrs[a]);
        gaps.push_back(r.gap);
        moved.push_back(r.moved);
        losses.push_back(r.train_loss);
      }
      const meta::StepSummary g = mean_ci(gaps), mv = mean_ci(moved), l = mean_ci(losses);
      std::printf("| %g | %lld | %.4f ± %.4f | %.3f | %.4f |\n", inner_lrs[a], static_cast<long long>(m), g.mean,
                  g.ci95, mv.mean, l.mean);
      series.x.push_back(static_cast<double>(m));
      series.y.push_back(g.mean);
      series.error.push_back(g.ci95);
      report.push_back(
          {{"inner_lr", inner_lrs[a]}, {"width", m}, {"gaps", gaps}, {"moved", moved}, {"final_meta_loss", losses}});
    }
    chart.series.push_back(series);
  }
  write_text(out / "meta_ntk_width.svg", tools::render_svg(chart));
  write_text(out / "meta_ntk_width.json", report.dump(2) + "\n");
}

// --- training-free ranking against trained MSE ------------------------------

// Average ranks (ties share the mean of their positions), 1-based.
std::vector<double> average_ranks(const std::vector<double>& values) {
  std::vector<std::size_t> order(values.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return values[a] < values[b]; });
  std::vector<double> ranks(values.size());
  for (std::size_t i = 0; i < order.size();) {
    std::size_t j = i;
    while (j + 1 < order.size() && values[order[j + 1]] == values[order[i]]) ++j;
    for (std::size_t k = i; k <= j; ++k) ranks[order[k]] = (static_cast<double>(i + j) / 2.0) + 1.0;
    i = j + 1;
  }
  return ranks;
}

// Spearman's ρ: Pearson's correlation of the average ranks.
double spearman(const std::vector<double>& a, const std::vector<double>& b) {
  const std::vector<double> x = average_ranks(a), y = average_ranks(b);
  const double n = static_cast<double>(x.size()), mean = (n + 1) / 2;
  double sxy = 0, sxx = 0, syy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mean) * (y[i] - mean);
    sxx += (x[i] - mean) * (x[i] - mean);
    syy += (y[i] - mean) * (y[i] - mean);
  }
  return sxy / std::sqrt(sxx * syy);
}

void ranking(std::int64_t iterations, const fs::path& out) {
  std::vector<meta::CandidateSpec> candidates;
  const auto mlp = [&](std::string name, std::vector<std::int64_t> hidden, meta::Activation a) {
    meta::CandidateSpec c;
    c.name = std::move(name);
    c.hidden = std::move(hidden);
    c.activation = a;
    candidates.push_back(c);
  };
  mlp("relu 10", {10}, meta::Activation::relu);
  mlp("relu 40", {40}, meta::Activation::relu);
  mlp("relu 200", {200}, meta::Activation::relu);
  mlp("relu 10-10", {10, 10}, meta::Activation::relu);
  mlp("relu 40-40", {40, 40}, meta::Activation::relu);
  mlp("relu 100-100", {100, 100}, meta::Activation::relu);
  mlp("relu 40-40-40", {40, 40, 40}, meta::Activation::relu);
  mlp("relu 20-20-20-20", {20, 20, 20, 20}, meta::Activation::relu);
  mlp("tanh 40-40", {40, 40}, meta::Activation::tanh);
  mlp("tanh 100-100", {100, 100}, meta::Activation::tanh);
  // Φ on the sinusoid's own 1-D inputs (numerically singular: the ridge ρ
  // decides κ there), with the training's inner loop (α = 0.01, τ = 1).
  meta::RankingConfig config;
  config.task = "sinusoid";
  config.tasks = 5;
  config.shots = 10;
  config.queries = 10;
  config.ntk = {.form = meta::KernelForm::steps, .inner_lr = 0.01, .inner_steps = 1, .ridge = 1e-6};
  const meta::Ranking scores = meta::rank_architectures(candidates, config);

  std::printf(
      "\nTen MLP candidates for the sinusoid. Training-free scores (%s; ridge ρ = %g; regions over %lld "
      "inputs); then each trained with exact MAML (α = 0.01, one step, meta-batch 25, K = 10, Adam 1e-3, %lld "
      "iterations, float32) and evaluated on 600 tasks after 10 steps.\n\n",
      scores.inputs.c_str(), config.ntk.ridge, static_cast<long long>(config.region_samples),
      static_cast<long long>(iterations));
  std::printf(
      "| candidate | parameters | κ(Φ + ρI) | regions | combined rank | trained MSE |\n| --- | --- | --- | --- | "
      "--- | --- |\n");
  std::vector<double> kappa, regions, combined, mse;
  nlohmann::json report = nlohmann::json::array();
  const meta::SinusoidTasks tasks;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    const std::unique_ptr<meta::Model> model = meta::build_candidate(candidates[i], i, config);
    const meta::TrainOptions options = reference_options(10, 1);
    meta::Trainer trainer(*model, meta::Loss::mse, tasks, options);
    while (trainer.iteration() < iterations) (void)trainer.step();
    const auto eval = meta::evaluate(*model, meta::Loss::mse, options.meta, trainer.params(), tasks,
                                     {.tasks = 600, .shots = 10, .queries = 10, .steps = 10, .seed = 1}, DType::f32);
    const meta::CandidateScore& s = scores.scores[i];
    kappa.push_back(s.condition_number);
    regions.push_back(-static_cast<double>(s.regions));  // more regions rank first
    combined.push_back(static_cast<double>(s.combined));
    mse.push_back(adapted(eval).mean);
    std::printf("| %s | %lld | %.3g | %lld | %lld | %s |\n", s.name.c_str(), static_cast<long long>(s.parameters),
                s.condition_number, static_cast<long long>(s.regions), static_cast<long long>(s.combined),
                cell(adapted(eval)).c_str());
    report.push_back({{"name", s.name},
                      {"kappa", s.condition_number},
                      {"regions", s.regions},
                      {"combined_rank", s.combined},
                      {"mse", adapted(eval).mean}});
  }
  const double rho_combined = spearman(combined, mse), rho_kappa = spearman(kappa, mse),
               rho_regions = spearman(regions, mse);
  std::printf(
      "\nSpearman's ρ with the trained MSE (positive: the score ranks the better-trained networks first): "
      "combined rank %.3f, κ alone %.3f, regions alone %.3f (n = %zu)\n",
      rho_combined, rho_kappa, rho_regions, candidates.size());
  write_text(out / "ranking.json", nlohmann::json{{"candidates", report},
                                                  {"spearman_combined", rho_combined},
                                                  {"spearman_kappa", rho_kappa},
                                                  {"spearman_regions", rho_regions},
                                                  {"inputs", scores.inputs},
                                                  {"ridge", config.ntk.ridge}}
                                           .dump(2) +
                                       "\n");
}

std::int64_t argument(int argc, char** argv, int i, std::int64_t fallback) {
  return argc > i ? std::stoll(argv[i]) : fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string which = argc > 1 ? argv[1] : "";
  try {
    if (which == "kernel-vs-maml") {
      const fs::path out = argc > 3 ? argv[3] : "runs/experiments";
      fs::create_directories(out);
      kernel_vs_maml(argument(argc, argv, 2, 10000), out);
    } else if (which == "weighting") {
      const fs::path out = argc > 4 ? argv[4] : "runs/experiments";
      fs::create_directories(out);
      weighting(argument(argc, argv, 2, 10000), static_cast<int>(argument(argc, argv, 3, 5)), out);
    } else if (which == "width") {
      const fs::path out = argc > 3 ? argv[3] : "runs/experiments";
      fs::create_directories(out);
      width(static_cast<int>(argument(argc, argv, 2, 200)), out);
    } else if (which == "ranking") {
      const fs::path out = argc > 3 ? argv[3] : "runs/experiments";
      fs::create_directories(out);
      ranking(argument(argc, argv, 2, 10000), out);
    } else {
      std::fprintf(stderr,
                   "usage: experiments kernel-vs-maml [iterations] [out] | weighting [iterations] [seeds] [out] | "
                   "width [steps] [out] | ranking [iterations] [out]\n");
      return 2;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
