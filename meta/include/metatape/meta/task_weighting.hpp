// Task-weighted outer losses (docs/methods.md §3): L_meta = Σ_t w_t L_t, the
// weights computed from the tasks' losses or meta-gradients of the current
// iteration:
//   uniform     w_t = 1/T (plain MAML);
//   softmax     w_t = exp(L_t/T°) / Σ_j exp(L_j/T°), temperature T° > 0:
//               small T° emphasises the hard tasks, T° → ∞ is uniform;
//   normalised  w_t = L_t / Σ_j L_j (invariant to rescaling every loss);
//   agreement   w_t = g_t·ḡ / Σ_j |g_j·ḡ|, g_t task t's meta-gradient over the
//               model's parameters, ḡ their mean (a task that disagrees with
//               the mean gets a negative weight; |w| sums to 1).
// The weights are constants of the outer backward by default, so the
// meta-gradient is exactly Σ_t w_t ∇L_t; with `differentiate` they are
// recorded and the meta-gradient includes their own derivative.
// In the outer loops (MetaConfig::weighting): L_t is task t's query loss
// after adaptation; MAML++'s multi-step loss weights every step's losses by
// the weights of the final ones; the agreement rule's g_t is ∇θ L_t over the
// model's parameters (not learned inner rates); Reptile, which has no outer
// backward, steps along Σ_t w_t (θ − θ_t^τ) with g_t = θ − θ_t^τ and ignores
// `differentiate`; the pretrained baseline weights its per-task losses.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "metatape/engine.hpp"

namespace metatape::meta {

enum class TaskWeighting { uniform, softmax, normalised, agreement };
inline constexpr TaskWeighting kTaskWeightings[] = {TaskWeighting::uniform, TaskWeighting::softmax,
                                                    TaskWeighting::normalised, TaskWeighting::agreement};
const char* task_weighting_name(TaskWeighting rule);
// Throws ValueError listing the choices.
TaskWeighting parse_task_weighting(const std::string& name);

struct TaskWeightingConfig {
  TaskWeighting rule = TaskWeighting::uniform;
  double temperature = 1.0;    // softmax only; > 0
  bool differentiate = false;  // record the weights instead of detaching them
  // Throws ValueError naming the bad field.
  void validate() const;
};

// The weights [T] for the tasks' losses [T] (recorded or not), in their
// dtype and on their device. `task_gradients` is called only by the
// agreement rule: each task's meta-gradient over the model's parameters, one
// tensor per parameter, each [T] + its base shape (recorded when
// differentiating). Weights are detached unless config.differentiate; then
// their derivative is the rule's (softmax's, L_t / Σ L_j's, or through the
// per-task gradients). Uniform is 1/T whatever the losses.
// Errors: ShapeError unless the losses are [T] with T >= 1; ValueError for
// an invalid config, for agreement without `task_gradients` (or gradients
// without the task axis: ShapeError), and, where the values can be read
// without a device round trip (CPU tensors), for a non-finite loss (naming
// the task) under softmax or normalised, a negative loss or losses summing
// to 0 under normalised, and non-finite or all-orthogonal (Σ|g_t·ḡ| = 0)
// gradients under agreement. On a GPU nothing is read back, so that a step
// stays capturable as a CUDA graph: a non-finite loss there makes the
// weights and the meta-loss NaN, which the trainer refuses.
Tensor task_weights(const TaskWeightingConfig& config, const Tensor& task_losses,
                    const std::function<std::vector<Tensor>()>& task_gradients = {});

}  // namespace metatape::meta
