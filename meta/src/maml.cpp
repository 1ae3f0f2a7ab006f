// MAML, FOMAML, Meta-SGD, MAML++ (LSLR, multi-step loss) and ANIL: one inner
// loop (inner_loop, public as adapt), parameterised by which parameters
// adapt, at what rates, and whether the inner backward is recorded. Reptile
// and the pretrained baseline are in their own files; meta_gradient()
// dispatches. Ragged batches loop over their groups.
#include "metatape/meta/maml.hpp"

#include <algorithm>
#include <cmath>

#include "algorithms.hpp"
#include "choices.hpp"

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
  return detail::parse_choice(name, kAlgorithms, algorithm_name, "algorithm");
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
  weighting.validate();
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

namespace {

// The learned rate of parameter i at inner step `step`, shaped to multiply
// its gradient: Meta-SGD's α_i, or LSLR's rate for the parameter's layer and
// the step. Undefined for a fixed α.
Tensor learned_rate(const Model& model, const MetaConfig& config, const std::vector<Tensor>& rates, std::size_t i,
                    int step, const Tensor& gradient) {
  // Meta-SGD: α_i broadcast over tasks, or already per task ([T] + shape, as task_terms copies it).
  if (config.algorithm == Algorithm::metasgd) return rates[i];
  if (!config.learned_layer_rates) return {};
  // [layers, steps], or [T, layers, steps] when task_terms copies it per task.
  const Tensor& table = rates[0];
  const int axis = table.rank() - 2;
  const std::int64_t steps = table.dim(axis + 1);
  const std::int64_t column = std::min<std::int64_t>(step, steps - 1);
  const std::int64_t layer = model.parameters()[i].layer;
  // Sliced, not gathered: no index tensor to copy to the device.
  const Tensor rate = slice(slice(table, axis, layer, layer + 1), axis + 1, column, column + 1);
  if (axis == 0) return reshape(rate, Shape{});
  Shape per_task_rate{table.dim(0)};  // [T, 1, ...] against the gradient's [T] + shape
  for (int a = 1; a < gradient.rank(); ++a) per_task_rate.push_back(1);
  return reshape(rate, per_task_rate);
}

}  // namespace

