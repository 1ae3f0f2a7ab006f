// metatape ntk: a model's empirical NTK (docs/methods.md §5) on the support
// inputs of a few fresh tasks, with its spectrum, as JSON and SVG. The model
// is freshly initialised (--seed) or taken from a trained run's checkpoint.
//
// ntk.json: the model, task, checkpoint ("" for a fresh model), iteration,
// seed, dtype, mode, subset, the number of parameters the kernel is over,
// tasks, points, the kernel tensor's shape ([T, n, n], [T, nC, nC] or
// [T, n, n, C]) and "kernels": one entry per task (per task and output in
// diagonal mode) with the matrix ("kernel", rows of numbers), its
// eigenvalues in ascending order (eigh in float64 of the kernel, whatever
// --dtype), the condition number λmax/λmin ("inf" when λmin <= 0: singular,
// or negative by rounding) and the trace. The SVGs show the first matrix.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>

#include "commands.hpp"
#include "memory.hpp"
#include "metatape/meta/ntk.hpp"
#include "svg.hpp"

namespace metatape::tools {
namespace {

namespace fs = std::filesystem;

// One symmetric matrix of the result: a task's kernel (trace, full) or one
// output's (diagonal), m x m, row-major, in float64.
struct KernelMatrix {
  std::int64_t task = 0;
  std::int64_t output = -1;  // diagonal mode only
  std::int64_t size = 0;
  std::vector<double> values;
  std::vector<double> eigenvalues;  // ascending
};

// The [T, m, m] or [T, n, n, C] kernel as matrices, each [m, m].
std::vector<KernelMatrix> split(const Tensor& kernel, bool diagonal) {
  const std::vector<double> all = kernel.to_vector();
  const std::int64_t tasks = kernel.shape()[0], m = kernel.shape()[1];
  const std::int64_t outputs = diagonal ? kernel.shape()[3] : 1;
  std::vector<KernelMatrix> out;
  for (std::int64_t t = 0; t < tasks; ++t)
    for (std::int64_t c = 0; c < outputs; ++c) {
      KernelMatrix k{t, diagonal ? c : -1, m, {}, {}};
      for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t j = 0; j < m; ++j)
          k.values.push_back(all[static_cast<std::size_t>(((t * m + i) * m + j) * outputs + c)]);
      out.push_back(std::move(k));
    }
  return out;
}

// λmax / λmin of a positive semi-definite matrix; +infinity when λmin <= 0
// (singular, or negative by rounding).
double condition_number(const std::vector<double>& ascending) {
  if (ascending.empty() || !(ascending.front() > 0)) return std::numeric_limits<double>::infinity();
  return ascending.back() / ascending.front();
}

// JSON has no infinity: an infinite number is written "inf".
nlohmann::json number(double v) { return std::isinf(v) ? nlohmann::json("inf") : nlohmann::json(v); }

nlohmann::json to_json(const KernelMatrix& k) {
  nlohmann::json rows = nlohmann::json::array();
  for (std::int64_t i = 0; i < k.size; ++i)
    rows.push_back(std::vector<double>(k.values.begin() + i * k.size, k.values.begin() + (i + 1) * k.size));
  double trace = 0;
  for (std::int64_t i = 0; i < k.size; ++i) trace += k.values[static_cast<std::size_t>(i * k.size + i)];
  nlohmann::json j{{"task", k.task},
                   {"kernel", rows},
                   {"eigenvalues", k.eigenvalues},
                   {"condition_number", number(condition_number(k.eigenvalues))},
                   {"trace", trace}};
  if (k.output >= 0) j["output"] = k.output;
  return j;
}

// The model and θ: the checkpoint's, or fresh ones; the kernel's memory
// checked before a fresh θ is allocated.
LoadedRun model_of(const NtkArgs& args) {
  if (!args.checkpoint.empty()) {
    LoadedRun run = load_run(args.checkpoint, Device::cpu);
    check_memory(ntk_memory(run.config, run.parts, args), "this kernel");
    return run;
  }
  LoadedRun run{"", args.config, build(args.config), {}, 0};
  check_memory(ntk_memory(run.config, run.parts, args), "this kernel");
  Generator gen(meta::derive_seed(args.config.seed, 0));
  run.params = meta::init_meta_params(*run.parts.model, run.parts.options.meta, gen, parse_dtype(args.config.dtype));
  return run;
}

}  // namespace

