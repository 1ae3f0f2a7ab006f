// Internal: the pieces of the inner loop shared by the MAML family, Reptile
// and evaluation, and the algorithms meta_gradient() dispatches to.
#pragma once

#include <vector>

#include "metatape/meta/maml.hpp"

namespace metatape::meta::detail {

// Which parameters the inner loop adapts: all, or the head for ANIL.
std::vector<bool> adapting_mask(const Model& model, const MetaConfig& config);
// Per-task copies [T, ...] of the adapting parameters; the others stay shared.
std::vector<Tensor> task_copies(const std::vector<Tensor>& params, const std::vector<bool>& adapting,
                                std::int64_t tasks);
// α ⊙ gradient for parameter i at inner step `step`: a fixed α, Meta-SGD's
// per-entry rates, or LSLR's rate for the parameter's layer and the step.
Tensor inner_update(const Model& model, const MetaConfig& config, const std::vector<Tensor>& rates, std::size_t i,
                    int step, const Tensor& gradient);
// One SGD step of every task on its support set, in place on `fast`; with
// create_graph the inner backward is recorded (exact meta-gradients).
void inner_step(const Model& model, Loss loss, const MetaConfig& config, const std::vector<Tensor>& rates,
                const std::vector<bool>& adapting, const TaskBatch& batch, int step, bool create_graph,
                std::vector<Tensor>& fast);

MetaStepTensors reptile_step(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                             const TaskBatch& batch);
MetaStepTensors pretrain_gradient(const Model& model, Loss loss, const MetaParams& params, const TaskBatch& batch);

}  // namespace metatape::meta::detail
