// Internal: allocation of tensor storage from the thread's pool.
#pragma once

#include <cstddef>

#include "metatape/tensor.hpp"

namespace metatape::detail {

// A block of at least `bytes` (refcount 1). `dtype` only chooses the poison
// pattern when poisoning is on. Throws std::bad_alloc or ValueError.
Storage* allocate_storage(std::size_t bytes, DType dtype);

}  // namespace metatape::detail
