// Kernel adaptation (docs/methods.md §2): the inner loop replaced by its
// closed form on the model linearised at θ, with the empirical NTK. With
// r = Y' − f_θ(X'), Ks = Θ(X', X') and Kq = Θ(X, X'), every task's adapted
// query prediction is
//   ridge  f_θ(X) + Kq (Ks + λI)⁻¹ r                       (Cholesky solve)
//   flow   f_θ(X) + Kq · t·φ₁(−c t Ks) · r                  (gradient flow for time t)
//   steps  f_θ(X) + Kq · α Σ_{k<τ} (I − c α Ks)^k · r       (τ SGD steps of size α)
// where c scales the kernel to the inner loss metatape minimises: its MSE is
// the mean over the n' points and C outputs, whose gradient in function space
// is (2 / (n'·C)) (f − y), so c = 2 / (n'·C). On a model linear in θ, "flow"
// and "steps" are exactly gradient flow and τ steps of SGD on that loss, so
// τ and α mean what they mean for MAML. Classification regresses one-hot
// targets with the same MSE and predicts by argmax. With C > 1 outputs the
// trace kernel is shared by the outputs, or the full [n·C, n·C] kernel
// couples them. The meta-gradient goes through f_θ(X), f_θ(X') and — when
// `gradient` is exact — through Ks and Kq (recorded Jacobians); "fixed"
// holds the kernel constant (the analogue of first-order MAML).
#pragma once

#include <cmath>
#include <limits>

#include "metatape/meta/ntk.hpp"

namespace metatape::meta {

enum class KernelForm { ridge, flow, steps };
enum class KernelGradient { exact, fixed };
const char* kernel_form_name(KernelForm form);
KernelForm parse_kernel_form(const std::string& name);  // ValueError listing the choices
const char* kernel_gradient_name(KernelGradient gradient);
KernelGradient parse_kernel_gradient(const std::string& name);

struct KernelConfig {
  KernelForm form = KernelForm::flow;
  // Gradient-flow time t of the flow form; +infinity is the interpolating
  // limit Ks⁻¹ and needs ridge > 0.
  double time = 1.0;
  // λ of the ridge form; for flow at t = ∞, the ridge of (Ks + λI)⁻¹.
  double ridge = 0.0;
  KernelGradient gradient = KernelGradient::exact;
  KernelMode mode = KernelMode::trace;  // trace (shared by outputs) or full
  // Throws ValueError naming the bad field.
  void validate() const;
};

}  // namespace metatape::meta

#include "metatape/meta/losses.hpp"
#include "metatape/meta/tasks.hpp"

namespace metatape::meta {

struct MetaConfig;
struct MetaParams;

struct KernelAdapted {
  Tensor query_prediction;  // [T, n, C]: the closed-form adapted outputs
  // [T]: the outer loss of each task on the adapted outputs (MSE against the
  // targets, or against one-hot labels for classification).
  Tensor query_loss;
};

// Every task of `batch` adapted in closed form with config.kernel (and
// config.inner_steps / inner_lr for the steps form), from params.model. With
// `record` the result is on the tape from the parameters (mark them first, in
// a TapeScope), through the kernel too when config.kernel.gradient is exact;
// without it the result is detached. Throws ValueError with the support
// kernel's condition number and the remedy (a ridge) when a form that needs an
// inverse meets a singular kernel, and never returns NaN silently.
KernelAdapted kernel_adapt(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                           const TaskBatch& batch, bool record = false);

}  // namespace metatape::meta
