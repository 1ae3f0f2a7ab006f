// What the CUDA backend library (libmetatape-cuda.so) hands to the engine
// when it is loaded: one struct of function pointers, the runtime's
// (runtime.hpp) and one per kernel instantiation of kernels/kernel_list.def.
// Both sides expand it from the same headers: the library fills it
// (export.cpp), the engine calls through it (backend.hpp, and the runtime
// facade in engine/src/cuda_loader.cpp). Plain C++, no CUDA types.
//
// A library built from another kernel list, another layout of this struct
// or another ABI number is refused at load (the fingerprint below, the
// struct's first member, is compared before anything else is read).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>

#include "../kernel_table.hpp"
#include "runtime.hpp"

namespace metatape::kernels::cuda {

// Bump when a runtime entry below changes its meaning or signature, or a
// shape struct the kernels take by value (types.hpp) changes its layout (the
// kernel list's text is fingerprinted on its own). 2: ConvShape::per_task.
inline constexpr std::uint64_t kBackendAbi = 2;

// The library's only exported symbol:
//   extern "C" const CudaBackendTable* METATAPE_CUDA_BACKEND_ENTRY();
#define METATAPE_CUDA_BACKEND_ENTRY metatape_cuda_backend_table
#define METATAPE_CUDA_STRINGIFY(x) #x
#define METATAPE_CUDA_NAME_OF(x) METATAPE_CUDA_STRINGIFY(x)
inline constexpr const char* kBackendEntryPoint = METATAPE_CUDA_NAME_OF(METATAPE_CUDA_BACKEND_ENTRY);

// One function pointer per instantiation of a kernel: Fn<Ts...> for each
// TypeList<Ts...> of its kind.
template <template <class...> class Fn, class... Instances>
struct KernelSlots {
  std::tuple<typename Instances::template apply<Fn>...> pointers{};

  // Through TypeList: GCC refuses Fn<Ts...> where Fn takes no pack.
  template <class... Ts>
  typename TypeList<Ts...>::template apply<Fn> get() const {
    static_assert((std::is_same_v<TypeList<Ts...>, Instances> || ...),
                  "the CUDA backend has no instantiation of this kernel for these types: widen its kind in "
                  "kernels/kernel_list.def and instantiate it in its .cu file");
    return std::get<typename TypeList<Ts...>::template apply<Fn>>(pointers);
  }
};

// Every kernel of the list, as slots: `unary.get<float>()` is the float
// instantiation of kernels::cuda::unary.
struct KernelPointers {
#define METATAPE_KERNEL(kind, ret, name, params, args)                   \
  METATAPE_KERNEL_ALIAS_HEAD(kind) using name##_pointer = ret(*) params; \
  KernelSlots<name##_pointer, METATAPE_KERNEL_INSTANCES(kind)> name;
#include "../kernel_list.def"
#undef METATAPE_KERNEL
};

struct CudaBackendTable {
  std::uint64_t fingerprint;  // kBackendFingerprint of the library's build; first, read before the rest
  std::size_t size;           // sizeof(CudaBackendTable) there
  // The runtime (runtime.hpp). A StreamGraph is an opaque pointer here.
  int (*usable_devices)(std::string* reason);
  std::string (*describe_devices)();
  void* (*device_allocate)(std::size_t bytes, std::size_t* capacity, void** owner);
  void (*device_release)(void* data, std::size_t capacity, void* owner) noexcept;
  void (*release_cached_device_memory)();
  DeviceMemoryStats (*device_memory_stats)();
  void (*reset_device_peak)();
  void (*copy_host_to_device)(void* dst, const void* src, std::size_t bytes);
  void (*copy_device_to_host)(void* dst, const void* src, std::size_t bytes);
  void (*copy_device_to_device)(void* dst, const void* src, std::size_t bytes);
  void (*synchronize)();
  void* (*graph_create)();
  void (*graph_destroy)(void* graph) noexcept;
  void (*graph_begin)(void* graph);
  void (*graph_end)(void* graph);
  void (*graph_abort)(void* graph) noexcept;
  void (*graph_replay)(void* graph);
  bool (*graph_ready)(const void* graph);
  bool (*capturing)();
  void (*set_allow_tf32)(bool allow);
  KernelPointers kernels;
};

namespace detail {

// FNV-1a, at compile time.
constexpr std::uint64_t fnv1a(const char* text, std::uint64_t h = 1469598103934665603ull) {
  for (; *text; ++text) h = (h ^ static_cast<unsigned char>(*text)) * 1099511628211ull;
  return h;
}

// The kernel list as text: each entry's kind, name, signature and arguments.
#define METATAPE_KERNEL(...) #__VA_ARGS__ "\n"
inline constexpr const char kKernelListText[] =
#include "../kernel_list.def"
    "";
#undef METATAPE_KERNEL

}  // namespace detail

// What both sides of the loading must agree on.
inline constexpr std::uint64_t kBackendFingerprint =
    (detail::fnv1a(detail::kKernelListText) ^ kBackendAbi) * 1099511628211ull + sizeof(CudaBackendTable);

}  // namespace metatape::kernels::cuda
