// The "pretrained" baseline of Finn et al. 2017: the same network trained by
// ordinary gradient descent on every point of every task in the batch, with
// no inner loop. At evaluation it is fine-tuned like the meta-learned model.
#include "algorithms.hpp"

namespace metatape::meta::detail {

MetaStepTensors pretrain_gradient(const Model& model, Loss loss, const MetaParams& params, const TaskBatch& batch) {
  TapeScope scope;
  std::vector<Tensor> leaves;
  for (const Tensor& p : params.model) leaves.push_back(p.detach().requires_grad_());
  const Tensor x = concat({batch.support_x, batch.query_x}, 1), y = concat({batch.support_y, batch.query_y}, 1);
  const Tensor losses = per_task_loss(loss, model.forward(leaves, x), y);
  const Tensor objective = mean(losses);
  MetaStepTensors step;
  step.task_losses = losses.detach();
  step.meta_loss = objective.detach();
  step.grads = grad(objective, leaves, {.retain_graph = false});
  return step;
}

}  // namespace metatape::meta::detail
