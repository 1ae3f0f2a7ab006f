// Explicit, seeded random generators. The same seed gives the same bits on
// every CPU: the generator is Philox4x32-10 (a counter-based generator, the
// one cuRAND and JAX use), and the transforms to real distributions are
// written out here rather than taken from <random>, whose distributions
// differ between standard libraries.
#pragma once

#include <array>
#include <cstdint>

#include "metatape/tensor.hpp"

namespace metatape {

class Generator {
 public:
  explicit Generator(std::uint64_t seed = 0);

  std::uint64_t seed() const { return key_[0] | (std::uint64_t{key_[1]} << 32); }
  // The stream position; two generators with equal seed and position produce
  // the same values. Saved in checkpoints.
  std::uint64_t position() const { return counter_; }
  void set_position(std::uint64_t position);

  std::uint32_t next_u32();
  std::uint64_t next_u64();
  double uniform01();                  // [0, 1), 53 random bits
  double normal();                     // standard normal (Box-Muller)
  std::int64_t below(std::int64_t n);  // uniform integer in [0, n), unbiased

 private:
  void refill();
  std::array<std::uint32_t, 2> key_{};
  std::uint64_t counter_ = 0;             // 32-bit words handed out so far
  std::array<std::uint32_t, 4> block_{};  // the current Philox output block
};

// Tensors of independent draws, in row-major order.
Tensor uniform(const Shape& shape, double low, double high, Generator& gen, DType dtype = DType::f32);
Tensor normal(const Shape& shape, double mean, double stddev, Generator& gen, DType dtype = DType::f32);
// Normal draws redrawn until they fall in [mean + low·stddev, mean + high·stddev]
// (the default ±2 standard deviations is TensorFlow's truncated_normal).
Tensor truncated_normal(const Shape& shape, double mean, double stddev, Generator& gen, DType dtype = DType::f32,
                        double low = -2.0, double high = 2.0);
// A random permutation of 0..n-1 (Fisher-Yates), as i64.
Tensor permutation(std::int64_t n, Generator& gen);

}  // namespace metatape
