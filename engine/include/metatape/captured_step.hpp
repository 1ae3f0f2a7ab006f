// A static step captured once as a CUDA graph and replayed: for loops whose
// every iteration runs the same kernels on tensors of the same shapes, such
// as a meta-gradient step, where launching hundreds of small kernels one by
// one costs more than the kernels themselves. As torch.cuda.graphs'
// make_graphed_callables, for a function that does its own backward.
//
//   CapturedStep step(f, example_inputs);    // one warm-up call of f, then the capture
//   std::vector<Tensor> out = step(inputs);  // copy inputs in, replay, copy outputs out
//
// What f may do. Everything f decides on the host (shapes, which kernels run,
// scalar arguments such as learning rates) is fixed at capture and replayed
// as it was; only the input values change. f must not read device values on
// the host (item(), to_vector(), to(Device::cpu)): the capture then fails
// with a DeviceError naming the call. Checks that ops make on values (label
// ranges in cross_entropy, take_along_last) run in the warm-up call, on the
// example inputs, and not in replays: a replay trusts its inputs.
//
// Memory: the step's intermediates and outputs live in the graph's private
// pool until the CapturedStep is destroyed. Replays, input and output copies
// run on this thread's stream; a CapturedStep is used by the thread that
// made it. Nothing is recorded on the tape: outputs carry no gradient history.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "metatape/tensor.hpp"

namespace metatape {

class CapturedStep {
 public:
  using Function = std::function<std::vector<Tensor>(const std::vector<Tensor>& inputs)>;

  // Inputs may be on the CPU or the GPU; the step keeps a GPU copy of each
  // (same shape and dtype). Throws DeviceError when there is no usable GPU
  // or f cannot be captured, ValueError for undefined tensors.
  CapturedStep(Function f, const std::vector<Tensor>& example_inputs);
  ~CapturedStep();
  CapturedStep(const CapturedStep&) = delete;
  CapturedStep& operator=(const CapturedStep&) = delete;

  // Copies `inputs` in (they must match the examples' count, shapes and
  // dtypes: ShapeError / DTypeError / ValueError name the first that does
  // not), replays the graph and returns copies of its outputs, on the GPU.
  std::vector<Tensor> operator()(const std::vector<Tensor>& inputs);

  std::int64_t replays() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace metatape
