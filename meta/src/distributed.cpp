// The meta-gradient split by task (task_terms), its combination in task
// order (combine_task_terms) and its reduction over a group of processes
// (reduce_task_terms): docs/methods.md §8.
#include <algorithm>
#include <string>
#include <vector>

#include "algorithms.hpp"
#include "metatape/meta/trainer.hpp"

namespace metatape::meta {
namespace {

// The MAML family in one graph: every entry of MetaParams::all() copied per
// task, so that task t's objective reaches only row t of each copy, and the
// gradient of Σ_t O_t with respect to the copies is every g_t at once.
TaskTerms maml_task_terms(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                          const TaskBatch& batch, std::int64_t iteration) {
  TapeScope scope;
  const std::vector<Tensor> leaves = detail::recorded_leaves(params.all());
  const MetaParams recorded = MetaParams::from_all(leaves, params.model.size());
  // Learned rates per task ([T] + shape): shared, their gradient would be the tasks' sum.
  const MetaParams copied{recorded.model, per_task(recorded.rates, batch.tasks())};
  const int steps = config.inner_steps;
  const std::vector<double> v = config.multi_step_loss
                                    ? multi_step_weights(steps, iteration, config.msl_anneal_iterations)
                                    : std::vector<double>{};
  const auto query_losses = [&](const std::vector<Tensor>& fast) {
    return per_task_loss(loss, model.forward(fast, batch.query_x), batch.query_y);
  };
  std::vector<Tensor> model_copies;  // θ_t^0, each [T] + shape
  Tensor objectives;                 // [T], the multi-step loss's earlier terms first
  const auto add_term = [&objectives](const Tensor& term) {
    objectives = objectives.defined() ? add(objectives, term) : term;
  };
  const auto after_step = [&](int k, const std::vector<Tensor>& fast) {
    if (k == 0) model_copies = fast;
    if (config.multi_step_loss && k >= 1 && k < steps)
      add_term(scale(query_losses(fast), v[static_cast<std::size_t>(k - 1)]));
  };
  const Tensor final_losses =
      query_losses(detail::inner_loop(model, loss, config, copied, batch, steps, true, after_step, /*copy_all=*/true));
  if (config.multi_step_loss)
    add_term(scale(final_losses, v.back()));
  else
    objectives = final_losses;
  std::vector<Tensor> wrt = model_copies;
  wrt.insert(wrt.end(), copied.rates.begin(), copied.rates.end());
  TaskTerms terms;
  // With no inner step a learned rate never touches the loss: its rows are 0.
  terms.gradients = grad(sum(objectives), wrt, {.allow_unused = steps == 0, .retain_graph = false});
  terms.losses = final_losses.detach();
  terms.objectives = objectives.detach();
  return terms;
}

// Reptile in one batch: every parameter adapts, so the inner loop's copies
// are per task, and g_t = θ − θ_t^τ is row t of θ − the adapted copies.
TaskTerms reptile_task_terms(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                             const TaskBatch& batch, std::int64_t) {
  const std::vector<Tensor> fast = detail::inner_loop(model, loss, config, params, batch, config.inner_steps, false);
  NoGradScope no_grad;
  TaskTerms terms;
  terms.losses = per_task_loss(loss, model.forward(fast, batch.query_x), batch.query_y);
  terms.objectives = terms.losses;
  terms.gradients = detail::reptile_directions(params, fast);
  return terms;
}

// The pretrained baseline in one batch: its parameters copied per task, so
// that the gradient of Σ_t L_t (each task's loss on all its points) with
// respect to the copies is every task's g_t at once.
TaskTerms pretrain_task_terms(const Model& model, Loss loss, const MetaConfig&, const MetaParams& params,
                              const TaskBatch& batch, std::int64_t) {
  TapeScope scope;
  const std::vector<Tensor> leaves = detail::recorded_leaves(params.model);
  const std::vector<Tensor> copies = per_task(leaves, batch.tasks());
  const Tensor x = concat({batch.support_x, batch.query_x}, 1), y = concat({batch.support_y, batch.query_y}, 1);
  const Tensor losses = per_task_loss(loss, model.forward(copies, x), y);
  TaskTerms terms;
  terms.gradients = grad(sum(losses), copies, {.retain_graph = false});
  terms.losses = losses.detach();
  terms.objectives = terms.losses;
  return terms;
}

// Whether each task's row of the batched graph has the bits of a one-task
// graph whatever the number of tasks: on the CPU, where every kernel works
// on each task's matrices alone when it runs unsplit (as at one thread;
// task_terms runs its chunks that way at any thread count). A GPU library
// may pick its algorithm by the batch count: there the tasks go one at a
// time.
bool batched_rows_are_invariant(const MetaParams& params) { return params.model.front().device() == Device::cpu; }

// Input bytes (support and query) of the tasks one recorded graph holds at
// once. A graph keeps activations in proportion to its inputs (a Conv4
// about a thousand values per input value for its second-order backward),
// so a batch of 28x28 image tasks is recorded one task at a time, the memory
// of a per-task loop, whose GEMMs still have the rows of its 80 images. The
// small inputs of a regression (20 numbers a task) stay in one graph, whose
// per-op cost is then shared by the whole batch.
constexpr std::int64_t kChunkInputBytes = std::int64_t{1} << 18;

// The chunks that keep each graph's inputs near kChunkInputBytes.
std::int64_t chunks_for_memory(const TaskBatch& batch) {
  const std::int64_t tasks = batch.tasks();
  if (tasks < 1) return 1;
  const auto bytes = [](const Tensor& t) { return t.numel() * static_cast<std::int64_t>(dtype_size(t.dtype())); };
  const std::int64_t per_task = std::max<std::int64_t>(1, (bytes(batch.support_x) + bytes(batch.query_x)) / tasks);
  const std::int64_t per_chunk = std::max<std::int64_t>(1, kChunkInputBytes / per_task);
  return (tasks + per_chunk - 1) / per_chunk;
}

// How task_terms cuts a batch on the CPU: chunks_for_memory, and one per
// thread where there are enough tasks, as even as task_range makes them.
std::vector<TaskRange> task_chunks(const TaskBatch& batch, int threads) {
  const std::int64_t tasks = batch.tasks();
  const std::int64_t wanted = std::max<std::int64_t>(chunks_for_memory(batch), threads);
  const int chunks = static_cast<int>(std::clamp<std::int64_t>(wanted, 1, std::max<std::int64_t>(tasks, 1)));
  std::vector<TaskRange> out;
  for (int c = 0; c < chunks; ++c) out.push_back(task_range(tasks, c, chunks));
  return out;
}

// The batched terms of a task slice (one algorithm's).
using BatchedTerms = TaskTerms (*)(const Model&, Loss, const MetaConfig&, const MetaParams&, const TaskBatch&,
                                   std::int64_t);

// The batched terms of `algorithm`, or null for the kernel algorithm and
// Meta-RKHS-I, which are computed one task at a time (looped_task_terms).
BatchedTerms batched_terms_of(Algorithm algorithm) {
  switch (algorithm) {
    case Algorithm::reptile:
      return reptile_task_terms;
    case Algorithm::pretrain:
      return pretrain_task_terms;
    case Algorithm::kernel:
    case Algorithm::metarkhs1:
      return nullptr;
    default:
      return maml_task_terms;
  }
}

// One chunk per task.
std::vector<TaskRange> each_task(std::int64_t tasks) {
  std::vector<TaskRange> out;
  for (std::int64_t t = 0; t < tasks; ++t) out.push_back({t, t + 1});
  return out;
}

// The terms of each chunk of `batch`, concatenated. `spread`: the chunks
// run over the threads, each kernel unsplit (for_each_on_threads), so that
// each row has the bits of one thread's; otherwise one chunk after another.
TaskTerms chunk_terms(BatchedTerms batched, const Model& model, Loss loss, const MetaConfig& config,
                      const MetaParams& params, const TaskBatch& batch, std::int64_t iteration,
                      const std::vector<TaskRange>& chunks, bool spread) {
  std::vector<TaskTerms> parts(chunks.size());
  const auto one = [&](std::int64_t c) {
    const TaskRange& r = chunks[static_cast<std::size_t>(c)];
    const TaskBatch chunk = chunks.size() == 1 ? batch : batch.slice(r.begin, r.end);
    parts[static_cast<std::size_t>(c)] = batched(model, loss, config, params, chunk, iteration);
  };
  const auto count = static_cast<std::int64_t>(chunks.size());
  if (spread)
    for_each_on_threads(count, one);
  else
    for (std::int64_t c = 0; c < count; ++c) one(c);
  return parts.size() == 1 ? parts.front() : concat_task_terms(parts);
}

// The kernel algorithm and Meta-RKHS-I, one task at a time: a one-task
// meta-gradient under uniform weighting (w = 1) is that task's g_t.
TaskTerms looped_task_terms(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                            const TaskBatch& batch, std::int64_t iteration) {
  MetaConfig one_task = config;
  one_task.weighting = {};
  std::vector<TaskTerms> parts(static_cast<std::size_t>(batch.tasks()));
  const auto one = [&](std::int64_t t) {
    MetaStepTensors step = meta_gradient_tensors(model, loss, one_task, params, batch.slice(t, t + 1), iteration);
    NoGradScope no_grad;
    TaskTerms part{step.task_losses, reshape(step.meta_loss, {1}), {}};
    for (const Tensor& g : step.grads) part.gradients.push_back(unsqueeze(g, 0));
    parts[static_cast<std::size_t>(t)] = std::move(part);
  };
  // On the CPU the tasks spread over the threads, each computed as at one
  // thread: its row then does not depend on the thread count.
  if (batched_rows_are_invariant(params))
    for_each_on_threads(batch.tasks(), one);
  else
    for (std::int64_t t = 0; t < batch.tasks(); ++t) one(t);
  return concat_task_terms(parts);
}

// Σ_t weights[offset + t] rows[t] over the rows of `rows` ([n] + shape);
// zeros of the shape when n = 0. One product and one sum over the task
// axis: the reduction adds each entry's rows in an order fixed by the
// shape (whatever the thread count), and every rank reduces the same
// gathered rows, so the result does not depend on how the tasks were split.
// The weights stay tensors (no host read), so that the step can be captured.
Tensor weighted_rows(const Tensor& rows, const Tensor& weights, std::int64_t offset) {
  Shape shape, weight_shape{rows.dim(0)};
  for (int a = 1; a < rows.rank(); ++a) {
    shape.push_back(rows.dim(a));
    weight_shape.push_back(1);
  }
  if (rows.dim(0) == 0) return zeros(shape, rows.dtype(), rows.device());
  const Tensor w = reshape(slice(weights, 0, offset, offset + rows.dim(0)), weight_shape);
  return sum(mul(rows, w), {0});
}

// task_weights of the rule from every task's losses [T] and, for the
// agreement rule, every task's model-parameter gradient rows.
Tensor weights_of(const TaskWeightingConfig& weighting, const Tensor& losses, const std::vector<Tensor>& gradients,
                  std::size_t model_count) {
  if (weighting.differentiate)
    throw ValueError(std::string("task weighting '") + task_weighting_name(weighting.rule) +
                     "' with differentiated weights cannot be split by task: the weights' own derivative couples "
                     "every task's loss; the weights must be constants (not differentiated) here");
  return task_weights(weighting, losses, [&] {
    return std::vector<Tensor>(gradients.begin(), gradients.begin() + static_cast<std::ptrdiff_t>(model_count));
  });
}

// The entries of one row of `rows` ([n] + shape): shape's element count,
// also when n = 0.
std::int64_t row_length(const Tensor& rows) {
  std::int64_t length = 1;
  for (int a = 1; a < rows.rank(); ++a) length *= rows.dim(a);
  return length;
}

// The rows of a rank's tasks as one matrix [n, 2 + Σ_i row_length_i] (the
// loss, the objective, then the first `count` gradients' rows flattened),
// so that one all_gather carries every term: one collective's latency per
// iteration, not one per parameter tensor.
Tensor pack_rows(const TaskTerms& terms, std::size_t count) {
  const std::int64_t n = terms.tasks();
  std::vector<Tensor> columns{reshape(terms.losses, {n, 1}), reshape(terms.objectives, {n, 1})};
  for (std::size_t i = 0; i < count; ++i)
    columns.push_back(reshape(terms.gradients[i], {n, row_length(terms.gradients[i])}));
  return concat(columns, 1);
}

// pack_rows undone for the rows of every rank, shaped like `like`'s terms.
TaskTerms unpack_rows(const Tensor& packed, const TaskTerms& like, std::size_t count) {
  const std::int64_t n = packed.dim(0);
  const auto columns = [&](std::int64_t begin, std::int64_t end) { return slice(packed, 1, begin, end); };
  TaskTerms out{reshape(columns(0, 1), {n}), reshape(columns(1, 2), {n}), {}};
  std::int64_t at = 2;
  for (std::size_t i = 0; i < count; ++i) {
    const Tensor& rows = like.gradients[i];
    Shape shape{n};
    for (int a = 1; a < rows.rank(); ++a) shape.push_back(rows.dim(a));
    out.gradients.push_back(reshape(columns(at, at + row_length(rows)), shape));
    at += row_length(rows);
  }
  return out;
}

void check_terms(const char* caller, const TaskTerms& terms, std::size_t model_count) {
  if (!terms.losses.defined() || terms.losses.rank() != 1 || !terms.objectives.defined() ||
      terms.objectives.shape() != terms.losses.shape())
    throw ShapeError(std::string(caller) + ": the losses and objectives must both be [T]");
  if (terms.gradients.size() < model_count)
    throw ShapeError(std::string(caller) + ": " + std::to_string(terms.gradients.size()) +
                     " gradient tensors, fewer than the " + std::to_string(model_count) + " model parameters");
  for (std::size_t i = 0; i < terms.gradients.size(); ++i)
    if (terms.gradients[i].rank() < 1 || terms.gradients[i].dim(0) != terms.tasks())
      throw ShapeError(std::string(caller) + ": gradient " + std::to_string(i) + " is " +
                       terms.gradients[i].shape().str() + ", expected " + std::to_string(terms.tasks()) + " task rows");
}

}  // namespace

TaskTerms task_terms(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                     const TaskBatch& batch, std::int64_t iteration, bool exact_rows) {
  validate_inputs("task_terms", model, loss, config, params, &batch);
  // Constants on every thread's tape, whatever the caller recorded.
  const TaskBatch inputs{batch.support_x.detach(), batch.support_y.detach(), batch.query_x.detach(),
                         batch.query_y.detach()};
  const BatchedTerms batched = batched_terms_of(config.algorithm);
  if (!batched) return looped_task_terms(model, loss, config, params, inputs, iteration);
  if (!batched_rows_are_invariant(params)) {  // a GPU: the whole batch, or one task at a time
    if (!exact_rows) return batched(model, loss, config, params, inputs, iteration);
    return chunk_terms(batched, model, loss, config, params, inputs, iteration, each_task(inputs.tasks()),
                       /*spread=*/false);
  }
  // Exact rows keep every kernel unsplit, also when the chunks are fewer
  // than the threads (some then idle): a kernel split over the threads may
  // sum in an order that depends on how many tasks share its graph. Without
  // them the threads then go inside the kernels instead.
  const std::vector<TaskRange> chunks = task_chunks(inputs, num_threads());
  const bool spread = exact_rows || static_cast<int>(chunks.size()) >= num_threads();
  return chunk_terms(batched, model, loss, config, params, inputs, iteration, chunks, spread);
}

namespace detail {

bool meta_gradient_splits_by_task(const MetaConfig& config, const MetaParams& params, const TaskBatch& batch) {
  return batched_terms_of(config.algorithm) && config.task_batched && unsplittable_reason(config).empty() &&
         batched_rows_are_invariant(params) && chunks_for_memory(batch) >= 2;
}

}  // namespace detail

TaskTerms concat_task_terms(const std::vector<TaskTerms>& parts) {
  if (parts.empty()) throw ValueError("concat_task_terms: no parts");
  NoGradScope no_grad;
  TaskTerms out;
  std::vector<Tensor> losses, objectives;
  for (std::size_t p = 0; p < parts.size(); ++p) {
    if (parts[p].gradients.size() != parts[0].gradients.size())
      throw ShapeError("concat_task_terms: part " + std::to_string(p) + " has " +
                       std::to_string(parts[p].gradients.size()) + " gradient tensors, part 0 has " +
                       std::to_string(parts[0].gradients.size()));
    losses.push_back(parts[p].losses);
    objectives.push_back(parts[p].objectives);
  }
  out.losses = concat(losses);
  out.objectives = concat(objectives);
  for (std::size_t i = 0; i < parts[0].gradients.size(); ++i) {
    std::vector<Tensor> rows;
    for (const TaskTerms& part : parts) rows.push_back(part.gradients[i]);
    out.gradients.push_back(concat(rows));
  }
  return out;
}

MetaStepTensors combine_task_terms(const TaskWeightingConfig& weighting, const TaskTerms& all_tasks,
                                   std::size_t model_count) {
  check_terms("combine_task_terms", all_tasks, model_count);
  NoGradScope no_grad;
  MetaStepTensors step;
  step.task_losses = all_tasks.losses;
  step.task_weights = weights_of(weighting, all_tasks.losses, all_tasks.gradients, model_count);
  step.meta_loss = weighted_rows(all_tasks.objectives, step.task_weights, 0);
  for (const Tensor& rows : all_tasks.gradients) step.grads.push_back(weighted_rows(rows, step.task_weights, 0));
  return step;
}

MetaStepTensors reduce_task_terms(Communicator& communicator, Reduction reduction, const TaskWeightingConfig& weighting,
                                  const TaskTerms& local, std::int64_t tasks, std::size_t model_count) {
  check_terms("reduce_task_terms", local, model_count);
  const TaskRange range = task_range(tasks, communicator.rank(), communicator.size());
  if (local.tasks() != range.count())
    throw ShapeError("reduce_task_terms: rank " + std::to_string(communicator.rank()) + " brings " +
                     std::to_string(local.tasks()) + " tasks, its share of " + std::to_string(tasks) + " is " +
                     std::to_string(range.count()));
  NoGradScope no_grad;
  // deterministic: every row; fast: only the agreement rule's model rows, which its weights need.
  std::size_t gathered = 0;
  if (reduction == Reduction::deterministic)
    gathered = local.gradients.size();
  else if (weighting.rule == TaskWeighting::agreement)
    gathered = model_count;
  const Tensor packed = communicator.all_gather(pack_rows(local, gathered));
  if (packed.dim(0) != tasks)
    throw ShapeError("reduce_task_terms: the ranks brought " + std::to_string(packed.dim(0)) + " tasks, not " +
                     std::to_string(tasks));
  const TaskTerms all = unpack_rows(packed, local, gathered);
  if (reduction == Reduction::deterministic) return combine_task_terms(weighting, all, model_count);

  // fast: every rank weights its own tasks; the communicator sums the ranks' totals.
  MetaStepTensors step;
  step.task_losses = all.losses;
  step.task_weights = weights_of(weighting, all.losses, all.gradients, model_count);
  step.meta_loss = weighted_rows(all.objectives, step.task_weights, 0);
  std::vector<Tensor> sums;
  for (const Tensor& rows : local.gradients) sums.push_back(weighted_rows(rows, step.task_weights, range.begin));
  step.grads = communicator.all_reduce_sum(sums);
  return step;
}

}  // namespace metatape::meta
