#include "metatape/captured_step.hpp"

#include <cstring>
#include <string>

#include "backend.hpp"
#include "cpu_capture.hpp"
#include "kernels/cpu/parallel.hpp"
#include "metatape/error.hpp"
#ifdef METATAPE_CUDA
#include "kernels/cuda/runtime.hpp"
#endif

namespace metatape {

namespace detail {

CpuCapture::~CpuCapture() {
  for (Storage* s : held_)
    if (s->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) release_storage(s);
}

void CpuCapture::access(Storage* storage) {
  if (storage->device != Device::cpu)
    throw DeviceError(std::string("a tensor on ") + device_name(storage->device) +
                      " is used while a CPU step is captured: only CPU kernels are recorded");
  if (!held_.insert(storage).second) return;
  storage->refs.fetch_add(1, std::memory_order_relaxed);
  recording.add_buffer(storage->data, storage->capacity);
}

void CpuCapture::adopt(Storage* storage) {
  held_.insert(storage);
  storage->refs.fetch_add(1, std::memory_order_relaxed);
  recording.add_buffer(storage->data, storage->capacity);
  owned_.push_back(storage);
}

Storage* CpuCapture::reuse(std::size_t bytes) {
  if (!reuse_) return nullptr;
  for (Storage* s : owned_) {
    if (s->refs.load(std::memory_order_relaxed) != 1 || s->capacity < bytes || s->capacity > 2 * bytes + 64) continue;
    s->refs.fetch_add(1, std::memory_order_relaxed);
    recording.new_life(s->data);
    return s;
  }
  return nullptr;
}

void refuse_in_cpu_capture(const char* what) {
  if (active_cpu_capture)
    throw DeviceError(std::string(what) +
                      " cannot be captured for replay on the CPU: a replay runs only the recorded kernel calls");
}

}  // namespace detail

namespace {

std::string describe(const Tensor& t) { return std::string(dtype_name(t.dtype())) + " " + t.shape().str(); }

// Overwrites the values of `destination`, a step's own buffer, with those of
// `source` (same shape and dtype, either device). The one place values
// change behind a handle: the buffers never leave the CapturedStep.
void copy_values(const Tensor& source, Tensor& destination) {
  const std::size_t bytes = static_cast<std::size_t>(source.numel()) * dtype_size(source.dtype());
  if (bytes == 0) return;
  if (source.device() == Device::cpu && destination.device() == Device::cpu) {
    std::memcpy(destination.raw_data(), source.raw_data(), bytes);
    return;
  }
#ifdef METATAPE_CUDA
  detail::on_device([&] {
    if (source.device() == Device::cpu)
      kernels::cuda::copy_host_to_device(destination.raw_data(), source.raw_data(), bytes);
    else if (destination.device() == Device::cpu)
      kernels::cuda::copy_device_to_host(destination.raw_data(), source.raw_data(), bytes);
    else
      kernels::cuda::copy_device_to_device(destination.raw_data(), source.raw_data(), bytes);
  });
#endif
}

// A new tensor on `device` with the values of x (any dtype, either device).
Tensor copy_on(const Tensor& x, Device device) {
  Tensor out = empty(x.shape(), x.dtype(), device);
  copy_values(x, out);
  return out;
}

// ValueError / DTypeError / ShapeError naming the first of `given` that does
// not match the step's buffers.
void check_inputs(const std::vector<Tensor>& given, const std::vector<Tensor>& buffers) {
  if (given.size() != buffers.size())
    throw ValueError("CapturedStep: " + std::to_string(given.size()) + " inputs given, the step was captured with " +
                     std::to_string(buffers.size()));
  for (std::size_t i = 0; i < given.size(); ++i) {
    const Tensor& x = given[i];
    const Tensor& buffer = buffers[i];
    if (!x.defined()) throw ValueError("CapturedStep: input " + std::to_string(i) + " is undefined");
    if (x.dtype() != buffer.dtype())
      throw DTypeError("CapturedStep: input " + std::to_string(i) + " is " + describe(x) + ", captured with " +
                       describe(buffer));
    if (x.shape() != buffer.shape())
      throw ShapeError("CapturedStep: input " + std::to_string(i) + " is " + describe(x) + ", captured with " +
                       describe(buffer));
  }
}

// DeviceError unless every output is defined and on `device`.
void check_outputs(const std::vector<Tensor>& outputs, Device device) {
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& y = outputs[i];
    if (!y.defined()) throw DeviceError("CapturedStep: output " + std::to_string(i) + " is undefined");
    if (y.device() != device)
      throw DeviceError("CapturedStep: output " + std::to_string(i) + " is on " + device_name(y.device()) +
                        "; a step captured on " + device_name(device) + " must compute its outputs there");
  }
}

// Makes `capture` this thread's CPU capture for the guard's lifetime.
class ActiveCapture {
 public:
  explicit ActiveCapture(detail::CpuCapture& capture) {
    if (detail::active_cpu_capture)
      throw DeviceError("CapturedStep: a CPU step is already being captured on this thread");
    detail::active_cpu_capture = &capture;
    kernels::cpu::detail::active_recording = &capture.recording;
  }
  ~ActiveCapture() {
    detail::active_cpu_capture = nullptr;
    kernels::cpu::detail::active_recording = nullptr;
  }
  ActiveCapture(const ActiveCapture&) = delete;
  ActiveCapture& operator=(const ActiveCapture&) = delete;
};

}  // namespace

