// Per-task losses of task-batched predictions.
#pragma once

#include <string>
#include <vector>

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

// The accuracy of each task: the fraction of its points whose largest output
// is the label (the first of equal largest outputs, as argmax picks it), for
// logits [T, n, C] and i64 labels [T, n]; computed on the host, not recorded
// (it has no gradient). A task with a NaN or infinite output has accuracy
// NaN. ShapeError or DTypeError naming the shapes as passed.
std::vector<double> per_task_accuracy(const Tensor& logits, const Tensor& labels);

}  // namespace metatape::meta
