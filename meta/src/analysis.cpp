// The meta-gradient study tools (docs/methods.md §7): Lanczos with full
// reorthogonalisation, the inner- and meta-loss Hessians as operators, the
// per-task exact against first-order meta-gradients, and analyze().
#include "metatape/meta/analysis.hpp"

#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <string>

#include "algorithms.hpp"
#include "metatape/functional.hpp"
#include "metatape/meta/meta_ntk.hpp"

namespace metatape::meta {
namespace {

// β below this fraction of ‖T‖ means the Krylov space is invariant under A.
constexpr double kInvariantTolerance = 1e-12;

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

double norm(const std::vector<double>& a) { return std::sqrt(dot(a, a)); }

// y += a x
void axpy(double a, const std::vector<double>& x, std::vector<double>& y) {
  for (std::size_t i = 0; i < y.size(); ++i) y[i] += a * x[i];
}

// --- Lanczos ---

void check_lanczos(std::int64_t n, const LanczosOptions& options) {
  if (n < 1) throw ValueError("lanczos: the operator's order n must be >= 1, got " + std::to_string(n));
  if (options.eigenvalues < 1)
    throw ValueError("lanczos: eigenvalues (k) must be >= 1, got " + std::to_string(options.eigenvalues));
  if (options.iterations < options.eigenvalues)
    throw ValueError("lanczos: iterations (m) must be >= eigenvalues (k), got m = " +
                     std::to_string(options.iterations) + ", k = " + std::to_string(options.eigenvalues));
}

// A q, checked: n values, all finite. `iteration` counts from 1.
std::vector<double> apply_checked(const SymmetricOperator& apply, const std::vector<double>& q, int iteration) {
  std::vector<double> w = apply(q);
  if (w.size() != q.size())
    throw ValueError("lanczos: the operator returned " + std::to_string(w.size()) + " values for a vector of " +
                     std::to_string(q.size()) + " at iteration " + std::to_string(iteration));
  for (double x : w)
    if (!std::isfinite(x))
      throw ValueError("lanczos: the operator returned a non-finite value at iteration " + std::to_string(iteration));
  return w;
}

// w minus its components along the orthonormal basis, twice: one classical
// Gram-Schmidt pass loses orthogonality in proportion to the condition of
// [basis, w]; a second pass restores it to rounding ("twice is enough").
void reorthogonalise(std::vector<double>& w, const std::vector<std::vector<double>>& basis) {
  for (int pass = 0; pass < 2; ++pass)
    for (const std::vector<double>& q : basis) axpy(-dot(w, q), q, w);
}

// The Lanczos tridiagonal T (diagonal α [m], off-diagonal β[0..m-2]) and
// β[m-1], the weight of the next Krylov vector that was not taken.
struct Tridiagonal {
  std::vector<double> alpha, beta;
};

Tridiagonal lanczos_tridiagonal(const SymmetricOperator& apply, std::int64_t n, int steps, std::uint64_t seed) {
  Generator gen(seed);
  std::vector<double> q = normal(Shape{n}, 0, 1, gen, DType::f64).to_vector();
  const double start = norm(q);
  for (double& x : q) x /= start;
  std::vector<std::vector<double>> basis{q};
  Tridiagonal t;
  double t_norm = 0;  // max row sum of |T|: a bound on ‖T‖ within a factor of 3
  for (int j = 0; j < steps; ++j) {
    std::vector<double> w = apply_checked(apply, basis[j], j + 1);
    const double a = dot(w, basis[j]);
    axpy(-a, basis[j], w);
    if (j > 0) axpy(-t.beta[j - 1], basis[j - 1], w);
    reorthogonalise(w, basis);
    const double b = norm(w);
    t.alpha.push_back(a);
    t.beta.push_back(b);
    t_norm = std::max(t_norm, std::abs(a) + b + (j > 0 ? t.beta[j - 1] : 0.0));
    if (j + 1 == steps || b <= kInvariantTolerance * t_norm) break;
    for (double& x : w) x /= b;
    basis.push_back(std::move(w));
  }
  return t;
}

// The k largest eigenvalues of T (LAPACK dstev), decreasing, and the
// residual bounds |β_m s_m| from the last components s_m of their vectors.
LanczosResult ritz_pairs(const Tridiagonal& t, int k) {
  const auto m = static_cast<lapack_int>(t.alpha.size());
  std::vector<double> d = t.alpha;
  std::vector<double> e(t.beta.begin(), t.beta.end() - 1);
  std::vector<double> z(static_cast<std::size_t>(m) * static_cast<std::size_t>(m));
  const lapack_int status = LAPACKE_dstev(LAPACK_COL_MAJOR, 'V', m, d.data(), e.data(), z.data(), m);
  if (status != 0)
    throw ValueError("lanczos: the tridiagonal eigenproblem (LAPACK dstev) failed with status " +
                     std::to_string(status));
  LanczosResult result;
  result.iterations = static_cast<int>(m);
  const double beta_m = t.beta.back();
  for (lapack_int r = 0; r < std::min<lapack_int>(k, m); ++r) {
    const lapack_int i = m - 1 - r;  // dstev's values ascend
    result.eigenvalues.push_back(d[static_cast<std::size_t>(i)]);
    result.residuals.push_back(std::abs(beta_m * z[static_cast<std::size_t>(i * m + m - 1)]));
  }
  return result;
}

// --- flat float64 vectors and parameter lists ---

std::vector<double> flatten_values(const std::vector<Tensor>& tensors) {
  std::vector<double> out;
  for (const Tensor& t : tensors) {
    const std::vector<double> v = t.to_vector();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

// v cut into tensors shaped like `like`, in their dtype and on their device.
std::vector<Tensor> unflatten(const std::vector<double>& v, const std::vector<Tensor>& like) {
  std::vector<Tensor> out;
  std::size_t offset = 0;
  for (const Tensor& t : like) {
    const auto count = static_cast<std::size_t>(t.numel());
    out.push_back(from_vector(std::span<const double>(v.data() + offset, count), t.shape(), t.dtype()).to(t.device()));
    offset += count;
  }
  return out;
}

std::vector<Tensor> detached(const std::vector<Tensor>& params) {
  std::vector<Tensor> out;
  for (const Tensor& p : params) out.push_back(p.detach());
  return out;
}

// MAML's (or FOMAML's) inner loop on the model parameters alone.
MetaConfig inner_loop_config(const char* caller, Algorithm algorithm, double inner_lr, int inner_steps) {
  if (inner_steps < 0)
    throw ValueError(std::string(caller) + ": inner_steps must be >= 0, got " + std::to_string(inner_steps));
  if (!std::isfinite(inner_lr) || inner_lr < 0)
    throw ValueError(std::string(caller) + ": inner_lr must be finite and >= 0, got " + std::to_string(inner_lr));
  MetaConfig config;
  config.algorithm = algorithm;
  config.inner_lr = inner_lr;
  config.inner_steps = inner_steps;
  return config;
}

// The operator v ↦ ∇²f(params) v for a scalar f of the parameter list.
SymmetricOperator hessian_operator(const char* caller, const std::vector<Tensor>& params, TensorListToTensorFn f) {
  const std::int64_t n = flat_size(params);
  return [caller = std::string(caller), primals = detached(params), f = std::move(f), n](const std::vector<double>& v) {
    if (static_cast<std::int64_t>(v.size()) != n)
      throw ValueError(caller + ": the vector holds " + std::to_string(v.size()) + " values, the parameters " +
                       std::to_string(n));
    return flatten_values(hvp(f, primals, unflatten(v, primals)).hvp);
  };
}

// --- per-task meta-gradients ---

// Each task's meta-gradient of its own query loss, with respect to the model
// parameters, under `config`'s inner loop: [T] rows of flat_size values. The
// inner loop starts from per-task copies of every parameter (copy_all), so
// one backward of Σ_t L_t gives every task's gradient in the copies' rows.
std::vector<std::vector<double>> per_task_rows(const Model& model, Loss loss, const MetaConfig& config,
                                               const std::vector<Tensor>& params, const TaskBatch& batch) {
  TapeScope scope;
  const MetaParams leaves{detail::recorded_leaves(params), {}};
  std::vector<Tensor> copies;
  const auto keep_copies = [&](int step, const std::vector<Tensor>& fast) {
    if (step == 0) copies = fast;
  };
  const std::vector<Tensor> fast =
      detail::inner_loop(model, loss, config, leaves, batch, config.inner_steps, true, keep_copies, true);
  const Tensor losses = per_task_loss(loss, model.forward(fast, batch.query_x), batch.query_y);
  const std::vector<Tensor> g = grad(sum(losses), copies, {.allow_unused = true, .retain_graph = false});
  const auto tasks = static_cast<std::size_t>(batch.tasks());
  std::vector<std::vector<double>> rows(tasks);
  for (const Tensor& gi : g) {
    const std::vector<double> values = gi.to_vector();  // [T, numel_i], row-major
    const std::size_t width = values.size() / tasks;
    for (std::size_t t = 0; t < tasks; ++t)
      rows[t].insert(rows[t].end(), values.begin() + static_cast<std::ptrdiff_t>(t * width),
                     values.begin() + static_cast<std::ptrdiff_t>((t + 1) * width));
  }
  for (std::size_t t = 0; t < tasks; ++t)
    for (double x : rows[t])
      if (!std::isfinite(x))
        throw ValueError(std::string("task_meta_gradients: task ") + std::to_string(t) + "'s " +
                         (config.first_order() ? "first-order" : "exact") + " meta-gradient is not finite");
  return rows;
}

// cos(a, b); NaN when either is zero.
double cosine(const std::vector<double>& a, const std::vector<double>& b) { return dot(a, b) / (norm(a) * norm(b)); }

struct Spread {
  std::vector<double> mean;
  double variance = 0, snr = 0;
};

// mean_t g_t, the covariance trace (1/(T−1)) Σ_t ‖g_t − ḡ‖² and the SNR ‖ḡ‖²/(variance/T).
Spread spread(const std::vector<std::vector<double>>& rows) {
  const double tasks = static_cast<double>(rows.size());
  Spread s;
  s.mean.assign(rows[0].size(), 0.0);
  for (const std::vector<double>& g : rows) axpy(1.0 / tasks, g, s.mean);
  if (rows.size() > 1) {
    for (const std::vector<double>& g : rows) {
      std::vector<double> d = g;
      axpy(-1.0, s.mean, d);
      s.variance += dot(d, d);
    }
    s.variance /= tasks - 1;
  }
  // No spread: a mean that is not zero is all signal (+inf); a zero mean
  // over no spread is 0/0, NaN.
  const double signal = dot(s.mean, s.mean);
  s.snr = s.variance > 0 ? signal / (s.variance / tasks)
          : signal > 0   ? std::numeric_limits<double>::infinity()
                         : std::numeric_limits<double>::quiet_NaN();
  return s;
}

}  // namespace

LanczosResult lanczos_top_eigenvalues(const SymmetricOperator& apply, std::int64_t n, const LanczosOptions& options) {
  check_lanczos(n, options);
  if (!apply) throw ValueError("lanczos: the operator is empty");
  const int steps = static_cast<int>(std::min<std::int64_t>(options.iterations, n));
  return ritz_pairs(lanczos_tridiagonal(apply, n, steps, options.seed), options.eigenvalues);
}

std::int64_t flat_size(const std::vector<Tensor>& params) {
  std::int64_t n = 0;
  for (const Tensor& p : params) n += p.numel();
  return n;
}

SymmetricOperator inner_loss_hessian(const Model& model, Loss loss, const std::vector<Tensor>& params,
                                     const TaskBatch& batch) {
  validate_inputs("inner_loss_hessian", model, loss, MetaConfig{}, MetaParams{params, {}}, &batch);
  return hessian_operator("inner_loss_hessian", params, [&model, loss, batch](const std::vector<Tensor>& p) {
    return mean(per_task_loss(loss, model.forward(p, batch.support_x), batch.support_y));
  });
}

SymmetricOperator meta_loss_hessian(const Model& model, Loss loss, const std::vector<Tensor>& params,
                                    const TaskBatch& batch, double inner_lr, int inner_steps) {
  const MetaConfig config = inner_loop_config("meta_loss_hessian", Algorithm::maml, inner_lr, inner_steps);
  validate_inputs("meta_loss_hessian", model, loss, config, MetaParams{params, {}}, &batch);
  return hessian_operator("meta_loss_hessian", params, [&model, loss, batch, config](const std::vector<Tensor>& p) {
    const Adapted adapted = adapt(model, loss, config, MetaParams{p, {}}, batch, config.inner_steps, {.record = true});
    return mean(per_task_loss(loss, model.forward(adapted.params, batch.query_x), batch.query_y));
  });
}

std::vector<std::vector<double>> task_meta_gradients(const Model& model, Loss loss, const std::vector<Tensor>& params,
                                                     const TaskBatch& batch, double inner_lr, int inner_steps,
                                                     bool first_order) {
  const MetaConfig config = inner_loop_config("task_meta_gradients", first_order ? Algorithm::fomaml : Algorithm::maml,
                                              inner_lr, inner_steps);
  validate_inputs("task_meta_gradients", model, loss, config, MetaParams{params, {}}, &batch);
  return per_task_rows(model, loss, config, params, batch);
}

MetaGradientComparison summarize_meta_gradients(const std::vector<std::vector<double>>& exact,
                                                const std::vector<std::vector<double>>& first_order) {
  if (exact.empty() || exact.size() != first_order.size())
    throw ValueError("summarize_meta_gradients: " + std::to_string(exact.size()) + " exact and " +
                     std::to_string(first_order.size()) + " first-order gradients: need one of each per task (>= 1)");
  for (std::size_t t = 0; t < exact.size(); ++t)
    if (exact[t].size() != exact[0].size() || first_order[t].size() != exact[0].size())
      throw ValueError("summarize_meta_gradients: task " + std::to_string(t) + "'s gradients hold " +
                       std::to_string(exact[t].size()) + " (exact) and " + std::to_string(first_order[t].size()) +
                       " (first order) values, task 0's exact " + std::to_string(exact[0].size()));
  MetaGradientComparison out;
  for (std::size_t t = 0; t < exact.size(); ++t) {
    out.exact_norm.push_back(norm(exact[t]));
    out.first_order_norm.push_back(norm(first_order[t]));
    out.cosine.push_back(cosine(exact[t], first_order[t]));
    out.norm_ratio.push_back(out.first_order_norm.back() / out.exact_norm.back());
  }
  const Spread g = spread(exact), f = spread(first_order);
  out.mean_cosine = cosine(g.mean, f.mean);
  out.mean_norm_ratio = norm(f.mean) / norm(g.mean);
  out.exact_variance = g.variance;
  out.first_order_variance = f.variance;
  out.exact_snr = g.snr;
  out.first_order_snr = f.snr;
  return out;
}

MetaGradientComparison compare_meta_gradients(const Model& model, Loss loss, const std::vector<Tensor>& params,
                                              const TaskBatch& batch, double inner_lr, int inner_steps) {
  return summarize_meta_gradients(task_meta_gradients(model, loss, params, batch, inner_lr, inner_steps, false),
                                  task_meta_gradients(model, loss, params, batch, inner_lr, inner_steps, true));
}

Analysis analyze(const Model& model, Loss loss, const std::vector<Tensor>& params, const TaskBatch& batch,
                 const AnalysisOptions& options) {
  // Every option is checked before the first (costly) stage runs.
  inner_loop_config("analyze", Algorithm::maml, options.inner_lr, options.inner_steps);
  if (options.hessians) check_lanczos(flat_size(params), options.lanczos);
  const MetaNtkOptions ntk{.form = KernelForm::steps,
                           .inner_lr = options.inner_lr,
                           .inner_steps = options.inner_steps,
                           .ridge = options.meta_ntk_ridge};
  if (options.meta_ntk) ntk.validate();

  std::vector<const char*> stages{"meta-gradients"};
  if (options.hessians) stages.insert(stages.end(), {"inner Hessian", "meta Hessian"});
  if (options.meta_ntk) stages.push_back("meta-NTK");
  int stage = 0;
  const auto next = [&] {
    if (options.progress) options.progress(stages[stage], stage, static_cast<int>(stages.size()));
    ++stage;
  };

  Analysis out;
  next();
  out.gradients = compare_meta_gradients(model, loss, params, batch, options.inner_lr, options.inner_steps);
  if (options.hessians) {
    const std::int64_t n = flat_size(params);
    next();
    out.inner_hessian = lanczos_top_eigenvalues(inner_loss_hessian(model, loss, params, batch), n, options.lanczos);
    next();
    out.meta_hessian = lanczos_top_eigenvalues(
        meta_loss_hessian(model, loss, params, batch, options.inner_lr, options.inner_steps), n, options.lanczos);
  }
  out.meta_ntk_condition = std::numeric_limits<double>::quiet_NaN();
  if (options.meta_ntk) {
    next();
    const MetaNtkResult phi = meta_ntk(model, params, batch, ntk);
    out.meta_ntk_eigenvalues = phi.eigenvalues;
    out.meta_ntk_ridge = phi.ridge;
    out.meta_ntk_condition = phi.condition_number;
  }
  return out;
}

}  // namespace metatape::meta
