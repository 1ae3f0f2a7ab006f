// metatape meta-ntk: the meta-NTK Φ of a model over one seeded meta-batch
// (docs/methods.md §4), with its spectrum and condition number, ridge
// stated; writes meta_ntk.json, the heat map of Φ and its spectrum as SVG.
// The model comes from the options `train` takes, or from a checkpoint.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>

#include "commands.hpp"
#include "metatape/meta/checkpoint.hpp"
#include "metatape/meta/meta_ntk.hpp"
#include "svg.hpp"

namespace metatape::tools {
namespace {

namespace fs = std::filesystem;

// The row `name` of the train table, setting the same field of args.train and
// recording that it was given (so that a checkpoint's value can yield to it).
Option<MetaNtkArgs> train_row(const std::string& name) {
  for (const Option<TrainArgs>& row : train_options()) {
    if (row.name != name) continue;
    Option<MetaNtkArgs> o;
    o.name = row.name;
    o.add = [row](CLI::App& app, const MetaNtkArgs& defaults) { return row.add(app, defaults.train); };
    o.set = [row](const CLI::Option& given, MetaNtkArgs& args) {
      row.set(given, args.train);
      args.given.push_back(row.name);
    };
    return o;
  }
  throw ValueError("meta-ntk: no train option " + name);  // a programming error, caught by the CLI test
}

// The options of train that pick the model (refused beside --checkpoint).
const std::vector<std::string> kModelOptions = {"--task", "--model", "--hidden", "--activation"};

bool given(const MetaNtkArgs& args, const std::string& name) {
  return std::find(args.given.begin(), args.given.end(), name) != args.given.end();
}

// The run configuration and parameters: from the checkpoint, or the train
// options with parameters initialised from --seed.
struct Subject {
  RunConfig config;
  RunParts parts;
  std::vector<Tensor> params;
  std::string label;
};

Subject load_subject(const MetaNtkArgs& args) {
  Subject s;
  if (args.checkpoint.empty()) {
    s.config = args.train.config;
    s.parts = build(s.config);
    Generator gen(s.config.seed);
    s.params = s.parts.model->init(gen, DType::f64);
    s.label = "initialisation (seed " + std::to_string(s.config.seed) + ")";
    return s;
  }
  for (const std::string& name : kModelOptions)
    if (given(args, name))
      throw ValueError(name + " picks the model, which --checkpoint " + args.checkpoint + " already fixes");
  LoadedRun run = load_run(args.checkpoint, Device::cpu);
  s.config = run.config;
  s.parts = std::move(run.parts);
  s.params = run.params.model;
  // The meta-batch and inner loop asked for on the command line win.
  for (auto [name, field] : {std::pair{"--shots", &RunConfig::shots}, std::pair{"--queries", &RunConfig::queries},
                             std::pair{"--inner-steps", &RunConfig::inner_steps}})
    if (given(args, name)) s.config.*field = args.train.config.*field;
  if (given(args, "--inner-lr")) s.config.inner_lr = args.train.config.inner_lr;
  if (given(args, "--seed")) s.config.seed = args.train.config.seed;
  s.label = args.checkpoint + " (iteration " + std::to_string(run.iteration) + ")";
  return s;
}

meta::MetaNtkOptions ntk_options(const MetaNtkArgs& args, const Subject& s) {
  meta::MetaNtkOptions o;
  if (!std::isnan(args.time) && given(args, "--inner-steps"))
    throw ValueError("--time (gradient flow) and --inner-steps (SGD steps) exclude each other: give one");
  o.form = std::isnan(args.time) ? meta::KernelForm::steps : meta::KernelForm::flow;
  o.inner_lr = s.config.inner_lr;
  o.inner_steps = s.config.inner_steps;
  o.time = std::isnan(args.time) ? 0.0 : args.time;
  o.anil = args.anil || s.config.algorithm == "anil";
  o.inverse_ridge = args.inverse_ridge;
  o.ridge = args.ridge;
  o.mode = meta::parse_kernel_mode(args.kernel_mode);
  o.validate();
  return o;
}

// A double for JSON: +inf (which JSON cannot hold) as the string "inf".
nlohmann::json number(double v) { return std::isinf(v) ? nlohmann::json("inf") : nlohmann::json(v); }

nlohmann::json settings_json(const MetaNtkArgs& args, const Subject& s, const meta::MetaNtkOptions& o) {
  return {{"model", s.parts.model->describe()},
          {"parameters_from", s.label},
          {"task", s.config.task},
          {"tasks", args.tasks},
          {"shots", s.config.shots},
          {"queries", s.config.queries},
          {"seed", s.config.seed},
          {"form", meta::kernel_form_name(o.form)},
          {"inner_lr", o.inner_lr},
          {"inner_steps", o.inner_steps},
          {"time", o.form == meta::KernelForm::flow ? number(o.time) : nlohmann::json(nullptr)},
          {"inverse_ridge", o.inverse_ridge},
          {"anil", o.anil},
          {"kernel_mode", meta::kernel_mode_name(o.mode)},
          {"loss_scale", "c = 2/(shots * outputs): metatape's inner loss is the mean MSE"}};
}

}  // namespace

const std::vector<Option<MetaNtkArgs>>& meta_ntk_options() {
  using O = Options<MetaNtkArgs>;
  static const std::vector<Option<MetaNtkArgs>> table = {
      train_row("--task"),
      train_row("--model"),
      train_row("--hidden"),
      train_row("--activation"),
      train_row("--shots"),
      train_row("--queries"),
      train_row("--inner-lr"),
      train_row("--inner-steps"),
      train_row("--seed"),
      O::local("--checkpoint", &MetaNtkArgs::checkpoint,
               "Take the model and its parameters from this checkpoint (default: fresh, from --seed)", Text{}),
      O::local("--tasks", &MetaNtkArgs::tasks, "Tasks in the meta-batch", Integers{1, 10'000}),
      O::local("--time", &MetaNtkArgs::time,
               "Gradient-flow time of the inner loop instead of --inner-steps (inf: (K' + εI)⁻¹)",
               Reals{.min = 0, .infinity = true}),
      O::local("--anil", &MetaNtkArgs::anil, "ANIL: the head kernel in the inner loop (default for an anil run)",
               Flag{}),
      O::local("--ridge", &MetaNtkArgs::ridge, "Ridge ρ added to Φ for its condition number", Reals{0, false}),
      O::local("--inverse-ridge", &MetaNtkArgs::inverse_ridge, "ε of (K' + εI)⁻¹ at --time inf", Reals{0, true}),
      O::local("--kernel-mode", &MetaNtkArgs::kernel_mode, "trace (shared by the outputs) or full",
               Choices{{"trace", "full"}}),
      O::local("--out", &MetaNtkArgs::out, "Directory for meta_ntk.json, meta_ntk.svg and meta_ntk_spectrum.svg",
               Text{}),
  };
  return table;
}

int run_meta_ntk(const MetaNtkArgs& args) {
  const Subject s = load_subject(args);
  const meta::MetaNtkOptions o = ntk_options(args, s);
  Generator task_gen(s.config.seed + 1);
  const meta::TaskBatch batch =
      s.parts.tasks->sample(args.tasks, s.config.shots, s.config.queries, task_gen, DType::f64);
  const meta::MetaNtkResult r = meta::meta_ntk(*s.parts.model, s.params, batch, o);
  const std::int64_t n = r.phi.dim(0);

  const fs::path out = args.out;
  std::error_code error;
  fs::create_directories(out, error);
  if (error) throw IoError("cannot create the directory " + out.string() + ": " + error.message());
  nlohmann::json j = {{"settings", settings_json(args, s, o)},
                      {"size", n},
                      {"task_offsets", r.offsets},
                      {"ridge", r.ridge},
                      {"condition_number", number(r.condition_number)},
                      {"eigenvalues", r.eigenvalues}};
  const std::vector<double> phi = r.phi.to_vector();
  nlohmann::json rows = nlohmann::json::array();
  for (std::int64_t i = 0; i < n; ++i)
    rows.push_back(std::vector<double>(phi.begin() + i * n, phi.begin() + (i + 1) * n));
  j["phi"] = rows;
  const std::string title =
      "meta-NTK Φ (" + s.parts.model->describe() + ", " + s.config.task + ", " + std::to_string(args.tasks) + " tasks)";
  meta::write_file_atomically((out / "meta_ntk.json").string(), j.dump(1) + "\n");
  write_heatmap_svg((out / "meta_ntk.svg").string(), n, n, phi, title);
  write_spectrum_svg((out / "meta_ntk_spectrum.svg").string(), r.eigenvalues, "eigenvalues of " + title);

  std::printf("meta-NTK of %s from %s on %lld %s tasks (%lld support, %lld query): Φ is %lld x %lld\n",
              s.parts.model->describe().c_str(), s.label.c_str(), static_cast<long long>(args.tasks),
              s.config.task.c_str(), static_cast<long long>(s.config.shots), static_cast<long long>(s.config.queries),
              static_cast<long long>(n), static_cast<long long>(n));
  std::printf("eigenvalues %.4g .. %.4g; condition number of Φ + ρI with ridge ρ = %g: %.6g\n", r.eigenvalues.front(),
              r.eigenvalues.back(), r.ridge, r.condition_number);
  if (std::isinf(r.condition_number))
    std::printf("Φ + ρI is singular in float64 (λmin + ρ <= 0): give a ridge, e.g. --ridge %.1g\n",
                std::max(1e-12, 1e-8 * std::abs(r.eigenvalues.back())));
  std::printf("wrote %s, %s and %s\n", (out / "meta_ntk.json").c_str(), (out / "meta_ntk.svg").c_str(),
              (out / "meta_ntk_spectrum.svg").c_str());
  return 0;
}

}  // namespace metatape::tools
