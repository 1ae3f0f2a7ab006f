// The CPU convolution kernels (forward, input gradient, weight gradient)
// against a direct float64 convolution, on every path the plan chooses:
// channels-first columns (few input channels), channels-last (many), and the
// implicit GEMM (many, every kernel) on each instruction set this CPU has;
// stride 1, 2 and 3, padding, small spatial sizes, task groups, one chunk or
// several, and the thread count (the kernels' results do not depend on it).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/backend.hpp"
#include "kernels/cpu/conv.hpp"
#include "kernels/cpu/parallel.hpp"

namespace {

using K = metatape::kernels::cpu::CpuKernels;
using metatape::kernels::ConvShape;
using metatape::kernels::cpu::ConvKind;
using metatape::kernels::cpu::SmallGemmIsa;

// The instruction sets the convolution kernels can plan with here: none
// (im2col + GEMM for every kernel) always, AVX2 and AVX-512 (the implicit
// GEMM) where the CPU has them.
std::vector<SmallGemmIsa> conv_isas() {
  std::vector<SmallGemmIsa> isas;
  for (const SmallGemmIsa isa : {SmallGemmIsa::none, SmallGemmIsa::avx2, SmallGemmIsa::avx512})
    if (metatape::kernels::cpu::cpu_runs(isa)) isas.push_back(isa);
  return isas;
}

ConvShape shape(std::int64_t groups, std::int64_t images, std::int64_t channels, std::int64_t size,
                std::int64_t out_channels, std::int64_t stride, std::int64_t pad, std::int64_t kernel = 3) {
  return {groups, images, channels, size, size, out_channels, {kernel, kernel, stride, stride, pad, pad}};
}

std::vector<double> random_values(std::int64_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> v(static_cast<std::size_t>(n));
  for (double& x : v) x = u(gen);
  return v;
}

// Visits every (group, image, out channel, oh, ow, in channel, ki, kj) term
// of the convolution that reads an input pixel inside the image, with the
// flat indices of x [G, N, C, H, W], w [G, O, C, kh, kw] and y [G, N, O, oh, ow].
template <class F>
void for_each_term(const ConvShape& s, F&& f) {
  const auto& win = s.window;
  for (std::int64_t g = 0; g < s.groups; ++g)
    for (std::int64_t n = 0; n < s.images; ++n)
      for (std::int64_t o = 0; o < s.out_channels; ++o)
        for (std::int64_t oh = 0; oh < s.out_h(); ++oh)
          for (std::int64_t ow = 0; ow < s.out_w(); ++ow)
            for (std::int64_t c = 0; c < s.in_channels; ++c)
              for (std::int64_t ki = 0; ki < win.kernel_h; ++ki)
                for (std::int64_t kj = 0; kj < win.kernel_w; ++kj) {
                  const std::int64_t ih = oh * win.stride_h - win.pad_h + ki, iw = ow * win.stride_w - win.pad_w + kj;
                  if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
                  const std::int64_t xi = (((g * s.images + n) * s.in_channels + c) * s.h + ih) * s.w + iw;
                  const std::int64_t wi =
                      (((g * s.out_channels + o) * s.in_channels + c) * win.kernel_h + ki) * win.kernel_w + kj;
                  const std::int64_t yi = (((g * s.images + n) * s.out_channels + o) * s.out_h() + oh) * s.out_w() + ow;
                  f(xi, wi, yi);
                }
}

struct Operands {
  std::vector<double> x, w, g;  // g shaped like y
};

Operands operands(const ConvShape& s, unsigned seed) {
  const auto& win = s.window;
  return {random_values(s.groups * s.images * s.in_channels * s.h * s.w, seed),
          random_values(s.groups * s.out_channels * s.in_channels * win.kernel_h * win.kernel_w, seed + 1),
          random_values(s.groups * s.images * s.out_channels * s.pixels(), seed + 2)};
}

// The direct float64 results of the three kernels.
std::vector<double> reference(const ConvShape& s, const Operands& in, ConvKind kind) {
  std::vector<double> out(kind == ConvKind::forward      ? in.g.size()
                          : kind == ConvKind::input_grad ? in.x.size()
                                                         : in.w.size());
  for_each_term(s, [&](std::int64_t xi, std::int64_t wi, std::int64_t yi) {
    if (kind == ConvKind::forward)
      out[static_cast<std::size_t>(yi)] += in.w[wi] * in.x[xi];
    else if (kind == ConvKind::input_grad)
      out[static_cast<std::size_t>(xi)] += in.w[wi] * in.g[yi];
    else
      out[static_cast<std::size_t>(wi)] += in.g[yi] * in.x[xi];
  });
  return out;
}

template <class T>
std::vector<T> cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

// The kernel of `kind` of the CPU table on x, w, g (each kernel reads two of
// them) into out, with the scratch given.
template <class T>
void call_kernel(const ConvShape& s, ConvKind kind, const std::vector<T>& x, const std::vector<T>& w,
                 const std::vector<T>& g, std::vector<T>& out, std::vector<T>& scratch) {
  if (kind == ConvKind::forward)
    K::conv2d_forward<T>(s, x.data(), w.data(), nullptr, 0, out.data(), scratch.data());
  else if (kind == ConvKind::input_grad)
    K::conv2d_input_grad<T>(s, g.data(), w.data(), out.data(), scratch.data());
  else
    K::conv2d_weight_grad<T>(s, x.data(), g.data(), out.data(), scratch.data());
}

// One kernel of the CPU table in precision T at `threads` threads.
template <class T>
std::vector<T> run(const ConvShape& s, const Operands& in, ConvKind kind, int threads) {
  metatape::kernels::cpu::set_threads(threads);
  const std::vector<T> x = cast<T>(in.x), w = cast<T>(in.w), g = cast<T>(in.g);
  std::vector<T> out(kind == ConvKind::forward      ? g.size()
                     : kind == ConvKind::input_grad ? x.size()
                                                    : w.size(),
                     T(-7));  // garbage the kernel must overwrite
  std::vector<T> scratch(static_cast<std::size_t>(K::conv_scratch_size(s)), T(-7));
  call_kernel(s, kind, x, w, g, out, scratch);
  metatape::kernels::cpu::set_threads(1);
  return out;
}

// max |a − b| / max |b|.
template <class T>
double relative_error(const std::vector<T>& a, const std::vector<double>& b) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return scale == 0 ? diff : diff / scale;
}

