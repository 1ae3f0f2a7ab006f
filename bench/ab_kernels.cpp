// Two builds of the CPU kernels side by side in one process:
//
//   build/bench/bench-ab-kernels OLD/libmetatape.so.0 NEW/libmetatape.so.0 [ROUNDS]
//
// Both libraries are loaded with dlmopen, each in its own link-map
// namespace (so each keeps its own thread pool and instruction-set choice),
// set to one thread, and each kernel call below is timed in rounds that
// alternate between them: a batch of calls on one, then the same on the
// other. On a shared VM whose speed drifts by ±30% within seconds, the
// ratio of two builds timed this close together moves far less than either
// time; the table gives each build's median per-call time and the median
// and interquartile range of the per-round ratios, new over old. It also
// says whether the two outputs are the same bits.
//
// The shapes are the sinusoid MLP's task-batched step (25 tasks, K = 10,
// widths 1-40-40-1): its products, and the element loops on its
// [25, 10, 40] and [25, 40, 40] tensors; and Conv4's 2×2 max-pooling and
// its adjoint on each map size.
//
// The kernels are found by their C++ (Itanium ABI) symbol names, which
// follow from their declarations in kernels/cpu/gemm.hpp and
// kernels/cpu/kernels.hpp; a library whose declarations differ is refused
// with the missing name.
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernels/types.hpp"

