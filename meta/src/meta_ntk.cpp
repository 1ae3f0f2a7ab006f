// The meta neural tangent kernel (docs/methods.md §4): Φ = ΨΨᵀ from the
// per-task projections, the literal block formula for comparison, its
// spectrum, and the kernel-regression prediction.
#include "metatape/meta/meta_ntk.hpp"

#include <cmath>
#include <sstream>
#include <string>

namespace metatape::meta {
namespace {

// A double as %g prints it (std::to_string writes 1e-300 as 0.000000).
std::string show(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

Tensor identity(std::int64_t n) {
  std::vector<double> values(static_cast<std::size_t>(n * n), 0.0);
  for (std::int64_t i = 0; i < n; ++i) values[static_cast<std::size_t>(i * n + i)] = 1.0;
  return from_vector(values, Shape{n, n}, DType::f64);
}

// (a + aᵀ)/2: exactly symmetric, since a_ij + a_ji rounds as a_ji + a_ij.
Tensor symmetrise(const Tensor& a) { return (a + transpose(a)) * 0.5; }

// Throws ValueError naming `what` unless every entry of t is finite.
void require_finite(const Tensor& t, const std::string& what) {
  for (double v : t.to_vector())
    if (!std::isfinite(v)) throw ValueError(what + " has a non-finite entry (" + show(v) + ")");
}

// A task's features: defined, float64, [rows >= 1, width].
void check_features(const Tensor& t, const std::string& what) {
  if (!t.defined()) throw ValueError("meta_ntk: " + what + " is undefined");
  if (t.dtype() != DType::f64) throw DTypeError("meta_ntk: " + what + " must be f64 (Φ is computed in float64)");
  if (t.rank() != 2) throw ShapeError("meta_ntk: " + what + " must be [rows, features], got " + t.shape().str());
  if (t.dim(0) == 0) throw ValueError("meta_ntk: " + what + " is empty (no examples)");
}

void check_task(const MetaNtkTask& task, const MetaNtkOptions& options, const std::string& where) {
  check_features(task.query, where + ".query");
  check_features(task.support, where + ".support");
  if (task.query.dim(1) != task.support.dim(1))
    throw ShapeError("meta_ntk: " + where + ".query " + task.query.shape().str() + " and .support " +
                     task.support.shape().str() + " have different feature widths");
  if (options.anil) {
    check_features(task.query_head, where + ".query_head");
    check_features(task.support_head, where + ".support_head");
    if (task.query_head.dim(0) != task.query.dim(0) || task.support_head.dim(0) != task.support.dim(0) ||
        task.query_head.dim(1) != task.support_head.dim(1))
      throw ShapeError("meta_ntk: " + where + " head features " + task.query_head.shape().str() + " / " +
                       task.support_head.shape().str() + " do not fit the features " + task.query.shape().str() +
                       " / " + task.support.shape().str());
  }
  if (!(task.loss_scale > 0) || !std::isfinite(task.loss_scale))
    throw ValueError("meta_ntk: " + where + ".loss_scale must be finite and > 0, got " + show(task.loss_scale));
}

void check_tasks(const std::vector<MetaNtkTask>& tasks, const MetaNtkOptions& options) {
  options.validate();
  if (tasks.empty()) throw ValueError("meta_ntk: no tasks");
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    const std::string where = "task " + std::to_string(i);
    check_task(tasks[i], options, where);
    if (tasks[i].query.dim(1) != tasks[0].query.dim(1) ||
        (options.anil && tasks[i].query_head.dim(1) != tasks[0].query_head.dim(1)))
      throw ShapeError("meta_ntk: " + where + "'s features " + tasks[i].query.shape().str() +
                       " are not as wide as task 0's " + tasks[0].query.shape().str());
  }
}

// The features of the inner loop's kernel K: the head's for ANIL, else all.
const Tensor& k_query(const MetaNtkTask& t, const MetaNtkOptions& o) { return o.anil ? t.query_head : t.query; }
const Tensor& k_support(const MetaNtkTask& t, const MetaNtkOptions& o) { return o.anil ? t.support_head : t.support; }

// T_i and K(X_i, X'_i) of one task.
struct TaskOperators {
  Tensor t;        // [n', n']
  Tensor k_query;  // [n, n']
};
TaskOperators task_operators(const MetaNtkTask& task, const MetaNtkOptions& options) {
  const Tensor& hs = k_support(task, options);
  const Tensor support_kernel = symmetrise(matmul(hs, hs, false, true));
  return {meta_ntk_inner_operator(support_kernel, task.loss_scale, options),
          matmul(k_query(task, options), hs, false, true)};
}

}  // namespace

void MetaNtkOptions::validate() const {
  if (form == KernelForm::ridge)
    throw ValueError("meta-NTK: form 'ridge' is not an inner loop of MAML: use steps, or flow with time = inf");
  if (mode == KernelMode::diagonal) throw ValueError("meta-NTK: kernel mode must be trace or full, not diagonal");
  if (form == KernelForm::steps) {
    if (!std::isfinite(inner_lr) || inner_lr < 0)
      throw ValueError("meta-NTK: inner_lr must be finite and >= 0, got " + show(inner_lr));
    if (inner_steps < 0) throw ValueError("meta-NTK: inner_steps must be >= 0, got " + std::to_string(inner_steps));
  } else {
    if (std::isnan(time) || time < 0) throw ValueError("meta-NTK: time must be >= 0, got " + show(time));
    if (std::isinf(time) && !(inverse_ridge > 0 && std::isfinite(inverse_ridge)))
      throw ValueError(
          "meta-NTK: time = inf needs inverse_ridge ε > 0 for (K' + εI)⁻¹ (the support kernel is "
          "singular in general), got " +
          show(inverse_ridge));
  }
  if (!std::isfinite(inverse_ridge) || inverse_ridge < 0)
    throw ValueError("meta-NTK: inverse_ridge must be finite and >= 0, got " + show(inverse_ridge));
  if (!std::isfinite(ridge) || ridge < 0)
    throw ValueError("meta-NTK: ridge must be finite and >= 0, got " + show(ridge));
}

Tensor meta_ntk_inner_operator(const Tensor& support_kernel, double loss_scale, const MetaNtkOptions& options) {
  options.validate();
  Tensor t;
  if (options.form == KernelForm::steps) {
    t = sgd_steps_operator(support_kernel, loss_scale * options.inner_lr, options.inner_steps);
  } else if (std::isinf(options.time)) {
    const std::int64_t n = support_kernel.dim(0);
    const Tensor eye = identity(n).to(support_kernel.dtype());
    Tensor factor;
    try {
      factor = cholesky(support_kernel + eye * options.inverse_ridge);
    } catch (const ValueError& e) {
      throw ValueError("meta-NTK at t = inf: K' + εI with inverse_ridge ε = " + show(options.inverse_ridge) +
                       " is not positive definite in float64: raise inverse_ridge (" + e.what() + ")");
    }
    t = cholesky_solve(factor, eye);
  } else {
    t = gradient_flow_operator(support_kernel, loss_scale * options.time);
  }
  require_finite(t, "meta-NTK: the inner-loop operator T (lower --inner-lr or --time)");
  return t;
}

Tensor meta_ntk_projection(const MetaNtkTask& task, const MetaNtkOptions& options) {
  options.validate();
  check_task(task, options, "task");
  const TaskOperators ops = task_operators(task, options);
  return task.query - matmul(matmul(ops.k_query, ops.t), task.support);
}

std::vector<double> symmetric_eigenvalues(const Tensor& s) { return eigh(s).values.to_vector(); }

double ridged_condition_number(const std::vector<double>& eigenvalues, double ridge) {
  if (eigenvalues.empty()) throw ValueError("condition number: no eigenvalues");
  const double low = eigenvalues.front() + ridge, high = eigenvalues.back() + ridge;
  if (!(low > 0)) return std::numeric_limits<double>::infinity();
  return high / low;
}

MetaNtkResult meta_ntk(const std::vector<MetaNtkTask>& tasks, const MetaNtkOptions& options) {
  check_tasks(tasks, options);
  MetaNtkResult result;
  std::vector<Tensor> projections;
  result.offsets.push_back(0);
  for (const MetaNtkTask& task : tasks) {
    projections.push_back(meta_ntk_projection(task, options));
    result.offsets.push_back(result.offsets.back() + task.query.dim(0));
  }
  result.projections = concat(projections, 0);
  result.phi = symmetrise(matmul(result.projections, result.projections, false, true));
  require_finite(result.phi, "meta-NTK Φ");
  result.eigenvalues = symmetric_eigenvalues(result.phi);
  result.ridge = options.ridge;
  result.condition_number = ridged_condition_number(result.eigenvalues, options.ridge);
  return result;
}

Tensor meta_ntk_block_formula(const std::vector<MetaNtkTask>& tasks, const MetaNtkOptions& options) {
  check_tasks(tasks, options);
  std::vector<TaskOperators> ops;
  for (const MetaNtkTask& task : tasks) ops.push_back(task_operators(task, options));
  std::vector<Tensor> rows;
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    std::vector<Tensor> blocks;
    const Tensor& qi = tasks[i].query;
    const Tensor& si = tasks[i].support;
    for (std::size_t j = 0; j < tasks.size(); ++j) {
      const Tensor& qj = tasks[j].query;
      const Tensor& sj = tasks[j].support;
      // K(X_i,X'_i) T_i and T_jᵀ K(X'_j,X_j).
      const Tensor left = matmul(ops[i].k_query, ops[i].t);
      const Tensor right = transpose(matmul(ops[j].k_query, ops[j].t));
      const Tensor theta_qq = matmul(qi, qj, false, true);
      const Tensor theta_sq = matmul(si, qj, false, true);
      const Tensor theta_qs = matmul(qi, sj, false, true);
      const Tensor theta_ss = matmul(si, sj, false, true);
      blocks.push_back(theta_qq - matmul(left, theta_sq) - matmul(theta_qs, right) +
                       matmul(matmul(left, theta_ss), right));
    }
    rows.push_back(concat(blocks, 1));
  }
  return concat(rows, 0);
}

