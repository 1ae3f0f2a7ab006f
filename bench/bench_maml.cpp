// Meta-gradient step time: the configurations of maml_setups.hpp, exact and
// first-order, task-batched (the default) and looped over tasks; for the
// sinusoid also the step captured once and replayed on the CPU
// (CapturedMetaGradient: the recorded kernel calls on the same buffers).
//   sinusoid   MLP 1-40-40-1 ReLU, 25 tasks, K = 10 support + 10 query, τ = 1 and 5
//   conv4      28×28×1, 64 channels, 5-way 1-shot, 15 queries per class,
//              meta-batch 4, τ = 1
// Peak memory per configuration is the storage pool's high-water mark
// during one step (tensor storage only), reported as the "peak_MiB" counter.
//
// bench-maml --kernel-times [ROUNDS] [MODEL] runs no benchmark: it prints
// where a replayed exact step's time goes (CapturedStep::kernel_times), by
// kernel, by kernel and arguments, and its slowest calls: MODEL sinusoid
// (the default; 1 and 5 inner steps), conv4 or strided-conv4 (meta-batch 4,
// one inner step).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "maml_setups.hpp"
#include "resident.hpp"

namespace mt = metatape;
namespace meta = metatape::meta;

namespace {

void run(benchmark::State& state, const bench::MamlSetup& setup) {
  // One step outside the timing warms the pool and the tape's arrays.
  (void)meta::meta_gradient(*setup.model, setup.loss, setup.config, setup.params, setup.batch, 0);
  mt::reset_pool_peak();
  const std::size_t before = mt::pool_stats().bytes_in_use;
  for (auto _ : state) {
    auto step = meta::meta_gradient(*setup.model, setup.loss, setup.config, setup.params, setup.batch, 0);
    benchmark::DoNotOptimize(step.meta_loss);
  }
  state.counters["peak_MiB"] = static_cast<double>(mt::pool_stats().peak_bytes_in_use - before) / (1024.0 * 1024.0);
}

void BM_Sinusoid(benchmark::State& state) {
  const int steps = static_cast<int>(state.range(0));
  const bool first_order = state.range(1) != 0, batched = state.range(2) != 0;
  run(state, bench::sinusoid_setup(steps, first_order, batched, mt::DType::f32));
}

// The same step captured on the first call and replayed: no tape, no shape
// checks, no allocation inside the step; the parameters and the batch are
// copied in and the results copied out, as the trainer does.
void BM_SinusoidReplayed(benchmark::State& state) {
  const int steps = static_cast<int>(state.range(0));
  const bool first_order = state.range(1) != 0;
  const bench::MamlSetup setup = bench::sinusoid_setup(steps, first_order, true, mt::DType::f32);
  meta::CapturedMetaGradient step(*setup.model, setup.loss, setup.config);
  (void)step(setup.params, setup.batch);
  for (auto _ : state) {
    meta::MetaStepTensors out = step(setup.params, setup.batch);
    benchmark::DoNotOptimize(out.meta_loss);
  }
}

void BM_Conv4(benchmark::State& state) {
  const bool first_order = state.range(0) != 0, batched = state.range(1) != 0;
  run(state, bench::conv4_setup(first_order, batched, mt::DType::f32));
}

}  // namespace

// Args: inner steps, first-order?, task-batched?
BENCHMARK(BM_Sinusoid)
    ->ArgNames({"steps", "first_order", "batched"})
    ->Args({1, 0, 1})
    ->Args({1, 1, 1})
    ->Args({5, 0, 1})
    ->Args({5, 1, 1})
    ->Args({1, 0, 0})
    ->Args({5, 0, 0})
    ->Unit(benchmark::kMicrosecond);
// Args: inner steps, first-order?
BENCHMARK(BM_SinusoidReplayed)
    ->ArgNames({"steps", "first_order"})
    ->Args({1, 0})
    ->Args({1, 1})
    ->Args({5, 0})
    ->Args({5, 1})
    ->Unit(benchmark::kMicrosecond);
// Args: first-order?, task-batched?
BENCHMARK(BM_Conv4)
    ->ArgNames({"first_order", "batched"})
    ->Args({0, 1})
    ->Args({1, 1})
    ->Args({0, 0})
    ->Unit(benchmark::kMillisecond);

