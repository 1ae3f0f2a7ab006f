// Matrix products. One primitive, matmul with transpose flags and
// broadcasting batch dimensions; its backward rule is matmul again with the
// flags flipped, so no transpose is ever materialised, at any order.
#include <climits>

#include "backend.hpp"
#include "kernels/cpu/strided.hpp"
#include "metatape/error.hpp"
#include "metatape/ops.hpp"
#include "op_defs.hpp"
#include "samples.hpp"

namespace metatape::detail {
namespace {

struct MatmulDims {
  std::int64_t m, n, k;
  Shape batch;  // broadcast of both operands' leading dimensions
};

// x [..., k] as the rows of all its leading dimensions, [r, k] (a view):
// how a batch sharing a 2-D operand becomes one product.
Tensor as_rows(const Tensor& x) {
  std::int64_t rows = 1;
  for (int i = 0; i + 1 < x.rank(); ++i) rows *= x.shape()[i];
  return reshape(x, Shape{rows, x.shape()[x.rank() - 1]});
}

// The product y [r, n] of as_rows(x), back in x's leading dimensions: [..., n].
Tensor in_leading_dims(const Tensor& y, const Tensor& x) {
  Shape shape = x.shape();
  shape[x.rank() - 1] = y.shape()[1];
  return reshape(y, shape);
}

// Whether a bias [..., n] holds one row only (every leading dimension 1).
bool one_bias_row(const Shape& bias) { return bias.numel() == bias[bias.rank() - 1]; }

Shape leading(const Shape& s) {
  Shape batch;
  for (int i = 0; i + 2 < s.rank(); ++i) batch.push_back(s[i]);
  return batch;
}

// The product's shape: batch ++ [m, n].
Shape product_shape(const MatmulDims& d) {
  Shape shape = d.batch;
  shape.push_back(d.m);
  shape.push_back(d.n);
  return shape;
}

MatmulDims matmul_dims(const Tensor& a, const Tensor& b, const Attrs& attrs) {
  const Shape &sa = a.shape(), &sb = b.shape();
  if (sa.rank() < 2 || sb.rank() < 2)
    throw ShapeError("matmul: operands must have rank >= 2, got " + sa.str() + " and " + sb.str() +
                     " (reshape vectors to rows or columns)");
  const std::int64_t a_rows = sa[sa.rank() - 2], a_cols = sa[sa.rank() - 1];
  const std::int64_t b_rows = sb[sb.rank() - 2], b_cols = sb[sb.rank() - 1];
  MatmulDims d;
  d.m = attrs.trans_a ? a_cols : a_rows;
  d.k = attrs.trans_a ? a_rows : a_cols;
  const std::int64_t kb = attrs.trans_b ? b_cols : b_rows;
  d.n = attrs.trans_b ? b_rows : b_cols;
  if (d.k != kb)
    throw ShapeError("matmul: " + sa.str() + (attrs.trans_a ? "^T" : "") + " @ " + sb.str() +
                     (attrs.trans_b ? "^T" : "") + ": inner dimensions " + std::to_string(d.k) + " and " +
                     std::to_string(kb) + " differ");
  for (std::int64_t v : {a_rows, a_cols, b_rows, b_cols})
    if (v > INT_MAX) throw ShapeError("matmul: dimension " + std::to_string(v) + " exceeds the BLAS limit of 2^31 - 1");
  d.batch = broadcast_shapes(leading(sa), leading(sb), "matmul");
  return d;
}

void matmul_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  require_floating("matmul", *in[0], 0);
  require_floating("matmul", *in[1], 1);
  require_same_dtype("matmul", *in[0], *in[1]);
  out[0] = {product_shape(matmul_dims(*in[0], *in[1], attrs)), in[0]->dtype()};
}

// The loop over the output's batch, in matrices: operand 0 the output
// (contiguous), 1 and 2 the operands a and b, whose broadcast batch
// dimensions reuse a matrix (stride 0), so a shared operand is never copied.
kernels::cpu::StridedLoop batch_loop(const Tensor& a, const Tensor& b, const MatmulDims& d) {
  const int batch_rank = d.batch.rank();
  const Shape ba = leading(a.shape()), bb = leading(b.shape());
  std::int64_t c_strides[kMaxRank], a_strides[kMaxRank], b_strides[kMaxRank];
  kernels::cpu::contiguous_strides(batch_rank, d.batch.begin(), c_strides);
  kernels::cpu::broadcast_strides(ba.rank(), ba.begin(), batch_rank, d.batch.begin(), a_strides);
  kernels::cpu::broadcast_strides(bb.rank(), bb.begin(), batch_rank, d.batch.begin(), b_strides);
  const std::int64_t* strides[3] = {c_strides, a_strides, b_strides};
  return kernels::cpu::make_loop(batch_rank, d.batch.begin(), 3, strides);
}

// c = op(a) op(b), or c += op(a) op(b) when accumulating: one GEMM per
// batch entry. Each innermost row of the batch loop has uniform strides:
// one batched GEMM (cuBLAS strided-batched on the GPU).
void run_products(const Tensor& a, const Tensor& b, const MatmulDims& d, bool trans_a, bool trans_b, Tensor& c,
                  bool accumulate) {
  const kernels::cpu::StridedLoop loop = batch_loop(a, b, d);
  const std::int64_t a_matrix = d.m * d.k, b_matrix = d.k * d.n, c_matrix = d.m * d.n;
  dispatch(c.device(), c.dtype(), [&]<class K, class T>() {
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* pc = c.data<T>();
    kernels::cpu::for_each_row(loop, [&](const std::int64_t* off, std::int64_t count, const std::int64_t* s) {
      (accumulate ? K::template gemm_batched_accumulate<T>
                  : K::template gemm_batched<T>)(trans_a, trans_b, d.m, d.n, d.k, pa + off[1] * a_matrix,
                                                 s[1] * a_matrix, pb + off[2] * b_matrix, s[2] * b_matrix,
                                                 pc + off[0] * c_matrix, s[0] * c_matrix, count);
    });
  });
}

void matmul_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  run_products(*in[0], *in[1], matmul_dims(*in[0], *in[1], attrs), attrs.trans_a, attrs.trans_b, out[0], false);
}

