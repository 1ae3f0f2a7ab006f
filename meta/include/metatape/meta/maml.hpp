// MAML and its variants (docs/methods.md §1): the inner loop, the exact
// second-order meta-gradient and its first-order approximation, learned inner
// rates (Meta-SGD, MAML++ LSLR), MAML++'s multi-step loss, ANIL, Reptile, and
// the "pretrained" baseline that trains on the task mixture without
// adaptation.
//
//   θ_t^0 = θ,  θ_t^{k+1} = θ_t^k − α_k ⊙ ∇ L(θ_t^k; support_t)
//   L_meta(θ) = (1/T) Σ_t L(θ_t^τ; query_t)
//
// or, with MetaConfig::weighting, Σ_t w_t L(θ_t^τ; query_t) (task_weighting.hpp).
//
// The meta-batch is recorded as one graph with a leading task axis: θ is
// expanded to [T, ...] copies, each task's inner gradient comes out of one
// backward of Σ_t L_t (task t's loss depends only on copy t), and the outer
// backward sums the copies' gradients back into θ. With exact (second-order)
// MAML the inner backward is recorded (create_graph), so the outer backward
// differentiates through it: Hessian-vector products of the inner loss.
// adapt() is that inner loop on its own; a RaggedTaskBatch holds tasks of
// different sizes.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "metatape/engine.hpp"
#include "metatape/meta/kernel_adaptation.hpp"
#include "metatape/meta/losses.hpp"
#include "metatape/meta/models.hpp"
#include "metatape/meta/task_weighting.hpp"
#include "metatape/meta/tasks.hpp"

namespace metatape::meta {

enum class Algorithm {
  maml,       // exact second-order meta-gradient
  fomaml,     // first-order: inner gradients treated as constants
  metasgd,    // exact, with a learned inner rate per parameter entry (Li et al. 2017)
  anil,       // exact, only the head adapts (Raghu et al. 2020)
  reptile,    // θ ← θ + ε mean_t(θ_t^τ − θ) (Nichol et al. 2018)
  pretrain,   // the baseline: ordinary training on all points of all tasks
  kernel,     // the inner loop in closed form through the NTK (kernel_adaptation.hpp)
  metarkhs1,  // Meta-RKHS-I (Zhou et al. 2021): L − α‖∇θ L‖² per task, one loop
};

// Every algorithm, in the order they are listed to users.
inline constexpr Algorithm kAlgorithms[] = {Algorithm::maml,   Algorithm::fomaml,   Algorithm::metasgd,
                                            Algorithm::anil,   Algorithm::reptile,  Algorithm::pretrain,
                                            Algorithm::kernel, Algorithm::metarkhs1};
const char* algorithm_name(Algorithm algorithm);
// Throws ValueError listing the choices.
Algorithm parse_algorithm(const std::string& name);

struct MetaConfig {
  Algorithm algorithm = Algorithm::maml;
  int inner_steps = 1;                         // τ during training
  double inner_lr = 0.01;                      // α (the initial value when learned)
  bool learned_layer_rates = false;            // MAML++ LSLR: a learned α per layer and inner step
  bool multi_step_loss = false;                // MAML++: outer loss Σ_k v_k L(θ^k; query)
  std::int64_t msl_anneal_iterations = 10000;  // v reaches the last step by then
  bool task_batched = true;                    // one graph for the meta-batch; false loops over tasks
  KernelConfig kernel{};                       // algorithm kernel: the closed form and its meta-gradient
  double rkhs_alpha = 0.01;                    // metarkhs1: α of L − α‖∇θ L‖²
  TaskWeightingConfig weighting{};             // the outer loss's task weights (every outer loop)

