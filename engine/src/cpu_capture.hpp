// Internal: the state of a CPU step capture on this thread (CapturedStep on
// the CPU, captured_step.cpp). While one is active, every tensor storage an
// op touches (Tensor::data, raw_data) is held for the capture's lifetime, so
// that the recorded kernel calls find their buffers at replay, and its bytes
// are registered as memory the recording may point into.
#pragma once

#include <unordered_set>

#include "kernels/cpu/recording.hpp"
#include "metatape/tensor.hpp"

namespace metatape::detail {

class CpuCapture {
 public:
  CpuCapture() = default;
  CpuCapture(const CpuCapture&) = delete;
  CpuCapture& operator=(const CpuCapture&) = delete;
  ~CpuCapture();

  // Holds `storage` (once) and registers its bytes with the recording.
  // Throws DeviceError for a device storage: its kernels are not recorded.
  void access(Storage* storage);

  kernels::cpu::KernelRecording recording;

 private:
  std::unordered_set<Storage*> held_;
};

// This thread's active capture, or null (the usual case).
inline thread_local CpuCapture* active_cpu_capture = nullptr;

// Throws DeviceError saying that `what` cannot be captured, when a CPU
// capture is active on this thread: host computation that is not a kernel
// call (random numbers) or a host read of values (item, to_vector), which a
// replay would not redo.
void refuse_in_cpu_capture(const char* what);

}  // namespace metatape::detail
