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

namespace {

// Rows [rows][T_r] of every rank, joined in rank order into [rows][T]
// (all-gathered as [T_r, rows] float64 tensors; exact for doubles).
std::vector<std::vector<double>> gather_rows(Communicator& group, const std::vector<std::vector<double>>& local,
                                             std::size_t rows, std::int64_t local_tasks) {
  std::vector<double> flat(static_cast<std::size_t>(local_tasks) * rows);
  for (std::size_t k = 0; k < rows; ++k)
    for (std::int64_t t = 0; t < local_tasks; ++t)
      flat[static_cast<std::size_t>(t) * rows + k] = local[k][static_cast<std::size_t>(t)];
  const Tensor all =
      group.all_gather(from_vector(flat, Shape{local_tasks, static_cast<std::int64_t>(rows)}, DType::f64));
  const std::vector<double> values = all.to_vector();
  const std::size_t tasks = values.size() / std::max<std::size_t>(rows, 1);
  std::vector<std::vector<double>> out(rows, std::vector<double>(tasks));
  for (std::size_t t = 0; t < tasks; ++t)
    for (std::size_t k = 0; k < rows; ++k) out[k][t] = values[t * rows + k];
  return out;
}

// The query curve of `batch`, each rank adapting its task_range of it.
QueryCurve spread_query_curve(Communicator& group, const Model& model, Loss loss, const MetaConfig& config,
                              const MetaParams& params, const TaskBatch& batch, int steps, std::int64_t first_task) {
  const TaskRange mine = task_range(batch.tasks(), group.rank(), group.size());
  QueryCurve local;
  // The same label on every rank: the chunk, not this rank's share of it.
  const std::string chunk =
      "evaluation tasks " + std::to_string(first_task) + ".." + std::to_string(first_task + batch.tasks() - 1);
  on_every_rank(group, chunk, [&] {
    if (mine.count() > 0) local = query_curve(model, loss, config, params, batch.slice(mine.begin, mine.end), steps);
  });
  // Every rank knows the row count and whether there are accuracies, even
  // one without tasks: both follow from the configuration.
  const std::size_t rows = config.algorithm == Algorithm::kernel ? 2 : static_cast<std::size_t>(steps) + 1;
  QueryCurve out;
  out.loss = gather_rows(group, local.loss, rows, mine.count());
  if (loss == Loss::cross_entropy) out.accuracy = gather_rows(group, local.accuracy, rows, mine.count());
  return out;
}

}  // namespace

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
    curve.append(options.group && options.group->size() > 1
                     ? spread_query_curve(*options.group, model, loss, config, params, batch, options.steps, done)
                     : query_curve(model, loss, config, params, batch, options.steps));
  }
  return summarize(curve);
}

}  // namespace metatape::meta
