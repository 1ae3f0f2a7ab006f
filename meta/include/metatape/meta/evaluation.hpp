// The evaluation protocol of docs/methods.md §1: fresh tasks, 0..steps inner
// steps, mean query loss (and, for classification, mean query accuracy) with
// a 95% confidence interval after each step.
#pragma once

#include <optional>
#include <vector>

#include "metatape/meta/communicator.hpp"
#include "metatape/meta/maml.hpp"

namespace metatape::meta {

struct MeanSd {
  double mean = 0;
  double sd = 0;  // the sample standard deviation (0 for one value)
};
// NaN mean for no values.
MeanSd mean_sd(const std::vector<double>& values);

struct MeanCI {
  double mean = 0;
  double ci95 = 0;  // 1.96 · sample standard deviation / √tasks (0 for one task)
};
MeanCI mean_ci95(const std::vector<double>& per_task);

struct StepSummary {
  int step = 0;
  double mean = 0;  // of the query loss
  double ci95 = 0;
  // Classification only: the mean over tasks of each task's query accuracy
  // (a fraction in [0, 1]) with its 95% half-width, the few-shot literature's
  // "accuracy ± CI over 600 episodes".
  std::optional<MeanCI> accuracy{};
};

// One summary per row of an adaptation curve ([steps + 1][tasks]).
std::vector<StepSummary> summarize(const std::vector<std::vector<double>>& curve);
// The same with each row's accuracy where the curve has one.
std::vector<StepSummary> summarize(const QueryCurve& curve);

struct EvaluationOptions {
  std::int64_t tasks = 600;
  std::int64_t shots = 10;
  std::int64_t queries = 10;
  int steps = 10;
  std::uint64_t seed = 1;    // evaluation tasks come from derive_seed(seed, 2)
  std::int64_t chunk = 200;  // tasks adapted together (one graph)
  // Spread each chunk's tasks over this group's ranks (task_range); every
  // rank draws all tasks, adapts its own and receives everyone's results,
  // so every rank returns the same summaries. Null: this process alone.
  Communicator* group = nullptr;
};

// Fresh tasks from `tasks`, adapted from `params` with the inner loop of
// `config` (learned rates included); one summary per row of
// adaptation_curve: steps + 1 rows, or 2 for the kernel algorithm (before
// and after its closed-form adaptation, no gradient steps).
std::vector<StepSummary> evaluate(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                                  const TaskSampler& tasks, const EvaluationOptions& options, DType dtype);

}  // namespace metatape::meta