struct CapturedStep::State {
  Device device = Device::cpu;
  std::vector<Tensor> inputs;               // the step reads these buffers
  std::vector<Tensor> outputs;              // and writes these
  std::unique_ptr<detail::CpuCapture> cpu;  // the CPU's recorded kernel calls and the buffers they use
#ifdef METATAPE_CUDA
  kernels::cuda::StreamGraph graph;
#endif
  std::int64_t replays = 0;
  // The CPU kernels' thread count when the step was captured. The recorded
  // calls carry it (a convolution's scratch is sized, and its ConvShape
  // fixed, for that many workers), while a large matrix product splits by
  // the count at the call: a replay at another count would mix the two, so
  // it is refused and the step's bits stay those of eager runs at this count.
  int cpu_threads = 1;

  ~State() {
    // The outputs go back to the graph's pool before the graph goes.
    outputs.clear();
  }

  // ValueError unless the CPU kernels run at the capture's thread count;
  // `doing` says what the caller was about to do ("replayed", "timed").
  void require_capture_threads(const char* doing) const {
    if (kernels::cpu::threads() != cpu_threads)
      throw ValueError("CapturedStep: captured with " + std::to_string(cpu_threads) + " CPU thread(s), " + doing +
                       " with " + std::to_string(kernels::cpu::threads()) +
                       " (set_num_threads changed in between): capture the step again at this thread count");
  }

  // f run once eagerly with every CPU kernel call recorded, with the
  // capture's blocks reused; again without reuse where that was unsound (a
  // constant written on the host into a reused block).
  void capture_on_cpu(const Function& f) {
    for (bool reuse : {true, false}) {
      cpu = std::make_unique<detail::CpuCapture>(reuse);
      try {
        ActiveCapture active(*cpu);
        outputs = f(inputs);
        check_outputs(outputs, Device::cpu);
      } catch (const std::exception& e) {
        outputs.clear();
        cpu.reset();
        throw DeviceError(std::string("CapturedStep: the step could not be captured for replay on the CPU: ") +
                          e.what());
      }
      if (cpu->recording.reuse_valid()) return;
      outputs.clear();
    }
  }