std::vector<MetaNtkTask> meta_ntk_tasks(const Model& model, const std::vector<Tensor>& params, const TaskBatch& batch,
                                        const MetaNtkOptions& options) {
  options.validate();
  if (!batch.support_x.defined() || !batch.query_x.defined())
    throw ValueError("meta_ntk: the task batch has no support_x or query_x");
  if (batch.support_x.rank() < 2 || batch.query_x.rank() < 2 || batch.support_x.dim(0) != batch.query_x.dim(0))
    throw ShapeError("meta_ntk: support_x " + batch.support_x.shape().str() + " and query_x " +
                     batch.query_x.shape().str() + " must be [T, n, ...] with the same T");
  if (batch.support_x.dim(1) == 0 || batch.query_x.dim(1) == 0)
    throw ValueError("meta_ntk: empty support or query set (support_x " + batch.support_x.shape().str() + ", query_x " +
                     batch.query_x.shape().str() + ")");
  std::vector<Tensor> p64;
  for (const Tensor& p : params) p64.push_back(p.detach().to(DType::f64));
  const std::int64_t outputs = model.outputs();
  // Jacobian rows [T, C, S, P] as features [T, S, C·P]/√C (trace: Θ is the
  // mean over outputs) or [T, S·C, P] (full: row s·C + c).
  auto features = [&](const Tensor& x, ParamSubset subset) {
    const Tensor rows = permute(jacobian_rows(model, p64, x.detach().to(DType::f64), {.subset = subset}), {0, 2, 1, 3});
    const std::int64_t t = rows.dim(0), s = rows.dim(1), p = rows.dim(3);
    if (options.mode == KernelMode::full) return reshape(rows, {t, s * outputs, p});
    return reshape(rows, {t, s, outputs * p}) * (1.0 / std::sqrt(static_cast<double>(outputs)));
  };
  const Tensor query = features(batch.query_x, ParamSubset::all);
  const Tensor support = features(batch.support_x, ParamSubset::all);
  Tensor query_head, support_head;
  if (options.anil) {
    query_head = features(batch.query_x, ParamSubset::head);
    support_head = features(batch.support_x, ParamSubset::head);
  }
  std::vector<MetaNtkTask> tasks;
  const double c = 2.0 / static_cast<double>(batch.support_x.dim(1) * outputs);
  for (std::int64_t i = 0; i < query.dim(0); ++i) {
    MetaNtkTask task;
    task.query = squeeze(slice(query, 0, i, i + 1), 0);
    task.support = squeeze(slice(support, 0, i, i + 1), 0);
    if (options.anil) {
      task.query_head = squeeze(slice(query_head, 0, i, i + 1), 0);
      task.support_head = squeeze(slice(support_head, 0, i, i + 1), 0);
    }
    task.loss_scale = c;
    tasks.push_back(std::move(task));
  }
  return tasks;
}

