// The ops. Each is differentiable to any order (relu, abs, max and max-pool
// almost everywhere: their derivatives are piecewise constant). Binary
// elementwise ops broadcast by NumPy rules. Operands must share dtype and
// device; a mismatch throws a typed error naming the op and the operands.
// NaN in, NaN out: no op hides a NaN.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <vector>

#include "metatape/tensor.hpp"

namespace metatape {

// --- elementwise, broadcasting ---
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
// x + alpha · y (PyTorch's add(x, y, alpha=)), alpha rounded to the dtype
// and the product rounded before the sum: the bits of add(x, scale(y,
// alpha)), in one pass and one tape node when x and y have one shape (an
// SGD step θ − α·g is add_scaled(θ, g, -α)).
Tensor add_scaled(const Tensor& x, const Tensor& y, double alpha);

// --- elementwise, one operand ---
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);   // NaN below 0, -inf at 0
Tensor sqrt(const Tensor& x);  // NaN below 0; infinite derivative at 0
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);                  // derivative 0 at 0 (as PyTorch)
Tensor abs(const Tensor& x);                   // derivative 0 at 0 (as PyTorch)
Tensor pow(const Tensor& x, double exponent);  // NaN for x < 0 unless the exponent is an integer
Tensor square(const Tensor& x);                // pow(x, 2)
Tensor scale(const Tensor& x, double factor);  // x * factor
Tensor shift(const Tensor& x, double offset);  // x + offset

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& x);
Tensor operator+(const Tensor& x, double s);
Tensor operator+(double s, const Tensor& x);
Tensor operator-(const Tensor& x, double s);
Tensor operator-(double s, const Tensor& x);
Tensor operator*(const Tensor& x, double s);
Tensor operator*(double s, const Tensor& x);
Tensor operator/(const Tensor& x, double s);
Tensor operator/(double s, const Tensor& x);

// --- reductions. Axes may be negative; an empty list means all axes. ---
Tensor sum(const Tensor& x, const std::vector<int>& axes = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int>& axes = {}, bool keepdim = false);
// The maximum along one axis. The gradient goes to the first maximal entry.
Tensor max(const Tensor& x, int axis, bool keepdim = false);
// log Σ exp along one axis, computed as max + log Σ exp(x - max), so exp
// never overflows. The value's error is a few roundings of |max| + log Σ; the
// derivatives see x only through x - max and, like log_softmax, do not change
// when all of x shifts by a constant.
Tensor logsumexp(const Tensor& x, int axis, bool keepdim = false);
// Sums x down to `shape`, the inverse of broadcasting (x's shape must be a
// broadcast of `shape`).
Tensor sum_to(const Tensor& x, const Shape& shape);

// --- shape and layout ---
// Same elements, new shape (a view: no copy). One dimension may be -1.
Tensor reshape(const Tensor& x, const std::vector<std::int64_t>& shape);
Tensor reshape(const Tensor& x, std::initializer_list<std::int64_t> shape);
Tensor reshape(const Tensor& x, const Shape& shape);
Tensor flatten(const Tensor& x, int start_axis = 0);  // merge axes start_axis.. into one
Tensor unsqueeze(const Tensor& x, int axis);          // insert a dimension of size 1
Tensor squeeze(const Tensor& x, int axis);            // remove a dimension of size 1
// Repeats size-1 (or missing leading) dimensions up to `shape` (a copy).
Tensor expand(const Tensor& x, const Shape& shape);
// Output axis i is input axis perm[i] (a copy).
Tensor permute(const Tensor& x, const std::vector<int>& perm);
Tensor transpose(const Tensor& x, int axis0 = -2, int axis1 = -1);
// Elements start..stop-1 along `axis` (a copy). Negative bounds count from the end.
Tensor slice(const Tensor& x, int axis, std::int64_t start, std::int64_t stop);
// Rows of x (along axis 0) at the i64 `index` (any shape): the result has
// shape index.shape + x.shape[1:]. Out-of-range indices throw ValueError.
Tensor gather_rows(const Tensor& x, const Tensor& index);
// Joins tensors of equal shapes except along `axis`.
Tensor concat(const std::vector<Tensor>& xs, int axis = 0);
// Joins tensors of equal shapes along a new axis.
Tensor stack(const std::vector<Tensor>& xs, int axis = 0);
// x.flat[index] for an i64 index tensor of any shape (the result's shape).
Tensor take(const Tensor& x, const Tensor& index);
// x[..., labels[...]]: for x [..., C] and i64 labels [...] (on x's device),
// each row's entry at its label, shaped like labels; as torch.gather(x, -1,
// labels.unsqueeze(-1)).squeeze(-1). Labels outside [0, C) throw ValueError
// naming the row (checked on the host: see CapturedStep for the one case
// where it cannot be).
Tensor take_along_last(const Tensor& x, const Tensor& labels);