  // One warm-up call of f, then f captured as a CUDA graph.
  void capture_on_gpu(const Function& f) {
#ifdef METATAPE_CUDA
    // Warm-up: lazy set-up (cuBLAS, workspaces, the pool's blocks) happens
    // outside the capture, and value checks run on real values.
    (void)f(inputs);
    detail::on_device([&] {
      kernels::cuda::synchronize();
      graph.begin();
    });
    try {
      outputs = f(inputs);
    } catch (const std::exception& e) {
      graph.abort();
      throw DeviceError(std::string("CapturedStep: the step could not be captured as a CUDA graph: ") + e.what());
    }
    try {
      graph.end();
    } catch (const std::exception& e) {
      outputs.clear();
      throw DeviceError(std::string("CapturedStep: ") + e.what());
    }
    check_outputs(outputs, Device::cuda);
#else
    (void)f;
#endif
  }
};

CapturedStep::CapturedStep(Function f, const std::vector<Tensor>& example_inputs, Device device)
    : state_(std::make_unique<State>()) {
  std::string reason;
  if (device == Device::cuda && !cuda_available(&reason)) {
#ifdef METATAPE_CUDA
    throw DeviceError("CapturedStep: a CUDA graph needs a GPU: " + reason);
#else
    throw DeviceError(
        "CapturedStep: a CUDA graph needs the CUDA backend; this build of metatape has none (nvcc was not found "
        "when it was configured)");
#endif
  }
  if (!f) throw ValueError("CapturedStep: no function given");
  state_->device = device;
  for (std::size_t i = 0; i < example_inputs.size(); ++i) {
    const Tensor& x = example_inputs[i];
    if (!x.defined()) throw ValueError("CapturedStep: example input " + std::to_string(i) + " is undefined");
    state_->inputs.push_back(copy_on(x, device));
  }
  state_->cpu_threads = kernels::cpu::threads();
  if (device == Device::cpu)
    state_->capture_on_cpu(f);
  else
    state_->capture_on_gpu(f);
}

CapturedStep::~CapturedStep() = default;

std::vector<Tensor> CapturedStep::operator()(const std::vector<Tensor>& inputs) {
  State& s = *state_;
  // The copies and the replayed calls bypass the kernel table: a capture
  // around this call would not record them.
  detail::refuse_in_cpu_capture("replaying a CapturedStep");
  check_inputs(inputs, s.inputs);
  for (std::size_t i = 0; i < inputs.size(); ++i) copy_values(inputs[i], s.inputs[i]);
  if (s.device == Device::cpu) {
    s.require_capture_threads("replayed");
    s.cpu->recording.replay();
  } else {
#ifdef METATAPE_CUDA
    detail::on_device([&] { s.graph.replay(); });
#endif
  }
  ++s.replays;
  std::vector<Tensor> out;
  out.reserve(s.outputs.size());
  for (const Tensor& y : s.outputs) out.push_back(copy_on(y, s.device));  // the next replay overwrites y
  return out;
}

std::vector<CapturedStep::KernelTime> CapturedStep::kernel_times(int rounds) const {
  if (rounds < 1) throw ValueError("CapturedStep::kernel_times: rounds must be >= 1, got " + std::to_string(rounds));
  if (state_->device != Device::cpu)
    throw DeviceError("CapturedStep::kernel_times: the step was captured as a CUDA graph, which runs as one launch");
  detail::refuse_in_cpu_capture("timing a CapturedStep's kernels");
  state_->require_capture_threads("timed");
  const kernels::cpu::KernelRecording& recording = state_->cpu->recording;
  const std::vector<double> seconds = recording.time_calls(rounds);
  std::vector<KernelTime> out;
  out.reserve(seconds.size());
  for (std::size_t i = 0; i < seconds.size(); ++i)
    out.push_back({recording.kernel_names()[i], recording.call_arguments()[i], seconds[i] * 1e6});
  return out;
}

std::int64_t CapturedStep::replays() const { return state_->replays; }
Device CapturedStep::device() const { return state_->device; }

}  // namespace metatape
