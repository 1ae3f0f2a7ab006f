// The one op registry: every public op, primitives (with their own backward
// rule) first, then compositions. The test suite gradchecks each entry's
// samples to second order, so adding an op here is adding it to the tests.
#include "metatape/registry.hpp"

#include "op_defs.hpp"

namespace metatape {
namespace {

constexpr OpInfo primitive(const detail::OpDef& op) { return {op.name, OpKind::primitive, op.samples}; }

const OpInfo kRegistry[] = {
    // elementwise (ops_elementwise.cpp)
    primitive(detail::add_op),
    primitive(detail::add_scaled_op),
    primitive(detail::sub_op),
    primitive(detail::mul_op),
    primitive(detail::div_op),
    primitive(detail::neg_op),
    primitive(detail::exp_op),
    primitive(detail::log_op),
    primitive(detail::sqrt_op),
    primitive(detail::tanh_op),
    primitive(detail::sigmoid_op),
    primitive(detail::relu_op),
    primitive(detail::abs_op),
    primitive(detail::times_step_op),  // relu's derivative (internal)
    primitive(detail::times_sign_op),  // abs's derivative (internal)
    primitive(detail::pow_op),
    primitive(detail::scale_op),
    primitive(detail::shift_op),
    primitive(detail::cast_op),
    primitive(detail::copy_op),
    // reductions (ops_reduce.cpp)
    primitive(detail::sum_to_op),
    primitive(detail::expand_op),
    // layout (ops_layout.cpp)
    primitive(detail::reshape_op),
    primitive(detail::permute_op),
    primitive(detail::slice_op),
    primitive(detail::pad_op),
    primitive(detail::concat_op),
    primitive(detail::gather_rows_op),
    primitive(detail::scatter_rows_op),
    primitive(detail::take_op),
    primitive(detail::scatter_add_op),
    // linear algebra (ops_linalg.cpp)
    primitive(detail::matmul_op),
    primitive(detail::linear_op),
    primitive(detail::linear_relu_op),
    primitive(detail::eigh_op),  // ops_eigh.cpp
    // neural-network primitives (ops_nn.cpp)
    primitive(detail::log_softmax_op),
    primitive(detail::conv2d_op),
    primitive(detail::conv2d_relu_op),
    primitive(detail::conv2d_input_grad_op),
    primitive(detail::conv2d_weight_grad_op),
    primitive(detail::batch_norm_op),
    primitive(detail::max_pool2d_op),
    primitive(detail::max_unpool2d_op),
    primitive(detail::batch_norm_max_pool2d_op),
    // Cholesky and triangular solves (ops_cholesky.cpp)
    primitive(detail::cholesky_op),
    primitive(detail::solve_triangular_op),
    // compositions
    {"square", OpKind::composite, detail::square_samples},
    {"sum", OpKind::composite, detail::sum_samples},
    {"mean", OpKind::composite, detail::mean_samples},
    {"max", OpKind::composite, detail::max_samples},
    {"logsumexp", OpKind::composite, detail::logsumexp_samples},
    {"squeeze/unsqueeze/flatten", OpKind::composite, detail::squeeze_unsqueeze_samples},
    {"transpose", OpKind::composite, detail::transpose_samples},
    {"stack", OpKind::composite, detail::stack_samples},
    {"softmax", OpKind::composite, detail::softmax_samples},
    {"cross_entropy", OpKind::composite, detail::cross_entropy_samples},
    {"mse_loss", OpKind::composite, detail::mse_loss_samples},
    {"cholesky_solve", OpKind::composite, detail::cholesky_solve_samples},
    {"phi1", OpKind::composite, detail::phi1_samples},
    {"gradient_flow_operator", OpKind::composite, detail::gradient_flow_operator_samples},
    {"sgd_steps_operator", OpKind::composite, detail::sgd_steps_operator_samples},
};

}  // namespace

std::span<const OpInfo> op_registry() { return kRegistry; }

}  // namespace metatape
