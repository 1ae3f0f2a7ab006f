// A static step captured once and replayed: for loops whose every iteration
// runs the same kernels on tensors of the same shapes, such as a
// meta-gradient step, where launching hundreds of small kernels one by one
// (and, on the CPU, recording the tape, checking shapes, allocating) costs
// more than the arithmetic. On the GPU the step is captured as a CUDA graph
// (as torch.cuda.graphs' make_graphed_callables, for a function that does
// its own backward); on the CPU as the list of its CPU kernel calls with
// their arguments, replayed on the same buffers.
//
//   CapturedStep step(f, example_inputs, device);  // capture (the GPU: after one warm-up call)
//   std::vector<Tensor> out = step(inputs);         // copy inputs in, replay, copy outputs out
//
// A replay computes what f would compute on the new inputs, bit for bit on
// the CPU (the same kernels, arguments and order, on this thread).
//
// What f may do. Everything f decides on the host (shapes, which kernels run,
// scalar arguments such as learning rates) is fixed at capture and replayed
// as it was; only the input values change. f must not read tensor values on
// the host to act on them (item(), to_vector(), str(), to(another device)),
// draw random numbers, use an op that acts on a status read back from its
// kernel (cholesky), or, on the CPU, replay another CapturedStep: the
// capture then fails with a DeviceError naming the call. Checks that ops make on values (label ranges in cross_entropy,
// take_along_last, index ranges) run on the example (or, on the GPU,
// warm-up) inputs and not in replays: a replay trusts its inputs. On the CPU,
// f must run its ops on this thread (the kernels' own threads are fine).
//
// Memory: the step's intermediates and outputs are kept (on the GPU, in the
// graph's private pool; on the CPU, every storage f's ops touched) until the
// CapturedStep is destroyed. A CapturedStep is used by the thread that made
// it (on the GPU, replays and copies run on this thread's stream). Nothing
// is recorded on the tape: outputs carry no gradient history.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "metatape/tensor.hpp"

namespace metatape {

class CapturedStep {
 public:
  using Function = std::function<std::vector<Tensor>(const std::vector<Tensor>& inputs)>;

  // Captures f on `device`. Inputs may be on either device; the step keeps
  // its own copy of each on `device` (same shape and dtype). Throws
  // DeviceError when f cannot be captured (or, for cuda, there is no usable
  // GPU), ValueError for undefined tensors or no function.
  CapturedStep(Function f, const std::vector<Tensor>& example_inputs, Device device = Device::cuda);
  ~CapturedStep();
  CapturedStep(const CapturedStep&) = delete;
  CapturedStep& operator=(const CapturedStep&) = delete;

  // Copies `inputs` in (they must match the examples' count, shapes and
  // dtypes: ShapeError / DTypeError / ValueError name the first that does
  // not), replays the step and returns copies of its outputs, on the
  // step's device.
  std::vector<Tensor> operator()(const std::vector<Tensor>& inputs);

  std::int64_t replays() const;
  Device device() const;

  // Where a CPU step's time goes: every recorded kernel call, in call order,
  // with its scalar arguments (sizes, flags, op codes; shapes for the
  // broadcasting kernels) and the median of its time over `rounds` replays
  // in which each call is timed on its own. The replays run on the inputs of
  // the last call, and leave the outputs as a replay does. ValueError for
  // rounds < 1; DeviceError for a step captured on the GPU (a CUDA graph
  // runs as one launch).
  struct KernelTime {
    const char* kernel;     // the kernel's name in the CPU kernel table
    std::string arguments;  // e.g. "false, true, 10, 40, 40, 400, 1600, 400, 25" for gemm_batched
    double microseconds;
  };
  std::vector<KernelTime> kernel_times(int rounds = 11) const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace metatape
