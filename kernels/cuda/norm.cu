// Batch normalisation with batch statistics (NormShape, types.hpp): one block
// per affine entry — a (group, channel) pair, or a channel whose shared γ, β
// sum over every group — reducing in double in a fixed order.
#include "../scalar_math.hpp"
#include "common.cuh"
#include "kernels.hpp"

namespace metatape::kernels::cuda {
namespace {

// Mean and 1/√(var + eps) of the slice of group g, channel c (two passes).
template <class T>
__device__ void moments(const NormShape& s, const T* x, std::int64_t g, std::int64_t c, double* shared, double& mean,
                        double& rstd) {
  const std::int64_t stride = s.channels * s.spatial, count = s.batch * s.spatial;
  const T* base = x + g * s.batch * stride + c * s.spatial;
  double acc = 0;
  for (std::int64_t i = threadIdx.x; i < count; i += blockDim.x)
    acc += static_cast<double>(base[(i / s.spatial) * stride + i % s.spatial]);
  mean = block_sum(acc, shared) / static_cast<double>(count);
  acc = 0;
  for (std::int64_t i = threadIdx.x; i < count; i += blockDim.x) {
    const double d = static_cast<double>(base[(i / s.spatial) * stride + i % s.spatial]) - mean;
    acc += d * d;
  }
  rstd = 1.0 / sqrt(block_sum(acc, shared) / static_cast<double>(count) + s.eps);
}

// The groups an affine entry a covers.
__device__ inline void groups_of(const NormShape& s, std::int64_t a, std::int64_t& first, std::int64_t& last,
                                 std::int64_t& channel) {
  if (s.per_group_affine) {
    first = a / s.channels;
    last = first + 1;
    channel = a % s.channels;
  } else {
    first = 0;
    last = s.groups;
    channel = a;
  }
}

template <class T>
__global__ void forward_kernel(NormShape s, const T* x, const T* gamma, const T* beta, T* y, std::int64_t affine_size) {
  __shared__ double shared[kThreads];
  const std::int64_t stride = s.channels * s.spatial, count = s.batch * s.spatial;
  for (std::int64_t a = blockIdx.x; a < affine_size; a += gridDim.x) {
    std::int64_t first, last, c;
    groups_of(s, a, first, last, c);
    for (std::int64_t g = first; g < last; ++g) {
      double mean, rstd;
      moments(s, x, g, c, shared, mean, rstd);
      T scale, shift;
      norm_affine(mean, rstd, gamma[a], beta[a], scale, shift);
      const std::int64_t offset = g * s.batch * stride + c * s.spatial;
      for (std::int64_t i = threadIdx.x; i < count; i += blockDim.x) {
        const std::int64_t at = offset + (i / s.spatial) * stride + i % s.spatial;
        const T v = x[at] * scale + shift;
        y[at] = s.relu ? relu(v) : v;
      }
    }
  }
}

template <class T>
__global__ void backward_kernel(NormShape s, const T* x, const T* gamma, const T* beta, const T* g, T* dx, T* dgamma,
                                T* dbeta, std::int64_t affine_size) {
  __shared__ double shared[kThreads];
  const std::int64_t stride = s.channels * s.spatial, count = s.batch * s.spatial;
  for (std::int64_t a = blockIdx.x; a < affine_size; a += gridDim.x) {
    std::int64_t first, last, c;
    groups_of(s, a, first, last, c);
    double total_g = 0, total_g_xhat = 0;
    for (std::int64_t grp = first; grp < last; ++grp) {
      double mean, rstd;
      moments(s, x, grp, c, shared, mean, rstd);
      T scale, shift;
      norm_affine(mean, rstd, gamma[a], beta[a], scale, shift);
      const std::int64_t offset = grp * s.batch * stride + c * s.spatial;
      // The upstream gradient through the fused ReLU: 0 where the forward's
      // pre-activation was not positive.
      const auto upstream = [&](std::int64_t at) { return s.relu ? g[at] * step(x[at] * scale + shift) : g[at]; };
      double acc_g = 0, acc_gd = 0;
      for (std::int64_t i = threadIdx.x; i < count; i += blockDim.x) {
        const std::int64_t at = offset + (i / s.spatial) * stride + i % s.spatial;
        const double gv = static_cast<double>(upstream(at));
        acc_g += gv;
        acc_gd += gv * (static_cast<double>(x[at]) - mean);
      }
      const double sum_g = block_sum(acc_g, shared), sum_g_xhat = block_sum(acc_gd, shared) * rstd;
      total_g += sum_g;
      total_g_xhat += sum_g_xhat;
      const double k = rstd * static_cast<double>(gamma[a]);
      const double mean_g = sum_g / static_cast<double>(count), mean_g_xhat = sum_g_xhat / static_cast<double>(count);
      for (std::int64_t i = threadIdx.x; i < count; i += blockDim.x) {
        const std::int64_t at = offset + (i / s.spatial) * stride + i % s.spatial;
        const double xhat = (static_cast<double>(x[at]) - mean) * rstd;
        dx[at] = static_cast<T>(k * (static_cast<double>(upstream(at)) - mean_g - xhat * mean_g_xhat));
      }
    }
    if (threadIdx.x == 0) {
      dbeta[a] = static_cast<T>(total_g);
      dgamma[a] = static_cast<T>(total_g_xhat);
    }
  }
}

std::int64_t affine_size_of(const NormShape& s) { return s.per_group_affine ? s.groups * s.channels : s.channels; }

}  // namespace

template <class T>
void batch_norm_forward(const NormShape& s, const T* x, const T* gamma, const T* beta, T* y) {
  const std::int64_t affine = affine_size_of(s);
  if (affine == 0 || s.batch * s.spatial == 0) return;
  forward_kernel<T><<<static_cast<unsigned>(std::min<std::int64_t>(affine, 65535)), kThreads, 0, stream()>>>(
      s, x, gamma, beta, y, affine);
  check_launch("batch_norm forward_kernel");
}

template <class T>
void batch_norm_backward(const NormShape& s, const T* x, const T* gamma, const T* beta, const T* g, T* dx, T* dgamma,
                         T* dbeta) {
  const std::int64_t affine = affine_size_of(s);
  if (affine == 0) return;
  backward_kernel<T><<<static_cast<unsigned>(std::min<std::int64_t>(affine, 65535)), kThreads, 0, stream()>>>(
      s, x, gamma, beta, g, dx, dgamma, dbeta, affine);
  check_launch("batch_norm backward_kernel");
}

// The pooled batch norm as the two kernels in turn, through a whole
// normalised (or unpooled) tensor in scratch: the same values and indices
// as the unfused ops.
template <class T>
void batch_norm_max_pool_forward(const NormShape& s, std::int64_t h, std::int64_t w, const T* x, const T* gamma,
                                 const T* beta, T* y, std::int64_t* index, T* scratch) {
  batch_norm_forward(s, x, gamma, beta, scratch);
  max_pool(scratch, s.groups * s.batch * s.channels, h, w, kNormPoolWindow, y, index);
}

template <class T>
void batch_norm_max_pool_backward(const NormShape& s, std::int64_t h, std::int64_t w, const T* x, const T* gamma,
                                  const T* beta, const T* g, const std::int64_t* index, T* dx, T* dgamma, T* dbeta,
                                  T* scratch) {
  max_unpool(g, index, s.groups * s.batch * s.channels, h, w, kNormPoolWindow, scratch);
  batch_norm_backward(s, x, gamma, beta, scratch, dx, dgamma, dbeta);
}

std::int64_t batch_norm_max_pool_scratch_size(const NormShape& s) {
  return s.groups * s.batch * s.channels * s.spatial;
}

template void batch_norm_forward<float>(const NormShape&, const float*, const float*, const float*, float*);
template void batch_norm_forward<double>(const NormShape&, const double*, const double*, const double*, double*);
template void batch_norm_backward<float>(const NormShape&, const float*, const float*, const float*, const float*,
                                         float*, float*, float*);
template void batch_norm_backward<double>(const NormShape&, const double*, const double*, const double*,
                                          const double*, double*, double*, double*);

template void batch_norm_max_pool_forward<float>(const NormShape&, std::int64_t, std::int64_t, const float*,
                                                 const float*, const float*, float*, std::int64_t*, float*);
template void batch_norm_max_pool_forward<double>(const NormShape&, std::int64_t, std::int64_t, const double*,
                                                  const double*, const double*, double*, std::int64_t*, double*);
template void batch_norm_max_pool_backward<float>(const NormShape&, std::int64_t, std::int64_t, const float*,
                                                  const float*, const float*, const float*, const std::int64_t*,
                                                  float*, float*, float*, float*);
template void batch_norm_max_pool_backward<double>(const NormShape&, std::int64_t, std::int64_t, const double*,
                                                   const double*, const double*, const double*, const std::int64_t*,
                                                   double*, double*, double*, double*);

}  // namespace metatape::kernels::cuda
