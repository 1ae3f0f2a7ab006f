// This thread's cuSOLVER handle, shared by the factorisations (cholesky.cu,
// eigh.cu), kept as runtime.cu keeps the cuBLAS one.
#include <string>
#include <thread>

#include "common.cuh"

namespace metatape::kernels::cuda {

void check(cusolverStatus_t status, const char* call) {
  if (status != CUSOLVER_STATUS_SUCCESS)
    throw KernelError(std::string(call) + " failed: cuSOLVER status " + std::to_string(static_cast<int>(status)));
}

namespace {

// Created on first use; destroyed when a thread other than the main one
// ends (at process exit the driver may already be unloading).
const std::thread::id main_thread = std::this_thread::get_id();
struct SolverHandle {
  cusolverDnHandle_t handle = nullptr;
  ~SolverHandle() {
    if (handle && std::this_thread::get_id() != main_thread) cusolverDnDestroy(handle);
  }
};
thread_local SolverHandle solver_handle;

}  // namespace

cusolverDnHandle_t solver() {
  if (!solver_handle.handle) check(cusolverDnCreate(&solver_handle.handle), "cusolverDnCreate");
  // On every call: the thread's stream may have been made anew since.
  check(cusolverDnSetStream(solver_handle.handle, stream()), "cusolverDnSetStream");
  return solver_handle.handle;
}

}  // namespace metatape::kernels::cuda
