// The CUDA runtime side of the backend: device discovery, one stream and one
// cuBLAS handle per thread (an engine context), the caching device
// allocator, copies.
#include <atomic>
#include <bit>
#include <mutex>
#include <vector>

#include "common.cuh"
#include "runtime.hpp"

namespace metatape::kernels::cuda {
namespace {

const char* blas_status_name(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "an unknown cuBLAS status";
  }
}

// The stream and cuBLAS handle of one thread. Deliberately never destroyed:
// at process exit the driver may already be gone, and destroying them then
// fails or hangs; the driver reclaims them.
struct Context {
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  bool tf32_applied = false;
};
thread_local Context context;
std::atomic<bool> tf32_allowed{false};

// --- the caching allocator --------------------------------------------------
// Size classes as in the CPU pool (four per power of two, at least 512 bytes);
// a released block waits in its class for the next request of that class or
// of one of the four below. Each thread keeps its own cache, since its blocks
// are used by its own stream: reusing one on another stream could race. A
// block released on another thread is cudaFree'd, which synchronises.

constexpr int kClasses = 128;

int size_class_of(std::size_t bytes, std::size_t* rounded) {
  if (bytes <= 512) {
    *rounded = 512;
    return 0;
  }
  const int p = std::bit_width(bytes - 1) - 1;  // 2^p < bytes <= 2^(p+1), p >= 9
  const std::size_t step = std::size_t{1} << (p - 2);
  const std::size_t sub = (bytes - (std::size_t{1} << p) + step - 1) / step;
  *rounded = (std::size_t{1} << p) + sub * step;
  return (p - 9) * 4 + static_cast<int>(sub);
}

// The bytes of class c, the inverse of size_class_of.
std::size_t class_bytes(int c) {
  if (c == 0) return 512;
  const int p = (c - 1) / 4 + 9, sub = (c - 1) % 4 + 1;
  return (std::size_t{1} << p) + static_cast<std::size_t>(sub) * (std::size_t{1} << (p - 2));
}

struct DevicePool {
  std::vector<void*> free_lists[kClasses];
  DeviceMemoryStats stats;
};
thread_local DevicePool* tls_pool = nullptr;
thread_local bool tls_pool_dead = false;

struct DevicePoolOwner {
  DevicePool pool;
  DevicePoolOwner() { tls_pool = &pool; }
  // Cached blocks are not freed at thread exit: see Context.
  ~DevicePoolOwner() {
    tls_pool = nullptr;
    tls_pool_dead = true;
  }
};

DevicePool* this_thread_pool() {
  if (tls_pool) return tls_pool;
  if (tls_pool_dead) return nullptr;
  thread_local DevicePoolOwner owner;
  return tls_pool;
}

}  // namespace

void check(cublasStatus_t status, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS) throw DeviceError(std::string(call) + " failed: " + blas_status_name(status));
}

int usable_devices(std::string* reason) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    if (reason) *reason = std::string("no usable CUDA device (cudaGetDeviceCount: ") + cudaGetErrorName(status) + ": " +
                          cudaGetErrorString(status) + ")";
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return 0;
  }
  if (count == 0 && reason) *reason = "no CUDA device is present";
  return count;
}

cudaStream_t stream() {
  if (!context.stream) check(cudaStreamCreateWithFlags(&context.stream, cudaStreamNonBlocking), "cudaStreamCreate");
  return context.stream;
}

cublasHandle_t blas() {
  if (!context.blas) {
    check(cublasCreate(&context.blas), "cublasCreate");
    check(cublasSetStream(context.blas, stream()), "cublasSetStream");
  }
  const bool tf32 = tf32_allowed.load(std::memory_order_relaxed);
  if (tf32 != context.tf32_applied) {
    check(cublasSetMathMode(context.blas, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH),
          "cublasSetMathMode");
    context.tf32_applied = tf32;
  }
  return context.blas;
}

void* device_allocate(std::size_t bytes, std::size_t* capacity, void** owner) {
  std::size_t rounded = 0;
  const int cls = size_class_of(bytes, &rounded);
  if (cls >= kClasses) throw DeviceError("device allocation of " + std::to_string(bytes) + " bytes is too large");
  DevicePool* pool = this_thread_pool();
  *owner = pool;
  for (int c = cls; pool && c < std::min(cls + 5, kClasses); ++c) {
    if (pool->free_lists[c].empty()) continue;
    void* p = pool->free_lists[c].back();
    pool->free_lists[c].pop_back();
    *capacity = class_bytes(c);
    pool->stats.bytes_cached -= *capacity;
    pool->stats.bytes_in_use += *capacity;
    pool->stats.peak_bytes_in_use = std::max(pool->stats.peak_bytes_in_use, pool->stats.bytes_in_use);
    return p;
  }
  void* p = nullptr;
  cudaError_t status = cudaMalloc(&p, rounded);
  if (status == cudaErrorMemoryAllocation && pool) {  // give the cache back and try once more
    cudaGetLastError();
    release_cached_device_memory();
    status = cudaMalloc(&p, rounded);
  }
  check(status, "cudaMalloc");
  *capacity = rounded;
  if (pool) {
    ++pool->stats.cuda_mallocs;
    pool->stats.bytes_in_use += rounded;
    pool->stats.peak_bytes_in_use = std::max(pool->stats.peak_bytes_in_use, pool->stats.bytes_in_use);
  }
  return p;
}

void device_release(void* data, std::size_t capacity, void* owner) noexcept {
  DevicePool* pool = tls_pool;
  if (pool && owner == pool) {
    pool->stats.bytes_in_use -= std::min(pool->stats.bytes_in_use, capacity);
    try {
      std::size_t rounded;
      pool->free_lists[size_class_of(capacity, &rounded)].push_back(data);
      pool->stats.bytes_cached += capacity;
      return;
    } catch (...) {
    }
  }
  cudaFree(data);  // synchronises the device: safe whichever stream used the block
}

void release_cached_device_memory() {
  DevicePool* pool = this_thread_pool();
  if (!pool) return;
  // Blocks in the cache may still be read by queued work of this stream.
  if (context.stream) cudaStreamSynchronize(context.stream);
  for (auto& list : pool->free_lists) {
    for (void* p : list) cudaFree(p);
    list.clear();
  }
  pool->stats.bytes_cached = 0;
}

DeviceMemoryStats device_memory_stats() {
  DevicePool* pool = this_thread_pool();
  return pool ? pool->stats : DeviceMemoryStats{};
}

void reset_device_peak() {
  if (DevicePool* pool = this_thread_pool()) pool->stats.peak_bytes_in_use = pool->stats.bytes_in_use;
}

void copy_host_to_device(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream()), "cudaMemcpyAsync (host to device)");
  check(cudaStreamSynchronize(stream()), "cudaStreamSynchronize");
}

void copy_device_to_host(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream()), "cudaMemcpyAsync (device to host)");
  check(cudaStreamSynchronize(stream()), "cudaStreamSynchronize");
}

void copy_device_to_device(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream()), "cudaMemcpyAsync (device to device)");
}

void synchronize() { check(cudaStreamSynchronize(stream()), "cudaStreamSynchronize"); }

void set_allow_tf32(bool allow) { tf32_allowed.store(allow, std::memory_order_relaxed); }
bool allow_tf32() { return tf32_allowed.load(std::memory_order_relaxed); }

}  // namespace metatape::kernels::cuda
