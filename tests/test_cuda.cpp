// The CUDA backend against the CPU: every op of the registry, forward and
// backward, in float64 (normalised error <= 1e-12) and float32 (<= 1e-5,
// TF32 off); gradcheck and gradgradcheck of every op on the GPU in float64;
// exact MAML meta-gradients on the GPU equal the CPU's; a steady state
// without cudaMalloc. Its own executable: without a usable GPU it reports
// that it skipped (exit status 77, which meson counts as SKIP) and runs
// nothing.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <string>

#include "gradcheck.hpp"
#include "kernels/cuda/runtime.hpp"
#include "metatape/meta/maml.hpp"
#include "metatape/registry.hpp"

namespace mt = metatape;
namespace meta = metatape::meta;
using mt::Device;
using mt::DType;
using mt::Tensor;

namespace {

std::uint64_t seed_for(const char* name) {
  std::uint64_t h = 1469598103934665603ull;
  for (const char* p = name; *p; ++p) h = (h ^ static_cast<unsigned char>(*p)) * 1099511628211ull;
  return h;
}

std::vector<Tensor> on(Device device, const std::vector<Tensor>& xs) {
  std::vector<Tensor> out;
  for (const Tensor& x : xs) out.push_back(x.to(device));
  return out;
}

// Runs a sample on `device`: its value and, for a random seed, the gradients
// of its differentiable inputs (all returned on the CPU).
std::vector<Tensor> value_and_grads(const mt::OpSample& s, Device device, DType dtype) {
  mt::TapeScope scope;
  std::vector<Tensor> in;
  for (const Tensor& x : s.inputs) in.push_back((mt::is_floating(x.dtype()) ? x.to(dtype) : x).to(device));
  std::vector<Tensor> wrt;
  for (std::size_t i = 0; i < in.size(); ++i)
    if (s.differentiable[i]) wrt.push_back(in[i].requires_grad_());
  const Tensor y = s.call(in);
  std::vector<Tensor> out{y.to(Device::cpu)};
  if (!y.requires_grad()) return out;
  mt::Generator gen(5);
  const Tensor seed = mt::normal(y.shape(), 0, 1, gen, dtype).to(device);
  for (const Tensor& g : mt::grad({y}, wrt, {seed}, {.allow_unused = true})) out.push_back(g.to(Device::cpu));
  return out;
}

}  // namespace