MetaNtkResult meta_ntk(const Model& model, const std::vector<Tensor>& params, const TaskBatch& batch,
                       const MetaNtkOptions& options) {
  return meta_ntk(meta_ntk_tasks(model, params, batch, options), options);
}

Tensor meta_ntk_cross(const std::vector<MetaNtkTask>& test_tasks, const Tensor& train_projections,
                      const MetaNtkOptions& options) {
  check_tasks(test_tasks, options);
  check_features(train_projections, "train_projections");
  if (train_projections.dim(1) != test_tasks[0].query.dim(1))
    throw ShapeError("meta_ntk_cross: train_projections " + train_projections.shape().str() +
                     " and the test features " + test_tasks[0].query.shape().str() + " have different widths");
  std::vector<Tensor> projections;
  for (const MetaNtkTask& task : test_tasks) projections.push_back(meta_ntk_projection(task, options));
  return matmul(concat(projections, 0), train_projections, false, true);
}

Tensor meta_ntk_predict(const Tensor& phi, const Tensor& cross, const Tensor& f0_train, const Tensor& y_train,
                        const Tensor& f0_test, double eta, double time) {
  if (!std::isfinite(eta) || eta < 0 || !std::isfinite(time) || time < 0 || !std::isfinite(eta * time))
    throw ValueError("meta_ntk_predict: eta and time must be finite and >= 0, got eta = " + show(eta) +
                     ", time = " + show(time));
  for (const Tensor* t : {&phi, &cross, &f0_train, &y_train, &f0_test})
    if (!t->defined() || t->rank() != 2) throw ShapeError("meta_ntk_predict: every argument must be a defined matrix");
  const std::int64_t n = phi.dim(0);
  if (phi.dim(1) != n || cross.dim(1) != n || f0_train.shape() != y_train.shape() || f0_train.dim(0) != n ||
      f0_test.dim(0) != cross.dim(0) || f0_test.dim(1) != f0_train.dim(1))
    throw ShapeError("meta_ntk_predict: phi " + phi.shape().str() + ", cross " + cross.shape().str() + ", f0_train " +
                     f0_train.shape().str() + ", y_train " + y_train.shape().str() + ", f0_test " +
                     f0_test.shape().str() + " do not fit ([N, N], [M, N], [N, C], [N, C], [M, C])");
  const Tensor op = gradient_flow_operator(phi, eta * time);
  Tensor prediction = f0_test + matmul(cross, matmul(op, y_train - f0_train));
  require_finite(prediction, "meta_ntk_predict: the prediction");
  return prediction;
}

}  // namespace metatape::meta
