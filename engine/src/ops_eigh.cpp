// Symmetric eigendecomposition: one primitive with two outputs, the
// eigenvalues and the eigenvectors of the symmetric part of each matrix of a
// batch. The backward rule is the standard one (Giles, "An extended
// collection of matrix derivative results", 2008) written with matmul and
// elementwise ops on the recorded outputs, so that it is differentiable
// again: second and higher derivatives flow through w and V themselves.
#include <cmath>
#include <limits>
#include <string>

#include "backend.hpp"
#include "cpu_capture.hpp"
#include "metatape/error.hpp"
#include "metatape/ops.hpp"
#include "op_defs.hpp"
#include "samples.hpp"

namespace metatape::detail {
namespace {

// Gaps below this many units of n·ε·max|w| count as a repeated eigenvalue:
// the backward of a symmetric matrix with an exactly repeated eigenvalue
// computes ones that differ by a few ε·‖A‖, and 1/(w_j − w_i) of those is
// noise of order 1/ε, not a derivative.
constexpr double kGapUnits = 64.0;

std::int64_t matrix_count(const Shape& s) {
  std::int64_t count = 1;
  for (int i = 0; i + 2 < s.rank(); ++i) count *= s[i];
  return count;
}

// "[1, 0]": the batch index of flat matrix `flat` in a batch of shape `s`
// (the leading axes of the input); "" for a single matrix.
std::string batch_index(const Shape& s, std::int64_t flat) {
  if (s.rank() <= 2) return "";
  std::string index;
  for (int i = s.rank() - 3; i >= 0; --i) {
    index = std::to_string(flat % s[i]) + (index.empty() ? "" : ", ") + index;
    flat /= s[i];
  }
  return " at batch index [" + index + "]";
}

void eigh_rule(Inputs in, const Attrs&, std::span<OutputSpec> out) {
  const Tensor& a = *in[0];
  require_floating("eigh", a, 0);
  require_square("eigh", "the input", a, /*lapack=*/true);
  const Shape& s = a.shape();
  Shape values(s.dims().first(static_cast<std::size_t>(s.rank() - 1)));
  out[0] = {values, a.dtype()};
  out[1] = {s, a.dtype()};
}

// The solvers fail to converge or return garbage on NaN or inf: refuse
// them first, naming the matrix and the entry.
template <class T>
void require_finite(const Tensor& a) {
  const Tensor host = a.to(Device::cpu);
  const T* p = host.data<T>();
  const std::int64_t n = a.dim(-1), size = a.numel();
  for (std::int64_t i = 0; i < size; ++i)
    if (!std::isfinite(p[i])) {
      const std::int64_t in_matrix = i % (n * n);
      throw ValueError("eigh: the matrix" + batch_index(a.shape(), i / (n * n)) + " has a non-finite entry (" +
                       std::to_string(static_cast<double>(p[i])) + ") at row " + std::to_string(in_matrix / n) +
                       ", column " + std::to_string(in_matrix % n));
    }
}

void require_converged(const Tensor& info, const Shape& shape, Device device) {
  const Tensor host = info.to(Device::cpu);
  const std::int64_t* status = host.data<std::int64_t>();
  for (std::int64_t b = 0; b < info.numel(); ++b) {
    if (status[b] == 0) continue;
    const std::string driver = device == Device::cpu ? "LAPACK ?syevd" : "cuSOLVER ?syevd";
    if (status[b] > 0)
      throw ValueError("eigh: " + driver + " did not converge on the matrix" + batch_index(shape, b) +
                       " (info = " + std::to_string(status[b]) + ")");
    throw Error("internal error: eigh: " + driver + " rejected argument " + std::to_string(-status[b]) +
                " for the matrix" + batch_index(shape, b));
  }
}

// Non-finite input and non-convergence are checked on the host: free for CPU
// tensors, a copy for GPU ones, skipped while a CUDA graph is captured.
void eigh_forward(Inputs in, const Attrs&, std::span<Tensor> out) {
  const Tensor& a = *in[0];
  const std::int64_t n = a.dim(-1), count = matrix_count(a.shape());
  if (n == 0 || count == 0) return;  // nothing to decompose, nothing for a solver to refuse
  const bool check = host_reads_allowed(a.device());
  // A CPU replay reruns the kernels, not these checks: a non-finite input or
  // a failed decomposition in a replay would go unreported.
  if (check) refuse_in_cpu_capture("checking eigh's input and convergence on the host");
  if (check) with_float_type(a.dtype(), [&]<class T>(T) { require_finite<T>(a); });
  Tensor info = empty(Shape{count}, DType::i64, a.device());
  dispatch(a.device(), a.dtype(), [&]<class K, class T>() {
    const std::int64_t scratch_size = K::eigh_scratch_size(n, count, a.dtype() == DType::f64);
    Tensor scratch = empty(Shape{scratch_size}, a.dtype(), a.device());
    K::template eigh_batched<T>(a.data<T>(), n, count, out[0].data<T>(), out[1].data<T>(), scratch.data<T>(),
                                info.data<std::int64_t>());
  });
  if (check) require_converged(info, a.shape(), a.device());
}

// F_ij = 1/(w_j − w_i) where the gap is resolved, 0 where it is not (the
// diagonal, and repeated eigenvalues). The mask is a constant; F is
// differentiable in w through the gaps it keeps.
Tensor inverse_gaps(const Tensor& w) {
  const Tensor gaps = unsqueeze(w, -2) - unsqueeze(w, -1);
  Tensor mask = empty(gaps.shape(), w.dtype(), w.device());
  const std::int64_t n = w.dim(-1), count = w.numel() / (n == 0 ? 1 : n);
  const double eps = w.dtype() == DType::f64 ? std::numeric_limits<double>::epsilon()
                                             : static_cast<double>(std::numeric_limits<float>::epsilon());
  const double rel_tol = kGapUnits * static_cast<double>(n) * eps;
  dispatch(w.device(), w.dtype(),
           [&]<class K, class T>() { K::template eigh_gap_mask<T>(w.data<T>(), n, count, rel_tol, mask.data<T>()); });
  return mask / (gaps + (1.0 - mask));
}

// A = V diag(w) Vᵀ:  Ā = sym(V (diag(w̄) + F ∘ (Vᵀ V̄)) Vᵀ), sym(X) = (X + Xᵀ)/2,
// which is also the gradient through A ↦ (A + Aᵀ)/2, so the rule holds for
// any input, symmetric or not.
void eigh_backward(BackwardContext& c) {
  if (!c.needs_grad(0)) return;
  const Tensor& w = c.output(0);
  const Tensor& v = c.output(1);
  const Tensor& gw = c.grad_output(0);
  const Tensor& gv = c.grad_output(1);
  Tensor inner;  // V (diag(w̄) + F ∘ (Vᵀ V̄))
  if (gv.defined()) inner = matmul(v, inverse_gaps(w) * matmul(v, gv, true, false));
  if (gw.defined()) {
    const Tensor scaled = v * unsqueeze(gw, -2);
    inner = inner.defined() ? inner + scaled : scaled;
  }
  const Tensor g = matmul(inner, v, false, true);
  c.set_grad(0, scale(g + transpose(g), 0.5));
}

// A batch of matrices with well separated eigenvalues (about 0, 1, 2, ...
// apart by ±0.3 at most), not symmetric: eigh reads their symmetric part.
Tensor sample_separated(const Shape& shape, Generator& g, DType d) {
  const std::int64_t n = shape[shape.rank() - 1];
  std::vector<double> diagonal(static_cast<std::size_t>(n * n), 0.0);
  for (std::int64_t i = 0; i < n; ++i) diagonal[static_cast<std::size_t>(i * n + i)] = 1.0 + static_cast<double>(i);
  return sample_uniform(shape, g, d, -0.15, 0.15) + from_vector(diagonal, Shape{n, n}, d);
}

// The eigenvectors' signs are LAPACK's choice, so the samples use only
// functions of V that do not see them: V diag(c) Vᵀ and the squares of V's
// entries (gradcheck perturbs the input, and a flipped sign would be a jump).
Tensor spectral(const Tensor& v, const Tensor& coefficients) {
  return matmul(v * unsqueeze(coefficients, -2), v, false, true);
}

std::vector<OpSample> eigh_samples(Generator& g, DType d) {
  std::vector<OpSample> samples;
  samples.push_back(make_sample("eigenvalues [3, 3]", {sample_separated({3, 3}, g, d)},
                                [](const std::vector<Tensor>& in) { return eigh(in[0]).values; }));
  samples.push_back(
      make_sample("V diag(c) Vᵀ [3, 3]", {sample_separated({3, 3}, g, d)}, [](const std::vector<Tensor>& in) {
        // On the input's device: the GPU tests run every sample there.
        const Tensor c = from_vector({1.0, -0.5, 2.0}, Shape{3}, in[0].dtype()).to(in[0].device());
        return spectral(eigh(in[0]).vectors, c);
      }));
  samples.push_back(make_sample("squares of V [4, 4]", {sample_separated({4, 4}, g, d)},
                                [](const std::vector<Tensor>& in) { return square(eigh(in[0]).vectors); }));
  samples.push_back(make_sample("V diag(exp(-w)) Vᵀ, batched [2, 3, 3]", {sample_separated({2, 3, 3}, g, d)},
                                [](const std::vector<Tensor>& in) {
                                  const EighResult e = eigh(in[0]);
                                  return spectral(e.vectors, exp(-e.values));
                                }));
  samples.push_back(make_sample("w and V diag(w²) Vᵀ, batch [2, 2, 2, 2]", {sample_separated({2, 2, 2, 2}, g, d)},
                                [](const std::vector<Tensor>& in) {
                                  const EighResult e = eigh(in[0]);
                                  return spectral(e.vectors, square(e.values)) + unsqueeze(e.values, -1);
                                }));
  return samples;
}

}  // namespace

// clang-format off
const OpDef eigh_op = {.name = "eigh", .arity = 1, .num_outputs = 2, .saves = kSaveOutputs,
    .nondiff = 0, .is_view = false,
    .shape_rule = eigh_rule, .forward = eigh_forward, .backward = eigh_backward, .samples = eigh_samples};
// clang-format on

}  // namespace metatape::detail

namespace metatape {

EighResult eigh(const Tensor& a) {
  if (!a.defined()) throw ValueError("eigh: input is an undefined tensor");
  const Tensor* in[] = {&a};
  Tensor out[2];
  detail::apply(detail::eigh_op, in, {}, out);
  return {out[0], out[1]};
}

}  // namespace metatape
