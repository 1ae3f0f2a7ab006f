// metatape eval: the evaluation protocol of docs/methods.md §1 — fresh tasks,
// 0..steps inner steps, mean query loss (and, for classification, accuracy)
// with a 95% confidence interval after each — for a checkpoint and, beside
// it, a baseline checkpoint.
#include <cstdio>
#include <filesystem>
#include <optional>

#include "commands.hpp"
#include "distributed.hpp"
#include "memory.hpp"
#include "metatape/meta/checkpoint.hpp"
#include "metatape/meta/evaluation.hpp"
#include "svg.hpp"

namespace metatape::tools {
namespace {

namespace fs = std::filesystem;

std::string label(const LoadedRun& run) {
  std::string l = run.config.algorithm;
  if (run.config.lslr) l += "+lslr";
  if (run.config.multi_step_loss) l += "+msl";
  return l;
}

bool closed_form(const LoadedRun& run) { return run.parts.options.meta.algorithm == meta::Algorithm::kernel; }

// What row `row` of a run's curve is: the number of inner steps, or for the
// kernel algorithm (two rows, no gradient steps) "before" and "closed form".
std::string row_name(const LoadedRun& run, const std::vector<meta::StepSummary>& curve, std::size_t row) {
  if (row >= curve.size()) return "";
  if (closed_form(run)) return row == 0 ? "before" : "closed form";
  return std::to_string(curve[row].step);
}

nlohmann::json to_json(const LoadedRun& run, const std::vector<meta::StepSummary>& curve) {
  nlohmann::json steps = nlohmann::json::array();
  for (std::size_t i = 0; i < curve.size(); ++i) {
    const auto& s = curve[i];
    nlohmann::json row{{"step", s.step}, {"mean", s.mean}, {"ci95", s.ci95}};
    if (s.accuracy) {
      row["accuracy"] = s.accuracy->mean;
      row["accuracy_ci95"] = s.accuracy->ci95;
    }
    if (closed_form(run)) row["adaptation"] = row_name(run, curve, i);
    steps.push_back(row);
  }
  return steps;
}

// Columns of a cell: the loss, and for classification the accuracy in %.
constexpr int kLossWidth = 22, kAccuracyWidth = 17;
int cell_width(const LoadedRun& run) {
  return kLossWidth + (run.parts.loss == meta::Loss::cross_entropy ? kAccuracyWidth : 0);
}

// One cell of the table: mean ± CI (and accuracy % ± CI), or blank past the
// end of a curve.
void print_cell(const LoadedRun& run, const std::vector<meta::StepSummary>& curve, std::size_t row) {
  if (row >= curve.size()) {
    std::printf(" %*s", cell_width(run), "");
    return;
  }
  std::printf(" %13.4f ± %-6.4f", curve[row].mean, curve[row].ci95);
  if (curve[row].accuracy)
    std::printf(" %7.2f%% ± %5.2f", 100 * curve[row].accuracy->mean, 100 * curve[row].accuracy->ci95);
}

// The table of one K: a row per step (or "before" / "closed form"); a
// kernel run beside a gradient-step baseline has fewer rows, so each row
// is named by both when they differ ("1 / closed form").
void print_table(std::int64_t k, const LoadedRun& run, const std::vector<meta::StepSummary>& ours,
                 const std::optional<LoadedRun>& baseline, const std::vector<meta::StepSummary>& theirs) {
  std::printf("\nK = %lld\n %18s %*s", static_cast<long long>(k), "steps", cell_width(run), label(run).c_str());
  if (baseline) std::printf(" %*s", cell_width(*baseline), label(*baseline).c_str());
  std::printf("\n");
  for (std::size_t r = 0; r < std::max(ours.size(), theirs.size()); ++r) {
    std::string name = row_name(run, ours, r);
    const std::string other = baseline ? row_name(*baseline, theirs, r) : "";
    if (name.empty() || (!other.empty() && other != name)) name = name.empty() ? other : name + " / " + other;
    std::printf(" %18s", name.c_str());
    print_cell(run, ours, r);
    if (baseline) print_cell(*baseline, theirs, r);
    std::printf("\n");
  }
}

// What a chart shows of a step: the accuracy in % for classification, else
// the loss.
meta::MeanCI shown(const meta::StepSummary& s) {
  return s.accuracy ? meta::MeanCI{100 * s.accuracy->mean, 100 * s.accuracy->ci95} : meta::MeanCI{s.mean, s.ci95};
}

// A curve's series: the loss (or accuracy) against inner steps with its CI.
// A closed-form curve has no steps: its "before" is drawn at step 0 and its
// closed-form value as a level line across the steps shown, so it reads
// against a baseline's curve.
void add_series(Chart& chart, const LoadedRun& run, const std::vector<meta::StepSummary>& curve, std::string name,
                std::size_t color, bool dashed, double last_step) {
  Series series{name, {}, {}, {}, palette(color), dashed, true};
  if (closed_form(run) && curve.size() == 2) {
    const meta::MeanCI before = shown(curve[0]), after = shown(curve[1]);
    series.label += " (closed form)";
    series.x = {0, std::max(1.0, last_step)};
    series.y = {after.mean, after.mean};
    series.error = {after.ci95, after.ci95};
    chart.series.push_back({name + " (before)", {0}, {before.mean}, {before.ci95}, palette(color), dashed, true});
  } else {
    for (const auto& s : curve) {
      series.x.push_back(s.step);
      series.y.push_back(shown(s).mean);
      series.error.push_back(shown(s).ci95);
    }
  }
  chart.series.push_back(series);
}

// Everything that must be equal on every rank for the ranks to evaluate
// together.
std::vector<std::pair<std::string, std::string>> evaluation_fields(const EvalArgs& args) {
  std::string shots;
  for (std::int64_t k : args.shots) shots += (shots.empty() ? "" : ",") + std::to_string(k);
  return {{"--checkpoint", args.checkpoint},
          {"--baseline", args.baseline},
          {"--baseline-inner-lr", std::to_string(args.baseline_inner_lr)},
          {"--shots", shots},
          {"--queries", std::to_string(args.queries)},
          {"--tasks", std::to_string(args.tasks)},
          {"--steps", std::to_string(args.steps)},
          {"--seed", std::to_string(args.seed)},
          {"--out", args.out},
          {"--threads", std::to_string(args.threads)},
          {"--device", args.device}};
}

// The checkpoint and baseline to evaluate, with the chunk of tasks each
// adapts at once (as many as this host's memory allows) and the K to
// evaluate at.
struct EvalRuns {
  LoadedRun run;
  std::optional<LoadedRun> baseline;
  std::int64_t chunk = 0, baseline_chunk = 0;
  std::vector<std::int64_t> shots;
};

EvalRuns load_runs(const EvalArgs& args) {
  set_num_threads(static_cast<int>(args.threads));
  const Device device = parse_device(args.device);
  EvalRuns runs{load_run(args.checkpoint, device), std::nullopt, 0, 0, {}};
  const LoadedRun& run = runs.run;
  std::optional<LoadedRun>& baseline = runs.baseline;
  runs.chunk = evaluation_chunk(run.config, run.parts, args);
  check_memory(evaluation_memory(run.config, run.parts, args, runs.chunk), "evaluating " + run.path);
  if (!args.baseline.empty()) {
    baseline = load_run(args.baseline, device);
    runs.baseline_chunk = evaluation_chunk(baseline->config, baseline->parts, args);
    check_memory(evaluation_memory(baseline->config, baseline->parts, args, runs.baseline_chunk),
                 "evaluating " + baseline->path);
    if (args.baseline_inner_lr > 0) {
      baseline->config.inner_lr = args.baseline_inner_lr;
      baseline->parts.options.meta.inner_lr = args.baseline_inner_lr;
    }
    if (baseline->config.task != run.config.task)
      throw ValueError("--baseline was trained on " + baseline->config.task + ", the checkpoint on " + run.config.task);
  }
  runs.shots = args.shots.empty() ? std::vector<std::int64_t>{run.config.shots} : args.shots;
  for (std::int64_t k : runs.shots)
    if (k < 1) throw ValueError("--shots must be >= 1, got " + std::to_string(k));
  return runs;
}

}  // namespace

int run_eval(const EvalArgs& args) {
  if (args.tasks < 1 || args.steps < 0 || args.queries < 0)
    throw ValueError("eval needs --tasks >= 1, --steps >= 0 and --queries >= 0");
  if (args.baseline_inner_lr > 0 && args.baseline.empty())
    throw ValueError("--baseline-inner-lr is the step of the --baseline run: give --baseline too");
  // Under mpirun every rank adapts its share of each K's tasks; rank 0
  // alone prints and writes (the others' standard output is discarded).
  const std::shared_ptr<meta::Communicator> group = process_group();
  require_same_fields(*group, "the evaluation configuration", evaluation_fields(args));
  std::optional<EvalRuns> loaded;
  // Agreed on by every rank: a file or the memory of one host can fail one
  // rank alone.
  meta::on_every_rank(*group, "start", [&] {
    if (group->rank() != 0 && !std::freopen("/dev/null", "w", stdout))
      throw IoError("cannot discard the standard output of rank " + std::to_string(group->rank()));
    loaded.emplace(load_runs(args));
  });
  // Chunks follow each host's free memory; the ranks must share them.
  loaded->chunk = group_minimum(*group, loaded->chunk);
  loaded->baseline_chunk = group_minimum(*group, loaded->baseline_chunk);
  const LoadedRun& run = loaded->run;
  const std::optional<LoadedRun>& baseline = loaded->baseline;
  const std::int64_t chunk = loaded->chunk, baseline_chunk = loaded->baseline_chunk;
  const std::vector<std::int64_t>& shots = loaded->shots;

  std::printf("%s (%s, iteration %lld)%s%s%s\n", label(run).c_str(), run.path.c_str(),
              static_cast<long long>(run.iteration), baseline ? " against " : "",
              baseline ? label(*baseline).c_str() : "", baseline ? (" (" + baseline->path + ")").c_str() : "");
  const bool classification = run.parts.loss == meta::Loss::cross_entropy;
  const std::string loss_name = classification ? "cross-entropy and accuracy" : "MSE";
  if (closed_form(run))
    std::printf("%lld fresh %s tasks per K; query %s before and after the closed-form adaptation (%s",
                static_cast<long long>(args.tasks), run.config.task.c_str(), loss_name.c_str(),
                run.config.kernel_form.c_str());
  else
    std::printf("%lld fresh %s tasks per K; query %s after each inner step (inner lr %g",
                static_cast<long long>(args.tasks), run.config.task.c_str(), loss_name.c_str(), run.config.inner_lr);
  if (baseline && baseline->config.inner_lr != run.config.inner_lr)
    std::printf(", baseline %g", baseline->config.inner_lr);
  std::printf("); mean ± 95%% CI\n");
  if (chunk < std::min(args.tasks, meta::EvaluationOptions{}.chunk))
    std::printf("adapting %lld tasks at a time, as many as the memory allows\n", static_cast<long long>(chunk));

  nlohmann::json results = nlohmann::json::array();
  const bool kernel = closed_form(run) || (baseline && closed_form(*baseline));
  const std::string shown_name = classification ? "accuracy" : "MSE";
  Chart chart{"query " + shown_name + " after k inner steps (" + std::to_string(args.tasks) + " tasks, 95% CI)",
              kernel ? "inner gradient steps (closed form: no steps; its " + shown_name + " drawn as a level line)"
                     : "inner gradient steps",
              classification ? "query accuracy (%)" : "mean squared error",
              false,
              {}};
  for (std::size_t i = 0; i < shots.size(); ++i) {
    meta::EvaluationOptions options{.tasks = args.tasks,
                                    .shots = shots[i],
                                    .queries = args.queries > 0 ? args.queries
                                               : classification ? run.config.queries
                                                                : shots[i],
                                    .steps = static_cast<int>(args.steps),
                                    .seed = args.seed,
                                    .chunk = chunk,
                                    .group = group.get()};
    const DType dtype = parse_dtype(run.config.dtype);
    const auto ours = meta::evaluate(*run.parts.model, run.parts.loss, run.parts.options.meta, run.params,
                                     run.parts.evaluation_sampler(), options, dtype);
    std::vector<meta::StepSummary> theirs;
    if (baseline) {
      options.chunk = baseline_chunk;
      theirs =
          meta::evaluate(*baseline->parts.model, baseline->parts.loss, baseline->parts.options.meta, baseline->params,
                         baseline->parts.evaluation_sampler(), options, parse_dtype(baseline->config.dtype));
    }
    print_table(shots[i], run, ours, baseline, theirs);
    nlohmann::json entry{{"shots", shots[i]}, {"queries", options.queries}, {label(run), to_json(run, ours)}};
    if (baseline) entry[label(*baseline)] = to_json(*baseline, theirs);
    results.push_back(entry);

    const double last_step = std::max(ours.back().step, theirs.empty() ? 0 : theirs.back().step);
    add_series(chart, run, ours, label(run) + ", K=" + std::to_string(shots[i]), i, false, last_step);
    if (baseline)
      add_series(chart, *baseline, theirs, label(*baseline) + ", K=" + std::to_string(shots[i]), i, true, last_step);
  }

  if (group->rank() != 0) return 0;
  const fs::path out = args.out.empty() ? fs::path(args.checkpoint).parent_path() : fs::path(args.out);
  std::error_code ec;
  if (!out.empty()) fs::create_directories(out, ec);
  if (ec) throw IoError("cannot create " + out.string() + ": " + ec.message());
  const nlohmann::json report{{"checkpoint", run.path},
                              {"baseline", baseline ? baseline->path : ""},
                              {"tasks", args.tasks},
                              {"steps", args.steps},
                              {"seed", args.seed},
                              {"inner_lr", run.config.inner_lr},
                              {"baseline_inner_lr", baseline ? baseline->config.inner_lr : 0.0},
                              {"results", results}};
  const fs::path json_path = out / "eval.json",
                 svg_path = out / (classification ? "accuracy_vs_steps.svg" : "mse_vs_steps.svg");
  meta::write_file_atomically(json_path.string(), report.dump(2) + "\n");
  meta::write_file_atomically(svg_path.string(), render_svg(chart));
  std::printf("\nwrote %s and %s\n", json_path.c_str(), svg_path.c_str());
  return 0;
}

}  // namespace metatape::tools
