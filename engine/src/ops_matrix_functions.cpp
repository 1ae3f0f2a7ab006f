// Matrix functions of square matrices built from matmul and elementwise ops
// only (no inverse, no eigendecomposition), so that derivatives of every
// order are exact compositions and stay finite where K is singular: the
// closed forms of the inner loop in docs/methods.md §2.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "metatape/error.hpp"
#include "metatape/ops.hpp"
#include "op_defs.hpp"
#include "samples.hpp"

namespace metatape::detail {
namespace {

// Taylor terms of φ₁ at ‖W‖₁ ≤ 1/2: the remainder Σ_{k≥15} ‖W‖^k/(k+1)! is
// below 2·0.5^15/16! ≈ 3e-18, under double rounding of φ₁(W) (whose norm is
// at least 1 − Σ_{k≥1} 0.5^k/(k+1)! > 0.7).
constexpr int kPhi1Terms = 15;
constexpr double kPhi1Radius = 0.5;

// Defined, floating and square.
void require_square_floating(const char* op, const char* name, const Tensor& x) {
  if (!x.defined()) throw ValueError(std::string(op) + ": " + name + " is an undefined tensor");
  if (!is_floating(x.dtype()))
    throw DTypeError(std::string(op) + ": " + name + " must be f32 or f64, got " + dtype_name(x.dtype()) +
                     " of shape " + x.shape().str());
  require_square(op, name, x);
}

Tensor identity_like(const Tensor& x) {
  const std::int64_t n = x.shape()[x.rank() - 1];
  std::vector<double> v(static_cast<std::size_t>(n * n), 0.0);
  for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i * n + i)] = 1.0;
  return from_vector(v, Shape{n, n}, x.dtype()).to(x.device());
}

// max over the batch of the 1-norm (largest column sum of |z_ij|), read on the
// host from the values. It only chooses the number of squarings, a
// piecewise-constant integer, so it is not (and need not be) differentiated.
double max_one_norm(const char* op, const Tensor& z) {
  const std::vector<double> v = z.detach().to_vector();
  const std::int64_t n = z.shape()[z.rank() - 1];
  const std::int64_t count = n == 0 ? 0 : z.numel() / (n * n);
  double norm = 0;
  for (std::int64_t b = 0; b < count; ++b)
    for (std::int64_t j = 0; j < n; ++j) {
      double column = 0;
      for (std::int64_t i = 0; i < n; ++i) column += std::abs(v[static_cast<std::size_t>(b * n * n + i * n + j)]);
      if (!std::isfinite(column))
        throw ValueError(std::string(op) + ": the matrix has a NaN or infinite entry (batch index " +
                         std::to_string(b) + ", column " + std::to_string(j) + ")");
      norm = std::max(norm, column);
    }
  return norm;
}

// Symmetric positive semi-definite M Mᵀ / n with M uniform in [-1, 1]
// (eigenvalues in [0, n]): the kernels these operators are applied to.
Tensor sample_psd(const Shape& batch, std::int64_t n, Generator& gen, DType dtype) {
  Shape shape = batch;
  shape.push_back(n);
  shape.push_back(n);
  const Tensor m = sample_uniform(shape, gen, DType::f64);
  return scale(matmul(m, m, false, true), 1.0 / static_cast<double>(n)).to(dtype);
}

}  // namespace

std::vector<OpSample> phi1_samples(Generator& g, DType d) {
  const auto call = [](const std::vector<Tensor>& in) { return metatape::phi1(in[0]); };
  return {make_sample("[3, 3], no squaring", {sample_uniform({3, 3}, g, d, -0.15, 0.15)}, call),
          make_sample("[3, 3], squarings", {sample_uniform({3, 3}, g, d, -1.0, 1.0)}, call),
          make_sample("batched [2, 2, 2]", {sample_uniform({2, 2, 2}, g, d, -1.5, 1.5)}, call)};
}