const ConvKind kKinds[] = {ConvKind::forward, ConvKind::input_grad, ConvKind::weight_grad};
const char* kind_name(ConvKind k) {
  return k == ConvKind::forward ? "forward" : k == ConvKind::input_grad ? "input gradient" : "weight gradient";
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// Every kernel of shape s, on every instruction set here, in float64 (to
// rounding) and float32 against the reference, and at 2 threads
// bit-identical to 1. The implicit GEMM gives the same bits on AVX2 and
// AVX-512.
void check_all(const char* what, const ConvShape& s) {
  const Operands in = operands(s, 11);
  for (const ConvKind kind : kKinds) {
    CAPTURE(what);
    CAPTURE(kind_name(kind));
    const std::vector<double> expected = reference(s, in, kind);
    std::vector<double> implicit_f64;
    std::vector<float> implicit_f32;
    for (const SmallGemmIsa isa : conv_isas()) {
      const metatape::kernels::cpu::ConvIsaScope scope(isa);
      INFO(std::string(metatape::kernels::cpu::small_gemm_isa_name(isa)));  // a name, not a pointer
      const std::vector<double> f64 = run<double>(s, in, kind, 1);
      CHECK(relative_error(f64, expected) < 1e-13);
      const std::vector<float> f32 = run<float>(s, in, kind, 1);
      CHECK(relative_error(f32, expected) < 1e-5);
      CHECK(same_bits(f32, run<float>(s, in, kind, 2)));
      CHECK(same_bits(f64, run<double>(s, in, kind, 2)));
      if (metatape::kernels::cpu::conv_plan(s, kind).implicit == SmallGemmIsa::none) continue;
      if (implicit_f64.empty()) {
        implicit_f64 = f64, implicit_f32 = f32;
      } else {
        CHECK(same_bits(f64, implicit_f64));
        CHECK(same_bits(f32, implicit_f32));
      }
    }
  }
}

// batch_norm_max_pool_{forward,backward} against batch norm then max-pool,
// and max-unpool then batch norm's adjoint, bit for bit. Conv4's map sizes
// and odd ones, on both sides of the thresholds at which the CPU works a
// map at a time (100 entries forward, 400 backward); with a row and a
// column in no window (odd sizes), a NaN in one map, ReLU or not, γ per
// group or shared, at one thread and two.
template <class T>
void check_norm_pool_bits() {
  using metatape::kernels::NormShape;
  const metatape::kernels::Window2d pool = metatape::kernels::kNormPoolWindow;
  const std::int64_t sizes[][2] = {{28, 28}, {21, 21}, {14, 14}, {11, 10}, {10, 10}, {9, 11}, {7, 7}, {3, 3}, {5, 4}};
  const auto size = [](std::int64_t k) { return static_cast<std::size_t>(k); };
  for (const auto& [h, w] : sizes)
    for (const bool relu : {false, true})
      for (const bool per_group : {false, true})
        for (const int threads : {1, 2}) {
          INFO("h " << h << ", w " << w << ", relu " << relu << ", per group " << per_group << ", threads "
                    << threads << ", " << sizeof(T) * 8 << "-bit");
          metatape::kernels::cpu::set_threads(threads);
          const NormShape s{2, 3, 4, h * w, per_group, 1e-3, relu};
          const std::int64_t planes = s.groups * s.batch * s.channels, n = planes * s.spatial;
          const std::int64_t outputs = pool.out_h(h) * pool.out_w(w), affine = per_group ? 8 : 4;
          std::vector<T> x = cast<T>(random_values(n, 11));
          x[size(3 * s.spatial + 1)] = std::numeric_limits<T>::quiet_NaN();
          const std::vector<T> gamma = cast<T>(random_values(affine, 12)), beta = cast<T>(random_values(affine, 13)),
                               g = cast<T>(random_values(planes * outputs, 14));
          // The pair: the normalised maps pooled; the gradient unpooled, then
          // normalisation's adjoint.
          std::vector<T> normalised(size(n)), unpooled(size(n)), maxima(size(planes * outputs)), dx(size(n)),
              dgamma(size(affine)), dbeta(size(affine));
          std::vector<std::int64_t> index(maxima.size());
          K::batch_norm_forward<T>(s, x.data(), gamma.data(), beta.data(), normalised.data());
          K::max_pool<T>(normalised.data(), planes, h, w, pool, maxima.data(), index.data());
          K::max_unpool<T>(g.data(), index.data(), planes, h, w, pool, unpooled.data());
          K::batch_norm_backward<T>(s, x.data(), gamma.data(), beta.data(), unpooled.data(), dx.data(), dgamma.data(),
                                    dbeta.data());
          // Fused, into buffers filled with a marker.
          std::vector<T> fused_maxima(maxima.size(), T(-7)), fused_dx(dx.size(), T(-7)),
              fused_dgamma(dgamma.size(), T(-7)), fused_dbeta(dbeta.size(), T(-7));
          std::vector<std::int64_t> fused_index(index.size(), -1);
          CHECK((K::batch_norm_max_pool_scratch_size(s) == 0) == (h * w >= 400));
          std::vector<T> scratch(size(K::batch_norm_max_pool_scratch_size(s)));
          K::batch_norm_max_pool_forward<T>(s, h, w, x.data(), gamma.data(), beta.data(), fused_maxima.data(),
                                            fused_index.data(), scratch.data());
          K::batch_norm_max_pool_backward<T>(s, h, w, x.data(), gamma.data(), beta.data(), g.data(), index.data(),
                                             fused_dx.data(), fused_dgamma.data(), fused_dbeta.data(),
                                             scratch.data());
          CHECK(fused_index == index);
          CHECK(same_bits(fused_maxima, maxima));
          CHECK(same_bits(fused_dx, dx));
          CHECK(same_bits(fused_dgamma, dgamma));
          CHECK(same_bits(fused_dbeta, dbeta));
        }
  metatape::kernels::cpu::set_threads(1);
}

TEST_SUITE("conv") {
  TEST_CASE("one input channel (channels-first columns): stride 1 and 2, with and without padding") {
    REQUIRE_FALSE(metatape::kernels::cpu::conv_plan(shape(1, 3, 1, 9, 4, 1, 1), ConvKind::forward).channels_last);
    check_all("28x28-like, stride 2, padding 1", shape(1, 3, 1, 9, 4, 2, 1));
    check_all("stride 1, padding 1", shape(2, 2, 1, 7, 5, 1, 1));
    check_all("stride 1, no padding", shape(1, 2, 3, 6, 4, 1, 0));
    check_all(">= 128 output pixels, one image per GEMM", shape(1, 3, 1, 12, 3, 1, 1));
  }

  TEST_CASE("many input channels (channels-last columns, the implicit GEMM): strided, padded, down to 1x1 outputs") {
    {
      const metatape::kernels::cpu::ConvIsaScope im2col(SmallGemmIsa::none);
      REQUIRE(metatape::kernels::cpu::conv_plan(shape(1, 2, 16, 7, 8, 2, 1), ConvKind::forward).channels_last);
    }
    check_all("7x7 -> 4x4, stride 2", shape(1, 2, 16, 7, 8, 2, 1));
    check_all("4x4 -> 2x2, stride 2", shape(2, 3, 16, 4, 8, 2, 1));
    check_all("2x2 -> 1x1, stride 2", shape(1, 3, 8, 2, 8, 2, 1));
    check_all("3x3 stride 1, padding 1", shape(2, 2, 8, 3, 8, 1, 1));
    check_all("no padding, 5x5 window", shape(1, 2, 8, 6, 4, 1, 0, 5));
    check_all("padding 2, 5x5 window wider than the 4x4 image", shape(1, 2, 8, 4, 4, 1, 2, 5));
    check_all(">= 128 output pixels, one image per GEMM", shape(1, 2, 8, 12, 4, 1, 1));
    check_all("padding 4 around a 3x3 window: windows wholly in the padding", shape(1, 2, 8, 3, 4, 2, 4));
    check_all("stride 3, padding 2", shape(1, 2, 8, 5, 4, 3, 2));
    check_all("stride 3 on a 2x2 image: a phase with no pixels", shape(1, 2, 8, 2, 4, 3, 1));
    check_all("stride 3 wider than the 2x2 window: phases with no taps", shape(2, 2, 8, 7, 5, 3, 0, 2));
    // Output channels past full register tiles: masked vectors (21 = 16 + 5
    // floats), and more than one tile's worth (70).
    check_all("21 output channels", shape(1, 3, 8, 5, 21, 1, 1));
    check_all("70 output and 19 input channels", shape(1, 2, 19, 5, 70, 2, 1));
  }

  TEST_CASE("the implicit GEMM's plan: many input channels, every kernel, on the instruction set chosen") {
    CHECK(metatape::kernels::cpu::conv_isa() == metatape::kernels::cpu::small_gemm_isa());
    for (const SmallGemmIsa isa : conv_isas()) {
      const metatape::kernels::cpu::ConvIsaScope scope(isa);
      CHECK(metatape::kernels::cpu::conv_isa() == isa);
      for (const ConvKind kind : kKinds) {
        CHECK(metatape::kernels::cpu::conv_plan(shape(1, 2, 16, 3, 8, 2, 1), kind).implicit == isa);
        CHECK(metatape::kernels::cpu::conv_plan(shape(1, 2, 2, 7, 8, 2, 1), kind).implicit ==
              SmallGemmIsa::none);  // few input channels: channels-first columns
      }
    }
  }

  TEST_CASE("scratch sized for the shape's worker count holds when the pool grows before the call") {
    // Several chunks per group, work for 3 threads: 8 input and 4 output
    // channels on the im2col path, 64 and 64 on the implicit GEMM's (its
    // chunks are larger). The im2col path's GEMMs are small enough not to
    // be split between threads, which would change their bits; the implicit
    // GEMM's bits never depend on the threads.
    for (const SmallGemmIsa isa : conv_isas()) {
      const metatape::kernels::cpu::ConvIsaScope scope(isa);
      for (const ConvKind kind : kKinds) {
        INFO(std::string(kind_name(kind)), " on ", std::string(metatape::kernels::cpu::small_gemm_isa_name(isa)));
        const bool wide = isa != SmallGemmIsa::none;
        ConvShape s = shape(2, 130, wide ? 64 : 8, 4, wide ? 64 : 4, 2, 1);
        s.cpu_workers = 1;
        REQUIRE(s.groups * metatape::kernels::cpu::conv_plan(s, kind).chunks >= 3);
        const Operands in = operands(s, 5);
        const std::vector<float> x = cast<float>(in.x), w = cast<float>(in.w), g = cast<float>(in.g);
        constexpr std::size_t kGuard = 4096;
        const std::vector<float> one = run<float>(s, in, kind, 1);
        metatape::kernels::cpu::set_threads(1);
        const auto size = static_cast<std::size_t>(K::conv_scratch_size(s));
        std::vector<float> scratch(size + kGuard, -7.0f), out(one.size(), -7.0f);
        metatape::kernels::cpu::set_threads(3);
        call_kernel(s, kind, x, w, g, out, scratch);
        metatape::kernels::cpu::set_threads(1);
        CHECK(std::all_of(scratch.begin() + static_cast<std::ptrdiff_t>(size), scratch.end(),
                          [](float v) { return v == -7.0f; }));
        CHECK(out == one);
      }
    }
  }

  TEST_CASE("several chunks per group: grouped (summed in order) and ungrouped (partial sums)") {
    // 4x4 -> 2x2 outputs: 130 images make several chunks (the last one short).
    const ConvShape ungrouped = shape(1, 130, 8, 4, 4, 2, 1), grouped = shape(2, 130, 8, 4, 4, 2, 1);
    for (const ConvKind kind : kKinds) {
      const metatape::kernels::cpu::ConvIsaScope im2col(SmallGemmIsa::none);
      const auto plan = metatape::kernels::cpu::conv_plan(ungrouped, kind);
      REQUIRE(plan.chunks >= 2);
      REQUIRE(ungrouped.images % plan.chunk != 0);
    }
    check_all("ungrouped, channels-last", ungrouped);
    check_all("grouped, channels-last", grouped);
    check_all("ungrouped, channels-first", shape(1, 130, 2, 4, 4, 2, 1));
    // More chunks than the weight gradient's partial sums: runs of chunks.
    const ConvShape many = shape(1, 600, 8, 4, 4, 2, 1);
    const auto plan = metatape::kernels::cpu::conv_plan(many, ConvKind::weight_grad);
    REQUIRE(plan.chunks > plan.segments);
    check_all("ungrouped, chunks summed in runs", many);
    // The implicit GEMM's chunks: 64 channels of 6x6 padded planes, 28 images a chunk.
    const ConvShape wide = shape(2, 130, 64, 4, 4, 2, 1);
    for (const SmallGemmIsa isa : conv_isas()) {
      const metatape::kernels::cpu::ConvIsaScope scope(isa);
      const auto plan = metatape::kernels::cpu::conv_plan(wide, ConvKind::forward);
      if (plan.implicit == SmallGemmIsa::none) continue;
      REQUIRE(plan.chunks >= 2);
      REQUIRE(wide.images % plan.chunk != 0);
    }
    check_all("implicit GEMM, several chunks", wide);
    // Enough work (14M multiply-adds) for the implicit GEMM to use two
    // workers at two threads, in every kernel: check_all's two-thread run
    // then splits it.
    const ConvShape busy = shape(2, 12, 32, 8, 32, 1, 1);
    metatape::kernels::cpu::set_threads(2);
    for (const SmallGemmIsa isa : conv_isas()) {
      const metatape::kernels::cpu::ConvIsaScope scope(isa);
      for (const ConvKind kind : kKinds)
        if (metatape::kernels::cpu::conv_plan(busy, kind).implicit != SmallGemmIsa::none)
          CHECK(metatape::kernels::cpu::conv_plan(busy, kind).workers == 2);
    }
    metatape::kernels::cpu::set_threads(1);
    check_all("implicit GEMM, split between two workers", busy);
    // One group at two threads: the weight gradient in two blocks of input
    // channels, 17 and 16.
    const ConvShape blocks = shape(1, 12, 33, 8, 32, 1, 1);
    metatape::kernels::cpu::set_threads(2);
    for (const SmallGemmIsa isa : conv_isas()) {
      const metatape::kernels::cpu::ConvIsaScope scope(isa);
      const auto plan = metatape::kernels::cpu::conv_plan(blocks, ConvKind::weight_grad);
      if (plan.implicit == SmallGemmIsa::none) continue;
      CHECK(plan.channel_blocks == 2);
      CHECK(plan.block_channels == 17);
    }
    metatape::kernels::cpu::set_threads(1);
    check_all("implicit GEMM, the weight gradient in uneven blocks of channels", blocks);
    // Several chunks of g's padded planes (64 channels of 11x11) for the
    // input gradient, and of x's for the weight gradient, whose sums then go
    // on over chunks in whole tiles of 64 columns.
    const ConvShape chunked = shape(1, 40, 16, 8, 64, 1, 1);
    for (const SmallGemmIsa isa : conv_isas()) {
      const metatape::kernels::cpu::ConvIsaScope scope(isa);
      for (const ConvKind kind : {ConvKind::input_grad, ConvKind::weight_grad}) {
        const auto plan = metatape::kernels::cpu::conv_plan(chunked, kind);
        if (plan.implicit != SmallGemmIsa::none) CHECK(plan.chunks >= 3);
      }
    }
    check_all("implicit GEMM, several chunks of 64 output channels", chunked);
  }

  TEST_CASE("per task: one task has the bits of the first of two at 1 thread and unsplit at 3, every kernel") {
    // 600 images of 4x4 -> 2x2: more chunks than an ungrouped weight
    // gradient's partial sums, which a per-task call must not use.
    for (const std::int64_t channels : {8, 2})  // channels-last (or implicit), channels-first columns
      for (const SmallGemmIsa isa : conv_isas()) {
        const metatape::kernels::cpu::ConvIsaScope scope(isa);
        INFO(channels, " channels on ", std::string(metatape::kernels::cpu::small_gemm_isa_name(isa)));
        ConvShape one = shape(1, 600, channels, 4, 4, 2, 1), two = shape(2, 600, channels, 4, 4, 2, 1);
        one.per_task = two.per_task = true;
        const bool implicit =
            metatape::kernels::cpu::conv_plan(one, ConvKind::weight_grad).implicit != SmallGemmIsa::none;
        REQUIRE(metatape::kernels::cpu::conv_plan(one, ConvKind::weight_grad).chunks > (implicit ? 1 : 8));
        const Operands both = operands(two, 5);
        const auto first = [](const std::vector<double>& v) {
          return std::vector<double>(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2));
        };
        const Operands alone{first(both.x), first(both.w), first(both.g)};
        for (const ConvKind kind : kKinds) {
          CAPTURE(kind_name(kind));
          CHECK(relative_error(run<double>(one, alone, kind, 1), reference(one, alone, kind)) < 1e-13);
          for (int threads : {1, 3}) {
            CAPTURE(threads);
            const auto unsplit_run = [&](const ConvShape& s, const Operands& in) {
              const metatape::kernels::cpu::UnsplitRegion unsplit;
              return run<float>(s, in, kind, threads);
            };
            const std::vector<float> a = unsplit_run(one, alone), b = unsplit_run(two, both);
            CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
            if (threads == 1) CHECK(run<float>(one, alone, kind, 1) == a);
          }
          // At 3 threads a lone task's weight gradient spreads over partial
          // sums on the im2col path (another order: equal to rounding); the
          // implicit GEMM's has the same bits however it is split.
          if (kind == ConvKind::weight_grad && implicit) {
            CHECK(run<float>(one, alone, kind, 3) == run<float>(one, alone, kind, 1));
          } else if (kind == ConvKind::weight_grad) {
            REQUIRE(metatape::kernels::cpu::conv_plan(one, kind).segments == 0);
            metatape::kernels::cpu::set_threads(3);
            CHECK(metatape::kernels::cpu::conv_plan(one, kind).segments > 0);
            metatape::kernels::cpu::set_threads(1);
            CHECK(relative_error(run<float>(one, alone, kind, 3), reference(one, alone, kind)) < 1e-5);
          }
        }
      }
  }

  TEST_CASE("the forward's bias: the convolution's bits plus the bias, per group or shared, at every layout") {
    // 12×12 outputs (written image by image) and 4×4 (chunks of images);
    // 2 and 9 input channels (channels-first and channels-last columns).
    for (const ConvShape& s : {shape(2, 3, 2, 12, 5, 1, 1), shape(2, 6, 2, 4, 5, 1, 1), shape(2, 3, 9, 12, 5, 1, 1),
                               shape(2, 6, 9, 4, 5, 1, 1)}) {
      const Operands in = operands(s, 11);
      const std::vector<float> plain = run<float>(s, in, ConvKind::forward, 1);
      const std::vector<float> x = cast<float>(in.x), w = cast<float>(in.w);
      const std::vector<float> bias = cast<float>(random_values(s.groups * s.out_channels, 14));
      const std::int64_t pixels = s.out_h() * s.out_w(), per_group = s.images * s.out_channels * pixels;
      for (const std::int64_t stride : {std::int64_t{0}, s.out_channels}) {
        std::vector<float> y(plain.size(), -7.0f), scratch(static_cast<std::size_t>(K::conv_scratch_size(s)));
        K::conv2d_forward<float>(s, x.data(), w.data(), bias.data(), stride, y.data(), scratch.data());
        bool same = true;
        for (std::size_t i = 0; i < y.size(); ++i) {
          const std::int64_t at = static_cast<std::int64_t>(i), grp = at / per_group;
          const std::int64_t channel = (at / pixels) % s.out_channels;
          same = same && y[i] == plain[i] + bias[static_cast<std::size_t>(grp * stride + channel)];
        }
        CAPTURE(s.in_channels);
        CAPTURE(s.h);
        CAPTURE(stride);
        CHECK(same);
      }
    }
  }

  TEST_CASE("batch norm and max-pool spread over threads: bit-identical to one thread") {
    using metatape::kernels::NormShape;
    // 2 groups × 8 channels of 16 × 256 values: several slices per chunk, several chunks.
    for (const bool per_group : {false, true}) {
      const NormShape s{2, 16, 8, 256, per_group, 1e-3, true};
      const std::int64_t n = s.groups * s.batch * s.channels * s.spatial, affine = per_group ? 16 : 8;
      const std::vector<float> x = cast<float>(random_values(n, 5)), g = cast<float>(random_values(n, 6));
      const std::vector<float> gamma = cast<float>(random_values(affine, 7)),
                               beta = cast<float>(random_values(affine, 8));
      std::vector<float> out[2][4];
      for (int t = 0; t < 2; ++t) {
        metatape::kernels::cpu::set_threads(t + 1);
        for (auto& v : out[t]) v.assign(static_cast<std::size_t>(n), -7.0f);
        K::batch_norm_forward<float>(s, x.data(), gamma.data(), beta.data(), out[t][0].data());
        K::batch_norm_backward<float>(s, x.data(), gamma.data(), beta.data(), g.data(), out[t][1].data(),
                                      out[t][2].data(), out[t][3].data());
      }
      metatape::kernels::cpu::set_threads(1);
      for (int k = 0; k < 4; ++k) CHECK(out[0][k] == out[1][k]);
    }
    // 600 planes of 8 × 8, a NaN in the first: that plane takes the general
    // path, the others the 2×2 fast path, at one thread and two.
    std::vector<float> x = cast<float>(random_values(600 * 64, 9));
    x[5] = std::nanf("");
    const metatape::kernels::Window2d pool{2, 2, 2, 2, 0, 0};
    std::vector<std::int64_t> index[2];
    std::vector<float> maxima[2], unpooled[2];
    for (int t = 0; t < 2; ++t) {
      metatape::kernels::cpu::set_threads(t + 1);
      index[t].assign(600 * 16, -1);
      maxima[t].assign(600 * 16, -7.0f);
      unpooled[t].assign(600 * 64, -7.0f);
      K::max_pool<float>(x.data(), 600, 8, 8, pool, maxima[t].data(), index[t].data());
      K::max_unpool<float>(maxima[t].data(), index[t].data(), 600, 8, 8, pool, unpooled[t].data());
    }
    metatape::kernels::cpu::set_threads(1);
    CHECK(index[0] == index[1]);
    CHECK(index[0][2] == 5);  // the NaN (row 0, column 5) wins its window (0, 2)
    CHECK(std::isnan(maxima[0][2]));
    for (std::size_t i = 0; i < index[0].size(); ++i)
      if (i != 2) CHECK(maxima[0][i] == x[static_cast<std::size_t>(index[0][i])]);
    // Unpooled: each maximum back at its index, zeros elsewhere.
    std::vector<bool> picked(x.size(), false);
    for (const std::int64_t i : index[0]) picked[static_cast<std::size_t>(i)] = true;
    for (std::size_t i = 0; i < x.size(); ++i)
      if (i != 5) CHECK(unpooled[0][i] == (picked[i] ? x[i] : 0.0f));
    CHECK(std::memcmp(maxima[0].data(), maxima[1].data(), maxima[0].size() * sizeof(float)) == 0);
    CHECK(std::memcmp(unpooled[0].data(), unpooled[1].data(), unpooled[0].size() * sizeof(float)) == 0);
  }

  TEST_CASE("batch norm with max-pool fused: the bits of batch norm then max-pool, and of their adjoints") {
    check_norm_pool_bits<float>();
    check_norm_pool_bits<double>();
  }

  TEST_CASE("batch norm kernels against the float64 formulas: rows of every length, offsets far from zero") {
    using metatape::kernels::NormShape;
    // Row lengths below, at and past the lanes' rounds (lane_sum.hpp); values
    // 30 ± 2, where a one-pass Σx² − (Σx)²/n in float would lose most digits.
    for (const std::int64_t spatial : {1, 9, 31, 32, 33, 49, 100})
      for (const bool relu : {false, true})
        for (const bool per_group : {false, true}) {
          const NormShape s{2, 5, 3, spatial, per_group, 1e-3, relu};
          const std::int64_t rows = s.groups * s.batch * s.channels, n = rows * spatial;
          const std::int64_t affine = per_group ? s.groups * s.channels : s.channels;
          std::vector<float> x = cast<float>(random_values(n, 21)), g = cast<float>(random_values(n, 22));
          for (float& v : x) v = 30.0f + 2.0f * v;
          const std::vector<float> gamma = cast<float>(random_values(affine, 23)),
                                   beta = cast<float>(random_values(affine, 24));
          std::vector<float> y(static_cast<std::size_t>(n)), dx(y.size()), dgamma(gamma.size()), dbeta(gamma.size());
          K::batch_norm_forward<float>(s, x.data(), gamma.data(), beta.data(), y.data());
          K::batch_norm_backward<float>(s, x.data(), gamma.data(), beta.data(), g.data(), dx.data(), dgamma.data(),
                                        dbeta.data());
          std::vector<double> dgamma_ref(gamma.size(), 0.0), dbeta_ref(gamma.size(), 0.0);
          double y_error = 0, dx_error = 0, dx_scale = 0;
          for (std::int64_t grp = 0; grp < s.groups; ++grp)
            for (std::int64_t c = 0; c < s.channels; ++c) {
              const auto at = [&](std::int64_t b, std::int64_t i) {
                return static_cast<std::size_t>(((grp * s.batch + b) * s.channels + c) * spatial + i);
              };
              const double count = static_cast<double>(s.batch * spatial);
              double mean = 0, var = 0;
              for (std::int64_t b = 0; b < s.batch; ++b)
                for (std::int64_t i = 0; i < spatial; ++i) mean += x[at(b, i)] / count;
              for (std::int64_t b = 0; b < s.batch; ++b)
                for (std::int64_t i = 0; i < spatial; ++i) var += (x[at(b, i)] - mean) * (x[at(b, i)] - mean) / count;
              const double rstd = 1.0 / std::sqrt(var + s.eps);
              const std::size_t a = static_cast<std::size_t>(per_group ? grp * s.channels + c : c);
              double sum_g = 0, sum_g_xhat = 0;  // of g masked by the ReLU
              const auto xhat = [&](std::int64_t b, std::int64_t i) { return (x[at(b, i)] - mean) * rstd; };
              const auto masked = [&](std::int64_t b, std::int64_t i) {
                return relu && xhat(b, i) * gamma[a] + beta[a] <= 0 ? 0.0 : static_cast<double>(g[at(b, i)]);
              };
              for (std::int64_t b = 0; b < s.batch; ++b)
                for (std::int64_t i = 0; i < spatial; ++i) {
                  const double pre = xhat(b, i) * gamma[a] + beta[a];
                  y_error = std::max(y_error, std::abs(y[at(b, i)] - (relu ? std::max(pre, 0.0) : pre)));
                  sum_g += masked(b, i);
                  sum_g_xhat += masked(b, i) * xhat(b, i);
                }
              dbeta_ref[a] += sum_g;
              dgamma_ref[a] += sum_g_xhat;
              for (std::int64_t b = 0; b < s.batch; ++b)
                for (std::int64_t i = 0; i < spatial; ++i) {
                  const double ref = gamma[a] * rstd * (masked(b, i) - sum_g / count - xhat(b, i) * sum_g_xhat / count);
                  dx_error = std::max(dx_error, std::abs(dx[at(b, i)] - ref));
                  dx_scale = std::max(dx_scale, std::abs(ref));
                }
            }
          CAPTURE(spatial);
          CAPTURE(relu);
          CAPTURE(per_group);
          CHECK(y_error < 1e-4);  // |y| ≲ 4; float's x · scale + shift at |x| = 30
          CHECK(dx_error < 1e-4 * dx_scale + 1e-6);
          for (std::size_t a = 0; a < gamma.size(); ++a) {
            CHECK(dbeta[a] == doctest::Approx(dbeta_ref[a]).epsilon(1e-5));
            CHECK(dgamma[a] == doctest::Approx(dgamma_ref[a]).epsilon(1e-4));
          }
        }
    // No values (an empty batch, or 0×0 maps): gamma's and beta's gradients are 0.
    for (const NormShape s : {NormShape{1, 0, 3, 4, false, 1e-3, true}, NormShape{1, 2, 3, 0, false, 1e-3, false}}) {
      const std::vector<float> gamma(3, 1.0f), beta(3, 0.0f);
      std::vector<float> dgamma(3, -7.0f), dbeta(3, -7.0f);
      K::batch_norm_backward<float>(s, nullptr, gamma.data(), beta.data(), nullptr, nullptr, dgamma.data(),
                                    dbeta.data());
      CHECK(dgamma == std::vector<float>(3, 0.0f));
      CHECK(dbeta == std::vector<float>(3, 0.0f));
    }
  }

  TEST_CASE("the fused ReLU: the forward's bits, then max(·, 0) with a NaN kept, on every path") {
    // 2 input channels (channels-first im2col) and 16 (the implicit GEMM),
    // stride 1 and 2, with and without a bias; x holds a NaN, so that some
    // outputs are NaN, and a zero image, whose outputs are exactly zero
    // without a bias.
    for (const std::int64_t channels : {2, 16})
      for (const std::int64_t stride : {1, 2})
        for (const bool with_bias : {true, false})
          for (const SmallGemmIsa isa : conv_isas()) {
            const metatape::kernels::cpu::ConvIsaScope scope(isa);
            INFO(channels, " channels, stride ", stride, ", bias ", with_bias, " on ",
                 std::string(metatape::kernels::cpu::small_gemm_isa_name(isa)));
            ConvShape s = shape(1, 5, channels, 7, 20, stride, 1);
            std::vector<float> x(static_cast<std::size_t>(s.images * s.in_channels * s.h * s.w));
            std::vector<float> w(static_cast<std::size_t>(s.out_channels * s.patch())), bias(20);
            std::mt19937 gen(7);
            std::uniform_real_distribution<float> u(-1.0f, 1.0f);
            for (float& v : x) v = u(gen);
            for (float& v : w) v = u(gen);
            for (float& v : bias) v = u(gen);
            x[3] = std::nanf("");
            std::fill(x.end() - s.in_channels * s.h * s.w, x.end(), 0.0f);  // the last image
            const float* b = with_bias ? bias.data() : nullptr;
            std::vector<float> plain(static_cast<std::size_t>(s.images * s.out_channels * s.pixels()));
            std::vector<float> fused(plain.size(), 7.0f);
            std::vector<float> scratch(static_cast<std::size_t>(K::conv_scratch_size(s)));
            K::conv2d_forward<float>(s, x.data(), w.data(), b, 0, plain.data(), scratch.data());
            s.relu = true;
            K::conv2d_forward<float>(s, x.data(), w.data(), b, 0, fused.data(), scratch.data());
            std::size_t nans = 0, zeros = 0, negatives = 0, differing = 0;
            for (std::size_t i = 0; i < plain.size(); ++i) {
              const float expected = plain[i] < 0.0f ? 0.0f : plain[i];  // scalar_math's relu
              nans += std::isnan(plain[i]) ? 1 : 0;
              zeros += plain[i] == 0.0f ? 1 : 0;
              negatives += plain[i] < 0.0f ? 1 : 0;
              differing += std::memcmp(&expected, &fused[i], sizeof(float)) != 0 ? 1 : 0;
            }
            CHECK(nans > 0);
            CHECK(negatives > 0);
            if (!with_bias) CHECK(zeros > 0);
            CHECK(differing == 0);
          }
  }

  TEST_CASE("no images: the outputs are written, the weight gradient is zero") {
    const ConvShape s = shape(2, 0, 8, 4, 4, 2, 1);
    const Operands in = operands(s, 3);
    const std::vector<float> dw = run<float>(s, in, ConvKind::weight_grad, 2);
    for (float v : dw) CHECK(v == 0.0f);
  }
}

}  // namespace
