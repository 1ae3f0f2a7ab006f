// MAML, FOMAML, Meta-SGD, MAML++ (LSLR, multi-step loss) and ANIL: one inner
// loop (inner_loop, public as adapt), parameterised by which parameters
// adapt, at what rates, and whether the inner backward is recorded. Reptile
// and the pretrained baseline are in their own files; meta_gradient()
// dispatches. Ragged batches loop over their groups.
#include "metatape/meta/maml.hpp"

#include <algorithm>
#include <cmath>

#include "algorithms.hpp"

namespace metatape::meta {

const char* algorithm_name(Algorithm algorithm) {
  switch (algorithm) {
    case Algorithm::maml:
      return "maml";
    case Algorithm::fomaml:
      return "fomaml";
    case Algorithm::metasgd:
      return "metasgd";
    case Algorithm::anil:
      return "anil";
    case Algorithm::reptile:
      return "reptile";
    case Algorithm::pretrain:
      return "pretrain";
    case Algorithm::kernel:
      return "kernel";
    case Algorithm::metarkhs1:
      return "metarkhs1";
  }
  return "?";
}

Algorithm parse_algorithm(const std::string& name) {
  std::string choices;
  for (Algorithm a : kAlgorithms) {
    if (name == algorithm_name(a)) return a;
    choices += (choices.empty() ? "" : ", ") + std::string(algorithm_name(a));
  }
  throw ValueError("unknown algorithm '" + name + "': choose one of " + choices);
}

void MetaConfig::validate() const {
  if (inner_steps < 0) throw ValueError("inner steps must be >= 0, got " + std::to_string(inner_steps));
  if (!(inner_lr >= 0)) throw ValueError("the inner learning rate must be >= 0, got " + std::to_string(inner_lr));
  if (learned_layer_rates && algorithm != Algorithm::maml && algorithm != Algorithm::fomaml)
    throw ValueError(std::string("learned per-layer rates (LSLR) combine with maml or fomaml, not ") +
                     algorithm_name(algorithm));
  if (multi_step_loss && (algorithm == Algorithm::reptile || algorithm == Algorithm::pretrain))
    throw ValueError(std::string("the multi-step loss needs an outer loss through the inner loop; ") +
                     algorithm_name(algorithm) + " has none");
  if (multi_step_loss && (algorithm == Algorithm::kernel || algorithm == Algorithm::metarkhs1))
    throw ValueError(std::string("the multi-step loss weighs the query losses of the inner steps; ") +
                     algorithm_name(algorithm) + " has no inner steps to weigh");
  if (!std::isfinite(rkhs_alpha) || rkhs_alpha < 0)
    throw ValueError("the Meta-RKHS-I α (rkhs_alpha) must be finite and >= 0, got " + std::to_string(rkhs_alpha));
  if (algorithm == Algorithm::kernel) kernel.validate();
  if ((multi_step_loss || learned_layer_rates || algorithm == Algorithm::reptile) && inner_steps < 1)
    throw ValueError(std::string(algorithm_name(algorithm)) + (multi_step_loss ? " with a multi-step loss" : "") +
                     (learned_layer_rates ? " with learned per-layer rates" : "") + " needs at least one inner step");
}

std::vector<Tensor> MetaParams::all() const {
  std::vector<Tensor> out = model;
  out.insert(out.end(), rates.begin(), rates.end());
  return out;
}

MetaParams MetaParams::from_all(const std::vector<Tensor>& all, std::size_t model_count) {
  if (all.size() < model_count) throw ValueError("MetaParams: fewer tensors than model parameters");
  return {std::vector<Tensor>(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(model_count)),
          std::vector<Tensor>(all.begin() + static_cast<std::ptrdiff_t>(model_count), all.end())};
}

MetaParams init_meta_params(const Model& model, const MetaConfig& config, Generator& gen, DType dtype, Device device) {
  config.validate();
  MetaParams params{model.init(gen, dtype), {}};
  if (config.algorithm == Algorithm::metasgd)
    for (const ParamInfo& p : model.parameters()) params.rates.push_back(full(p.shape, config.inner_lr, dtype));
  if (config.learned_layer_rates)
    params.rates.push_back(full({model.num_layers(), config.inner_steps}, config.inner_lr, dtype));
  // Drawn on the CPU (the same bits everywhere), then moved.
  return params.to(device);
}

MetaParams MetaParams::to(Device device) const {
  MetaParams out;
  for (const Tensor& t : model) out.model.push_back(t.to(device));
  for (const Tensor& t : rates) out.rates.push_back(t.to(device));
  return out;
}

std::vector<double> multi_step_weights(int steps, std::int64_t iteration, std::int64_t anneal_iterations) {
  if (steps <= 0) return {};
  const double uniform = 1.0 / steps, floor = 0.03 / steps;
  const double progress = anneal_iterations <= 0
                              ? 1.0
                              : std::min(1.0, static_cast<double>(iteration) / static_cast<double>(anneal_iterations));
  std::vector<double> weights(static_cast<std::size_t>(steps));
  double rest = 1.0;
  for (int k = 0; k + 1 < steps; ++k) {
    weights[static_cast<std::size_t>(k)] = uniform + (floor - uniform) * progress;
    rest -= weights[static_cast<std::size_t>(k)];
  }
  weights.back() = rest;
  return weights;
}

namespace detail {

std::vector<bool> adapting_mask(const Model& model, const MetaConfig& config) {
  std::vector<bool> mask(model.parameters().size(), config.algorithm != Algorithm::anil);
  if (config.algorithm == Algorithm::anil)
    for (std::size_t i : model.head()) mask[i] = true;
  return mask;
}

Tensor inner_update(const Model& model, const MetaConfig& config, const std::vector<Tensor>& rates, std::size_t i,
                    int step, const Tensor& gradient) {
  if (config.algorithm == Algorithm::metasgd) return mul(rates[i], gradient);  // α_i broadcast over tasks
  if (config.learned_layer_rates) {
    const std::int64_t steps = rates[0].dim(1);
    const std::int64_t column = std::min<std::int64_t>(step, steps - 1);
    const std::int64_t layer = model.parameters()[i].layer;
    // Sliced, not gathered: no index tensor to copy to the device.
    const Tensor rate = slice(slice(rates[0], 0, layer, layer + 1), 1, column, column + 1);
    return mul(reshape(rate, Shape{}), gradient);
  }
  return scale(gradient, config.inner_lr);
}

namespace {

// One SGD step of every task on its support set, in place on `fast`; with
// create_graph the inner backward is recorded (exact meta-gradients).
void inner_step(const Model& model, Loss loss, const MetaConfig& config, const std::vector<Tensor>& rates,
                const std::vector<bool>& adapting, const TaskBatch& batch, int step, bool create_graph,
                std::vector<Tensor>& fast) {
  std::vector<Tensor> wrt;
  for (std::size_t i = 0; i < fast.size(); ++i)
    if (adapting[i]) wrt.push_back(fast[i]);
  // Σ_t L_t, not the mean: each task's copy then receives its own loss's gradient.
  const Tensor objective = sum(per_task_loss(loss, model.forward(fast, batch.support_x), batch.support_y));
  const std::vector<Tensor> g = grad(objective, wrt, {.create_graph = create_graph});
  std::size_t j = 0;
  for (std::size_t i = 0; i < fast.size(); ++i)
    if (adapting[i]) fast[i] = sub(fast[i], inner_update(model, config, rates, i, step, g[j++]));
}

// Per-task copies [T, ...] of the adapting parameters; the others stay shared.
std::vector<Tensor> task_copies(const std::vector<Tensor>& params, const std::vector<bool>& adapting,
                                std::int64_t tasks) {
  std::vector<Tensor> fast = params;
  const std::vector<Tensor> copies = per_task(params, tasks);
  for (std::size_t i = 0; i < fast.size(); ++i)
    if (adapting[i]) fast[i] = copies[i];
  return fast;
}

}  // namespace

std::vector<Tensor> inner_loop(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                               const TaskBatch& batch, int steps, bool record, const AfterStep& after_step) {
  const std::vector<bool> adapting = adapting_mask(model, config);
  std::vector<Tensor> fast;
  if (record) {
    fast = task_copies(params.model, adapting, batch.tasks());
    // A copy of a constant θ is not on the tape; the inner gradient needs it there.
    for (std::size_t i = 0; i < fast.size(); ++i)
      if (adapting[i] && !fast[i].requires_grad()) fast[i].requires_grad_();
    if (after_step) after_step(0, fast);
    for (int k = 0; k < steps; ++k) {
      inner_step(model, loss, config, params.rates, adapting, batch, k, !config.first_order(), fast);
      if (after_step) after_step(k + 1, fast);
    }
    return fast;
  }
  std::vector<Tensor> rates;
  {
    NoGradScope no_grad;
    for (const Tensor& r : params.rates) rates.push_back(r.detach());
    for (const Tensor& p : params.model) fast.push_back(p.detach());
    fast = task_copies(fast, adapting, batch.tasks());
  }
  if (after_step) after_step(0, fast);
  for (int k = 0; k < steps; ++k) {
    {
      TapeScope scope;
      for (std::size_t i = 0; i < fast.size(); ++i)
        if (adapting[i]) fast[i] = fast[i].detach().requires_grad_();
      inner_step(model, loss, config, rates, adapting, batch, k, false, fast);
    }
    for (Tensor& f : fast) f = f.detach();
    if (after_step) after_step(k + 1, fast);
  }
  return fast;
}

}  // namespace detail

namespace {

// The outer loss of the MAML family on `batch` (mean over its tasks), from
// recorded meta-parameters; appends the tasks' final query losses ([T]).
Tensor maml_outer_loss(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& leaves,
                       const TaskBatch& batch, std::int64_t iteration, std::vector<Tensor>& task_losses) {
  const auto query_losses = [&](const std::vector<Tensor>& fast) {
    return per_task_loss(loss, model.forward(fast, batch.query_x), batch.query_y);
  };
  const int steps = config.inner_steps;
  const std::vector<double> weights = config.multi_step_loss
                                          ? multi_step_weights(steps, iteration, config.msl_anneal_iterations)
                                          : std::vector<double>{};
  Tensor outer;
  const auto intermediate_terms = [&](int k, const std::vector<Tensor>& fast) {
    if (!config.multi_step_loss || k < 1 || k >= steps) return;
    const Tensor term = scale(mean(query_losses(fast)), weights[static_cast<std::size_t>(k - 1)]);
    outer = outer.defined() ? add(outer, term) : term;
  };
  const std::vector<Tensor> fast =
      detail::inner_loop(model, loss, config, leaves, batch, steps, true, intermediate_terms);
  const Tensor final_losses = query_losses(fast);
  task_losses.push_back(final_losses.detach());
  const Tensor final_term = config.multi_step_loss ? scale(mean(final_losses), weights.back()) : mean(final_losses);
  return outer.defined() ? add(outer, final_term) : final_term;
}

MetaStepTensors maml_gradient(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                              const TaskBatch& batch, std::int64_t iteration) {
  TapeScope scope;
  std::vector<Tensor> leaves;
  for (const Tensor& p : params.all()) leaves.push_back(p.detach().requires_grad_());
  const MetaParams recorded = MetaParams::from_all(leaves, params.model.size());

  MetaStepTensors step;
  std::vector<Tensor> task_losses;
  Tensor outer;
  if (config.task_batched) {
    outer = maml_outer_loss(model, loss, config, recorded, batch, iteration, task_losses);
  } else {  // one task at a time, as a framework user loops: the same sum, T graphs
    const std::int64_t tasks = batch.tasks();
    for (std::int64_t t = 0; t < tasks; ++t) {
      const Tensor term =
          scale(maml_outer_loss(model, loss, config, recorded, batch.slice(t, t + 1), iteration, task_losses),
                1.0 / static_cast<double>(tasks));
      outer = outer.defined() ? add(outer, term) : term;
    }
  }
  step.task_losses = concat(task_losses);
  step.meta_loss = outer.detach();
  // With no inner step a learned rate never touches the loss: its gradient is
  // 0. Nothing walks this tape again, so its saved values can go as the walk
  // passes them: peak memory is then the forward's, not forward + gradients.
  step.grads = grad(outer, leaves, {.allow_unused = config.inner_steps == 0, .retain_graph = false});
  return step;
}

// The losses read on the host; the gradients stay where they are.
MetaStep on_host(MetaStepTensors step) {
  MetaStep out{step.meta_loss.item(), step.task_losses.to_vector(), {}, std::move(step.grads)};
  out.task_weights =
      step.task_weights.defined()
          ? step.task_weights.to_vector()
          : std::vector<double>(out.task_losses.size(), 1.0 / static_cast<double>(out.task_losses.size()));
  return out;
}

// Throws ValueError for a ragged batch without tasks.
void check_groups(const char* caller, const RaggedTaskBatch& batch) {
  if (batch.groups.empty()) throw ValueError(std::string(caller) + ": the ragged batch has no groups");
}

}  // namespace

MetaStep meta_gradient(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                       const TaskBatch& batch, std::int64_t iteration) {
  return on_host(meta_gradient_tensors(model, loss, config, params, batch, iteration));
}

MetaStep meta_gradient(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                       const RaggedTaskBatch& batch, std::int64_t iteration) {
  return on_host(meta_gradient_tensors(model, loss, config, params, batch, iteration));
}

MetaStepTensors meta_gradient_tensors(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                                      const TaskBatch& batch, std::int64_t iteration) {
  validate_inputs("meta_gradient", model, loss, config, params, &batch);
  if (config.algorithm == Algorithm::reptile) return detail::reptile_step(model, loss, config, params, batch);
  if (config.algorithm == Algorithm::pretrain) return detail::pretrain_gradient(model, loss, params, batch);
  if (config.algorithm == Algorithm::kernel) return detail::kernel_gradient(model, loss, config, params, batch);
  if (config.algorithm == Algorithm::metarkhs1) return detail::metarkhs1_gradient(model, loss, config, params, batch);
  return maml_gradient(model, loss, config, params, batch, iteration);
}

MetaStepTensors meta_gradient_tensors(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                                      const RaggedTaskBatch& batch, std::int64_t iteration) {
  check_groups("meta_gradient", batch);
  // Every algorithm's meta-loss and gradient are means over tasks of per-task
  // terms, so the groups' results weighted by their task counts are the
  // result on all tasks. Each group's graph is released before the next.
  const double total = static_cast<double>(batch.tasks());
  MetaStepTensors out;
  std::vector<Tensor> task_losses;
  for (const TaskBatch& group : batch.groups) {
    MetaStepTensors part = meta_gradient_tensors(model, loss, config, params, group, iteration);
    const double weight = static_cast<double>(group.tasks()) / total;
    NoGradScope no_grad;
    const auto accumulate = [weight](Tensor& into, const Tensor& term) {
      into = into.defined() ? add(into, scale(term, weight)) : scale(term, weight);
    };
    accumulate(out.meta_loss, part.meta_loss);
    out.grads.resize(part.grads.size());
    for (std::size_t i = 0; i < part.grads.size(); ++i) accumulate(out.grads[i], part.grads[i]);
    task_losses.push_back(part.task_losses);
  }
  NoGradScope no_grad;
  out.task_losses = concat(task_losses);
  return out;
}

CapturedMetaGradient::CapturedMetaGradient(const Model& model, Loss loss, const MetaConfig& config)
    : model_(model), loss_(loss), config_(config) {
  validate(config_);
}

void CapturedMetaGradient::validate(const MetaConfig& config) {
  config.validate();
  if (config.multi_step_loss)
    throw ValueError(
        "a CUDA graph step cannot use the multi-step loss: its weights change every iteration, a graph "
        "replays the first");
}

MetaStepTensors CapturedMetaGradient::operator()(const MetaParams& params, const TaskBatch& batch) {
  // Host-side checks only: nothing is read from the device, so a replay
  // stays as cheap as before.
  validate_inputs("CapturedMetaGradient", model_, loss_, config_, params, &batch);
  // Inputs: MetaParams::all(), then the batch. Outputs: the gradients, the
  // meta-loss, the task losses.
  std::vector<Tensor> inputs = params.all();
  const std::size_t count = inputs.size(), model_count = params.model.size();
  inputs.insert(inputs.end(), {batch.support_x, batch.support_y, batch.query_x, batch.query_y});
  if (!step_) {
    const auto step = [this, count, model_count](const std::vector<Tensor>& in) {
      const MetaParams p =
          MetaParams::from_all({in.begin(), in.begin() + static_cast<std::ptrdiff_t>(count)}, model_count);
      const TaskBatch tasks{in[count], in[count + 1], in[count + 2], in[count + 3]};
      MetaStepTensors meta = meta_gradient_tensors(model_, loss_, config_, p, tasks, 0);
      std::vector<Tensor> out = std::move(meta.grads);
      out.push_back(meta.meta_loss);
      out.push_back(meta.task_losses);
      return out;
    };
    step_ = std::make_unique<CapturedStep>(step, inputs);
  }
  std::vector<Tensor> out = (*step_)(inputs);
  MetaStepTensors meta;
  meta.task_losses = out.back();
  out.pop_back();
  meta.meta_loss = out.back();
  out.pop_back();
  meta.grads = std::move(out);
  return meta;
}

Adapted adapt(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params, const TaskBatch& batch,
              int steps, const AdaptOptions& options) {
  validate_inputs("adapt", model, loss, config, params, &batch);
  if (config.algorithm == Algorithm::kernel)
    throw ValueError(
        "adapt: the kernel algorithm adapts in function space, in closed form: there are no adapted parameters; "
        "kernel_adapt (kernel_adaptation.hpp) gives its adapted predictions");
  if (steps < 0) throw ValueError("adapt: steps must be >= 0, got " + std::to_string(steps));
  const std::int64_t tasks = batch.tasks();
  // The shared parameters (ANIL's body) as per-task views, so every result is [T, ...].
  const auto all_per_task = [&](const std::vector<Tensor>& fast) {
    std::vector<Tensor> out = fast;
    for (std::size_t i = 0; i < out.size(); ++i)
      if (out[i].rank() == model.parameters()[i].shape.rank()) out[i] = per_task({out[i]}, tasks)[0];
    if (!options.record)
      for (Tensor& t : out) t = t.detach();
    return out;
  };
  Adapted result;
  detail::AfterStep keep;
  if (options.history)
    keep = [&](int, const std::vector<Tensor>& fast) { result.history.push_back(all_per_task(fast)); };
  result.params = all_per_task(detail::inner_loop(model, loss, config, params, batch, steps, options.record, keep));
  return result;
}

std::vector<Adapted> adapt(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                           const RaggedTaskBatch& batch, int steps, const AdaptOptions& options) {
  check_groups("adapt", batch);
  std::vector<Adapted> out;
  for (const TaskBatch& group : batch.groups) out.push_back(adapt(model, loss, config, params, group, steps, options));
  return out;
}

std::vector<std::vector<double>> adaptation_curve(const Model& model, Loss loss, const MetaConfig& config,
                                                  const MetaParams& params, const TaskBatch& batch, int steps) {
  validate_inputs("adaptation_curve", model, loss, config, params, &batch);
  if (steps < 0) throw ValueError("adaptation_curve: steps must be >= 0, got " + std::to_string(steps));
  if (config.algorithm == Algorithm::kernel) {
    const KernelAdapted adapted = kernel_adapt(model, loss, config, params, batch);
    return {adapted.query_loss_before.to_vector(), adapted.query_loss.to_vector()};
  }
  std::vector<std::vector<double>> curve;
  const auto record_query_losses = [&](int, const std::vector<Tensor>& fast) {
    NoGradScope no_grad;
    curve.push_back(per_task_loss(loss, model.forward(fast, batch.query_x), batch.query_y).to_vector());
  };
  (void)detail::inner_loop(model, loss, config, params, batch, steps, false, record_query_losses);
  return curve;
}

std::vector<std::vector<double>> adaptation_curve(const Model& model, Loss loss, const MetaConfig& config,
                                                  const MetaParams& params, const RaggedTaskBatch& batch, int steps) {
  check_groups("adaptation_curve", batch);
  std::vector<std::vector<double>> curve;
  for (const TaskBatch& group : batch.groups) {
    const auto part = adaptation_curve(model, loss, config, params, group, steps);
    curve.resize(part.size());
    for (std::size_t k = 0; k < part.size(); ++k) curve[k].insert(curve[k].end(), part[k].begin(), part[k].end());
  }
  return curve;
}

}  // namespace metatape::meta
