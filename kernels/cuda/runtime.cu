// The CUDA runtime side of the backend: device discovery, one stream and one
// cuBLAS handle per thread (an engine context), the caching device
// allocator, copies.
#include <atomic>
#include <cstdio>
#include <cstdint>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "common.cuh"
#include "kernels/size_classes.hpp"
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

// cudaFree, its failure (the runtime unloading, an earlier kernel's fault)
// cleared so that it is not reported as the next launch's.
void free_quietly(void* p) noexcept {
  if (cudaFree(p) != cudaSuccess) cudaGetLastError();
}

// Threads that end before the process give back what they hold on the GPU.
// The main thread's is left to the driver: at process exit the runtime may
// already be unloading, and destroying things then fails or hangs.
const std::thread::id main_thread = std::this_thread::get_id();

// The stream, cuBLAS handle and cuBLAS workspace of one thread.
struct Context {
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  void* blas_workspace = nullptr;
  bool tf32_applied = false;
  ~Context() {
    if (std::this_thread::get_id() == main_thread) return;
    if (blas) cublasDestroy(blas);
    if (blas_workspace) free_quietly(blas_workspace);
    if (stream && cudaStreamDestroy(stream) != cudaSuccess) cudaGetLastError();
  }
};
thread_local Context context;
constexpr std::size_t kBlasWorkspaceBytes = std::size_t{32} << 20;
std::atomic<bool> tf32_allowed{false};

// --- the caching allocator --------------------------------------------------
// Size classes as in the CPU pool (four per power of two, at least 512 bytes);
// a released block waits in its class for the next request of that class or
// of one of the four below. Each thread keeps its own cache, since its blocks
// are used by its own stream: reusing one on another stream could race. A
// block released on another thread is cudaFree'd, which synchronises. A graph
// being captured draws from a private pool of its own (GraphPool below).

constexpr int kClasses = 128;

// 512 bytes at least: cudaMalloc aligns to 256 and small blocks are rare here.
int size_class_of(std::size_t bytes, std::size_t* rounded) { return kernels::size_class_of<9>(bytes, rounded); }
std::size_t class_bytes(int c) { return kernels::class_bytes<9>(c); }

struct DevicePool {
  std::vector<void*> free_lists[kClasses];
  DeviceMemoryStats stats;
};
thread_local DevicePool* tls_pool = nullptr;
thread_local bool tls_pool_dead = false;

struct DevicePoolOwner {
  DevicePool pool;
  DevicePoolOwner() { tls_pool = &pool; }
  ~DevicePoolOwner();  // frees the cache, except on the main thread (see Context)
};

DevicePool* this_thread_pool() {
  if (tls_pool) return tls_pool;
  if (tls_pool_dead) return nullptr;
  thread_local DevicePoolOwner owner;
  return tls_pool;
}

void note_handed_out(DevicePool& pool, std::size_t bytes) {
  pool.stats.bytes_in_use += bytes;
  pool.stats.peak_bytes_in_use = std::max(pool.stats.peak_bytes_in_use, pool.stats.bytes_in_use);
}

// A cached block of class cls or one of the four above it, or null.
void* take_cached(DevicePool& pool, int cls, std::size_t* capacity) {
  for (int c = cls; c < std::min(cls + 5, kClasses); ++c) {
    if (pool.free_lists[c].empty()) continue;
    void* p = pool.free_lists[c].back();
    pool.free_lists[c].pop_back();
    *capacity = class_bytes(c);
    pool.stats.bytes_cached -= *capacity;
    note_handed_out(pool, *capacity);
    return p;
  }
  return nullptr;
}

// Into the cache (may throw std::bad_alloc, leaving the pool as it was).
void cache_block(DevicePool& pool, void* data, std::size_t capacity) {
  std::size_t rounded;
  pool.free_lists[size_class_of(capacity, &rounded)].push_back(data);
  pool.stats.bytes_in_use -= std::min(pool.stats.bytes_in_use, capacity);
  pool.stats.bytes_cached += capacity;
}

// cudaFree synchronises the device, so no queued kernel still uses a block.
void free_cache(DevicePool& pool) {
  for (auto& list : pool.free_lists) {
    for (void* p : list) free_quietly(p);
    list.clear();
  }
  pool.stats.bytes_cached = 0;
}

DevicePoolOwner::~DevicePoolOwner() {
  tls_pool = nullptr;
  tls_pool_dead = true;
  if (std::this_thread::get_id() != main_thread) free_cache(pool);
}

// --- the private pool of a captured graph ----------------------------------
// Its blocks are handed out only while its graph is being captured and come
// back to it when released, so no other work reuses memory that the graph's
// replays write. Their owner is the pool's address with the low bit set,
// which tells them apart in device_release. The pool outlives its graph until
// the last of its blocks comes back.
struct GraphPool {
  struct Kept {
    void* data;
    std::size_t capacity;
    void* owner;
  };
  std::mutex mutex;
  DevicePool cache;
  std::size_t outstanding = 0;  // blocks handed out and not yet back
  bool graph_alive = true;
  std::vector<Kept> kept;  // released during the capture by other owners
};
thread_local GraphPool* tls_capture = nullptr;  // the pool of this thread's capture

