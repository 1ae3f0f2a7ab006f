// Internal: every primitive op's definition and every composite op's
// samples, defined in the family files, gathered by registry.cpp.
#pragma once

#include "op.hpp"

namespace metatape::detail {

// ops_elementwise.cpp
extern const OpDef add_op, add_scaled_op, sub_op, mul_op, div_op;
extern const OpDef neg_op, exp_op, log_op, sqrt_op, tanh_op, sigmoid_op, relu_op, abs_op;
extern const OpDef pow_op, scale_op, shift_op, cast_op, copy_op;
std::vector<OpSample> square_samples(Generator& gen, DType dtype);

// ops_reduce.cpp
extern const OpDef sum_to_op, expand_op;
std::vector<OpSample> sum_samples(Generator& gen, DType dtype);
std::vector<OpSample> mean_samples(Generator& gen, DType dtype);
std::vector<OpSample> max_samples(Generator& gen, DType dtype);
std::vector<OpSample> logsumexp_samples(Generator& gen, DType dtype);

// ops_layout.cpp
extern const OpDef reshape_op, permute_op, slice_op, pad_op, concat_op;
extern const OpDef gather_rows_op, scatter_rows_op, take_op, scatter_add_op;
// The adjoints of slice, gather_rows and take (internal: users slice,
// gather and take; these are what their derivatives are made of), and
// gathers whose indices the caller has already checked (indices_checked
// skips the range check, which for a device tensor would copy to the host).
Tensor pad_axis(const Tensor& g, int axis, std::int64_t start, const Shape& shape);
Tensor scatter_rows(const Tensor& g, const Tensor& index, const Shape& shape, bool indices_checked);
Tensor scatter_add(const Tensor& g, const Tensor& index, const Shape& shape, bool indices_checked);
Tensor gather_rows_checked(const Tensor& x, const Tensor& index, bool indices_checked);
Tensor take_checked(const Tensor& x, const Tensor& index, bool indices_checked);
// take_along_last with its errors naming `caller`: the op a user called
// (cross_entropy), not the one it is built from.
Tensor take_along_last(const Tensor& x, const Tensor& labels, const char* caller);
std::vector<OpSample> squeeze_unsqueeze_samples(Generator& gen, DType dtype);
std::vector<OpSample> transpose_samples(Generator& gen, DType dtype);
std::vector<OpSample> stack_samples(Generator& gen, DType dtype);

// ops_elementwise.cpp: g ⊙ mask(x) for relu's 0/1 mask (step: the op
// times_step) or abs's ±1 (sign: times_sign), in one pass; x is not
// differentiated (the mask's derivative is zero almost everywhere). The
// ops are internal: they are relu's and abs's derivatives, registered so
// that the tests gradcheck them.
extern const OpDef times_step_op, times_sign_op;
Tensor times_mask(kernels::UnaryOp mask, const Tensor& g, const Tensor& x);
// into += x, x broadcast to into's shape, in place (binary add writing
// into's buffer): the bits of add(into, expand(x, into.shape())). For a
// backward rule adding into an adjoint it was offered
// (BackwardContext::grad_accumulator), never on a recorded tensor.
void add_in_place(Tensor& into, const Tensor& x);
// Input i's gradient is g broadcast to the input's shape (expand): added
// into the adjoint the tape offers, or else set as a new tensor.
void set_broadcast_grad(BackwardContext& c, int i, const Tensor& g);

// ops_linalg.cpp
extern const OpDef matmul_op, linear_op, linear_relu_op;
extern const OpDef eigh_op;  // ops_eigh.cpp

// ops_nn.cpp
extern const OpDef log_softmax_op, conv2d_op, conv2d_relu_op, conv2d_input_grad_op, conv2d_weight_grad_op,
    batch_norm_op;
extern const OpDef max_pool2d_op, max_unpool2d_op, batch_norm_max_pool2d_op;
// The adjoint of max_pool2d (internal: its indices are max_pool2d's index
// output, never the caller's): zeros(shape) with entry index[i] += g[i].
Tensor max_unpool2d(const Tensor& g, const Tensor& index, const kernels::Window2d& window, const Shape& shape);
std::vector<OpSample> softmax_samples(Generator& gen, DType dtype);
std::vector<OpSample> cross_entropy_samples(Generator& gen, DType dtype);
std::vector<OpSample> mse_loss_samples(Generator& gen, DType dtype);
std::vector<OpSample> conv2d_samples(Generator& gen, DType dtype);
std::vector<OpSample> conv2d_relu_samples(Generator& gen, DType dtype);
std::vector<OpSample> max_pool2d_samples(Generator& gen, DType dtype);
std::vector<OpSample> max_unpool2d_samples(Generator& gen, DType dtype);
std::vector<OpSample> batch_norm_samples(Generator& gen, DType dtype);
std::vector<OpSample> batch_norm_max_pool2d_samples(Generator& gen, DType dtype);

// ops_cholesky.cpp
extern const OpDef cholesky_op, solve_triangular_op;
std::vector<OpSample> cholesky_solve_samples(Generator& gen, DType dtype);

// ops_matrix_functions.cpp
std::vector<OpSample> phi1_samples(Generator& gen, DType dtype);
std::vector<OpSample> gradient_flow_operator_samples(Generator& gen, DType dtype);
std::vector<OpSample> sgd_steps_operator_samples(Generator& gen, DType dtype);

}  // namespace metatape::detail