// --- linear algebra ---
// a [..., m, k] @ b [..., k, n]; leading (batch) dimensions broadcast.
// A 2-D b is shared by every row of a: a [..., m, k] @ b [k, n] runs as one
// GEMM. 1-D operands are not accepted: reshape them to rows or columns.
Tensor matmul(const Tensor& a, const Tensor& b);
// matmul with either operand's last two axes transposed, without a copy.
Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b);
struct LinearOptions {
  // max(·, 0) on the output (after the bias), in the same pass: relu(linear(...))
  // with the same values and derivatives.
  bool relu = false;
};
// A layer: x [..., m, k] @ w [..., k, n] + bias (as matmul, batch dimensions
// broadcast; w is [in, out], as torch.addmm's, not F.linear's [out, in]).
// bias is [n] or [..., 1, n]: one row added to every row of the output, the
// same row for every matrix or one row per matrix of the output's batch
// (add() broadcasts any other shape). On the CPU the bias and the ReLU are
// applied in the product's own pass over the output; the values are those
// of add(matmul(x, w), bias) and relu() of it, bit for bit.
Tensor linear(const Tensor& x, const Tensor& w, const LinearOptions& options = {});
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias, const LinearOptions& options = {});
// Symmetric eigendecomposition of the symmetric part S = (A + Aᵀ)/2 of each
// matrix of a [..., n, n] (both triangles are read; a symmetric A is S exactly):
// S = V diag(w) Vᵀ with values w [..., n] ascending and vectors V [..., n, n]
// orthonormal, eigenvector k in column k. LAPACK ?syevd (divide and conquer)
// per matrix on the CPU, cuSOLVER ?syevd on the GPU.
// - Signs: each eigenvector's sign (its basis, for a repeated eigenvalue) is
//   the solver's arbitrary choice. Differentiate only functions of V that do
//   not see it: V diag(c) Vᵀ, squares of V's entries, spectral functions.
// - Derivative: Ā = sym(V (diag(w̄) + F ∘ (Vᵀ V̄)) Vᵀ), sym(X) = (X + Xᵀ)/2
//   (always symmetric: it is the gradient through A ↦ S), with
//   F_ij = 1/(w_j − w_i), computed from the recorded w, so derivatives of any
//   order exist where the eigenvalues are distinct.
// - Repeated eigenvalues: where |w_j − w_i| ≤ 64·n·ε·max_k |w_k| (ε the
//   dtype's machine epsilon) F_ij is taken as 0 rather than ~1/ε of noise.
//   Only losses that do not see the basis chosen inside an eigenspace have a
//   derivative there. First derivatives of losses of the eigenvalues alone
//   (tr g(A) = Σ g(w), a simple eigenvalue) are then exact. A spectral
//   function V diag(g(w)) Vᵀ loses the term g′(λ)·(the upstream gradient
//   projected onto the eigenspace), and so do second derivatives of
//   eigenvalue losses: exact only where the eigenvalues are distinct (or g is
//   constant on the repeated ones). Eigenvectors themselves have no
//   derivative at a repeated eigenvalue.
// - Errors: NaN or inf anywhere in a matrix throws ValueError naming its
//   batch index and the entry; a solver that does not converge throws
//   ValueError naming the batch index (both checked on the host: a copy for a
//   GPU tensor, skipped while a CUDA graph is captured).
struct EighResult {
  Tensor values;   // [..., n], ascending
  Tensor vectors;  // [..., n, n], column k for values[..., k]
};
EighResult eigh(const Tensor& a);

