// Test hook: the op registry, every public op with sample calls on random
// inputs. Not for applications, and not part of <metatape/engine.hpp>.
//
// It ships in the library on purpose: the samples are written beside each
// op's forward and backward (OpDef::samples), and the test suite loops over
// this list, so an op is gradchecked to second order, and compared across
// backends, the moment it is added to the registry, with no test to write
// and none to forget.
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
