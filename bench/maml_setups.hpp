// The MAML benchmark configurations (the published few-shot setups of
// docs/methods.md §1) and the kernel figures' problems, shared by
// bench_maml.cpp, bench_kernel.cpp, bench_cuda.cpp and the libtorch
// comparison so that all time the same data.
#pragma once

#include <cmath>
#include <memory>

#include "metatape/meta/maml.hpp"
#include "tests/test_util.hpp"

namespace bench {

struct MamlSetup {
  std::unique_ptr<metatape::meta::Model> model;
  metatape::meta::Loss loss;
  metatape::meta::MetaConfig config;
  metatape::meta::MetaParams params;
  metatape::meta::TaskBatch batch;
};

// Sinusoid regression: MLP 1-40-40-1 ReLU, 25 tasks, K = 10 support and 10
// query points, α = 0.01.
inline MamlSetup sinusoid_setup(int steps, bool first_order, bool batched, metatape::DType dtype) {
  namespace meta = metatape::meta;
  MamlSetup s;
  s.model = std::make_unique<meta::Mlp>(std::vector<std::int64_t>{1, 40, 40, 1});
  s.loss = meta::Loss::mse;
  s.config = {.algorithm = first_order ? meta::Algorithm::fomaml : meta::Algorithm::maml,
              .inner_steps = steps,
              .inner_lr = 0.01,
              .task_batched = batched};
  metatape::Generator gen(1);
  s.params = meta::init_meta_params(*s.model, s.config, gen, dtype);
  s.batch = meta::SinusoidTasks().sample(25, 10, 10, gen, dtype);
  return s;
}

// Conv4 (max-pool) on 5-way 1-shot tasks with 15 queries per class,
// meta-batch `tasks`, `steps` inner steps. By default the Omniglot settings:
// 28×28×1 images, 64 channels, α = 0.4; the miniImageNet ones are 84×84×3,
// 32 channels, α = 0.01. Random images: timing does not depend on them.
inline MamlSetup conv4_setup(bool first_order, bool batched, metatape::DType dtype, std::int64_t tasks = 4,
                             int steps = 1,
                             metatape::meta::Conv4Options model = {.in_channels = 1, .image_size = 28, .channels = 64},
                             double inner_lr = -1) {
  namespace meta = metatape::meta;
  constexpr std::int64_t ways = 5, shots = 1, queries = 15;
  const std::int64_t size = model.image_size, channels = model.in_channels;
  if (inner_lr < 0) inner_lr = size == 28 ? 0.4 : 0.01;
  model.classes = ways;
  MamlSetup s;
  s.model = std::make_unique<meta::Conv4>(model);
  s.loss = meta::Loss::cross_entropy;
  s.config = {.algorithm = first_order ? meta::Algorithm::fomaml : meta::Algorithm::maml,
              .inner_steps = steps,
              .inner_lr = inner_lr,
              .task_batched = batched};
  metatape::Generator gen(2);
  s.params = meta::init_meta_params(*s.model, s.config, gen, dtype);
  s.batch = metatape::testing::RandomImageTasks({.ways = ways, .channels = channels, .size = size})
                .sample(tasks, ways * shots, ways * queries, gen, dtype);
  return s;
}

// The strided Conv4 without batch norm on the same tasks as conv4_setup:
// 4 × [3×3 conv at stride 2, padding 1, + bias, ReLU] (28 → 14 → 7 → 4 → 2),
// the map averaged over space into the head; α = 0.4.
inline MamlSetup strided_conv4_setup(bool first_order, bool batched, metatape::DType dtype, std::int64_t tasks = 4,
                                     int steps = 1) {
  return conv4_setup(first_order, batched, dtype, tasks, steps,
                     {.in_channels = 1, .image_size = 28, .channels = 64, .strided = true, .batch_norm = false});
}

// The kernel-adaptation step on the same meta-batch as sinusoid_setup (same
// parameters, same tasks): flow form with the trace kernel, t = 1, and the
// exact meta-gradient through the kernel or (`fixed`) the kernel held
// constant (docs/methods.md §2).
inline MamlSetup kernel_setup(metatape::DType dtype, bool fixed = false) {
  namespace meta = metatape::meta;
  MamlSetup s = sinusoid_setup(1, false, true, dtype);
  s.config.algorithm = meta::Algorithm::kernel;
  s.config.kernel = {.form = meta::KernelForm::flow,
                     .time = 1.0,
                     .gradient = fixed ? meta::KernelGradient::fixed : meta::KernelGradient::exact,
                     .mode = meta::KernelMode::trace};
  return s;
}

// The problem of the NTK and Hessian-vector-product figures: the sinusoid
// MLP 1-40-40-1 ReLU, the n inputs x [n, 1] and targets y [n, 1] of one
// sinusoid task, and a standard-normal direction v shaped like the
// parameters. The parameters are He-initialised (weights N(0, 2/fan_in),
// biases N(0, 0.01)), not the model's MAML initialisation: there the weights
// have std 0.01, Θ is 1 + O(1e-3) everywhere (the output bias's share), and
// the libtorch comparison's relative error could not see a wrong kernel.
struct MlpPoints {
  std::unique_ptr<metatape::meta::Model> model;
  std::vector<metatape::Tensor> params, v;
  metatape::Tensor x, y;
};

inline MlpPoints mlp_points(metatape::DType dtype, std::int64_t n = 100) {
  namespace meta = metatape::meta;
  MlpPoints s;
  s.model = std::make_unique<meta::Mlp>(std::vector<std::int64_t>{1, 40, 40, 1});
  metatape::Generator gen(3);
  for (const metatape::meta::ParamInfo& p : s.model->parameters())
    s.params.push_back(
        metatape::normal(p.shape, 0.0, p.shape.rank() == 2 ? std::sqrt(2.0 / p.shape[0]) : 0.1, gen, dtype));
  const meta::TaskBatch task = meta::SinusoidTasks().sample(1, n, 1, gen, dtype);
  s.x = metatape::reshape(task.support_x, {n, 1});
  s.y = metatape::reshape(task.support_y, {n, 1});
  for (const metatape::Tensor& p : s.params) s.v.push_back(metatape::normal(p.shape(), 0.0, 1.0, gen, dtype));
  return s;
}

// The MSE of `points`' model on its n points as a function of the
// parameters: the function whose Hessian-vector product is timed.
inline metatape::Tensor mlp_points_loss(const MlpPoints& points, const std::vector<metatape::Tensor>& params) {
  return metatape::meta::per_task_loss(metatape::meta::Loss::mse, points.model->forward(params, points.x), points.y);
}

}  // namespace bench
