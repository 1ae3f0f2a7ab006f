#include "catalog.hpp"

#include <cmath>

#include "run_config.hpp"

namespace metatape::tools {
namespace {

AlgorithmEntry algorithm(meta::Algorithm a, std::string summary) {
  return {meta::algorithm_name(a), a, std::move(summary)};
}

// Values one Conv4 example leaves per block: the convolution's output, the
// normalised output (with batch norm), the ReLU's and the pool's.
double conv4_activations(const RunConfig& c, const TaskParts& task) {
  double size = static_cast<double>(task.input_shape.back()), values = 0;
  for (int block = 0; block < 4; ++block) {
    const double out = c.strided ? std::floor((size - 1) / 2) + 1 : size;
    values += static_cast<double>(c.channels) * out * out * (c.batch_norm ? 3 : 2);
    size = c.strided ? out : std::floor(out / 2);
    if (!c.strided) values += static_cast<double>(c.channels) * size * size;
  }
  return values + static_cast<double>(task.outputs);
}

}  // namespace

const std::vector<AlgorithmEntry>& algorithms() {
  using meta::Algorithm;
  static const std::vector<AlgorithmEntry> table = {
      algorithm(Algorithm::maml, "exact second order"),
      algorithm(Algorithm::fomaml, "first order"),
      algorithm(Algorithm::metasgd, "learned per-parameter rates"),
      algorithm(Algorithm::anil, "adapt the head only"),
      algorithm(Algorithm::reptile, "Reptile"),
      algorithm(Algorithm::pretrain, "the no-adaptation baseline"),
      algorithm(Algorithm::kernel, "the inner loop in closed form through the NTK"),
      algorithm(Algorithm::metarkhs1, "Meta-RKHS-I: loss - α‖∇loss‖², no inner loop"),
  };
  return table;
}

namespace {

// A rotated-image task: 28×28 greyscale episodes of --ways classes,
// meta-training on one split and evaluation on the other; `split` makes the
// sampler of a split from one loading of the images.
template <class MakeSplit>
TaskParts rotated_images(const RunConfig& c, MakeSplit split) {
  const auto sampler = [&](meta::FewShotSplit which) {
    return std::make_unique<meta::RotatedImageTasks>(split(which));
  };
  TaskParts parts{sampler(meta::FewShotSplit::train), meta::Loss::cross_entropy, {1, 28, 28}, c.ways};
  parts.evaluation_sampler = sampler(meta::FewShotSplit::test);
  return parts;
}

// Fashion-MNIST's split: meta-training on the rotations of classes 0–5,
// evaluation on those of 6–9.
TaskParts fashion_mnist(const RunConfig& c) {
  const std::shared_ptr<const meta::ImageDataset> data = meta::load_fashion_mnist(c.data);
  return rotated_images(c, [&](meta::FewShotSplit which) {
    return meta::fashion_mnist_tasks(data, {.ways = c.ways, .split = which, .directory = c.data});
  });
}

// Omniglot's standard split: meta-training on the rotations of the first
// 1,200 characters, evaluation on those of the other 423, from one loading.
// --data has Fashion-MNIST's directory as its default; Omniglot has no
// installed location, so it must be given.
TaskParts omniglot(const RunConfig& c) {
  if (c.data == meta::kFashionMnistDirectory)
    throw ValueError(
        "--task omniglot needs --data DIR, the directory holding Omniglot's images_background and "
        "images_evaluation folders (--data is Fashion-MNIST's " +
        std::string(meta::kFashionMnistDirectory) + " unless given)");
  const std::shared_ptr<const meta::ImageDataset> data = meta::load_omniglot(c.data);
  return rotated_images(c, [&](meta::FewShotSplit which) {
    return meta::omniglot_tasks(data, {.ways = c.ways, .split = which, .directory = c.data});
  });
}

}  // namespace

const std::vector<TaskEntry>& tasks() {
  static const std::vector<TaskEntry> table = {
      {"sinusoid", "regression of y = A sin(x - phase), Finn et al. 2017",
       [](const RunConfig&) {
         return TaskParts{std::make_unique<meta::SinusoidTasks>(), meta::Loss::mse, {1}, 1};
       }},
      {"sinusoid-mixture", "the sinusoid with amplitudes in [0.1, 1] (80%) or [4, 5] (20%), for task weighting",
       [](const RunConfig&) {
         return TaskParts{std::make_unique<meta::SinusoidTasks>(meta::kSinusoidMixture), meta::Loss::mse, {1}, 1};
       }},
      {"fashion-mnist",
       "N-way (--ways) few-shot classification of Fashion-MNIST's 10 classes at 4 rotations: the 24 of classes 0-5 "
       "meta-train, the 16 of 6-9 are for eval; --shots and --queries count per class",
       fashion_mnist},
      {"omniglot",
       "N-way (--ways) few-shot classification of Omniglot's characters (--data DIR) at 4 rotations, 28x28: the "
       "first 1200 characters meta-train, the other 423 are for eval; --shots and --queries count per class",
       omniglot},
  };
  return table;
}

const std::vector<ModelEntry>& models() {
  static const std::vector<ModelEntry> table = {
      {"mlp", "fully connected, --hidden widths and --activation",
       [](const RunConfig& c, const TaskParts& task) -> std::unique_ptr<meta::Model> {
         if (task.input_shape.size() != 1)
           throw ValueError("model mlp takes vector inputs; task " + c.task + " gives " +
                            std::to_string(task.input_shape.size()) + "-axis examples (use a convolutional model)");
         std::vector<std::int64_t> widths = {task.input_shape[0]};
         widths.insert(widths.end(), c.hidden.begin(), c.hidden.end());
         widths.push_back(task.outputs);
         return std::make_unique<meta::Mlp>(widths, find(activations(), c.activation, "activation").activation);
       },
       [](const RunConfig& c, const TaskParts& task) {
         double values = static_cast<double>(task.outputs);
         for (std::int64_t w : c.hidden) values += static_cast<double>(w);
         return values;
       }},
      {"conv4", "4 blocks of 3x3 conv, batch norm, ReLU and 2x2 max-pool (or stride 2), then a linear head",
       [](const RunConfig& c, const TaskParts& task) -> std::unique_ptr<meta::Model> {
         if (task.input_shape.size() != 3 || task.input_shape[1] != task.input_shape[2])
           throw ValueError("model conv4 takes square images [channels, size, size]; task " + c.task + " gives " +
                            std::to_string(task.input_shape.size()) + "-axis examples (use --model mlp)");
         return std::make_unique<meta::Conv4>(meta::Conv4Options{.in_channels = task.input_shape[0],
                                                                 .image_size = task.input_shape[1],
                                                                 .channels = c.channels,
                                                                 .classes = task.outputs,
                                                                 .strided = c.strided,
                                                                 .batch_norm = c.batch_norm});
       },
       conv4_activations},
  };
  return table;
}

const std::vector<ActivationEntry>& activations() {
  static const std::vector<ActivationEntry> table = {{"relu", meta::Activation::relu},
                                                     {"tanh", meta::Activation::tanh}};
  return table;
}

const std::vector<DTypeEntry>& dtypes() {
  static const std::vector<DTypeEntry> table = {{"f32", DType::f32}, {"f64", DType::f64}};
  return table;
}

}  // namespace metatape::tools
