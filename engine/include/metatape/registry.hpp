// The op registry, as the tests and benchmarks see it: every public op, with
// random sample calls. The test suite loops over this list, so an op is
// gradchecked to second order the moment it is added here.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <vector>

#include "metatape/random.hpp"
#include "metatape/tensor.hpp"

namespace metatape {

// One call of an op on random inputs.
struct OpSample {
  std::string label;                 // what the case exercises: "broadcast [3,1] by [4]"
  std::vector<Tensor> inputs;        // the tensors the call reads
  std::vector<bool> differentiable;  // which inputs a gradcheck perturbs (not index tensors)
  std::function<Tensor(const std::vector<Tensor>&)> call;
  // Finite-difference step for gradcheck; 0 means its default. Only the f32
  // round trip of `to` needs one (a power of two that f32 represents exactly).
  double fd_step = 0;
};

enum class OpKind {
  primitive,  // has its own backward rule
  composite,  // written with other ops; differentiated through them
};

struct OpInfo {
  const char* name;
  OpKind kind;
  // Sample calls on inputs of `dtype` (f32 or f64) drawn from `gen`.
  std::vector<OpSample> (*samples)(Generator& gen, DType dtype);
};

// Every op, primitives first.
std::span<const OpInfo> op_registry();

}  // namespace metatape
