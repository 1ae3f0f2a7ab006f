// Per-task losses of task-batched predictions.
#pragma once

#include <string>

#include "metatape/engine.hpp"

namespace metatape::meta {

enum class Loss {
  mse,            // targets [T, n, out]: mean over points and outputs
  cross_entropy,  // targets i64 labels [T, n]: mean over points
};

// The loss of each task, [T], for predictions [T, n, out]; for one task
// without the task axis (predictions [n, out], targets [n, out] or labels
// [n]) its loss, rank 0. Errors name the shapes as passed.
Tensor per_task_loss(Loss loss, const Tensor& prediction, const Tensor& target);

}  // namespace metatape::meta