namespace {

// (key, calls, µs) for each key of the calls, costliest first.
using CallGroups = std::vector<std::pair<std::string, std::pair<int, double>>>;
template <class Key>
CallGroups group_calls(const std::vector<mt::CapturedStep::KernelTime>& calls, Key key) {
  std::map<std::string, std::pair<int, double>> groups;
  for (const auto& c : calls) {
    auto& [count, us] = groups[key(c)];
    ++count;
    us += c.microseconds;
  }
  CallGroups rows(groups.begin(), groups.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.second > b.second.second; });
  return rows;
}

// The table of CapturedMetaGradient::kernel_times for the exact step of
// `setup`, headed by `what`.
void print_kernel_times(const std::string& what, const bench::MamlSetup& setup, int rounds) {
  meta::CapturedMetaGradient step(*setup.model, setup.loss, setup.config);
  (void)step(setup.params, setup.batch);
  const std::vector<mt::CapturedStep::KernelTime> calls = step.kernel_times(rounds);
  double total = 0;
  for (const auto& c : calls) total += c.microseconds;
  std::printf(
      "%s, exact, float32, replayed: %zu kernel calls, %.1f us in all (each call timed alone, median of %d "
      "replays)\n",
      what.c_str(), calls.size(), total, rounds);
  std::printf("  %-24s %6s %10s %7s\n", "kernel", "calls", "us/step", "share");
  for (const auto& [kernel, row] : group_calls(calls, [](const auto& c) { return std::string(c.kernel); }))
    std::printf("  %-24s %6d %10.1f %6.1f%%\n", kernel.c_str(), row.first, row.second, 100.0 * row.second / total);
  // The same calls grouped by kernel and arguments: where a shape recurs,
  // its total says more than any one call.
  const CallGroups by_call =
      group_calls(calls, [](const auto& c) { return std::string(c.kernel) + "(" + c.arguments + ")"; });
  const std::size_t listed = std::min<std::size_t>(15, by_call.size());
  std::printf("  the %zu costliest calls by kernel and arguments (calls, us/step, share):\n", listed);
  for (std::size_t i = 0; i < listed; ++i)
    std::printf("  %4d %8.1f %6.1f%%  %s\n", by_call[i].second.first, by_call[i].second.second,
                100.0 * by_call[i].second.second / total, by_call[i].first.c_str());
  std::vector<std::size_t> order(calls.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  const std::size_t shown = std::min<std::size_t>(15, order.size());
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(shown), order.end(),
                    [&](std::size_t a, std::size_t b) { return calls[a].microseconds > calls[b].microseconds; });
  std::printf("  the %zu slowest calls (call number, kernel, scalar arguments):\n", shown);
  for (std::size_t i = 0; i < shown; ++i) {
    const auto& c = calls[order[i]];
    std::printf("  #%03zu %8.1f us  %s(%s)\n", order[i], c.microseconds, c.kernel, c.arguments.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "--kernel-times") {
    const int rounds = argc >= 3 ? std::atoi(argv[2]) : 21;
    if (rounds < 1) {
      std::fprintf(stderr, "bench-maml --kernel-times: ROUNDS must be a positive integer, got '%s'\n", argv[2]);
      return 2;
    }
    const std::string model = argc >= 4 ? argv[3] : "sinusoid";
    if (model == "sinusoid") {
      for (int steps : {1, 5})
        print_kernel_times("sinusoid MLP 1-40-40-1, 25 tasks, K = 10, " + std::to_string(steps) + " inner step(s)",
                           bench::sinusoid_setup(steps, false, true, mt::DType::f32), rounds);
    } else if (model == "conv4") {
      print_kernel_times("Conv4 (max-pool, batch norm), 4 tasks of 5-way 1-shot, 15 queries per class",
                         bench::conv4_setup(false, true, mt::DType::f32), rounds);
    } else if (model == "strided-conv4") {
      print_kernel_times("strided Conv4 (no batch norm), 4 tasks of 5-way 1-shot, 15 queries per class",
                         bench::strided_conv4_setup(false, true, mt::DType::f32), rounds);
    } else {
      std::fprintf(stderr, "bench-maml --kernel-times: MODEL must be sinusoid, conv4 or strided-conv4, got '%s'\n",
                   argv[3]);
      return 2;
    }
    return 0;
  }
  return bench::run_benchmarks_with_resident(argc, argv);
}