void* tagged(GraphPool* pool) { return reinterpret_cast<void*>(reinterpret_cast<std::uintptr_t>(pool) | 1u); }
GraphPool* graph_pool_of(void* owner) {
  const auto bits = reinterpret_cast<std::uintptr_t>(owner);
  return bits & 1u ? reinterpret_cast<GraphPool*>(bits & ~std::uintptr_t{1}) : nullptr;
}

// Held until the capturing graph goes: its kernels may read the block. If
// even that list cannot grow, the block leaks, which is safer than reuse.
void keep_for_capture(GraphPool& capture, void* data, std::size_t capacity, void* owner) noexcept {
  std::lock_guard lock(capture.mutex);
  try {
    capture.kept.push_back({data, capacity, owner});
  } catch (...) {
  }
}

void* graph_allocate(GraphPool& graph, int cls, std::size_t rounded, std::size_t* capacity) {
  std::lock_guard lock(graph.mutex);
  void* p = take_cached(graph.cache, cls, capacity);
  if (!p) {
    // No giving the cache back and retrying here: that would synchronise.
    check(cudaMalloc(&p, rounded), "cudaMalloc (during graph capture)");
    *capacity = rounded;
    ++graph.cache.stats.cuda_mallocs;
    note_handed_out(graph.cache, rounded);
  }
  ++graph.outstanding;
  return p;
}

void graph_release(GraphPool* graph, void* data, std::size_t capacity) noexcept {
  std::unique_lock lock(graph->mutex);
  if (graph->graph_alive) {
    try {
      cache_block(graph->cache, data, capacity);
      --graph->outstanding;
      return;
    } catch (...) {
    }
  }
  if (tls_capture) {  // cudaFree cannot run during a capture
    lock.unlock();
    keep_for_capture(*tls_capture, data, capacity, tagged(graph));
    return;
  }
  const bool last = --graph->outstanding == 0 && !graph->graph_alive;
  lock.unlock();
  free_quietly(data);
  if (last) delete graph;
}

}  // namespace

void check(cublasStatus_t status, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS) throw KernelError(std::string(call) + " failed: " + blas_status_name(status));
}

int usable_devices(std::string* reason) {
  // Asked on every device allocation, so asked of the driver once: the
  // devices a process sees do not change while it runs.
  static const auto [count, why] = [] {
    int n = 0;
    const cudaError_t status = cudaGetDeviceCount(&n);
    if (status != cudaSuccess) {
      cudaGetLastError();  // clear the error so later calls start clean
      return std::pair<int, std::string>(0, std::string("no usable CUDA device (cudaGetDeviceCount: ") +
                                                cudaGetErrorName(status) + ": " + cudaGetErrorString(status) + ")");
    }
    return std::pair<int, std::string>(n, n == 0 ? "no CUDA device is present" : "");
  }();
  if (reason && count == 0) *reason = why;
  return count;
}

std::string describe_devices() {
  // Versions are encoded as 1000 * major + 10 * minor.
  const auto version = [](int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); };
  int runtime = 0, driver = 0;
  check(cudaRuntimeGetVersion(&runtime), "cudaRuntimeGetVersion");
  check(cudaDriverGetVersion(&driver), "cudaDriverGetVersion");
  std::string out = "runtime " + version(runtime) + ", driver supports " + version(driver);
  std::string reason;
  const int count = usable_devices(&reason);
  if (count == 0) return out + "; " + reason;
  for (int d = 0; d < count; ++d) {
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, d), "cudaGetDeviceProperties");
    char line[320];
    std::snprintf(line, sizeof line, "\ndevice %d: %s, %.1f GiB, compute capability %d.%d", d, prop.name,
                  static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0), prop.major, prop.minor);
    out += line;
  }
  return out;
}

cudaStream_t stream() {
  if (!context.stream) check(cudaStreamCreateWithFlags(&context.stream, cudaStreamNonBlocking), "cudaStreamCreate");
  return context.stream;
}

cublasHandle_t blas() {
  if (!context.blas) {
    // Bound to this thread's stream, with a workspace of our own (the size
    // cuBLAS recommends for Hopper) so that no GEMM allocates one while a
    // graph is being captured. All or nothing: a failure leaves no handle.
    cublasHandle_t handle = nullptr;
    void* workspace = nullptr;
    try {
      check(cublasCreate(&handle), "cublasCreate");
      check(cublasSetStream(handle, stream()), "cublasSetStream");
      check(cudaMalloc(&workspace, kBlasWorkspaceBytes), "cudaMalloc (cuBLAS workspace)");
      check(cublasSetWorkspace(handle, workspace, kBlasWorkspaceBytes), "cublasSetWorkspace");
    } catch (...) {
      if (handle) cublasDestroy(handle);
      if (workspace) free_quietly(workspace);
      throw;
    }
    context.blas = handle;
    context.blas_workspace = workspace;
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
  if (cls >= kClasses) throw KernelError("device allocation of " + std::to_string(bytes) + " bytes is too large");
  if (GraphPool* graph = tls_capture) {
    void* p = graph_allocate(*graph, cls, rounded, capacity);
    *owner = tagged(graph);
    return p;
  }
  DevicePool* pool = this_thread_pool();
  *owner = pool;
  if (pool)
    if (void* p = take_cached(*pool, cls, capacity)) return p;
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
    note_handed_out(*pool, rounded);
  }
  return p;
}

