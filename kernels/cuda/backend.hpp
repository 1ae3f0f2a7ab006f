// The CUDA kernel table as the engine sees it: the members of CpuKernels
// (kernels/cpu/backend.hpp), expanded from the same list
// (kernels/kernel_list.def), each a call through the function pointers that
// the CUDA backend library handed over when it was loaded (table.hpp). Over
// device memory, each queued on this thread's stream. Plain C++: the engine
// includes it without nvcc, in builds with the CUDA backend.
#pragma once

#include "../error.hpp"
#include "table.hpp"

namespace metatape::kernels::cuda {

// The loaded library's table. Defined by the engine, which loads the
// library on the first use of a CUDA device (engine/src/cuda_loader.cpp);
// throws KernelError naming why it is not usable, if it is not.
const CudaBackendTable& backend_table();

struct CudaKernels {
#define METATAPE_KERNEL(kind, ret, name, params, args)                                   \
  METATAPE_KERNEL_HEAD(kind) static ret name params {                                    \
    return backend_table().kernels.name.template get<METATAPE_KERNEL_ARGS(kind)>() args; \
  }
#include "../kernel_list.def"
#undef METATAPE_KERNEL
};

}  // namespace metatape::kernels::cuda