TEST_SUITE("cuda") {
  TEST_CASE("every op on the GPU matches the CPU, forward and backward") {
    for (const mt::OpInfo& op : mt::op_registry()) {
      for (DType dtype : {DType::f64, DType::f32}) {
        mt::Generator gen(seed_for(op.name));
        for (const mt::OpSample& s : op.samples(gen, dtype)) {
          INFO(std::string(op.name) << " (" << s.label << ") " << mt::dtype_name(dtype));
          const auto cpu = value_and_grads(s, Device::cpu, dtype), gpu = value_and_grads(s, Device::cuda, dtype);
          REQUIRE(cpu.size() == gpu.size());
          const double tolerance = dtype == DType::f64 ? 1e-12 : 1e-5;
          for (std::size_t i = 0; i < cpu.size(); ++i) {
            INFO("output " << i << " (0 is the value, then the input gradients)");
            CHECK(mt::testing::normalized_error(gpu[i], cpu[i]) <= tolerance);
          }
        }
      }
    }
  }

  TEST_CASE("gradcheck and gradgradcheck of every op on the GPU in float64") {
    for (const mt::OpInfo& op : mt::op_registry()) {
      mt::Generator gen(seed_for(op.name));
      for (const mt::OpSample& s : op.samples(gen, DType::f64)) {
        const std::vector<Tensor> inputs = on(Device::cuda, s.inputs);
        const auto first = mt::testing::gradcheck(mt::testing::as_function(s), inputs, s.differentiable,
                                                  mt::testing::options_for(s));
        INFO(std::string(op.name) << " (" << s.label << "): " << first.message);
        CHECK(first.ok);
        const auto second = mt::testing::gradgradcheck(mt::testing::as_function(s), inputs, s.differentiable,
                                                       mt::testing::options_for(s, {.fast = true}));
        INFO(second.message);
        CHECK(second.ok);
      }
    }
  }

  TEST_CASE("exact MAML meta-gradients on the GPU equal the CPU's (float64)") {
    const meta::Mlp mlp({1, 40, 40, 1});
    const meta::Conv4 conv({.in_channels = 1, .image_size = 28, .channels = 8, .classes = 5});
    const meta::MetaConfig config{.algorithm = meta::Algorithm::maml, .inner_steps = 2, .inner_lr = 0.05};
    mt::Generator gen(3);
    const auto sinusoid = meta::SinusoidTasks().sample(6, 10, 10, gen, DType::f64);
    std::vector<std::int64_t> labels;
    for (int t = 0; t < 2; ++t)
      for (int c = 0; c < 5; ++c) labels.push_back(c);
    const meta::TaskBatch images{mt::uniform({2, 5, 1, 28, 28}, 0, 1, gen, DType::f64), mt::from_indices(labels, {2, 5}),
                                 mt::uniform({2, 5, 1, 28, 28}, 0, 1, gen, DType::f64), mt::from_indices(labels, {2, 5})};
    struct Case {
      const char* name;
      const meta::Model& model;
      meta::Loss loss;
      const meta::TaskBatch& batch;
    };
    for (const Case& c : {Case{"mlp", mlp, meta::Loss::mse, sinusoid}, Case{"conv4", conv, meta::Loss::cross_entropy, images}}) {
      INFO(c.name);
      mt::Generator init(9);
      const auto params = meta::init_meta_params(c.model, config, init, DType::f64);
      const auto cpu = meta::meta_gradient(c.model, c.loss, config, params, c.batch, 0);
      const auto gpu = meta::meta_gradient(c.model, c.loss, config, params.to(Device::cuda), c.batch.to(Device::cuda), 0);
      CHECK(gpu.meta_loss == doctest::Approx(cpu.meta_loss).epsilon(1e-12));
      double diff = 0, ref = 0;
      for (std::size_t i = 0; i < cpu.grads.size(); ++i) {
        CHECK(gpu.grads[i].device() == Device::cuda);
        const Tensor d = mt::sub(gpu.grads[i].to(Device::cpu), cpu.grads[i]);
        diff += mt::sum(mt::square(d)).item();
        ref += mt::sum(mt::square(cpu.grads[i])).item();
      }
      CHECK(std::sqrt(diff / ref) <= 1e-10);
    }
  }

  TEST_CASE("a training loop on the GPU reaches a steady state without cudaMalloc") {
    const meta::Mlp mlp({1, 40, 40, 1});
    const meta::MetaConfig config{.algorithm = meta::Algorithm::maml, .inner_steps = 1, .inner_lr = 0.01};
    mt::Generator gen(4);
    auto params = meta::init_meta_params(mlp, config, gen, DType::f32, Device::cuda);
    const auto batch = meta::SinusoidTasks().sample(25, 10, 10, gen, DType::f32).to(Device::cuda);
    std::size_t after_warmup = 0;
    for (int step = 0; step < 10; ++step) {
      if (step == 3) after_warmup = mt::kernels::cuda::device_memory_stats().cuda_mallocs;
      const auto g = meta::meta_gradient(mlp, meta::Loss::mse, config, params, batch, step);
      mt::NoGradScope no_grad;
      for (std::size_t i = 0; i < params.model.size(); ++i) params.model[i] = params.model[i] - 1e-3 * g.grads[i];
    }
    CHECK(mt::kernels::cuda::device_memory_stats().cuda_mallocs == after_warmup);
  }

  TEST_CASE("copies round-trip exactly and device mismatches are refused by name") {
    mt::Generator gen(6);
    const Tensor x = mt::normal({3, 5}, 0, 1, gen, DType::f64);
    CHECK(x.to(Device::cuda).to(Device::cpu).to_vector() == x.to_vector());
    std::string message;
    try {
      (void)mt::add(x, x.to(Device::cuda));
    } catch (const mt::DeviceError& e) {
      message = e.what();
    }
    CHECK(message == "add: input 0 is on cpu but input 1 is on cuda");
  }
}

int main(int argc, char** argv) {
  std::string reason;
  if (!mt::cuda_available(&reason)) {
    std::printf("SKIP: the CUDA tests need a GPU: %s\n", reason.c_str());
    return 77;  // meson's "skipped"
  }
  doctest::Context context(argc, argv);
  return context.run();
}
