// metatape info: what this build can run on, so that scripts (run.sh) can
// choose the device and users can see why the GPU is not used: the CPU with
// its thread count and what its matrix products run on (with a note where
// OpenBLAS chose kernels far below the CPU's), then what was found
// of CUDA, step by step (the driver, the backend library beside libmetatape,
// the runtime and its devices), and a last line "cuda: usable" or
// "cuda: not usable: <reason>".
#include <strings.h>
#include <cstdio>
#include <string>

#include "commands.hpp"
#include "metatape/cuda_backend.hpp"
#include "metatape/engine.hpp"

namespace metatape::tools {
namespace {

void print_cuda(const CudaBackendStatus& s) {
  if (!s.built) {
    std::printf("cuda backend library: not built\n");
  } else {
    std::printf("cuda driver: %s\n", s.driver_found ? "found (libcuda.so.1)" : "not found");
    if (s.library_loaded)
      std::printf("cuda backend library: loaded (%s)\n", s.library.c_str());
    else if (!s.library.empty())
      std::printf("cuda backend library: not loaded (%s)\n", s.library.c_str());
    else
      std::printf("cuda backend library: not loaded (not looked for without a driver)\n");
    // One line per device after the versions, indented under them.
    if (!s.runtime.empty()) {
      std::string text = s.runtime;
      for (std::size_t at = text.find('\n'); at != std::string::npos; at = text.find('\n', at + 3))
        text.replace(at, 1, "\n  ");
      std::printf("cuda runtime: %s\n", text.c_str());
    }
  }
  if (s.devices > 0)
    std::printf("cuda: usable (%d device(s))\n", s.devices);
  else
    std::printf("cuda: not usable: %s\n", s.reason.c_str());
}

// OpenBLAS chooses its kernels by the CPU's model when it loads. A model it
// does not know (a newer CPU, or a virtual machine that hides the model)
// gets its generic SSE3 kernels, 2.6-4.4× slower than its AVX2 ones and 5-8×
// slower than its AVX-512 ones at n = 512-1024 in float32 (bench-engine
// BM_Matmul_Kernel_f32, one core of the AMD EPYC development VM). Only the
// environment can change the choice, before OpenBLAS loads: say how.
void print_blas_note(const CpuGemmKernels& gemm) {
  if (gemm.small_products != "avx2" && gemm.small_products != "avx512") return;
  for (const char* avx2_core : {"Haswell", "Zen", "Excavator", "SkylakeX", "Cooperlake", "SapphireRapids"})
    if (strcasecmp(gemm.blas_core.c_str(), avx2_core) == 0) return;
  std::printf(
      "cpu note: OpenBLAS chose its %s kernels, which use no AVX2, on a CPU with %s: matrix products run "
      "several times slower than this CPU allows. Set OPENBLAS_CORETYPE=%s in the environment to choose "
      "faster ones.\n",
      gemm.blas_core.c_str(), gemm.small_products.c_str(),
      gemm.small_products == "avx512" ? "SkylakeX (AVX-512) or Haswell (AVX2)" : "Haswell (AVX2)");
}

}  // namespace

int run_info() {
  std::printf("metatape %s\n", METATAPE_VERSION);
  std::printf("cpu: usable (OpenBLAS, %d thread(s))\n", num_threads());
  const CpuGemmKernels gemm = cpu_gemm_kernels();
  std::printf("cpu matrix products: OpenBLAS %s kernels; small products: %s\n", gemm.blas_core.c_str(),
              gemm.small_products.c_str());
  print_blas_note(gemm);
  print_cuda(cuda_backend_status());
  return 0;
}

}  // namespace metatape::tools
