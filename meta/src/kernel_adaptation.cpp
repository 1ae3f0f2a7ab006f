// Kernel adaptation (docs/methods.md §2): the inner loop in closed form in
// function space, f_a(X) = f_θ(X) + Kq G(Ks) r, and its meta-gradient. The
// operators G come from the engine (cholesky_solve, gradient_flow_operator,
// sgd_steps_operator), so every form is differentiable to any order; the
// scaling c = 2/(n'·C) of the mean MSE is derived in kernel_adaptation.hpp.
#include "metatape/meta/kernel_adaptation.hpp"

#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "algorithms.hpp"
#include "choices.hpp"

namespace metatape::meta {

namespace {

std::string number(double v) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.3g", v);
  return buffer;
}

double machine_epsilon(DType dtype) {
  return dtype == DType::f32 ? static_cast<double>(std::numeric_limits<float>::epsilon())
                             : std::numeric_limits<double>::epsilon();
}

// I [m, m] in the dtype and on the device of `like`.
Tensor identity(std::int64_t m, const Tensor& like) {
  std::vector<double> values(static_cast<std::size_t>(m * m), 0.0);
  for (std::int64_t i = 0; i < m; ++i) values[static_cast<std::size_t>(i * m + i)] = 1.0;
  return from_vector(values, Shape{m, m}, like.dtype()).to(like.device());
}

// What the closed form regresses: the MSE targets as given, or for
// cross-entropy labels [T, n] their one-hot rows [T, n, classes] (so the
// regression is that of Arora et al. and Zhou et al.). `what` names the
// field for a label out of range.
Tensor regression_targets(Loss loss, const Tensor& y, std::int64_t classes, DType dtype, const char* what) {
  if (loss == Loss::mse) return y;
  const std::vector<double> labels = y.to_vector();
  std::vector<double> hot(labels.size() * static_cast<std::size_t>(classes), 0.0);
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const double label = labels[i];
    if (!(label >= 0 && label < static_cast<double>(classes)))
      throw ValueError(std::string("kernel_adapt: ") + what + " holds label " + number(label) + " at entry " +
                       std::to_string(i) + ", outside [0, " + std::to_string(classes) + ")");
    hot[i * static_cast<std::size_t>(classes) + static_cast<std::size_t>(label)] = 1.0;
  }
  return from_vector(hot, Shape{y.dim(0), y.dim(1), classes}, dtype).to(y.device());
}

// Refuses a numerically singular matrix of the batch a [T, m, m] before it
// is inverted: condition number above 1/(m·ε), from its eigenvalues (eigh,
// detached; it also refuses NaN and inf, naming the entry).
void check_invertible(const Tensor& a, const KernelConfig& kernel) {
  const std::int64_t tasks = a.dim(0), m = a.dim(1);
  std::vector<double> values;
  {
    NoGradScope no_grad;
    values = eigh(a.detach()).values.to_vector();
  }
  const double limit = 1.0 / (static_cast<double>(m) * machine_epsilon(a.dtype()));
  for (std::int64_t t = 0; t < tasks; ++t) {
    const double low = values[static_cast<std::size_t>(t * m)], high = values[static_cast<std::size_t>(t * m + m - 1)];
    const double condition = low > 0 ? high / low : INFINITY;
    if (condition <= limit) continue;
    const std::string form = kernel.form == KernelForm::ridge ? "the ridge form" : "the flow form at t = inf";
    throw ValueError("kernel_adapt: " + form + " with ridge " + number(kernel.ridge) + " needs (Ks + ridge·I)⁻¹, but " +
                     "the support kernel of task " + std::to_string(t) + " (" + std::to_string(m) + " × " +
                     std::to_string(m) + ", " + dtype_name(a.dtype()) + ") is numerically singular: condition number " +
                     number(condition) + " (eigenvalues " + number(low) + " to " + number(high) +
                     ") above 1/(m·ε) = " + number(limit) +
                     "; add a ridge (--ridge, KernelConfig::ridge > 0, e.g. 1e-6 × the largest eigenvalue) or use "
                     "the flow form at finite time or the steps form, which need no inverse");
  }
}

// G r for support residuals r [T, m, k]: the form's operator applied.
Tensor apply_operator(const MetaConfig& config, const Tensor& ks, const Tensor& r, double c) {
  const KernelConfig& kernel = config.kernel;
  if (kernel.form == KernelForm::steps)
    return matmul(sgd_steps_operator(ks, c * config.inner_lr, config.inner_steps), r);
  if (kernel.form == KernelForm::flow && std::isfinite(kernel.time))
    return matmul(gradient_flow_operator(ks, c * kernel.time), r);
  // Ridge, or the flow's t = ∞ limit: (Ks + λI)⁻¹ r by a Cholesky solve.
  const Tensor regularised = kernel.ridge > 0 ? add(ks, scale(identity(ks.dim(1), ks), kernel.ridge)) : ks;
  check_invertible(regularised, kernel);
  return cholesky_solve(cholesky(regularised), r);
}

// Throws ValueError if a task's loss is NaN or inf.
void check_finite(const Tensor& losses, const char* which) {
  const std::vector<double> values = losses.to_vector();
  for (std::size_t t = 0; t < values.size(); ++t)
    if (!std::isfinite(values[t]))
      throw ValueError(std::string("kernel_adapt: the ") + which + " of task " + std::to_string(t) + " is " +
                       number(values[t]) + " (non-finite kernel, parameters or targets)");
}

