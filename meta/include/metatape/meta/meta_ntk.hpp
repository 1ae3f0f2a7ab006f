// The meta neural tangent kernel Φ (docs/methods.md §4): the kernel of MAML
// (or ANIL) in the infinite-width limit, over the stacked query sets of a
// meta-batch, and the kernel-regression prediction of a network meta-trained
// by outer gradient flow.
//
// Every task i brings Jacobian features G with Θ(A, B) = G(A) G(B)ᵀ (trace
// mode: the C output rows of an example side by side, scaled by 1/√C; full
// mode: one row per example and output). Its inner loop is the operator
//   T_i = K'⁻¹(I − (I − cαK')^τ)   τ SGD steps of size α
//   T_i = K'⁻¹(I − e^{−ctK'})      gradient flow for time t
//   T_i = (K' + εI)⁻¹              t = ∞ (ε > 0 required)
// with K' = K(X'_i, X'_i) (K = Θ for MAML, the head kernel for ANIL), and c
// the scale of metatape's inner loss: the mean MSE over the n' support points
// and C outputs has the function-space gradient (2/(n'·C))(f − y), so
// c = 2/(n'·C) (as kernel_adaptation.hpp). With that c, α, τ and t mean what
// they mean for MAML: on a model linear in θ, τ SGD steps of metatape's inner
// loop move the query outputs by exactly Θ(X_i, X'_i) T_i (Y' − f(X'_i)).
// MetaNTK-NAS's T_i = (K' + λI)⁺(I − e^{−tK'}) is the flow of the ½Σ loss
// (c = 1): its time t is time = t·n'·C/2 here; its t = ∞ form is ours.
//
// The adapted query outputs' derivative with respect to θ is the projection
//   P_i = G(X_i) − K(X_i, X'_i) T_i G(X'_i)                 [n_i, D]
// and Φ = ΨΨᵀ with Ψ the P_i stacked, so
//   Φ_ij = Θ(X_i,X_j) − K(X_i,X'_i) T_i Θ(X'_i,X_j) − Θ(X_i,X'_j) T_jᵀ K(X'_j,X_j)
//          + K(X_i,X'_i) T_i Θ(X'_i,X'_j) T_jᵀ K(X'_j,X_j),
// the block formula of MetaNTK-NAS. Evaluated literally that formula cancels
// (≈1e-9 relative in float64 on a linear model, enough to break symmetry and
// semi-definiteness); ΨΨᵀ, symmetrised exactly, is the same matrix without
// the cancellation. meta_ntk_block_formula() keeps the literal form for
// comparison. Everything here is float64 and detached: Φ is a diagnostic,
// not part of a meta-gradient.
//
// Condition number: Φ over one-dimensional inputs is numerically singular
// (κ of 1e21–1e31 that changes with the BLAS), so κ is reported for Φ + ρI
// with the ridge ρ stated beside it; κ = +inf when λ_min + ρ ≤ 0.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "metatape/meta/kernel_adaptation.hpp"
#include "metatape/meta/ntk.hpp"
#include "metatape/meta/tasks.hpp"