std::vector<OpSample> gradient_flow_operator_samples(Generator& g, DType d) {
  return {make_sample("[3, 3], t = 0.7", {sample_psd({}, 3, g, d)},
                      [](const std::vector<Tensor>& in) { return metatape::gradient_flow_operator(in[0], 0.7); }),
          make_sample("batched [2, 2, 2], t = 3", {sample_psd({2}, 2, g, d)},
                      [](const std::vector<Tensor>& in) { return metatape::gradient_flow_operator(in[0], 3.0); })};
}

std::vector<OpSample> sgd_steps_operator_samples(Generator& g, DType d) {
  return {make_sample("[3, 3], alpha 0.3, 4 steps", {sample_psd({}, 3, g, d)},
                      [](const std::vector<Tensor>& in) { return metatape::sgd_steps_operator(in[0], 0.3, 4); }),
          make_sample("batched [2, 2, 2], alpha 0.2, 3 steps", {sample_psd({2}, 2, g, d)},
                      [](const std::vector<Tensor>& in) { return metatape::sgd_steps_operator(in[0], 0.2, 3); })};
}

}  // namespace metatape::detail

namespace metatape {

Tensor phi1(const Tensor& z) {
  detail::require_square_floating("phi1", "Z", z);
  const double norm = detail::max_one_norm("phi1", z);
  int squarings = 0;
  while (std::ldexp(norm, -squarings) > detail::kPhi1Radius) ++squarings;
  const Tensor eye = detail::identity_like(z);
  const Tensor w = scale(z, std::ldexp(1.0, -squarings));
  // Horner: φ₁(W) ≈ Σ_{k<m} W^k/(k+1)! = I/1! + W(I/2! + W(... + W I/m!)).
  double inverse_factorial = 1;
  std::vector<double> coefficients(detail::kPhi1Terms);
  for (int k = 0; k < detail::kPhi1Terms; ++k) coefficients[k] = inverse_factorial /= (k + 1);
  Tensor p = expand(scale(eye, coefficients.back()), z.shape());
  for (int k = detail::kPhi1Terms - 2; k >= 0; --k) p = add(scale(eye, coefficients[k]), matmul(w, p));
  // φ₁(2W) = (e^{2W} − I)(2W)⁻¹ = φ₁(W)(e^W + I)/2, with e^W = I + W φ₁(W):
  // every factor is a polynomial in Z, so they commute.
  Tensor e = add(eye, matmul(w, p));
  for (int i = 0; i < squarings; ++i) {
    p = scale(matmul(p, add(e, eye)), 0.5);
    if (i + 1 < squarings) e = matmul(e, e);
  }
  return p;
}

Tensor gradient_flow_operator(const Tensor& k, double t) {
  detail::require_square_floating("gradient_flow_operator", "K", k);
  if (!std::isfinite(t) || t < 0)
    throw ValueError("gradient_flow_operator: the time t must be finite and >= 0, got " + std::to_string(t));
  return scale(phi1(scale(k, -t)), t);
}

Tensor sgd_steps_operator(const Tensor& k, double alpha, std::int64_t steps) {
  detail::require_square_floating("sgd_steps_operator", "K", k);
  if (!std::isfinite(alpha))
    throw ValueError("sgd_steps_operator: the step size alpha must be finite, got " + std::to_string(alpha));
  if (steps < 0) throw ValueError("sgd_steps_operator: steps must be >= 0, got " + std::to_string(steps));
  if (steps == 0) return zeros(k.shape(), k.dtype(), k.device());
  const Tensor eye = detail::identity_like(k);
  const Tensor a = sub(eye, scale(k, alpha));
  // α Σ_{j<τ} A^j = α(I + A(I + A(... + A I))).
  Tensor s = expand(scale(eye, alpha), k.shape());
  for (std::int64_t j = 1; j < steps; ++j) s = add(scale(eye, alpha), matmul(a, s));
  return s;
}

}  // namespace metatape
