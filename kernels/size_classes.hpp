// The size classes of the memory pools, shared by CPU storage
// (engine/src/storage.cpp) and device memory (kernels/cuda/runtime.cu): four
// classes per power of two above the smallest block of 2^MinLog2 bytes, so
// rounding up wastes at most a quarter of a block.
//
//   class 0: 2^MinLog2 bytes; then for each p >= MinLog2 the four classes
//   2^p + s * 2^(p-2), s = 1..4, with indices (p - MinLog2) * 4 + s.
#pragma once

#include <bit>
#include <cstddef>

namespace metatape::kernels {

// Rounds `bytes` up to its class's size (into *rounded); returns the class.
template <int MinLog2>
constexpr int size_class_of(std::size_t bytes, std::size_t* rounded) {
  if (bytes <= (std::size_t{1} << MinLog2)) {
    *rounded = std::size_t{1} << MinLog2;
    return 0;
  }
  const int p = std::bit_width(bytes - 1) - 1;  // 2^p < bytes <= 2^(p+1), p >= MinLog2
  const std::size_t step = std::size_t{1} << (p - 2);
  const std::size_t sub = (bytes - (std::size_t{1} << p) + step - 1) / step;  // 1..4
  *rounded = (std::size_t{1} << p) + sub * step;
  return (p - MinLog2) * 4 + static_cast<int>(sub);
}

// The bytes of class c: the inverse of size_class_of.
template <int MinLog2>
constexpr std::size_t class_bytes(int c) {
  if (c == 0) return std::size_t{1} << MinLog2;
  const int p = (c - 1) / 4 + MinLog2, sub = (c - 1) % 4 + 1;
  return (std::size_t{1} << p) + static_cast<std::size_t>(sub) * (std::size_t{1} << (p - 2));
}

namespace size_class_checks {
constexpr bool round_trips(std::size_t bytes) {
  std::size_t rounded = 0;
  const int c = size_class_of<6>(bytes, &rounded);
  return rounded >= bytes && class_bytes<6>(c) == rounded && rounded - bytes < rounded / 4 + 64;
}
static_assert(round_trips(1) && round_trips(64) && round_trips(65) && round_trips(100) && round_trips(128) &&
              round_trips(129) && round_trips(1000) && round_trips(4096) && round_trips((std::size_t{1} << 40) + 1));
}  // namespace size_class_checks

}  // namespace metatape::kernels
