#include "memory.hpp"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "metatape/meta/evaluation.hpp"

namespace metatape::tools {
namespace {

using meta::Algorithm;

std::string human(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (bytes >= 1024 && u < 6) {
    bytes /= 1024;
    ++u;
  }
  char text[64];
  std::snprintf(text, sizeof text, bytes < 10 ? "%.1f %s" : "%.0f %s", bytes, units[u]);
  return text;
}

std::string count(double n) {
  char text[32];
  std::snprintf(text, sizeof text, n < 1e6 ? "%.0f" : "%.3g", n);
  return text;
}

double numel(const meta::ParamInfo& p) {
  double n = 1;
  for (std::int64_t d : p.shape.dims()) n *= static_cast<double>(d);
  return n;
}

struct ParameterCounts {
  double all = 0;      // the model's
  double adapted = 0;  // those the inner loop adapts
};

// ANIL adapts the head only; every other algorithm (and every evaluation but
// ANIL's) adapts everything.
ParameterCounts parameter_counts(const meta::Model& model, Algorithm algorithm) {
  ParameterCounts counts;
  for (const meta::ParamInfo& p : model.parameters()) counts.all += numel(p);
  if (algorithm == Algorithm::anil) {
    for (std::size_t i : model.head()) counts.adapted += numel(model.parameters()[i]);
  } else {
    counts.adapted = counts.all;
  }
  return counts;
}

double dtype_bytes(const std::string& dtype) { return static_cast<double>(dtype_size(parse_dtype(dtype))); }

// A value of /proc/meminfo ("MemAvailable"), in bytes.
std::optional<double> meminfo(const std::string& field) {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) != 0) continue;
    std::istringstream rest(line.substr(field.size() + 1));
    double kib = 0;
    if (rest >> kib) return kib * 1024;
  }
  return std::nullopt;
}

std::optional<double> number_in(const std::string& path) {
  std::ifstream in(path);
  double value = 0;
  if (in >> value) return value;  // "max" (no limit) reads as nothing
  return std::nullopt;
}

// What a cgroup limit leaves, under cgroup v2 or v1.
std::optional<double> cgroup_headroom() {
  for (const auto& [limit, usage] :
       {std::pair{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"},
        std::pair{"/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"}}) {
    const std::optional<double> l = number_in(limit), u = number_in(usage);
    if (l && u) return std::max(0.0, *l - *u);
  }
  return std::nullopt;
}

// The kernel algorithm (kernel_adaptation.hpp), for `tasks` tasks at once:
// each example's Jacobian rows over the parameters (and its copy of θ), for
// the support and query points, [C, n, P] per task, and the kernels
// Ks [T, nC, nC] and Kq [T, n'C, nC] (C = 1 for the trace kernel); `copies`
// of each: 2 in training (values and their gradients on the tape), 1 at
// evaluation (detached).
//
// A model that couples a set's examples (batch norm) has its kernel from the
// Jacobian of the whole set, one backward pass per output row; recorded for
// the exact meta-gradient (training), each of those passes keeps a cotangent
// of every activation of the set on the tape, and the product that made it.
double kernel_values(const RunConfig& c, const RunParts& parts, double params, double tasks, double support,
                     double query, double copies) {
  if (parts.options.meta.algorithm != Algorithm::kernel) return 0;
  const double outputs = parts.outputs, c_kernel = c.kernel_mode == "full" ? outputs : 1;
  const double rows = tasks * (support + query) * (outputs + 1) * params;
  const double kernels = tasks * (support + query) * support * c_kernel * c_kernel;
  const bool recorded = copies > 1 && c.kernel_grad == "exact";
  const double coupled =
      parts.model->couples_examples() && recorded
          ? 2 * tasks * (support + query) * outputs * (support + query) * parts.activations_per_example
          : 0;
  return copies * (rows + kernels) + coupled;
}

// Meta-RKHS-I: each task's copy of θ and its recorded gradient (create_graph),
// and the activations of support and query points together, kept for the
// double backward.
double rkhs_values(const RunParts& parts, double params, double tasks, double examples) {
  if (parts.options.meta.algorithm != Algorithm::metarkhs1) return 0;
  return tasks * (2 * params + examples * parts.activations_per_example);
}

// Examples a set holds per unit of --shots / --queries: one, or for
// classification one per class (the counts are per class there).
double examples_per_count(const RunParts& parts) { return parts.loss == meta::Loss::cross_entropy ? parts.outputs : 1; }

}  // namespace

