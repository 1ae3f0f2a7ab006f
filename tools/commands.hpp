// The metatape command's subcommands, as functions of parsed arguments, and
// the tables of their options.
#pragma once

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
  bool cuda_graph = false;     // replay the meta-gradient step as a CUDA graph
  bool quiet = false;          // no progress line even on a terminal
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

// Every option of `train`, `eval` and `ntk`: option_tables.cpp. The stored
// rows of the train table are the fields of config.json.
const std::vector<Option<TrainArgs>>& train_options();
const std::vector<Option<EvalArgs>>& eval_options();
const std::vector<Option<NtkArgs>>& ntk_options();

// Each returns the process exit status; errors are thrown as metatape::Error.
int run_train(const TrainArgs& args);
int run_eval(const EvalArgs& args);
// Writes the empirical NTK of a model on a task batch (ntk.json and SVGs).
int run_ntk(const NtkArgs& args, bool model_options_given);
// Prints the build's backends and the devices this machine offers.
int run_info();

}  // namespace metatape::tools
