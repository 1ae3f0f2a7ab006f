// metatape analyze: the study tools of docs/methods.md §7 over the
// checkpoints of one run — per task, the exact and the first-order
// meta-gradients (cosine, norm ratio), their spread across tasks, the top
// eigenvalues of the inner-loss and meta-loss Hessians, and the Meta-NTK's
// condition number — all on one seeded task batch, so that the values of
// different checkpoints are comparable over training.
//
// analysis.json: "settings" (the run, the batch, the inner loop, the Lanczos
// and Meta-NTK settings) and "checkpoints", one entry per checkpoint in
// iteration order. Numbers JSON cannot hold are written "inf" / "-inf" (an
// SNR with no spread) and null (NaN). The SVGs: cosine and norm ratio over
// training, the Hessians' top eigenvalues over training, the last
// checkpoint's spectrum, and a per-task scatter of the last checkpoint.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <tuple>

#include "commands.hpp"
#include "memory.hpp"
#include "metatape/meta/analysis.hpp"
#include "metatape/meta/checkpoint.hpp"
#include "metatape/meta/evaluation.hpp"
#include "progress.hpp"
#include "svg.hpp"

namespace metatape::tools {
namespace {

namespace fs = std::filesystem;

constexpr std::int64_t kMaxTasks = 10'000, kMaxLanczos = 10'000, kMaxCheckpoints = 100'000;

// --checkpoint FILE, repeatable and comma-separated: not a row of the
// generic kinds, which take one value each.
Option<AnalyzeArgs> checkpoint_row() {
  Option<AnalyzeArgs> o;
  o.name = "--checkpoint";
  o.add = [](CLI::App& app, const AnalyzeArgs&) {
    return app
        .add_option("--checkpoint",
                    "Checkpoints to analyse, repeatable or comma-separated (all of one run; shown in iteration order)")
        ->type_name("FILE,...")
        ->delimiter(',')
        ->expected(1, static_cast<int>(kMaxCheckpoints));
  };
  o.set = [](const CLI::Option& given, AnalyzeArgs& args) {
    for (const std::string& path : given.results()) {
      if (path.empty()) throw ValueError("--checkpoint: an empty file name");
      args.checkpoints.push_back(path);
    }
  };
  return o;
}

// One checkpoint of the series. Its parameters are read when it is
// analysed, so that a long series holds one checkpoint at a time.
struct Subject {
  std::string path;
  std::int64_t iteration = 0;
};

// The series: the first checkpoint's run (model, tasks, loss, settings) and
// every checkpoint, sorted by iteration.
struct Loaded {
  LoadedRun run;
  std::vector<Subject> subjects;
};

// Rethrows `e` as its own type, `prefix` before its message and `suffix`
// after it.
[[noreturn]] void rethrow_prefixed(const Error& e, const std::string& prefix, const std::string& suffix = "") {
  const std::string message = prefix + e.what() + suffix;
  if (dynamic_cast<const IoError*>(&e)) throw IoError(message);
  if (dynamic_cast<const ShapeError*>(&e)) throw ShapeError(message);
  if (dynamic_cast<const DTypeError*>(&e)) throw DTypeError(message);
  if (dynamic_cast<const DeviceError*>(&e)) throw DeviceError(message);
  if (dynamic_cast<const GradError*>(&e)) throw GradError(message);
  throw ValueError(message);
}

std::vector<Tensor> in_f64(const std::vector<Tensor>& params) {
  std::vector<Tensor> out;
  for (const Tensor& p : params) out.push_back(p.to(DType::f64));
  return out;
}

// The files of --run DIR: its kept checkpoints in name (iteration) order,
// then checkpoint.bin unless its iteration is that of the last kept one (a
// run resumed without --keep-checkpoints goes on past its kept series).
std::vector<std::string> run_checkpoints(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw IoError("--run: " + dir.string() +
                  (ec ? " cannot be examined (" + ec.message() + ")" : " is not a directory"));
  std::vector<std::string> paths;
  for (const fs::path& kept : kept_checkpoints(dir)) paths.push_back(kept.string());
  const fs::path last = dir / "checkpoint.bin";
  // Dropped at loading if it repeats the last kept one.
  if (fs::exists(last, ec)) paths.push_back(last.string());
  if (paths.empty())
    throw ValueError("--run: " + dir.string() + " holds no checkpoint (neither " +
                     (dir / kKeptCheckpointDirectory / "iteration-*.bin").string() + " nor " + last.string() +
                     "); train it with --keep-checkpoints for a series");
  return paths;
}

// The model parameters of checkpoint `path` in float64, checked to fit the
// run's model.
std::vector<Tensor> checkpoint_params(const LoadedRun& run, const std::string& path, meta::Checkpoint* read = nullptr) {
  meta::Checkpoint checkpoint = meta::load_checkpoint(path);
  meta::check_checkpoint_fits(checkpoint, *run.parts.model, run.parts.options, path);
  const std::size_t count = run.parts.model->parameters().size();
  std::vector<Tensor> params = in_f64(meta::MetaParams::from_all(checkpoint.params, count).model);
  if (read) *read = std::move(checkpoint);
  return params;
}

// Reads every checkpoint, each checked to belong to the first one's run
// (ValueError naming both files and the first difference) and to fit its
// model; the run's parts are built once. Only their iterations are kept.
Loaded read_series(const std::vector<std::string>& paths) {
  Loaded s{load_run(paths.front(), Device::cpu), {}};
  s.subjects.push_back({paths.front(), s.run.iteration});
  for (std::size_t i = 1; i < paths.size(); ++i) {
    meta::Checkpoint checkpoint;
    (void)checkpoint_params(s.run, paths[i], &checkpoint);
    const RunConfig config = RunConfig::from_checkpoint(checkpoint.config, paths[i]);
    std::string difference;
    if (!s.run.config.same_run_as(config, &difference))
      throw ValueError(paths[i] + " belongs to a different run than " + paths.front() + " (" + difference +
                       "); analyse the checkpoints of one run at a time");
    s.subjects.push_back({paths[i], checkpoint.iteration});
  }
  std::stable_sort(s.subjects.begin(), s.subjects.end(),
                   [](const Subject& a, const Subject& b) { return a.iteration < b.iteration; });
  return s;
}

// read_series, its errors prefixed with the option that named the files.
Loaded load_series(const std::vector<std::string>& paths, const std::string& run_directory) {
  const std::string where = run_directory.empty() ? "--checkpoint" : "--run " + run_directory;
  try {
    Loaded s = read_series(paths);
    // A run directory's checkpoint.bin is usually a copy of its last kept checkpoint.
    if (!run_directory.empty()) {
      const auto repeats = [](const Subject& a, const Subject& b) { return a.iteration == b.iteration; };
      s.subjects.erase(std::unique(s.subjects.begin(), s.subjects.end(), repeats), s.subjects.end());
    }
    return s;
  } catch (const Error& e) {
    rethrow_prefixed(e, where + ": ");
  }
}

// Where the outputs go: --out, else <run directory>/analysis, the run
// directory being --run or the first checkpoint's (the parent of a kept
// checkpoint's checkpoints/).
fs::path output_directory(const AnalyzeArgs& args, const std::string& first) {
  if (!args.out.empty()) return args.out;
  if (!args.run.empty()) return fs::path(args.run) / "analysis";
  fs::path dir = fs::path(first).parent_path();
  if (dir.filename() == kKeptCheckpointDirectory) dir = dir.parent_path();
  return dir / "analysis";
}

// --- summaries ---

// JSON has no infinity or NaN: "inf", "-inf" and null.
nlohmann::json number(double v) {
  if (std::isnan(v)) return nullptr;
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

nlohmann::json numbers(const std::vector<double>& v) {
  nlohmann::json out = nlohmann::json::array();
  for (double x : v) out.push_back(number(x));
  return out;
}

nlohmann::json lanczos_json(const meta::LanczosResult& r) {
  return {{"eigenvalues", numbers(r.eigenvalues)}, {"residuals", numbers(r.residuals)}, {"iterations", r.iterations}};
}

nlohmann::json checkpoint_json(const Subject& s, const meta::Analysis& a, const meta::AnalysisOptions& o) {
  const meta::MetaGradientComparison& g = a.gradients;
  const meta::MeanSd cosine = meta::mean_sd(g.cosine), ratio = meta::mean_sd(g.norm_ratio);
  nlohmann::json j{{"checkpoint", s.path},
                   {"iteration", s.iteration},
                   {"gradients",
                    {{"cosine", numbers(g.cosine)},
                     {"norm_ratio", numbers(g.norm_ratio)},
                     {"exact_norm", numbers(g.exact_norm)},
                     {"first_order_norm", numbers(g.first_order_norm)},
                     {"cosine_task_mean", number(cosine.mean)},
                     {"cosine_task_sd", number(cosine.sd)},
                     {"norm_ratio_task_mean", number(ratio.mean)},
                     {"norm_ratio_task_sd", number(ratio.sd)},
                     {"mean_gradient_cosine", number(g.mean_cosine)},
                     {"mean_gradient_norm_ratio", number(g.mean_norm_ratio)},
                     {"exact_variance", number(g.exact_variance)},
                     {"first_order_variance", number(g.first_order_variance)},
                     {"exact_snr", number(g.exact_snr)},
                     {"first_order_snr", number(g.first_order_snr)}}}};
  if (o.hessians) {
    j["inner_hessian"] = lanczos_json(a.inner_hessian);
    j["meta_hessian"] = lanczos_json(a.meta_hessian);
  }
  if (o.meta_ntk)
    j["meta_ntk"] = {{"eigenvalues", numbers(a.meta_ntk_eigenvalues)},
                     {"ridge", number(a.meta_ntk_ridge)},
                     {"condition_number", number(a.meta_ntk_condition)}};
  return j;
}

// --- plots ---

struct Result {
  const Subject* subject;
  meta::Analysis analysis;
};

double top(const meta::LanczosResult& r) {
  return r.eigenvalues.empty() ? std::numeric_limits<double>::quiet_NaN() : r.eigenvalues.front();
}

// A per-task quantity's mean ± sd over tasks, and the same quantity of the
// mean gradients, against iteration; markers so that one checkpoint shows.
std::string over_training(const std::vector<Result>& results, const std::string& title, const std::string& y_label,
                          std::vector<double> meta::MetaGradientComparison::*per_task,
                          double meta::MetaGradientComparison::*of_means) {
  Series tasks{"tasks: mean ± sd", {}, {}, {}, palette(0), false, true};
  Series means{"of the mean gradients", {}, {}, {}, palette(1), true, true};
  for (const Result& r : results) {
    const auto x = static_cast<double>(r.subject->iteration);
    const meta::MeanSd s = meta::mean_sd(r.analysis.gradients.*per_task);
    tasks.x.push_back(x);
    tasks.y.push_back(s.mean);
    tasks.error.push_back(s.sd);
    means.x.push_back(x);
    means.y.push_back(r.analysis.gradients.*of_means);
  }
  return render_svg(Chart{title, "iteration", y_label, false, {tasks, means}});
}

bool all_positive(const std::vector<Series>& series) {
  for (const Series& s : series)
    for (double y : s.y)
      if (!(y > 0)) return false;
  return true;
}

// λ1 and λk of both Hessians against iteration (k as asked; a checkpoint
// whose Lanczos found fewer, in an invariant subspace, has no λk point).
std::string hessian_over_training(const std::vector<Result>& results, std::size_t k, const std::string& title) {
  std::vector<Series> series;
  for (const auto& [name, member, color] :
       {std::tuple{"inner", &meta::Analysis::inner_hessian, 0}, std::tuple{"meta", &meta::Analysis::meta_hessian, 3}}) {
    Series first{std::string(name) + " λ1", {}, {}, {}, palette(color), false, true};
    Series last{std::string(name) + " λ" + std::to_string(k), {}, {}, {}, palette(color), true, true};
    for (const Result& r : results) {
      const std::vector<double>& ev = (r.analysis.*member).eigenvalues;
      const auto x = static_cast<double>(r.subject->iteration);
      if (!ev.empty()) first.x.push_back(x), first.y.push_back(ev.front());
      if (ev.size() == k) last.x.push_back(x), last.y.push_back(ev.back());
    }
    series.push_back(first);
    if (k > 1) series.push_back(last);
  }
  const bool log_y = all_positive(series);
  return render_svg(
      Chart{title, "iteration", log_y ? "eigenvalue" : "eigenvalue (some <= 0: linear axis)", log_y, series});
}

// The last checkpoint's top eigenvalues of both Hessians against their index.
std::string spectrum(const Result& r, const std::string& title) {
  std::vector<Series> series;
  for (const auto& [name, lanczos, color] : {std::tuple{"inner-loss Hessian", &r.analysis.inner_hessian, 0},
                                             std::tuple{"meta-loss Hessian", &r.analysis.meta_hessian, 3}}) {
    Series s{name, {}, {}, {}, palette(color), false, true};
    for (std::size_t i = 0; i < lanczos->eigenvalues.size(); ++i) {
      s.x.push_back(static_cast<double>(i + 1));
      s.y.push_back(lanczos->eigenvalues[i]);
    }
    series.push_back(s);
  }
  const bool log_y = all_positive(series);
  return render_svg(
      Chart{title, "index (decreasing)", log_y ? "eigenvalue" : "eigenvalue (some <= 0: linear axis)", log_y, series});
}

// Per task of the last checkpoint: the cosine against the exact
// meta-gradient's norm (a task whose second-order term matters most shows
// low).
std::string scatter(const Result& r, const std::string& title) {
  Series s{"one task", r.analysis.gradients.exact_norm, r.analysis.gradients.cosine, {}, palette(0), false, true,
           false};
  return render_svg(Chart{title, "‖exact meta-gradient‖ of the task", "cos(exact, first order)", false, {s}});
}

// --- the command ---

void check(const AnalyzeArgs& args) {
  if (args.checkpoints.empty() == args.run.empty())
    throw ValueError(args.run.empty() ? "give the checkpoints to analyse: --checkpoint FILE[,FILE...] or --run DIR"
                                      : "--checkpoint and --run exclude each other: give one");
  if (args.hessians && args.eigenvalues > args.lanczos_iterations)
    throw ValueError("--eigenvalues " + std::to_string(args.eigenvalues) + " exceeds --lanczos-iterations " +
                     std::to_string(args.lanczos_iterations) +
                     ": Lanczos finds at most as many eigenvalues as its iterations");
}

meta::AnalysisOptions analysis_options(const AnalyzeArgs& args, const RunConfig& config) {
  meta::AnalysisOptions o;
  o.inner_lr = std::isnan(args.inner_lr) ? config.inner_lr : args.inner_lr;
  o.inner_steps = static_cast<int>(args.inner_steps < 0 ? config.inner_steps : args.inner_steps);
  o.lanczos = {.eigenvalues = static_cast<int>(args.eigenvalues),
               .iterations = static_cast<int>(args.lanczos_iterations),
               .seed = args.seed};
  o.hessians = args.hessians;
  o.meta_ntk = args.meta_ntk;
  o.meta_ntk_ridge = args.meta_ntk_ridge;
  return o;
}

nlohmann::json settings_json(const AnalyzeArgs& args, const Loaded& s, const meta::AnalysisOptions& o,
                             std::int64_t parameters) {
  const RunConfig& c = s.run.config;
  return {{"run", args.run},
          {"algorithm", c.algorithm},
          {"task", c.task},
          {"model", s.run.parts.model->describe()},
          {"parameters", parameters},
          {"dtype", "f64 (the checkpoints' " + c.dtype + " parameters converted)"},
          {"split", args.split},
          {"tasks", args.tasks},
          {"shots", c.shots},
          {"queries", c.queries},
          {"seed", args.seed},
          {"inner_lr", o.inner_lr},
          {"inner_steps", o.inner_steps},
          {"hessians", o.hessians},
          {"eigenvalues", o.lanczos.eigenvalues},
          {"lanczos_iterations", o.lanczos.iterations},
          {"meta_ntk", o.meta_ntk},
          {"meta_ntk_ridge", o.meta_ntk_ridge}};
}

// A table cell: %.4g, or "-" for a value not computed.
std::string cell(double v, bool computed = true) {
  if (!computed) return "-";
  char text[32];
  std::snprintf(text, sizeof text, "%.4g", v);
  return text;
}

void print_table(const std::vector<Result>& results, const meta::AnalysisOptions& o) {
  // printf pads bytes: "±" and each Greek letter are two bytes in UTF-8 and one column.
  std::printf("%10s %18s %10s %10s %10s %10s %12s %12s %14s\n", "iteration", "cos (tasks)", "cos(means)", "FO/exact",
              "SNR exact", "SNR FO", "λ1 inner", "λ1 meta", "κ(Φ+ρI)");
  for (const Result& r : results) {
    const meta::MetaGradientComparison& g = r.analysis.gradients;
    const meta::MeanSd cosine = meta::mean_sd(g.cosine);
    const std::string tasks = cell(cosine.mean) + " ± " + cell(cosine.sd);
    std::printf("%10lld %19s %10s %10s %10s %10s %11s %11s %11s\n", static_cast<long long>(r.subject->iteration),
                tasks.c_str(), cell(g.mean_cosine).c_str(), cell(g.mean_norm_ratio).c_str(), cell(g.exact_snr).c_str(),
                cell(g.first_order_snr).c_str(), cell(top(r.analysis.inner_hessian), o.hessians).c_str(),
                cell(top(r.analysis.meta_hessian), o.hessians).c_str(),
                cell(r.analysis.meta_ntk_condition, o.meta_ntk).c_str());
  }
}

}  // namespace

const std::vector<Option<AnalyzeArgs>>& analyze_options() {
  using O = Options<AnalyzeArgs>;
  static const std::vector<Option<AnalyzeArgs>> table = {
      checkpoint_row(),
      O::local("--run", &AnalyzeArgs::run,
               "A run directory: its checkpoints/iteration-*.bin (train --keep-checkpoints) in order, or its "
               "checkpoint.bin",
               Text{}),
      O::local("--split", &AnalyzeArgs::split,
               "Tasks from the meta-training distribution or the meta-test one (held-out classes where the task has "
               "them)",
               Choices{{"train", "test"}}),
      O::local("--tasks", &AnalyzeArgs::tasks, "Tasks in the seeded batch (the same for every checkpoint)",
               Integers{1, kMaxTasks}),
      O::local("--seed", &AnalyzeArgs::seed, "Seed of the task batch and of Lanczos's start vector",
               Unsigned{0, std::numeric_limits<std::uint64_t>::max()}),
      O::local("--eigenvalues", &AnalyzeArgs::eigenvalues, "Top eigenvalues of each Hessian (k)",
               Integers{1, kMaxLanczos}),
      O::local("--lanczos-iterations", &AnalyzeArgs::lanczos_iterations,
               "Lanczos iterations (Hessian-vector products per Hessian; at least k)", Integers{1, kMaxLanczos}),
      O::local("--no-hessians", &AnalyzeArgs::hessians, "Skip the Hessians' eigenvalues (the costly part)",
               Flag{false}),
      O::local("--no-meta-ntk", &AnalyzeArgs::meta_ntk, "Skip the Meta-NTK and its condition number", Flag{false}),
      O::local("--meta-ntk-ridge", &AnalyzeArgs::meta_ntk_ridge, "Ridge ρ of the condition number κ(Φ + ρI)",
               Reals{0, false}),
      O::local("--inner-steps", &AnalyzeArgs::inner_steps, "Inner SGD steps τ (default: the run's)",
               Integers{0, 1'000'000}),
      O::local("--inner-lr", &AnalyzeArgs::inner_lr, "Inner learning rate α (default: the run's)", Reals{0, false}),
      O::local("--out", &AnalyzeArgs::out, "Directory for analysis.json and the SVGs (default: <run>/analysis)",
               Text{}),
      O::local("--quiet", &AnalyzeArgs::quiet, "No progress line, even on a terminal", Flag{}),
      O::local("--threads", &AnalyzeArgs::threads, kThreadsHelp, thread_counts()),
  };
  return table;
}

namespace {

// Every checkpoint of the series analysed on `batch`, one at a time, with a
// progress line. An error names the checkpoint and the stage it came from;
// the inner loop's options are suggested where the inner loop runs.
std::vector<Result> analyse_series(const Loaded& s, const meta::TaskBatch& batch, const meta::AnalysisOptions& base,
                                   bool show_progress) {
  Progress progress(show_progress);
  std::vector<Result> results;
  const auto n = static_cast<std::int64_t>(s.subjects.size());
  std::int64_t stages = 0;  // per checkpoint, as the analysis reports them
  for (std::int64_t i = 0; i < n; ++i) {
    const Subject& subject = s.subjects[static_cast<std::size_t>(i)];
    const std::string which = "analysing " + subject.path + " (iteration " + std::to_string(subject.iteration) + ")";
    std::string stage = "loading";
    meta::AnalysisOptions o = base;
    o.progress = [&](const char* name, int index, int count) {
      stages = count;
      stage = name;
      progress.stage(i * count + index, n * count,
                     "checkpoint " + std::to_string(i + 1) + "/" + std::to_string(n) + " (iteration " +
                         std::to_string(subject.iteration) + "): " + name);
    };
    try {
      const std::vector<Tensor> params = i == 0 ? in_f64(s.run.params.model) : checkpoint_params(s.run, subject.path);
      results.push_back({&subject, meta::analyze(*s.run.parts.model, s.run.parts.loss, params, batch, o)});
    } catch (const Error& e) {
      progress.finish();
      // The checkpoint's values are finite (checked at loading): a
      // non-finite gradient or product comes from the inner loop.
      const bool inner_loop = stage == "meta-gradients" || stage == "meta Hessian";
      const bool not_finite = std::string(e.what()).find("finite") != std::string::npos;
      rethrow_prefixed(e, which + ", " + stage + ": ",
                       inner_loop && not_finite ? "; the options for the inner loop: --inner-lr, --inner-steps" : "");
    } catch (...) {
      progress.finish();
      throw;
    }
  }
  progress.stage(n * stages, n * stages, "analysed " + std::to_string(n) + " checkpoint(s)");
  progress.finish();
  return results;
}

// The output files by name: analysis.json and the SVGs.
std::map<std::string, std::string> render_files(const AnalyzeArgs& args, const Loaded& s,
                                                const std::vector<Result>& results, const meta::AnalysisOptions& base,
                                                std::int64_t parameters) {
  nlohmann::json report{{"settings", settings_json(args, s, base, parameters)},
                        {"checkpoints", nlohmann::json::array()}};
  for (const Result& r : results) report["checkpoints"].push_back(checkpoint_json(*r.subject, r.analysis, base));
  const std::string what =
      s.run.config.algorithm + " on " + s.run.config.task + ", " + std::to_string(args.tasks) + " tasks";
  const std::string last = " (iteration " + std::to_string(results.back().subject->iteration) + ")";
  std::map<std::string, std::string> files{
      {"analysis.json", report.dump(1) + "\n"},
      {"cosine_over_training.svg",
       over_training(results, "cos(exact, first-order meta-gradient): " + what, "cosine similarity",
                     &meta::MetaGradientComparison::cosine, &meta::MetaGradientComparison::mean_cosine)},
      {"norm_ratio_over_training.svg",
       over_training(results, "‖first order‖ / ‖exact‖: " + what, "norm ratio",
                     &meta::MetaGradientComparison::norm_ratio, &meta::MetaGradientComparison::mean_norm_ratio)},
      {"per_task_scatter.svg", scatter(results.back(), "per task: " + what + last)}};
  if (base.hessians) {
    files["hessian_over_training.svg"] =
        hessian_over_training(results, static_cast<std::size_t>(base.lanczos.eigenvalues),
                              "top Hessian eigenvalues (inner loss, meta-loss): " + what);
    files["spectrum.svg"] = spectrum(results.back(), "top Hessian eigenvalues" + last);
  }
  return files;
}

void write_files(const fs::path& out, const std::map<std::string, std::string>& files, bool hessians) {
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) throw IoError("cannot create " + out.string() + ": " + ec.message());
  for (const auto& [name, contents] : files) meta::write_file_atomically((out / name).string(), contents);
  // Plots of an earlier analysis with Hessians would no longer match analysis.json.
  if (!hessians)
    for (const char* name : {"hessian_over_training.svg", "spectrum.svg"}) fs::remove(out / name, ec);
}

}  // namespace

int run_analyze(const AnalyzeArgs& args) {
  check(args);
  set_num_threads(static_cast<int>(args.threads));
  const std::vector<std::string> paths = args.run.empty() ? args.checkpoints : run_checkpoints(args.run);
  const Loaded s = load_series(paths, args.run);
  const meta::AnalysisOptions base = analysis_options(args, s.run.config);
  check_memory(analysis_memory(s.run.config, s.run.parts, args, base.inner_steps), "this analysis");

  const meta::TaskSampler& sampler = args.split == "test" ? s.run.parts.evaluation_sampler() : *s.run.parts.tasks;
  Generator gen(meta::derive_seed(args.seed, 2));
  const meta::TaskBatch batch = sampler.sample(args.tasks, s.run.config.shots, s.run.config.queries, gen, DType::f64);
  const std::int64_t parameters = meta::flat_size(s.run.params.model);

  const std::vector<Result> results = analyse_series(s, batch, base, !args.quiet && isatty(STDERR_FILENO));
  // Everything is rendered before the directory is touched.
  const std::map<std::string, std::string> files = render_files(args, s, results, base, parameters);
  const fs::path out = output_directory(args, paths.front());
  write_files(out, files, base.hessians);

  std::printf(
      "%zu checkpoint(s) of %s on %s (%s, %lld parameters): %lld tasks of the %s split (seed %llu), inner loop "
      "%d step(s) of α = %g\n",
      results.size(), s.run.config.algorithm.c_str(), s.run.config.task.c_str(), s.run.parts.model->describe().c_str(),
      static_cast<long long>(parameters), static_cast<long long>(args.tasks), args.split.c_str(),
      static_cast<unsigned long long>(args.seed), base.inner_steps, base.inner_lr);
  std::printf(
      "cos: exact against first-order meta-gradients, per task (mean ± sd) and of the tasks' means; FO/exact: "
      "the means' norm ratio; SNR: ‖mean‖² / (variance / tasks); λ1: top eigenvalue of each Hessian; κ: "
      "the Meta-NTK's condition number with ρ = %g\n",
      base.meta_ntk_ridge);
  print_table(results, base);
  std::printf("wrote %s and %zu SVGs\n", (out / "analysis.json").c_str(), files.size() - 1);
  return 0;
}

}  // namespace metatape::tools