MemoryEstimate ntk_memory(const RunConfig& c, const RunParts& parts, const NtkArgs& ntk) {
  const ParameterCounts p = parameter_counts(*parts.model, Algorithm::maml);
  const double examples = static_cast<double>(ntk.tasks) * static_cast<double>(ntk.points);
  const double n = static_cast<double>(ntk.points), outputs = parts.outputs;
  // trace [n, n], full [nC, nC], diagonal [n, n, C] per task.
  const double per_task = ntk.mode == "trace"  ? n * n
                          : ntk.mode == "full" ? n * n * outputs * outputs
                                               : n * n * outputs;
  const double kernels = static_cast<double>(ntk.tasks) * per_task;
  const double values =
      examples * (2 * p.all + outputs * p.all + parts.activations_per_example + parts.example_values) + kernels;
  MemoryEstimate e;
  // The kernels again in float64, and as JSON text (about 20 bytes each).
  e.bytes = values * dtype_bytes(c.dtype) + kernels * (8 + 20);
  e.from = count(p.all) + " parameters; " + count(examples) + " examples x " + count(outputs) + " output(s); " +
           count(kernels) + " kernel entries";
  return e;
}

MemoryEstimate analysis_memory(const RunConfig& c, const RunParts& parts, const AnalyzeArgs& args,
                               std::int64_t inner_steps) {
  const ParameterCounts p = parameter_counts(*parts.model, Algorithm::maml);
  const double tasks = static_cast<double>(args.tasks), steps = static_cast<double>(inner_steps);
  const double support = static_cast<double>(c.shots) * examples_per_count(parts),
               query = static_cast<double>(c.queries) * examples_per_count(parts);
  const double a = parts.activations_per_example;
  const double batch = tasks * (support + query) * parts.example_values;
  // As training's exact second order (training_memory), for the whole batch at once.
  const double tape = tasks * ((support + query) * a + p.all) + steps * tasks * (support * a + p.all);
  // Lanczos: its m + 2 vectors, and the m × m eigenvectors of the tridiagonal matrix.
  const double m = static_cast<double>(args.lanczos_iterations);
  const double lanczos = args.hessians ? (m + 2) * p.all + m * m : 0;
  const double rows = tasks * query * parts.outputs;
  const double meta_ntk = args.meta_ntk ? rows * p.all + rows * rows : 0;
  MemoryEstimate e;
  e.bytes = 8 * (batch + (args.hessians ? 2 : 1) * tape + 2 * tasks * p.all + lanczos + meta_ntk);
  e.from = count(p.all) + " parameters; " + count(tasks) + " tasks x " + count(support + query) + " examples x " +
           count(a) + " activation values; " + count(steps) + " inner step(s); f64";
  return e;
}

