// metatape's engine in one include: tensors, ops, the tape and grad().
#pragma once

#include "metatape/error.hpp"
#include "metatape/ops.hpp"
#include "metatape/random.hpp"
#include "metatape/shape.hpp"
#include "metatape/tape.hpp"
#include "metatape/tensor.hpp"

namespace metatape {

// Threads the CPU matrix products may use (OpenBLAS); the rest of the engine
// is single-threaded per tape.
void set_num_threads(int threads);
int num_threads();

}  // namespace metatape
