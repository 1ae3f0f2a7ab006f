// The task-weighting rules of docs/methods.md §3 and the weighted outer loss
// Σ_t w_t L_t every outer loop builds from them.
#include "metatape/meta/task_weighting.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "algorithms.hpp"
#include "choices.hpp"

namespace metatape::meta {

const char* task_weighting_name(TaskWeighting rule) {
  switch (rule) {
    case TaskWeighting::uniform:
      return "uniform";
    case TaskWeighting::softmax:
      return "softmax";
    case TaskWeighting::normalised:
      return "normalised";
    case TaskWeighting::agreement:
      return "agreement";
  }
  return "?";
}

TaskWeighting parse_task_weighting(const std::string& name) {
  return detail::parse_choice(name, kTaskWeightings, task_weighting_name, "task weighting");
}

void TaskWeightingConfig::validate() const {
  // Checked whatever the rule, so that a configuration never carries a value
  // that would become invalid by switching the rule alone.
  if (!(temperature > 0) || !std::isfinite(temperature))
    throw ValueError("task weighting: the temperature must be a finite number > 0, got " + std::to_string(temperature));
}

namespace {

std::string where(TaskWeighting rule) { return std::string("task weighting '") + task_weighting_name(rule) + "'"; }

// Values are read on the host only where that is free of consequences: on
// the CPU. On a GPU the step must stay capturable (CapturedStep reads
// nothing back), so a non-finite loss there propagates into the weights and
// the meta-loss, where the trainer's non-finite check stops it.
bool host_readable(const Tensor& t) { return t.device() == Device::cpu; }

void check_finite_losses(TaskWeighting rule, const Tensor& task_losses, bool nonnegative) {
  if (!host_readable(task_losses)) return;
  const std::vector<double> losses = task_losses.to_vector();
  for (std::size_t t = 0; t < losses.size(); ++t) {
    if (!std::isfinite(losses[t]))
      throw ValueError(where(rule) + ": the loss of task " + std::to_string(t) + " is " + std::to_string(losses[t]) +
                       "; weights cannot be computed from it");
    if (nonnegative && losses[t] < 0)
      throw ValueError(where(rule) + ": the loss of task " + std::to_string(t) + " is negative (" +
                       std::to_string(losses[t]) + "); normalised weights need losses >= 0");
  }
}

// softmax(L/T°) for losses [T]. The losses are shifted by their maximum
// before the scaling (softmax is invariant to the shift), and 1/T° is capped
// at the dtype's largest finite value: a tiny temperature then gives the
// one-hot limit instead of inf − inf = NaN (1/T° overflows float32 below
// T° ≈ 3e-39).
Tensor softmax_weights(const Tensor& losses, double temperature) {
  const double largest = losses.dtype() == DType::f32 ? static_cast<double>(std::numeric_limits<float>::max())
                                                      : std::numeric_limits<double>::max();
  const Tensor shifted = sub(losses, max(losses, 0, true));  // <= 0, exactly 0 at the maximum
  return softmax(scale(shifted, std::min(1.0 / temperature, largest)), 0);
}

// w_t = L_t / Σ_j L_j, L [T].
Tensor normalised_weights(const Tensor& losses) {
  const Tensor total = sum(losses);
  if (host_readable(total) && !(total.item() > 0))
    throw ValueError(where(TaskWeighting::normalised) +
                     ": the task losses sum to 0, so L_t / Σ_j L_j is undefined (every task is solved exactly)");
  return div(losses, total);
}

// w_t = g_t·ḡ / Σ_j |g_j·ḡ| from the per-task gradients, each [T] + shape.
Tensor agreement_weights(const std::vector<Tensor>& task_gradients, std::int64_t tasks) {
  if (task_gradients.empty()) throw ValueError(where(TaskWeighting::agreement) + ": no per-task gradients were given");
  std::vector<Tensor> rows;
  for (std::size_t i = 0; i < task_gradients.size(); ++i) {
    const Tensor& g = task_gradients[i];
    if (g.rank() < 1 || g.dim(0) != tasks)
      throw ShapeError(where(TaskWeighting::agreement) + ": task gradient " + std::to_string(i) + " is " +
                       g.shape().str() + ", expected a leading task axis of " + std::to_string(tasks));
    rows.push_back(reshape(g, {tasks, g.numel() / tasks}));
  }
  const Tensor g = concat(rows, 1);                          // [T, N]
  const Tensor dots = sum(mul(g, mean(g, {0}, true)), {1});  // g_t·ḡ, [T]
  const Tensor total = sum(abs(dots));
  if (host_readable(total)) {
    const double value = total.item();
    if (!std::isfinite(value))
      throw ValueError(where(TaskWeighting::agreement) + ": a task's meta-gradient is not finite");
    if (!(value > 0))
      throw ValueError(where(TaskWeighting::agreement) +
                       ": every task's meta-gradient is orthogonal to the mean one (Σ_t |g_t·ḡ| = 0), so no task "
                       "can be weighted against the others");
  }
  return div(dots, total);
}

}  // namespace

Tensor task_weights(const TaskWeightingConfig& config, const Tensor& task_losses,
                    const std::function<std::vector<Tensor>()>& task_gradients) {
  config.validate();
  if (!task_losses.defined() || task_losses.rank() != 1 || task_losses.dim(0) < 1)
    throw ShapeError("task_weights: the task losses must be [T] with T >= 1, got " +
                     (task_losses.defined() ? task_losses.shape().str() : std::string("an undefined tensor")));
  const std::int64_t tasks = task_losses.dim(0);
  if (config.rule == TaskWeighting::uniform)
    return full({tasks}, 1.0 / static_cast<double>(tasks), task_losses.dtype(), task_losses.device());
  if (config.rule == TaskWeighting::agreement) {
    if (!task_gradients) throw ValueError(where(config.rule) + ": needs each task's meta-gradient; none was given");
    const std::vector<Tensor> gradients = task_gradients();
    if (config.differentiate) return agreement_weights(gradients, tasks);
    NoGradScope no_grad;
    std::vector<Tensor> detached;
    for (const Tensor& g : gradients) detached.push_back(g.detach());
    return agreement_weights(detached, tasks);
  }
  check_finite_losses(config.rule, task_losses, config.rule == TaskWeighting::normalised);
  // Detached: computed from the values alone, recording nothing.
  const auto from_losses = [&](const Tensor& losses) {
    return config.rule == TaskWeighting::softmax ? softmax_weights(losses, config.temperature)
                                                 : normalised_weights(losses);
  };
  if (config.differentiate) return from_losses(task_losses);
  NoGradScope no_grad;
  return from_losses(task_losses.detach());
}

namespace detail {

Tensor weighted_task_sum(const TaskWeightingConfig& config, const Tensor& weights, const Tensor& task_losses) {
  // Uniform is the plain mean, so that plain MAML keeps its bits.
  return config.rule == TaskWeighting::uniform ? mean(task_losses) : sum(mul(weights, task_losses));
}

WeightedLoss weighted_outer_loss(const MetaConfig& config, const Tensor& task_losses,
                                 const std::function<std::vector<Tensor>()>& task_gradients) {
  const Tensor weights = task_weights(config.weighting, task_losses, task_gradients);
  return {weighted_task_sum(config.weighting, weights, task_losses), weights.detach(), weights};
}

std::vector<Tensor> task_gradients_by_loop(const Tensor& task_losses, const std::vector<Tensor>& wrt,
                                           bool create_graph) {
  if (!task_losses.defined() || task_losses.rank() != 1 || task_losses.dim(0) < 1)
    throw ShapeError("task_gradients_by_loop: the task losses must be [T] with T >= 1, got " +
                     (task_losses.defined() ? task_losses.shape().str() : std::string("an undefined tensor")));
  const std::int64_t tasks = task_losses.dim(0);
  std::vector<std::vector<Tensor>> per_param(wrt.size());
  for (std::int64_t t = 0; t < tasks; ++t) {
    const Tensor loss_t = reshape(slice(task_losses, 0, t, t + 1), Shape{});
    // A parameter no task uses (a shared one outside this loss) gets 0.
    const std::vector<Tensor> g =
        grad(loss_t, wrt, {.create_graph = create_graph, .allow_unused = true, .retain_graph = true});
    for (std::size_t i = 0; i < wrt.size(); ++i) per_param[i].push_back(g[i]);
  }
  std::vector<Tensor> out;
  for (const std::vector<Tensor>& gs : per_param) out.push_back(stack(gs, 0));
  return out;
}

std::vector<Tensor> recorded_leaves(const std::vector<Tensor>& params) {
  std::vector<Tensor> leaves;
  leaves.reserve(params.size());
  for (const Tensor& p : params) leaves.push_back(p.detach().requires_grad_());
  return leaves;
}

MetaStepTensors outer_step(const Tensor& task_losses, const WeightedLoss& outer, const std::vector<Tensor>& leaves) {
  MetaStepTensors step;
  step.task_losses = task_losses.detach();
  step.task_weights = outer.weights;
  step.meta_loss = outer.loss.detach();
  step.grads = grad(outer.loss, leaves, {.retain_graph = false});
  return step;
}

}  // namespace detail

}  // namespace metatape::meta
