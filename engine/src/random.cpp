#include "metatape/random.hpp"

#include <cmath>
#include <numbers>

#include "cpu_capture.hpp"
#include "metatape/error.hpp"

namespace metatape {
namespace {

// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
// 3", SC 2011): ten rounds of multiply-xor over a 128-bit counter.
std::array<std::uint32_t, 4> philox(std::array<std::uint32_t, 4> c, std::array<std::uint32_t, 2> k) {
  constexpr std::uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr std::uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const std::uint64_t p0 = std::uint64_t{kM0} * c[0];
    const std::uint64_t p1 = std::uint64_t{kM1} * c[2];
    c = {static_cast<std::uint32_t>(p1 >> 32) ^ c[1] ^ k[0], static_cast<std::uint32_t>(p1),
         static_cast<std::uint32_t>(p0 >> 32) ^ c[3] ^ k[1], static_cast<std::uint32_t>(p0)};
    k[0] += kW0;
    k[1] += kW1;
  }
  return c;
}

template <class T, class Draw>
Tensor fill_with(const Shape& shape, DType dtype, Draw draw) {
  if (!is_floating(dtype)) throw DTypeError(std::string("random tensors are f32 or f64, not ") + dtype_name(dtype));
  detail::refuse_in_cpu_capture("random number generation");
  Tensor out = empty(shape, dtype);
  T* p = out.data<T>();
  const std::int64_t n = out.numel();
  for (std::int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(draw());
  return out;
}

template <class Draw>
Tensor random_tensor(const Shape& shape, DType dtype, Draw draw) {
  if (dtype == DType::f64) return fill_with<double>(shape, dtype, draw);
  return fill_with<float>(shape, dtype, draw);
}

}  // namespace

Generator::Generator(std::uint64_t seed)
    : key_{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)} {}

void Generator::set_position(std::uint64_t position) {
  counter_ = position;
  if (counter_ % 4 != 0) refill();
}

void Generator::refill() {
  const std::uint64_t block = counter_ / 4;
  block_ = philox({static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32), 0u, 0u}, key_);
}

std::uint32_t Generator::next_u32() {
  if (counter_ % 4 == 0) refill();
  return block_[counter_++ % 4];
}

std::uint64_t Generator::next_u64() {
  const std::uint64_t lo = next_u32();
  return lo | (std::uint64_t{next_u32()} << 32);
}

double Generator::uniform01() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

double Generator::normal() {
  // Box-Muller with u1 in (0, 1] so the logarithm is finite.
  const double u1 = 1.0 - uniform01();
  const double u2 = uniform01();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

std::int64_t Generator::below(std::int64_t n) {
  if (n <= 0) throw ValueError("Generator::below: n must be positive, got " + std::to_string(n));
  const std::uint64_t range = static_cast<std::uint64_t>(n);
  const std::uint64_t threshold = (0 - range) % range;  // 2^64 mod n: reject below it
  std::uint64_t r;
  do r = next_u64();
  while (r < threshold);
  return static_cast<std::int64_t>(r % range);
}

Tensor uniform(const Shape& shape, double low, double high, Generator& gen, DType dtype) {
  if (!(low <= high)) throw ValueError("uniform: low " + std::to_string(low) + " exceeds high " + std::to_string(high));
  return random_tensor(shape, dtype, [&] { return low + (high - low) * gen.uniform01(); });
}

Tensor normal(const Shape& shape, double mean, double stddev, Generator& gen, DType dtype) {
  if (!(stddev >= 0)) throw ValueError("normal: stddev must be >= 0, got " + std::to_string(stddev));
  return random_tensor(shape, dtype, [&] { return mean + stddev * gen.normal(); });
}

Tensor truncated_normal(const Shape& shape, double mean, double stddev, Generator& gen, DType dtype, double low,
                        double high) {
  if (!(stddev >= 0)) throw ValueError("truncated_normal: stddev must be >= 0, got " + std::to_string(stddev));
  // Rejection keeps the exact truncated law; insisting on a window holding at
  // least ~1% of the mass keeps the expected number of redraws small.
  const double mass = 0.5 * (std::erf(high / std::numbers::sqrt2) - std::erf(low / std::numbers::sqrt2));
  if (!(low < high) || mass < 0.01)
    throw ValueError("truncated_normal: the window [" + std::to_string(low) + ", " + std::to_string(high) +
                     "] standard deviations holds too little probability (need >= 1%)");
  return random_tensor(shape, dtype, [&] {
    double z;
    do z = gen.normal();
    while (z < low || z > high);
    return mean + stddev * z;
  });
}

Tensor permutation(std::int64_t n, Generator& gen) {
  if (n < 0) throw ValueError("permutation: n must be >= 0, got " + std::to_string(n));
  detail::refuse_in_cpu_capture("random number generation");
  Tensor out = empty(Shape{n}, DType::i64);
  std::int64_t* p = out.data<std::int64_t>();
  for (std::int64_t i = 0; i < n; ++i) p[i] = i;
  for (std::int64_t i = n - 1; i > 0; --i) {
    const std::int64_t j = gen.below(i + 1);
    std::swap(p[i], p[j]);
  }
  return out;
}

}  // namespace metatape
