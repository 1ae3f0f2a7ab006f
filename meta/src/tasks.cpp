#include "metatape/meta/tasks.hpp"

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

namespace metatape::meta {

TaskBatch TaskBatch::slice(std::int64_t begin, std::int64_t end) const {
  return {metatape::slice(support_x, 0, begin, end), metatape::slice(support_y, 0, begin, end),
          metatape::slice(query_x, 0, begin, end), metatape::slice(query_y, 0, begin, end)};
}

TaskBatch TaskBatch::to(Device device) const {
  return {support_x.to(device), support_y.to(device), query_x.to(device), query_y.to(device)};
}

std::int64_t RaggedTaskBatch::tasks() const {
  std::int64_t total = 0;
  for (const TaskBatch& g : groups) total += g.support_x.defined() && g.support_x.rank() > 0 ? g.tasks() : 0;
  return total;
}

void RaggedTaskBatch::add_task(const Tensor& support_x, const Tensor& support_y, const Tensor& query_x,
                               const Tensor& query_y) {
  const auto one = [](const Tensor& t, const char* field) {
    if (!t.defined() || t.rank() < 1)
      throw ShapeError(std::string("RaggedTaskBatch::add_task: ") + field + " must have a points axis, got " +
                       (t.defined() ? t.shape().str() : std::string("(undefined)")));
    return unsqueeze(t, 0);
  };
  groups.push_back(
      {one(support_x, "support_x"), one(support_y, "support_y"), one(query_x, "query_x"), one(query_y, "query_y")});
}

RaggedTaskBatch RaggedTaskBatch::to(Device device) const {
  RaggedTaskBatch out;
  for (const TaskBatch& g : groups) out.groups.push_back(g.to(device));
  return out;
}

SinusoidTasks::SinusoidTasks(const SinusoidOptions& options) : options_(options) {
  if (!(options.amplitude_low <= options.amplitude_high) || !(options.phase_low <= options.phase_high) ||
      !(options.x_low <= options.x_high) || !(options.mixture_low <= options.mixture_high))
    throw ValueError("sinusoid: each range needs low <= high");
  if (!(options.mixture_probability >= 0 && options.mixture_probability <= 1))
    throw ValueError("sinusoid: the mixture probability must be in [0, 1], got " +
                     std::to_string(options.mixture_probability));
}

std::string SinusoidTasks::describe() const {
  if (options_.mixture_probability == 0) return "sinusoid";
  std::ostringstream out;
  out << "sinusoid mixture (amplitude in [" << options_.mixture_low << ", " << options_.mixture_high
      << "] with probability " << options_.mixture_probability << ", else [" << options_.amplitude_low << ", "
      << options_.amplitude_high << "])";
  return out.str();
}

TaskBatch SinusoidTasks::sample(std::int64_t tasks, std::int64_t support, std::int64_t query, Generator& gen,
                                DType dtype) const {
  if (tasks < 1 || support < 1 || query < 1)
    throw ValueError("sinusoid: need at least one task, one support and one query point, got " + std::to_string(tasks) +
                     " tasks, " + std::to_string(support) + " support, " + std::to_string(query) + " query");
  const auto draw = [&gen](double low, double high) { return low + (high - low) * gen.uniform01(); };
  std::vector<double> sx, sy, qx, qy;
  for (std::int64_t t = 0; t < tasks; ++t) {
    const bool other_component = options_.mixture_probability > 0 && gen.uniform01() < options_.mixture_probability;
    const double amplitude = other_component ? draw(options_.mixture_low, options_.mixture_high)
                                             : draw(options_.amplitude_low, options_.amplitude_high);
    const double phase = draw(options_.phase_low, options_.phase_high);
    for (std::int64_t i = 0; i < support; ++i) {
      sx.push_back(draw(options_.x_low, options_.x_high));
      sy.push_back(amplitude * std::sin(sx.back() - phase));
    }
    for (std::int64_t i = 0; i < query; ++i) {
      qx.push_back(draw(options_.x_low, options_.x_high));
      qy.push_back(amplitude * std::sin(qx.back() - phase));
    }
  }
  return {from_vector(sx, {tasks, support, 1}, dtype), from_vector(sy, {tasks, support, 1}, dtype),
          from_vector(qx, {tasks, query, 1}, dtype), from_vector(qy, {tasks, query, 1}, dtype)};
}

}  // namespace metatape::meta
