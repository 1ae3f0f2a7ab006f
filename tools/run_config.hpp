// A training run's configuration: what `metatape train` was asked to do,
// stored as JSON in config.json and in every checkpoint, so that `eval` and
// `--resume` rebuild exactly the same model, tasks and algorithm. Which
// fields it has, their config.json keys and their ranges are the stored rows
// of the train option table (option_tables.cpp).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "metatape/meta/datasets.hpp"
#include "metatape/meta/trainer.hpp"

namespace metatape::tools {

struct RunConfig {
  std::string task = "sinusoid";
  // Few-shot image tasks (--task fashion-mnist or omniglot): classes per
  // episode, and the directory of the IDX files or of Omniglot's PNG tree.
  std::int64_t ways = meta::FashionMnistOptions{}.ways;
  std::string data = meta::kFashionMnistDirectory;
  std::string model = "mlp";
  std::vector<std::int64_t> hidden = {40, 40};
  std::string activation = "relu";
  // Conv4 (--model conv4): channels per block, stride-2 convolutions instead
  // of max-pooling, batch norm with the set's statistics.
  std::int64_t channels = meta::Conv4Options{}.channels;
  bool strided = meta::Conv4Options{}.strided;
  bool batch_norm = meta::Conv4Options{}.batch_norm;
  std::string algorithm = "maml";
  bool lslr = false;
  bool multi_step_loss = false;
  std::int64_t msl_anneal = 10000;
  std::int64_t inner_steps = 1;
  double inner_lr = 0.01;
  bool task_batched = true;
  std::int64_t meta_batch = 25;
  std::int64_t shots = 10;
  std::int64_t queries = 10;
  std::int64_t iterations = 70000;
  std::string optimizer = "adam";
  double outer_lr = 1e-3;
  double clip_grad_norm = 0;
  std::uint64_t seed = 1;
  std::string dtype = "f32";
  // Added after the first release (optional in config.json, see
  // Options::added): the kernel algorithm's closed form, Meta-RKHS-I's α and
  // the outer loss's task weights. The defaults are meta::'s, and are what a
  // run written before these fields did (uniform weights).
  std::string kernel_form = meta::kernel_form_name(meta::KernelConfig{}.form);
  double kernel_time = meta::KernelConfig{}.time;
  double ridge = meta::KernelConfig{}.ridge;
  std::string kernel_grad = meta::kernel_gradient_name(meta::KernelConfig{}.gradient);
  std::string kernel_mode = meta::kernel_mode_name(meta::KernelConfig{}.mode);
  double rkhs_alpha = meta::MetaConfig{}.rkhs_alpha;
  std::string task_weighting = meta::task_weighting_name(meta::TaskWeightingConfig{}.rule);
  double weighting_temperature = meta::TaskWeightingConfig{}.temperature;
  bool differentiate_weights = meta::TaskWeightingConfig{}.differentiate;

  // {"format": 1, one key per stored option}. from_json requires every key
  // of the first release and takes the later ones' defaults when missing.
  nlohmann::json to_json() const;
  // Throws ValueError naming the first missing, mistyped or out-of-range field.
  static RunConfig from_json(const nlohmann::json& j);
  // The configuration stored in a checkpoint (its JSON text); IoError naming
  // `path` if the text is not JSON.
  static RunConfig from_checkpoint(const std::string& text, const std::string& path);
  // Everything but `iterations` equal: a checkpoint of `other` can continue this run.
  bool same_run_as(const RunConfig& other, std::string* first_difference) const;
};

DType parse_dtype(const std::string& name);  // "f32" | "f64"; ValueError otherwise
// "cpu" | "cuda"; ValueError for others, DeviceError naming the reason when
// this build or machine cannot use the GPU.
Device parse_device(const std::string& name);

// What a configuration builds (from the tables of catalog.hpp). Throws
// ValueError for an unknown task, model or activation, and for invalid
// combinations. Allocates no tensors.
struct RunParts {
  std::unique_ptr<meta::TaskSampler> tasks;
  // What `eval` draws from: the meta-test classes where the task has its own
  // (few-shot images), else null and `tasks`.
  std::unique_ptr<meta::TaskSampler> evaluation_tasks;
  const meta::TaskSampler& evaluation_sampler() const { return evaluation_tasks ? *evaluation_tasks : *tasks; }
  std::unique_ptr<meta::Model> model;
  meta::Loss loss;
  meta::TrainOptions options;
  double example_values = 0;           // inputs and targets of one example
  double outputs = 1;                  // the model's outputs per example (C)
  double activations_per_example = 0;  // what one example leaves in a forward pass
};
RunParts build(const RunConfig& config);

// A trained run, read back from its checkpoint.
struct LoadedRun {
  std::string path;
  RunConfig config;
  RunParts parts;
  meta::MetaParams params;  // on the device asked for
  std::int64_t iteration = 0;
};
// Reads the checkpoint at `path`, rebuilds its run from the stored
// configuration and checks that the tensors fit it. IoError naming `path`
// when it is missing, unreadable or does not fit; ValueError for a stored
// configuration that is invalid (naming the field).
LoadedRun load_run(const std::string& path, Device device);

}  // namespace metatape::tools
