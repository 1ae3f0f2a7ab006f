// The CUDA backend against the CPU: every op of the registry, forward and
// backward, in float64 (relative error <= 1e-12 from the CPU) and float32
// (<= 1e-5 from the float64 answer, or 4 times the CPU's own float32 error
// where that is larger; TF32 off); gradcheck and gradgradcheck of every op on
// the GPU in float64; exact MAML meta-gradients on the GPU equal the CPU's;
// log_softmax in the shifted form (bit-exact under shifts); a steady state
// without cudaMalloc; steps captured as CUDA graphs replay what eager
// execution computes; cholesky and its solves against LAPACK. Its own
// executable: without a usable GPU it reports that it skipped (exit status
// 77, which meson counts as SKIP) and runs nothing.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "gradcheck.hpp"
#include "kernels/cuda/runtime.hpp"
#include "metatape/meta/maml.hpp"
#include "metatape/meta/trainer.hpp"
#include "metatape/registry.hpp"
#include "test_util.hpp"

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
  const Tensor seed = mt::normal(y.shape(), 0, 1, gen, y.dtype()).to(device);
  for (const Tensor& g : mt::grad({y}, wrt, {seed}, {.allow_unused = true})) out.push_back(g.to(Device::cpu));
  return out;
}

std::vector<Tensor> step_outputs(meta::MetaStepTensors step) {
  std::vector<Tensor> out = std::move(step.grads);
  out.push_back(step.meta_loss);
  out.push_back(step.task_losses);
  return out;
}

}  // namespace

