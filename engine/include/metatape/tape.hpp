// Reverse-mode autodiff of any order on a tape.
//
// Each thread has one tape, a Wengert list: every recorded op appends a node
// (op, inputs, saved values, outputs) in creation order, and grad() walks the
// nodes in reverse. An op is recorded when grad mode is on and any input is a
// live variable (a tensor marked requires_grad_(), or the output of a
// recorded op). Backward rules are written with the same ops, so grad() with
// create_graph records the backward too and its result can be differentiated
// again, to any order.
//
//   Tensor x = from_vector({0.5}, {}, DType::f64);
//   x.requires_grad_();
//   Tensor y = tanh(x * 3.0);
//   Tensor dy = grad(y, x, {.create_graph = true});   // 3 (1 - y^2)
//   Tensor d2y = grad(dy, x);                          // -18 y (1 - y^2)
//
// Memory: the tape keeps nodes and their saved values until a TapeScope that
// was open when they were recorded closes. Open one per training step.
#pragma once

#include <cstddef>
#include <vector>

#include "metatape/tensor.hpp"

namespace metatape {

struct GradOptions {
  // Record the backward pass, so the gradients are themselves differentiable.
  // Without it the backward runs on raw tensors and records nothing.
  bool create_graph = false;
  // Give an input that the outputs do not depend on a zero gradient instead
  // of throwing GradError.
  bool allow_unused = false;
  // Keep the values the walked nodes saved for their backward rules, so the
  // same part of the tape can be differentiated again. With false, each
  // node's saved values are freed as soon as its rule has run (PyTorch's
  // retain_graph=False): a last backward then peaks at the forward's memory
  // rather than forward plus gradients, and walking those nodes again throws
  // GradError. Unlike PyTorch the default is to keep them: a TapeScope
  // decides when recorded values go.
  bool retain_graph = true;
};

// d(Σ_j <seed_j, outputs_j>)/d inputs_i for each input i. `seeds` may be empty
// if every output has one element (then the seed is 1); otherwise it holds
// one tensor per output, shaped like it. Throws GradError if an output or an
// input is not a live variable of this thread's tape, if a non-scalar output
// has no seed, or if an input is unreachable (unless allow_unused).
std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& seeds = {}, const GradOptions& options = {});
// One output (one element), one input.
Tensor grad(const Tensor& output, const Tensor& input, const GradOptions& options = {});
// One output, several inputs.
std::vector<Tensor> grad(const Tensor& output, const std::vector<Tensor>& inputs, const GradOptions& options = {});

// Everything recorded while a scope is open is released when it closes
// (destruction, in reverse order of opening). Tensors recorded inside it
// keep their values, but using them in a recorded op or in grad() afterwards
// throws GradError: detach() them to keep them as constants.
class TapeScope {
 public:
  TapeScope();
  ~TapeScope();
  TapeScope(const TapeScope&) = delete;
  TapeScope& operator=(const TapeScope&) = delete;

 private:
  std::size_t nodes_, vars_, inputs_, saved_;
};

// While one is open, ops record nothing (like torch.no_grad()).
class NoGradScope {
 public:
  NoGradScope();
  ~NoGradScope();
  NoGradScope(const NoGradScope&) = delete;
  NoGradScope& operator=(const NoGradScope&) = delete;

 private:
  bool previous_;
};

bool grad_enabled();

// Sizes of this thread's tape, for tests and memory studies.
struct TapeStats {
  std::size_t nodes = 0;
  std::size_t variables = 0;
};
TapeStats tape_stats();

}  // namespace metatape
