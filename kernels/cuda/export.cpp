// The CUDA backend library's one exported symbol: the table of its runtime
// functions and kernel instantiations (table.hpp), filled from the same
// lists the engine reads it by. Everything else in the library is local to
// it (linked with --exclude-libs and hidden visibility), so the engine's
// facade functions of the same names never interpose on these.
#include <tuple>

#include "kernels.hpp"
#include "runtime.hpp"
#include "table.hpp"

namespace metatape::kernels::cuda {
namespace {

StreamGraph* as_graph(void* graph) { return static_cast<StreamGraph*>(graph); }

void fill_runtime(CudaBackendTable& t) {
  t.usable_devices = &usable_devices;
  t.describe_devices = &describe_devices;
  t.device_allocate = &device_allocate;
  t.device_release = &device_release;
  t.release_cached_device_memory = &release_cached_device_memory;
  t.device_memory_stats = &device_memory_stats;
  t.reset_device_peak = &reset_device_peak;
  t.copy_host_to_device = &copy_host_to_device;
  t.copy_device_to_host = &copy_device_to_host;
  t.copy_device_to_device = &copy_device_to_device;
  t.synchronize = &synchronize;
  t.graph_create = []() -> void* { return new StreamGraph; };
  t.graph_destroy = [](void* graph) noexcept { delete as_graph(graph); };
  t.graph_begin = [](void* graph) { as_graph(graph)->begin(); };
  t.graph_end = [](void* graph) { as_graph(graph)->end(); };
  t.graph_abort = [](void* graph) noexcept { as_graph(graph)->abort(); };
  t.graph_replay = [](void* graph) { as_graph(graph)->replay(); };
  t.graph_ready = [](const void* graph) { return static_cast<const StreamGraph*>(graph)->ready(); };
  t.capturing = &capturing;
  t.set_allow_tf32 = &set_allow_tf32;
}

// Each slot takes the instantiation its pointer type names (the template
// arguments are deduced from it); one the .cu files lack fails to link.
void fill_kernels(KernelPointers& k) {
#define METATAPE_KERNEL(kind, ret, name, params, args) \
  std::apply([](auto&... slot) { ((slot = &::metatape::kernels::cuda::name), ...); }, k.name.pointers);
#include "../kernel_list.def"
#undef METATAPE_KERNEL
}

CudaBackendTable make_table() {
  CudaBackendTable t{};
  t.fingerprint = kBackendFingerprint;
  t.size = sizeof(CudaBackendTable);
  fill_runtime(t);
  fill_kernels(t.kernels);
  return t;
}

}  // namespace
}  // namespace metatape::kernels::cuda

extern "C" __attribute__((visibility("default"))) const metatape::kernels::cuda::CudaBackendTable*
METATAPE_CUDA_BACKEND_ENTRY() {
  static const metatape::kernels::cuda::CudaBackendTable table = metatape::kernels::cuda::make_table();
  return &table;
}
