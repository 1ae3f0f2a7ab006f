// Engine micro-benchmarks (Google Benchmark). Run with repetitions and read
// the medians, e.g.  scripts/bench.sh  or
//   build/bench/bench-engine --benchmark_repetitions=10 --benchmark_report_aggregates_only=true
//
//   op overhead   add of 40 floats, recorded on the tape and not, and the
//                 CPU kernel alone (the engine op minus the kernel is the
//                 op's own cost: checks, allocation, recording)
//   gemm          engine matmul against its CPU kernel and raw cblas_?gemm,
//                 same sizes, same run
//                 (the counter "GFLOP=x/s" reads as x GFLOP/s)
//   mlp           the full gradient of a 1-40-40-1 MLP's MSE on 10 points
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <optional>
#include <type_traits>

#include "kernels/cpu/backend.hpp"
#include "metatape/engine.hpp"
#include "resident.hpp"

namespace mt = metatape;

namespace {

// --- per-op overhead on a tiny tensor -------------------------------------

void BM_AddTiny_NotRecorded(benchmark::State& state) {
  const mt::Tensor a = mt::ones({40}), b = mt::ones({40});
  for (auto _ : state) {
    mt::Tensor c = mt::add(a, b);
    benchmark::DoNotOptimize(c.raw_data());
  }
}
BENCHMARK(BM_AddTiny_NotRecorded);

// The tape grows by one node per add; the scope is released and reopened
// every 4096 adds, so the time per add includes its share of the release.
void BM_AddTiny_Recorded(benchmark::State& state) {
  mt::Tensor a = mt::ones({40}), b = mt::ones({40});
  a.requires_grad_();
  std::optional<mt::TapeScope> scope;
  scope.emplace();
  std::int64_t count = 0;
  for (auto _ : state) {
    mt::Tensor c = mt::add(a, b);
    benchmark::DoNotOptimize(c.raw_data());
    if (++count % 4096 == 0) {
      scope.reset();
      scope.emplace();
    }
  }
}
BENCHMARK(BM_AddTiny_Recorded);

// The kernel under add, called directly on the same 40 floats.
void BM_AddTiny_Kernel(benchmark::State& state) {
  const mt::Tensor a = mt::ones({40}), b = mt::ones({40});
  mt::Tensor c = mt::zeros({40});
  const std::int64_t shape[] = {40}, strides[] = {1};
  for (auto _ : state) {
    mt::kernels::cpu::CpuKernels::binary<float>(mt::kernels::BinaryOp::add, 1, shape, a.data<float>(), strides,
                                                b.data<float>(), strides, c.data<float>());
    benchmark::DoNotOptimize(c.raw_data());
  }
}
BENCHMARK(BM_AddTiny_Kernel);

// --- GEMM: engine against raw BLAS -----------------------------------------

void set_gflops(benchmark::State& state, std::int64_t n) {
  state.counters["GFLOP"] =
      benchmark::Counter(2e-9 * static_cast<double>(n * n * n), benchmark::Counter::kIsIterationInvariantRate);
}

template <mt::DType D>
void BM_Matmul_Engine(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  mt::Generator gen(1);
  const mt::Tensor a = mt::normal({n, n}, 0, 1, gen, D), b = mt::normal({n, n}, 0, 1, gen, D);
  for (auto _ : state) {
    mt::Tensor c = mt::matmul(a, b);
    benchmark::DoNotOptimize(c.raw_data());
  }
  set_gflops(state, n);
}

// The kernel under matmul, called directly.
template <mt::DType D>
void BM_Matmul_Kernel(benchmark::State& state) {
  using T = std::conditional_t<D == mt::DType::f32, float, double>;
  const std::int64_t n = state.range(0);
  mt::Generator gen(1);
  const mt::Tensor a = mt::normal({n, n}, 0, 1, gen, D), b = mt::normal({n, n}, 0, 1, gen, D);
  mt::Tensor c = mt::zeros({n, n}, D);
  for (auto _ : state) {
    mt::kernels::cpu::CpuKernels::gemm_batched<T>(false, false, n, n, n, a.data<T>(), 0, b.data<T>(), 0, c.data<T>(), 0,
                                                  1);
    benchmark::DoNotOptimize(c.raw_data());
  }
  set_gflops(state, n);
}

template <mt::DType D>
void BM_Matmul_RawBlas(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  mt::Generator gen(1);
  const mt::Tensor a = mt::normal({n, n}, 0, 1, gen, D), b = mt::normal({n, n}, 0, 1, gen, D);
  mt::Tensor c = mt::zeros({n, n}, D);
  const int ni = static_cast<int>(n);
  for (auto _ : state) {
    if constexpr (D == mt::DType::f32)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, ni, ni, 1.0f, a.data<float>(), ni, b.data<float>(), ni,
                  0.0f, c.data<float>(), ni);
    else
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, ni, ni, 1.0, a.data<double>(), ni, b.data<double>(),
                  ni, 0.0, c.data<double>(), ni);
    benchmark::DoNotOptimize(c.raw_data());
  }
  set_gflops(state, n);
}

