// CapturedStep on the CPU: a step captured once as its list of CPU kernel
// calls and replayed on the same buffers gives the eager path's bits, with
// new inputs every time; what a replay could not represent fails the
// capture with a DeviceError naming it.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <string>

#include "../kernels/cpu/backend.hpp"  // the CPU kernel table, from the project root
#include "meta_test_util.hpp"
#include "metatape/captured_step.hpp"
#include "metatape/engine.hpp"
#include "metatape/meta/maml.hpp"
#include "metatape/meta/trainer.hpp"
#include "metatape/ops.hpp"
#include "metatape/random.hpp"
#include "test_util.hpp"

namespace mt = metatape;
namespace meta = metatape::meta;
using mt::Device;
using mt::DeviceError;
using mt::DType;
using mt::Tensor;

namespace {

// Every value of a step's result, in one list: gradients, meta-loss, task
// losses, task weights.
std::vector<Tensor> step_outputs(const meta::MetaStepTensors& s) {
  std::vector<Tensor> out = s.grads;
  out.insert(out.end(), {s.meta_loss, s.task_losses, s.task_weights});
  return out;
}

// Bit-for-bit equality of two lists of tensors (shape, dtype, every value).
bool same_bits(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].shape() != b[i].shape() || a[i].dtype() != b[i].dtype()) return false;
    const std::size_t bytes = static_cast<std::size_t>(a[i].numel()) * mt::dtype_size(a[i].dtype());
    if (bytes && std::memcmp(a[i].raw_data(), b[i].raw_data(), bytes) != 0) return false;
  }
  return true;
}

// A step function that calls `inside` on its first input during the step.
mt::CapturedStep::Function calling(std::function<void(const Tensor&)> inside) {
  return [inside](const std::vector<Tensor>& in) {
    inside(in[0]);
    return std::vector<Tensor>{mt::exp(in[0])};
  };
}

// Records y = a + b with shapes and strides in this frame's arrays, which
// are gone (and the stack reused) by the time the caller replays.
void record_broadcast_add(const float* a, const float* b, float* y) {
  const std::array<std::int64_t, 2> shape{2, 3}, a_strides{3, 1}, b_strides{0, 1};
  mt::kernels::cpu::CpuKernels::binary<float>(mt::kernels::BinaryOp::add, 2, shape.data(), a, a_strides.data(), b,
                                              b_strides.data(), y);
}

// Overwrites a stretch of the stack, where record_broadcast_add's arrays were.
void clobber_stack() {
  volatile std::int64_t junk[64];
  for (volatile std::int64_t& j : junk) j = -7;
}

}  // namespace

