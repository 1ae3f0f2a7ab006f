#include "metatape/meta/trainer.hpp"

#include <cmath>
#include <sstream>

namespace metatape::meta {
namespace {

void check_restorable(const Checkpoint& c, const std::vector<Tensor>& params, const Optimizer& optimizer,
                      const std::string& path) {
  // The trainer steps its optimiser once per iteration; a file where the two
  // disagree was not written by it.
  if (c.optimizer_steps != c.iteration)
    throw IoError(checkpoint_label(path) + ": the optimizer step count " + std::to_string(c.optimizer_steps) +
                  " differs from the iteration " + std::to_string(c.iteration));
  check_checkpoint_matches(c, params, optimizer.state_layout(params, c.optimizer_steps), path);
}

std::string number(double x) {
  if (std::isnan(x)) return "nan";  // the stream writes "-nan" for a negative one
  std::ostringstream out;
  out << x;
  return out.str();
}

// One host read for all tensors: x · 0 is 0 for every finite x and NaN for
// an infinity or a NaN, with no overflow on the way.
bool all_finite(const std::vector<Tensor>& tensors) {
  NoGradScope no_grad;
  Tensor total;
  for (const Tensor& t : tensors) {
    const Tensor zero_if_finite = sum(scale(t, 0.0));
    total = total.defined() ? add(total, zero_if_finite) : zero_if_finite;
  }
  return !total.defined() || std::isfinite(total.item());
}

std::string non_finite_step(double meta_loss, double grad_norm, std::int64_t iteration) {
  const std::string what = std::isfinite(meta_loss) ? "the meta-gradient norm is " + number(grad_norm) +
                                                          " (the meta-loss " + number(meta_loss) + ")"
                                                    : "the meta-loss is " + number(meta_loss);
  return what + " at iteration " + std::to_string(iteration) +
         "; the parameters were not updated (a smaller inner or outer learning rate, or gradient clipping, may help)";
}

}  // namespace

std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream) {
  std::uint64_t z = seed + 0x9E3779B97F4A7C15ull * (stream + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void TrainOptions::validate() const {
  meta.validate();
  if (meta_batch < 1) throw ValueError("the meta-batch must be >= 1 task, got " + std::to_string(meta_batch));
  if (shots < 1 || queries < 1)
    throw ValueError("shots and queries must be >= 1, got " + std::to_string(shots) + " and " +
                     std::to_string(queries));
  if (!(outer_lr > 0)) throw ValueError("the outer learning rate must be > 0, got " + std::to_string(outer_lr));
  if (!(clip_grad_norm >= 0)) throw ValueError("the clipping norm must be >= 0, got " + std::to_string(clip_grad_norm));
  if (!is_floating(dtype)) throw ValueError("training needs dtype f32 or f64");
  if (replay) CapturedMetaGradient::validate(meta);
  (void)make_optimizer(optimizer, outer_lr);  // throws for an unknown name
}

Trainer::Trainer(const Model& model, Loss loss, const TaskSampler& tasks, const TrainOptions& options)
    : model_(model), loss_(loss), tasks_(tasks), options_(options), task_rng_(derive_seed(options.seed, 1)) {
  options_.validate();
  Generator init(derive_seed(options.seed, 0));
  params_ = init_meta_params(model, options.meta, init, options.dtype, options.device);
  optimizer_ = make_optimizer(options.optimizer, options.outer_lr);
  if (options_.replay) captured_ = std::make_unique<CapturedMetaGradient>(model, loss, options_.meta);
}

IterationRecord Trainer::step() {
  const std::uint64_t rng_before = task_rng_.position();
  const TaskBatch batch =
      tasks_.sample(options_.meta_batch, options_.shots, options_.queries, task_rng_, options_.dtype);
  // A captured step copies the batch into its buffers straight from the host.
  MetaStepTensors meta;
  try {
    meta = captured_
               ? (*captured_)(params_, batch)
               : meta_gradient_tensors(model_, loss_, options_.meta, params_, batch.to(options_.device), iteration_);
  } catch (...) {  // e.g. task weights refused for a non-finite loss: leave the trainer as it was
    task_rng_.set_position(rng_before);
    throw;
  }
  IterationRecord record;
  record.grad_norm =
      options_.clip_grad_norm > 0 ? clip_grad_norm(meta.grads, options_.clip_grad_norm) : global_norm(meta.grads);
  record.meta_loss = meta.meta_loss.item();
  if (!std::isfinite(record.meta_loss) || !std::isfinite(record.grad_norm)) {
    task_rng_.set_position(rng_before);  // as if the call had not happened
    throw NonFiniteError(non_finite_step(record.meta_loss, record.grad_norm, iteration_ + 1), iteration_ + 1);
  }
  // Optimisers replace their tensors instead of writing into them, so the
  // handles held here are the state before the update.
  const std::vector<Tensor> state_before = optimizer_->state();
  const std::int64_t steps_before = optimizer_->steps();
  std::vector<Tensor> all = params_.all();
  optimizer_->step(all, meta.grads);
  // A finite gradient can still overflow the update (a huge learning rate):
  // such parameters would be checkpointed and every later loss be NaN.
  if (!all_finite(all)) {
    optimizer_->load_state(state_before, steps_before);
    task_rng_.set_position(rng_before);
    throw NonFiniteError("the update at iteration " + std::to_string(iteration_ + 1) +
                             " made the parameters non-finite (meta-loss " + number(record.meta_loss) +
                             ", meta-gradient norm " + number(record.grad_norm) +
                             "); they were not changed (a smaller outer learning rate, or gradient clipping, may help)",
                         iteration_ + 1);
  }
  params_ = MetaParams::from_all(all, params_.model.size());
  record.iteration = ++iteration_;
  record.task_losses = meta.task_losses.to_vector();
  record.task_weights = meta.task_weights.to_vector();
  return record;
}

Checkpoint Trainer::checkpoint(const std::string& config) const {
  const auto on_host = [](const std::vector<Tensor>& ts) {
    std::vector<Tensor> out;
    for (const Tensor& t : ts) out.push_back(t.to(Device::cpu));
    return out;
  };
  return {config,
          iteration_,
          task_rng_.position(),
          on_host(params_.all()),
          on_host(optimizer_->state()),
          optimizer_->steps()};
}

void Trainer::restore(const Checkpoint& c, const std::string& path) {
  check_restorable(c, params_.all(), *optimizer_, path);
  std::vector<Tensor> state;
  for (const Tensor& t : c.optimizer_state) state.push_back(t.to(options_.device));
  optimizer_->load_state(state, c.optimizer_steps);
  params_ = MetaParams::from_all(c.params, params_.model.size()).to(options_.device);
  task_rng_.set_position(c.task_rng_position);
  iteration_ = c.iteration;
}

void check_checkpoint_fits(const Checkpoint& c, const Model& model, const TrainOptions& options,
                           const std::string& path) {
  // The model's own shapes first, from its description: a forged
  // configuration can describe a model far larger than the file, and
  // initialising that model below would allocate all of it. Once these match,
  // the model is no larger than the tensors the file holds.
  const std::vector<ParamInfo>& infos = model.parameters();
  const std::string where = checkpoint_label(path);
  if (c.params.size() < infos.size())
    throw IoError(where + ": holds " + std::to_string(c.params.size()) + " parameter tensors, the model " +
                  model.describe() + " needs " + std::to_string(infos.size()));
  for (std::size_t i = 0; i < infos.size(); ++i)
    if (c.params[i].shape() != infos[i].shape)
      throw IoError(where + ": parameter " + std::to_string(i) + " (" + infos[i].name + ") is " +
                    c.params[i].shape().str() + ", the model " + model.describe() + " needs " + infos[i].shape.str());
  // Only shapes and dtypes are compared, so any generator will do.
  Generator gen(0);
  const MetaParams fresh = init_meta_params(model, options.meta, gen, options.dtype);
  check_restorable(c, fresh.all(), *make_optimizer(options.optimizer, options.outer_lr), path);
}

}  // namespace metatape::meta
