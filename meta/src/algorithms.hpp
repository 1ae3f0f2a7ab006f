// Internal: the inner loop shared by the MAML family, Reptile, adapt and
// evaluation, and the algorithms meta_gradient() dispatches to.
#pragma once

#include <functional>
#include <vector>

#include "metatape/meta/maml.hpp"

namespace metatape::meta::detail {

// Which parameters the inner loop adapts: all, or the head for ANIL.
std::vector<bool> adapting_mask(const Model& model, const MetaConfig& config);
// parameter − α ⊙ gradient for parameter i at inner step `step`: a fixed α,
// Meta-SGD's per-entry rates, or LSLR's rate for the parameter's layer and
// the step.
Tensor inner_update(const Model& model, const MetaConfig& config, const std::vector<Tensor>& rates, std::size_t i,
                    int step, const Tensor& parameter, const Tensor& gradient);

// Called with k and the parameters θ^k after each step k = 0, ..., steps.
using AfterStep = std::function<void(int step, const std::vector<Tensor>& fast)>;

// The inner loop: `steps` SGD steps of every task of `batch` on its support
// set from `params` (validated by the caller), returning θ^steps: the
// adapting parameters per task [T, ...], the others shared as given. With
// `record`, the loop stays on the tape from `params` (and the rates) to the
// result, the inner backward recorded unless the config is first-order;
// without it each step runs in a scope of its own and θ^k is detached.
// `copy_all` (with `record` only) copies every parameter per task at step 0,
// not just the adapting ones, so that a gradient with respect to the step-0
// copies (seen by after_step(0, ...)) is each task's own gradient over all
// parameters: the agreement weighting's g_t, in one backward.
std::vector<Tensor> inner_loop(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                               const TaskBatch& batch, int steps, bool record, const AfterStep& after_step = {},
                               bool copy_all = false);

// Reptile's per-task directions θ − θ_t^τ, each [T] + shape, from the
// adapted parameters `fast` (every one per task): its g_t.
std::vector<Tensor> reptile_directions(const MetaParams& params, const std::vector<Tensor>& fast);
MetaStepTensors reptile_step(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                             const TaskBatch& batch);
MetaStepTensors pretrain_gradient(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                                  const TaskBatch& batch);
// kernel_adaptation.cpp: the meta-gradient through the closed-form inner loop.
MetaStepTensors kernel_gradient(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                                const TaskBatch& batch);
// metarkhs.cpp: Meta-RKHS-I's one-loop objective and its gradient.
MetaStepTensors metarkhs1_gradient(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                                   const TaskBatch& batch);

// task_weighting.cpp: the outer loss Σ_t w_t L_t of recorded task losses
// [T] with the weights of config.weighting (task_weights()), for every outer
// loop (the MAML family, the kernel algorithm, Meta-RKHS-I, the pretrained
// baseline). Contract for a caller:
//   - task_losses is [T], recorded: the loss is differentiated through it.
//   - uniform returns mean(task_losses), bit for bit what an outer loop
//     computed before weighting existed; the other rules Σ_t w_t L_t.
//   - The weights are detached unless config.weighting.differentiate; then
//     `recorded` carries their own derivative into the loss.
//   - task_gradients is called only for the agreement rule (ValueError
//     without it): each task's gradient over the model parameters, one tensor
//     per parameter, each [T] + its shape, recorded (create_graph) when
//     differentiate is set. A caller without per-task copies of the
//     parameters passes [&] { return task_gradients_by_loop(losses, model_leaves,
//     config.weighting.differentiate); }.
//   - Throws as task_weights() does (non-finite losses on the CPU, ...).
struct WeightedLoss {
  Tensor loss;      // rank 0, recorded
  Tensor weights;   // [T], detached
  Tensor recorded;  // [T], the weights as used in `loss` (recorded with differentiate)
};
WeightedLoss weighted_outer_loss(const MetaConfig& config, const Tensor& task_losses,
                                 const std::function<std::vector<Tensor>()>& task_gradients = {});
// Σ_t w_t L_t for weights [T] of `config`'s rule and losses [T]; uniform is
// mean(task_losses) (the same bits as before weighting). For a loss with
// more terms under the same weights (MAML++'s multi-step loss).
Tensor weighted_task_sum(const TaskWeightingConfig& config, const Tensor& weights, const Tensor& task_losses);
// Each task's gradient of its loss (task_losses [T], recorded) with respect
// to `wrt` (shared tensors), one backward pass per task with the graph
// retained: the general way to get the agreement rule's per-task gradients
// when the parameters were not copied per task. Each result is [T] + shape
// (0 where a task does not use a tensor); recorded with create_graph.
// Fresh leaves of the tape for `params` (detached copies marked
// requires_grad): what a meta-gradient differentiates with respect to.
std::vector<Tensor> recorded_leaves(const std::vector<Tensor>& params);
// The result of an outer loss over `leaves`: the task losses [T] and the
// weights detached, the meta-loss, and its gradient with respect to the
// leaves, walking the tape once with its saved values freed as it goes
// (nothing walks it again).
MetaStepTensors outer_step(const Tensor& task_losses, const WeightedLoss& outer, const std::vector<Tensor>& leaves);
std::vector<Tensor> task_gradients_by_loop(const Tensor& task_losses, const std::vector<Tensor>& wrt,
                                           bool create_graph = false);

// Whether meta_gradient_tensors takes `batch` split by task
// (combine_task_terms of task_terms) rather than as one graph: on the CPU,
// for the algorithms task_terms batches (the MAML family, Reptile, the
// pretrained baseline) with a task-batched config that can be split
// (unsplittable_reason), when the batch's inputs are large enough to be cut
// into two chunks or more (distributed.cpp): memory then holds a chunk's
// activations, not the batch's, and the chunks spread over the threads.
bool meta_gradient_splits_by_task(const MetaConfig& config, const MetaParams& params, const TaskBatch& batch);

}  // namespace metatape::meta::detail