// --- linear algebra: Cholesky factorisation and triangular solves ---
// (LAPACK potrf / BLAS trsm on the CPU, cuSOLVER / cuBLAS on the GPU; one
// factorisation or solve per matrix of a batch; f32 and f64.)
//
// The Cholesky factor of a symmetric positive definite A [..., n, n]: the
// lower-triangular L with a positive diagonal and A = L Lᵀ (its strict upper
// triangle is zero). Only the lower triangle of A is read; the upper one is
// assumed to mirror it. The derivative is that along symmetric perturbations
// of A (Murray 2016): Ā = sym(L⁻ᵀ Φ(Lᵀ L̄) L⁻¹), Φ taking the lower triangle
// with the diagonal halved; Ā is symmetric, so a gradient step keeps A
// symmetric. A matrix that is not positive definite (numerically: a leading
// minor not positive, or NaN) throws ValueError naming the matrix's index in
// the batch and LAPACK's info, the order of that leading minor; the remedy
// is a ridge, A + λI. On the GPU it waits for the factorisation to read the
// status, so it cannot be captured in a CUDA graph (DeviceError).
Tensor cholesky(const Tensor& a);
// X with op(A) X = B, for A [..., n, n] triangular (only its lower triangle
// is read if `lower`, else only its upper one), op(A) = A or Aᵀ (transpose),
// and B [..., n, k] with the same batch dimensions. Derivatives:
// B̄ = op(A)⁻ᵀ X̄, and Ā = −B̄ Xᵀ (or −X B̄ᵀ when transposed) restricted to the
// triangle that is read. A zero on A's diagonal gives inf or NaN (not
// checked); its accuracy degrades with A's condition number.
Tensor solve_triangular(const Tensor& a, const Tensor& b, bool lower = true, bool transpose = false);
// X with L Lᵀ X = B: the solve with A = L Lᵀ given its Cholesky factor
// L [..., n, n] (from cholesky), B [..., n, k]; two triangular solves,
// differentiable through them with respect to L and B.
Tensor cholesky_solve(const Tensor& l, const Tensor& b);

// --- linear algebra: matrix functions for closed-form inner loops ---
// (docs/methods.md §2.) Compositions of matmul and elementwise ops only — no
// inverse, no eigendecomposition — so derivatives of every order are exact,
// also where K is singular. Square [..., n, n] f32/f64 inputs (batched);
// others throw DTypeError / ShapeError naming the op and the shape.
//
// φ₁(Z) = Σ_{k≥0} Z^k/(k+1)! = Z⁻¹(e^Z − I), any square Z. Scaling and
// squaring: s with ‖Z‖₁/2^s ≤ 1/2 (the 1-norm is read on the host from the
// values, detached: it only picks the integer s), a 15-term Taylor series of
// φ₁(Z/2^s) in Horner form (truncation below 3e-18 at ‖W‖₁ ≤ 1/2), then s
// times φ₁(2W) = φ₁(W)(e^W + I)/2. Costs 14 + 2s matrix products. NaN or inf
// in Z throws ValueError.
Tensor phi1(const Tensor& z);
// t·φ₁(−tK) = K⁻¹(I − e^{−tK}): the gradient-flow operator for time t of the
// ½Σ‖f − y‖² loss (for the mean loss, pass c·t with c = 1/n). Equals t·I at
// K = 0 and tends to K⁻¹ as t → ∞ for positive definite K; t must be finite
// and ≥ 0 (ValueError).
Tensor gradient_flow_operator(const Tensor& k, double t);
// α Σ_{j<τ} (I − αK)^j = K⁻¹(I − (I − αK)^τ): the operator of τ = steps
// gradient steps of size α, by Horner's rule in τ − 1 matrix products.
// steps = 0 gives zeros; steps < 0 or a non-finite α throws ValueError.
Tensor sgd_steps_operator(const Tensor& k, double alpha, std::int64_t steps);

