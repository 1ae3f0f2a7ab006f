// Internal: allocation of tensor storage from the thread's pool.
#pragma once

#include <cstddef>

#include "metatape/tensor.hpp"

namespace metatape::detail {

// A block of at least `bytes` (refcount 1) on `device`. `dtype` only chooses
// the poison pattern when poisoning is on. Throws std::bad_alloc, ValueError,
// or DeviceError for a device this build or machine cannot use.
Storage* allocate_storage(std::size_t bytes, DType dtype, Device device = Device::cpu);

}  // namespace metatape::detail
