// Kernel adaptation (docs/methods.md §2): the inner loop replaced by its
// closed form on the model linearised at θ, with the empirical NTK. With
// r = Y' − f_θ(X'), Ks = Θ(X', X') and Kq = Θ(X, X'), every task's adapted
// query prediction is
//   ridge  f_θ(X) + Kq (Ks + λI)⁻¹ r                       (Cholesky solve)
//   flow   f_θ(X) + Kq · ct·φ₁(−c t Ks) · r                 (gradient flow for time t)
//   steps  f_θ(X) + Kq · cα Σ_{k<τ} (I − c α Ks)^k · r      (τ SGD steps of size α)
// where c scales the kernel to the inner loss metatape minimises: its MSE is
// the mean over the n' points and C outputs, whose gradient in function space
// is (2 / (n'·C)) (f − y), so c = 2 / (n'·C). (Derivation: one SGD step moves
// θ by α·c·J'ᵀ r, hence f(X) by α·c·Kq r, and the support residual by
// (I − cα Ks); the flow is the limit α → 0, τα = t. The operators are
// gradient_flow_operator(Ks, c·t) and sgd_steps_operator(Ks, c·α, τ).)
// On a model linear in θ, "flow" and "steps" are exactly gradient flow and τ
// steps of SGD on that loss, so τ (config.inner_steps) and α
// (config.inner_lr) mean what they mean for MAML. At t = ∞ the flow is the
// ridge form with λ = ridge (> 0 required). The ridge form does not see c:
// λ is relative to the kernel's own scale.
//
// Classification (Loss::cross_entropy) regresses one-hot targets with the
// same mean MSE, as Zhou et al. and Arora et al. do; query_loss is then the
// MSE to the one-hot labels, and accuracy (argmax of query_prediction) is
// the caller's to compute. With C > 1 outputs the trace kernel [n, n] is
// shared by the outputs (the residual [n', C] is transformed column by
// column), or the full [n·C, n·C] kernel couples them (the residual
// flattened to [n'·C], row index i·C + c). The meta-gradient goes through
// f_θ(X), f_θ(X') and — when `gradient` is exact — through Ks and Kq
// (recorded Jacobians); "fixed" holds the kernel constant (the analogue of
// first-order MAML). The result reads the query losses on the host to check
// them, so a kernel step cannot be captured as a CUDA graph.
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
// Every form and gradient, in the order they are listed to users.
inline constexpr KernelForm kKernelForms[] = {KernelForm::ridge, KernelForm::flow, KernelForm::steps};
inline constexpr KernelGradient kKernelGradients[] = {KernelGradient::exact, KernelGradient::fixed};

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
  // [T]: the same loss of the unadapted outputs f_θ(X) (row 0 of the kernel
  // algorithm's adaptation curve).
  Tensor query_loss_before;
  Tensor query_prediction_before;  // [T, n, C]: f_θ(X), detached
};

// Every task of `batch` adapted in closed form with config.kernel (and
// config.inner_steps / inner_lr for the steps form), from params.model. With
// `record` the result is on the tape from the parameters (mark them first, in
// a TapeScope), through the kernel too when config.kernel.gradient is exact;
// without it the result is detached. Throws ValueError with the support
// kernel's condition number and the remedy (a ridge) when a form that needs an
// inverse meets a singular kernel, and never returns NaN silently.
// Precisely: the ridge form (and flow at t = ∞) computes the eigenvalues of
// Ks + λI (detached) and refuses a task whose condition number exceeds
// 1/(m·ε) (m its size, ε the dtype's machine epsilon: the kernel is then
// numerically singular, and a Cholesky solve would return noise); "flow" and
// "steps" need no inverse and accept any Ks. A NaN or inf in the query
// losses throws ValueError naming the task. Refused also: a config whose
// `kernel` is invalid (KernelConfig::validate) and the inputs validate_inputs
// refuses; config.algorithm need not be kernel (any model can be adapted this
// way at meta-test).
KernelAdapted kernel_adapt(const Model& model, Loss loss, const MetaConfig& config, const MetaParams& params,
                           const TaskBatch& batch, bool record = false);

}  // namespace metatape::meta
