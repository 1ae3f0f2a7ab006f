#include "metatape/meta/losses.hpp"

namespace metatape::meta {
namespace {

std::string described(const Tensor& t) { return std::string(dtype_name(t.dtype())) + " " + t.shape().str(); }

// Throws unless `target` fits `prediction` ([T, n, out], or [n, out] for one
// task without the task axis); the message names the shapes as passed.
void check_target(Loss loss, const Tensor& prediction, const Tensor& target) {
  const bool one_task = prediction.rank() == 2;
  if (loss == Loss::mse) {
    if (!is_floating(target.dtype()) || target.dtype() != prediction.dtype())
      throw DTypeError("per_task_loss: mse targets must have the predictions' dtype " +
                       std::string(dtype_name(prediction.dtype())) + ", got " + described(target));
    if (target.shape() != prediction.shape())
      throw ShapeError("per_task_loss: mse targets " + target.shape().str() + " do not match predictions " +
                       prediction.shape().str());
    return;
  }
  Shape labels;
  for (int a = 0; a + 1 < prediction.rank(); ++a) labels.push_back(prediction.dim(a));
  if (target.dtype() != DType::i64)
    throw DTypeError("per_task_loss: cross-entropy labels must be i64 " + labels.str() + ", got " + described(target));
  if (target.shape() != labels)
    throw ShapeError("per_task_loss: cross-entropy labels must be i64 " + labels.str() + " for predictions " +
                     prediction.shape().str() + ", got " + described(target) + (one_task ? " (one task)" : ""));
}

}  // namespace

Tensor per_task_loss(Loss loss, const Tensor& prediction, const Tensor& target) {
  if (!prediction.defined() || !target.defined()) throw ValueError("per_task_loss: an input is undefined");
  if (prediction.rank() != 3 && prediction.rank() != 2)
    throw ShapeError(
        "per_task_loss: predictions must be [tasks, points, outputs] or, for one task, [points, outputs], "
        "got " +
        prediction.shape().str());
  check_target(loss, prediction, target);
  if (prediction.rank() == 2)  // one task: its loss as a scalar
    return reshape(per_task_loss(loss, unsqueeze(prediction, 0), unsqueeze(target, 0)), Shape{});
  if (loss == Loss::mse) return mean(square(sub(prediction, target)), {1, 2});
  return neg(mean(take_along_last(log_softmax(prediction, 2), target), {1}));
}

}  // namespace metatape::meta
