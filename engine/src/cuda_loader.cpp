// Loading the CUDA backend library on first use, and the facade of
// kernels/cuda/runtime.hpp that the engine calls: each function forwards
// through the table the library hands over (kernels/cuda/table.hpp), so
// libmetatape links no CUDA library and the engine files that use the
// runtime (storage, tensor, captured_step, threads) are the same whether the
// runtime is linked or loaded. Every way loading can fail becomes a reason:
// usable_devices reports it, and every other call throws KernelError with it
// (DeviceError in the engine).
#include "metatape/cuda_backend.hpp"

#ifdef METATAPE_CUDA

#include <dlfcn.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/cuda/backend.hpp"
#include "kernels/cuda/runtime.hpp"
#include "kernels/error.hpp"

namespace metatape {
namespace {

namespace cuda = kernels::cuda;

constexpr const char* kDriver = "libcuda.so.1";
constexpr const char* kLibraryName = "libmetatape-cuda.so";

struct Loaded {
  bool driver_found = false;
  std::string library;
  std::string reason;
  const cuda::CudaBackendTable* table = nullptr;
};

// Set once the library is loaded and checked; read without loading it
// (capturing, device_release, the memory figures).
std::atomic<const cuda::CudaBackendTable*> loaded_table{nullptr};
std::atomic<bool> tf32_requested{false};

std::string last_dl_error() {
  const char* e = dlerror();
  return e ? e : "unknown error";
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

// Where to look, in order: $METATAPE_CUDA_BACKEND alone if set; else the
// folder of this libmetatape, then the loader's search path (bare name).
std::vector<std::string> candidates() {
  if (const char* chosen = std::getenv("METATAPE_CUDA_BACKEND"); chosen && *chosen) return {chosen};
  std::vector<std::string> out;
  Dl_info self{};
  if (dladdr(reinterpret_cast<const void*>(&cuda_backend_status), &self) && self.dli_fname) {
    // Resolved, so that info names the file plainly (not tools/../engine/...).
    char* resolved = realpath(self.dli_fname, nullptr);
    const std::string path = resolved ? resolved : self.dli_fname;
    std::free(resolved);
    const auto slash = path.rfind('/');
    out.push_back((slash == std::string::npos ? std::string(".") : path.substr(0, slash)) + "/" + kLibraryName);
  }
  out.push_back(kLibraryName);
  return out;
}

// dlopen of the first candidate that exists (a bare name: that the loader
// finds); null with `why` set if none loads.
void* open_library(std::string* path, std::string* why) {
  const std::vector<std::string> paths = candidates();
  std::string missing;  // the places looked in that had no file
  for (std::size_t i = 0; i < paths.size(); ++i) {
    const bool bare = paths[i].find('/') == std::string::npos;
    if (!bare && !file_exists(paths[i]) && i + 1 < paths.size()) {
      missing += "not at " + paths[i] + "; ";
      continue;
    }
    *path = paths[i];
    if (void* handle = dlopen(paths[i].c_str(), RTLD_NOW | RTLD_LOCAL)) return handle;
    *why = bare ? "cannot load the CUDA backend library (" + missing +
                      "by the loader's search path: " + last_dl_error() + ")"
                : "cannot load the CUDA backend library " + paths[i] + ": " + last_dl_error();
    // A file that is there but does not load (a missing CUDA runtime) is the
    // reason to report; only a missing file sends us on to the next place.
    if (!bare) return nullptr;
  }
  return nullptr;
}

// The library's table, checked against this build's; null with `why` set.
const cuda::CudaBackendTable* table_of(void* handle, const std::string& path, std::string* why) {
  using Entry = const cuda::CudaBackendTable* (*)();
  const auto entry = reinterpret_cast<Entry>(dlsym(handle, cuda::kBackendEntryPoint));
  if (!entry) {
    *why = path + " is not a metatape CUDA backend (no symbol " + cuda::kBackendEntryPoint + ")";
    return nullptr;
  }
  const cuda::CudaBackendTable* table = entry();
  if (!table || table->fingerprint != cuda::kBackendFingerprint || table->size != sizeof(cuda::CudaBackendTable)) {
    char numbers[96];
    std::snprintf(numbers, sizeof numbers, "fingerprint %016llx, this libmetatape expects %016llx",
                  table ? static_cast<unsigned long long>(table->fingerprint) : 0ull,
                  static_cast<unsigned long long>(cuda::kBackendFingerprint));
    *why = "version mismatch: " + path + " was built from another version of metatape (" + numbers + ")";
    return nullptr;
  }
  return table;
}

Loaded load() {
  Loaded out;
  dlerror();
  // The driver first: without it the runtime (hundreds of MB of cuBLAS and
  // cuSOLVER mapped) could do nothing, so it is not loaded at all.
  void* driver = dlopen(kDriver, RTLD_NOW | RTLD_LOCAL);
  if (!driver) {
    out.reason = std::string("no CUDA driver (") + last_dl_error() + ")";
    return out;
  }
  out.driver_found = true;
  void* handle = open_library(&out.library, &out.reason);
  if (!handle) {
    if (out.reason.empty()) out.reason = std::string("the CUDA backend library ") + kLibraryName + " was not found";
    dlclose(driver);
    return out;
  }
  out.table = table_of(handle, out.library, &out.reason);
  if (!out.table) {
    dlclose(handle);
    dlclose(driver);
    return out;
  }
  // Both stay loaded for the life of the process: device memory and
  // streams outlive any one call.
  loaded_table.store(out.table, std::memory_order_release);
  out.table->set_allow_tf32(tf32_requested.load());
  return out;
}

const Loaded& loaded() {
  static const Loaded result = load();
  return result;
}

const cuda::CudaBackendTable* table_if_loaded() { return loaded_table.load(std::memory_order_acquire); }

}  // namespace

CudaBackendStatus cuda_backend_status() {
  CudaBackendStatus s;
  s.built = true;
  const Loaded& l = loaded();
  s.driver_found = l.driver_found;
  s.library_loaded = l.table != nullptr;
  s.library = l.library;
  s.reason = l.reason;
  if (!l.table) return s;
  s.devices = cuda::usable_devices(&s.reason);
  try {
    s.runtime = l.table->describe_devices();
  } catch (const std::exception& e) {
    s.runtime = std::string("the runtime refused to describe its devices: ") + e.what();
  }
  return s;
}

namespace kernels::cuda {

const CudaBackendTable& backend_table() {
  const Loaded& l = loaded();
  if (!l.table) throw KernelError("cuda not usable: " + l.reason);
  return *l.table;
}

int usable_devices(std::string* reason) {
  const Loaded& l = loaded();
  if (!l.table) {
    if (reason) *reason = l.reason;
    return 0;
  }
  try {
    return l.table->usable_devices(reason);
  } catch (const std::exception& e) {
    if (reason) *reason = e.what();
    return 0;
  }
}

std::string describe_devices() { return backend_table().describe_devices(); }

void* device_allocate(std::size_t bytes, std::size_t* capacity, void** owner) {
  return backend_table().device_allocate(bytes, capacity, owner);
}

// Device memory exists only once the library is loaded.
void device_release(void* data, std::size_t capacity, void* owner) noexcept {
  if (const CudaBackendTable* t = table_if_loaded()) t->device_release(data, capacity, owner);
}

// The memory figures and the cache: nothing to do, and nothing loaded, in a
// process that has not used the GPU.
void release_cached_device_memory() {
  if (const CudaBackendTable* t = table_if_loaded()) t->release_cached_device_memory();
}
DeviceMemoryStats device_memory_stats() {
  const CudaBackendTable* t = table_if_loaded();
  return t ? t->device_memory_stats() : DeviceMemoryStats{};
}
void reset_device_peak() {
  if (const CudaBackendTable* t = table_if_loaded()) t->reset_device_peak();
}

void copy_host_to_device(void* dst, const void* src, std::size_t bytes) {
  backend_table().copy_host_to_device(dst, src, bytes);
}
void copy_device_to_host(void* dst, const void* src, std::size_t bytes) {
  backend_table().copy_device_to_host(dst, src, bytes);
}
void copy_device_to_device(void* dst, const void* src, std::size_t bytes) {
  backend_table().copy_device_to_device(dst, src, bytes);
}
void synchronize() { backend_table().synchronize(); }

// The library's graph, made on begin(): a CapturedStep builds its
// StreamGraph before it checks that a GPU is there.
StreamGraph::StreamGraph() : state_(nullptr) {}
StreamGraph::~StreamGraph() {
  if (state_) table_if_loaded()->graph_destroy(state_);
}
void StreamGraph::begin() {
  const CudaBackendTable& t = backend_table();
  if (!state_) state_ = static_cast<State*>(t.graph_create());
  t.graph_begin(state_);
}
void StreamGraph::end() {
  if (!state_) throw KernelError("StreamGraph::end: no capture is in progress");
  backend_table().graph_end(state_);
}
void StreamGraph::abort() noexcept {
  if (state_) table_if_loaded()->graph_abort(state_);
}
void StreamGraph::replay() {
  if (!state_) throw KernelError("StreamGraph::replay: no graph has been captured");
  backend_table().graph_replay(state_);
}
bool StreamGraph::ready() const { return state_ && table_if_loaded()->graph_ready(state_); }

bool capturing() {
  const CudaBackendTable* t = table_if_loaded();
  return t && t->capturing();
}

// Remembered here, so that asking for TF32 does not load the library; handed
// on when it is loaded.
void set_allow_tf32(bool allow) {
  tf32_requested.store(allow);
  if (const CudaBackendTable* t = table_if_loaded()) t->set_allow_tf32(allow);
}
bool allow_tf32() { return tf32_requested.load(); }

}  // namespace kernels::cuda
}  // namespace metatape

#else  // a build without the CUDA backend

namespace metatape {

CudaBackendStatus cuda_backend_status() {
  CudaBackendStatus s;
  s.reason = "this build of metatape has no CUDA backend (nvcc was not found when it was configured)";
  return s;
}

}  // namespace metatape

#endif
