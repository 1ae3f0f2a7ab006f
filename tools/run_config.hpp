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

#include "metatape/meta/trainer.hpp"

namespace metatape::tools {

struct RunConfig {
  std::string task = "sinusoid";
  std::string model = "mlp";
  std::vector<std::int64_t> hidden = {40, 40};
  std::string activation = "relu";
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

  // {"format": 1, one key per stored option}.
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
  std::unique_ptr<meta::Model> model;
  meta::Loss loss;
  meta::TrainOptions options;
  double example_values = 0;           // inputs and targets of one example
  double activations_per_example = 0;  // what one example leaves in a forward pass
};
RunParts build(const RunConfig& config);

}  // namespace metatape::tools
