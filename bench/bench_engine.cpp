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
//   small gemm    25 products in a row at the task-batched sinusoid MLP's
//                 shapes (and 64³), float: OpenBLAS (cblas_sgemm, whichever
//                 kernels it chose; OPENBLAS_CORETYPE forces them) against
//                 our small-product kernel on AVX2 and on AVX-512 (each
//                 where the CPU has it). Filter with --benchmark_filter=SmallGemm
//   mlp           the full gradient of a 1-40-40-1 MLP's MSE on 10 points
//   conv          each distinct convolution of a Conv4 exact meta-gradient
//                 step (meta-batch 4, 5 support and 75 query images per task,
//                 the strided and the pooled variant): forward, input
//                 gradient and weight gradient, the CPU kernel alone, next
//                 to raw cblas_sgemm at the (m, n, k) of the GEMMs the
//                 kernel runs (its chunks of images), operands in cache;
//                 "MFLOP" is one call's count, "GFLOP" the rate; /1 and /2
//                 are the threads. Filter with --benchmark_filter=Conv
//   batch norm,   the fused batch norm + ReLU (forward, and backward without
//   max-pool      create_graph) and the 2×2 max-pool with its adjoint, on one
//                 task's query activations at each block of the pooled Conv4
//                 (75 images, 64 channels, 28² … 3²), and the two as one
//                 op (BatchNormMaxPool: batch_norm_max_pool2d's kernels,
//                 the pooled Conv4's); "MB" is x's size.
//                 Filter with --benchmark_filter='BatchNorm|MaxPool'
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <array>
#include <optional>
#include <string>
#include <type_traits>

#include "kernels/cpu/backend.hpp"
#include "kernels/cpu/conv.hpp"
#include "kernels/cpu/parallel.hpp"
#include "kernels/cpu/small_gemm.hpp"
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

// --- small products, as a task batch issues them ----------------------------

struct SmallShape {
  const char* name;
  bool trans_a, trans_b;
  std::int64_t m, n, k;
};
// The sinusoid MLP's hidden layer (forward, input gradient, weight
// gradient), its input layer's forward (k = 1) and output layer's weight
// gradient (m = 1), and a 64³ product.
constexpr std::array<SmallShape, 6> kSmallShapes = {{{"nn_10x40x40", false, false, 10, 40, 40},
                                                     {"nt_10x40x40", false, true, 10, 40, 40},
                                                     {"tn_40x40x10", true, false, 40, 40, 10},
                                                     {"nn_10x40x1", false, false, 10, 40, 1},
                                                     {"tn_1x40x10", true, false, 1, 40, 10},
                                                     {"nn_64x64x64", false, false, 64, 64, 64}}};
constexpr std::int64_t kSmallBatch = 25;

// isa: none = cblas_sgemm; otherwise small_gemm_with on that kernel.
void BM_SmallGemm(benchmark::State& state, SmallShape s, mt::kernels::cpu::SmallGemmIsa isa) {
  namespace cpu = mt::kernels::cpu;
  if (!cpu::cpu_runs(isa)) {
    state.SkipWithError("this CPU lacks the instructions of this kernel");
    return;
  }
  mt::Generator gen(1);
  const std::int64_t lda = s.trans_a ? s.m : s.k, ldb = s.trans_b ? s.k : s.n;
  const mt::Tensor a = mt::normal({kSmallBatch, s.m * s.k}, 0, 1, gen, mt::DType::f32),
                   b = mt::normal({kSmallBatch, s.k * s.n}, 0, 1, gen, mt::DType::f32);
  mt::Tensor c = mt::zeros({kSmallBatch, s.m * s.n}, mt::DType::f32);
  const auto dim = [](std::int64_t v) { return static_cast<int>(v); };
  for (auto _ : state) {
    for (std::int64_t t = 0; t < kSmallBatch; ++t) {
      const float* at = a.data<float>() + t * s.m * s.k;
      const float* bt = b.data<float>() + t * s.k * s.n;
      float* ct = c.data<float>() + t * s.m * s.n;
      if (isa == cpu::SmallGemmIsa::none)
        cblas_sgemm(CblasRowMajor, s.trans_a ? CblasTrans : CblasNoTrans, s.trans_b ? CblasTrans : CblasNoTrans,
                    dim(s.m), dim(s.n), dim(s.k), 1.0f, at, dim(lda), bt, dim(ldb), 0.0f, ct, dim(s.n));
      else
        cpu::small_gemm_with<float>(isa, s.trans_a, s.trans_b, s.m, s.n, s.k, 1.0f, at, lda, bt, ldb, 0.0f, ct, s.n);
    }
    benchmark::DoNotOptimize(c.raw_data());
  }
  state.counters["GFLOP"] = benchmark::Counter(2e-9 * static_cast<double>(kSmallBatch * s.m * s.n * s.k),
                                               benchmark::Counter::kIsIterationInvariantRate);
}

