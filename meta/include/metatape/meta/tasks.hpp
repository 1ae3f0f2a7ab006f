// Task distributions. A meta-batch is task-batched: every tensor carries a
// leading task axis.
#pragma once

#include <numbers>
#include <string>

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

// A distribution over tasks.
class TaskSampler {
 public:
  virtual ~TaskSampler() = default;
  // `tasks` tasks with `support` and `query` examples each.
  virtual TaskBatch sample(std::int64_t tasks, std::int64_t support, std::int64_t query, Generator& gen,
                           DType dtype) const = 0;
  virtual std::string describe() const = 0;
};

// Sinusoid regression as in Finn et al. 2017 (METHODS.md §1): y = A sin(x − φ)
// with A ~ U[0.1, 5], φ ~ U[0, π], x ~ U[−5, 5].
struct SinusoidOptions {
  double amplitude_low = 0.1, amplitude_high = 5.0;
  double phase_low = 0.0, phase_high = std::numbers::pi;
  double x_low = -5.0, x_high = 5.0;
};

class SinusoidTasks final : public TaskSampler {
 public:
  explicit SinusoidTasks(const SinusoidOptions& options = {});
  // x, y are [tasks, points, 1]. Draws, per task: amplitude, phase, support
  // xs, query xs.
  TaskBatch sample(std::int64_t tasks, std::int64_t support, std::int64_t query, Generator& gen,
                   DType dtype = DType::f32) const override;
  std::string describe() const override { return "sinusoid"; }

 private:
  SinusoidOptions options_;
};

}  // namespace metatape::meta
