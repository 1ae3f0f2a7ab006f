#include "run_config.hpp"

#include <cmath>
#include <filesystem>
#include <limits>

#include "catalog.hpp"
#include "commands.hpp"

namespace metatape::tools {
namespace {

// The config.json format: 1 since the first release. A later stored option
// either has a key every format-1 file has, or is optional with the default
// older runs had (Options::added), or needs a new format number.
constexpr int kConfigFormat = 1;

}  // namespace

nlohmann::json RunConfig::to_json() const {
  nlohmann::json j{{"format", kConfigFormat}};
  for (const Option<TrainArgs>& o : train_options())
    if (o.write) o.write(*this, j);
  return j;
}

RunConfig RunConfig::from_checkpoint(const std::string& text, const std::string& path) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) throw IoError("checkpoint " + path + ": its configuration is not JSON");
  return from_json(j);
}

RunConfig RunConfig::from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw ValueError("run configuration: not a JSON object");
  if (!j.contains("format")) throw ValueError("run configuration: missing field 'format'");
  if (j["format"] != kConfigFormat)
    throw ValueError("run configuration: format " + j["format"].dump() + " is not " + std::to_string(kConfigFormat));
  RunConfig c;
  for (const Option<TrainArgs>& o : train_options())
    if (o.read) o.read(j, c);
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

DType parse_dtype(const std::string& name) { return find(dtypes(), name, "dtype").dtype; }

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::cpu;
  if (name != "cuda") throw ValueError("unknown device '" + name + "': choose cpu or cuda");
  std::string reason;
  if (!cuda_available(&reason)) throw DeviceError("--device cuda: " + reason);
  return Device::cuda;
}

RunParts build(const RunConfig& c) {
  RunParts parts;
  TaskParts task = find(tasks(), c.task, "task").make(c);
  const ModelEntry& model = find(models(), c.model, "model");
  parts.model = model.make(c, task);
  parts.activations_per_example = model.activations_per_example(c, task);
  double inputs = 1;
  for (std::int64_t d : task.input_shape) inputs *= static_cast<double>(d);
  parts.example_values = inputs + static_cast<double>(task.outputs);
  parts.outputs = static_cast<double>(task.outputs);
  parts.tasks = std::move(task.sampler);
  parts.evaluation_tasks = std::move(task.evaluation_sampler);
  parts.loss = task.loss;

  meta::TrainOptions& o = parts.options;
  // The option table's range keeps inner_steps within an int; a RunConfig
  // made in code is checked here.
  if (c.inner_steps < 0 || c.inner_steps > std::numeric_limits<int>::max())
    throw ValueError("inner_steps must be in 0.." + std::to_string(std::numeric_limits<int>::max()) + ", got " +
                     std::to_string(c.inner_steps));
  o.meta = {.algorithm = find(algorithms(), c.algorithm, "algorithm").algorithm,
            .inner_steps = static_cast<int>(c.inner_steps),
            .inner_lr = c.inner_lr,
            .learned_layer_rates = c.lslr,
            .multi_step_loss = c.multi_step_loss,
            .msl_anneal_iterations = c.msl_anneal,
            .task_batched = c.task_batched,
            .kernel = {.form = meta::parse_kernel_form(c.kernel_form),
                       .time = c.kernel_time,
                       .ridge = c.ridge,
                       .gradient = meta::parse_kernel_gradient(c.kernel_grad),
                       .mode = meta::parse_kernel_mode(c.kernel_mode)},
            .rkhs_alpha = c.rkhs_alpha,
            .weighting = {.rule = meta::parse_task_weighting(c.task_weighting),
                          .temperature = c.weighting_temperature,
                          .differentiate = c.differentiate_weights}};
  o.optimizer = c.optimizer;
  o.outer_lr = c.outer_lr;
  o.clip_grad_norm = c.clip_grad_norm;
  o.meta_batch = c.meta_batch;
  o.shots = c.shots;
  o.queries = c.queries;
  o.seed = c.seed;
  o.dtype = parse_dtype(c.dtype);
  // MetaConfig::validate refuses this too; here the message names the options.
  if (o.meta.algorithm == meta::Algorithm::kernel && o.meta.kernel.form == meta::KernelForm::flow &&
      std::isinf(c.kernel_time) && !(c.ridge > 0))
    throw ValueError(
        "--kernel-time inf is the interpolating limit Ks⁻¹ and needs --ridge > 0 (the support kernel "
        "is singular or ill-conditioned in general)");
  if (c.iterations < 1) throw ValueError("iterations must be >= 1, got " + std::to_string(c.iterations));
  o.validate();
  return parts;
}

LoadedRun load_run(const std::string& path, Device device) {
  if (!std::filesystem::exists(path)) throw IoError("cannot open " + path + ": no such file");
  const meta::Checkpoint checkpoint = meta::load_checkpoint(path);
  LoadedRun run{path, RunConfig::from_checkpoint(checkpoint.config, path), {}, {}, checkpoint.iteration};
  run.parts = build(run.config);
  // A config edited to another model or algorithm must not be evaluated with these tensors.
  meta::check_checkpoint_fits(checkpoint, *run.parts.model, run.parts.options, path);
  const std::size_t model_params = run.parts.model->parameters().size();
  run.params = meta::MetaParams::from_all(checkpoint.params, model_params).to(device);
  run.parts.model->check(run.params.model, 1);
  return run;
}

}  // namespace metatape::tools
