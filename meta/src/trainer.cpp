#include "metatape/meta/trainer.hpp"

#include <cmath>
#include <exception>
#include <sstream>

#include "choices.hpp"

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

// The task terms of a rank without tasks (a meta-batch smaller than the
// group): [0] rows of every MetaParams::all() entry.
TaskTerms no_task_terms(const MetaParams& params) {
  const std::vector<Tensor> all = params.all();
  const DType dtype = all.front().dtype();
  const Device device = all.front().device();
  TaskTerms terms{zeros({0}, dtype, device), zeros({0}, dtype, device), {}};
  for (const Tensor& p : all) {
    Shape rows{0};
    for (std::int64_t d : p.shape()) rows.push_back(d);
    terms.gradients.push_back(zeros(rows, dtype, device));
  }
  return terms;
}

// What every rank must have restored the same: the parameters' bytes, the
// iteration and the task stream's position.
std::string restored_state(const Checkpoint& c) {
  std::string bytes = std::to_string(c.iteration) + "/" + std::to_string(c.task_rng_position) + "/";
  for (const Tensor& t : c.params) {
    const std::vector<double> values = t.to_vector();  // f32 widens exactly
    bytes.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(double));
  }
  return bytes;
}

}  // namespace

const char* reduction_name(Reduction reduction) {
  switch (reduction) {
    case Reduction::deterministic:
      return "deterministic";
    case Reduction::fast:
      return "fast";
  }
  return "?";
}

Reduction parse_reduction(const std::string& name) {
  return detail::parse_choice(name, kReductions, reduction_name, "reduction");
}

std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream) {
  std::uint64_t z = seed + 0x9E3779B97F4A7C15ull * (stream + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::string unsplittable_reason(const MetaConfig& meta) {
  if (meta.weighting.differentiate)
    return "needs constant task weights: differentiated weights (--differentiate-weights) couple every task's loss, "
           "so the meta-gradient cannot be split by task";
  if (meta.weighting.rule == TaskWeighting::agreement && meta.multi_step_loss)
    return "cannot combine the agreement task weighting with the multi-step loss (--multi-step-loss): the split "
           "meta-gradient has each task's whole objective, not its final loss alone";
  return "";
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
  if (communicator) {
    const std::string group = "training over a communicator (" + communicator->name() + ", " +
                              std::to_string(communicator->size()) + " processes)";
    if (replay && communicator->size() > 1)
      throw ValueError(group + " cannot replay a captured step (--replay): each rank computes its own tasks");
    if (const std::string reason = unsplittable_reason(meta); !reason.empty()) throw ValueError(group + " " + reason);
  }
  (void)make_optimizer(optimizer, outer_lr);  // throws for an unknown name
}

Trainer::Trainer(const Model& model, Loss loss, const TaskSampler& tasks, const TrainOptions& options)
    : model_(model), loss_(loss), tasks_(tasks), options_(options), task_rng_(derive_seed(options.seed, 1)) {
  options_.validate();
  Generator init(derive_seed(options.seed, 0));
  params_ = init_meta_params(model, options.meta, init, options.dtype, options.device);
  optimizer_ = make_optimizer(options.optimizer, options.outer_lr);
  // With a communicator (of one process: validate) the captured step is the
  // split one, so that replaying gives the bits of the eager split step.
  if (options_.replay)
    captured_ = std::make_unique<CapturedMetaGradient>(model, loss, options_.meta, options_.communicator != nullptr);
}

MetaStepTensors Trainer::local_meta_step() {
  const TaskBatch batch =
      tasks_.sample(options_.meta_batch, options_.shots, options_.queries, task_rng_, options_.dtype);
  // A captured step copies the batch into its buffers straight from the host.
  return captured_
             ? (*captured_)(params_, batch)
             : meta_gradient_tensors(model_, loss_, options_.meta, params_, batch.to(options_.device), iteration_);
}

MetaStepTensors Trainer::distributed_meta_step() {
  Communicator& group = *options_.communicator;
  const TaskRange range = task_range(options_.meta_batch, group.rank(), group.size());
  TaskTerms local;
  // Agreed on before any other collective: the others would wait forever
  // for a rank that threw. The rank that failed keeps its own error.
  on_every_rank(group, "iteration " + std::to_string(iteration_ + 1), [&] {
    // Every rank draws the whole batch, so the task stream is one process's.
    const TaskBatch batch =
        tasks_.sample(options_.meta_batch, options_.shots, options_.queries, task_rng_, options_.dtype);
    local = range.count() == 0 ? no_task_terms(params_)
                               : task_terms(model_, loss_, options_.meta, params_,
                                            batch.slice(range.begin, range.end).to(options_.device), iteration_,
                                            options_.reduction == Reduction::deterministic);
  });
  return reduce_task_terms(group, options_.reduction, options_.meta.weighting, local, options_.meta_batch,
                           params_.model.size());
}

IterationRecord Trainer::step() {
  const std::uint64_t rng_before = task_rng_.position();
  MetaStepTensors meta;
  try {
    meta = options_.communicator && !captured_ ? distributed_meta_step() : local_meta_step();
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
    note_failure_known_to_every_rank();  // every rank reduced the same values
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
    note_failure_known_to_every_rank();
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
  if (!options_.communicator) {
    check_restorable(c, params_.all(), *optimizer_, path);
    restore_state(c);
    return;
  }
  Communicator& group = *options_.communicator;
  on_every_rank(group, "restoring " + checkpoint_label(path),
                [&] { check_restorable(c, params_.all(), *optimizer_, path); });
  require_same_on_all_ranks(group, "the restored checkpoint (" + checkpoint_label(path) + ")", restored_state(c));
  restore_state(c);
}

void Trainer::restore_state(const Checkpoint& c) {
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
