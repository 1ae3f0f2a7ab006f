// The meta-training loop: sample a meta-batch, take its meta-gradient, clip,
// step the outer optimiser. Deterministic: the same options and seed give
// the same bits on the CPU, and a run restored from a checkpoint continues
// exactly as if it had never stopped.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "metatape/meta/checkpoint.hpp"
#include "metatape/meta/communicator.hpp"
#include "metatape/meta/maml.hpp"
#include "metatape/meta/optim.hpp"

namespace metatape::meta {

// How a group of processes adds its tasks' meta-gradients.
enum class Reduction {
  // Every task's gradient is gathered and the tasks are added in task
  // order on every rank: the same bits for any number of processes.
  deterministic,
  // Each rank adds its own tasks and the communicator sums the ranks'
  // totals (MPI_Allreduce): less traffic, equal up to rounding.
  fast,
};
inline constexpr Reduction kReductions[] = {Reduction::deterministic, Reduction::fast};
const char* reduction_name(Reduction reduction);
// Throws ValueError listing the choices.
Reduction parse_reduction(const std::string& name);

// Why a meta-gradient of `config` cannot be split by task (and so not over
// processes), naming the option; "" when it can. Differentiated task weights
// couple every task's loss; the agreement rule under the multi-step loss
// takes g_t from the final loss alone, which the split terms do not hold.
std::string unsplittable_reason(const MetaConfig& config);

struct TrainOptions {
  MetaConfig meta;
  std::string optimizer = "adam";
  double outer_lr = 1e-3;
  double clip_grad_norm = 0;  // 0: no clipping
  std::int64_t meta_batch = 25;
  std::int64_t shots = 10;    // support examples per task
  std::int64_t queries = 10;  // query examples per task
  std::uint64_t seed = 1;
  DType dtype = DType::f32;
  // Where parameters live and steps run; tasks and initial parameters are
  // drawn on the CPU (the same bits on every device) and moved there.
  Device device = Device::cpu;
  // Capture the meta-gradient step on the first iteration and replay it
  // after (CapturedMetaGradient): a CUDA graph on cuda, the recorded CPU
  // kernel calls on the CPU. The same kernels and values (on the CPU the
  // same bits as without), without the launches, tape, checks and
  // allocations of each step. Not with the multi-step loss, whose weights
  // change every iteration; a step that cannot be captured (one that reads
  // values on the host) fails at the first iteration with a DeviceError.
  bool replay = false;
  // Train as one rank of a group (Communicator): every rank samples the
  // whole meta-batch from the same seeded stream, computes the task terms
  // (task_terms) of its task_range, and the group combines them with
  // `reduction`; every rank then takes the same optimiser step. With a
  // communicator, even a SelfCommunicator, the meta-gradient is computed
  // task by task and summed in task order, so one process and N processes
  // give the same bits (deterministic). Null: the whole batch as one graph
  // (meta_gradient_tensors), as before. Not with `replay`, nor with
  // differentiated task weights (their derivative couples the tasks), nor
  // with the agreement rule under MAML++'s multi-step loss (whose g_t
  // combine_task_terms takes from the whole objective). A rank whose part
  // of an iteration throws makes step() throw RankFailure on every other
  // rank ("rank R failed at iteration N: ...") and its own error on that
  // rank, each trainer left as before the call; restore() checks the file on every rank the same way and then
  // that every rank restored the same state (ValueError otherwise).
  std::shared_ptr<Communicator> communicator;
  Reduction reduction = Reduction::deterministic;

  void validate() const;  // throws ValueError naming the bad option
};

struct IterationRecord {
  std::int64_t iteration = 0;  // 1-based: the number of completed iterations
  double meta_loss = 0;
  std::vector<double> task_losses;
  // w_t of the outer loss Σ_t w_t L_t (MetaConfig::weighting; 1/T when
  // uniform). A function of the parameters and the batch, so a resumed run
  // records the same weights.
  std::vector<double> task_weights;
  double grad_norm = 0;  // before clipping
};

// A meta-loss or meta-gradient that is NaN or infinite: training cannot go
// on from it. A ValueError, typed so that a caller can tell it from bad
// arguments (the command names its options in the hint).
class NonFiniteError : public ValueError {
 public:
  NonFiniteError(const std::string& message, std::int64_t iteration) : ValueError(message), iteration(iteration) {}
  std::int64_t iteration;  // the one that failed (1-based: the trainer's iteration + 1)
};

class Trainer {
 public:
  // The model and task sampler must outlive the trainer.
  Trainer(const Model& model, Loss loss, const TaskSampler& tasks, const TrainOptions& options);