// Input i's gradient op(x) op(y), summed over the batch dimensions the input
// was broadcast along. Where the tape offers the adjoint the input has
// gathered so far and the product has its shape (nothing to sum away), the
// product is added straight into it (gemm_batched_accumulate, in one pass:
// the bits of the product and then the tape's add wherever the product is
// summed in one pass over k, as every small product is); otherwise a new
// tensor for the tape to add.
void set_product_grad(BackwardContext& c, int i, const Tensor& x, const Tensor& y, bool trans_x, bool trans_y) {
  if (Tensor* into = c.grad_accumulator(i)) {
    Attrs attrs;
    attrs.trans_a = trans_x;
    attrs.trans_b = trans_y;
    const MatmulDims d = matmul_dims(x, y, attrs);
    if (product_shape(d) == into->shape()) return run_products(x, y, d, trans_x, trans_y, *into, true);
  }
  c.set_grad(i, sum_to(matmul(x, y, trans_x, trans_y), c.input_shape(i)));
}

// C = op(A) op(B):  dA = g op(B)ᵀ  (or op(B) gᵀ if A is used transposed),
//                   dB = op(A)ᵀ g  (or gᵀ op(A) if B is used transposed),
// each summed over the batch dimensions its operand was broadcast along.
void matmul_backward(BackwardContext& c) {
  const Tensor& g = c.grad_output();
  const bool ta = c.attrs().trans_a, tb = c.attrs().trans_b;
  if (c.needs_grad(0)) {
    const Tensor& b = c.input(1);
    if (ta)
      set_product_grad(c, 0, b, g, tb, true);
    else
      set_product_grad(c, 0, g, b, false, !tb);
  }
  if (c.needs_grad(1)) {
    const Tensor& a = c.input(0);
    if (tb)
      set_product_grad(c, 1, g, a, true, ta);
    else
      set_product_grad(c, 1, a, g, !ta, false);
  }
}

// --- linear: x @ w + bias, and linear_relu: max(x @ w + bias, 0) ---
// A layer's product with its bias add (and ReLU) in the product's own pass
// over the output: on the CPU the small-product kernel adds the bias and
// takes the ReLU in the registers it summed in. x [..., m, k] @ w [..., k, n]
// as matmul (batch dimensions broadcast); bias [n] or [..., 1, n], one row
// for every matrix of the output or one for each, added to every row.

