// The CPU kernel table: every kernel of kernels/kernel_list.def as a static
// member, so that an op's forward is written once against a table and runs on
// the CPU (this struct) or the GPU (kernels/cuda/backend.hpp's CudaKernels,
// expanded from the same list).
#pragma once

#include "kernels.hpp"

namespace metatape::kernels::cpu {

struct CpuKernels {
#define METATAPE_KERNEL METATAPE_FORWARD_KERNEL_CPU
#include "../kernel_list.def"
#undef METATAPE_KERNEL
};

}  // namespace metatape::kernels::cpu
