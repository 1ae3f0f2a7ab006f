// Task distributions. A meta-batch is task-batched: every tensor carries a
// leading task axis. Tasks of different sizes go in a RaggedTaskBatch.
#pragma once

#include <numbers>
#include <string>
#include <vector>

#include "metatape/engine.hpp"

namespace metatape::meta {

struct TaskBatch {
  Tensor support_x, support_y;  // [T, n', ...]; y: values [T, n', out] or i64 labels [T, n']
  Tensor query_x, query_y;      // [T, n, ...]
  std::int64_t tasks() const { return support_x.dim(0); }
  // Tasks begin..end-1 (a copy), for looping over tasks one at a time.
  TaskBatch slice(std::int64_t begin, std::int64_t end) const;
  TaskBatch to(Device device) const;
};

// Tasks whose support or query sizes differ: a list of groups, each a
// TaskBatch of tasks of one size (a group may be a single task). The meta API
// (meta_gradient, adaptation_curve, adapt) loops over the groups, one
// task-batched graph each, released before the next, and weights each group
// by its number of tasks, so the result equals one call on all the tasks: the
// mean of one-task calls. Looped rather than padded with masks because padding
// would have to be masked out of every loss and out of Conv4's per-task
// batch-norm statistics, and would spend work on the padding; the loop is
// exact and costs one graph per group. Put tasks of equal size in one group
// to keep the batched speed.
struct RaggedTaskBatch {
  std::vector<TaskBatch> groups;
  std::int64_t tasks() const;  // over all groups
  // Appends one task as a group of its own, from tensors without the task
  // axis: x [n, ...], y [n, out] or labels [n].
  void add_task(const Tensor& support_x, const Tensor& support_y, const Tensor& query_x, const Tensor& query_y);
  RaggedTaskBatch to(Device device) const;
};

// A distribution over tasks.
class TaskSampler {
 public:
  virtual ~TaskSampler() = default;
  // `tasks` tasks with `support` and `query` examples each.
  virtual TaskBatch sample(std::int64_t tasks, std::int64_t support, std::int64_t query, Generator& gen,
                           DType dtype) const = 0;
  virtual std::string describe() const = 0;
};

// Sinusoid regression as in Finn et al. 2017 (docs/methods.md §1): y = A sin(x − φ)
// with A ~ U[0.1, 5], φ ~ U[0, π], x ~ U[−5, 5].
struct SinusoidOptions {
  double amplitude_low = 0.1, amplitude_high = 5.0;
  double phase_low = 0.0, phase_high = std::numbers::pi;
  double x_low = -5.0, x_high = 5.0;
  // A heterogeneous distribution, for studying task weighting: with this
  // probability a task's amplitude comes from [mixture_low, mixture_high]
  // instead. At 0 (the default) no extra number is drawn, so the task stream
  // is the plain distribution's, bit for bit.
  double mixture_probability = 0.0;
  double mixture_low = 4.0, mixture_high = 5.0;
};

// The heterogeneous sinusoid of metatape's task-weighting figures: 80% of
// tasks with amplitudes in [0.1, 1], 20% in [4, 5], so the rare tasks carry
// most of the squared error (`--task sinusoid-mixture`).
inline constexpr SinusoidOptions kSinusoidMixture{
    .amplitude_low = 0.1, .amplitude_high = 1.0, .mixture_probability = 0.2, .mixture_low = 4.0, .mixture_high = 5.0};

class SinusoidTasks final : public TaskSampler {
 public:
  explicit SinusoidTasks(const SinusoidOptions& options = {});
  // x, y are [tasks, points, 1]. Draws, per task: the mixture component (only
  // when mixture_probability > 0), amplitude, phase, support xs, query xs.
  TaskBatch sample(std::int64_t tasks, std::int64_t support, std::int64_t query, Generator& gen,
                   DType dtype = DType::f32) const override;
  std::string describe() const override;

 private:
  SinusoidOptions options_;
};

}  // namespace metatape::meta
