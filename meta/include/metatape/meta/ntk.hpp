// The empirical neural tangent kernel (docs/methods.md §5): Θ(A, B) =
// J(A) J(B)ᵀ with J(x) = ∂f_θ(x)/∂θ, for any model of models.hpp.
//
// J comes from per-sample gradients in one batched pass: θ is expanded to one
// copy per example ([S] + base shape, per_task) and the examples run as S
// one-point tasks, so a dense layer's gradient is the batched outer product
// δ xᵀ and a conv layer's goes through the task-batched im2col; one backward
// pass per output gives every example's row. A model whose examples are
// coupled (batch norm with the statistics of the set, Model::couples_examples)
// has no per-sample gradient in that sense: its J is the Jacobian of the
// whole set's outputs, one backward pass per output element (n·C passes per
// set: fine for the small support and query sets of few-shot tasks, slow for
// large ones). Θ(A, B) then pairs set A's Jacobian (with A's statistics)
// with set B's.
//
// A model made of dense layers (Model::dense_layers, the MLP) skips the rows
// in empirical_ntk: each layer adds s²(aᵢ·aⱼ)(δᵢ·δⱼ) + δᵢ·δⱼ, from its inputs
// a and δ = ∂f_c/∂z of one backward per output; the same kernel, exactly,
// without per-example weight gradients.
//
// Output modes, for C outputs (as neural-tangents names them):
//   full      Θ[(i, c), (j, c')] over examples and outputs: [nA·C, nB·C],
//             row index i·C + c;
//   trace     (1/C) Σ_c Θ[(i, c), (j, c)]: [nA, nB] (the kernel shared by all
//             outputs);
//   diagonal  Θ[(i, c), (j, c)] per output: [nA, nB, C].
// Task-batched inputs [T, n, ...] give one kernel per task, with a leading
// [T] axis. With create_graph the kernel is recorded, so that a loss of it
// can be differentiated with respect to the parameters (exact kernel
// meta-gradients); without it the result is detached.
//
// Errors: ShapeError for parameters that are not the model's in their shared
// shapes, or inputs that do not fit the model or each other (both shapes
// named); ValueError for an undefined or empty set, or a non-finite result
// (checked for CPU tensors); DTypeError for non-floating parameters or inputs
// of another dtype; GradError under a NoGradScope for jacobian_rows and
// empirical_ntk, whose rows are backward passes (ntk_vector_product, made of
// functional transforms, switches grad mode on itself).
#pragma once

#include <vector>

#include "metatape/engine.hpp"
#include "metatape/meta/models.hpp"

namespace metatape::meta {

enum class KernelMode { full, trace, diagonal };
// Which parameters the kernel is taken over: all; the head (the last layer,
// what ANIL adapts: the ANIL kernel); the weights only (every parameter of
// rank >= 2: no biases, no normalisation scales and shifts).
enum class ParamSubset { all, head, weights };

const char* kernel_mode_name(KernelMode mode);
KernelMode parse_kernel_mode(const std::string& name);  // ValueError listing the choices
const char* param_subset_name(ParamSubset subset);
ParamSubset parse_param_subset(const std::string& name);
// Every mode and subset, in the order they are listed to users.
inline constexpr KernelMode kKernelModes[] = {KernelMode::trace, KernelMode::full, KernelMode::diagonal};
inline constexpr ParamSubset kParamSubsets[] = {ParamSubset::all, ParamSubset::head, ParamSubset::weights};

struct NtkOptions {
  KernelMode mode = KernelMode::trace;
  ParamSubset subset = ParamSubset::all;
  bool create_graph = false;
};

// The indices into model.parameters() that `subset` selects.
std::vector<std::size_t> subset_indices(const Model& model, ParamSubset subset);

// Per-example Jacobian rows over the selected parameters: [C, S, P] for
// x [S, ...] (one task; P = Σ numel of the selected parameters, concatenated
// in parameter order, each flattened row-major), or [T, C, S, P] for
// x [T, S, ...]. params are shared (base shapes).
Tensor jacobian_rows(const Model& model, const std::vector<Tensor>& params, const Tensor& x,
                     const NtkOptions& options = {});

// Θ(a, b) in options.mode; a [nA, ...] and b [nB, ...] (one task) or
// [T, nA, ...] and [T, nB, ...] (one kernel per task). Throws ShapeError for
// inputs that do not fit the model or each other, ValueError for an empty set.
Tensor empirical_ntk(const Model& model, const std::vector<Tensor>& params, const Tensor& a, const Tensor& b,
                     const NtkOptions& options = {});
// Θ(x, x), exactly symmetric (also when a and b above are one tensor).
Tensor empirical_ntk(const Model& model, const std::vector<Tensor>& params, const Tensor& x,
                     const NtkOptions& options = {});

// Θ(x, x) v without forming Θ: J (Jᵀ v), one backward pass and one
// forward-mode product. v has the model's output shape for x ([n, C] or
// [T, n, C]); the result too. The full kernel (mode is ignored); the
// subset applies. For a model that couples examples J is the set's
// Jacobian, as in empirical_ntk. Recorded with create_graph (derivatives
// reach params and v), detached otherwise. ShapeError for a v of another
// shape.
Tensor ntk_vector_product(const Model& model, const std::vector<Tensor>& params, const Tensor& x, const Tensor& v,
                          const NtkOptions& options = {});

}  // namespace metatape::meta
