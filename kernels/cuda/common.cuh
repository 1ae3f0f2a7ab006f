// Internal to the CUDA kernels: this thread's stream and cuBLAS handle,
// status checks that throw KernelError (kernels/error.hpp) naming the call,
// and the launch geometry of grid-stride loops.
#pragma once

#include <cublas_v2.h>
#include <cusolverDn.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "../error.hpp"

namespace metatape::kernels::cuda {

// Throws KernelError("<call> failed: <name>: <description>"). The runtime
// also keeps the error as this thread's last one; it is cleared here, so that
// the next launch's check does not report it again as its own.
inline void check(cudaError_t status, const char* call) {
  if (status != cudaSuccess) {
    cudaGetLastError();
    throw KernelError(std::string(call) + " failed: " + cudaGetErrorName(status) + ": " + cudaGetErrorString(status));
  }
}
void check(cublasStatus_t status, const char* call);
void check(cusolverStatus_t status, const char* call);

// After a launch: configuration errors surface here, execution errors at the
// next synchronising call.
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

// The stream every kernel and copy of this thread runs on, and a cuBLAS
// handle bound to it (created on first use, one per engine context).
cudaStream_t stream();
cublasHandle_t blas();
// This thread's cuSOLVER (dense) handle, bound to its stream (solver.cu).
cusolverDnHandle_t solver();

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n items (at least 1, at most 65,535).
inline unsigned blocks_for(std::int64_t n) {
  return static_cast<unsigned>(std::clamp<std::int64_t>((n + kThreads - 1) / kThreads, 1, 65535));
}

// Grid-stride index helpers.
__device__ inline std::int64_t global_index() {
  return static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline std::int64_t global_stride() { return static_cast<std::int64_t>(gridDim.x) * blockDim.x; }

// Up to five dimensions with per-operand strides, passed to kernels by value.
struct Strided5 {
  int rank = 0;
  std::int64_t shape[5] = {};
  std::int64_t stride[3][5] = {};  // per operand, in elements
};

// The offsets of linear (row-major) position i in each of the first
// `operands` operands.
__device__ inline void strided_offsets(const Strided5& s, std::int64_t i, int operands, std::int64_t* offset) {
  for (int o = 0; o < operands; ++o) offset[o] = 0;
  for (int d = s.rank - 1; d >= 0; --d) {
    const std::int64_t coordinate = i % s.shape[d];
    i /= s.shape[d];
    for (int o = 0; o < operands; ++o) offset[o] += coordinate * s.stride[o][d];
  }
}

// Sums `value` over the block (blockDim.x == kThreads) in a fixed order;
// thread 0 gets the total. `shared` holds kThreads doubles.
__device__ inline double block_sum(double value, double* shared) {
  shared[threadIdx.x] = value;
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (static_cast<int>(threadIdx.x) < width) shared[threadIdx.x] += shared[threadIdx.x + width];
    __syncthreads();
  }
  const double total = shared[0];
  __syncthreads();  // shared may be reused by the caller
  return total;
}

}  // namespace metatape::kernels::cuda
