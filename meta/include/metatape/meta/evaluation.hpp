// The evaluation protocol of docs/methods.md §1: fresh tasks, 0..steps inner
// steps, mean query loss with a 95% confidence interval after each step.
#pragma once

#include <vector>

#include "metatape/meta/maml.hpp"

namespace metatape::meta {

struct StepSummary {
  int step = 0;
  double mean = 0;
  double ci95 = 0;  // 1.96 · sample standard deviation / √tasks
};

// One summary per row of an adaptation curve ([steps + 1][tasks]).
std::vector<StepSummary> summarize(const std::vector<std::vector<double>>& curve);

struct EvaluationOptions {
  std::int64_t tasks = 600;
  std::int64_t shots = 10;
  std::int64_t queries = 10;
  int steps = 10;
  std::uint64_t seed = 1;    // evaluation tasks come from derive_seed(seed, 2)
  std::int64_t chunk = 200;  // tasks adapted together (one graph)
};

// Fresh tasks from `tasks`, adapted from `params` with the inner loop of
// `config` (learned rates included); one summary per row of
// adaptation_curve: steps + 1 rows, or 2 for the kernel algorithm (before
// and after its closed-form adaptation, no gradient steps).
std::vector<StepSummary> evaluate(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                                  const TaskSampler& tasks, const EvaluationOptions& options, DType dtype);

}  // namespace metatape::meta
