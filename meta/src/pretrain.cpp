// The "pretrained" baseline of Finn et al. 2017: the same network trained by
// ordinary gradient descent on every point of every task in the batch, with
// no inner loop. At evaluation it is fine-tuned like the meta-learned model.
// Its loss is per task (each task's support and query points), so the task
// weighting of docs/methods.md §3 applies as to every outer loss:
// Σ_t w_t L_t, uniform being the plain mean. The agreement rule's per-task
// gradients come from one backward per task (task_gradients_by_loop): the
// parameters are shared, not copied per task.
#include "algorithms.hpp"

namespace metatape::meta::detail {

MetaStepTensors pretrain_gradient(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                                  const TaskBatch& batch) {
  TapeScope scope;
  const std::vector<Tensor> leaves = recorded_leaves(params.model);
  const Tensor x = concat({batch.support_x, batch.query_x}, 1), y = concat({batch.support_y, batch.query_y}, 1);
  const Tensor losses = per_task_loss(loss, model.forward(leaves, x), y);
  const WeightedLoss objective = weighted_outer_loss(
      config, losses, [&] { return task_gradients_by_loop(losses, leaves, config.weighting.differentiate); });
  return outer_step(losses, objective, leaves);
}

}  // namespace metatape::meta::detail
