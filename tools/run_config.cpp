#include "run_config.hpp"

namespace metatape::tools {
namespace {

template <class T>
void read(const nlohmann::json& j, const char* key, T& into) {
  if (!j.contains(key)) throw ValueError(std::string("run configuration: missing field '") + key + "'");
  try {
    into = j.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw ValueError(std::string("run configuration: field '") + key + "' has the wrong type");
  }
}

}  // namespace

nlohmann::json RunConfig::to_json() const {
  return {{"format", 1},
          {"task", task},
          {"model", model},
          {"hidden", hidden},
          {"activation", activation},
          {"algorithm", algorithm},
          {"lslr", lslr},
          {"multi_step_loss", multi_step_loss},
          {"msl_anneal", msl_anneal},
          {"inner_steps", inner_steps},
          {"inner_lr", inner_lr},
          {"task_batched", task_batched},
          {"meta_batch", meta_batch},
          {"shots", shots},
          {"queries", queries},
          {"iterations", iterations},
          {"optimizer", optimizer},
          {"outer_lr", outer_lr},
          {"clip_grad_norm", clip_grad_norm},
          {"seed", seed},
          {"dtype", dtype}};
}

RunConfig RunConfig::from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw ValueError("run configuration: not a JSON object");
  int format = 0;
  read(j, "format", format);
  if (format != 1) throw ValueError("run configuration: format " + std::to_string(format) + " is not 1");
  RunConfig c;
  read(j, "task", c.task);
  read(j, "model", c.model);
  read(j, "hidden", c.hidden);
  read(j, "activation", c.activation);
  read(j, "algorithm", c.algorithm);
  read(j, "lslr", c.lslr);
  read(j, "multi_step_loss", c.multi_step_loss);
  read(j, "msl_anneal", c.msl_anneal);
  read(j, "inner_steps", c.inner_steps);
  read(j, "inner_lr", c.inner_lr);
  read(j, "task_batched", c.task_batched);
  read(j, "meta_batch", c.meta_batch);
  read(j, "shots", c.shots);
  read(j, "queries", c.queries);
  read(j, "iterations", c.iterations);
  read(j, "optimizer", c.optimizer);
  read(j, "outer_lr", c.outer_lr);
  read(j, "clip_grad_norm", c.clip_grad_norm);
  read(j, "seed", c.seed);
  read(j, "dtype", c.dtype);
  return c;
}

bool RunConfig::same_run_as(const RunConfig& other, std::string* first_difference) const {
  nlohmann::json a = to_json(), b = other.to_json();
  a.erase("iterations");
  b.erase("iterations");
  for (const auto& [key, value] : a.items()) {
    if (value != b[key]) {
      if (first_difference) *first_difference = key + " is " + b[key].dump() + " there and " + value.dump() + " here";
      return false;
    }
  }
  return true;
}

DType parse_dtype(const std::string& name) {
  if (name == "f32") return DType::f32;
  if (name == "f64") return DType::f64;
  throw ValueError("unknown dtype '" + name + "': choose f32 or f64");
}

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::cpu;
  if (name != "cuda") throw ValueError("unknown device '" + name + "': choose cpu or cuda");
  std::string reason;
  if (!cuda_available(&reason)) throw DeviceError("--device cuda: " + reason);
  return Device::cuda;
}

RunParts build(const RunConfig& c) {
  RunParts parts;
  if (c.task != "sinusoid") throw ValueError("unknown task '" + c.task + "': the task available is sinusoid");
  parts.tasks = std::make_unique<meta::SinusoidTasks>();
  parts.loss = meta::Loss::mse;
  if (c.model != "mlp")
    throw ValueError("unknown model '" + c.model + "' for the sinusoid task: use mlp (conv4 needs an image task)");
  meta::Activation activation;
  if (c.activation == "relu")
    activation = meta::Activation::relu;
  else if (c.activation == "tanh")
    activation = meta::Activation::tanh;
  else
    throw ValueError("unknown activation '" + c.activation + "': choose relu or tanh");
  std::vector<std::int64_t> widths = {1};
  widths.insert(widths.end(), c.hidden.begin(), c.hidden.end());
  widths.push_back(1);
  parts.model = std::make_unique<meta::Mlp>(widths, activation);

  meta::TrainOptions& o = parts.options;
  o.meta = {.algorithm = meta::parse_algorithm(c.algorithm),
            .inner_steps = c.inner_steps,
            .inner_lr = c.inner_lr,
            .learned_layer_rates = c.lslr,
            .multi_step_loss = c.multi_step_loss,
            .msl_anneal_iterations = c.msl_anneal,
            .task_batched = c.task_batched};
  o.optimizer = c.optimizer;
  o.outer_lr = c.outer_lr;
  o.clip_grad_norm = c.clip_grad_norm;
  o.meta_batch = c.meta_batch;
  o.shots = c.shots;
  o.queries = c.queries;
  o.seed = c.seed;
  o.dtype = parse_dtype(c.dtype);
  if (c.iterations < 1) throw ValueError("iterations must be >= 1, got " + std::to_string(c.iterations));
  o.validate();
  return parts;
}

}  // namespace metatape::tools
