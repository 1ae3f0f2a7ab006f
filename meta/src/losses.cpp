#include "metatape/meta/losses.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

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

std::vector<double> per_task_accuracy(const Tensor& logits, const Tensor& labels) {
  if (!logits.defined() || !labels.defined()) throw ValueError("per_task_accuracy: an input is undefined");
  if (logits.rank() != 3)
    throw ShapeError("per_task_accuracy: logits must be [tasks, points, classes], got " + logits.shape().str());
  check_target(Loss::cross_entropy, logits, labels);
  const std::int64_t tasks = logits.dim(0), points = logits.dim(1), classes = logits.dim(2);
  const std::vector<double> scores = logits.to_vector(), truth = labels.to_vector();
  std::vector<double> accuracy(static_cast<std::size_t>(tasks), 0.0);
  for (std::int64_t t = 0; t < tasks; ++t) {
    std::int64_t correct = 0;
    bool finite = true;
    for (std::int64_t i = 0; i < points; ++i) {
      const double* row = scores.data() + (t * points + i) * classes;
      finite = finite && std::all_of(row, row + classes, [](double v) { return std::isfinite(v); });
      const std::int64_t predicted = std::max_element(row, row + classes) - row;
      correct += predicted == static_cast<std::int64_t>(truth[static_cast<std::size_t>(t * points + i)]);
    }
    // A NaN or infinite output has no arg-max: the task's accuracy is NaN,
    // so the failure shows instead of passing for a guess.
    accuracy[static_cast<std::size_t>(t)] =
        finite ? static_cast<double>(correct) / static_cast<double>(points) : std::numeric_limits<double>::quiet_NaN();
  }
  return accuracy;
}

}  // namespace metatape::meta