[[maybe_unused]] const bool small_gemm_registered = [] {
  namespace cpu = mt::kernels::cpu;
  for (const SmallShape& s : kSmallShapes)
    for (cpu::SmallGemmIsa isa : {cpu::SmallGemmIsa::none, cpu::SmallGemmIsa::avx2, cpu::SmallGemmIsa::avx512})
      benchmark::RegisterBenchmark((std::string("BM_SmallGemm_") + s.name + "_x25/" +
                                    (isa == cpu::SmallGemmIsa::none ? "openblas" : cpu::small_gemm_isa_name(isa)))
                                       .c_str(),
                                   BM_SmallGemm, s, isa)
          ->Unit(benchmark::kMicrosecond);
  return true;
}();

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

// --- convolutions of a Conv4 step: kernel against raw sgemm -------------------

// One distinct convolution call of the exact MAML step: tasks × images of
// in_channels × size², 64 output channels, 3×3, padding 1.
struct ConvCase {
  const char* name;
  std::int64_t images, in_channels, size, stride;
};

// The strided Conv4 (28 → 14 → 7 → 4 → 2) and the pooled one (28, 14, 7, 3:
// each conv at stride 1 keeps the size, the pool halves it), on the support
// (5 images per task) and the query (75) of 4 tasks.
constexpr ConvCase kConvCases[] = {
    {"strided_q_28", 75, 1, 28, 2}, {"strided_q_14", 75, 64, 14, 2}, {"strided_q_7", 75, 64, 7, 2},
    {"strided_q_4", 75, 64, 4, 2},  {"strided_s_28", 5, 1, 28, 2},   {"strided_s_14", 5, 64, 14, 2},
    {"strided_s_7", 5, 64, 7, 2},   {"strided_s_4", 5, 64, 4, 2},    {"pooled_q_28", 75, 1, 28, 1},
    {"pooled_q_14", 75, 64, 14, 1}, {"pooled_q_7", 75, 64, 7, 1},    {"pooled_q_3", 75, 64, 3, 1},
    {"pooled_s_28", 5, 1, 28, 1},   {"pooled_s_14", 5, 64, 14, 1},   {"pooled_s_7", 5, 64, 7, 1},
    {"pooled_s_3", 5, 64, 3, 1},
};
constexpr std::int64_t kConvTasks = 4, kConvOut = 64;

mt::kernels::ConvShape conv_shape_of(const ConvCase& c) {
  const mt::kernels::Window2d window{3, 3, c.stride, c.stride, 1, 1};
  return {kConvTasks, c.images, c.in_channels, c.size, c.size, kConvOut, window};
}

using mt::kernels::cpu::ConvKind;

// The (m, n, k) of the GEMM a kernel runs on `images` images of one task:
// forward W [O, P] · cols [P, N·L]; input gradient Wᵀ [P, O] · g [O, N·L];
// weight gradient g [O, N·L] · colsᵀ [N·L, P].
std::array<std::int64_t, 3> conv_gemm_dims(const mt::kernels::ConvShape& s, ConvKind kind, std::int64_t images) {
  const std::int64_t columns = images * s.pixels();
  if (kind == ConvKind::forward) return {s.out_channels, columns, s.patch()};
  if (kind == ConvKind::input_grad) return {s.patch(), columns, s.out_channels};
  return {s.out_channels, s.patch(), columns};
}