TEST_SUITE("cuda") {
  TEST_CASE("every op on the GPU matches the CPU, forward and backward") {
    for (const mt::OpInfo& op : mt::op_registry()) {
      for (DType dtype : {DType::f64, DType::f32}) {
        mt::Generator gen(seed_for(op.name));
        for (const mt::OpSample& s : op.samples(gen, dtype)) {
          const std::string name = std::string(op.name) + " (" + s.label + ") " + mt::dtype_name(dtype);
          INFO(name);
          // A sample that throws fails on its own and the others still run.
          try {
            const auto cpu = value_and_grads(s, Device::cpu, dtype), gpu = value_and_grads(s, Device::cuda, dtype);
            REQUIRE(cpu.size() == gpu.size());
            // float32: both devices against the float64 answer at the same
            // (rounded) inputs. Where the problem's conditioning costs the
            // CPU's float32 more than 1e-5 (eigh's "squares of V": a gradient
            // of norm 0.06 from terms of order 1, so the eigenvectors' 5e-7
            // error becomes 2e-5), the GPU's may lose as much, not more than
            // a few times that.
            const auto exact = dtype == DType::f32 ? value_and_grads(s, Device::cpu, DType::f64) : cpu;
            REQUIRE(exact.size() == cpu.size());
            for (std::size_t i = 0; i < cpu.size(); ++i) {
              INFO("output " << i << " (0 is the value, then the input gradients)");
              if (dtype == DType::f64) {
                CHECK(mt::testing::relative_error(gpu[i], cpu[i]) <= 1e-12);
                continue;
              }
              const double cpu_error = mt::testing::relative_error(cpu[i], exact[i]);
              INFO("the CPU's float32 error " << cpu_error);
              CHECK(mt::testing::relative_error(gpu[i], exact[i]) <= std::max(1e-5, 4 * cpu_error));
            }
          } catch (const std::exception& e) {
            FAIL_CHECK(name << " threw: " << e.what());
          }
        }
      }
    }
  }

  TEST_CASE("gradcheck and gradgradcheck of every op on the GPU in float64") {
    for (const mt::OpInfo& op : mt::op_registry()) {
      mt::Generator gen(seed_for(op.name));
      for (const mt::OpSample& s : op.samples(gen, DType::f64)) {
        const std::string name = std::string(op.name) + " (" + s.label + ")";
        try {
          const std::vector<Tensor> inputs = on(Device::cuda, s.inputs);
          const auto first = mt::testing::gradcheck(mt::testing::as_function(s), inputs, s.differentiable,
                                                    mt::testing::options_for(s));
          INFO(name << ": " << first.message);
          CHECK(first.ok);
          const auto second = mt::testing::gradgradcheck(mt::testing::as_function(s), inputs, s.differentiable,
                                                         mt::testing::options_for(s, {.fast = true}));
          INFO(second.message);
          CHECK(second.ok);
        } catch (const std::exception& e) {
          FAIL_CHECK(name << " threw: " << e.what());
        }
      }
    }
  }

  TEST_CASE("exact MAML meta-gradients on the GPU equal the CPU's (float64)") {
    const meta::Mlp mlp({1, 40, 40, 1});
    const meta::Conv4 conv({.in_channels = 1, .image_size = 28, .channels = 8, .classes = 5});
    const meta::MetaConfig config{.algorithm = meta::Algorithm::maml, .inner_steps = 2, .inner_lr = 0.05};
    mt::Generator gen(3);
    const auto sinusoid = meta::SinusoidTasks().sample(6, 10, 10, gen, DType::f64);
    const auto images = mt::testing::RandomImageTasks().sample(2, 5, 5, gen, DType::f64);
    struct Case {
      const char* name;
      const meta::Model& model;
      meta::Loss loss;
      const meta::TaskBatch& batch;
    };
    for (const Case& c :
         {Case{"mlp", mlp, meta::Loss::mse, sinusoid}, Case{"conv4", conv, meta::Loss::cross_entropy, images}}) {
      INFO(c.name);
      mt::Generator init(9);
      const auto params = meta::init_meta_params(c.model, config, init, DType::f64);
      const auto cpu = meta::meta_gradient(c.model, c.loss, config, params, c.batch, 0);
      const auto gpu =
          meta::meta_gradient(c.model, c.loss, config, params.to(Device::cuda), c.batch.to(Device::cuda), 0);
      CHECK(gpu.meta_loss == doctest::Approx(cpu.meta_loss).epsilon(1e-12));
      for (const Tensor& g : gpu.grads) CHECK(g.device() == Device::cuda);
      CHECK(mt::testing::relative_error(gpu.grads, cpu.grads) <= 1e-10);
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

  TEST_CASE("a captured step replays what eager execution computes, for each new input") {
    // f: a recorded forward and its second-order gradient, as a MAML step has.
    const mt::CapturedStep::Function f = [](const std::vector<Tensor>& in) {
      mt::TapeScope scope;
      const Tensor w = in[0].detach().requires_grad_();
      const Tensor loss = mt::sum(mt::tanh(mt::matmul(in[1], w)));
      const Tensor g = mt::grad(loss, w, {.create_graph = true});
      const Tensor gg = mt::grad(mt::sum(mt::square(g)), w);
      return std::vector<Tensor>{loss.detach(), g.detach(), gg};
    };
    mt::Generator gen(11);
    const auto inputs = [&] {
      return std::vector<Tensor>{mt::normal({8, 3}, 0, 1, gen, DType::f64), mt::normal({5, 8}, 0, 1, gen, DType::f64)};
    };
    mt::CapturedStep step(f, inputs());
    std::size_t mallocs = 0;
    for (int call = 0; call < 4; ++call) {
      const std::vector<Tensor> x = inputs();  // on the host: copied straight into the graph's buffers
      if (call == 2) mallocs = mt::kernels::cuda::device_memory_stats().cuda_mallocs;
      const std::vector<Tensor> replayed = step(x);
      CHECK(mt::testing::relative_error(replayed, f(on(Device::cuda, x))) <= 1e-14);
    }
    CHECK(step.replays() == 4);
    CHECK(mt::kernels::cuda::device_memory_stats().cuda_mallocs == mallocs);
    CHECK(mt::testing::throws_error<mt::ShapeError>([&] {
            (void)step({mt::zeros({8, 3}, DType::f64), mt::zeros({5, 7}, DType::f64)});
          }).message == "CapturedStep: input 1 is f64 [5, 7], captured with f64 [5, 8]");
  }

  TEST_CASE("a step that reads device values on the host is refused at capture, and the engine carries on") {
    const mt::CapturedStep::Function reads = [](const std::vector<Tensor>& in) {
      const double total = mt::sum(in[0]).item();  // a host read: cannot be in a graph
      return std::vector<Tensor>{mt::scale(in[0], total)};
    };
    const std::string message = mt::testing::throws_error<mt::DeviceError>([&] {
                                  mt::CapturedStep step(reads, {mt::ones({4}, DType::f64)});
                                }).message;
    INFO(message);
    CHECK(message.find("CapturedStep: the step could not be captured as a CUDA graph") == 0);
    // The copy is refused, or the wait for it (CUDA may record the copy).
    CHECK((message.find("cudaMemcpyAsync (device to host)") != std::string::npos ||
           message.find("cudaStreamSynchronize") != std::string::npos));
    CHECK(!mt::kernels::cuda::capturing());
    const Tensor y = mt::add(mt::ones({3}, DType::f64, Device::cuda), mt::ones({3}, DType::f64, Device::cuda));
    CHECK(y.to_vector() == std::vector<double>{2, 2, 2});
  }

  TEST_CASE("captured MAML steps equal eager ones: MLP (MAML, Meta-SGD, LSLR, ANIL) and Conv4 (float64)") {
    const meta::Mlp mlp({1, 40, 40, 1});
    const meta::Conv4 conv({.in_channels = 1, .image_size = 28, .channels = 8, .classes = 5});
    struct Case {
      const char* name;
      const meta::Model& model;
      meta::Loss loss;
      meta::MetaConfig config;
    };
    const Case cases[] = {
        {"mlp maml", mlp, meta::Loss::mse, {.algorithm = meta::Algorithm::maml, .inner_steps = 2, .inner_lr = 0.05}},
        {"mlp metasgd", mlp, meta::Loss::mse, {.algorithm = meta::Algorithm::metasgd, .inner_steps = 1}},
        {"mlp lslr",
         mlp,
         meta::Loss::mse,
         {.algorithm = meta::Algorithm::maml, .inner_steps = 2, .learned_layer_rates = true}},
        {"mlp anil", mlp, meta::Loss::mse, {.algorithm = meta::Algorithm::anil, .inner_steps = 2}},
        {"conv4 maml",
         conv,
         meta::Loss::cross_entropy,
         {.algorithm = meta::Algorithm::maml, .inner_steps = 2, .inner_lr = 0.05}},
    };
    for (const Case& c : cases) {
      INFO(c.name);
      mt::Generator gen(13);
      const auto batch = [&] {
        return c.loss == meta::Loss::mse ? meta::SinusoidTasks().sample(5, 10, 10, gen, DType::f64)
                                         : mt::testing::RandomImageTasks().sample(2, 5, 5, gen, DType::f64);
      };
      const auto params = meta::init_meta_params(c.model, c.config, gen, DType::f64, Device::cuda);
      meta::CapturedMetaGradient step(c.model, c.loss, c.config);
      for (int call = 0; call < 3; ++call) {  // the first captures, the rest replay
        const meta::TaskBatch b = batch();
        const auto eager = meta::meta_gradient_tensors(c.model, c.loss, c.config, params, b.to(Device::cuda), 0);
        CHECK(mt::testing::relative_error(step_outputs(step(params, b)), step_outputs(eager)) <= 1e-13);
      }
    }
  }

  TEST_CASE("training with --cuda-graph follows eager training (float64, 3 iterations)") {
    const meta::Mlp mlp({1, 40, 40, 1});
    const meta::SinusoidTasks tasks;
    meta::TrainOptions options;
    options.meta = {.algorithm = meta::Algorithm::maml, .inner_steps = 1, .inner_lr = 0.01};
    options.meta_batch = 4;
    options.dtype = DType::f64;
    options.device = Device::cuda;
    meta::Trainer eager(mlp, meta::Loss::mse, tasks, options);
    options.replay = true;
    meta::Trainer graphed(mlp, meta::Loss::mse, tasks, options);
    for (int i = 0; i < 3; ++i) {
      const meta::IterationRecord a = eager.step(), b = graphed.step();
      CHECK(b.meta_loss == doctest::Approx(a.meta_loss).epsilon(1e-13));
      CHECK(b.grad_norm == doctest::Approx(a.grad_norm).epsilon(1e-13));
    }
    CHECK(mt::testing::relative_error(graphed.params().all(), eager.params().all()) <= 1e-13);
  }

  TEST_CASE("log_softmax on the GPU is in the shifted form: exact under shifts, accurate at large logits") {
    mt::Generator gen(7);
    for (DType dtype : {DType::f64, DType::f32}) {
      for (double shift : {1e8, -std::ldexp(1.0, 26)}) {
        INFO(mt::dtype_name(dtype) << " shift " << shift);
        // Logits near the shift, and the same logits moved back to zero:
        // (x + c) − c is exact (Sterbenz), so both sets have the same x − max
        // and the shifted form must give the same bits.
        const Tensor large = mt::normal({6, 9}, 0, 3, gen, dtype) + shift;
        const Tensor small = large - shift;
        const Tensor on_gpu = mt::log_softmax(large.to(Device::cuda), -1).to(Device::cpu);
        CHECK(on_gpu.to_vector() == mt::log_softmax(small.to(Device::cuda), -1).to(Device::cpu).to_vector());
        // Against the CPU: a few roundings of the shifted values, not |x|·eps.
        CHECK(mt::testing::relative_error(on_gpu, mt::log_softmax(small, -1)) <= (dtype == DType::f64 ? 1e-14 : 1e-6));
      }
    }
  }

  TEST_CASE("eigh on the GPU (cuSOLVER) matches the CPU (LAPACK) in float64, with its gradient and errors") {
    mt::Generator gen(7);
    for (const mt::Shape& shape : {mt::Shape{3, 8, 8}, mt::Shape{64, 64}}) {
      INFO(shape.str());
      const Tensor a = mt::normal(shape, 0, 1, gen, DType::f64);
      const Tensor c = mt::normal({shape[shape.rank() - 1]}, 0, 1, gen, DType::f64);
      std::vector<Tensor> results[2];
      for (Device device : {Device::cpu, Device::cuda}) {
        mt::TapeScope scope;
        Tensor x = a.to(device);
        x.requires_grad_();
        const mt::EighResult e = mt::eigh(x);
        // V diag(c) Vᵀ: blind to the solvers' choices of sign.
        const Tensor f = mt::matmul(e.vectors * c.to(device), e.vectors, false, true);
        const Tensor g = mt::grad(mt::sum(mt::square(f)) + mt::sum(mt::exp(e.values)), x);
        results[device == Device::cpu ? 0 : 1] = {e.values.to(Device::cpu), f.to(Device::cpu), g.to(Device::cpu)};
      }
      for (std::size_t k = 0; k < 3; ++k) CHECK(mt::testing::relative_error(results[1][k], results[0][k]) < 1e-10);
    }
    const Tensor bad = mt::from_vector({1, 0, 0, 1, 1, NAN, 0, 1}, {2, 2, 2}, DType::f64).to(Device::cuda);
    CHECK(mt::testing::throws_error<mt::ValueError>([&] { mt::eigh(bad); }, {"eigh", "batch index [1]", "nan"}));
  }

  TEST_CASE("copies round-trip exactly and device mismatches are refused by name") {
    mt::Generator gen(6);
    const Tensor x = mt::normal({3, 5}, 0, 1, gen, DType::f64);
    CHECK(x.to(Device::cuda).to(Device::cpu).to_vector() == x.to_vector());
    CHECK_NOTHROW(mt::synchronize());
    CHECK(mt::testing::throws_error<mt::DeviceError>([&] { (void)mt::add(x, x.to(Device::cuda)); }).message ==
          "add: input 0 is on cpu but input 1 is on cuda");
  }

  TEST_CASE("cholesky and its solves on the GPU (cuSOLVER, cuBLAS) equal the CPU's (LAPACK) in float64") {
    mt::Generator gen(7);
    const Tensor m = mt::uniform({3, 5, 5}, -1, 1, gen, DType::f64);
    std::vector<double> eye(25, 0.0);
    for (int i = 0; i < 5; ++i) eye[static_cast<std::size_t>(i * 6)] = 1.0;
    const Tensor spd = mt::matmul(m, m, false, true) + mt::from_vector(eye, {5, 5}, DType::f64);
    const Tensor b = mt::uniform({3, 5, 2}, -1, 1, gen, DType::f64);
    const Tensor l_cpu = mt::cholesky(spd), l_gpu = mt::cholesky(spd.to(Device::cuda));
    CHECK(mt::testing::relative_error(l_gpu, l_cpu) <= 1e-12);
    CHECK(mt::testing::relative_error(mt::cholesky_solve(l_gpu, b.to(Device::cuda)), mt::cholesky_solve(l_cpu, b)) <=
          1e-12);
    CHECK(mt::testing::relative_error(mt::solve_triangular(l_gpu, b.to(Device::cuda), false, true),
                                      mt::solve_triangular(l_cpu, b, false, true)) <= 1e-12);
    // Matrix 1 of 3 made indefinite at its leading minor of order 1.
    std::vector<double> v = spd.to_vector();
    v[25] = -1.0;
    const Tensor bad = mt::from_vector(v, {3, 5, 5}, DType::f64).to(Device::cuda);
    CHECK(mt::testing::throws_error<mt::ValueError>([&] { (void)mt::cholesky(bad); },
                                                    {"cholesky", "matrix 1", "info = 1", "ridge"}));
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
