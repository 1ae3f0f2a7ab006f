#include "metatape/meta/losses.hpp"

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
  const std::int64_t tasks = prediction.dim(0), points = prediction.dim(1);
  if (target.dtype() != DType::i64 || target.shape() != Shape{tasks, points})
    throw ShapeError("per_task_loss: cross-entropy labels must be i64 [" + std::to_string(tasks) + ", " +
                     std::to_string(points) + "], got " + std::string(dtype_name(target.dtype())) + " " +
                     target.shape().str());
  return neg(mean(take_along_last(log_softmax(prediction, 2), target), {1}));
}

}  // namespace metatape::meta