  bool first_order() const { return algorithm == Algorithm::fomaml || algorithm == Algorithm::reptile; }
  // Throws ValueError for combinations that are not in the literature.
  void validate() const;
};

// What the outer optimiser updates: the model's parameters, then the learned
// inner rates (Meta-SGD: one tensor per parameter, shaped like it; LSLR: one
// [layers, inner_steps] tensor; otherwise none).
struct MetaParams {
  std::vector<Tensor> model;
  std::vector<Tensor> rates;
  std::vector<Tensor> all() const;
  static MetaParams from_all(const std::vector<Tensor>& all, std::size_t model_count);
  MetaParams to(Device device) const;
};

// The one check of every public meta:: entry point (meta_gradient,
// meta_gradient_tensors, CapturedMetaGradient, adapt, adaptation_curve,
// evaluate), before anything is recorded: `config` is valid; params.model
// holds one tensor per model parameter in its base shape, all of one floating
// dtype on one device; params.rates is what the algorithm learns (Meta-SGD:
// one tensor per parameter shaped like it, a scalar is not broadcast; LSLR:
// one [layers, inner_steps]; otherwise none), in that dtype on that device;
// and, when `batch` is given, its four tensors are defined, hold the same
// number of tasks (>= 1) and of points per set (>= 1), x is [T, n] + the
// model's input_shape() in the parameters' dtype, y fits `loss` (mse: [T, n,
// outputs] in that dtype; cross-entropy: i64 labels [T, n]), all on the
// parameters' device (or on the host, for a caller that copies the batch in:
// BatchPlace::host_or_params). Throws ValueError, ShapeError, DTypeError or
// DeviceError naming `caller`, the tensor ("rates[3] (for b2)",
// "batch.query_y") and both shapes.
enum class BatchPlace { with_params, host_or_params };
void validate_inputs(const char* caller, const Model& model, Loss loss, const MetaConfig& config,
                     const MetaParams& params, const TaskBatch* batch = nullptr,
                     BatchPlace batch_place = BatchPlace::with_params);

// Parameters initialised on the CPU (so the same seed gives the same values
// on every device), then moved to `device`.
MetaParams init_meta_params(const Model& model, const MetaConfig& config, Generator& gen, DType dtype,
                            Device device = Device::cpu);

struct MetaStep {
  double meta_loss = 0;              // the outer loss (for Reptile: the query loss after adaptation)
  std::vector<double> task_losses;   // each task's query loss after τ steps (Meta-RKHS-I: L_t − α‖∇θ L_t‖²)
  std::vector<double> task_weights;  // w_t of the outer loss Σ_t w_t L_t (1/T when uniform)
  // d meta_loss / d MetaParams::all(), detached. Reptile: Σ_t w_t (θ − θ_t^τ)
  // (θ − mean_t θ_t^τ when uniform), the direction whose negative the outer
  // optimiser steps along.
  std::vector<Tensor> grads;
};

// One meta-gradient on a meta-batch. `iteration` drives the multi-step loss
// annealing. Records into a TapeScope of its own and releases it.
// How: one graph of the whole batch (config.task_batched; the looped graph
// without it), except on the CPU for a batch whose inputs exceed about
// 256 KiB per graph (few-shot images: two tasks or more) under an algorithm
// task_terms batches and a config it can split (unsplittable_reason): then
// combine_task_terms of task_terms without exact rows, so that memory holds a
// chunk of the batch's activations, and the chunks run over the threads
// (with the same bits at any thread count) when they are at least as many.
// Either way the result is the same up to rounding.
MetaStep meta_gradient(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                       const TaskBatch& batch, std::int64_t iteration);
// The same over tasks of different sizes (see RaggedTaskBatch): each group's
// meta-gradient in turn, weighted by its share of the tasks. Only the
// uniform task weighting: the others need every task's loss at once, and
// the groups are processed one after another (ValueError naming the rule).
MetaStep meta_gradient(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                       const RaggedTaskBatch& batch, std::int64_t iteration);

// The same, with the losses left where they were computed: no value is read
// on the host, so the step can be captured as a CUDA graph (CapturedStep).
struct MetaStepTensors {
  Tensor meta_loss;           // rank 0
  Tensor task_losses;         // [T]
  Tensor task_weights;        // [T], detached
  std::vector<Tensor> grads;  // as MetaStep::grads
};
MetaStepTensors meta_gradient_tensors(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                                      const TaskBatch& batch, std::int64_t iteration);
MetaStepTensors meta_gradient_tensors(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                                      const RaggedTaskBatch& batch, std::int64_t iteration);

// The meta-gradient split by task, for a meta-batch spread over processes
// (trainer.hpp's communicator; docs/methods.md §8).
// Every algorithm's meta-gradient is Σ_t w_t g_t: g_t = ∇ O_t is task t's
// own gradient of its unweighted term O_t of the meta-loss (MAML family: the
// query loss L_t after the inner loop, or with MAML++'s multi-step loss
// Σ_k v_k L_t^k; Reptile: g_t = θ − θ_t^τ, O_t = L_t), and the weights w_t
// come from every task's L_t (task_weights, detached). Row t is computed
// the same way whatever other tasks share its graph, so task_terms of a
// batch equals, bit for bit, the concatenation of task_terms of its slices.
struct TaskTerms {
  Tensor losses;                  // [T]: L_t, as MetaStep::task_losses
  Tensor objectives;              // [T]: O_t
  std::vector<Tensor> gradients;  // one per MetaParams::all() entry, [T] + its shape: row t is g_t
  std::int64_t tasks() const { return losses.dim(0); }
};
// The task terms of `batch` at `iteration` (the multi-step loss's v_k),
// detached, on the parameters' device. config.weighting is not used.
// The MAML family (maml, fomaml, metasgd, anil, LSLR, multi-step loss),
// whatever config.task_batched says, records one graph: every model
// parameter and every learned rate copied per task (so row t of a rate's
// gradient is task t's alone, not the tasks' sum), and one backward of
// Σ_t O_t with respect to the copies (a per-task convolution sums each
// task's weight gradient in the same order for one task as for many). That
// holds on the CPU, where the batch is cut into chunks of tasks (one per
// thread where the tasks allow, more for large inputs: about 256 KiB of
// inputs per graph, one task of 28x28 images, which bounds the activations
// held at once) that run over the threads
// (for_each_on_threads), each kernel unsplit: the rows, and so the step,
// have the bits of one thread at any thread count (threads beyond the
// chunks idle meanwhile). On a GPU, whose batched matrix products may sum in
// an order that depends on the number of tasks, the tasks are recorded one
// at a time. Reptile (its inner loop's per-task copies: g_t = θ − θ_t^τ) and
// the pretrained baseline (its parameters copied per task) are batched the
// same way; kernel and metarkhs1 take meta_gradient_tensors of each one-task
// slice (uniform weighting: weight 1; on the CPU spread over the threads,
// each unsplit) and stack the results. With no inner step a
// learned rate's rows are 0. Without `exact_rows` the batched algorithms
// record the whole batch as one graph on a GPU, and on the CPU the same
// chunks, one after another with each kernel split over the threads when
// the chunks are fewer than the threads; rows then equal a slice's up to
// rounding only: for the fast reduction and meta_gradient, which promise no
// more. Throws what meta_gradient throws for bad inputs.
TaskTerms task_terms(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                     const TaskBatch& batch, std::int64_t iteration, bool exact_rows = true);
// The terms of consecutive task slices, in order, as those of all their
// tasks (ShapeError naming the part when the lists differ).
TaskTerms concat_task_terms(const std::vector<TaskTerms>& parts);
// The meta-step of the tasks of `all_tasks`: the weights w =
// task_weights(weighting, losses; for agreement the model's gradient rows,
// the first `model_count` entries), grads_i = Σ_t w_t gradients_i[t] and
// meta_loss = Σ_t w_t O_t, each added one task after another in task order,
// so that the bits depend on the terms alone. Equals meta_gradient_tensors
// up to rounding, except that MAML++'s multi-step loss under the agreement
// rule takes its g_t from O_t here (meta_gradient: from L_t^τ). Throws
// ValueError for differentiated weights (weighting.differentiate: their
// derivative couples the tasks), ShapeError for terms without [T] rows, and
// what task_weights throws.
MetaStepTensors combine_task_terms(const TaskWeightingConfig& weighting, const TaskTerms& all_tasks,
                                   std::size_t model_count);

// meta_gradient_tensors captured on the first call (a CapturedStep on the
// parameters' device: a CUDA graph, or the CPU's list of kernel calls) and
// replayed on every later one: the parameters and the batch are copied in,
// the result copied out, equal bit for bit to meta_gradient_tensors on the
// CPU. Every call must bring the shapes of the first. The multi-step loss is
// refused (ValueError): its weights change with the iteration, and a replay
// would repeat the first. A step that cannot be captured (one that reads
// values on the host or draws random numbers) throws DeviceError on the
// first call. The model must outlive this object's first call.
class CapturedMetaGradient {
 public:
  // `split_by_task`: capture combine_task_terms(task_terms(...)) instead of
  // the one-graph meta_gradient_tensors, the step a Trainer with a
  // communicator of one process takes (the same bits as that eager step).
  CapturedMetaGradient(const Model& model, Loss loss, const MetaConfig& config, bool split_by_task = false);
  MetaStepTensors operator()(const MetaParams& params, const TaskBatch& batch);
  // The captured step's kernel calls and their times (CapturedStep's
  // kernel_times); ValueError before the first call has captured it.
  std::vector<CapturedStep::KernelTime> kernel_times(int rounds = 11) const;
  // What the constructor checks: a valid config without the multi-step loss.
  static void validate(const MetaConfig& config);

