// Internal: choosing the kernel table of a tensor's device. An op's forward
// is written once, as a generic lambda over the table K (and the element type
// T), and runs on whichever device its inputs live:
//
//   dispatch(out.device(), out.dtype(), [&]<class K, class T>() {
//     K::template unary<T>(op, x.data<T>(), out.data<T>(), n, 0.0);
//   });
#pragma once

#include <cstdint>
#include <string>

#include "kernels/cpu/backend.hpp"
#include "kernels/error.hpp"
#include "metatape/error.hpp"
#include "metatape/shape.hpp"
#ifdef METATAPE_CUDA
#include "kernels/cuda/backend.hpp"
#include "kernels/cuda/runtime.hpp"
#endif

namespace metatape::detail {

// f(), with a kernel's failure (kernels::KernelError: the kernels know
// nothing of the engine) rethrown as the engine's DeviceError, same message.
// Every call from the engine into the device kernels or the CUDA runtime
// goes through here; the try costs nothing unless something throws.
template <class F>
decltype(auto) on_device(F&& f) {
  try {
    return f();
  } catch (const kernels::KernelError& e) {
    throw DeviceError(e.what());
  }
}

// f.template operator()<K>() with K the kernel table of `device`.
template <class F>
decltype(auto) with_kernels(Device device, F&& f) {
  if (device == Device::cpu) return f.template operator()<kernels::cpu::CpuKernels>();
#ifdef METATAPE_CUDA
  return on_device([&]() -> decltype(auto) { return f.template operator()<kernels::cuda::CudaKernels>(); });
#else
  throw DeviceError(std::string("this build of metatape has no kernels for device ") + device_name(device));
#endif
}

// f.template operator()<K, T>() with T float or double for `dtype`.
template <class F>
decltype(auto) dispatch(Device device, DType dtype, F&& f) {
  return with_kernels(device, [&]<class K>() -> decltype(auto) {
    if (dtype == DType::f64) return f.template operator()<K, double>();
    return f.template operator()<K, float>();
  });
}

// As dispatch, with std::int64_t for i64 too (data movement, fills).
template <class F>
decltype(auto) dispatch_any(Device device, DType dtype, F&& f) {
  return with_kernels(device, [&]<class K>() -> decltype(auto) {
    if (dtype == DType::i64) return f.template operator()<K, std::int64_t>();
    if (dtype == DType::f64) return f.template operator()<K, double>();
    return f.template operator()<K, float>();
  });
}

// Whether an op may copy values of a tensor on `device` to the host now: not
// while this thread is capturing a CUDA graph (the values do not exist yet).
inline bool host_reads_allowed(Device device) {
#ifdef METATAPE_CUDA
  return device == Device::cpu || !kernels::cuda::capturing();
#else
  (void)device;
  return true;
#endif
}

}  // namespace metatape::detail
