#include "metatape/meta/evaluation.hpp"

#include <cmath>

#include "metatape/meta/trainer.hpp"

namespace metatape::meta {

MeanSd mean_sd(const std::vector<double>& values) {
  const double n = static_cast<double>(values.size());
  double mean = 0;
  for (double v : values) mean += v / n;
  double squares = 0;
  for (double v : values) squares += (v - mean) * (v - mean);
  return {values.empty() ? std::nan("") : mean, values.size() > 1 ? std::sqrt(squares / (n - 1)) : 0.0};
}

MeanCI mean_ci95(const std::vector<double>& per_task) {
  const MeanSd s = mean_sd(per_task);
  return {s.mean, 1.96 * s.sd / std::sqrt(static_cast<double>(per_task.size()))};
}

std::vector<StepSummary> summarize(const std::vector<std::vector<double>>& curve) {
  return summarize(QueryCurve{curve, {}});
}

std::vector<StepSummary> summarize(const QueryCurve& curve) {
  std::vector<StepSummary> out;
  for (std::size_t k = 0; k < curve.loss.size(); ++k) {
    const MeanCI loss = mean_ci95(curve.loss[k]);
    out.push_back({static_cast<int>(k), loss.mean, loss.ci95});
    if (k < curve.accuracy.size()) out.back().accuracy = mean_ci95(curve.accuracy[k]);
  }
  return out;
}

std::vector<StepSummary> evaluate(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                                  const TaskSampler& tasks, const EvaluationOptions& options, DType dtype) {
  validate_inputs("evaluate", model, loss, config, params);
  if (options.tasks < 1 || options.steps < 0 || options.chunk < 1 || options.shots < 1 || options.queries < 1)
    throw ValueError("evaluate: needs tasks, shots, queries and chunk >= 1 and steps >= 0, got tasks " +
                     std::to_string(options.tasks) + ", shots " + std::to_string(options.shots) + ", queries " +
                     std::to_string(options.queries) + ", chunk " + std::to_string(options.chunk) + ", steps " +
                     std::to_string(options.steps));
  if (params.model.front().dtype() != dtype)
    throw DTypeError(std::string("evaluate: tasks of dtype ") + dtype_name(dtype) + " for parameters of dtype " +
                     dtype_name(params.model.front().dtype()));
  Generator gen(derive_seed(options.seed, 2));
  // Rows as query_curve returns them: steps + 1, or 2 for the kernel
  // algorithm (before and after its closed-form adaptation).
  QueryCurve curve;
  for (std::int64_t done = 0; done < options.tasks; done += options.chunk) {
    const std::int64_t n = std::min(options.chunk, options.tasks - done);
    const Device device = params.model.front().device();
    const TaskBatch batch = tasks.sample(n, options.shots, options.queries, gen, dtype).to(device);
    curve.append(query_curve(model, loss, config, params, batch, options.steps));
  }
  return summarize(curve);
}

}  // namespace metatape::meta
