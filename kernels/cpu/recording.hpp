// A list of CPU kernel calls recorded while a static step runs once, to be
// run again on the same buffers: the CPU's counterpart of a CUDA graph
// (engine/src/captured_step.cpp). While a recording is active on a thread,
// every call through the CPU kernel table (backend.hpp) runs as usual and is
// also appended to it with its arguments copied.
//
// What a recording cannot represent makes the call throw KernelError instead,
// before it runs, so that a capture fails rather than replay wrongly:
//   - a kernel that returns a value computed from memory (cholesky_batched's
//     status): the host would act on the capture's value in every replay;
//     one that returns a value of its arguments only (conv_scratch_size,
//     whose ConvShape carries the worker count the engine fixed) is pure
//     host arithmetic and just runs;
//   - a pointer argument outside every tensor storage the engine registered
//     (add_buffer) during the capture, such as a host array of shapes that
//     would be gone at replay: kernels with such arrays copy them explicitly
//     (CpuKernels' binary, sum_to, strided_copy).
//
// A buffer may hold several tensors one after another (the engine reuses a
// block whose tensor is gone: new_life). That is sound only if each of them
// is first written by a recorded kernel, so that a replay rewrites it before
// reading it; a tensor whose values were written on the host (a constant)
// would be overwritten by the buffer's other tensors. The recording tracks,
// per buffer, whether a life's first kernel access is a write (a non-const
// pointer argument) and reports any that is not (reuse_valid).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <iterator>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "parallel.hpp"

namespace metatape::kernels::cpu {

class KernelRecording {
 public:
  // [data, data + bytes) is tensor storage that stays allocated as long as
  // the recording may be replayed (the engine holds a reference).
  void add_buffer(const void* data, std::size_t bytes) {
    const auto begin = reinterpret_cast<std::uintptr_t>(data);
    auto [it, inserted] = buffers_.try_emplace(begin, Buffer{begin + bytes});
    if (!inserted && it->second.end < begin + bytes) it->second.end = begin + bytes;
  }

  // The buffer registered at `data` starts holding a new tensor; from now on
  // each of its tensors must be first accessed by a kernel's write.
  void new_life(const void* data) {
    auto it = buffers_.find(reinterpret_cast<std::uintptr_t>(data));
    if (it == buffers_.end()) throw KernelError("CPU kernel recording: new_life of an unregistered buffer");
    Buffer& b = it->second;
    if (b.first_access == Access::read) reuse_valid_ = false;
    b.shared = true;
    b.first_access = Access::none;
  }

  // False if a shared buffer's tensor was first read by a kernel (its
  // values came from the host): replays would then read another tensor's.
  bool reuse_valid() const {
    if (!reuse_valid_) return false;
    for (const auto& [begin, b] : buffers_)
      if (b.shared && b.first_access == Access::read) return false;
    return true;
  }

  // Throws KernelError unless every pointer among `args` is null or inside
  // a registered buffer.
  template <class... Args>
  void check_pointers(const char* kernel, const Args&... args) {
    int position = 0;
    (check_pointer(kernel, position++, args), ...);
  }

  // `kernel` is a string literal (the kernel's name); `arguments` its
  // scalar arguments as text, for diagnostics.
  // A call recorded inside a parallel region (parallel_for_unsplit's runs)
  // replays inside one too, so that it runs unsplit as it did then.
  void add(const char* kernel, std::function<void()> call, std::string arguments = {}) {
    if (in_parallel_region())
      call = [unsplit_call = std::move(call)] {
        const UnsplitRegion unsplit;
        unsplit_call();
      };
    calls_.push_back(std::move(call));
    names_.push_back(kernel);
    arguments_.push_back(std::move(arguments));
  }

  void replay() const {
    for (const auto& call : calls_) call();
  }
  std::size_t size() const { return calls_.size(); }
  // The recorded kernels' names, in call order (for diagnostics and tests).
  const std::vector<const char*>& kernel_names() const { return names_; }
  // Each call's scalar arguments (sizes, flags, op codes), in call order.
  const std::vector<std::string>& call_arguments() const { return arguments_; }