void device_release(void* data, std::size_t capacity, void* owner) noexcept {
  if (GraphPool* graph = graph_pool_of(owner)) {
    graph_release(graph, data, capacity);
    return;
  }
  if (GraphPool* capture = tls_capture) {
    keep_for_capture(*capture, data, capacity, owner);
    return;
  }
  DevicePool* pool = tls_pool;
  if (pool && owner == pool) {
    try {
      cache_block(*pool, data, capacity);
      return;
    } catch (...) {
      pool->stats.bytes_in_use -= std::min(pool->stats.bytes_in_use, capacity);
    }
  }
  free_quietly(data);  // synchronises the device: safe whichever stream used the block
}

void release_cached_device_memory() {
  DevicePool* pool = this_thread_pool();
  if (!pool || tls_capture) return;  // during a capture nothing may synchronise
  // Blocks in the cache may still be read by queued work of this stream.
  if (context.stream && cudaStreamSynchronize(context.stream) != cudaSuccess) cudaGetLastError();
  free_cache(*pool);
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

// --- CUDA graphs ------------------------------------------------------------

struct StreamGraph::State {
  GraphPool* pool = nullptr;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  bool capturing = false;
};

StreamGraph::StreamGraph() : state_(new State) {}

StreamGraph::~StreamGraph() {
  abort();
  if (state_->exec) cudaGraphExecDestroy(state_->exec);
  if (state_->graph) cudaGraphDestroy(state_->graph);
  if (GraphPool* pool = state_->pool) {
    std::vector<GraphPool::Kept> kept;
    bool last = false;
    {
      std::lock_guard lock(pool->mutex);
      pool->graph_alive = false;
      kept.swap(pool->kept);
      free_cache(pool->cache);  // waits for replays still queued
      last = pool->outstanding == 0;
    }
    for (const GraphPool::Kept& k : kept) device_release(k.data, k.capacity, k.owner);
    if (last) delete pool;
  }
  delete state_;
}

void StreamGraph::begin() {
  if (tls_capture) throw KernelError("StreamGraph::begin: this thread is already capturing a graph");
  if (state_->pool) throw KernelError("StreamGraph::begin: this graph has been captured already");
  blas();  // the stream, cuBLAS handle and workspace must exist first: creating them cannot be captured
  state_->pool = new GraphPool;
  // Relaxed: the allocator may cudaMalloc for the graph's pool mid-capture,
  // which the stricter modes refuse. Host reads still fail: they synchronise
  // the capturing stream.
  check(cudaStreamBeginCapture(stream(), cudaStreamCaptureModeRelaxed), "cudaStreamBeginCapture");
  tls_capture = state_->pool;
  state_->capturing = true;
}

void StreamGraph::end() {
  if (!state_->capturing) throw KernelError("StreamGraph::end: no capture is in progress");
  tls_capture = nullptr;
  state_->capturing = false;
  cudaGraph_t graph = nullptr;
  const cudaError_t status = cudaStreamEndCapture(stream(), &graph);
  if (status != cudaSuccess) {
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    throw KernelError(std::string("cudaStreamEndCapture failed: ") + cudaGetErrorName(status) + ": " +
                      cudaGetErrorString(status) +
                      " (the captured work did something a graph cannot hold, such as reading device memory on "
                      "the host)");
  }
  state_->graph = graph;
  check(cudaGraphInstantiate(&state_->exec, graph, 0), "cudaGraphInstantiate");
}

void StreamGraph::abort() noexcept {
  if (!state_->capturing) return;
  tls_capture = nullptr;
  state_->capturing = false;
  cudaGraph_t graph = nullptr;
  cudaStreamEndCapture(context.stream, &graph);
  if (graph) cudaGraphDestroy(graph);
  cudaGetLastError();  // the capture's failure is not the next call's
}

void StreamGraph::replay() {
  if (!state_->exec) throw KernelError("StreamGraph::replay: no graph has been captured");
  check(cudaGraphLaunch(state_->exec, stream()), "cudaGraphLaunch");
}

bool StreamGraph::ready() const { return state_->exec != nullptr; }

bool capturing() { return tls_capture != nullptr; }

void set_allow_tf32(bool allow) { tf32_allowed.store(allow, std::memory_order_relaxed); }
bool allow_tf32() { return tf32_allowed.load(std::memory_order_relaxed); }

}  // namespace metatape::kernels::cuda
