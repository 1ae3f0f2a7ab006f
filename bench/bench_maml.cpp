// Meta-gradient step time: the configurations of maml_setups.hpp, exact and
// first-order, task-batched (the default) and looped over tasks; for the
// sinusoid also the step captured once and replayed on the CPU
// (CapturedMetaGradient: the recorded kernel calls on the same buffers).
//   sinusoid   MLP 1-40-40-1 ReLU, 25 tasks, K = 10 support + 10 query, τ = 1 and 5
//   conv4      28×28×1, 64 channels, 5-way 1-shot, 15 queries per class,
//              meta-batch 4, τ = 1
// Peak memory per configuration is the storage pool's high-water mark
// during one step (tensor storage only), reported as the "peak_MiB" counter.
#include <benchmark/benchmark.h>

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

METATAPE_BENCHMARK_MAIN();