BENCHMARK(BM_Matmul_Engine<mt::DType::f32>)
    ->Name("BM_Matmul_Engine_f32")
    ->Arg(40)
    ->Arg(128)
    ->Arg(256)
    ->Arg(512)
    ->Arg(1024);
BENCHMARK(BM_Matmul_Kernel<mt::DType::f32>)
    ->Name("BM_Matmul_Kernel_f32")
    ->Arg(40)
    ->Arg(128)
    ->Arg(256)
    ->Arg(512)
    ->Arg(1024);
BENCHMARK(BM_Matmul_RawBlas<mt::DType::f32>)
    ->Name("BM_Matmul_RawBlas_f32")
    ->Arg(40)
    ->Arg(128)
    ->Arg(256)
    ->Arg(512)
    ->Arg(1024);
BENCHMARK(BM_Matmul_Engine<mt::DType::f64>)
    ->Name("BM_Matmul_Engine_f64")
    ->Arg(40)
    ->Arg(128)
    ->Arg(256)
    ->Arg(512)
    ->Arg(1024);
BENCHMARK(BM_Matmul_Kernel<mt::DType::f64>)
    ->Name("BM_Matmul_Kernel_f64")
    ->Arg(40)
    ->Arg(128)
    ->Arg(256)
    ->Arg(512)
    ->Arg(1024);
BENCHMARK(BM_Matmul_RawBlas<mt::DType::f64>)
    ->Name("BM_Matmul_RawBlas_f64")
    ->Arg(40)
    ->Arg(128)
    ->Arg(256)
    ->Arg(512)
    ->Arg(1024);

// --- a whole small gradient -------------------------------------------------

// loss = mean((W3ᵀ relu(W2ᵀ relu(W1ᵀ x + b1) + b2) + b3 - y)²) for a 1-40-40-1
// MLP on 10 points, and its gradient with respect to all six parameters.
void BM_MlpGradient(benchmark::State& state) {
  mt::Generator gen(3);
  const mt::Tensor x = mt::uniform({10, 1}, -5, 5, gen), y = mt::uniform({10, 1}, -1, 1, gen);
  const std::vector<mt::Tensor> theta = {mt::normal({1, 40}, 0, 1, gen),    mt::zeros({40}),
                                         mt::normal({40, 40}, 0, 0.2, gen), mt::zeros({40}),
                                         mt::normal({40, 1}, 0, 0.2, gen),  mt::zeros({1})};
  for (auto _ : state) {
    mt::TapeScope scope;
    std::vector<mt::Tensor> p;
    for (const mt::Tensor& t : theta) p.push_back(t.detach().requires_grad_());
    const mt::Tensor h1 = mt::relu(mt::matmul(x, p[0]) + p[1]);
    const mt::Tensor h2 = mt::relu(mt::matmul(h1, p[2]) + p[3]);
    const mt::Tensor loss = mt::mse_loss(mt::matmul(h2, p[4]) + p[5], y);
    const std::vector<mt::Tensor> g = mt::grad(loss, p);
    benchmark::DoNotOptimize(g[0].raw_data());
  }
}
BENCHMARK(BM_MlpGradient);

}  // namespace

METATAPE_BENCHMARK_MAIN();
