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

Shape leading(const Shape& s) {
  Shape batch;
  for (int i = 0; i + 2 < s.rank(); ++i) batch.push_back(s[i]);
  return batch;
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
  const MatmulDims d = matmul_dims(*in[0], *in[1], attrs);
  Shape shape = d.batch;
  shape.push_back(d.m);
  shape.push_back(d.n);
  out[0] = {shape, in[0]->dtype()};
}

// One GEMM per batch entry; broadcast batch dimensions reuse a matrix
// (stride 0), so a shared operand is never copied.
void matmul_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  const Tensor &a = *in[0], &b = *in[1];
  Tensor& c = out[0];
  const MatmulDims d = matmul_dims(a, b, attrs);
  const int batch_rank = d.batch.rank();
  const Shape ba = leading(a.shape()), bb = leading(b.shape());
  std::int64_t c_strides[kMaxRank], a_strides[kMaxRank], b_strides[kMaxRank];
  kernels::cpu::contiguous_strides(batch_rank, d.batch.begin(), c_strides);
  kernels::cpu::broadcast_strides(ba.rank(), ba.begin(), batch_rank, d.batch.begin(), a_strides);
  kernels::cpu::broadcast_strides(bb.rank(), bb.begin(), batch_rank, d.batch.begin(), b_strides);
  const std::int64_t* strides[3] = {c_strides, a_strides, b_strides};
  const kernels::cpu::StridedLoop loop = kernels::cpu::make_loop(batch_rank, d.batch.begin(), 3, strides);
  const std::int64_t a_matrix = d.m * d.k, b_matrix = d.k * d.n, c_matrix = d.m * d.n;
  dispatch(c.device(), c.dtype(), [&]<class K, class T>() {
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* pc = c.data<T>();
    // Each innermost row of the batch loop has uniform strides: one batched
    // GEMM (cuBLAS strided-batched on the GPU).
    kernels::cpu::for_each_row(loop, [&](const std::int64_t* off, std::int64_t count, const std::int64_t* s) {
      K::template gemm_batched<T>(attrs.trans_a, attrs.trans_b, d.m, d.n, d.k, pa + off[1] * a_matrix, s[1] * a_matrix,
                                  pb + off[2] * b_matrix, s[2] * b_matrix, pc + off[0] * c_matrix, s[0] * c_matrix,
                                  count);
    });
  });
}

// C = op(A) op(B):  dA = g op(B)ᵀ  (or op(B) gᵀ if A is used transposed),
//                   dB = op(A)ᵀ g  (or gᵀ op(A) if B is used transposed),
// each summed over the batch dimensions its operand was broadcast along.
void matmul_backward(BackwardContext& c) {
  const Tensor& g = c.grad_output();
  const bool ta = c.attrs().trans_a, tb = c.attrs().trans_b;
  if (c.needs_grad(0)) {
    const Tensor& b = c.input(1);
    const Tensor da = ta ? matmul(b, g, tb, true) : matmul(g, b, false, !tb);
    c.set_grad(0, sum_to(da, c.input_shape(0)));
  }
  if (c.needs_grad(1)) {
    const Tensor& a = c.input(0);
    const Tensor db = tb ? matmul(g, a, true, ta) : matmul(a, g, !ta, false);
    c.set_grad(1, sum_to(db, c.input_shape(1)));
  }
}

}  // namespace

// clang-format off
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
    std::int64_t rows = 1;
    for (int i = 0; i + 1 < a.rank(); ++i) rows *= a.shape()[i];
    const Tensor a2 = reshape(a, Shape{rows, a.shape()[a.rank() - 1]});
    const Tensor* in[] = {&a2, &b};
    const Tensor c2 = detail::apply(detail::matmul_op, in, attrs);
    Shape shape = a.shape();
    shape[a.rank() - 1] = c2.shape()[1];
    return reshape(c2, shape);
  }
  const Tensor* in[] = {&a, &b};
  return detail::apply(detail::matmul_op, in, attrs);
}

Tensor matmul(const Tensor& a, const Tensor& b) { return matmul(a, b, false, false); }

}  // namespace metatape
