// The CUDA kernels, declared in plain C++ from kernels/kernel_list.def; what
// each computes is documented there. Defined in this folder's .cu files and
// handed to the engine as function pointers (export.cpp, table.hpp): the
// engine never links them. Pointers are device memory; every call is queued
// on this thread's stream (runtime.hpp) and returns without waiting. A
// failure throws KernelError (kernels/error.hpp) naming the CUDA or cuBLAS
// call.
//
// Where the results may differ from the CPU's in the last bits:
//   reduce.cu  sums accumulate in double, in a fixed tree order: they may
//              differ from the CPU's, not from run to run;
//   layout.cu  the scatters add with atomics: repeated indices sum in an
//              order that may change from run to run;
//   gemm.cu    cuBLAS; TF32 only when runtime.hpp's set_allow_tf32.
#pragma once

#include "../kernel_table.hpp"

namespace metatape::kernels::cuda {

#define METATAPE_KERNEL METATAPE_DECLARE_KERNEL
#include "../kernel_list.def"
#undef METATAPE_KERNEL

}  // namespace metatape::kernels::cuda
