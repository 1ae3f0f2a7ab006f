// Tools to study the second-order term of the meta-gradient at a set of
// meta-parameters (docs/methods.md §7): per task, the exact and the
// first-order meta-gradients side by side; their spread across tasks; the top
// of the inner-loss and meta-loss Hessian spectra by Lanczos on
// Hessian-vector products; and the Meta-NTK's condition number.
//
// Throughout, "exact" is MAML's meta-gradient and "first order" FOMAML's,
// both with the inner loop α = inner_lr, τ = inner_steps of the options, taken
// with respect to the model's parameters only (learned rates, if the run had
// any, are not used), so that checkpoints of every algorithm are compared on
// the same footing.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "metatape/meta/maml.hpp"

namespace metatape::meta {

// --- Lanczos on a symmetric operator ---

// y = A v for a symmetric A of order n: v and y hold n values.
using SymmetricOperator = std::function<std::vector<double>(const std::vector<double>& v)>;

struct LanczosOptions {
  int eigenvalues = 5;     // k: how many of the largest (algebraic) eigenvalues
  int iterations = 30;     // Krylov dimension m, k <= m; capped at n
  std::uint64_t seed = 1;  // of the random unit start vector
};

struct LanczosResult {
  // The k largest Ritz values, decreasing (min(k, Krylov dimension reached)).
  std::vector<double> eigenvalues;
  // ‖A y − θ y‖ of each Ritz pair, as Lanczos bounds it (|β_m · s_m|): how
  // far each value may still be from an eigenvalue of A.
  std::vector<double> residuals;
  int iterations = 0;  // the Krylov dimension reached: < m when an invariant subspace was found
};

// Lanczos with full reorthogonalisation (every new vector is orthogonalised
// twice against all earlier ones, so no spurious copies of converged values
// appear), then the eigenvalues of the tridiagonal matrix (LAPACK dstev).
// Stops early when β falls below 1e-12·‖T‖ (an invariant subspace). Throws
// ValueError for n < 1, k < 1, m < k, an empty operator, or an operator that
// returns the wrong size or a non-finite value (naming the iteration).
LanczosResult lanczos_top_eigenvalues(const SymmetricOperator& apply, std::int64_t n, const LanczosOptions& options);

// --- Hessians of the inner and the meta-loss, as operators ---
// Vectors are the model parameters flattened in Model::parameter order, in
// float64 whatever the parameters' dtype (converted on the way in and out);
// the products are computed in the parameters' dtype. The operators keep a
// reference to the model (which must outlive them) and copies of the
// parameters and the batch. Building one checks the inputs as
// validate_inputs does (and inner_lr, inner_steps as compare_meta_gradients);
// applying one to a vector of the wrong length throws ValueError.

// The number of values in params (Σ numel).
std::int64_t flat_size(const std::vector<Tensor>& params);

// H v for H the Hessian, with respect to the model parameters at `params`,
// of the mean over tasks of the support loss (the inner loss), by
// reverse-over-reverse.
SymmetricOperator inner_loss_hessian(const Model& model, Loss loss, const std::vector<Tensor>& params,
                                     const TaskBatch& batch);

// H v for H the Hessian of MAML's meta-loss (the mean over tasks of the query
// loss after `inner_steps` exact SGD steps of `inner_lr` on the support set)
// with respect to the model parameters: a third-order derivative of the
// loss, by reverse-over-reverse through the recorded inner loop.
SymmetricOperator meta_loss_hessian(const Model& model, Loss loss, const std::vector<Tensor>& params,
                                    const TaskBatch& batch, double inner_lr, int inner_steps);

// --- exact against first-order meta-gradients ---

struct MetaGradientComparison {
  // Per task t (size T each): cos(g_t, f_t), ‖f_t‖/‖g_t‖, ‖g_t‖ and ‖f_t‖,
  // where g_t is task t's exact meta-gradient and f_t its first-order one.
  std::vector<double> cosine, norm_ratio, exact_norm, first_order_norm;
  // Of the batch's mean gradients ḡ = mean_t g_t and f̄ likewise.
  double mean_cosine = 0, mean_norm_ratio = 0;
  // Spread across tasks: the trace of the sample covariance,
  // (1/(T−1)) Σ_t ‖g_t − ḡ‖² (0 for T = 1), and the signal-to-noise ratio of
  // the mean, ‖ḡ‖² / (variance / T) (+inf when the variance is 0 and ḡ is
  // not, NaN when both are).
  double exact_variance = 0, first_order_variance = 0;
  double exact_snr = 0, first_order_snr = 0;
};

// Every task's exact and first-order meta-gradient (task_meta_gradients),
// summarised (summarize_meta_gradients). ValueError for inner_steps < 0,
// inner_lr not finite or negative, a non-finite gradient (naming the task),
// and whatever validate_inputs refuses.
MetaGradientComparison compare_meta_gradients(const Model& model, Loss loss, const std::vector<Tensor>& params,
                                              const TaskBatch& batch, double inner_lr, int inner_steps);

// Per task t, the gradient of its own query loss after the inner loop (the
// exact meta-gradient g_t, or with first_order f_t = ∇L(θ_t^τ; query_t)),
// with respect to the model parameters: [T] rows of flat_size(params) values
// in float64. The tasks' mean is the meta-gradient of the batch. One graph for
// the whole batch. Errors as compare_meta_gradients.
std::vector<std::vector<double>> task_meta_gradients(const Model& model, Loss loss, const std::vector<Tensor>& params,
                                                     const TaskBatch& batch, double inner_lr, int inner_steps,
                                                     bool first_order);

// The statistics above from the per-task gradients g_t (exact) and f_t
// (first_order), [T] rows of one length each. A cosine with a zero vector is
// NaN, as is 0/0 in a norm ratio (x/0 is +inf). ValueError for no tasks or
// rows of different lengths.
MetaGradientComparison summarize_meta_gradients(const std::vector<std::vector<double>>& exact,
                                                const std::vector<std::vector<double>>& first_order);

// --- everything at one checkpoint ---

struct AnalysisOptions {
  double inner_lr = 0.01;
  int inner_steps = 1;
  LanczosOptions lanczos{};
  bool hessians = true;          // the two Lanczos runs (the costly part)
  bool meta_ntk = true;          // Φ and κ(Φ + ρI)
  double meta_ntk_ridge = 1e-3;  // ρ
  // Called before each stage with a short name ("meta-gradients", "inner
  // Hessian", "meta Hessian", "meta-NTK") and the stage's index and count,
  // for a progress line. May be empty.
  std::function<void(const char* stage, int index, int count)> progress{};
};

struct Analysis {
  MetaGradientComparison gradients;
  LanczosResult inner_hessian, meta_hessian;  // empty unless options.hessians
  // The Meta-NTK of the batch (steps form at inner_lr, inner_steps, trace
  // mode; classification labels enter only through the loss scale): its
  // eigenvalues (ascending) and κ(Φ + ρI). Empty / NaN unless options.meta_ntk.
  std::vector<double> meta_ntk_eigenvalues;
  double meta_ntk_ridge = 0;
  double meta_ntk_condition = 0;
};

Analysis analyze(const Model& model, Loss loss, const std::vector<Tensor>& params, const TaskBatch& batch,
                 const AnalysisOptions& options);

}  // namespace metatape::meta