  // Per-kernel timing: `rounds` replays, each call timed on its own; the
  // median over the rounds of each call's time, in seconds. Every round
  // runs the whole list in order, so each call finds the values a replay
  // leaves, and its operands in the caches as the step leaves them.
  std::vector<double> time_calls(int rounds) const {
    using Clock = std::chrono::steady_clock;
    std::vector<std::vector<double>> seconds(calls_.size(), std::vector<double>(static_cast<std::size_t>(rounds)));
    for (int r = 0; r < rounds; ++r)
      for (std::size_t i = 0; i < calls_.size(); ++i) {
        const Clock::time_point start = Clock::now();
        calls_[i]();
        seconds[i][static_cast<std::size_t>(r)] = std::chrono::duration<double>(Clock::now() - start).count();
      }
    std::vector<double> median(calls_.size());
    for (std::size_t i = 0; i < calls_.size(); ++i) {
      std::vector<double>& t = seconds[i];
      std::nth_element(t.begin(), t.begin() + rounds / 2, t.end());
      median[i] = t[static_cast<std::size_t>(rounds / 2)];
    }
    return median;
  }

 private:
  enum class Access { none, read, write };
  struct Buffer {
    std::uintptr_t end = 0;
    Access first_access = Access::none;  // by a kernel, in this buffer's current life
    bool shared = false;                 // has held more than one tensor
  };

  template <class A>
  void check_pointer(const char* kernel, int position, const A& arg) {
    if constexpr (std::is_pointer_v<A>) {
      if (!arg) return;
      const auto p = reinterpret_cast<std::uintptr_t>(arg);
      auto it = buffers_.upper_bound(p);
      if (it != buffers_.begin() && p < std::prev(it)->second.end) {
        Buffer& b = std::prev(it)->second;
        if (b.first_access == Access::none)
          b.first_access = std::is_const_v<std::remove_pointer_t<A>> ? Access::read : Access::write;
        return;
      }
      throw KernelError(std::string("CPU kernel ") + kernel + ": argument " + std::to_string(position + 1) +
                        " points to host memory outside every tensor of the step, which a replay could not reach");
    }
  }

  std::vector<std::function<void()>> calls_;
  std::vector<const char*> names_;
  std::vector<std::string> arguments_;
  std::map<std::uintptr_t, Buffer> buffers_;  // by first byte
  bool reuse_valid_ = true;
};

namespace detail {
// The recording of this thread's CPU kernel calls, or null (the usual case).
inline thread_local KernelRecording* active_recording = nullptr;

// The scalar arguments among `args` (numbers, flags, op codes; not
// pointers or structures, except those that describe() themselves, such as
// a shape) as "a, b, c".
template <class... Args>
std::string scalar_arguments(const Args&... args) {
  std::string text;
  const auto append = [&text](const auto& arg) {
    using A = std::decay_t<decltype(arg)>;
    std::string item;
    if constexpr (requires { arg.describe(); })
      item = arg.describe();
    else if constexpr (std::is_same_v<A, bool>)
      item = arg ? "true" : "false";
    else if constexpr (std::is_enum_v<A>)
      item = std::to_string(static_cast<long long>(arg));
    else if constexpr (std::is_arithmetic_v<A>)
      item = std::to_string(arg);
    else
      return;
    text += (text.empty() ? "" : ", ") + item;
  };
  (append(args), ...);
  return text;
}

// Records `call` into `recording`, then runs it. `Ret` is the kernel's
// return type; see the header comment for what is refused.
template <class Ret, class Call, class... Args>
Ret record_kernel(KernelRecording* recording, const char* kernel, Call&& call, const Args&... args) {
  if constexpr (!std::is_void_v<Ret>) {
    if constexpr ((std::is_pointer_v<Args> || ...))
      throw KernelError(std::string("CPU kernel ") + kernel +
                        " returns a value read from memory, which a replay would not update");
    return call();
  } else {
    recording->check_pointers(kernel, args...);
    recording->add(kernel, call, scalar_arguments(args...));
    call();
  }
}
}  // namespace detail

}  // namespace metatape::kernels::cpu
