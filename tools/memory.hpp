// Whether a run fits in memory, decided before it allocates: sizes of 2e9
// would otherwise end in std::bad_alloc after seconds of work, or in the
// kernel's OOM killer. The estimates count the tensors a run cannot do
// without, so they are lower bounds (measured runs use 1.1 to 4 times as
// much): a refusal is certain, a pass is not a promise.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "commands.hpp"

namespace metatape::tools {

// An estimate of a run's memory, in bytes, and the sizes it comes from.
struct MemoryEstimate {
  double bytes = 0;
  std::string from;  // "parameters 1761 x ..., activations ..."
};

// Meta-training with `config` (parameters, optimiser state, the meta-batch,
// the inner loop's activations and adapted parameters as the algorithm keeps
// them).
MemoryEstimate training_memory(const RunConfig& config, const RunParts& parts);
// Evaluating `run` with `args` (the adaptation curves of every task and step,
// `chunk` tasks adapted at a time).
MemoryEstimate evaluation_memory(const RunConfig& run, const RunParts& parts, const EvalArgs& args, std::int64_t chunk);
// The tasks to adapt at a time: evaluate()'s default, halved while four
// times the estimate (a lower bound; measured runs use up to four times as
// much) exceeds the memory available. A kernel run on images needs the
// Jacobians of every example of the chunk, gigabytes for 200 tasks. The
// samplers draw task by task and each task adapts on its own, so neither the
// tasks nor (up to rounding) the results depend on it.
std::int64_t evaluation_chunk(const RunConfig& run, const RunParts& parts, const EvalArgs& args);

// The empirical NTK of `ntk` (ntk.hpp): the per-sample parameter copies and
// Jacobian rows [C, T·n, P], the kernels [T, n·C, n·C] (at most) and their
// float64 copies.
MemoryEstimate ntk_memory(const RunConfig& run, const RunParts& parts, const NtkArgs& ntk);

// Analysing a run (analyze.cpp) with `args` and an inner loop of
// `inner_steps`, in float64: the batch, the exact meta-gradient's tape of the
// whole batch (recorded again under the meta-loss Hessian's products), every
// task's two meta-gradients, the Lanczos basis and the Meta-NTK's Jacobian
// rows [T·Q·C, P] and Φ.
MemoryEstimate analysis_memory(const RunConfig& run, const RunParts& parts, const AnalyzeArgs& args,
                               std::int64_t inner_steps);

// Bytes this process may still allocate: MemAvailable of /proc/meminfo, or
// less where a cgroup limit is nearer; nothing when neither can be read.
std::optional<double> available_memory();

// Throws ValueError when the estimate exceeds what is available, naming
// `what`, the estimate and what it comes from.
void check_memory(const MemoryEstimate& estimate, const std::string& what);

}  // namespace metatape::tools
