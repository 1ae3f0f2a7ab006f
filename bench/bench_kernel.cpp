// The kernel figures of docs/methods.md §2 and §5, metatape alone (the
// libtorch side is in bench-maml-libtorch --only ntk / hvp):
//   ntk        empirical NTK Θ(x, x) of the sinusoid MLP 1-40-40-1 ReLU on 100
//              inputs, trace mode (C = 1, so also the full kernel), float32
//              and float64
//   hvp        Hessian-vector product of that MLP's MSE on the same 100 points,
//              over the parameter list (metatape::hvp), float32 and float64
//   meta_step  one meta-gradient step on the sinusoid meta-batch (25 tasks,
//              K = 10 support + 10 query): exact one-step MAML against kernel
//              adaptation (flow form, t = 1, trace kernel, exact meta-gradient
//              through the kernel; and with the kernel held fixed), float32,
//              side by side
//
//   OPENBLAS_NUM_THREADS=1 build/bench/bench-kernel --benchmark_repetitions=10
//       --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include "maml_setups.hpp"
#include "metatape/functional.hpp"
#include "metatape/meta/ntk.hpp"
#include "resident.hpp"

namespace mt = metatape;
namespace meta = metatape::meta;

namespace {

mt::DType dtype_of(std::int64_t bits) { return bits == 64 ? mt::DType::f64 : mt::DType::f32; }

// Runs `work` once untimed (it warms the storage pool and the tape's
// arrays), then times it. A metatape error (an algorithm not built yet, say)
// skips this benchmark with its message instead of ending the run.
template <class Work>
void time_calls(benchmark::State& state, const Work& work) {
  try {
    work();
  } catch (const mt::Error& e) {
    state.SkipWithError(e.what());
    return;
  }
  for (auto _ : state) work();
}

void BM_Ntk(benchmark::State& state) {
  const bench::MlpPoints points = bench::mlp_points(dtype_of(state.range(0)));
  const meta::NtkOptions options{.mode = meta::KernelMode::trace};
  time_calls(state, [&] {
    mt::Tensor kernel = meta::empirical_ntk(*points.model, points.params, points.x, options);
    benchmark::DoNotOptimize(kernel);
  });
}

void BM_Hvp(benchmark::State& state) {
  const bench::MlpPoints points = bench::mlp_points(dtype_of(state.range(0)));
  const mt::TensorListToTensorFn loss = [&](const std::vector<mt::Tensor>& p) {
    return bench::mlp_points_loss(points, p);
  };
  time_calls(state, [&] {
    auto result = mt::hvp(loss, points.params, points.v);
    benchmark::DoNotOptimize(result.hvp);
  });
}

void BM_MetaStep(benchmark::State& state) {
  const std::int64_t variant = state.range(0);
  const bench::MamlSetup setup = variant == 0 ? bench::sinusoid_setup(1, false, true, mt::DType::f32)
                                              : bench::kernel_setup(mt::DType::f32, variant == 2);
  time_calls(state, [&] {
    auto step = meta::meta_gradient(*setup.model, setup.loss, setup.config, setup.params, setup.batch, 0);
    benchmark::DoNotOptimize(step.meta_loss);
  });
}

}  // namespace

BENCHMARK(BM_Ntk)->ArgName("bits")->Arg(32)->Arg(64)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Hvp)->ArgName("bits")->Arg(32)->Arg(64)->Unit(benchmark::kMicrosecond);
// Arg: 0 = exact one-step MAML, 1 = kernel adaptation (flow, exact: the
// figure), 2 = kernel adaptation with the kernel held fixed (for scale).
BENCHMARK(BM_MetaStep)->ArgName("kernel")->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond);

METATAPE_BENCHMARK_MAIN();
