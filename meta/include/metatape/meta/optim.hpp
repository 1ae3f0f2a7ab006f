// Outer optimisers and gradient clipping. Updates run without recording and
// replace the parameter tensors (values are never changed in place, so a
// tensor held elsewhere keeps its value).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "metatape/engine.hpp"

namespace metatape::meta {

// The shape and dtype of one tensor, without its values.
struct TensorSpec {
  Shape shape;
  DType dtype = DType::f32;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // params[i] ← update(params[i], grads[i]); shapes must match. Replaces
  // the handles in `params` and in the state with new tensors, never writes
  // into the old ones: a caller that kept them can roll a step back.
  virtual void step(std::vector<Tensor>& params, const std::vector<Tensor>& grads) = 0;
  // The state to checkpoint (moment tensors) and the number of steps taken.
  virtual std::vector<Tensor> state() const = 0;
  virtual std::int64_t steps() const = 0;
  virtual void load_state(const std::vector<Tensor>& state, std::int64_t steps) = 0;
  // What state() holds after `steps` steps on `params`, so that a saved state
  // can be checked before it is loaded.
  virtual std::vector<TensorSpec> state_layout(const std::vector<Tensor>& params, std::int64_t steps) const = 0;
  virtual std::string describe() const = 0;
};

// θ ← θ − lr · g.
class Sgd final : public Optimizer {
 public:
  explicit Sgd(double lr);
  void step(std::vector<Tensor>& params, const std::vector<Tensor>& grads) override;
  std::vector<Tensor> state() const override { return {}; }
  std::int64_t steps() const override { return steps_; }
  void load_state(const std::vector<Tensor>& state, std::int64_t steps) override;
  std::vector<TensorSpec> state_layout(const std::vector<Tensor>&, std::int64_t) const override { return {}; }
  std::string describe() const override;

 private:
  double lr_;
  std::int64_t steps_ = 0;
};

// Adam (Kingma & Ba 2015) with bias correction, written as PyTorch does:
//   m ← β1 m + (1 − β1) g,  v ← β2 v + (1 − β2) g²,
//   θ ← θ − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε).
class Adam final : public Optimizer {
 public:
  explicit Adam(double lr, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8);
  void step(std::vector<Tensor>& params, const std::vector<Tensor>& grads) override;
  std::vector<Tensor> state() const override;  // m..., then v...
  std::int64_t steps() const override { return steps_; }
  void load_state(const std::vector<Tensor>& state, std::int64_t steps) override;
  // Empty before the first step (the moments are created by it), else m and
  // v shaped as each parameter.
  std::vector<TensorSpec> state_layout(const std::vector<Tensor>& params, std::int64_t steps) const override;
  std::string describe() const override;

 private:
  double lr_, beta1_, beta2_, eps_;
  std::int64_t steps_ = 0;
  std::vector<Tensor> m_, v_;
};

// The optimisers make_optimizer knows, by name.
inline constexpr const char* kOptimizerNames[] = {"adam", "sgd"};
// One of kOptimizerNames; throws ValueError naming the choices otherwise.
std::unique_ptr<Optimizer> make_optimizer(const std::string& name, double lr);

// √(Σ_i ‖g_i‖²).
double global_norm(const std::vector<Tensor>& grads);
// Scales the gradients so that their global norm is at most max_norm (as
// torch.nn.utils.clip_grad_norm_); returns the norm before clipping.
double clip_grad_norm(std::vector<Tensor>& grads, double max_norm);

}  // namespace metatape::meta
