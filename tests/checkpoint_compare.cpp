// checkpoint-compare A B TOLERANCE: exits 0 when the two checkpoints hold
// the same run state (iteration, task stream, tensor shapes and dtypes, step
// count) and every parameter and optimiser-state entry agrees to TOLERANCE
// relative to the larger magnitude of the tensor it is in; prints the largest
// relative difference. For results that may differ by rounding only (the
// fast reduction under mpirun); `cmp` is the test for identical bits.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "metatape/meta/checkpoint.hpp"

namespace {

using metatape::Tensor;

// max |a - b| / max(max |a|, max |b|) over one tensor; -1 when they differ
// in shape or dtype.
double relative_difference(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return -1;
  const std::vector<double> x = a.to_vector(), y = b.to_vector();
  double scale = 0, worst = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    scale = std::max({scale, std::fabs(x[i]), std::fabs(y[i])});
    worst = std::max(worst, std::fabs(x[i] - y[i]));
  }
  return scale > 0 ? worst / scale : worst;
}

// The largest relative difference over two lists of tensors, or -1.
double largest_difference(const std::vector<Tensor>& a, const std::vector<Tensor>& b, const char* what) {
  if (a.size() != b.size()) {
    std::fprintf(stderr, "%s: %zu tensors against %zu\n", what, a.size(), b.size());
    return -1;
  }
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = relative_difference(a[i], b[i]);
    if (d < 0 || !std::isfinite(d)) {
      std::fprintf(stderr, "%s[%zu]: shapes %s and %s (or non-finite values)\n", what, i, a[i].shape().str().c_str(),
                   b[i].shape().str().c_str());
      return -1;
    }
    worst = std::max(worst, d);
  }
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s A B TOLERANCE\n", argv[0]);
    return 2;
  }
  try {
    const metatape::meta::Checkpoint a = metatape::meta::load_checkpoint(argv[1]);
    const metatape::meta::Checkpoint b = metatape::meta::load_checkpoint(argv[2]);
    const double tolerance = std::strtod(argv[3], nullptr);
    if (a.iteration != b.iteration || a.task_rng_position != b.task_rng_position ||
        a.optimizer_steps != b.optimizer_steps) {
      std::fprintf(stderr, "different run states: iteration %lld/%lld, task stream %llu/%llu\n",
                   static_cast<long long>(a.iteration), static_cast<long long>(b.iteration),
                   static_cast<unsigned long long>(a.task_rng_position),
                   static_cast<unsigned long long>(b.task_rng_position));
      return 1;
    }
    const double params = largest_difference(a.params, b.params, "params");
    const double state = largest_difference(a.optimizer_state, b.optimizer_state, "optimizer state");
    if (params < 0 || state < 0) return 1;
    std::printf("largest relative difference: parameters %.3g, optimiser state %.3g\n", params, state);
    return std::max(params, state) <= tolerance ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
}