// The bias's rows: 0 (one row for all) or the output's batch (one each).
std::int64_t bias_rows(const Tensor& bias, const MatmulDims& d) {
  const Shape& s = bias.shape();
  const std::int64_t n = d.n;
  const Shape batch = leading(s);
  bool fits = s.rank() >= 1 && s[s.rank() - 1] == n && (s.rank() == 1 || s[s.rank() - 2] == 1);
  std::int64_t rows = batch.numel(), outputs = d.batch.numel();
  if (fits && batch.rank() > 0) {
    try {
      fits = broadcast_shapes(d.batch, batch, "linear") == d.batch;
    } catch (const ShapeError&) {
      fits = false;
    }
  }
  if (!fits || (rows != 1 && rows != outputs)) {
    throw ShapeError("linear: bias " + s.str() + " must be [" + std::to_string(n) + "] or [..., 1, " +
                     std::to_string(n) + "] with one row for the whole output " + product_shape(d).str() +
                     " or one for each of its matrices (add() broadcasts any other shape)");
  }
  return rows == 1 ? 0 : rows;
}

void linear_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  if (in.size() != 2 && in.size() != 3)
    throw ValueError("linear: expected x, w and an optional bias, got " + std::to_string(in.size()) + " inputs");
  for (std::size_t i = 0; i < in.size(); ++i) {
    require_floating("linear", *in[i], static_cast<int>(i));
    require_same_dtype("linear", *in[0], *in[i]);
  }
  const MatmulDims d = matmul_dims(*in[0], *in[1], attrs);
  if (in.size() == 3) (void)bias_rows(*in[2], d);
  out[0] = {product_shape(d), in[0]->dtype()};
}

void linear_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  const Tensor &x = *in[0], &w = *in[1];
  const Tensor* bias = in.size() == 3 ? in[2] : nullptr;
  Tensor& y = out[0];
  const MatmulDims d = matmul_dims(x, w, attrs);
  const std::int64_t bias_step = bias ? (bias_rows(*bias, d) == 0 ? 0 : d.n) : 0;  // per matrix of the output
  const kernels::cpu::StridedLoop loop = batch_loop(x, w, d);
  const std::int64_t x_matrix = d.m * d.k, w_matrix = d.k * d.n, y_matrix = d.m * d.n;
  dispatch(y.device(), y.dtype(), [&]<class K, class T>() {
    const T* px = x.data<T>();
    const T* pw = w.data<T>();
    const T* pb = bias ? bias->data<T>() : nullptr;
    T* py = y.data<T>();
    // off[0] counts the output's matrices, so it is also the bias row's.
    kernels::cpu::for_each_row(loop, [&](const std::int64_t* off, std::int64_t count, const std::int64_t* s) {
      K::template linear_batched<T>(d.m, d.n, d.k, px + off[1] * x_matrix, s[1] * x_matrix, pw + off[2] * w_matrix,
                                    s[2] * w_matrix, pb ? pb + off[0] * bias_step : nullptr, s[0] * bias_step,
                                    attrs.relu, py + off[0] * y_matrix, s[0] * y_matrix, count);
    });
  });
}

// y = x w + b:  dx = g wᵀ, dw = xᵀ g, db = g summed over its rows, each
// summed over the batch dimensions its operand was broadcast along. A 2-D
// w shared by a batch of x gets one product over all the rows, as matmul's
// folded batch does (the same sums in the same order).
void linear_gradients(BackwardContext& c, const Tensor& g) {
  // The bias first, then x and w: the order of add's and matmul's rules in
  // add(matmul(x, w), b), so that a graph recorded through them (create_graph)
  // accumulates its adjoints in the same order, to the same bits.
  if (c.num_inputs() == 3 && c.needs_grad(2)) {
    const Shape& bias = c.input_shape(2);
    Shape rows = c.grad_output().shape();  // g summed over its rows, and over the batch where the bias is shared
    rows[rows.rank() - 2] = 1;
    if (one_bias_row(bias))
      for (int i = 0; i + 2 < rows.rank(); ++i) rows[i] = 1;
    c.set_grad(2, reshape(sum_to(g, rows), bias));
  }
  if (c.needs_grad(0)) set_product_grad(c, 0, g, c.input(1), false, true);
  if (c.needs_grad(1)) {
    const Tensor& x = c.input(0);
    if (c.input_shape(1).rank() == 2 && x.rank() > 2)
      set_product_grad(c, 1, as_rows(x), as_rows(g), true, false);
    else
      set_product_grad(c, 1, x, g, true, false);
  }
}
void linear_backward(BackwardContext& c) { linear_gradients(c, c.grad_output()); }
// The ReLU's derivative read off the saved output, as conv2d_relu's.
void linear_relu_backward(BackwardContext& c) {
  linear_gradients(c, times_mask(kernels::UnaryOp::step, c.grad_output(), c.output()));
}