namespace metatape::meta {

struct MetaNtkOptions {
  // steps (inner_lr α, inner_steps τ) or flow (time t, +infinity allowed).
  // The ridge form is not an inner loop of MAML: ValueError.
  KernelForm form = KernelForm::steps;
  double inner_lr = 0.01;
  std::int64_t inner_steps = 1;
  double time = 1.0;
  // ANIL: K = the head kernel in T_i and in the K(X_i, X'_i) factors, as the
  // MetaNTK-NAS code; Θ over all parameters elsewhere.
  bool anil = false;
  // ε of (K' + εI)⁻¹ at t = ∞ (MetaNTK-NAS: 1e-3); unused otherwise.
  double inverse_ridge = 1e-3;
  // ρ added to Φ for its spectrum's condition number (not to Φ itself).
  double ridge = 0.0;
  KernelMode mode = KernelMode::trace;  // trace or full
  // Throws ValueError naming the bad field.
  void validate() const;
};

// One task's Jacobian features, float64 on the CPU.
struct MetaNtkTask {
  Tensor query;    // [n, D]: G(X_i)
  Tensor support;  // [n', D]: G(X'_i)
  // ANIL only: the head's features [n, Dh] and [n', Dh]; undefined for MAML.
  Tensor query_head, support_head;
  double loss_scale = 1.0;  // c = 2/(n'·C)
};

// T_i [n', n'] for the support kernel k [n', n'] (symmetric PSD) and the loss
// scale c. ValueError for an invalid option or a non-finite result.
Tensor meta_ntk_inner_operator(const Tensor& support_kernel, double loss_scale, const MetaNtkOptions& options);

// P_i [n, D]. ShapeError when the task's features do not fit together.
Tensor meta_ntk_projection(const MetaNtkTask& task, const MetaNtkOptions& options);

struct MetaNtkResult {
  Tensor phi;                         // [N, N], N = Σ n_i (× C in full mode): exactly symmetric
  Tensor projections;                 // Ψ [N, D]
  std::vector<std::int64_t> offsets;  // task i's rows are offsets[i] .. offsets[i + 1] − 1
  std::vector<double> eigenvalues;    // of Φ (no ridge), ascending
  double ridge = 0.0;                 // ρ
  double condition_number = 0.0;      // (λmax + ρ)/(λmin + ρ); +inf when λmin + ρ ≤ 0
};

// Φ = ΨΨᵀ over the tasks, its spectrum and κ. ValueError for no tasks, an
// empty set, mismatched feature widths (naming the task), or NaN/inf.
MetaNtkResult meta_ntk(const std::vector<MetaNtkTask>& tasks, const MetaNtkOptions& options);

// The same Φ by the literal four-term block formula (cancels: for tests).
Tensor meta_ntk_block_formula(const std::vector<MetaNtkTask>& tasks, const MetaNtkOptions& options);

// Eigenvalues of the symmetric s (ascending) and the condition number of
// s + ρI, as MetaNtkResult reports them.
std::vector<double> symmetric_eigenvalues(const Tensor& s);
double ridged_condition_number(const std::vector<double>& eigenvalues, double ridge);

// The features of every task of `batch` for `model` at `params` (any
// floating dtype; computed in float64 via jacobian_rows): support_x
// [T, n', ...], query_x [T, n, ...]. Throws ShapeError for inputs that do
// not fit the model, ValueError for an empty set.
std::vector<MetaNtkTask> meta_ntk_tasks(const Model& model, const std::vector<Tensor>& params, const TaskBatch& batch,
                                        const MetaNtkOptions& options);
// Φ of `model` over `batch`: meta_ntk(meta_ntk_tasks(...)).
MetaNtkResult meta_ntk(const Model& model, const std::vector<Tensor>& params, const TaskBatch& batch,
                       const MetaNtkOptions& options);

// The kernel-regression prediction of a wide network meta-trained by outer
// gradient flow at rate η for time t:
//   F_t(X*) = F_0(X*) + Φ(X*, X) Φ⁻¹(I − e^{−ηΦt})(Y − F_0(X)),
// Φ⁻¹(I − e^{−ηΦt}) = gradient_flow_operator(Φ, ηt) (no inverse). phi
// [N, N] (from meta_ntk on the training tasks), cross = Φ(X*, X) [M, N] (from
// meta_ntk_cross), f0_train and y_train [N, C'], f0_test [M, C'] (C' = C in
// trace mode, 1 in full mode); eta·t finite and ≥ 0. ShapeError naming both
// shapes, ValueError for bad η, t.
Tensor meta_ntk_predict(const Tensor& phi, const Tensor& cross, const Tensor& f0_train, const Tensor& y_train,
                        const Tensor& f0_test, double eta, double time);
// Φ(X*, X) = Ψ* Ψᵀ [M, N] from the test tasks' projections and the training Ψ.
Tensor meta_ntk_cross(const std::vector<MetaNtkTask>& test_tasks, const Tensor& train_projections,
                      const MetaNtkOptions& options);

}  // namespace metatape::meta
