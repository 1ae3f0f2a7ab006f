// The benchmark configurations of the MAML issue, shared by bench_maml.cpp
// and the libtorch comparison so that both time the same data.
#pragma once

#include <memory>

#include "metatape/meta/maml.hpp"

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
  std::vector<std::int64_t> support_labels, query_labels;
  for (std::int64_t t = 0; t < tasks; ++t) {
    for (std::int64_t c = 0; c < ways; ++c)
      for (std::int64_t i = 0; i < shots; ++i) support_labels.push_back(c);
    for (std::int64_t c = 0; c < ways; ++c)
      for (std::int64_t i = 0; i < queries; ++i) query_labels.push_back(c);
  }
  s.batch = {metatape::uniform({tasks, ways * shots, channels, size, size}, 0, 1, gen, dtype),
             metatape::from_indices(support_labels, {tasks, ways * shots}),
             metatape::uniform({tasks, ways * queries, channels, size, size}, 0, 1, gen, dtype),
             metatape::from_indices(query_labels, {tasks, ways * queries})};
  return s;
}

}  // namespace bench
