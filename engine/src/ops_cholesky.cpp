// Cholesky factorisation and triangular solves. Two primitives: cholesky
// and a lower-triangular solve with an optional transpose; upper solves and
// cholesky_solve are compositions of the latter. Both backward rules are
// written with these same ops, matmul and constant masks, so they are
// differentiable again to any order.
#include <algorithm>
#include <climits>
#include <string>
#include <vector>

#include "backend.hpp"
#include "metatape/error.hpp"
#include "metatape/ops.hpp"
#include "op_defs.hpp"
#include "samples.hpp"

namespace metatape::detail {
namespace {

std::int64_t rows(const Tensor& t) { return t.shape()[t.rank() - 2]; }
std::int64_t cols(const Tensor& t) { return t.shape()[t.rank() - 1]; }
std::int64_t matrices(const Tensor& t) { return t.numel() / std::max<std::int64_t>(rows(t) * cols(t), 1); }

Shape batch_of(const Shape& s) {
  Shape batch;
  for (int i = 0; i + 2 < s.rank(); ++i) batch.push_back(s[i]);
  return batch;
}

// L [..., n, n] and B [..., n, k] with the same batch dimensions.
void require_solve_operands(const char* op, const Tensor& l, const Tensor& b) {
  const Tensor* in[] = {&l, &b};
  require_same_device(op, in);
  require_floating(op, l, 0);
  require_floating(op, b, 1);
  require_same_dtype(op, l, b);
  require_square(op, "the triangular factor", l, /*lapack=*/true);
  if (b.rank() != l.rank() || rows(b) != rows(l) || batch_of(b.shape()) != batch_of(l.shape()))
    throw ShapeError(std::string(op) + ": the right-hand side must be [..., n, k] with the factor's batch dimensions " +
                     "and n; got factor " + l.shape().str() + " and right-hand side " + b.shape().str());
  if (cols(b) > INT_MAX)
    throw ShapeError(std::string(op) + ": k = " + std::to_string(cols(b)) + " exceeds the BLAS limit of 2^31 - 1");
}

// The constant n x n mask of the lower triangle with `diagonal` on the
// diagonal (0.5: the Φ of the Cholesky backward; 1: tril), on `like`'s
// dtype and device, broadcasting over any batch.
Tensor lower_mask(std::int64_t n, double diagonal, const Tensor& like) {
  std::vector<double> values(static_cast<std::size_t>(n * n), 0.0);
  for (std::int64_t r = 0; r < n; ++r) {
    for (std::int64_t c = 0; c < r; ++c) values[static_cast<std::size_t>(r * n + c)] = 1.0;
    values[static_cast<std::size_t>(r * n + r)] = diagonal;
  }
  return from_vector(values, Shape{n, n}, like.dtype()).to(like.device());
}

// --- solve_triangular (lower) ---

void solve_lower_rule(Inputs in, const Attrs&, std::span<OutputSpec> out) {
  require_solve_operands("solve_triangular", *in[0], *in[1]);
  out[0] = {in[1]->shape(), in[1]->dtype()};
}

void solve_lower_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  const Tensor &l = *in[0], &b = *in[1];
  Tensor& x = out[0];
  dispatch(x.device(), x.dtype(), [&]<class K, class T>() {
    K::template copy<T>(b.data<T>(), x.data<T>(), b.numel());
    K::template trsm_lower_batched<T>(attrs.trans_a, rows(l), cols(b), l.data<T>(), x.data<T>(), matrices(l));
  });
}

// X = op(L)⁻¹ B for lower L: the primitive that every solve here is made of.
Tensor solve_lower(const Tensor& l, const Tensor& b, bool transpose) {
  Attrs attrs;
  attrs.trans_a = transpose;
  const Tensor* in[] = {&l, &b};
  return apply(solve_triangular_op, in, attrs);
}

// X = op(L)⁻¹ B:  B̄ = op(L)⁻ᵀ X̄;  op(L)̄ = −B̄ Xᵀ, so L̄ = −tril(B̄ Xᵀ), or
// −tril(X B̄ᵀ) when op(L) = Lᵀ (only the lower triangle of L is read).
void solve_lower_backward(BackwardContext& c) {
  const Tensor &l = c.input(0), &x = c.output(), &g = c.grad_output();
  const bool transposed = c.attrs().trans_a;
  const Tensor gb = solve_lower(l, g, !transposed);
  if (c.needs_grad(0)) {
    const Tensor outer = transposed ? matmul(x, gb, false, true) : matmul(gb, x, false, true);
    c.set_grad(0, neg(mul(outer, lower_mask(rows(l), 1.0, l))));
  }
  if (c.needs_grad(1)) c.set_grad(1, gb);
}

// --- cholesky ---

void cholesky_rule(Inputs in, const Attrs&, std::span<OutputSpec> out) {
  require_floating("cholesky", *in[0], 0);
  require_square("cholesky", "the input", *in[0], /*lapack=*/true);
  out[0] = {in[0]->shape(), in[0]->dtype()};
}

[[noreturn]] void throw_not_positive_definite(const Tensor& a, std::int64_t index, std::int64_t info) {
  const Shape batch = batch_of(a.shape());
  const std::string which = batch.rank() == 0
                                ? "the matrix"
                                : "matrix " + std::to_string(index) + " (flat index) of the batch " + batch.str();
  const std::string why = info > 0 ? "its leading minor of order " + std::to_string(info) +
                                         " is not positive (LAPACK potrf info = " + std::to_string(info) + ")"
                                   : "it holds NaN (LAPACKE info = " + std::to_string(info) + ")";
  const std::string remedy = info > 0
                                 ? "a positive semi-definite or ill-conditioned matrix needs a ridge: factor A + λI "
                                   "with λ > 0 (for example λ = 1e-6 · trace(A) / n)"
                                 : "a ridge does not help: find where the NaN comes from";
  throw ValueError("cholesky: " + which + " of input " + a.shape().str() + " is not positive definite: " + why + "; " +
                   remedy);
}

void cholesky_forward(Inputs in, const Attrs&, std::span<Tensor> out) {
  const Tensor& a = *in[0];
  Tensor& l = out[0];
  // The positive-definiteness check reads a status back from the device.
  if (!host_reads_allowed(a.device()))
    throw DeviceError("cholesky: cannot run while a CUDA graph is captured (it reads LAPACK's status on the host)");
  std::int64_t info = 0, failed = -1;
  dispatch(l.device(), l.dtype(), [&]<class K, class T>() {
    K::template copy<T>(a.data<T>(), l.data<T>(), a.numel());
    failed = K::template cholesky_batched<T>(l.data<T>(), rows(a), matrices(a), &info);
  });
  if (failed >= 0) throw_not_positive_definite(a, failed, info);
}

// A = L Lᵀ (Murray 2016, as PyTorch's cholesky_backward): with
// Φ(X) = tril(X) with the diagonal halved, Ā = L⁻ᵀ Φ(Lᵀ L̄) L⁻¹, then
// symmetrised: the derivative along symmetric perturbations of A, the only
// ones that keep it a valid input. Two triangular solves, no inverse.
void cholesky_backward(BackwardContext& c) {
  const Tensor &l = c.output(), &g = c.grad_output();
  const Tensor phi = mul(matmul(l, g, true, false), lower_mask(rows(l), 0.5, l));
  const Tensor left = solve_lower(l, phi, true);                      // L⁻ᵀ Φ
  const Tensor s = transpose(solve_lower(l, transpose(left), true));  // (L⁻ᵀ (L⁻ᵀ Φ)ᵀ)ᵀ = L⁻ᵀ Φ L⁻¹
  c.set_grad(0, scale(add(s, transpose(s)), 0.5));
}

// --- samples ---

// Well-conditioned symmetric positive definite n x n matrices: M Mᵀ / n + I
// with M uniform in [-1, 1] (eigenvalues in [1, 1 + n]).
Tensor sample_spd(const Shape& batch, std::int64_t n, Generator& gen, DType dtype) {
  Shape shape = batch;
  shape.push_back(n);
  shape.push_back(n);
  const Tensor m = sample_uniform(shape, gen, DType::f64);
  const Tensor identity = lower_mask(n, 1.0, m) - lower_mask(n, 0.0, m);
  return (matmul(m, m, false, true) / static_cast<double>(n) + identity).to(dtype);
}

// A matrix whose lower triangle is well-conditioned and whose strict upper
// triangle is random too (the solves must not read it): diagonal in
// [1.5, 2.5], off-diagonal in [-0.5, 0.5].
Tensor sample_triangular(const Shape& batch, std::int64_t n, Generator& gen, DType dtype) {
  Shape shape = batch;
  shape.push_back(n);
  shape.push_back(n);
  std::vector<double> values(static_cast<std::size_t>(shape.numel()));
  for (std::size_t i = 0; i < values.size(); ++i) {
    const auto r = static_cast<std::int64_t>(i) / n % n, c = static_cast<std::int64_t>(i) % n;
    values[i] = r == c ? 1.5 + gen.uniform01() : gen.uniform01() - 0.5;
  }
  return from_vector(values, shape, dtype);
}

// cholesky reads one triangle: its samples factor ½(A + Aᵀ), so that the
// finite differences of gradcheck, which perturb one entry at a time,
// perturb a symmetric matrix.
Tensor cholesky_of_symmetric(const Tensor& a) { return metatape::cholesky(scale(add(a, transpose(a)), 0.5)); }

std::vector<OpSample> cholesky_op_samples(Generator& g, DType d) {
  std::vector<OpSample> samples;
  const auto call = [](const std::vector<Tensor>& in) { return cholesky_of_symmetric(in[0]); };
  samples.push_back(make_sample("[1, 1]", {sample_spd({}, 1, g, d)}, call));
  samples.push_back(make_sample("[4, 4]", {sample_spd({}, 4, g, d)}, call));
  samples.push_back(make_sample("batched [2, 3, 3]", {sample_spd({2}, 3, g, d)}, call));
  samples.push_back(make_sample("batched [2, 1, 2, 2]", {sample_spd({2, 1}, 2, g, d)}, call));
  return samples;
}

std::vector<OpSample> solve_lower_op_samples(Generator& g, DType d) {
  std::vector<OpSample> samples;
  for (bool lower : {true, false})
    for (bool trans : {false, true})
      samples.push_back(
          make_sample(std::string(lower ? "lower" : "upper") + (trans ? ", transposed" : "") + " [3, 3] \\ [3, 2]",
                      {sample_triangular({}, 3, g, d), sample_uniform({3, 2}, g, d)},
                      [lower, trans](const std::vector<Tensor>& in) {
                        return metatape::solve_triangular(in[0], in[1], lower, trans);
                      }));
  samples.push_back(
      make_sample("batched [2, 3, 3] \\ [2, 3, 4]", {sample_triangular({2}, 3, g, d), sample_uniform({2, 3, 4}, g, d)},
                  [](const std::vector<Tensor>& in) { return metatape::solve_triangular(in[0], in[1]); }));
  samples.push_back(make_sample(
      "batched, transposed [2, 2, 2] \\ [2, 2, 1]", {sample_triangular({2}, 2, g, d), sample_uniform({2, 2, 1}, g, d)},
      [](const std::vector<Tensor>& in) { return metatape::solve_triangular(in[0], in[1], true, true); }));
  return samples;
}

}  // namespace

