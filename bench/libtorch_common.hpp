// What the libtorch comparisons share (bench_maml_libtorch.cpp,
// bench_kernel_libtorch.cpp): conversion of metatape tensors to and from
// libtorch, the sinusoid MLP written in libtorch, and the timers (medians of one
// step, or several implementations timed in turns).
#pragma once

#include <time.h>

#include <torch/torch.h>
#include <algorithm>
#include <chrono>
#include <functional>
#include <span>
#include <vector>

#include "metatape/engine.hpp"

namespace bench {

using TorchList = std::vector<torch::Tensor>;

inline torch::Tensor to_torch(const metatape::Tensor& t) {
  std::vector<std::int64_t> sizes(t.shape().begin(), t.shape().end());
  if (t.dtype() == metatape::DType::i64)
    return torch::from_blob(const_cast<std::int64_t*>(t.data<std::int64_t>()), sizes, torch::kInt64).clone();
  if (t.dtype() == metatape::DType::f64)
    return torch::from_blob(const_cast<double*>(t.data<double>()), sizes, torch::kFloat64).clone();
  return torch::from_blob(const_cast<float*>(t.data<float>()), sizes, torch::kFloat32).clone();
}

inline TorchList to_torch(const std::vector<metatape::Tensor>& ts) {
  TorchList out;
  for (const metatape::Tensor& t : ts) out.push_back(to_torch(t));
  return out;
}

// libtorch's results as metatape tensors (float64), to be compared by the
// tests' relative_error.
inline std::vector<metatape::Tensor> from_torch(const TorchList& ts) {
  std::vector<metatape::Tensor> out;
  for (const torch::Tensor& t : ts) {
    const torch::Tensor c = t.to(torch::kFloat64).contiguous();
    const std::vector<std::int64_t> sizes(c.sizes().begin(), c.sizes().end());
    out.push_back(
        metatape::from_vector(std::span<const double>(c.data_ptr<double>(), static_cast<std::size_t>(c.numel())),
                              metatape::Shape(sizes), metatape::DType::f64));
  }
  return out;
}

// MLP 1-40-40-1 ReLU with metatape's parameter layout (w [in, out], b [out]).
inline torch::Tensor mlp(const TorchList& p, const torch::Tensor& x) {  // x [n, 1]
  auto h = torch::relu(torch::addmm(p[1], x, p[0]));
  h = torch::relu(torch::addmm(p[3], h, p[2]));
  return torch::addmm(p[5], h, p[4]);
}

// The same with one parameter copy per task: x [T, n, 1], weights
// [T, in, out], biases [T, 1, out].
inline torch::Tensor mlp_batched(const TorchList& p, const torch::Tensor& x) {
  auto h = torch::relu(torch::baddbmm(p[1], x, p[0]));
  h = torch::relu(torch::baddbmm(p[3], h, p[2]));
  return torch::baddbmm(p[5], h, p[4]);
}

// Medians over repeated runs, in ms: wall-clock time, and the CPU time of
// the whole process (every thread), which a machine shared with other work
// inflates much less than the wall clock when the run is one thread.
struct Timing {
  double wall_ms, cpu_ms;
};

inline double process_cpu_ms() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) * 1e3 + static_cast<double>(t.tv_nsec) * 1e-6;
}

// One run of `step`.
inline Timing time_once(const std::function<void()>& step) {
  const auto start = std::chrono::steady_clock::now();
  const double cpu_start = process_cpu_ms();
  step();
  const double cpu_ms = process_cpu_ms() - cpu_start;
  return {std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count(), cpu_ms};
}

// The middle value (the upper one of an even count).
inline double median_of(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  return x[x.size() / 2];
}

// `step` timed `repeats` times after one warm-up run (allocator caches,
// thread pools).
inline Timing median_times(const std::function<void()>& step, int repeats) {
  step();
  std::vector<double> wall, cpu;
  for (int r = 0; r < repeats; ++r) {
    const Timing t = time_once(step);
    wall.push_back(t.wall_ms);
    cpu.push_back(t.cpu_ms);
  }
  return {median_of(wall), median_of(cpu)};
}

// Several implementations of one step timed in turns: `repeats` rounds in
// which each runs twice in order, the second run timed (the first refills
// the caches the others used and warms allocators and thread pools). A
// machine whose speed drifts during the run (a shared VM) then slows every
// implementation of a round alike, and the round's ratio to implementation 0
// keeps its meaning where medians timed minutes apart would not.
struct TurnTimes {
  Timing median;                               // over the rounds
  double ratio_median, ratio_low, ratio_high;  // wall time / implementation 0's in the same round
};

inline std::vector<TurnTimes> timed_in_turns(const std::vector<std::function<void()>>& steps, int repeats) {
  std::vector<std::vector<double>> wall(steps.size()), cpu(steps.size());
  for (int r = 0; r < repeats; ++r)
    for (std::size_t v = 0; v < steps.size(); ++v) {
      steps[v]();
      const Timing t = time_once(steps[v]);
      wall[v].push_back(t.wall_ms);
      cpu[v].push_back(t.cpu_ms);
    }
  std::vector<TurnTimes> out;
  for (std::size_t v = 0; v < steps.size(); ++v) {
    std::vector<double> ratios;
    for (std::size_t r = 0; r < wall[v].size(); ++r) ratios.push_back(wall[v][r] / wall[0][r]);
    const auto [low, high] = std::minmax_element(ratios.begin(), ratios.end());
    out.push_back({{median_of(wall[v]), median_of(cpu[v])}, median_of(ratios), *low, *high});
  }
  return out;
}

// The kernel figures (bench_kernel_libtorch.cpp): metatape against libtorch
// on the empirical NTK and on a Hessian-vector product, printed as a table.
void compare_ntk(int repeats);
void compare_hvp(int repeats);

}  // namespace bench