TEST_SUITE("replay") {
  TEST_CASE("a replayed sinusoid MAML step equals the eager step bit for bit, with new inputs each time") {
    const meta::Mlp model({1, 40, 40, 1});
    for (DType dtype : {DType::f32, DType::f64})
      for (meta::Algorithm algorithm : {meta::Algorithm::maml, meta::Algorithm::fomaml})
        for (int steps : {1, 5}) {
          INFO(mt::dtype_name(dtype) << " " << meta::algorithm_name(algorithm) << " " << steps << " steps");
          const meta::MetaConfig config{.algorithm = algorithm, .inner_steps = steps, .inner_lr = 0.01};
          meta::CapturedMetaGradient captured(model, meta::Loss::mse, config);
          mt::Generator gen(11);
          for (int iteration = 0; iteration < 3; ++iteration) {
            const meta::MetaParams params = meta::init_meta_params(model, config, gen, dtype);
            const meta::TaskBatch batch = meta::SinusoidTasks().sample(6, 5, 7, gen, dtype);
            const auto replayed = step_outputs(captured(params, batch));
            const auto eager =
                step_outputs(meta::meta_gradient_tensors(model, meta::Loss::mse, config, params, batch, 0));
            CHECK(same_bits(replayed, eager));
          }
        }
  }

  TEST_CASE("kernel_times lists every recorded call with its arguments, and timing leaves the replay's bits") {
    const meta::Mlp model({1, 8, 1});
    const meta::MetaConfig config{.inner_steps = 1, .inner_lr = 0.01};
    meta::CapturedMetaGradient captured(model, meta::Loss::mse, config);
    CHECK_THROWS_AS((void)captured.kernel_times(), mt::ValueError);  // nothing captured yet
    mt::Generator gen(5);
    const meta::MetaParams params = meta::init_meta_params(model, config, gen, DType::f64);
    const meta::TaskBatch batch = meta::SinusoidTasks().sample(3, 4, 5, gen, DType::f64);
    const auto first = step_outputs(captured(params, batch));
    const std::vector<mt::CapturedStep::KernelTime> calls = captured.kernel_times(3);
    REQUIRE(!calls.empty());
    bool product_shape_named = false, broadcast_shape_named = false;
    for (const auto& c : calls) {
      CHECK(std::isfinite(c.microseconds));
      CHECK(c.microseconds >= 0);
      // The hidden layer's task-batched forward: [4 x 1] x [1 x 8] per task, 3 tasks.
      if (std::string(c.kernel) == "gemm_batched" && c.arguments == "false, false, 4, 8, 1, 4, 8, 32, 3")
        product_shape_named = true;
      // Its bias, [3, 4, 8] + [3, 1, 8] (add is BinaryOp 0).
      if (std::string(c.kernel) == "binary" && c.arguments.rfind("0, [3, 4, 8]", 0) == 0) broadcast_shape_named = true;
    }
    CHECK(product_shape_named);
    CHECK(broadcast_shape_named);
    CHECK_THROWS_AS((void)captured.kernel_times(0), mt::ValueError);
    // The timing replays ran on the same inputs: the outputs are the step's.
    CHECK(same_bits(step_outputs(captured(params, batch)), first));
  }

  TEST_CASE("a replay keeps its recorded shapes and strides after the recording frame is gone") {
    mt::kernels::cpu::KernelRecording recording;
    std::array<float, 6> a{1, 2, 3, 4, 5, 6}, y{};
    std::array<float, 3> b{10, 20, 30};
    recording.add_buffer(a.data(), sizeof(a));
    recording.add_buffer(b.data(), sizeof(b));
    recording.add_buffer(y.data(), sizeof(y));
    mt::kernels::cpu::detail::active_recording = &recording;
    record_broadcast_add(a.data(), b.data(), y.data());
    mt::kernels::cpu::detail::active_recording = nullptr;
    CHECK(recording.size() == 1);
    clobber_stack();
    a = {0, 1, 0, 1, 0, 1};
    y = {};
    recording.replay();
    CHECK(y == std::array<float, 6>{10, 21, 30, 11, 20, 31});
  }

  TEST_CASE("a kernel argument outside every tensor, or a kernel that returns a read value, is refused") {
    mt::kernels::cpu::KernelRecording recording;
    std::array<float, 4> x{1, 2, 3, 4}, y{};
    recording.add_buffer(y.data(), sizeof(y));
    mt::kernels::cpu::detail::active_recording = &recording;
    const auto copy = [&] { mt::kernels::cpu::CpuKernels::copy<float>(x.data(), y.data(), 4); };
    const auto cholesky = [&] {
      std::int64_t info = 0;
      (void)mt::kernels::cpu::CpuKernels::cholesky_batched<float>(y.data(), 2, 1, &info);
    };
    CHECK(mt::testing::throws_error<mt::kernels::KernelError>(
        copy, {"CPU kernel copy: argument 1 points to host memory outside every tensor"}));
    CHECK(mt::testing::throws_error<mt::kernels::KernelError>(
        cholesky, {"CPU kernel cholesky_batched returns a value read from memory"}));
    recording.add_buffer(x.data(), sizeof(x));
    copy();
    mt::kernels::cpu::detail::active_recording = nullptr;
    CHECK(recording.size() == 1);
    CHECK(y == x);
  }

  TEST_CASE("what a replay could not repeat fails the capture with a DeviceError naming it") {
    const std::vector<Tensor> example{mt::ones({3}, DType::f64)};
    const auto capture = [&](mt::CapturedStep::Function f) {
      mt::CapturedStep step(std::move(f), example, Device::cpu);
    };
    const std::string prefix = "CapturedStep: the step could not be captured for replay on the CPU: ";
    CHECK(mt::testing::throws_error<DeviceError>(
        [&] { capture(calling([](const Tensor& x) { (void)mt::sum(x).item(); })); },
        {prefix + "item() cannot be captured"}));
    CHECK(mt::testing::throws_error<DeviceError>(
        [&] { capture(calling([](const Tensor& x) { (void)x.to_vector(); })); }, {"to_vector() cannot be captured"}));
    CHECK(mt::testing::throws_error<DeviceError>(
        [&] {
          capture(calling([](const Tensor&) {
            mt::Generator gen(1);
            (void)mt::normal({2}, 0.0, 1.0, gen, DType::f64);
          }));
        },
        {"random number generation cannot be captured"}));
    CHECK(mt::testing::throws_error<DeviceError>(
        [&] {
          capture(calling([](const Tensor& x) { (void)mt::cholesky(mt::reshape(mt::concat({x, x, x}), {3, 3})); }));
        },
        {prefix + "CPU kernel cholesky_batched returns a value read from memory"}));
    CHECK(mt::testing::throws_error<DeviceError>(
        [&] {
          capture([](const std::vector<Tensor>&) {
            mt::CapturedStep inner([](const std::vector<Tensor>& in) { return in; }, {mt::ones({1})}, Device::cpu);
            return std::vector<Tensor>{};
          });
        },
        {"a CPU step is already being captured on this thread"}));
    mt::CapturedStep inner([](const std::vector<Tensor>& in) { return std::vector<Tensor>{mt::exp(in[0])}; }, example,
                           Device::cpu);
    CHECK(mt::testing::throws_error<DeviceError>(
        [&] { capture([&](const std::vector<Tensor>& in) { return inner(in); }); },
        {prefix + "replaying a CapturedStep cannot be captured"}));
    CHECK(mt::testing::throws_error<DeviceError>(
        [&] { capture([](const std::vector<Tensor>&) { return std::vector<Tensor>{Tensor()}; }); },
        {"output 0 is undefined"}));
    // A failed capture leaves nothing active: ops and reads work as usual.
    CHECK(mt::sum(example[0]).item() == 3.0);
  }

  TEST_CASE("a replay checks its inputs against the capture's, and reads each input anew") {
    mt::CapturedStep step([](const std::vector<Tensor>& in) { return std::vector<Tensor>{mt::mul(in[0], in[1])}; },
                          {mt::ones({2, 3}, DType::f64), mt::ones({3}, DType::f64)}, Device::cpu);
    CHECK(step.device() == Device::cpu);
    CHECK(mt::testing::throws_error<mt::ShapeError>([&] {
            (void)step({mt::ones({2, 4}, DType::f64), mt::ones({3}, DType::f64)});
          }).message == "CapturedStep: input 0 is f64 [2, 4], captured with f64 [2, 3]");
    CHECK(mt::testing::throws_error<mt::DTypeError>(
        [&] {
          (void)step({mt::ones({2, 3}), mt::ones({3}, DType::f64)});
        },
        {"input 0 is f32 [2, 3]"}));
    CHECK(mt::testing::throws_error<mt::ValueError>(
        [&] {
          (void)step({mt::ones({2, 3}, DType::f64)});
        },
        {"1 inputs given, the step was captured with 2"}));
    const Tensor a = mt::from_vector({1, 2, 3, 4, 5, 6}, {2, 3}, DType::f64);
    const Tensor first = step({a, mt::from_vector({1, 10, 100}, {3}, DType::f64)})[0];
    const Tensor second = step({a, mt::from_vector({2, 0, -1}, {3}, DType::f64)})[0];
    CHECK(first.to_vector() == std::vector<double>{1, 20, 300, 4, 50, 600});
    CHECK(second.to_vector() == std::vector<double>{2, 0, -3, 8, 0, -6});
    CHECK(step.replays() == 2);
  }

  TEST_CASE("indices a replay would not check again (take with the step's own index input) fail the capture") {
    const mt::CapturedStep::Function f = [](const std::vector<Tensor>& in) {
      return std::vector<Tensor>{mt::take(in[0], in[1])};
    };
    const std::vector<Tensor> inputs = {mt::ones({4}, DType::f64),
                                        mt::from_indices(std::vector<std::int64_t>{0, 3}, {2})};
    CHECK(mt::testing::throws_error<DeviceError>([&] { mt::CapturedStep step(f, inputs, Device::cpu); },
                                                 {"could not be captured", "checking index values on the host"}));
  }

  TEST_CASE("a replay at another CPU thread count than the capture's is refused, and runs again at the same count") {
    const mt::testing::ThreadsFor one(1);
    mt::CapturedStep step([](const std::vector<Tensor>& in) { return std::vector<Tensor>{mt::exp(in[0])}; },
                          {mt::ones({4}, DType::f64)}, Device::cpu);
    {
      const mt::testing::ThreadsFor two(2);
      CHECK(mt::testing::throws_error<mt::ValueError>([&] { (void)step({mt::ones({4}, DType::f64)}); },
                                                      {"captured with 1 CPU thread(s), replayed with 2"}));
    }
    CHECK(step({mt::zeros({4}, DType::f64)})[0].to_vector() == std::vector<double>{1, 1, 1, 1});
  }

  TEST_CASE("a capture reuses the blocks of its dead intermediates, except under a constant written on the host") {
    // A chain of 40 ops on 4000 doubles: each intermediate dies at the next
    // op, so the capture needs a few blocks, not 40.
    const auto chain = [](const std::vector<Tensor>& in) {
      Tensor x = in[0];
      for (int i = 0; i < 40; ++i) x = mt::tanh(x);
      return std::vector<Tensor>{x};
    };
    const Tensor x0 = mt::full({4000}, 0.5, DType::f64);
    const std::size_t before = mt::pool_stats().bytes_in_use;
    {
      mt::CapturedStep step(chain, {x0}, Device::cpu);
      const std::size_t block = 4000 * sizeof(double);
      CHECK(mt::pool_stats().bytes_in_use - before < 8 * block);
      CHECK(same_bits(step({x0}), chain({x0})));
    }
    CHECK(mt::pool_stats().bytes_in_use == before);
    // The square's block goes to the host-written constant c; a replay that
    // kept that would overwrite c with the next input's square.
    const auto with_constant = [](const std::vector<Tensor>& in) {
      Tensor total;
      {
        const Tensor square = mt::mul(in[0], in[0]);
        total = mt::sum(square);
      }
      const Tensor c = mt::from_vector({1, 2, 3, 4}, {4}, DType::f64);
      return std::vector<Tensor>{mt::add(mt::mul(in[0], c), total)};
    };
    mt::CapturedStep step(with_constant, {mt::ones({4}, DType::f64)}, Device::cpu);
    for (double v : {2.0, -3.0, 0.25}) {
      const std::vector<Tensor> input{mt::full({4}, v, DType::f64)};
      CHECK(same_bits(step(input), with_constant(input)));
    }
  }

  TEST_CASE("training with a replayed step follows eager training bit for bit (float32, 4 iterations)") {
    const meta::Mlp mlp({1, 16, 16, 1});
    const meta::SinusoidTasks tasks;
    meta::TrainOptions options;
    options.meta = {.algorithm = meta::Algorithm::maml, .inner_steps = 2, .inner_lr = 0.01};
    options.meta_batch = 5;
    options.optimizer = "adam";
    meta::Trainer eager(mlp, meta::Loss::mse, tasks, options);
    options.replay = true;
    meta::Trainer replayed(mlp, meta::Loss::mse, tasks, options);
    for (int i = 0; i < 4; ++i) {
      const meta::IterationRecord a = eager.step(), b = replayed.step();
      CHECK(b.meta_loss == a.meta_loss);
      CHECK(b.grad_norm == a.grad_norm);
      CHECK(b.task_losses == a.task_losses);
    }
    CHECK(same_bits(replayed.params().all(), eager.params().all()));
  }
}