// --- neural-network ops ---
// log_softmax(x) = (x - max) - log Σ exp(x - max) along `axis`, with max a
// constant: x enters only through x - max, so the error is a few roundings of
// these shifted values (not of |x|: logits near 1e8 are as accurate as near
// 1), and the backward, g - softmax(x) Σ g, reads only the output. Hence
// adding a constant c to all of x changes no value and no derivative of any
// order: bit for bit when x + c is exact (as for c a large power of two or
// integer and logits with few significant bits), and otherwise only through
// the rounding of x + c itself.
Tensor log_softmax(const Tensor& x, int axis = -1);
// exp(log_softmax(x)): relative error a few roundings times (1 + |log p|).
Tensor softmax(const Tensor& x, int axis = -1);
// Mean over rows of -log_softmax(logits)[label]: logits [N, C], labels i64 [N]
// in 0..C-1 (others throw ValueError). Shift invariant as log_softmax.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels);
// Mean of (prediction - target)², shapes equal.
Tensor mse_loss(const Tensor& prediction, const Tensor& target);

struct Conv2dOptions {
  std::int64_t stride = 1;
  std::int64_t padding = 0;  // zeros on every side
  // max(·, 0) on the output (after the bias), fused into the convolution's
  // last write: relu(conv2d(...)) with one pass fewer over the output, and
  // the same values and derivatives.
  bool relu = false;
};
// x [N, C, H, W] with weight [O, C, kh, kw] gives [N, O, Ho, Wo];
// task-batched, x [T, N, C, H, W] with weight [T, O, C, kh, kw] gives
// [T, N, O, Ho, Wo] (one weight per task). Computed on the CPU as an
// implicit GEMM (8 or more input channels, where the CPU has AVX2) or as
// im2col + GEMM; on CUDA as im2col + cuBLAS.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Conv2dOptions& options = {});
// The same plus a bias on each output channel: [O], or for task-batched x
// also [T, O]. Added while each chunk of the output is in cache, so it
// costs less than add() after the convolution.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dOptions& options = {});

struct Pool2dOptions {
  std::int64_t kernel = 2;
  std::int64_t stride = 0;   // 0 means equal to kernel
  std::int64_t padding = 0;  // at most kernel / 2; padding never wins
};
// Over the last two axes of x (rank 3 to 5).
Tensor max_pool2d(const Tensor& x, const Pool2dOptions& options = {});

struct BatchNormOptions {
  double eps = 1e-5;
  // Leading axes that index independent groups (the task axis of a
  // task-batched model): statistics are never shared across them.
  int group_axes = 0;
  // Apply ReLU to the result, fused: the same values and derivatives as
  // relu(batch_norm(...)), without keeping the normalised tensor for the
  // backward pass (it is recomputed from x).
  bool relu = false;
};
// Batch normalisation with the statistics of this batch (biased variance),
// as MAML uses it: x [G..., N, C, ...]; axis group_axes + 1 is the channel
// axis; statistics over the other non-group axes. gamma and beta are [C] or
// [G..., C] (one per group).
Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const BatchNormOptions& options = {});
// max_pool2d(batch_norm(x, gamma, beta, options), {.kernel = 2}) as one op,
// for x [G..., N, C, H, W]: the same values and derivatives, at any order.
// On maps of 100 entries or more the CPU normalises and pools one H × W map
// at a time, so the normalised tensor never reaches memory; on maps of 400
// or more it also unpools the gradient one map at a time (15 MB each saved
// on Conv4's 28 × 28 query maps).
Tensor batch_norm_max_pool2d(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             const BatchNormOptions& options = {});

}  // namespace metatape
