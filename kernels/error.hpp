// What the kernels throw when the device refuses: a failed CUDA or cuBLAS
// call, a device allocation too large for the pool, a CUDA graph used out of
// order. The message names the call and the runtime's reason. The kernels
// know nothing of the engine above them: the engine rethrows this as its own
// DeviceError, with the same message, where it calls in
// (engine/src/backend.hpp, on_device). The CPU kernels' computations throw
// nothing of their own (their inputs are validated by the engine); the CPU
// table throws this when a call cannot be recorded for a replay
// (cpu/recording.hpp).
#pragma once

#include <stdexcept>

namespace metatape::kernels {

class KernelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace metatape::kernels