// kernel_adapt without the input checks: params as given (recorded or not).
KernelAdapted closed_form(const Model& model, Loss loss, const MetaConfig& config, const std::vector<Tensor>& theta,
                          const TaskBatch& batch, bool record) {
  const KernelConfig& kernel = config.kernel;
  const NtkOptions options{.mode = kernel.mode,
                           .subset = ParamSubset::all,
                           .create_graph = record && kernel.gradient == KernelGradient::exact};
  // One kernel over support and query together: the support's Jacobian rows,
  // the costly part, are computed once for both blocks. Examples are stacked
  // support first, so in either mode the support's rows and columns come
  // first (full mode orders them i·C + c).
  const std::int64_t per_example = kernel.mode == KernelMode::full ? model.outputs() : 1;
  const std::int64_t m = batch.support_x.dim(1) * per_example, total = m + batch.query_x.dim(1) * per_example;
  const Tensor both = empirical_ntk(model, theta, concat({batch.support_x, batch.query_x}, 1), options);
  const Tensor ks = slice(slice(both, 1, 0, m), 2, 0, m);      // [T, m, m]
  const Tensor kq = slice(slice(both, 1, m, total), 2, 0, m);  // [T, mq, m]
  const Tensor fs = model.forward(theta, batch.support_x), fq = model.forward(theta, batch.query_x);
  const std::int64_t tasks = fs.dim(0), support = fs.dim(1), query = fq.dim(1), outputs = fs.dim(2);
  const Tensor ys = regression_targets(loss, batch.support_y, outputs, fs.dtype(), "batch.support_y");
  const Tensor yq = regression_targets(loss, batch.query_y, outputs, fq.dtype(), "batch.query_y");
  // The residual [T, n', C]: columns transformed alike (trace kernel), or
  // flattened to [T, n'·C, 1] in the full kernel's row order i·C + c.
  const bool full = kernel.mode == KernelMode::full;
  Tensor r = sub(ys, fs);
  if (full) r = reshape(r, {tasks, support * outputs, 1});
  const double c = 2.0 / static_cast<double>(support * outputs);
  Tensor update = matmul(kq, apply_operator(config, ks, r, c));
  if (full) update = reshape(update, {tasks, query, outputs});
  KernelAdapted out;
  out.query_prediction = add(fq, update);
  out.query_loss = per_task_loss(Loss::mse, out.query_prediction, yq);
  out.query_loss_before = per_task_loss(Loss::mse, fq, yq).detach();
  out.query_prediction_before = fq.detach();
  check_finite(out.query_loss, "adapted query loss");
  return out;
}

}  // namespace

const char* kernel_form_name(KernelForm form) {
  switch (form) {
    case KernelForm::ridge:
      return "ridge";
    case KernelForm::flow:
      return "flow";
    case KernelForm::steps:
      return "steps";
  }
  return "?";
}

KernelForm parse_kernel_form(const std::string& name) {
  return detail::parse_choice(name, kKernelForms, kernel_form_name, "kernel form");
}

const char* kernel_gradient_name(KernelGradient gradient) {
  return gradient == KernelGradient::exact ? "exact" : "fixed";
}

KernelGradient parse_kernel_gradient(const std::string& name) {
  return detail::parse_choice(name, kKernelGradients, kernel_gradient_name, "kernel gradient");
}

void KernelConfig::validate() const {
  if (!(time >= 0)) throw ValueError("kernel time must be >= 0 (inf allowed), got " + number(time));
  if (!(ridge >= 0) || !std::isfinite(ridge))
    throw ValueError("kernel ridge must be finite and >= 0, got " + number(ridge));
  if (form == KernelForm::flow && std::isinf(time) && ridge <= 0)
    throw ValueError(
        "the flow form at kernel time inf is (Ks + ridge·I)⁻¹ and needs ridge > 0 (Ks is singular or "
        "ill-conditioned in general), got ridge " +
        number(ridge));
  if (mode != KernelMode::trace && mode != KernelMode::full)
    throw ValueError(std::string("kernel mode must be trace or full for kernel adaptation, got ") +
                     kernel_mode_name(mode) + " (a per-output kernel is no operator on the residual)");
}

KernelAdapted kernel_adapt(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                           const TaskBatch& batch, bool record) {
  validate_inputs("kernel_adapt", model, loss, config, params, &batch);
  config.kernel.validate();
  std::vector<Tensor> theta = params.model;
  if (!record)
    for (Tensor& p : theta) p = p.detach();
  KernelAdapted out = closed_form(model, loss, config, theta, batch, record);
  if (!record) {
    out.query_prediction = out.query_prediction.detach();
    out.query_loss = out.query_loss.detach();
  }
  return out;
}

namespace detail {

MetaStepTensors kernel_gradient(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                                const TaskBatch& batch) {
  TapeScope scope;
  const std::vector<Tensor> leaves = recorded_leaves(params.model);
  const KernelAdapted adapted = closed_form(model, loss, config, leaves, batch, true);
  // The tasks share θ here (the kernel is taken at θ, not at per-task
  // copies), so the agreement rule's per-task gradients take one backward
  // pass per task.
  const WeightedLoss outer = weighted_outer_loss(config, adapted.query_loss, [&] {
    return task_gradients_by_loop(adapted.query_loss, leaves, config.weighting.differentiate);
  });
  return outer_step(adapted.query_loss, outer, leaves);
}

}  // namespace detail

}  // namespace metatape::meta