Tensor inner_update(const Model& model, const MetaConfig& config, const std::vector<Tensor>& rates, std::size_t i,
                    int step, const Tensor& parameter, const Tensor& gradient) {
  const Tensor rate = learned_rate(model, config, rates, i, step, gradient);
  if (rate.defined()) return sub(parameter, mul(rate, gradient));
  // θ + (−α)·g has the bits of θ − α·g wherever the result is not NaN
  // (negation is exact, and x − y is x + (−y); a NaN's sign may differ), and
  // its backward to g is one scale, where sub's would add a neg. add_scaled
  // computes it in one pass over the per-task weights, not a scale and an add.
  return add_scaled(parameter, gradient, -config.inner_lr);
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
    if (adapting[i]) fast[i] = inner_update(model, config, rates, i, step, fast[i], g[j++]);
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
                               const TaskBatch& batch, int steps, bool record, const AfterStep& after_step,
                               bool copy_all) {
  const std::vector<bool> adapting = adapting_mask(model, config);
  std::vector<Tensor> fast;
  if (record) {
    fast = task_copies(params.model, copy_all ? std::vector<bool>(adapting.size(), true) : adapting, batch.tasks());
    // A copy of a constant θ is not on the tape; the inner gradient needs it there.
    for (std::size_t i = 0; i < fast.size(); ++i)
      if ((adapting[i] || copy_all) && !fast[i].requires_grad()) fast[i].requires_grad_();
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

// One batch's part of the MAML-family outer loss, recorded from the
// meta-parameters: each task's query loss after the final inner step, after
// the steps k = 1..τ-1 when the multi-step loss needs them, and for the
// agreement weighting the step-0 copies θ_t^0 of every model parameter.
struct OuterTerms {
  Tensor final_losses;                      // [T]
  std::vector<Tensor> step_losses;          // [τ - 1] of [T], multi-step loss only
  std::vector<std::vector<Tensor>> copies;  // agreement only: per batch part, each [T_part] + shape
};

OuterTerms maml_outer_terms(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& leaves,
                            const TaskBatch& batch) {
  const auto query_losses = [&](const std::vector<Tensor>& fast) {
    return per_task_loss(loss, model.forward(fast, batch.query_x), batch.query_y);
  };
  const int steps = config.inner_steps;
  const bool agreement = config.weighting.rule == TaskWeighting::agreement;
  OuterTerms terms;
  const auto after_step = [&](int k, const std::vector<Tensor>& fast) {
    if (k == 0 && agreement) terms.copies.push_back(fast);
    if (config.multi_step_loss && k >= 1 && k < steps) terms.step_losses.push_back(query_losses(fast));
  };
  terms.final_losses =
      query_losses(detail::inner_loop(model, loss, config, leaves, batch, steps, true, after_step, agreement));
  return terms;
}

// The terms of consecutive task slices as the terms of all their tasks.
OuterTerms concat_terms(const std::vector<OuterTerms>& parts) {
  OuterTerms out;
  std::vector<Tensor> finals;
  for (const OuterTerms& part : parts) {
    finals.push_back(part.final_losses);
    out.copies.insert(out.copies.end(), part.copies.begin(), part.copies.end());
  }
  out.final_losses = concat(finals);
  for (std::size_t k = 0; k < parts[0].step_losses.size(); ++k) {
    std::vector<Tensor> step;
    for (const OuterTerms& part : parts) step.push_back(part.step_losses[k]);
    out.step_losses.push_back(concat(step));
  }
  return out;
}

// g_t of the agreement rule: the gradient of Σ_t L_t with respect to the
// step-0 copies, whose row t only task t's loss reaches; the graph is kept
// for the outer backward. Each result is [T] + the parameter's shape.
std::vector<Tensor> per_task_gradients(const MetaConfig& config, const OuterTerms& terms) {
  std::vector<Tensor> wrt;
  for (const std::vector<Tensor>& part : terms.copies) wrt.insert(wrt.end(), part.begin(), part.end());
  const std::vector<Tensor> g =
      grad(sum(terms.final_losses), wrt, {.create_graph = config.weighting.differentiate, .retain_graph = true});
  const std::size_t count = terms.copies[0].size();
  std::vector<Tensor> out;
  for (std::size_t i = 0; i < count; ++i) {
    std::vector<Tensor> rows;
    for (std::size_t p = 0; p < terms.copies.size(); ++p) rows.push_back(g[p * count + i]);
    out.push_back(rows.size() == 1 ? rows[0] : concat(rows));
  }
  return out;
}

struct OuterLoss {
  Tensor loss;     // rank 0, recorded
  Tensor weights;  // [T], detached
};

// Σ_t w_t L_t^τ, with the multi-step loss Σ_k v_k Σ_t w_t L_t^k: every step's
// losses weighted by the weights of the final ones (docs/methods.md §3).
// Uniform is mean(L^k), so plain MAML keeps its bits.
OuterLoss maml_outer_loss(const MetaConfig& config, const OuterTerms& terms, std::int64_t iteration) {
  const detail::WeightedLoss final =
      detail::weighted_outer_loss(config, terms.final_losses, [&] { return per_task_gradients(config, terms); });
  if (!config.multi_step_loss) return {final.loss, final.weights};
  const std::vector<double> v = multi_step_weights(config.inner_steps, iteration, config.msl_anneal_iterations);
  Tensor outer;
  for (std::size_t k = 0; k < terms.step_losses.size(); ++k) {
    const Tensor term = scale(detail::weighted_task_sum(config.weighting, final.recorded, terms.step_losses[k]), v[k]);
    outer = outer.defined() ? add(outer, term) : term;
  }
  const Tensor final_term = scale(final.loss, v.back());
  return {outer.defined() ? add(outer, final_term) : final_term, final.weights};
}

// The looped meta-batch (task_batched = false): one graph per task, as a
// framework user loops. Uniform sums the tasks' outer losses / T, as before
// weighting; the other rules need all losses at once, so the tasks' terms
// are gathered first and weighted together, as in the batched graph.
OuterLoss looped_outer_loss(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& leaves,
                            const TaskBatch& batch, std::int64_t iteration, Tensor& task_losses) {
  const std::int64_t tasks = batch.tasks();
  std::vector<OuterTerms> parts;
  for (std::int64_t t = 0; t < tasks; ++t)
    parts.push_back(maml_outer_terms(model, loss, config, leaves, batch.slice(t, t + 1)));
  const OuterTerms all = concat_terms(parts);
  task_losses = all.final_losses;
  if (config.weighting.rule != TaskWeighting::uniform) return maml_outer_loss(config, all, iteration);
  OuterLoss out;
  for (const OuterTerms& part : parts) {
    const OuterLoss one = maml_outer_loss(config, part, iteration);
    const Tensor term = scale(one.loss, 1.0 / static_cast<double>(tasks));
    out.loss = out.loss.defined() ? add(out.loss, term) : term;
  }
  out.weights = full({tasks}, 1.0 / static_cast<double>(tasks), task_losses.dtype(), task_losses.device());
  return out;
}

MetaStepTensors maml_gradient(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                              const TaskBatch& batch, std::int64_t iteration) {
  TapeScope scope;
  const std::vector<Tensor> leaves = detail::recorded_leaves(params.all());
  const MetaParams recorded = MetaParams::from_all(leaves, params.model.size());

  Tensor task_losses;
  OuterLoss outer;
  if (config.task_batched) {
    const OuterTerms terms = maml_outer_terms(model, loss, config, recorded, batch);
    task_losses = terms.final_losses;
    outer = maml_outer_loss(config, terms, iteration);
  } else {
    outer = looped_outer_loss(model, loss, config, recorded, batch, iteration, task_losses);
  }
  MetaStepTensors step;
  step.task_losses = task_losses.detach();
  step.task_weights = outer.weights;
  step.meta_loss = outer.loss.detach();
  // With no inner step a learned rate never touches the loss: its gradient is
  // 0. Nothing walks this tape again, so its saved values can go as the walk
  // passes them: peak memory is then the forward's, not forward + gradients.
  step.grads = grad(outer.loss, leaves, {.allow_unused = config.inner_steps == 0, .retain_graph = false});
  return step;
}

// The losses read on the host; the gradients stay where they are.
MetaStep on_host(MetaStepTensors step) {
  return {step.meta_loss.item(), step.task_losses.to_vector(), step.task_weights.to_vector(), std::move(step.grads)};
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
  if (detail::meta_gradient_splits_by_task(config, params, batch))
    return combine_task_terms(config.weighting,
                              task_terms(model, loss, config, params, batch, iteration, /*exact_rows=*/false),
                              params.model.size());
  if (config.algorithm == Algorithm::reptile) return detail::reptile_step(model, loss, config, params, batch);
  if (config.algorithm == Algorithm::pretrain) return detail::pretrain_gradient(model, loss, config, params, batch);
  if (config.algorithm == Algorithm::kernel) return detail::kernel_gradient(model, loss, config, params, batch);
  if (config.algorithm == Algorithm::metarkhs1) return detail::metarkhs1_gradient(model, loss, config, params, batch);
  return maml_gradient(model, loss, config, params, batch, iteration);
}

MetaStepTensors meta_gradient_tensors(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                                      const RaggedTaskBatch& batch, std::int64_t iteration) {
  check_groups("meta_gradient", batch);
  if (config.weighting.rule != TaskWeighting::uniform)
    throw ValueError(std::string("meta_gradient: task weighting '") + task_weighting_name(config.weighting.rule) +
                     "' needs every task's loss at once, and a ragged batch is processed group by group: only "
                     "uniform weighting is supported for ragged batches");
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
  out.task_weights = full({out.task_losses.dim(0)}, 1.0 / total, out.task_losses.dtype(), out.task_losses.device());
  return out;
}

CapturedMetaGradient::CapturedMetaGradient(const Model& model, Loss loss, const MetaConfig& config, bool split_by_task)
    : model_(model), loss_(loss), config_(config), split_by_task_(split_by_task) {
  validate(config_);
}

void CapturedMetaGradient::validate(const MetaConfig& config) {
  config.validate();
  if (config.multi_step_loss)
    throw ValueError(
        "a captured (replayed) step cannot use the multi-step loss: its weights change every iteration, a replay "
        "repeats the first");
}

MetaStepTensors CapturedMetaGradient::operator()(const MetaParams& params, const TaskBatch& batch) {
  // Host-side checks only: nothing is read from the device, so a replay
  // stays as cheap as before. The batch may be on the host: CapturedStep
  // copies each input into its graph's buffers.
  validate_inputs("CapturedMetaGradient", model_, loss_, config_, params, &batch, BatchPlace::host_or_params);
  // Inputs: MetaParams::all(), then the batch. Outputs: the gradients, the
  // meta-loss, the task losses, the task weights.
  std::vector<Tensor> inputs = params.all();
  const std::size_t count = inputs.size(), model_count = params.model.size();
  inputs.insert(inputs.end(), {batch.support_x, batch.support_y, batch.query_x, batch.query_y});
  if (!step_) {
    const auto step = [this, count, model_count](const std::vector<Tensor>& in) {
      const MetaParams p =
          MetaParams::from_all({in.begin(), in.begin() + static_cast<std::ptrdiff_t>(count)}, model_count);
      const TaskBatch tasks{in[count], in[count + 1], in[count + 2], in[count + 3]};
      MetaStepTensors meta =
          split_by_task_
              ? combine_task_terms(config_.weighting, task_terms(model_, loss_, config_, p, tasks, 0), model_count)
              : meta_gradient_tensors(model_, loss_, config_, p, tasks, 0);
      std::vector<Tensor> out = std::move(meta.grads);
      out.push_back(meta.meta_loss);
      out.push_back(meta.task_losses);
      out.push_back(meta.task_weights);
      return out;
    };
    step_ = std::make_unique<CapturedStep>(step, inputs, inputs.front().device());
  }
  std::vector<Tensor> out = (*step_)(inputs);
  MetaStepTensors meta;
  meta.task_weights = out.back();
  out.pop_back();
  meta.task_losses = out.back();
  out.pop_back();
  meta.meta_loss = out.back();
  out.pop_back();
  meta.grads = std::move(out);
  return meta;
}

std::vector<CapturedStep::KernelTime> CapturedMetaGradient::kernel_times(int rounds) const {
  if (!step_) throw ValueError("CapturedMetaGradient::kernel_times: no step captured yet (call the step once first)");
  return step_->kernel_times(rounds);
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

void QueryCurve::append(const QueryCurve& part) {
  const auto append_rows = [](std::vector<std::vector<double>>& into, const std::vector<std::vector<double>>& rows) {
    into.resize(rows.size());
    for (std::size_t k = 0; k < rows.size(); ++k) into[k].insert(into[k].end(), rows[k].begin(), rows[k].end());
  };
  append_rows(loss, part.loss);
  append_rows(accuracy, part.accuracy);
}

namespace {

// query_curve, its errors naming `caller` (query_curve or adaptation_curve).
QueryCurve curve_of(const char* caller, const Model& model, Loss loss, const MetaConfig& config,
                    const MetaParams& params, const TaskBatch& batch, int steps) {
  validate_inputs(caller, model, loss, config, params, &batch);
  if (steps < 0) throw ValueError(std::string(caller) + ": steps must be >= 0, got " + std::to_string(steps));
  const bool classification = loss == Loss::cross_entropy;
  QueryCurve curve;
  const auto record_row = [&](const Tensor& query_loss, const Tensor& query_output) {
    curve.loss.push_back(query_loss.to_vector());
    if (classification) curve.accuracy.push_back(per_task_accuracy(query_output, batch.query_y));
  };
  if (config.algorithm == Algorithm::kernel) {
    const KernelAdapted adapted = kernel_adapt(model, loss, config, params, batch);
    record_row(adapted.query_loss_before, adapted.query_prediction_before);
    record_row(adapted.query_loss, adapted.query_prediction);
    return curve;
  }
  const auto record_query_losses = [&](int, const std::vector<Tensor>& fast) {
    NoGradScope no_grad;
    const Tensor output = model.forward(fast, batch.query_x);
    record_row(per_task_loss(loss, output, batch.query_y), output);
  };
  (void)detail::inner_loop(model, loss, config, params, batch, steps, false, record_query_losses);
  return curve;
}

QueryCurve curve_of(const char* caller, const Model& model, Loss loss, const MetaConfig& config,
                    const MetaParams& params, const RaggedTaskBatch& batch, int steps) {
  check_groups(caller, batch);
  QueryCurve curve;
  for (const TaskBatch& group : batch.groups) curve.append(curve_of(caller, model, loss, config, params, group, steps));
  return curve;
}

}  // namespace

QueryCurve query_curve(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                       const TaskBatch& batch, int steps) {
  return curve_of("query_curve", model, loss, config, params, batch, steps);
}

QueryCurve query_curve(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                       const RaggedTaskBatch& batch, int steps) {
  return curve_of("query_curve", model, loss, config, params, batch, steps);
}

std::vector<std::vector<double>> adaptation_curve(const Model& model, Loss loss, const MetaConfig& config,
                                                  const MetaParams& params, const TaskBatch& batch, int steps) {
  return curve_of("adaptation_curve", model, loss, config, params, batch, steps).loss;
}

std::vector<std::vector<double>> adaptation_curve(const Model& model, Loss loss, const MetaConfig& config,
                                                  const MetaParams& params, const RaggedTaskBatch& batch, int steps) {
  return curve_of("adaptation_curve", model, loss, config, params, batch, steps).loss;
}

}  // namespace metatape::meta
