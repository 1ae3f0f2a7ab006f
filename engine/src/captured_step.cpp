#include "metatape/captured_step.hpp"

#include <string>

#include "backend.hpp"
#include "metatape/error.hpp"
#ifdef METATAPE_CUDA
#include "kernels/cuda/runtime.hpp"
#endif

namespace metatape {

#ifdef METATAPE_CUDA

namespace {

std::string describe(const Tensor& t) { return std::string(dtype_name(t.dtype())) + " " + t.shape().str(); }

// Overwrites the values of `destination`, a step's own input buffer, with
// those of `source` (either device). The one place values change behind a
// handle: the buffers never leave the CapturedStep.
void copy_values(const Tensor& source, Tensor& destination) {
  const std::size_t bytes = static_cast<std::size_t>(source.numel()) * dtype_size(source.dtype());
  detail::on_device([&] {
    if (source.device() == Device::cpu)
      kernels::cuda::copy_host_to_device(destination.raw_data(), source.raw_data(), bytes);
    else
      kernels::cuda::copy_device_to_device(destination.raw_data(), source.raw_data(), bytes);
  });
}

// A new GPU tensor with the values of x (any dtype, either device).
Tensor gpu_copy(const Tensor& x) {
  Tensor out = empty(x.shape(), x.dtype(), Device::cuda);
  copy_values(x, out);
  return out;
}

}  // namespace

struct CapturedStep::State {
  std::vector<Tensor> inputs;   // the graph reads these buffers
  std::vector<Tensor> outputs;  // and writes these (in its private pool)
  kernels::cuda::StreamGraph graph;
  std::int64_t replays = 0;

  ~State() {
    // The outputs go back to the graph's pool before the graph goes.
    outputs.clear();
  }
};

CapturedStep::CapturedStep(Function f, const std::vector<Tensor>& example_inputs) : state_(std::make_unique<State>()) {
  std::string reason;
  if (!cuda_available(&reason)) throw DeviceError("CapturedStep: a CUDA graph needs a GPU: " + reason);
  if (!f) throw ValueError("CapturedStep: no function given");
  for (std::size_t i = 0; i < example_inputs.size(); ++i) {
    const Tensor& x = example_inputs[i];
    if (!x.defined()) throw ValueError("CapturedStep: example input " + std::to_string(i) + " is undefined");
    state_->inputs.push_back(gpu_copy(x));
  }
  // Warm-up: lazy set-up (cuBLAS, workspaces, the pool's blocks) happens
  // outside the capture, and value checks run on real values.
  (void)f(state_->inputs);
  detail::on_device([&] {
    kernels::cuda::synchronize();
    state_->graph.begin();
  });
  try {
    state_->outputs = f(state_->inputs);
  } catch (const std::exception& e) {
    state_->graph.abort();
    throw DeviceError(std::string("CapturedStep: the step could not be captured as a CUDA graph: ") + e.what());
  }
  try {
    state_->graph.end();
  } catch (const std::exception& e) {
    state_->outputs.clear();
    throw DeviceError(std::string("CapturedStep: ") + e.what());
  }
  for (std::size_t i = 0; i < state_->outputs.size(); ++i) {
    const Tensor& y = state_->outputs[i];
    if (!y.defined() || y.device() != Device::cuda)
      throw DeviceError(
          "CapturedStep: output " + std::to_string(i) +
          (y.defined() ? " is on the CPU; a captured step's outputs must be computed on the GPU" : " is undefined"));
  }
}

CapturedStep::~CapturedStep() = default;

std::vector<Tensor> CapturedStep::operator()(const std::vector<Tensor>& inputs) {
  if (inputs.size() != state_->inputs.size())
    throw ValueError("CapturedStep: " + std::to_string(inputs.size()) + " inputs given, the step was captured with " +
                     std::to_string(state_->inputs.size()));
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    const Tensor& buffer = state_->inputs[i];
    if (!x.defined()) throw ValueError("CapturedStep: input " + std::to_string(i) + " is undefined");
    if (x.dtype() != buffer.dtype())
      throw DTypeError("CapturedStep: input " + std::to_string(i) + " is " + describe(x) + ", captured with " +
                       describe(buffer));
    if (x.shape() != buffer.shape())
      throw ShapeError("CapturedStep: input " + std::to_string(i) + " is " + describe(x) + ", captured with " +
                       describe(buffer));
  }
  for (std::size_t i = 0; i < inputs.size(); ++i) copy_values(inputs[i], state_->inputs[i]);
  detail::on_device([&] { state_->graph.replay(); });
  ++state_->replays;
  std::vector<Tensor> out;
  out.reserve(state_->outputs.size());
  for (const Tensor& y : state_->outputs) out.push_back(gpu_copy(y));  // the next replay overwrites y
  return out;
}

std::int64_t CapturedStep::replays() const { return state_->replays; }

#else  // no CUDA backend in this build

struct CapturedStep::State {};

CapturedStep::CapturedStep(Function, const std::vector<Tensor>&) {
  throw DeviceError(
      "CapturedStep: a CUDA graph needs the CUDA backend; this build of metatape has none (nvcc was not found "
      "when it was configured)");
}
CapturedStep::~CapturedStep() = default;
std::vector<Tensor> CapturedStep::operator()(const std::vector<Tensor>&) {
  throw DeviceError("CapturedStep: this build of metatape has no CUDA backend");
}
std::int64_t CapturedStep::replays() const { return 0; }

#endif

}  // namespace metatape
