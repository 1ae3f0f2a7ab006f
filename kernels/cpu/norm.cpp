#include "norm.hpp"

#include <cmath>

namespace metatape::kernels::cpu {
namespace {

// Mean and 1/√(var + eps) of one (group, channel) slice: `batch` runs of
// `spatial` values, `stride` apart.
template <class T>
void moments(const T* x, std::int64_t batch, std::int64_t spatial, std::int64_t stride, double eps, double& mean,
             double& rstd) {
  const double count = static_cast<double>(batch * spatial);
  double sum = 0;
  for (std::int64_t n = 0; n < batch; ++n)
    for (std::int64_t i = 0; i < spatial; ++i) sum += static_cast<double>(x[n * stride + i]);
  mean = sum / count;
  double squares = 0;  // two passes: no cancellation
  for (std::int64_t n = 0; n < batch; ++n)
    for (std::int64_t i = 0; i < spatial; ++i) {
      const double d = static_cast<double>(x[n * stride + i]) - mean;
      squares += d * d;
    }
  rstd = 1.0 / std::sqrt(squares / count + eps);
}

}  // namespace

template <class T>
void batch_norm_forward(const NormShape& s, const T* x, const T* gamma, const T* beta, T* y) {
  const std::int64_t stride = s.channels * s.spatial;  // between batch entries
  for (std::int64_t g = 0; g < s.groups; ++g) {
    for (std::int64_t c = 0; c < s.channels; ++c) {
      const std::int64_t offset = g * s.batch * stride + c * s.spatial;
      const std::int64_t affine = s.per_group_affine ? g * s.channels + c : c;
      double mean, rstd;
      moments(x + offset, s.batch, s.spatial, stride, s.eps, mean, rstd);
      const T scale = static_cast<T>(rstd * static_cast<double>(gamma[affine]));
      const T shift = static_cast<T>(static_cast<double>(beta[affine]) - mean * rstd * static_cast<double>(gamma[affine]));
      for (std::int64_t n = 0; n < s.batch; ++n) {
        const T* xr = x + offset + n * stride;
        T* yr = y + offset + n * stride;
        for (std::int64_t i = 0; i < s.spatial; ++i) yr[i] = xr[i] * scale + shift;
      }
    }
  }
}

template <class T>
void batch_norm_backward(const NormShape& s, const T* x, const T* gamma, const T* g, T* dx, T* dgamma, T* dbeta) {
  const std::int64_t stride = s.channels * s.spatial;
  const std::int64_t affine_size = s.per_group_affine ? s.groups * s.channels : s.channels;
  for (std::int64_t a = 0; a < affine_size; ++a) dgamma[a] = dbeta[a] = T(0);
  const double count = static_cast<double>(s.batch * s.spatial);
  for (std::int64_t grp = 0; grp < s.groups; ++grp) {
    for (std::int64_t c = 0; c < s.channels; ++c) {
      const std::int64_t offset = grp * s.batch * stride + c * s.spatial;
      const std::int64_t affine = s.per_group_affine ? grp * s.channels + c : c;
      double mean, rstd;
      moments(x + offset, s.batch, s.spatial, stride, s.eps, mean, rstd);
      double sum_g = 0, sum_g_xhat = 0;
      for (std::int64_t n = 0; n < s.batch; ++n)
        for (std::int64_t i = 0; i < s.spatial; ++i) {
          const double gv = static_cast<double>(g[offset + n * stride + i]);
          sum_g += gv;
          sum_g_xhat += gv * (static_cast<double>(x[offset + n * stride + i]) - mean) * rstd;
        }
      dbeta[affine] += static_cast<T>(sum_g);
      dgamma[affine] += static_cast<T>(sum_g_xhat);
      const double k = rstd * static_cast<double>(gamma[affine]);
      const double mean_g = sum_g / count, mean_g_xhat = sum_g_xhat / count;
      for (std::int64_t n = 0; n < s.batch; ++n)
        for (std::int64_t i = 0; i < s.spatial; ++i) {
          const std::int64_t at = offset + n * stride + i;
          const double xhat = (static_cast<double>(x[at]) - mean) * rstd;
          dx[at] = static_cast<T>(k * (static_cast<double>(g[at]) - mean_g - xhat * mean_g_xhat));
        }
    }
  }
}

template void batch_norm_forward<float>(const NormShape&, const float*, const float*, const float*, float*);
template void batch_norm_forward<double>(const NormShape&, const double*, const double*, const double*, double*);
template void batch_norm_backward<float>(const NormShape&, const float*, const float*, const float*, float*, float*,
                                         float*);
template void batch_norm_backward<double>(const NormShape&, const double*, const double*, const double*, double*,
                                          double*, double*);

}  // namespace metatape::kernels::cpu
