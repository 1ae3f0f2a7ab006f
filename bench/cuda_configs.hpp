// The GPU MAML configurations, declared once for bench-cuda and
// bench-cuda-kernels; bench/peers/configs.py names the same four for the
// PyTorch and JAX peers (the names must match: report.py joins on them).
#pragma once

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "maml_setups.hpp"

namespace bench {

struct CudaMamlConfig {
  std::string name;
  std::function<MamlSetup()> setup;
  int repeats_divisor;  // the Conv4 steps take tens of ms: fewer repeats
  int repeats(int requested) const { return std::max(5, requested / repeats_divisor); }
};

inline std::vector<CudaMamlConfig> cuda_maml_configs() {
  using metatape::DType;
  return {
      {"sinusoid mlp, 25 tasks, K=10, 1 step", [] { return sinusoid_setup(1, false, true, DType::f32); }, 1},
      {"sinusoid mlp, 25 tasks, K=10, 5 steps", [] { return sinusoid_setup(5, false, true, DType::f32); }, 1},
      {"conv4 28x28 64ch, 5-way 1-shot, 15 queries, 32 tasks, 1 step",
       [] { return conv4_setup(false, true, DType::f32, 32, 1); }, 5},
      {"conv4 84x84x3 32ch, 5-way 1-shot, 15 queries, 4 tasks, 5 steps",
       [] { return conv4_setup(false, true, DType::f32, 4, 5, {.in_channels = 3, .image_size = 84, .channels = 32}); },
       5},
  };
}

}  // namespace bench
