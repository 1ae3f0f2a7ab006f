// The ReLU NTK recursion of analytic_ntk.hpp (docs/methods.md §4), on the
// host in double.
#include "metatape/meta/analytic_ntk.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>
#include <vector>

namespace metatape::meta {
namespace {

// a's rows as doubles, after checking a is a finite non-empty matrix.
std::vector<double> host_rows(const Tensor& a, const char* where, const char* which) {
  const std::string name = std::string(where) + ": " + which + " inputs";
  if (!a.defined()) throw ValueError(name + " are undefined");
  if (a.dtype() != DType::f32 && a.dtype() != DType::f64) throw DTypeError(name + " must be f32 or f64");
  if (a.rank() != 2) throw ShapeError(name + " must be [points, d], got " + a.shape().str());
  if (a.numel() == 0) throw ValueError(name + " are empty: " + a.shape().str());
  std::vector<double> v = a.to_vector();
  for (std::size_t k = 0; k < v.size(); ++k)
    if (!std::isfinite(v[k]))
      throw ValueError(name + " have a non-finite entry at [" + std::to_string(k / a.dim(1)) + ", " +
                       std::to_string(k % a.dim(1)) + "]");
  return v;
}

// One layer's covariances Σˡ and kernel Θˡ over the pairs of inputs.
struct Layer {
  std::vector<double> aa, bb, ab, theta;  // Σ(a_i, a_i), Σ(b_j, b_j), Σ(a_i, b_j), Θ(a_i, b_j)
};

double dot(const double* x, const double* y, std::int64_t d) {
  double s = 0;
  for (std::int64_t k = 0; k < d; ++k) s += x[k] * y[k];
  return s;
}

// One ReLU layer: E[ReLU ReLU] and E[ReLU' ReLU'] for the covariance
// (xx, yy, xy). An input of zero variance gives 0 (its angle does not matter).
struct Expectations {
  double relu, derivative;
};
Expectations relu_expectations(double xx, double yy, double xy) {
  const double norms = std::sqrt(xx * yy);
  const double cosine = norms > 0 ? std::clamp(xy / norms, -1.0, 1.0) : 0.0;
  const double phi = std::acos(cosine), pi = std::numbers::pi;
  return {norms * (std::sin(phi) + (pi - phi) * cosine) / (2 * pi), (pi - phi) / (2 * pi)};
}

void check_pair(const Tensor& a, const Tensor& b, const char* where) {
  if (a.dim(1) != b.dim(1))
    throw ShapeError(std::string(where) + ": inputs " + a.shape().str() + " and " + b.shape().str() +
                     " differ in dimension");
}

}  // namespace

Tensor relu_ntk(const Tensor& a, const Tensor& b, int hidden_layers, bool bias) {
  const std::vector<double> x = host_rows(a, "relu_ntk", "first"), y = host_rows(b, "relu_ntk", "second");
  check_pair(a, b, "relu_ntk");
  if (hidden_layers < 1) throw ValueError("relu_ntk: hidden_layers must be >= 1, got " + std::to_string(hidden_layers));
  const std::int64_t na = a.dim(0), nb = b.dim(0), d = a.dim(1);
  const double beta2 = bias ? 1.0 : 0.0, dd = static_cast<double>(d);
  Layer s;
  for (std::int64_t i = 0; i < na; ++i) s.aa.push_back(dot(&x[i * d], &x[i * d], d) / dd + beta2);
  for (std::int64_t j = 0; j < nb; ++j) s.bb.push_back(dot(&y[j * d], &y[j * d], d) / dd + beta2);
  for (std::int64_t i = 0; i < na; ++i)
    for (std::int64_t j = 0; j < nb; ++j) s.ab.push_back(dot(&x[i * d], &y[j * d], d) / dd + beta2);
  s.theta = s.ab;
  for (int l = 0; l < hidden_layers; ++l) {
    Layer next;
    // E[ReLU(u)²] = Σ/2: the diagonal follows the same map at φ = 0.
    for (double v : s.aa) next.aa.push_back(v / 2 + beta2);
    for (double v : s.bb) next.bb.push_back(v / 2 + beta2);
    for (std::int64_t i = 0; i < na; ++i)
      for (std::int64_t j = 0; j < nb; ++j) {
        const std::size_t k = static_cast<std::size_t>(i * nb + j);
        const Expectations e = relu_expectations(s.aa[i], s.bb[j], s.ab[k]);
        next.ab.push_back(e.relu + beta2);
        next.theta.push_back(s.theta[k] * e.derivative + next.ab.back());
      }
    s = std::move(next);
  }
  return from_vector(s.theta, Shape{na, nb}, DType::f64);
}

Tensor relu_ntk_one_hidden(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = host_rows(a, "relu_ntk_one_hidden", "first"),
                            y = host_rows(b, "relu_ntk_one_hidden", "second");
  check_pair(a, b, "relu_ntk_one_hidden");
  const std::int64_t na = a.dim(0), nb = b.dim(0), d = a.dim(1);
  std::vector<double> theta;
  for (std::int64_t i = 0; i < na; ++i)
    for (std::int64_t j = 0; j < nb; ++j) {
      // Written out as docs/methods.md §4 states it, apart from the recursion.
      const double norms = std::sqrt(dot(&x[i * d], &x[i * d], d) * dot(&y[j * d], &y[j * d], d));
      const double xy = dot(&x[i * d], &y[j * d], d), pi = std::numbers::pi;
      const double phi = norms > 0 ? std::acos(std::clamp(xy / norms, -1.0, 1.0)) : pi / 2;
      theta.push_back(xy * (pi - phi) / (2 * pi) + norms * (std::sin(phi) + (pi - phi) * std::cos(phi)) / (2 * pi));
    }
  return from_vector(theta, Shape{na, nb}, DType::f64);
}

}  // namespace metatape::meta
