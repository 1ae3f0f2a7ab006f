// Functional transforms: derivatives of a function rather than of a tensor,
// as torch.func / torch.autograd.functional and JAX offer them.
//
//   auto f = [](const Tensor& x) { return tanh(matmul(x, x)); };
//   auto [y, u_J] = vjp(f, x, u);          // f(x) and uᵀ J_f(x)
//   auto [y2, J_v] = jvp(f, x, v);         // f(x) and J_f(x) v
//   Tensor J = jacobian(f, x);             // shape f(x).shape ++ x.shape
//   auto [s, H_v] = hvp(loss, x, v);       // for a scalar loss
//   Tensor H = hessian(loss, x);           // shape x.shape ++ x.shape
//
// The caller does not mark anything requires_grad_(): each transform runs f
// on fresh leaves of its own, made from the primals. What it records is
// released before it returns and its results are constants (detached),
// unless options.create_graph is set: then the results are recorded, so that
// they can be differentiated again (a transform inside grad(), a Hessian
// inside a meta-gradient), with respect to
//   - a primal that is itself a live variable (requires_grad_() or the
//     output of a recorded op): the transform works on a recorded copy of it,
//     so the result is connected to it — nested transforms compose this way;
//   - a cotangent, tangent or vector v that is a live variable;
//   - anything live that f closes over (a model's parameters).
// With create_graph the recorded nodes stay on the tape until the caller's
// TapeScope closes. f must not keep the leaves it is given past its return
// when create_graph is false: they die with the transform's own scope.
//
// Grad mode is switched on inside every transform (as torch.autograd.
// functional does), so they also work under NoGradScope.
//
// An output that does not depend on a primal has a zero derivative with
// respect to it (as in JAX). Primals, cotangents, tangents and
// the outputs of f must be f32 or f64; a cotangent has its output's shape,
// dtype and device, a tangent or v its primal's. Violations throw ValueError
// (undefined tensor, wrong count, empty f), ShapeError (shapes, both named;
// non-scalar f for hvp/hessian), DTypeError or DeviceError, naming the
// transform and which argument. Exceptions from f pass through.
//
// Cost is counted in forward runs of f and backward passes (a reverse walk
// over what f recorded). A "second-order" pass walks what a recorded
// backward recorded, and costs about two backward passes.
#pragma once

#include <functional>
#include <vector>

#include "metatape/tensor.hpp"

