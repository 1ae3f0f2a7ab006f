// The CUDA kernel table: the members of CpuKernels (kernels/cpu/backend.hpp),
// expanded from the same list (kernels/kernel_list.def), over device memory,
// each queued on this thread's stream. Plain C++: the engine includes it
// without nvcc, in builds with the CUDA backend.
#pragma once

#include "kernels.hpp"

namespace metatape::kernels::cuda {

struct CudaKernels {
#define METATAPE_KERNEL METATAPE_FORWARD_KERNEL_CUDA
#include "../kernel_list.def"
#undef METATAPE_KERNEL
};

}  // namespace metatape::kernels::cuda