MemoryEstimate training_memory(const RunConfig& c, const RunParts& parts) {
  const Algorithm algorithm = parts.options.meta.algorithm;
  const ParameterCounts p = parameter_counts(*parts.model, algorithm);
  const double tasks = static_cast<double>(c.meta_batch), at_once = c.task_batched ? tasks : 1;
  const double support = static_cast<double>(c.shots) * examples_per_count(parts),
               query = static_cast<double>(c.queries) * examples_per_count(parts);
  const double steps = static_cast<double>(c.inner_steps), a = parts.activations_per_example;
  // Parameters and their meta-gradient (Meta-SGD's rates are as many again),
  // and the meta-batch itself.
  const double meta_params = algorithm == Algorithm::metasgd ? 2 * p.all : p.all;
  const double base = 2 * meta_params + tasks * (support + query) * parts.example_values;
  // One inner step's forward pass and adapted parameters, for the tasks
  // recorded together.
  const double live = at_once * (support + query) * a + (algorithm == Algorithm::pretrain ? 0 : at_once * p.adapted);
  // What every inner step leaves on the tape for the outer backward pass:
  // the adapted parameters (first order too, whose chain θ - αg is recorded)
  // and, for exact second order, the support activations (ANIL's are the
  // head's only, counted in its parameters).
  double per_step = 0;
  if (algorithm == Algorithm::maml || algorithm == Algorithm::metasgd)
    per_step = at_once * (support * a + p.adapted);
  else if (algorithm == Algorithm::fomaml || algorithm == Algorithm::anil)
    per_step = at_once * p.adapted;
  const double values = 2 * (base + live) + steps * per_step +
                        kernel_values(c, parts, p.all, at_once, support, query, 2) +
                        rkhs_values(parts, p.all, at_once, support + query);
  MemoryEstimate e;
  e.bytes = values * dtype_bytes(c.dtype);
  e.from = count(p.all) + " parameters; " + count(at_once) + " task(s) at once x " + count(support + query) +
           " examples x " + count(a) + " activation values; " + count(steps) + " inner step(s); " + c.dtype;
  return e;
}

MemoryEstimate evaluation_memory(const RunConfig& c, const RunParts& parts, const EvalArgs& args,
                                 std::int64_t chunk_tasks) {
  const ParameterCounts p = parameter_counts(*parts.model, parts.options.meta.algorithm);
  std::int64_t largest_k = c.shots;
  if (!args.shots.empty()) largest_k = *std::max_element(args.shots.begin(), args.shots.end());
  const double per_count = examples_per_count(parts), support = static_cast<double>(largest_k) * per_count;
  const double query = args.queries > 0                          ? static_cast<double>(args.queries) * per_count
                       : parts.loss == meta::Loss::cross_entropy ? static_cast<double>(c.queries) * per_count
                                                                 : support;
  const double tasks = static_cast<double>(args.tasks), steps = static_cast<double>(args.steps);
  const double chunk = std::min(tasks, static_cast<double>(chunk_tasks));
  // The query loss of every task after every step, as vectors of doubles.
  const double curve_bytes = (steps + 1) * (24 + 8 * tasks);
  // One chunk of tasks: its examples, their activations, adapted parameters.
  // A kernel run adapts in closed form: no adapted parameters, but the
  // Jacobian rows and kernels of the chunk.
  const bool kernel = parts.options.meta.algorithm == Algorithm::kernel;
  const double values = p.all + chunk * (support + query) * (parts.activations_per_example + parts.example_values) +
                        (kernel ? kernel_values(c, parts, p.all, chunk, support, query, 1) : 2 * chunk * p.adapted);
  MemoryEstimate e;
  e.bytes = curve_bytes + values * dtype_bytes(c.dtype);
  e.from = count(tasks) + " tasks x " + count(steps + 1) + " steps of results; " + count(p.all) + " parameters; " +
           count(chunk) + " tasks at once x " + count(support + query) + " examples";
  return e;
}

std::int64_t evaluation_chunk(const RunConfig& c, const RunParts& parts, const EvalArgs& args) {
  std::int64_t chunk = std::min(args.tasks, meta::EvaluationOptions{}.chunk);
  const std::optional<double> available = available_memory();
  while (available && chunk > 1 && 4 * evaluation_memory(c, parts, args, chunk).bytes > *available) chunk /= 2;
  return chunk;
}

std::optional<double> available_memory() {
  std::optional<double> available = meminfo("MemAvailable");
  if (const std::optional<double> cgroup = cgroup_headroom())
    available = available ? std::min(*available, *cgroup) : *cgroup;
  return available;
}

void check_memory(const MemoryEstimate& estimate, const std::string& what) {
  const std::optional<double> available = available_memory();
  if (!available || estimate.bytes <= *available) return;
  throw ValueError(what + " needs at least about " + human(estimate.bytes) + " of memory (" + estimate.from +
                   "), more than the " + human(*available) + " available: choose smaller sizes");
}

}  // namespace metatape::tools
