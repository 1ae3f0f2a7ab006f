// Reptile (Nichol, Achiam, Schulman 2018): adapt each task with τ SGD steps
// on its support set, then move θ toward the adapted weights:
//   θ ← θ + ε · Σ_t w_t (θ_t^τ − θ),
// w_t = 1/T in the paper, or the task weights of config.weighting
// (docs/methods.md §3) from the query losses after adaptation. It is
// returned as the "gradient" Σ_t w_t (θ − θ_t^τ), so that an outer SGD step
// of rate ε is exactly Reptile's update (and Adam is the common variant).
// With weights that sum to 1 that is θ − Σ_t w_t θ_t^τ; the agreement rule
// (|w| sums to 1) compares the per-task directions θ − θ_t^τ, Reptile's g_t.
// There is no outer backward, so the weights are constants whatever
// `differentiate` says.
#include "algorithms.hpp"

namespace metatape::meta::detail {

std::vector<Tensor> reptile_directions(const MetaParams& params, const std::vector<Tensor>& fast) {
  NoGradScope no_grad;
  std::vector<Tensor> directions;
  for (std::size_t i = 0; i < fast.size(); ++i)
    directions.push_back(sub(expand(unsqueeze(params.model[i].detach(), 0), fast[i].shape()), fast[i]));
  return directions;
}

MetaStepTensors reptile_step(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                             const TaskBatch& batch) {
  // Reptile adapts every parameter, so each of `fast` is per task.
  const std::vector<Tensor> fast = inner_loop(model, loss, config, params, batch, config.inner_steps, false);
  NoGradScope no_grad;
  MetaStepTensors step;
  step.task_losses = per_task_loss(loss, model.forward(fast, batch.query_x), batch.query_y);
  if (config.weighting.rule == TaskWeighting::uniform) {  // the mean, as before weighting: the same bits
    step.meta_loss = mean(step.task_losses);
    step.task_weights = task_weights(config.weighting, step.task_losses);
    for (std::size_t i = 0; i < fast.size(); ++i)
      step.grads.push_back(sub(params.model[i].detach(), mean(fast[i], {0})));
    return step;
  }
  const std::vector<Tensor> directions = reptile_directions(params, fast);
  step.task_weights = task_weights(config.weighting, step.task_losses, [&] { return directions; });
  step.meta_loss = weighted_task_sum(config.weighting, step.task_weights, step.task_losses);
  for (const Tensor& d : directions) {
    Shape shape = d.shape();
    for (int a = 1; a < shape.rank(); ++a) shape[a] = 1;
    step.grads.push_back(sum(mul(reshape(step.task_weights, shape), d), {0}));
  }
  return step;
}

}  // namespace metatape::meta::detail
