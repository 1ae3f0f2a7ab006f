// metatape's engine in one include: tensors, ops, the tape and grad().
#pragma once

#include "metatape/captured_step.hpp"
#include "metatape/error.hpp"
#include "metatape/functional.hpp"
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

// Let float32 matrix products on the GPU use TF32 (faster on Ampere and
// later; about 1e-3 relative error). Off by default; no effect on the CPU or
// in a build without the CUDA backend.
void set_allow_tf32(bool allow);
bool allow_tf32();

}  // namespace metatape
