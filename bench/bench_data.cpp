// Few-shot image data: reading Fashion-MNIST (both gzip'd IDX pairs, 70,000
// images, through zlib) and drawing episodes from it. Episodes copy only
// their own images, so their cost should not depend on the data set's size.
//   load       load_fashion_mnist from Debian's dataset-fashion-mnist
//   episodes   5-way 1-shot, 15 queries per class, meta-batch 4 and 32
// Where the package is not installed both report an error and are skipped.
#include <benchmark/benchmark.h>

#include <filesystem>

#include "metatape/meta/datasets.hpp"
#include "resident.hpp"

namespace mt = metatape;
namespace meta = metatape::meta;

namespace {

bool installed(benchmark::State& state) {
  if (std::filesystem::exists(std::string(meta::kFashionMnistDirectory) + "/train-images-idx3-ubyte.gz")) return true;
  state.SkipWithError("dataset-fashion-mnist is not installed");
  return false;
}

void BM_LoadFashionMnist(benchmark::State& state) {
  if (!installed(state)) return;
  for (auto _ : state) benchmark::DoNotOptimize(meta::load_fashion_mnist()->count);
}

void BM_Episodes(benchmark::State& state) {
  if (!installed(state)) return;
  const meta::RotatedImageTasks tasks = meta::fashion_mnist_tasks({.ways = 5});
  mt::Generator gen(1);
  for (auto _ : state) {
    const meta::TaskBatch batch = tasks.sample(state.range(0), 1, 15, gen, mt::DType::f32);
    benchmark::DoNotOptimize(batch.query_x.numel());
  }
}

}  // namespace

BENCHMARK(BM_LoadFashionMnist)->Unit(benchmark::kMillisecond)->Iterations(5);
BENCHMARK(BM_Episodes)->ArgName("tasks")->Arg(4)->Arg(32)->Unit(benchmark::kMicrosecond);

METATAPE_BENCHMARK_MAIN();
