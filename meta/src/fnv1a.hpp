// Internal: FNV-1a, the one 64-bit hash of libmetatape-meta: fixed and
// portable (the same on every host, unlike std::hash), so that checkpoints
// written on one machine check on another and ranks on different hosts
// compare configurations. Not for adversaries: a checksum, not a digest.
#pragma once

#include <cstdint>
#include <string_view>

namespace metatape::meta::detail {

inline std::uint64_t fnv1a(std::string_view bytes) {
  std::uint64_t h = 14695981039346656037ull;  // the offset basis
  for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ull;
  return h;
}

}  // namespace metatape::meta::detail