// clang-format off
const OpDef solve_triangular_op = {.name = "solve_triangular", .arity = 2, .num_outputs = 1,
    .saves = save_input(0) | kSaveOutputs, .nondiff = 0, .is_view = false,
    .shape_rule = solve_lower_rule, .forward = solve_lower_forward, .backward = solve_lower_backward,
    .samples = solve_lower_op_samples};

const OpDef cholesky_op = {.name = "cholesky", .arity = 1, .num_outputs = 1, .saves = kSaveOutputs,
    .nondiff = 0, .is_view = false,
    .shape_rule = cholesky_rule, .forward = cholesky_forward, .backward = cholesky_backward,
    .samples = cholesky_op_samples};
// clang-format on

std::vector<OpSample> cholesky_solve_samples(Generator& g, DType d) {
  // The factor comes from cholesky, so the samples cover the usual use,
  // cholesky_solve(cholesky(A), B), differentiated with respect to A and B.
  const auto call = [](const std::vector<Tensor>& in) {
    return metatape::cholesky_solve(cholesky_of_symmetric(in[0]), in[1]);
  };
  return {
      make_sample("[3, 3] \\ [3, 2]", {sample_spd({}, 3, g, d), sample_uniform({3, 2}, g, d)}, call),
      make_sample("batched [2, 2, 2] \\ [2, 2, 3]", {sample_spd({2}, 2, g, d), sample_uniform({2, 2, 3}, g, d)}, call)};
}

}  // namespace metatape::detail

namespace metatape {

Tensor cholesky(const Tensor& a) {
  if (!a.defined()) throw ValueError("cholesky: the input is an undefined tensor");
  const Tensor* in[] = {&a};
  return detail::apply(detail::cholesky_op, in);
}

Tensor solve_triangular(const Tensor& a, const Tensor& b, bool lower, bool transpose_a) {
  if (!a.defined() || !b.defined()) throw ValueError("solve_triangular: an operand is an undefined tensor");
  detail::require_solve_operands("solve_triangular", a, b);
  if (lower) return detail::solve_lower(a, b, transpose_a);
  // U X = B is (Uᵀ)ᵀ X = B with Uᵀ lower; Uᵀ X = B is (Uᵀ) X = B.
  return detail::solve_lower(transpose(a), b, !transpose_a);
}

Tensor cholesky_solve(const Tensor& l, const Tensor& b) {
  if (!l.defined() || !b.defined()) throw ValueError("cholesky_solve: an operand is an undefined tensor");
  detail::require_solve_operands("cholesky_solve", l, b);
  return detail::solve_lower(l, detail::solve_lower(l, b, false), true);
}

}  // namespace metatape