  // One meta-iteration. A non-finite meta-loss or gradient norm, or an
  // update that would make a parameter non-finite, throws NonFiniteError
  // naming the iteration: the trainer is left as it was before the call
  // (parameters, optimiser state, task generator), so its checkpoint is the
  // last good state. With a communicator every rank must call it; a rank
  // whose sampling or task terms throw rethrows its error and makes every
  // other rank throw RankFailure (naming that rank and the iteration), each
  // left as it was; the record's
  // task losses and weights are every rank's tasks'.
  IterationRecord step();
  std::int64_t iteration() const { return iteration_; }
  const MetaParams& params() const { return params_; }
  const TrainOptions& options() const { return options_; }

  // The state to save (on the CPU), with the caller's description of the run.
  Checkpoint checkpoint(const std::string& config) const;
  // Continues from a checkpoint of the same configuration; throws IoError
  // naming `path` (the file it was read from) and the field if it does not
  // fit this run (check_checkpoint_fits), leaving the trainer unchanged.
  // With a communicator every rank must call it: a file that does not fit
  // on one rank throws the IoError there and RankFailure (holding its
  // message) on every other rank, and checkpoints that differ between the ranks (parameters,
  // iteration, task stream position) throw ValueError on every rank, each
  // trainer left unchanged.
  void restore(const Checkpoint& checkpoint, const std::string& path = "");

 private:
  // The meta-step of the next batch: the whole batch as one graph, or this
  // rank's tasks combined with the other ranks' (options.communicator).
  MetaStepTensors local_meta_step();
  MetaStepTensors distributed_meta_step();
  void restore_state(const Checkpoint& checkpoint);  // after the checks

  const Model& model_;
  Loss loss_;
  const TaskSampler& tasks_;
  TrainOptions options_;
  MetaParams params_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<CapturedMetaGradient> captured_;  // with options.replay
  Generator task_rng_;
  std::int64_t iteration_ = 0;
};

// Checks that a checkpoint can continue (or be evaluated as) a run of
// `model` with `options`: parameters as init_meta_params makes them, the
// optimiser's state layout after checkpoint.optimizer_steps steps, one
// optimiser step per iteration. Throws IoError naming `path` and the field.
// What it cannot see: a stored configuration changed to another algorithm or
// activation whose parameters have the same shapes (maml and fomaml, relu and
// tanh) describes tensors that fit; the checksum over the configuration is
// what catches an edit made by accident.
void check_checkpoint_fits(const Checkpoint& checkpoint, const Model& model, const TrainOptions& options,
                           const std::string& path);

// The meta-step of a meta-batch of `tasks` tasks, on every rank of
// `communicator` the same: `local` holds this rank's task terms (those of
// task_range(tasks, rank, size), with [0] rows when it has none), and the
// ranks' terms are combined by `reduction`. deterministic: every term is
// all-gathered in task order (one all_gather of every term packed per
// task) and combine_task_terms runs on every rank, so the result is that
// of one process, bit for bit, for any number of ranks. fast: the losses
// and objectives [T] are all-gathered (and, for the agreement rule, the
// model's gradient rows), every rank adds w_t g_t over its own tasks and
// all_reduce_sum adds the ranks' sums: the same up to the transport's
// rounding. Every rank must call it with the same arguments but
// `local`. Throws ShapeError when `local` does not hold this rank's share,
// what combine_task_terms throws (the same on every rank), and
// CommunicatorError from the transport.
MetaStepTensors reduce_task_terms(Communicator& communicator, Reduction reduction, const TaskWeightingConfig& weighting,
                                  const TaskTerms& local, std::int64_t tasks, std::size_t model_count);

// Independent streams from one user seed: `stream` 0 initialises parameters,
// 1 draws training tasks, 2 draws evaluation tasks (SplitMix64 mixing).
std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream);

}  // namespace metatape::meta