namespace {

using metatape::kernels::BinaryOp;
using GemmBatched = void (*)(bool, bool, std::int64_t, std::int64_t, std::int64_t, const float*, std::int64_t,
                             const float*, std::int64_t, float*, std::int64_t, std::int64_t);
using SumTo = void (*)(int, const std::int64_t*, const float*, const std::int64_t*, float*);
using Binary = void (*)(BinaryOp, int, const std::int64_t*, const float*, const std::int64_t*, const float*,
                        const std::int64_t*, float*);
using StridedCopy = void (*)(int, const std::int64_t*, const float*, const std::int64_t*, float*);
using MaxPool = void (*)(const float*, std::int64_t, std::int64_t, std::int64_t, const metatape::kernels::Window2d&,
                         float*, std::int64_t*);
using MaxUnpool = void (*)(const float*, const std::int64_t*, std::int64_t, std::int64_t, std::int64_t,
                           const metatape::kernels::Window2d&, float*);
using SetThreads = void (*)(int);

struct Build {
  GemmBatched gemm_batched;
  SumTo sum_to;
  Binary binary;
  StridedCopy strided_copy;
  MaxPool max_pool;
  MaxUnpool max_unpool;
};

template <class F>
F symbol(void* library, const char* path, const char* name) {
  void* address = dlsym(library, name);
  if (address == nullptr) {
    std::fprintf(stderr, "bench-ab-kernels: %s has no symbol %s\n", path, name);
    std::exit(2);
  }
  return reinterpret_cast<F>(address);
}

Build load(const char* path) {
  void* library = dlmopen(LM_ID_NEWLM, path, RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    std::fprintf(stderr, "bench-ab-kernels: cannot load %s: %s\n", path, dlerror());
    std::exit(2);
  }
  symbol<SetThreads>(library, path, "_ZN8metatape7kernels3cpu11set_threadsEi")(1);
  return {symbol<GemmBatched>(library, path, "_ZN8metatape7kernels3cpu12gemm_batchedIfEEvbblllPKT_lS5_lPS3_ll"),
          symbol<SumTo>(library, path, "_ZN8metatape7kernels3cpu6sum_toIfEEviPKlPKT_S4_PS5_"),
          symbol<Binary>(library, path, "_ZN8metatape7kernels3cpu6binaryIfEEvNS0_8BinaryOpEiPKlPKT_S5_S8_S5_PS6_"),
          symbol<StridedCopy>(library, path, "_ZN8metatape7kernels3cpu12strided_copyIfEEviPKlPKT_S4_PS5_"),
          symbol<MaxPool>(library, path, "_ZN8metatape7kernels3cpu8max_poolIfEEvPKT_lllRKNS0_8Window2dEPS3_Pl"),
          symbol<MaxUnpool>(library, path, "_ZN8metatape7kernels3cpu10max_unpoolIfEEvPKT_PKllllRKNS0_8Window2dEPS3_")};
}

// One kernel call on `build`, writing `out`.
struct Case {
  std::string name;
  std::function<void(const Build& build, float* out)> call;
};

std::vector<Case> cases(const std::vector<float>& x, const std::vector<float>& y) {
  std::vector<Case> list;
  struct Product {
    bool ta, tb;
    std::int64_t m, n, k;
  };
  // The step's products, each over the 25 tasks' matrices.
  for (const Product p :
       {Product{false, false, 10, 40, 40}, Product{false, true, 10, 40, 40}, Product{true, false, 40, 40, 10},
        Product{false, false, 10, 1, 40}, Product{false, false, 10, 40, 1}, Product{false, true, 10, 40, 1},
        Product{true, false, 1, 40, 10}, Product{true, false, 40, 1, 10}}) {
    const std::string name = std::string(p.ta ? "t" : "n") + (p.tb ? "t" : "n") + " product " + std::to_string(p.m) +
                             "x" + std::to_string(p.n) + "x" + std::to_string(p.k) + ", x25";
    list.push_back({name, [&x, &y, p](const Build& b, float* out) {
                      b.gemm_batched(p.ta, p.tb, p.m, p.n, p.k, x.data(), p.m * p.k, y.data(), p.k * p.n, out,
                                     p.m * p.n, 25);
                    }});
  }
  static const std::int64_t small[] = {25, 10, 40}, small_row[] = {25, 1, 40}, big[] = {25, 40, 40};
  static const std::int64_t small_strides[] = {400, 40, 1}, row_strides[] = {40, 0, 1}, bias_strides[] = {0, 0, 1},
                            big_strides[] = {1600, 40, 1}, shared_strides[] = {0, 40, 1};
  list.push_back({"sum_to [25,10,40] -> [25,1,40]",
                  [&x](const Build& b, float* out) { b.sum_to(3, small, x.data(), small_row, out); }});
  list.push_back({"add [25,10,40] + [25,1,40]", [&x, &y](const Build& b, float* out) {
                    b.binary(BinaryOp::add, 3, small, x.data(), small_strides, y.data(), row_strides, out);
                  }});
  list.push_back({"add [25,10,40] + [40]", [&x, &y](const Build& b, float* out) {
                    b.binary(BinaryOp::add, 3, small, x.data(), small_strides, y.data(), bias_strides, out);
                  }});
  list.push_back({"add [25,10,40] + [25,10,40]", [&x, &y](const Build& b, float* out) {
                    b.binary(BinaryOp::add, 3, small, x.data(), small_strides, y.data(), small_strides, out);
                  }});
  list.push_back({"sub [40,40] - [25,40,40]", [&x, &y](const Build& b, float* out) {
                    b.binary(BinaryOp::sub, 3, big, x.data(), shared_strides, y.data(), big_strides, out);
                  }});
  list.push_back({"expand [25,1,40] -> [25,10,40]",
                  [&x](const Build& b, float* out) { b.strided_copy(3, small, x.data(), row_strides, out); }});
  list.push_back({"expand [40,40] -> [25,40,40]",
                  [&x](const Build& b, float* out) { b.strided_copy(3, big, x.data(), shared_strides, out); }});
  // Conv4's 2×2 max-pooling of 75 query images × 64 channels, each map
  // size it pools, and its adjoint: the maxima, then their int64 indices,
  // in `out`; the adjoint's g and indices from a first pooling.
  static const metatape::kernels::Window2d pool{2, 2, 2, 2, 0, 0};
  constexpr std::int64_t planes = 75 * 64;
  for (const std::int64_t size : {28, 14, 7}) {
    const std::int64_t pooled = planes * (size / 2) * (size / 2);
    const std::string shape = "[4800," + std::to_string(size) + "," + std::to_string(size) + "]";
    list.push_back({"max_pool 2x2 " + shape, [&x, size, pooled](const Build& b, float* out) {
                      b.max_pool(x.data(), planes, size, size, pool, out,
                                 reinterpret_cast<std::int64_t*>(out + pooled));
                    }});
    list.push_back({"max_unpool 2x2 " + shape, [&x, &y, size, pooled](const Build& b, float* out) {
                      static std::vector<std::int64_t> index;
                      static std::int64_t indexed = 0;
                      if (indexed != size) {  // the indices of a pooling of x, once per size
                        index.assign(static_cast<std::size_t>(pooled), 0);
                        std::vector<float> maxima(static_cast<std::size_t>(pooled));
                        b.max_pool(x.data(), planes, size, size, pool, maxima.data(), index.data());
                        indexed = size;
                      }
                      b.max_unpool(y.data(), index.data(), planes, size, size, pool, out);
                    }});
  }
  return list;
}

double median(std::vector<double> v, double quantile = 0.5) {
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(quantile * static_cast<double>(v.size() - 1) + 0.5)];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s OLD/libmetatape.so.0 NEW/libmetatape.so.0 [ROUNDS]\n", argv[0]);
    return 2;
  }
  const int rounds = argc > 3 ? std::atoi(argv[3]) : 41;
  if (rounds < 1) {
    std::fprintf(stderr, "bench-ab-kernels: ROUNDS must be a positive integer, got %s\n", argv[3]);
    return 2;
  }
  const Build builds[2] = {load(argv[1]), load(argv[2])};
  // Operands for the largest case (Conv4's 4800 maps of 28 x 28), values in
  // [-3, 3) with ties.
  std::vector<float> x(4800 * 28 * 28), y(4800 * 28 * 28);
  for (std::size_t i = 0; i < x.size(); ++i) {
    x[i] = 0.053f * static_cast<float>(i % 113) - 3.0f;
    y[i] = 0.083f * static_cast<float>(i % 71) - 3.0f;
  }
  std::vector<float> out[2] = {std::vector<float>(x.size()), std::vector<float>(x.size())};
  std::printf(
      "%d rounds; per call: old and new medians (us), new/old ratio median [interquartile range], "
      "same bits\n",
      rounds);
  for (const Case& c : cases(x, y)) {
    for (int w = 0; w < 2; ++w) c.call(builds[w], out[w].data());
    const bool same = std::memcmp(out[0].data(), out[1].data(), out[0].size() * sizeof(float)) == 0;
    // Calls per timed batch: about 1 ms of work.
    const auto start = std::chrono::steady_clock::now();
    c.call(builds[0], out[0].data());
    const double once = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const int calls = std::clamp(static_cast<int>(1e-3 / std::max(once, 1e-7)), 10, 2000);
    std::vector<double> time[2], ratio;
    for (int r = 0; r < rounds; ++r) {
      double t[2];
      for (int w = 0; w < 2; ++w) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < calls; ++i) c.call(builds[w], out[w].data());
        t[w] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / calls;
        time[w].push_back(t[w]);
      }
      ratio.push_back(t[1] / t[0]);
    }
    std::printf("%-34s %9.3f %9.3f   %.3f [%.3f, %.3f]   %s\n", c.name.c_str(), median(time[0]) * 1e6,
                median(time[1]) * 1e6, median(ratio), median(ratio, 0.25), median(ratio, 0.75), same ? "yes" : "no");
  }
  return 0;
}
