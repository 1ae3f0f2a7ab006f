// Meta-RKHS-I (Zhou et al. 2021; docs/methods.md §2): one loop, no
// adaptation. Each task's term is L_t(θ) − α‖∇θ L_t(θ)‖², with L_t the loss
// on the task's support and query points together: the objective has no
// inner/outer split, so both sets are simply the task's data, in one forward
// pass. The penalty's own gradient needs ∇θ L_t recorded (create_graph) and
// a double backward. At meta-test the model is fine-tuned with ordinary SGD
// steps at inner_lr (as Zhou et al. do), which the inner loop of maml.cpp
// already does for every algorithm but ANIL.
#include "algorithms.hpp"

namespace metatape::meta::detail {

MetaStepTensors metarkhs1_gradient(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                                   const TaskBatch& batch) {
  TapeScope scope;
  const std::vector<Tensor> leaves = recorded_leaves(params.model);
  // Per-task copies [T, ...]: task t's loss depends only on copy t, so one
  // backward of Σ_t L_t gives every task's own gradient.
  const std::vector<Tensor> copies = per_task(leaves, batch.tasks());
  const Tensor x = concat({batch.support_x, batch.query_x}, 1), y = concat({batch.support_y, batch.query_y}, 1);
  const Tensor losses = per_task_loss(loss, model.forward(copies, x), y);  // [T]
  const std::vector<Tensor> g = grad(sum(losses), copies, {.create_graph = true});
  Tensor squared_norms;  // [T]: ‖∇θ L_t‖² over all parameters
  for (const Tensor& gi : g) {
    std::vector<int> axes;
    for (int a = 1; a < gi.rank(); ++a) axes.push_back(a);
    const Tensor term = axes.empty() ? square(gi) : sum(square(gi), axes);
    squared_norms = squared_norms.defined() ? add(squared_norms, term) : term;
  }
  const Tensor objectives = sub(losses, scale(squared_norms, config.rkhs_alpha));  // [T]
  // Task t's term depends only on copy t: one more backward pass of their sum
  // gives every task's gradient for the agreement rule.
  const WeightedLoss outer = weighted_outer_loss(config, objectives, [&] {
    return grad(sum(objectives), copies, {.create_graph = config.weighting.differentiate});
  });
  // The task losses reported are the outer loss's per-task terms (what the
  // weights weigh), so that meta_loss is their weighted sum as for every
  // other algorithm.
  return outer_step(objectives, outer, leaves);
}

}  // namespace metatape::meta::detail