int run_ntk(const NtkArgs& args, bool model_options_given) {
  if (!args.checkpoint.empty() && model_options_given)
    throw ValueError(
        "--checkpoint: the model, task, seed and dtype come from the checkpoint; do not give "
        "--task, --model, --hidden, --activation, --seed or --dtype with it");
  set_num_threads(static_cast<int>(args.threads));
  const meta::NtkOptions options{.mode = meta::parse_kernel_mode(args.mode),
                                 .subset = meta::parse_param_subset(args.subset)};
  LoadedRun run = model_of(args);
  // Fresh tasks from the evaluation stream of the seed: the inputs the
  // model is evaluated on, not those it was trained on.
  Generator gen(meta::derive_seed(run.config.seed, 2));
  const meta::TaskBatch batch = run.parts.tasks->sample(args.tasks, args.points, 1, gen, parse_dtype(run.config.dtype));
  const Tensor kernel =
      meta::empirical_ntk(*run.parts.model, run.params.model, batch.support_x, options).to(DType::f64);

  const bool diagonal = options.mode == meta::KernelMode::diagonal;
  std::vector<KernelMatrix> matrices = split(kernel, diagonal);
  for (KernelMatrix& k : matrices)
    k.eigenvalues = metatape::eigh(from_vector(k.values, Shape{k.size, k.size}, DType::f64)).values.to_vector();

  std::size_t parameters = 0;
  for (std::size_t i : meta::subset_indices(*run.parts.model, options.subset))
    parameters += static_cast<std::size_t>(run.parts.model->parameters()[i].shape.numel());
  nlohmann::json report{
      {"model", run.parts.model->describe()},
      {"task", run.config.task},
      {"checkpoint", run.path},
      {"iteration", run.iteration},
      {"seed", run.config.seed},
      {"dtype", run.config.dtype},
      {"mode", args.mode},
      {"subset", args.subset},
      {"parameters", parameters},
      {"tasks", args.tasks},
      {"points", args.points},
      {"shape", std::vector<std::int64_t>(kernel.shape().dims().begin(), kernel.shape().dims().end())},
      {"kernels", nlohmann::json::array()}};
  for (const KernelMatrix& k : matrices) report["kernels"].push_back(to_json(k));

  const fs::path out = !args.out.empty()          ? fs::path(args.out)
                       : !args.checkpoint.empty() ? fs::path(args.checkpoint).parent_path()
                                                  : fs::path("runs") / "ntk";
  std::error_code ec;
  if (!out.empty()) fs::create_directories(out, ec);
  if (ec) throw IoError("cannot create " + out.string() + ": " + ec.message());
  const KernelMatrix& first = matrices.front();
  const std::string what = "NTK (" + args.mode + ", " + args.subset + ") of " + run.parts.model->describe() +
                           (matrices.size() > 1 ? ", task 1" : "") + (diagonal ? ", output 1" : "");
  const fs::path json_path = out / "ntk.json", heatmap = out / "ntk_heatmap.svg", spectrum = out / "ntk_spectrum.svg";
  meta::write_file_atomically(json_path.string(), report.dump(1) + "\n");
  write_heatmap_svg(heatmap.string(), first.size, first.size, first.values, what);
  write_spectrum_svg(spectrum.string(), first.eigenvalues, "eigenvalues of the " + what);

  std::printf("%s NTK of %s over %zu parameters (%s): kernel shape [", args.mode.c_str(),
              run.parts.model->describe().c_str(), parameters, args.subset.c_str());
  for (int a = 0; a < kernel.rank(); ++a)
    std::printf("%s%lld", a ? ", " : "", static_cast<long long>(kernel.shape()[a]));
  std::printf("]\n");
  for (const KernelMatrix& k : matrices) {
    std::printf(" task %lld", static_cast<long long>(k.task + 1));
    if (k.output >= 0) std::printf(" output %lld", static_cast<long long>(k.output + 1));
    std::printf(": eigenvalues %.4g .. %.4g, condition number %.4g\n", k.eigenvalues.front(), k.eigenvalues.back(),
                condition_number(k.eigenvalues));
  }
  std::printf("wrote %s, %s and %s\n", json_path.c_str(), heatmap.c_str(), spectrum.c_str());
  return 0;
}

}  // namespace metatape::tools
