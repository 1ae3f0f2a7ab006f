// Reptile (Nichol, Achiam, Schulman 2018): adapt each task with τ SGD steps
// on its support set, then move θ toward the adapted weights:
//   θ ← θ + ε · mean_t (θ_t^τ − θ).
// It is returned as the "gradient" θ − mean_t θ_t^τ, so that an outer SGD
// step of rate ε is exactly Reptile's update (and Adam is the common variant).
#include "algorithms.hpp"

namespace metatape::meta::detail {

MetaStepTensors reptile_step(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                             const TaskBatch& batch) {
  // Reptile adapts every parameter, so each of `fast` is per task.
  const std::vector<Tensor> fast = inner_loop(model, loss, config, params, batch, config.inner_steps, false);
  NoGradScope no_grad;
  MetaStepTensors step;
  step.task_losses = per_task_loss(loss, model.forward(fast, batch.query_x), batch.query_y);
  step.meta_loss = mean(step.task_losses);
  for (std::size_t i = 0; i < fast.size(); ++i) step.grads.push_back(sub(params.model[i].detach(), mean(fast[i], {0})));
  return step;
}

}  // namespace metatape::meta::detail
