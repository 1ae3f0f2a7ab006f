// The CPU kernel table: every kernel of kernels/kernel_list.def as a static
// member, so that an op's forward is written once against a table and runs on
// the CPU (this struct) or the GPU (kernels/cuda/backend.hpp's CudaKernels,
// expanded from the same list).
//
// Each member also feeds the thread's KernelRecording when one is active
// (recording.hpp): the one test of a thread-local pointer per call otherwise.
#pragma once

#include <algorithm>
#include <array>
#include <string>

#include "kernels.hpp"
#include "recording.hpp"

// The recording forwarder: the call with its arguments copied (a reference
// parameter such as ConvShape is captured by value).
#define METATAPE_RECORDING_KERNEL_CPU(kind, ret, name, params, args)                                               \
  METATAPE_KERNEL_HEAD(kind) static ret name params {                                                              \
    if (::metatape::kernels::cpu::KernelRecording* recording = ::metatape::kernels::cpu::detail::active_recording) \
        [[unlikely]]                                                                                               \
      return ::metatape::kernels::cpu::detail::record_kernel<ret>(                                                 \
          recording, #name, [=] { return ::metatape::kernels::cpu::name args; } METATAPE_KERNEL_COMMA_ARGS args);  \
    return ::metatape::kernels::cpu::name args;                                                                    \
  }
// (a, b) -> , a, b
#define METATAPE_KERNEL_COMMA_ARGS(...) , __VA_ARGS__

namespace metatape::kernels::cpu {

namespace detail {

struct CpuKernelList {
#define METATAPE_KERNEL METATAPE_RECORDING_KERNEL_CPU
#include "../kernel_list.def"
#undef METATAPE_KERNEL
};

// A host array of `rank` dimensions or strides, kept by value in a recorded
// call (rank <= 8; the engine's limit is lower).
struct HostArray {
  std::array<std::int64_t, 8> values{};
  int rank = 0;
  HostArray(int rank_, const std::int64_t* p) : rank(rank_) {
    if (rank < 0 || rank > 8) throw KernelError("CPU kernel recording: rank " + std::to_string(rank) + " > 8");
    std::copy(p, p + rank, values.begin());
  }
  // "[25, 10, 40]", for the recording's description of the call.
  std::string describe() const {
    std::string text = "[";
    for (int i = 0; i < rank; ++i) text += (i ? ", " : "") + std::to_string(values[static_cast<std::size_t>(i)]);
    return text + "]";
  }
};

}  // namespace detail

// The kernels that take host arrays (shapes, strides) hide the list's
// forwarders with ones that copy the arrays into the recorded call.
struct CpuKernels : detail::CpuKernelList {
  template <class T>
  static void binary(BinaryOp op, int rank, const std::int64_t* shape, const T* a, const std::int64_t* a_strides,
                     const T* b, const std::int64_t* b_strides, T* out) {
    if (KernelRecording* recording = detail::active_recording) [[unlikely]] {
      const detail::HostArray s(rank, shape), sa(rank, a_strides), sb(rank, b_strides);
      return detail::record_kernel<void>(
          recording, "binary",
          [=] { cpu::binary(op, rank, s.values.data(), a, sa.values.data(), b, sb.values.data(), out); }, op, s, a, b,
          out);
    }
    cpu::binary(op, rank, shape, a, a_strides, b, b_strides, out);
  }

  template <class T>
  static void sum_to(int rank, const std::int64_t* in_shape, const T* x, const std::int64_t* out_shape, T* out) {
    if (KernelRecording* recording = detail::active_recording) [[unlikely]] {
      const detail::HostArray si(rank, in_shape), so(rank, out_shape);
      return detail::record_kernel<void>(
          recording, "sum_to", [=] { cpu::sum_to(rank, si.values.data(), x, so.values.data(), out); }, si, so, x, out);
    }
    cpu::sum_to(rank, in_shape, x, out_shape, out);
  }

  template <class T>
  static void strided_copy(int rank, const std::int64_t* shape, const T* x, const std::int64_t* x_strides, T* out) {
    if (KernelRecording* recording = detail::active_recording) [[unlikely]] {
      const detail::HostArray s(rank, shape), sx(rank, x_strides);
      return detail::record_kernel<void>(
          recording, "strided_copy", [=] { cpu::strided_copy(rank, s.values.data(), x, sx.values.data(), out); }, s, x,
          out);
    }
    cpu::strided_copy(rank, shape, x, x_strides, out);
  }
};

}  // namespace metatape::kernels::cpu
