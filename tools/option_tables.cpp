// The options of `metatape train`, `eval` and `ntk`, one row each. A new
// training option is a field (in RunConfig when it belongs to the run and so
// to config.json and checkpoints, else in TrainArgs) and a row here: a
// stored row added after config.json's first release is `added` (optional
// in older files, which get its default), and one that only some algorithms
// use is wrapped in `only_with` (refused for the others, said in its help).
//
// ntk writes every kernel entry as JSON text: --points <= 4096 (a full
// kernel of 4096 points is ~300 MB of text per task), --tasks <= 64.
//
// Maxima: sizes are bounded by the memory a run needs (memory.hpp), counts
// by what is meaningful; all keep products of sizes far from int64 overflow.
//   iterations, --msl-anneal, --checkpoint-every, --log-every: <= 1e9, over
//     14,000 times the 70,000 iterations of the reference protocol and about
//     a day at the fastest rate of a small run; more is a typo, not a plan.
//   --inner-steps, eval --steps: <= 1e6, far past the 1 to 10 of the
//     literature, and within an int.
//   --hidden: up to 1000 layers of up to 1e6 units (one such layer is 4 TB).
//   --threads: <= metatape::max_num_threads(), 4 x the hardware threads;
//     more only contend.
#include <limits>
#include <thread>

#include "catalog.hpp"
#include "commands.hpp"

