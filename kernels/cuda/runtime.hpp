// The CUDA runtime as the engine sees it: device discovery, device memory
// from a caching pool, copies, and this thread's stream. Plain C++ (no CUDA
// types), so engine files include it without nvcc. Every CUDA call's status
// is checked; a failure throws KernelError (kernels/error.hpp) naming the
// call, which the engine turns into its DeviceError.
//
// Two definitions: the real ones in runtime.cu, inside the CUDA backend
// library (libmetatape-cuda.so), and, in libmetatape, a facade that loads
// that library on first use and forwards through its table (table.hpp;
// engine/src/cuda_loader.cpp). Through the facade, a process that never
// asks for a CUDA device never maps a CUDA library, and where the library,
// the driver or the runtime is missing, usable_devices says why and every
// other call throws KernelError with that reason.
//
// Threads: each thread has its own stream, and device memory released on a
// thread is reused by that thread's stream only. Nothing orders one thread's
// stream after another's, so a device tensor made on one thread may be used
// on another only after synchronize() on the thread that made it.
#pragma once

#include <cstddef>
#include <string>

namespace metatape::kernels::cuda {

// The number of devices this process can use: 0, with the reason, when
// there is no driver, no device, or the runtime refuses. Never throws.
int usable_devices(std::string* reason);
// The runtime and driver versions and one line per device (name, memory,
// compute capability), for `metatape info`. Throws KernelError if the
// runtime refuses.
std::string describe_devices();

// Device memory from this thread's caching pool: blocks are rounded up to
// size classes and kept when released, so a training loop's steady state
// calls neither cudaMalloc nor cudaFree. `capacity` receives the block's
// usable size and `owner` the pool, both to be handed back on release.
void* device_allocate(std::size_t bytes, std::size_t* capacity, void** owner);
// Back to the pool if released on the owning thread (whose stream used it),
// else cudaFree'd; never throws.
void device_release(void* data, std::size_t capacity, void* owner) noexcept;
// cudaFree every cached block.
void release_cached_device_memory();

struct DeviceMemoryStats {
  std::size_t bytes_in_use = 0, bytes_cached = 0, peak_bytes_in_use = 0, cuda_mallocs = 0;
};
DeviceMemoryStats device_memory_stats();
void reset_device_peak();

// Copies on this thread's stream. Those that touch host memory wait for the
// copy to finish, so the host buffer may be reused as soon as they return.
void copy_host_to_device(void* dst, const void* src, std::size_t bytes);
void copy_device_to_host(void* dst, const void* src, std::size_t bytes);
void copy_device_to_device(void* dst, const void* src, std::size_t bytes);
// Waits for all work on this thread's stream.
void synchronize();

// --- CUDA graphs --------------------------------------------------------
// The work one thread queues on its stream between begin() and end(),
// recorded as a graph and replayed by replay(). While capturing, kernels are
// recorded, not run, and device memory comes from the graph's own pool: its
// blocks serve nothing else while the graph exists, since every replay writes
// them. Memory released during the capture is kept until the graph goes (its
// kernels may read it). A host read of device memory cannot be captured (it
// would wait for kernels that have not run) and makes end() throw.
class StreamGraph {
 public:
  StreamGraph();
  ~StreamGraph();  // not while this thread captures another graph
  StreamGraph(const StreamGraph&) = delete;
  StreamGraph& operator=(const StreamGraph&) = delete;

  void begin();           // throws KernelError if this thread is already capturing
  void end();             // throws KernelError naming what could not be captured
  void abort() noexcept;  // ends a capture that failed part-way, discarding it
  void replay();          // on this thread's stream, after the work queued before it
  bool ready() const;     // end() succeeded

 private:
  struct State;
  State* state_;
};

// Whether this thread is capturing a graph now.
bool capturing();

// TF32 for float32 GEMMs (faster on Ampere and later, about 1e-3 relative
// error). Off unless asked for.
void set_allow_tf32(bool allow);
bool allow_tf32();

}  // namespace metatape::kernels::cuda
