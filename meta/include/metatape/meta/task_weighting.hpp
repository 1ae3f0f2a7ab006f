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

// The weights [T] for the tasks' losses [T] (recorded or not). `task_gradients`
// is called only by the agreement rule: each task's meta-gradient over the
// model's parameters, one tensor per parameter, each [T] + its base shape.
// Weights are detached unless config.differentiate. Throws ValueError for
// non-finite losses (naming the task) and for normalised weights of losses
// that do not sum to a positive number.
Tensor task_weights(const TaskWeightingConfig& config, const Tensor& task_losses,
                    const std::function<std::vector<Tensor>()>& task_gradients = {});

}  // namespace metatape::meta