namespace metatape::tools {
namespace {

constexpr std::int64_t kMaxIterations = 1'000'000'000;
constexpr std::int64_t kMaxSteps = 1'000'000;
constexpr std::int64_t kMaxExamples = 1'000'000'000;
constexpr std::int64_t kMaxNtkPoints = 4096, kMaxNtkTasks = 64;

const Unsigned kSeeds{0, std::numeric_limits<std::uint64_t>::max()};
const Reals kNonNegative{0, false}, kPositive{0, true};
const Choices kDevices{{"cpu", "cuda"}};

// The names of an enumeration's values, from its list and name function.
template <class E, std::size_t N>
Choices names_of(const E (&values)[N], const char* (*name)(E)) {
  Choices c;
  for (E v : values) c.names.push_back(name(v));
  return c;
}

std::string algorithm_help() {
  std::string help;
  for (const AlgorithmEntry& a : algorithms()) help += (help.empty() ? "" : ", ") + a.name + " (" + a.summary + ")";
  return help;
}

// The rows that say which model on which tasks, shared by `train` and `ntk`
// (whose arguments have a RunConfig `config` too).
template <class Args>
std::vector<Option<Args>> model_rows() {
  using O = Options<Args>;
  return {
      O::stored("--task", &RunConfig::task, "Task distribution", Choices{names(tasks())}),
      O::only_with(O::added("--ways", &RunConfig::ways, "Classes per episode (N-way)", Integers{2, 1000}), "task",
                   {"fashion-mnist", "omniglot"}),
      O::only_with(O::added("--data", &RunConfig::data,
                            "Directory of the Fashion-MNIST IDX files (Debian's dataset-fashion-mnist installs them), "
                            "or of Omniglot's images_background and images_evaluation folders",
                            Text{}),
                   "task", {"fashion-mnist", "omniglot"}),
      O::stored("--model", &RunConfig::model, "Model", Choices{names(models())}),
      O::stored("--hidden", &RunConfig::hidden, "Hidden widths of the MLP, comma-separated",
                IntegerList{{1, 1'000'000}, 1000}),
      O::stored("--activation", &RunConfig::activation, "MLP activation", Choices{names(activations())}),
      O::only_with(O::added("--channels", &RunConfig::channels, "Channels of each Conv4 block", Integers{1, 100'000}),
                   "model", {"conv4"}),
      O::only_with(O::added("--strided", &RunConfig::strided,
                            "Conv4 with stride-2 convolutions and a spatial mean instead of 2x2 max-pooling", Flag{}),
                   "model", {"conv4"}),
      O::only_with(O::added("--no-batch-norm", &RunConfig::batch_norm,
                            "Conv4 without batch norm (conv + bias + ReLU per block)", Flag{false}, "batch_norm"),
                   "model", {"conv4"}),
  };
}

template <class Args>
std::vector<Option<Args>> seed_dtype_rows() {
  using O = Options<Args>;
  return {
      O::stored("--seed", &RunConfig::seed, "Seed of parameters and tasks", kSeeds),
      O::stored("--dtype", &RunConfig::dtype, "Floating-point type", Choices{names(dtypes())}),
  };
}

// `parts` one after another.
template <class Args>
std::vector<Option<Args>> rows(std::initializer_list<std::vector<Option<Args>>> parts) {
  std::vector<Option<Args>> out;
  for (const auto& part : parts) out.insert(out.end(), part.begin(), part.end());
  return out;
}

}  // namespace

Integers thread_counts() {
  const std::int64_t cores = std::max(1u, std::thread::hardware_concurrency());
  return {1, max_num_threads(), "at most 4 x the " + std::to_string(cores) + " hardware threads of this machine"};
}

const std::vector<Option<TrainArgs>>& train_options() {
  using O = Options<TrainArgs>;
  const std::string kernel = meta::algorithm_name(meta::Algorithm::kernel);
  static const std::vector<Option<TrainArgs>> table = rows<TrainArgs>(
      {model_rows<TrainArgs>(),
       {
           O::stored("--algorithm", &RunConfig::algorithm, algorithm_help(), Choices{names(algorithms())}),
           O::stored("--lslr", &RunConfig::lslr, "MAML++: learn the inner rate per layer and per step (maml, fomaml)",
                     Flag{}),
           O::stored("--multi-step-loss", &RunConfig::multi_step_loss,
                     "MAML++: outer loss over every inner step, annealed", Flag{}),
           O::stored("--msl-anneal", &RunConfig::msl_anneal,
                     "Iterations over which the multi-step weights move to the last step", Integers{0, kMaxIterations}),
           O::stored("--inner-steps", &RunConfig::inner_steps, "Inner SGD steps during training",
                     Integers{0, kMaxSteps}),
           O::stored("--inner-lr", &RunConfig::inner_lr, "Inner learning rate α (the initial value when learned)",
                     kNonNegative),
           O::stored(
               "--looped", &RunConfig::task_batched,
               "Loop over tasks instead of recording the meta-batch as one task-batched graph (same result, slower)",
               Flag{false}, "task_batched"),
           O::stored("--meta-batch", &RunConfig::meta_batch, "Tasks per meta-iteration", Integers{1, 1'000'000}),
           O::stored("--shots", &RunConfig::shots, "Support examples per task (K)", Integers{1, kMaxExamples}),
           O::stored("--queries", &RunConfig::queries, "Query examples per task", Integers{1, kMaxExamples}),
           O::stored("--iterations", &RunConfig::iterations,
                     "Meta-iterations to reach (counting those of a resumed run)", Integers{1, kMaxIterations}),
           O::stored("--optimizer", &RunConfig::optimizer, "Outer optimiser",
                     Choices{{std::begin(meta::kOptimizerNames), std::end(meta::kOptimizerNames)}}),
           O::stored("--outer-lr", &RunConfig::outer_lr, "Outer learning rate", kPositive),
           O::stored("--clip-grad-norm", &RunConfig::clip_grad_norm,
                     "Clip the meta-gradient's global norm to this (0: off)", kNonNegative),
       },
       seed_dtype_rows<TrainArgs>(),
       {
           O::only_with(
               O::added("--kernel-form", &RunConfig::kernel_form,
                        "Closed form of the inner loop: kernel ridge (--ridge), gradient flow for --kernel-time, "
                        "or --inner-steps SGD steps of --inner-lr",
                        names_of(meta::kKernelForms, meta::kernel_form_name)),
               "algorithm", {kernel}),
           O::only_with(
               O::added("--kernel-time", &RunConfig::kernel_time,
                        "Gradient-flow time t of the flow form (inf: the interpolating limit, needs --ridge > 0)",
                        Reals{.min = 0, .infinity = true}),
               "algorithm", {kernel}),
           O::only_with(O::added("--ridge", &RunConfig::ridge,
                                 "Ridge λ of the ridge form, and of the flow form at --kernel-time inf", kNonNegative),
                        "algorithm", {kernel}),
           O::only_with(
               O::added("--kernel-grad", &RunConfig::kernel_grad,
                        "Meta-gradient through the kernel (exact) or with it held fixed (first-order analogue)",
                        names_of(meta::kKernelGradients, meta::kernel_gradient_name)),
               "algorithm", {kernel}),
           O::only_with(O::added("--kernel-mode", &RunConfig::kernel_mode,
                                 "NTK over outputs: trace (shared by the outputs) or full (couples them)",
                                 Choices{{meta::kernel_mode_name(meta::KernelMode::trace),
                                          meta::kernel_mode_name(meta::KernelMode::full)}}),
                        "algorithm", {kernel}),
           O::only_with(
               O::added("--rkhs-alpha", &RunConfig::rkhs_alpha, "α of the Meta-RKHS-I loss L - α‖∇θ L‖²", kNonNegative),
               "algorithm", {meta::algorithm_name(meta::Algorithm::metarkhs1)}),
           O::added(
               "--task-weighting", &RunConfig::task_weighting,
               "Weights w_t of the outer loss Σ w_t L_t: uniform, softmax of the task losses, losses normalised to "
               "sum 1, or agreement of each task's meta-gradient with the mean",
               names_of(meta::kTaskWeightings, meta::task_weighting_name)),
           O::only_with(O::added("--weighting-temperature", &RunConfig::weighting_temperature,
                                 "Temperature of the softmax weights (small: the hardest tasks dominate)", kPositive),
                        "task_weighting", {meta::task_weighting_name(meta::TaskWeighting::softmax)}),
           O::only_with(
               O::added("--differentiate-weights", &RunConfig::differentiate_weights,
                        "Differentiate through the task weights (default: they are constants of the backward)", Flag{}),
               "task_weighting",
               {meta::task_weighting_name(meta::TaskWeighting::softmax),
                meta::task_weighting_name(meta::TaskWeighting::normalised),
                meta::task_weighting_name(meta::TaskWeighting::agreement)}),
           O::local("--threads", &TrainArgs::threads, kThreadsHelp, thread_counts()),
           O::local("--device", &TrainArgs::device, "Where to train", kDevices),
           O::local("--replay,--cuda-graph", &TrainArgs::replay,
                    "Capture the meta-gradient step on the first iteration and replay it after (a CUDA graph on "
                    "cuda, the recorded kernel calls on the CPU): the same results, less overhead per step",
                    Flag{}),
           O::local("--reduction", &TrainArgs::reduction,
                    "Under mpirun, how the processes add their tasks' meta-gradients: deterministic (every task's "
                    "gradient gathered and added in task order: the same bits as one process) or fast (each "
                    "process's sum added by MPI_Allreduce: less traffic, equal up to rounding)",
                    names_of(meta::kReductions, meta::reduction_name)),
           O::local("--out", &TrainArgs::out, "Run directory (default runs/<algorithm>)", Text{}),
           O::local("--checkpoint-every", &TrainArgs::checkpoint_every,
                    "Write a checkpoint every N iterations (0: only at the end)", Integers{0, kMaxIterations}),
           O::local(
               "--keep-checkpoints", &TrainArgs::keep_checkpoints,
               "Also keep every checkpoint, and a fresh run's initial parameters, as checkpoints/iteration-<N>.bin (a "
               "series for metatape analyze)",
               Flag{}),
           O::local("--log-every", &TrainArgs::log_every, "Write a metrics line every N iterations",
                    Integers{1, kMaxIterations}),
           O::local("--resume", &TrainArgs::resume, "Continue the run in --out from its checkpoint, bit for bit",
                    Flag{}),
           O::local("--quiet", &TrainArgs::quiet, "No progress line, even on a terminal", Flag{}),
       }});
  return table;
}

const std::vector<Option<EvalArgs>>& eval_options() {
  using O = Options<EvalArgs>;
  static const std::vector<Option<EvalArgs>> table = {
      O::local("--checkpoint", &EvalArgs::checkpoint, "Checkpoint to evaluate", Text{.required = true}),
      O::local("--baseline", &EvalArgs::baseline,
               "A second checkpoint to show beside it (e.g. the pretrained baseline)", Text{}),
      O::local("--baseline-inner-lr", &EvalArgs::baseline_inner_lr,
               "Fine-tuning step of the baseline (default: its run's --inner-lr; Finn et al. tuned theirs)", kPositive),
      O::local("--shots", &EvalArgs::shots, "Support sizes K to evaluate, comma-separated (default: the run's K)",
               IntegerList{{1, kMaxExamples}, 100}),
      O::local("--queries", &EvalArgs::queries,
               "Query points per task, per class for classification (0: as many as K for regression, the run's "
               "--queries for classification)",
               Integers{0, kMaxExamples}),
      O::local("--tasks", &EvalArgs::tasks, "Fresh tasks per K", Integers{1, kMaxExamples}),
      O::local("--steps", &EvalArgs::steps, "Inner steps to evaluate after (0..steps)", Integers{0, kMaxSteps}),
      O::local("--seed", &EvalArgs::seed, "Seed of the evaluation tasks", kSeeds),
      O::local("--out", &EvalArgs::out,
               "Where to write eval.json and mse_vs_steps.svg (default: the checkpoint's directory)", Text{}),
      O::local("--device", &EvalArgs::device, "Where to evaluate", kDevices),
      O::local("--threads", &EvalArgs::threads, kThreadsHelp, thread_counts()),
  };
  return table;
}

const std::vector<Option<NtkArgs>>& ntk_options() {
  using O = Options<NtkArgs>;
  static const std::vector<Option<NtkArgs>> table = rows<NtkArgs>(
      {model_rows<NtkArgs>(),
       seed_dtype_rows<NtkArgs>(),
       {
           O::local("--checkpoint", &NtkArgs::checkpoint,
                    "Take the model and θ from this checkpoint (default: a fresh model from the options above, "
                    "initialised with --seed)",
                    Text{}),
           O::local("--mode", &NtkArgs::mode, "Over the outputs: trace (averaged), full (every pair), diagonal (each)",
                    names_of(meta::kKernelModes, meta::kernel_mode_name)),
           O::local("--subset", &NtkArgs::subset,
                    "Parameters the kernel is taken over: all, head (the ANIL kernel), weights (no biases)",
                    names_of(meta::kParamSubsets, meta::param_subset_name)),
           O::local("--points", &NtkArgs::points, "Inputs per task (the support set of a fresh task)",
                    Integers{1, kMaxNtkPoints, "the kernel is written as JSON text"}),
           O::local("--tasks", &NtkArgs::tasks, "Tasks (one kernel each)",
                    Integers{1, kMaxNtkTasks, "the kernels are written as JSON text"}),
           O::local("--out", &NtkArgs::out,
                    "Where to write ntk.json, ntk_heatmap.svg and ntk_spectrum.svg (default: the checkpoint's "
                    "directory, or runs/ntk)",
                    Text{}),
           O::local("--threads", &NtkArgs::threads, kThreadsHelp, thread_counts()),
       }});
  return table;
}

}  // namespace metatape::tools
