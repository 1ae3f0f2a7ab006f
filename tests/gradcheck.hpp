// Finite-difference checks of derivatives, the way PyTorch's gradcheck and
// gradgradcheck do them, with Stan Math's habit of one short test per
// function through shared helpers.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "metatape/engine.hpp"
#include "metatape/registry.hpp"

namespace metatape::testing {

// A function under test: inputs to outputs (any shapes).
using Function = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;

struct GradcheckOptions {
  double eps = 1e-6;   // central-difference step
  double atol = 1e-5;  // |analytic - numeric| <= atol + rtol |numeric|
  double rtol = 1e-3;
  // Fast (u, v) mode for large shapes: compare vᵀ(J u) by one central
  // difference with (vᵀJ) u by one backward, for `probes` random pairs,
  // instead of the full Jacobian.
  bool fast = false;
  int probes = 3;
};

struct CheckResult {
  bool ok = true;
  std::string message;  // the first mismatch, readable
  int entries = 0;      // Jacobian entries (or probes) compared
};

// Checks the gradient of f with respect to every input marked in
// `differentiable` (float64 inputs). Gradient buffers are poisoned with inf
// while the analytic Jacobian is computed, so an unwritten entry fails.
CheckResult gradcheck(const Function& f, const std::vector<Tensor>& inputs, const std::vector<bool>& differentiable,
                      const GradcheckOptions& options = {});

// gradcheck of (x, v) ↦ vᵀ J_f(x), the first backward recorded with
// create_graph, over both x and v: checks the second derivatives.
CheckResult gradgradcheck(const Function& f, const std::vector<Tensor>& inputs, const std::vector<bool>& differentiable,
                          const GradcheckOptions& options = {});

// A registry sample as a Function with one output, and the options to check
// it with (its own finite-difference step, where it sets one).
Function as_function(const OpSample& sample);
GradcheckOptions options_for(const OpSample& sample, GradcheckOptions base = {});

}  // namespace metatape::testing
