// GPU figures, one JSON line per measurement (bench/peers
// report.py turns them, with the PyTorch and JAX peers' lines, into tables):
//   gemm   engine matmul against raw cuBLAS, float32 and float64, n = 1024..4096
//   maml   exact meta-gradient steps of the configurations the peers also
//          run (bench/peers/maml_torch.py, maml_jax.py): eager, and
//          captured once as a CUDA graph and replayed (CapturedStep)
// Times are medians over repeated runs, each synchronised with the GPU; each
// line carries the process's resident MiB then and its peak so far.
// Without a usable GPU it says so and exits 77.
//
//   build/bench/bench-cuda [--repeats R]
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "cuda_configs.hpp"
#include "kernels/cuda/runtime.hpp"
#include "resident.hpp"

namespace mt = metatape;
namespace meta = metatape::meta;

namespace {

double median_ms(const std::function<void()>& step, int repeats) {
  for (int i = 0; i < 3; ++i) step();  // warm-up: pools, handles, lazy module loading
  mt::kernels::cuda::synchronize();
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    step();
    mt::kernels::cuda::synchronize();
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void emit(const std::string& group, const std::string& config, const std::string& impl, double ms, double extra = -1) {
  std::printf("{\"group\": \"%s\", \"config\": \"%s\", \"impl\": \"%s\", \"ms\": %.6f", group.c_str(), config.c_str(),
              impl.c_str(), ms);
  if (extra >= 0) std::printf(", \"gflops\": %.3f", extra);
  const bench::Resident r = bench::resident();
  std::printf(", \"rss_mib\": %.1f, \"peak_rss_mib\": %.1f}\n", r.mib, r.peak_mib);
  std::fflush(stdout);
}

template <class T>
void gemm(int n, int repeats) {
  const mt::DType dtype = std::is_same_v<T, float> ? mt::DType::f32 : mt::DType::f64;
  mt::Generator gen(1);
  const mt::Tensor a = mt::normal({n, n}, 0, 1, gen, dtype).to(mt::Device::cuda);
  const mt::Tensor b = mt::normal({n, n}, 0, 1, gen, dtype).to(mt::Device::cuda);
  mt::Tensor c = mt::zeros({n, n}, dtype, mt::Device::cuda);
  cublasHandle_t handle;
  cublasCreate(&handle);
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  cublasSetStream(handle, stream);
  const T one = 1, zero = 0;
  const double flops = 2.0 * n * n * n;
  const std::string config = std::string(std::is_same_v<T, float> ? "f32" : "f64") + " n=" + std::to_string(n);
  const double engine = median_ms([&] { (void)mt::matmul(a, b); }, repeats);
  const double raw = median_ms(
      [&] {
        if constexpr (std::is_same_v<T, float>)
          cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, b.data<float>(), n, a.data<float>(), n, &zero,
                      c.data<float>(), n);
        else
          cublasDgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, b.data<double>(), n, a.data<double>(), n, &zero,
                      c.data<double>(), n);
        cudaStreamSynchronize(stream);
      },
      repeats);
  emit("gemm", config, "metatape", engine, flops / engine / 1e6);
  emit("gemm", config, "cublas", raw, flops / raw / 1e6);
  cublasDestroy(handle);
  cudaStreamDestroy(stream);
}

void maml(const char* config, bench::MamlSetup setup, int repeats) {
  const meta::MetaParams params = setup.params.to(mt::Device::cuda);
  const meta::TaskBatch batch = setup.batch.to(mt::Device::cuda);
  const double ms =
      median_ms([&] { (void)meta::meta_gradient(*setup.model, setup.loss, setup.config, params, batch, 0); }, repeats);
  emit("maml", config, "metatape", ms);

  // The same step as a graph: inputs copied in, one replay, outputs copied
  // out, and the losses read on the host as meta_gradient does.
  meta::CapturedMetaGradient step(*setup.model, setup.loss, setup.config);
  const double graph_ms = median_ms(
      [&] {
        const meta::MetaStepTensors out = step(params, batch);
        (void)out.meta_loss.item();
        (void)out.task_losses.to_vector();
      },
      repeats);
  emit("maml", config, "metatape (CUDA graph)", graph_ms);
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = 50;
  for (int i = 1; i + 1 < argc; i += 2)
    if (std::strcmp(argv[i], "--repeats") == 0) repeats = std::atoi(argv[i + 1]);
  std::fprintf(stderr, "bench-cuda: at start, %s\n", bench::resident_text().c_str());
  std::string reason;
  if (!mt::cuda_available(&reason)) {
    std::fprintf(stderr, "bench-cuda: SKIP: %s\n", reason.c_str());
    return 77;
  }
  for (int n : {1024, 2048, 4096}) gemm<float>(n, repeats);
  for (int n : {1024, 2048}) gemm<double>(n, std::max(5, repeats / 5));
  for (const bench::CudaMamlConfig& config : bench::cuda_maml_configs())
    maml(config.name.c_str(), config.setup(), config.repeats(repeats));
  return 0;
}
