#include "metatape/meta/evaluation.hpp"

#include <cmath>

#include "metatape/meta/trainer.hpp"

namespace metatape::meta {

std::vector<StepSummary> summarize(const std::vector<std::vector<double>>& curve) {
  std::vector<StepSummary> out;
  for (std::size_t k = 0; k < curve.size(); ++k) {
    const std::vector<double>& losses = curve[k];
    const double n = static_cast<double>(losses.size());
    double mean = 0;
    for (double l : losses) mean += l / n;
    double squares = 0;
    for (double l : losses) squares += (l - mean) * (l - mean);
    const double sd = losses.size() > 1 ? std::sqrt(squares / (n - 1)) : 0.0;
    out.push_back({static_cast<int>(k), mean, 1.96 * sd / std::sqrt(n)});
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
  // Rows as adaptation_curve returns them: steps + 1, or 2 for the kernel
  // algorithm (before and after its closed-form adaptation).
  std::vector<std::vector<double>> curve;
  for (std::int64_t done = 0; done < options.tasks; done += options.chunk) {
    const std::int64_t n = std::min(options.chunk, options.tasks - done);
    const Device device = params.model.front().device();
    const TaskBatch batch = tasks.sample(n, options.shots, options.queries, gen, dtype).to(device);
    const auto part = adaptation_curve(model, loss, config, params, batch, options.steps);
    curve.resize(part.size());
    for (std::size_t k = 0; k < part.size(); ++k) curve[k].insert(curve[k].end(), part[k].begin(), part[k].end());
  }
  return summarize(curve);
}

}  // namespace metatape::meta