void set_conv_counters(benchmark::State& state, const mt::kernels::ConvShape& s, ConvKind kind) {
  const auto [m, n, k] = conv_gemm_dims(s, kind, s.images);
  const double flops = 2.0 * static_cast<double>(s.groups * m * n * k);
  state.counters["MFLOP"] = flops * 1e-6;
  state.counters["GFLOP"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// state.range(0) threads: the kernels' pool and OpenBLAS's.
void set_conv_threads(benchmark::State& state) {
  mt::set_num_threads(static_cast<int>(state.range(0)));
  mt::kernels::cpu::set_threads(static_cast<int>(state.range(0)));
}

// The kernel on the path its plan chooses here, or (im2col = true) on the
// im2col + GEMM path whatever the CPU has, to compare the two side by side.
void BM_Conv_Kernel(benchmark::State& state, ConvCase c, ConvKind kind, bool im2col) {
  using K = mt::kernels::cpu::CpuKernels;
  set_conv_threads(state);
  std::optional<mt::kernels::cpu::ConvIsaScope> isa;
  if (im2col) isa.emplace(mt::kernels::cpu::SmallGemmIsa::none);
  const mt::kernels::ConvShape s = conv_shape_of(c);
  mt::Generator gen(1);
  const mt::Tensor x = mt::normal({s.groups, s.images, s.in_channels, s.h, s.w}, 0, 1, gen);
  const mt::Tensor w = mt::normal({s.groups, s.out_channels, s.in_channels, 3, 3}, 0, 1, gen);
  const mt::Tensor g = mt::normal({s.groups, s.images, s.out_channels, s.out_h(), s.out_w()}, 0, 1, gen);
  mt::Tensor out = mt::zeros({kind == ConvKind::forward      ? g.numel()
                              : kind == ConvKind::input_grad ? x.numel()
                                                             : w.numel()});
  mt::Tensor scratch = mt::zeros({K::conv_scratch_size(s)});
  for (auto _ : state) {
    if (kind == ConvKind::forward)
      K::conv2d_forward<float>(s, x.data<float>(), w.data<float>(), nullptr, 0, out.data<float>(),
                               scratch.data<float>());
    else if (kind == ConvKind::input_grad)
      K::conv2d_input_grad<float>(s, g.data<float>(), w.data<float>(), out.data<float>(), scratch.data<float>());
    else
      K::conv2d_weight_grad<float>(s, x.data<float>(), g.data<float>(), out.data<float>(), scratch.data<float>());
    benchmark::DoNotOptimize(out.raw_data());
  }
  set_conv_counters(state, s, kind);
}

// Raw cblas_sgemm at the sizes of the GEMMs the im2col path runs (one per
// chunk of images of each task, conv_plan), on operands that stay in cache:
// that path's time with its im2col, transposes and memory traffic taken
// away, and the pace OpenBLAS sets for the implicit GEMM.
void BM_Conv_RawSgemm(benchmark::State& state, ConvCase c, ConvKind kind) {
  set_conv_threads(state);
  const mt::kernels::ConvShape s = conv_shape_of(c);
  const mt::kernels::cpu::ConvPlan plan = [&] {  // the im2col path's chunks, whatever this CPU has
    const mt::kernels::cpu::ConvIsaScope im2col(mt::kernels::cpu::SmallGemmIsa::none);
    return mt::kernels::cpu::conv_plan(s, kind);
  }();
  const auto [m, n, k] = conv_gemm_dims(s, kind, plan.chunk);
  mt::Generator gen(1);
  const mt::Tensor a = mt::normal({m, k}, 0, 1, gen), b = mt::normal({k, n}, 0, 1, gen);
  mt::Tensor out = mt::zeros({m, n});
  const auto i = [](std::int64_t v) { return static_cast<int>(v); };
  for (auto _ : state) {
    for (std::int64_t t = 0; t < s.groups; ++t)
      for (std::int64_t first = 0; first < s.images; first += plan.chunk) {
        const auto [cm, cn, ck] = conv_gemm_dims(s, kind, std::min(plan.chunk, s.images - first));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, i(cm), i(cn), i(ck), 1.0f, a.data<float>(), i(ck),
                    b.data<float>(), i(cn), 0.0f, out.data<float>(), i(cn));
      }
    benchmark::DoNotOptimize(out.raw_data());
  }
  set_conv_counters(state, s, kind);
  state.SetLabel("chunk GEMM m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k) + " x" +
                 std::to_string(s.groups * plan.chunks));
}

// Registered from the table: BM_Conv_<kind>_<case>_{Kernel,RawSgemm}/threads,
// and _Im2col beside _Kernel where the plan takes the implicit GEMM; the
// first layer (one input channel) has no input gradient in the step.
const bool conv_benchmarks_registered = [] {
  const std::pair<const char*, ConvKind> kinds[] = {
      {"Forward", ConvKind::forward}, {"InputGrad", ConvKind::input_grad}, {"WeightGrad", ConvKind::weight_grad}};
  for (const ConvCase& c : kConvCases)
    for (const auto& [kind_name, kind] : kinds) {
      if (kind == ConvKind::input_grad && c.in_channels == 1) continue;
      const std::string base = std::string("BM_Conv_") + kind_name + "_" + c.name;
      benchmark::RegisterBenchmark((base + "_Kernel").c_str(), BM_Conv_Kernel, c, kind, false)
          ->Unit(benchmark::kMillisecond)
          ->Arg(1)
          ->Arg(2);
      if (mt::kernels::cpu::conv_plan(conv_shape_of(c), kind).implicit != mt::kernels::cpu::SmallGemmIsa::none)
        benchmark::RegisterBenchmark((base + "_Im2col").c_str(), BM_Conv_Kernel, c, kind, true)
            ->Unit(benchmark::kMillisecond)
            ->Arg(1)
            ->Arg(2);
      benchmark::RegisterBenchmark((base + "_RawSgemm").c_str(), BM_Conv_RawSgemm, c, kind)
          ->Unit(benchmark::kMillisecond)
          ->Arg(1)
          ->Arg(2);
    }
  return true;
}();

// --- batch norm and max-pool of a pooled Conv4 step ---------------------------

// One task's query activations at each block of the pooled Conv4: 75 images
// of 64 channels, size² pixels (28, 14, 7, 3 before the pool).
constexpr std::int64_t kNormSizes[] = {28, 14, 7, 3};
constexpr std::int64_t kNormImages = 75, kNormChannels = 64;

// The fused batch norm + ReLU, forward (backward = false) or the gradients
// of x, γ and β without create_graph, as the outer backward runs them.
// "MB" is x's size, which each pass streams.
void BM_BatchNorm(benchmark::State& state, std::int64_t size, bool backward) {
  using K = mt::kernels::cpu::CpuKernels;
  set_conv_threads(state);
  const mt::kernels::NormShape s{1, kNormImages, kNormChannels, size * size, false, 1e-3, true};
  mt::Generator gen(1);
  const mt::Tensor x = mt::normal({kNormImages, kNormChannels, size, size}, 0, 1, gen),
                   g = mt::normal(x.shape(), 0, 1, gen);
  const mt::Tensor gamma = mt::uniform({kNormChannels}, 0.5, 1.5, gen), beta = mt::normal({kNormChannels}, 0, 0.1, gen);
  mt::Tensor out = mt::zeros(x.shape()), dgamma = mt::zeros({kNormChannels}), dbeta = mt::zeros({kNormChannels});
  for (auto _ : state) {
    if (backward)
      K::batch_norm_backward<float>(s, x.data<float>(), gamma.data<float>(), beta.data<float>(), g.data<float>(),
                                    out.data<float>(), dgamma.data<float>(), dbeta.data<float>());
    else
      K::batch_norm_forward<float>(s, x.data<float>(), gamma.data<float>(), beta.data<float>(), out.data<float>());
    benchmark::DoNotOptimize(out.raw_data());
  }
  state.counters["MB"] = static_cast<double>(x.numel()) * 4e-6;
}

// 2×2 max-pool at stride 2: the maxima with their indices (forward), and the
// gradients routed back to those indices (backward, max_unpool).
void BM_MaxPool(benchmark::State& state, std::int64_t size, bool backward) {
  using K = mt::kernels::cpu::CpuKernels;
  set_conv_threads(state);
  const mt::kernels::Window2d window{2, 2, 2, 2, 0, 0};
  const std::int64_t planes = kNormImages * kNormChannels, pooled = planes * (size / 2) * (size / 2);
  mt::Generator gen(1);
  const mt::Tensor x = mt::normal({planes, size, size}, 0, 1, gen), g = mt::normal({pooled}, 0, 1, gen);
  mt::Tensor y = mt::zeros({pooled}), dx = mt::zeros(x.shape());
  mt::Tensor index = mt::zeros({pooled}, mt::DType::i64);
  K::max_pool<float>(x.data<float>(), planes, size, size, window, y.data<float>(), index.data<std::int64_t>());
  for (auto _ : state) {
    if (backward)
      K::max_unpool<float>(g.data<float>(), index.data<std::int64_t>(), planes, size, size, window, dx.data<float>());
    else
      K::max_pool<float>(x.data<float>(), planes, size, size, window, y.data<float>(), index.data<std::int64_t>());
    benchmark::DoNotOptimize(dx.raw_data());
    benchmark::DoNotOptimize(y.raw_data());
  }
  state.counters["MB"] = static_cast<double>(x.numel()) * 4e-6;
}

// The two above as one op (batch_norm_max_pool2d's kernels): the fused
// batch norm + ReLU, pooled (forward), and the gradients of x, γ and β from
// the pooled gradient (backward), next to BM_BatchNorm + BM_MaxPool. The
// CPU works the 28² maps a map at a time both ways, the 14² maps forward
// only, the smaller ones through whole tensors in scratch.
void BM_BatchNormMaxPool(benchmark::State& state, std::int64_t size, bool backward) {
  using K = mt::kernels::cpu::CpuKernels;
  set_conv_threads(state);
  const mt::kernels::NormShape s{1, kNormImages, kNormChannels, size * size, false, 1e-3, true};
  const std::int64_t pooled = kNormImages * kNormChannels * (size / 2) * (size / 2);
  mt::Generator gen(1);
  const mt::Tensor x = mt::normal({kNormImages, kNormChannels, size, size}, 0, 1, gen),
                   g = mt::normal({pooled}, 0, 1, gen);
  const mt::Tensor gamma = mt::uniform({kNormChannels}, 0.5, 1.5, gen), beta = mt::normal({kNormChannels}, 0, 0.1, gen);
  mt::Tensor y = mt::zeros({pooled}), index = mt::zeros({pooled}, mt::DType::i64), dx = mt::zeros(x.shape());
  mt::Tensor dgamma = mt::zeros({kNormChannels}), dbeta = mt::zeros({kNormChannels});
  mt::Tensor scratch = mt::zeros({K::batch_norm_max_pool_scratch_size(s)});
  const auto forward = [&] {
    K::batch_norm_max_pool_forward<float>(s, size, size, x.data<float>(), gamma.data<float>(), beta.data<float>(),
                                          y.data<float>(), index.data<std::int64_t>(), scratch.data<float>());
  };
  forward();
  for (auto _ : state) {
    if (backward)
      K::batch_norm_max_pool_backward<float>(s, size, size, x.data<float>(), gamma.data<float>(), beta.data<float>(),
                                             g.data<float>(), index.data<std::int64_t>(), dx.data<float>(),
                                             dgamma.data<float>(), dbeta.data<float>(), scratch.data<float>());
    else
      forward();
    benchmark::DoNotOptimize(dx.raw_data());
    benchmark::DoNotOptimize(y.raw_data());
  }
  state.counters["MB"] = static_cast<double>(x.numel()) * 4e-6;
}

// Registered per size: BM_{BatchNorm,MaxPool,BatchNormMaxPool}_{Forward,Backward}_q_<size>/threads.
const bool norm_pool_benchmarks_registered = [] {
  for (const std::int64_t size : kNormSizes)
    for (const bool backward : {false, true}) {
      const std::string suffix = std::string(backward ? "_Backward" : "_Forward") + "_q_" + std::to_string(size);
      benchmark::RegisterBenchmark(("BM_BatchNorm" + suffix).c_str(), BM_BatchNorm, size, backward)
          ->Unit(benchmark::kMillisecond)
          ->Arg(1)
          ->Arg(2);
      benchmark::RegisterBenchmark(("BM_MaxPool" + suffix).c_str(), BM_MaxPool, size, backward)
          ->Unit(benchmark::kMillisecond)
          ->Arg(1)
          ->Arg(2);
      benchmark::RegisterBenchmark(("BM_BatchNormMaxPool" + suffix).c_str(), BM_BatchNormMaxPool, size, backward)
          ->Unit(benchmark::kMillisecond)
          ->Arg(1)
          ->Arg(2);
    }
  return true;
}();

}  // namespace

METATAPE_BENCHMARK_MAIN();
