// Batch normalisation with batch statistics, fused. T is float or double.
//
//   x, y, g, dx  [groups, batch, channels, spatial]   (any trailing axes flattened)
//   gamma, beta  [groups, channels] if per_group_affine, else [channels]
//   statistics   per (group, channel) over batch × spatial, biased variance,
//                accumulated in double
#pragma once

#include <cstdint>

namespace metatape::kernels::cpu {

struct NormShape {
  std::int64_t groups, batch, channels, spatial;
  bool per_group_affine;
  double eps;
  bool relu = false;  // max(0, ·) after the affine map, fused
};

// y = (x − mean) / √(var + eps) · gamma + beta, then max(0, y) if s.relu.
template <class T>
void batch_norm_forward(const NormShape& s, const T* x, const T* gamma, const T* beta, T* y);

// The gradients of Σ g·y: with x̂ the normalised input and r = 1/√(var + eps),
//   dx = r · gamma · (g − mean(g) − x̂ · mean(g x̂)),  dgamma = Σ g x̂,  dbeta = Σ g
// (the sums over batch × spatial, and over groups too for a shared affine).
// With s.relu, g is first zeroed where the forward's pre-activation was not
// positive (recomputed bit for bit as the forward computed it).
template <class T>
void batch_norm_backward(const NormShape& s, const T* x, const T* gamma, const T* beta, const T* g, T* dx, T* dgamma,
                         T* dbeta);

}  // namespace metatape::kernels::cpu
