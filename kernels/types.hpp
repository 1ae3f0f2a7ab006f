// The vocabulary the CPU and CUDA kernels share: elementwise op codes and the
// geometry of convolutions, pooling windows and batch normalisation. Plain
// values only; each backend implements the kernels over them.
#pragma once

#include <cstdint>

// The geometry helpers are used by CUDA kernels too.
#ifdef __CUDACC__
#define METATAPE_HOST_DEVICE __host__ __device__
#else
#define METATAPE_HOST_DEVICE
#endif

namespace metatape::kernels {

enum class UnaryOp {
  neg,             // -x
  exp,             // e^x
  log,             // ln x
  sqrt,            // √x
  tanh,            // tanh x
  sigmoid,         // 1 / (1 + e^-x), evaluated without overflow
  relu,            // max(x, 0), NaN stays NaN
  abs,             // |x|
  step,            // 1 if x > 0 else 0        (relu's derivative)
  sign,            // -1, 0 or 1               (abs's derivative)
  pow,             // x^param
  scale,           // x * param
  shift,           // x + param
  finite_or_zero,  // x if finite, else 0      (logsumexp's shift)
};

enum class BinaryOp { add, sub, mul, div };

// A 2-D sliding window (convolution, pooling).
struct Window2d {
  std::int64_t kernel_h = 1, kernel_w = 1;
  std::int64_t stride_h = 1, stride_w = 1;
  std::int64_t pad_h = 0, pad_w = 0;  // zeros (convolution) or never-chosen (pooling) on each side

  // Output extent for an input extent; <= 0 means the window does not fit.
  METATAPE_HOST_DEVICE std::int64_t out_h(std::int64_t h) const { return (h + 2 * pad_h - kernel_h) / stride_h + 1; }
  METATAPE_HOST_DEVICE std::int64_t out_w(std::int64_t w) const { return (w + 2 * pad_w - kernel_w) / stride_w + 1; }
};

// A grouped 2-D convolution (groups are tasks, each with its own weights):
//   x [groups, images, in_channels, h, w]
//   w [groups, out_channels, in_channels, kernel_h, kernel_w]
//   y [groups, images, out_channels, out_h, out_w]
struct ConvShape {
  std::int64_t groups, images, in_channels, h, w, out_channels;
  Window2d window;
  // The CPU kernels: how many threads' scratch the caller sized (0: the
  // pool's count when called). The engine sets it when it sizes the scratch,
  // so that a set_num_threads between sizing and the call (another thread,
  // or a replay) cannot make a kernel use more scratch than there is.
  std::int64_t cpu_workers = 0;
  // x [T, N, C, H, W] with weights per task (the engine's rank-5 call), also
  // when T = 1: with one worker (one thread, or inside an unsplit run) the
  // CPU kernels then sum each task's weight gradient chunk after chunk, as
  // for T > 1, so that a task's bits do not depend on how many tasks share
  // the call. Otherwise one group's sum is cut into partial sums that several
  // threads can share.
  bool per_task = false;
  // The forward only: max(·, 0) after the bias, fused into the output's
  // last write (the same bits as a relu after the convolution).
  bool relu = false;

  METATAPE_HOST_DEVICE std::int64_t out_h() const { return window.out_h(h); }
  METATAPE_HOST_DEVICE std::int64_t out_w() const { return window.out_w(w); }
  METATAPE_HOST_DEVICE std::int64_t pixels() const { return out_h() * out_w(); }  // per output plane
  METATAPE_HOST_DEVICE std::int64_t patch() const {                               // GEMM inner dimension
    return in_channels * window.kernel_h * window.kernel_w;
  }
};

// Batch normalisation with batch statistics:
//   x, y  [groups, batch, channels, spatial]   (any trailing axes flattened)
//   gamma, beta  [groups, channels] if per_group_affine, else [channels]
//   statistics per (group, channel) over batch × spatial, biased variance
struct NormShape {
  std::int64_t groups, batch, channels, spatial;
  bool per_group_affine;
  double eps;
  bool relu = false;  // max(0, ·) after the affine map, fused
};

// The max-pooling that the batch_norm_max_pool kernels fuse after a batch
// norm: 2×2 windows at stride 2, no padding (Conv4's).
inline constexpr Window2d kNormPoolWindow{2, 2, 2, 2, 0, 0};

}  // namespace metatape::kernels
