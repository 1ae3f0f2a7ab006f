// MAML and its variants (METHODS.md §1): the inner loop, the exact
// second-order meta-gradient and its first-order approximation, learned inner
// rates (Meta-SGD, MAML++ LSLR), MAML++'s multi-step loss, ANIL, Reptile, and
// the "pretrained" baseline that trains on the task mixture without
// adaptation.
//
//   θ_t^0 = θ,  θ_t^{k+1} = θ_t^k − α_k ⊙ ∇ L(θ_t^k; support_t)
//   L_meta(θ) = (1/T) Σ_t L(θ_t^τ; query_t)
//
// The meta-batch is recorded as one graph with a leading task axis: θ is
// expanded to [T, ...] copies, each task's inner gradient comes out of one
// backward of Σ_t L_t (task t's loss depends only on copy t), and the outer
// backward sums the copies' gradients back into θ. With exact (second-order)
// MAML the inner backward is recorded (create_graph), so the outer backward
// differentiates through it: Hessian-vector products of the inner loss.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "metatape/engine.hpp"
#include "metatape/meta/losses.hpp"
#include "metatape/meta/models.hpp"
#include "metatape/meta/tasks.hpp"

namespace metatape::meta {

enum class Algorithm {
  maml,      // exact second-order meta-gradient
  fomaml,    // first-order: inner gradients treated as constants
  metasgd,   // exact, with a learned inner rate per parameter entry (Li et al. 2017)
  anil,      // exact, only the head adapts (Raghu et al. 2020)
  reptile,   // θ ← θ + ε mean_t(θ_t^τ − θ) (Nichol et al. 2018)
  pretrain,  // the baseline: ordinary training on all points of all tasks
};

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

// Parameters initialised on the CPU (so the same seed gives the same values
// on every device), then moved to `device`.
MetaParams init_meta_params(const Model& model, const MetaConfig& config, Generator& gen, DType dtype,
                            Device device = Device::cpu);

struct MetaStep {
  double meta_loss = 0;             // the outer loss (for Reptile: the query loss after adaptation)
  std::vector<double> task_losses;  // each task's query loss after τ steps
  // d meta_loss / d MetaParams::all(), detached. Reptile: θ − mean_t θ_t^τ,
  // the direction whose negative the outer optimiser steps along.
  std::vector<Tensor> grads;
};

// One meta-gradient on a meta-batch. `iteration` drives the multi-step loss
// annealing. Records into a TapeScope of its own and releases it.
MetaStep meta_gradient(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                       const TaskBatch& batch, std::int64_t iteration);

// The same, with the losses left where they were computed: no value is read
// on the host, so the step can be captured as a CUDA graph (CapturedStep).
struct MetaStepTensors {
  Tensor meta_loss;           // rank 0
  Tensor task_losses;         // [T]
  std::vector<Tensor> grads;  // as MetaStep::grads
};
MetaStepTensors meta_gradient_tensors(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                                      const TaskBatch& batch, std::int64_t iteration);

// meta_gradient_tensors captured as a CUDA graph on the first call (a
// CapturedStep) and replayed on every later one: the parameters and the
// batch are copied in, the result copied out. Every call must bring the
// shapes of the first. The multi-step loss is refused (ValueError): its
// weights change with the iteration, and a graph would replay the first.
// The model must outlive this object's first call.
class CapturedMetaGradient {
 public:
  CapturedMetaGradient(const Model& model, Loss loss, const MetaConfig& config);
  MetaStepTensors operator()(const MetaParams& params, const TaskBatch& batch);
  // What the constructor checks: a valid config without the multi-step loss.
  static void validate(const MetaConfig& config);

 private:
  const Model& model_;
  Loss loss_;
  MetaConfig config_;
  std::unique_ptr<CapturedStep> step_;
};

// Query loss of every task after 0, 1, ..., steps inner SGD steps from the
// meta-parameters, with the configured (or learned) rates: [steps + 1][T].
// Beyond the trained τ, LSLR uses its last step's rates.
std::vector<std::vector<double>> adaptation_curve(const Model& model, Loss loss, const MetaConfig& config,
                                                  const MetaParams& params, const TaskBatch& batch, int steps);

// MAML++ step weights v_1..v_τ at `iteration`: uniform at first, annealed
// linearly so that by `anneal_iterations` every non-final weight has fallen to
// its floor 0.03/τ (MAML++'s minimum) and the last step has the rest.
std::vector<double> multi_step_weights(int steps, std::int64_t iteration, std::int64_t anneal_iterations);

}  // namespace metatape::meta