std::vector<OpSample> linear_samples(Generator& g, DType d) {
  return {
      make_sample("2-D with a bias [n]",
                  {sample_uniform({3, 4}, g, d), sample_uniform({4, 5}, g, d), sample_uniform({5}, g, d)},
                  [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }),
      make_sample("batched, weight and bias per matrix: [2, 3, 4] @ [2, 4, 5] + [2, 1, 5]",
                  {sample_uniform({2, 3, 4}, g, d), sample_uniform({2, 4, 5}, g, d), sample_uniform({2, 1, 5}, g, d)},
                  [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }),
      make_sample("shared weight, bias per matrix: [2, 3, 4] @ [4, 5] + [2, 1, 5]",
                  {sample_uniform({2, 3, 4}, g, d), sample_uniform({4, 5}, g, d), sample_uniform({2, 1, 5}, g, d)},
                  [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }),
      make_sample("broadcast batch, one bias: [3, 1, 2, 4] @ [2, 4, 3] + [1, 3]",
                  {sample_uniform({3, 1, 2, 4}, g, d), sample_uniform({2, 4, 3}, g, d), sample_uniform({1, 3}, g, d)},
                  [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }),
      make_sample("one column: [2, 3, 4] @ [2, 4, 1] + [2, 1, 1]",
                  {sample_uniform({2, 3, 4}, g, d), sample_uniform({2, 4, 1}, g, d), sample_uniform({2, 1, 1}, g, d)},
                  [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }),
      make_sample("no bias: [2, 3, 4] @ [2, 4, 5]", {sample_uniform({2, 3, 4}, g, d), sample_uniform({2, 4, 5}, g, d)},
                  [](const std::vector<Tensor>& in) { return linear(in[0], in[1]); })};
}

// The pre-activations are kept at least 0.1 away from 0, where the ReLU's
// kink would break the finite differences: x in [0.5, 1.5], each output
// column's weights all of one sign, |w| in [0.5, 1.5] (k = 4 entries: |x w|
// >= 1), and |b| <= 0.2. So one column is kept whole and the other zeroed.
std::vector<OpSample> linear_relu_samples(Generator& g, DType d) {
  // w [.., k, 2 n] from two same-shaped magnitudes: +first, −second.
  const auto signed_columns = [](const Tensor& plus, const Tensor& minus) {
    return concat({plus, neg(minus)}, plus.rank() - 1);
  };
  const auto magnitudes = [&](const Shape& shape) { return sample_uniform(shape, g, d, 0.5, 1.5); };
  return {
      make_sample("batched, weight and bias per matrix",
                  {magnitudes({2, 3, 4}), magnitudes({2, 4, 2}), magnitudes({2, 4, 2}),
                   sample_uniform({2, 1, 4}, g, d, -0.2, 0.2)},
                  [signed_columns](const std::vector<Tensor>& in) {
                    return linear(in[0], signed_columns(in[1], in[2]), in[3], {.relu = true});
                  }),
      make_sample("2-D with a bias [n]",
                  {magnitudes({3, 4}), magnitudes({4, 3}), magnitudes({4, 3}), sample_uniform({6}, g, d, -0.2, 0.2)},
                  [signed_columns](const std::vector<Tensor>& in) {
                    return linear(in[0], signed_columns(in[1], in[2]), in[3], {.relu = true});
                  }),
      make_sample("no bias", {magnitudes({2, 3, 4}), magnitudes({2, 4, 2}), magnitudes({2, 4, 2})},
                  [signed_columns](const std::vector<Tensor>& in) {
                    return linear(in[0], signed_columns(in[1], in[2]), {.relu = true});
                  })};
}

}  // namespace

// clang-format off
const OpDef linear_op = {.name = "linear", .arity = kVariadic, .num_outputs = 1,
    .saves = save_input(0) | save_input(1), .nondiff = 0, .is_view = false,
    .shape_rule = linear_rule, .forward = linear_forward, .backward = linear_backward, .samples = linear_samples};
const OpDef linear_relu_op = {.name = "linear_relu", .arity = kVariadic, .num_outputs = 1,
    .saves = save_input(0) | save_input(1) | kSaveOutputs, .nondiff = 0, .is_view = false,
    .shape_rule = linear_rule, .forward = linear_forward, .backward = linear_relu_backward,
    .samples = linear_relu_samples};
