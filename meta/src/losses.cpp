#include "metatape/meta/losses.hpp"

#include <vector>

namespace metatape::meta {

Tensor per_task_loss(Loss loss, const Tensor& prediction, const Tensor& target) {
  if (!prediction.defined() || !target.defined()) throw ValueError("per_task_loss: an input is undefined");
  if (prediction.rank() != 3)
    throw ShapeError("per_task_loss: predictions must be [tasks, points, outputs], got " + prediction.shape().str());
  if (loss == Loss::mse) {
    if (target.shape() != prediction.shape())
      throw ShapeError("per_task_loss: mse targets " + target.shape().str() + " do not match predictions " +
                       prediction.shape().str());
    return mean(square(sub(prediction, target)), {1, 2});
  }
  const std::int64_t tasks = prediction.dim(0), points = prediction.dim(1), classes = prediction.dim(2);
  if (target.dtype() != DType::i64 || target.shape() != Shape{tasks, points})
    throw ShapeError("per_task_loss: cross-entropy labels must be i64 [" + std::to_string(tasks) + ", " +
                     std::to_string(points) + "], got " + std::string(dtype_name(target.dtype())) + " " +
                     target.shape().str());
  // The flat position of each label in the [T, n, C] log-probabilities.
  std::vector<std::int64_t> picks(static_cast<std::size_t>(tasks * points));
  const Tensor host_labels = target.to(Device::cpu);
  const std::int64_t* label = host_labels.data<std::int64_t>();
  for (std::int64_t i = 0; i < tasks * points; ++i) {
    if (label[i] < 0 || label[i] >= classes)
      throw ValueError("per_task_loss: label " + std::to_string(label[i]) + " of task " + std::to_string(i / points) +
                       " is out of range for " + std::to_string(classes) + " classes");
    picks[static_cast<std::size_t>(i)] = i * classes + label[i];
  }
  const Tensor picked =
      take(log_softmax(prediction, 2), from_indices(picks, Shape{tasks, points}).to(prediction.device()));
  return neg(mean(picked, {1}));
}

}  // namespace metatape::meta
