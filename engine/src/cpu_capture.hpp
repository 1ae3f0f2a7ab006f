// Internal: the state of a CPU step capture on this thread (CapturedStep on
// the CPU, captured_step.cpp). While one is active, every tensor storage an
// op touches (Tensor::data, raw_data) or allocates is held for the capture's
// lifetime, so that the recorded kernel calls find their buffers at replay,
// and its bytes are registered as memory the recording may point into.
//
// The capture's private pool: a block allocated during the capture whose
// tensors are all gone is handed to the capture's next allocation of a
// similar size, as the thread's pool would, so that the step keeps about its
// eager peak rather than every intermediate. The recording checks that this
// was sound (KernelRecording::reuse_valid); the capture is redone without
// reuse when it was not.
#pragma once

#include <unordered_set>
#include <vector>

#include "kernels/cpu/recording.hpp"
#include "metatape/tensor.hpp"

namespace metatape::detail {

class CpuCapture {
 public:
  explicit CpuCapture(bool reuse) : reuse_(reuse) {}
  CpuCapture(const CpuCapture&) = delete;
  CpuCapture& operator=(const CpuCapture&) = delete;
  ~CpuCapture();

  // Holds `storage` (once) and registers its bytes with the recording.
  // Throws DeviceError for a device storage: its kernels are not recorded.
  void access(Storage* storage);
  // A storage allocated during the capture: held, registered, and a
  // candidate for reuse once its tensors are gone.
  void adopt(Storage* storage);
  // A held block of this capture of at least `bytes` (and not much more)
  // that no tensor uses any more, with a reference for the caller; or null.
  Storage* reuse(std::size_t bytes);
  // Whether the capture holds a reference to `storage`.
  bool holds(Storage* storage) const { return held_.contains(storage); }

  kernels::cpu::KernelRecording recording;

 private:
  std::unordered_set<Storage*> held_;
  std::vector<Storage*> owned_;  // allocated during the capture, in order
  bool reuse_;
};

// This thread's active capture, or null (the usual case).
inline thread_local CpuCapture* active_cpu_capture = nullptr;

// Throws DeviceError saying that `what` cannot be captured, when a CPU
// capture is active on this thread: host computation that is not a kernel
// call (random numbers) or a host read of values (item, to_vector), which a
// replay would not redo.
void refuse_in_cpu_capture(const char* what);

}  // namespace metatape::detail