const OpDef matmul_op = {.name = "matmul", .arity = 2, .num_outputs = 1, .saves = save_input(0) | save_input(1),
    .nondiff = 0, .is_view = false,
    .shape_rule = matmul_rule, .forward = matmul_forward, .backward = matmul_backward,
    .samples = [](Generator& g, DType d) {
      std::vector<OpSample> samples;
      for (bool ta : {false, true})
        for (bool tb : {false, true}) {
          const Shape sa = ta ? Shape{4, 3} : Shape{3, 4}, sb = tb ? Shape{5, 4} : Shape{4, 5};
          samples.push_back(make_sample(std::string("2-D") + (ta ? " aᵀ" : "") + (tb ? " bᵀ" : ""),
              {sample_uniform(sa, g, d), sample_uniform(sb, g, d)},
              [ta, tb](const std::vector<Tensor>& in) { return matmul(in[0], in[1], ta, tb); }));
        }
      samples.push_back(make_sample("batched [2, 3, 4] @ [2, 4, 2]",
          {sample_uniform({2, 3, 4}, g, d), sample_uniform({2, 4, 2}, g, d)},
          [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }));
      samples.push_back(make_sample("shared 2-D b: [2, 3, 4] @ [4, 2]",
          {sample_uniform({2, 3, 4}, g, d), sample_uniform({4, 2}, g, d)},
          [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }));
      samples.push_back(make_sample("broadcast batch of b: [3, 2, 4] @ [1, 4, 2]",
          {sample_uniform({3, 2, 4}, g, d), sample_uniform({1, 4, 2}, g, d)},
          [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }));
      samples.push_back(make_sample("broadcast batch: [3, 4] @ [2, 1, 4, 2], bᵀ",
          {sample_uniform({3, 4}, g, d), sample_uniform({2, 1, 2, 4}, g, d)},
          [](const std::vector<Tensor>& in) { return matmul(in[0], in[1], false, true); }));
      samples.push_back(make_sample("batched with aᵀ: [2, 4, 3]ᵀ @ [2, 4, 2]",
          {sample_uniform({2, 4, 3}, g, d), sample_uniform({2, 4, 2}, g, d)},
          [](const std::vector<Tensor>& in) { return matmul(in[0], in[1], true, false); }));
      return samples;
    }};
// clang-format on

}  // namespace metatape::detail

namespace metatape {

Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b) {
  if (!a.defined() || !b.defined()) throw ValueError("matmul: an operand is an undefined tensor");
  detail::Attrs attrs;
  attrs.trans_a = transpose_a;
  attrs.trans_b = transpose_b;
  // A matrix b shared by a batch of a: fold the batch into the rows of a and
  // run one GEMM (its backward then needs no reduction over the batch).
  if (b.rank() == 2 && a.rank() > 2 && !transpose_a) {
    const Tensor a2 = detail::as_rows(a);
    const Tensor* in[] = {&a2, &b};
    return detail::in_leading_dims(detail::apply(detail::matmul_op, in, attrs), a);
  }
  const Tensor* in[] = {&a, &b};
  return detail::apply(detail::matmul_op, in, attrs);
}

Tensor matmul(const Tensor& a, const Tensor& b) { return matmul(a, b, false, false); }

namespace {

Tensor apply_linear(std::span<const Tensor* const> in, const LinearOptions& options) {
  for (const Tensor* t : in)
    if (!t->defined()) throw ValueError("linear: an input is an undefined tensor");
  const Tensor &x = *in[0], &w = *in[1];
  detail::Attrs attrs;
  attrs.relu = options.relu;
  const detail::OpDef& op = options.relu ? detail::linear_relu_op : detail::linear_op;
  // A weight shared by a batch of x, and one bias row for all: fold the
  // batch into the rows of x, as matmul does, for one product.
  const bool shared_bias = in.size() == 2 || (in[2]->rank() <= 2 && detail::one_bias_row(in[2]->shape()));
  if (w.rank() == 2 && x.rank() > 2 && shared_bias) {
    const Tensor x2 = detail::as_rows(x);
    const Tensor* in2[] = {&x2, &w, in.size() == 3 ? in[2] : nullptr};
    return detail::in_leading_dims(detail::apply(op, std::span<const Tensor* const>(in2, in.size()), attrs), x);
  }
  return detail::apply(op, in, attrs);
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const LinearOptions& options) {
  const Tensor* in[] = {&x, &w};
  return apply_linear(in, options);
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias, const LinearOptions& options) {
  const Tensor* in[] = {&x, &w, &bias};
  return apply_linear(in, options);
}

}  // namespace metatape