 private:
  const Model& model_;
  Loss loss_;
  MetaConfig config_;
  bool split_by_task_;
  std::unique_ptr<CapturedStep> step_;
};

// The inner loop on its own: each task's parameters θ_t^k after k = `steps`
// SGD steps on its support set from `params`, with the inner loop of
// `config` (its α, or the learned Meta-SGD / LSLR rates, beyond the trained τ
// LSLR's last step's; ANIL adapts only the head; Reptile, Meta-RKHS-I and
// the pretrained baseline adapt everything at α, as at evaluation). This is
// the inner loop meta_gradient, Reptile and adaptation_curve run. The kernel
// algorithm has no adapted parameters (it adapts in function space): adapt
// throws ValueError pointing to kernel_adapt.
struct AdaptOptions {
  // Record the inner loop, so that a loss of the result can be differentiated
  // with respect to `params` (mark them with requires_grad_ inside a
  // TapeScope first). The inner backward is recorded too (second order)
  // unless the config is first-order (fomaml, reptile), whose inner
  // gradients are then constants. Without it nothing stays on the tape and
  // the result is detached.
  bool record = false;
  bool history = false;  // also return θ^0, ..., θ^steps
};
struct Adapted {
  // θ_t^steps, one tensor per model parameter, each [T] + its base shape.
  // A parameter that does not adapt (ANIL's body) is θ expanded.
  std::vector<Tensor> params;
  std::vector<std::vector<Tensor>> history;  // with history: [steps + 1], each as params
};
Adapted adapt(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params, const TaskBatch& batch,
              int steps, const AdaptOptions& options = {});
// One Adapted per group of the ragged batch.
std::vector<Adapted> adapt(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                           const RaggedTaskBatch& batch, int steps, const AdaptOptions& options = {});

// Query loss of every task after 0, 1, ..., steps inner SGD steps from the
// meta-parameters, with the configured (or learned) rates: [steps + 1][T].
// Beyond the trained τ, LSLR uses its last step's rates. Meta-RKHS-I and the
// pretrained baseline are fine-tuned by plain SGD at inner_lr. The kernel
// algorithm takes no gradient steps at meta-test: its curve has two rows,
// [0] the loss of f_θ and [1] that of the closed-form adapted outputs
// (kernel_adapt; for classification both are the MSE to one-hot labels),
// and `steps` is ignored (still checked >= 0).
std::vector<std::vector<double>> adaptation_curve(const Model& model, Loss loss, const MetaConfig& config,
                                                  const MetaParams& params, const TaskBatch& batch, int steps);
// The same over a ragged batch: the groups' tasks one after another.
std::vector<std::vector<double>> adaptation_curve(const Model& model, Loss loss, const MetaConfig& config,
                                                  const MetaParams& params, const RaggedTaskBatch& batch, int steps);

// adaptation_curve's query losses and, for classification (cross-entropy),
// each task's query accuracy at the same rows (per_task_accuracy: the
// fraction of query points whose largest output is the label; the kernel
// algorithm's adapted outputs are its closed-form predictions). For MSE
// `accuracy` is empty.
struct QueryCurve {
  std::vector<std::vector<double>> loss;      // [rows][T]
  std::vector<std::vector<double>> accuracy;  // [rows][T], or empty
  // Appends the tasks of `part` (a curve of the same rows) to each row.
  void append(const QueryCurve& part);
};
QueryCurve query_curve(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                       const TaskBatch& batch, int steps);
QueryCurve query_curve(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                       const RaggedTaskBatch& batch, int steps);

// MAML++ step weights v_1..v_τ at `iteration`: uniform at first, annealed
// linearly so that by `anneal_iterations` every non-final weight has fallen to
// its floor 0.03/τ (MAML++'s minimum) and the last step has the rest.
std::vector<double> multi_step_weights(int steps, std::int64_t iteration, std::int64_t anneal_iterations);

}  // namespace metatape::meta
