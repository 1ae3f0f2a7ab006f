// Per-task losses of task-batched predictions.
#pragma once

#include <string>

#include "metatape/engine.hpp"

namespace metatape::meta {

enum class Loss {
  mse,            // targets [T, n, out]: mean over points and outputs
  cross_entropy,  // targets i64 labels [T, n]: mean over points
};

// The loss of each task, [T], for predictions [T, n, out].
Tensor per_task_loss(Loss loss, const Tensor& prediction, const Tensor& target);

}  // namespace metatape::meta
