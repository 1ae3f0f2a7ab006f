// The metatape command's subcommands, as functions of parsed arguments, and
// the tables of their options.
#pragma once

#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "options.hpp"
#include "run_config.hpp"

namespace metatape::tools {

struct TrainArgs {
  RunConfig config;
  std::string out;  // run directory; "" means runs/<algorithm>
  std::int64_t checkpoint_every = 1000;
  std::int64_t log_every = 10;
  bool resume = false;
  std::int64_t threads = 1;
  std::string device = "cpu";  // "cpu" or "cuda"
  bool replay = false;         // capture the meta-gradient step once, then replay it
  // How the processes of `mpirun -np N metatape train` add their tasks'
  // meta-gradients (meta::Reduction's names).
  std::string reduction = meta::reduction_name(meta::Reduction::deterministic);
  bool quiet = false;  // no progress line even on a terminal
  // Also keep every checkpoint as checkpoints/iteration-<N>.bin
  // (kept_checkpoint_name), and a fresh run's initial parameters as
  // iteration 0: a series over training for `metatape analyze`.
  bool keep_checkpoints = false;
};

struct EvalArgs {
  std::string checkpoint;
  std::string baseline;             // optional second checkpoint
  double baseline_inner_lr = 0;     // 0: the baseline run's own inner lr
  std::vector<std::int64_t> shots;  // empty: the run's own K
  std::int64_t queries = 0;         // 0: as many as shots
  std::int64_t tasks = 600;
  std::int64_t steps = 10;
  std::uint64_t seed = 1;
  std::string out;  // "": the checkpoint's directory
  std::int64_t threads = 1;
  std::string device = "cpu";
};

struct NtkArgs {
  RunConfig config;        // the model, task distribution, seed and dtype (unless --checkpoint)
  std::string checkpoint;  // "": a fresh model
  std::string mode = meta::kernel_mode_name(meta::NtkOptions{}.mode);
  std::string subset = meta::param_subset_name(meta::NtkOptions{}.subset);
  std::int64_t points = 10;
  std::int64_t tasks = 1;
  std::string out;  // "": the checkpoint's directory, or runs/ntk
  std::int64_t threads = 1;
};

// metatape meta-ntk (meta_ntk_command.cpp): the model as `train` picks it
// (the rows of the train table) or from --checkpoint.
struct MetaNtkArgs {
  TrainArgs train;                 // the train options it shares (model, task, shots, inner loop, seed)
  std::vector<std::string> given;  // which of them were given
  std::string checkpoint;
  std::int64_t tasks = 3;
  double time = std::numeric_limits<double>::quiet_NaN();  // NaN: the steps form (--inner-steps)
  bool anil = false;
  double ridge = 0;
  double inverse_ridge = 1e-3;
  std::string kernel_mode = "trace";
  std::string out = "meta-ntk";
};

// metatape rank-archs (rank_archs.cpp).
struct RankArchsArgs {
  std::string candidates;  // the JSON file
  std::string out;         // "": the candidates file's directory
};

// metatape analyze (analyze.cpp): the study of exact against first-order
// meta-gradients and of the Hessians' spectra (docs/methods.md §7) over a
// series of checkpoints of one run, on one seeded task batch.
struct AnalyzeArgs {
  std::vector<std::string> checkpoints;  // --checkpoint, as given
  std::string run;                       // --run: its kept checkpoints (or checkpoint.bin)
  std::string split = "train";           // the meta-training or the meta-test distribution
  std::int64_t tasks = 8;
  std::uint64_t seed = 1;
  std::int64_t eigenvalues = 5;
  std::int64_t lanczos_iterations = 20;
  bool hessians = true;
  bool meta_ntk = true;
  double meta_ntk_ridge = 1e-3;
  std::int64_t inner_steps = -1;                               // < 0: the run's
  double inner_lr = std::numeric_limits<double>::quiet_NaN();  // NaN: the run's
  std::string out;                                             // "": <run directory>/analysis
  bool quiet = false;
  std::int64_t threads = 1;
};

// train --keep-checkpoints keeps each checkpoint as
// <run>/checkpoints/iteration-<N>.bin, N zero-padded to 10 digits (the
// width of the largest --iterations) so that the names sort by iteration.
inline constexpr const char* kKeptCheckpointDirectory = "checkpoints";
std::string kept_checkpoint_name(std::int64_t iteration);  // "iteration-0000000100.bin"
// Whether `name` (a file name, no directory) is one kept_checkpoint_name makes.
bool is_kept_checkpoint_name(const std::string& name);
// The kept checkpoints of the run in `run_directory`, in name (so iteration)
// order; none when it has no checkpoints/ directory.
std::vector<std::filesystem::path> kept_checkpoints(const std::filesystem::path& run_directory);

// Every option of `train`, `eval` and `ntk`: option_tables.cpp. The stored
// rows of the train table are the fields of config.json.
const std::vector<Option<TrainArgs>>& train_options();
const std::vector<Option<EvalArgs>>& eval_options();
const std::vector<Option<NtkArgs>>& ntk_options();
const std::vector<Option<MetaNtkArgs>>& meta_ntk_options();      // meta_ntk_command.cpp
const std::vector<Option<RankArchsArgs>>& rank_archs_options();  // rank_archs.cpp
const std::vector<Option<AnalyzeArgs>>& analyze_options();       // analyze.cpp

// What --threads accepts: 1 to metatape::max_num_threads() (option_tables.cpp).
Integers thread_counts();
inline constexpr const char* kThreadsHelp =
    "CPU threads, over the meta-batch's tasks and inside the kernels and matrix products";

// Each returns the process exit status; errors are thrown as metatape::Error.
int run_train(const TrainArgs& args);
int run_eval(const EvalArgs& args);
// Writes the empirical NTK of a model on a task batch (ntk.json and SVGs).
int run_ntk(const NtkArgs& args, bool model_options_given);
int run_meta_ntk(const MetaNtkArgs& args);
int run_rank_archs(const RankArchsArgs& args);
// Writes analysis.json and the SVG plots; prints a table per checkpoint.
int run_analyze(const AnalyzeArgs& args);
// Prints the build's backends and the devices this machine offers.
int run_info();

}  // namespace metatape::tools