namespace metatape {

// The three shapes of f the transforms accept.
using TensorFn = std::function<Tensor(const Tensor&)>;
using TensorListFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;
// Many inputs, one output: e.g. a model's output or loss as a function of its
// parameter list.
using TensorListToTensorFn = std::function<Tensor(const std::vector<Tensor>&)>;

// How jacobian() walks the graph: a reverse pass per output element, or a
// forward-mode product (by the double-vjp trick, about two passes) per input
// element. forward pays off when the outputs have over twice the elements.
enum class JacobianStrategy { reverse, forward };

struct FunctionalOptions {
  // Record the transform, so its results are differentiable (see above).
  bool create_graph = false;
  // jacobian and hessian only: each block as a matrix [numel_out, numel_in]
  // instead of shape_out ++ shape_in (which must fit kMaxRank dimensions).
  bool flatten = false;
  // jacobian only.
  JacobianStrategy strategy = JacobianStrategy::reverse;
};

// f's value and its vector-Jacobian product: `vjp` has the primals' shapes.
template <class Outputs, class Primals>
struct VjpResult {
  Outputs output;
  Primals vjp;
};
// f's value and its Jacobian-vector product: `jvp` has the outputs' shapes.
template <class Outputs>
struct JvpResult {
  Outputs output;
  Outputs jvp;
};
// f's (scalar) value and its Hessian-vector product, shaped like the primals.
template <class Primals>
struct HvpResult {
  Tensor output;
  Primals hvp;
};

// --- vjp: uᵀ J_f(x), the reverse-mode product ---
// vjp_i = Σ_k J_{k,i}ᵀ u_k, where J_{k,i} = ∂ output_k / ∂ primal_i. One
// forward run and one backward pass. `cotangents` has one tensor per output.
VjpResult<Tensor, Tensor> vjp(const TensorFn& f, const Tensor& primal, const Tensor& cotangent,
                              const FunctionalOptions& options = {});
VjpResult<Tensor, std::vector<Tensor>> vjp(const TensorListToTensorFn& f, const std::vector<Tensor>& primals,
                                           const Tensor& cotangent, const FunctionalOptions& options = {});
VjpResult<std::vector<Tensor>, std::vector<Tensor>> vjp(const TensorListFn& f, const std::vector<Tensor>& primals,
                                                        const std::vector<Tensor>& cotangents,
                                                        const FunctionalOptions& options = {});

// --- jvp: J_f(x) t, the forward-mode product, by the double-vjp trick ---
// jvp_k = Σ_i J_{k,i} t_i. g(u) = uᵀJ is recorded for a dummy cotangent u
// (g is linear in u), and J t = ∂⟨g(u), t⟩/∂u. One forward run, one recorded
// backward pass and one second-order pass; no forward-mode rules needed.
JvpResult<Tensor> jvp(const TensorFn& f, const Tensor& primal, const Tensor& tangent,
                      const FunctionalOptions& options = {});
JvpResult<Tensor> jvp(const TensorListToTensorFn& f, const std::vector<Tensor>& primals,
                      const std::vector<Tensor>& tangents, const FunctionalOptions& options = {});
JvpResult<std::vector<Tensor>> jvp(const TensorListFn& f, const std::vector<Tensor>& primals,
                                   const std::vector<Tensor>& tangents, const FunctionalOptions& options = {});

// --- hvp: ∇²f(x) v for a scalar f (one element, any rank) ---
// hvp_i = Σ_j ∂²f / ∂x_i ∂x_j · v_j, by reverse-over-reverse: the gradient
// is recorded, then ⟨∇f, v⟩ differentiated. One forward run, one recorded
// backward pass, one second-order pass. ShapeError if f is not scalar.
HvpResult<Tensor> hvp(const TensorFn& f, const Tensor& primal, const Tensor& v, const FunctionalOptions& options = {});
HvpResult<std::vector<Tensor>> hvp(const TensorListToTensorFn& f, const std::vector<Tensor>& primals,
                                   const std::vector<Tensor>& v, const FunctionalOptions& options = {});

// --- jacobian: the full J_f(x) ---
// For f: R^{shape_in} -> R^{shape_out}, shape shape_out ++ shape_in (as
// torch.autograd.functional.jacobian), or [numel_out, numel_in] with
// options.flatten; its dtype is the primal's. The list forms give one block
// per primal (one output), or blocks[k][i] = ∂ output_k / ∂ primal_i.
// f runs once; its one recorded graph is then walked as often as needed,
// each walk seeded with a basis vector:
//   reverse (default): seed e_r on output k gives row r of every block (k, ·)
//     in one backward pass. Cost: Σ_k numel(output_k) backward passes.
//   forward: g(u) = uᵀJ is recorded once (as in jvp); seed e_c on g_i gives
//     column c of every block (·, i). Cost: one recorded backward pass and
//     Σ_i numel(primal_i) second-order passes.
// There is no vmap: "batched" means the rows share one forward run and one
// graph, not one pass. With create_graph, every walk is itself recorded.
Tensor jacobian(const TensorFn& f, const Tensor& primal, const FunctionalOptions& options = {});
std::vector<Tensor> jacobian(const TensorListToTensorFn& f, const std::vector<Tensor>& primals,
                             const FunctionalOptions& options = {});
std::vector<std::vector<Tensor>> jacobian(const TensorListFn& f, const std::vector<Tensor>& primals,
                                          const FunctionalOptions& options = {});

// --- hessian: the full ∇²f(x) for a scalar f ---
// The jacobian of the recorded gradient: shape x.shape ++ x.shape (or
// [numel, numel] with options.flatten); blocks[i][j] = ∂²f / ∂x_i ∂x_j for a
// primal list. Cost: one forward run, one recorded backward pass and
// Σ_i numel(x_i) second-order passes. Symmetric up to rounding.
Tensor hessian(const TensorFn& f, const Tensor& primal, const FunctionalOptions& options = {});
std::vector<std::vector<Tensor>> hessian(const TensorListToTensorFn& f, const std::vector<Tensor>& primals,
                                         const FunctionalOptions& options = {});

}  // namespace metatape
