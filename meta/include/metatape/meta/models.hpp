// Models as pure functions of explicit parameters: forward(params, x). The
// inner loop adapts a copy of the parameters per task, so a model never
// owns its weights.
//
// Task batching: x carries a leading task axis, x [T, n, ...]. Each
// parameter is either shared by all tasks (its base shape, as in
// parameters()) or per task ([T] + base shape, as after an inner step). The
// forward pass accepts any mix, which is what lets a whole meta-batch, and
// ANIL's shared body with per-task heads, run as one recorded graph. A single
// task may also come without the task axis (x [n, ...], every parameter in
// its base shape): the output then has none either.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "metatape/engine.hpp"

namespace metatape::meta {

struct ParamInfo {
  std::string name;  // "w1", "b1", ...
  Shape shape;       // the shared (base) shape
  int layer;         // 0-based; parameters of one layer share a learned rate (LSLR)
};

// A forward pass recorded layer by layer, for a model whose parameters all
// sit in dense layers z = s · a W + b (per example: a [in], W [in, out],
// b [out], z [out]) and whose examples do not interact. It lets the
// empirical NTK use Θ_W(i, j) = s² (aᵢ·aⱼ)(δᵢ·δⱼ) and Θ_b(i, j) = δᵢ·δⱼ with
// δ = ∂f_c/∂z, one backward per output, never forming a per-example weight
// gradient (ntk.hpp, docs/methods.md §5).
struct DenseLayer {
  Tensor input;            // a [T, n, in], as recorded
  Tensor preactivation;    // z [T, n, out], as recorded: the output depends on the layer's parameters only through it
  double scale = 1;        // s (1/√in in the NTK parameterisation)
  std::size_t weight = 0;  // index of W in parameters()
  std::optional<std::size_t> bias;  // index of b, if the layer has one
};
struct DenseTape {
  std::vector<DenseLayer> layers;  // in forward order
  Tensor output;                   // [T, n, outputs], what forward() returns
};

class Model {
 public:
  virtual ~Model() = default;
  virtual const std::vector<ParamInfo>& parameters() const = 0;
  // Fresh parameters, initialised as the reference implementation does.
  virtual std::vector<Tensor> init(Generator& gen, DType dtype) const = 0;
  // Outputs [T, n, outputs] for inputs x [T, n, ...] (or [n, outputs] for
  // x [n, ...]). Shape errors name the shapes the caller passed.
  virtual Tensor forward(const std::vector<Tensor>& params, const Tensor& x) const = 0;
  // The shape of one example (x without its task and point axes) and the
  // width of one output: what a task batch must bring.
  virtual Shape input_shape() const = 0;
  virtual std::int64_t outputs() const = 0;
  // Whether one example's output depends on the other examples of its set
  // (batch norm with the set's statistics): then there is no per-example
  // gradient, and the NTK takes the Jacobian of the whole set (ntk.hpp).
  virtual bool couples_examples() const = 0;
  // The inputs of every hidden ReLU for x [n, ...] (one task, shared
  // parameters), each [n, units...]: their signs are the example's
  // activation pattern, whose distinct values count the linear regions.
  // Empty for a model without ReLUs.
  virtual std::vector<Tensor> relu_preactivations(const std::vector<Tensor>& params, const Tensor& x) const = 0;
  // The forward pass for x [T, n, ...] with shared parameters (base shapes),
  // recorded layer by layer when every parameter of the model sits in a
  // dense layer (DenseTape); std::nullopt (the default) otherwise, and then
  // the empirical NTK takes per-example gradients. Same errors as forward().
  virtual std::optional<DenseTape> dense_layers(const std::vector<Tensor>& params, const Tensor& x) const;
  // Indices of the head (last layer) parameters: what ANIL adapts.
  std::vector<std::size_t> head() const;
  int num_layers() const;
  std::string describe() const;  // "mlp 1-40-40-1 relu"
  // Throws ShapeError unless each parameter has its base or per-task shape.
  void check(const std::vector<Tensor>& params, std::int64_t tasks) const;

 protected:
  virtual std::string name() const = 0;
  // forward() for x without the task axis: checks x and the parameters as
  // given (base shapes only), then runs `batched` on one task and drops the
  // task axis again, so no error names an expanded shape.
  template <class Batched>
  Tensor forward_unbatched(const std::vector<Tensor>& params, const Tensor& x, const Batched& batched) const {
    check_unbatched(params, x);
    return squeeze(batched(params, unsqueeze(x, 0)), 0);
  }
  // Throws ShapeError unless x is [n] + input_shape() (or [T, n] + input_shape()
  // when `batched`), naming x's shape as passed.
  void check_input(const Tensor& x, bool batched) const;
  // Throws ShapeError unless x is one task's [n] + input_shape() and every
  // parameter has its base shape.
  void check_unbatched(const std::vector<Tensor>& params, const Tensor& x) const;
};

enum class Activation { relu, tanh };

// How a layer's pre-activation scales with its fan-in n:
//   standard  h W + b, the weights' initial scale set by init (below);
//   ntk       h W / √n + b with W and b drawn N(0, 1) (Jacot et al. 2018):
//             the parameterisation in which the NTK of a network of width
//             m → ∞ is deterministic and constant in training, the limit
//             analytic_ntk.hpp computes (docs/methods.md §4).
enum class Parameterization { standard, ntk };

struct MlpOptions {
  Activation activation = Activation::relu;
  Parameterization parameterization = Parameterization::standard;
  bool bias = true;  // without it the layers have no b_l (and no bias term in the kernel)
};

// A fully connected network: widths {in, hidden..., out}, the activation
// after every layer but the last. Parameters w_l [in, out], b_l [out] (no
// b_l without bias). Standard parameterisation: initialisation as Finn et
// al.'s reference code (maml/maml.py, construct_fc_weights): weights
// truncated normal with stddev 0.01 (±2σ), biases 0. NTK parameterisation:
// see Parameterization; describe() then says "ntk" (and "no bias").
class Mlp final : public Model {
 public:
  Mlp(std::vector<std::int64_t> widths, Activation activation = Activation::relu);
  Mlp(std::vector<std::int64_t> widths, const MlpOptions& options);
  const std::vector<ParamInfo>& parameters() const override { return params_; }
  std::vector<Tensor> init(Generator& gen, DType dtype) const override;
  Tensor forward(const std::vector<Tensor>& params, const Tensor& x) const override;
  Shape input_shape() const override { return Shape{widths_.front()}; }
  std::int64_t outputs() const override { return widths_.back(); }
  bool couples_examples() const override { return false; }
  std::vector<Tensor> relu_preactivations(const std::vector<Tensor>& params, const Tensor& x) const override;
  std::optional<DenseTape> dense_layers(const std::vector<Tensor>& params, const Tensor& x) const override;

 protected:
  std::string name() const override;

 private:
  // The forward pass on x [T, n, in]; with `tape`, each layer is appended to it.
  Tensor forward_batched(const std::vector<Tensor>& params, const Tensor& x, DenseTape* tape = nullptr) const;
  // Layer l's pre-activation for its input h ([T, n, in] or [n, in]), or its
  // ReLU where `relu` (the same values as relu() of the pre-activation).
  Tensor layer(const std::vector<Tensor>& params, std::size_t l, const Tensor& h, bool relu = false) const;
  // s in layer l's s · h W + b: 1/√fan_in in the NTK parameterisation, else 1.
  double weight_scale(std::size_t l) const;
  std::size_t per_layer() const { return options_.bias ? 2 : 1; }

  std::vector<std::int64_t> widths_;
  MlpOptions options_;
  std::vector<ParamInfo> params_;
};

// The standard few-shot Conv4: 4 × [3×3 conv (padding 1) + bias, batch norm
// with the batch's statistics and affine parameters (unless turned off), ReLU, then 2×2 max-pool
// (or, with strided = true, the conv itself at stride 2 and no pool)], then a
// linear head. As in Finn et al.'s reference code, the pooled variant
// flattens the last feature map into the head and the strided variant
// averages it over space. Initialisation as there: conv weights Glorot
// (Xavier) uniform, conv biases 0, batch-norm scale 1 and shift 0, head
// weights Glorot uniform in the pooled variant and standard normal in the
// strided one (the reference code's two branches), head bias 0.
// Input x [T, n, in_channels, image, image] (or [n, ...] for one task);
// output [T, n, classes] (or [n, classes]).
struct Conv4Options {
  std::int64_t in_channels = 1;
  std::int64_t image_size = 28;
  std::int64_t channels = 64;
  std::int64_t classes = 5;
  bool strided = false;
  // Without batch norm a block is conv + bias + ReLU (no scale and shift
  // parameters), and every example's output depends on it alone.
  bool batch_norm = true;
};

class Conv4 final : public Model {
 public:
  explicit Conv4(const Conv4Options& options);
  const std::vector<ParamInfo>& parameters() const override { return params_; }
  std::vector<Tensor> init(Generator& gen, DType dtype) const override;
  Tensor forward(const std::vector<Tensor>& params, const Tensor& x) const override;
  Shape input_shape() const override { return Shape{options_.in_channels, options_.image_size, options_.image_size}; }
  std::int64_t outputs() const override { return options_.classes; }
  bool couples_examples() const override { return options_.batch_norm; }
  std::vector<Tensor> relu_preactivations(const std::vector<Tensor>& params, const Tensor& x) const override;
  std::int64_t feature_size() const { return features_; }

 protected:
  std::string name() const override;

 private:
  Tensor forward_batched(const std::vector<Tensor>& params, const Tensor& x) const;
  // The four blocks on x [T, n, C, H, W]; with `preactivations`, each
  // block's ReLU input is appended to it.
  Tensor blocks(const std::vector<Tensor>& params, const Tensor& x, std::vector<Tensor>* preactivations) const;
  std::size_t block_params() const { return options_.batch_norm ? 4 : 2; }

  Conv4Options options_;
  std::int64_t final_size_ = 0;  // spatial extent after the four blocks
  std::int64_t features_ = 0;    // inputs of the head
  std::vector<ParamInfo> params_;
};

// Parameters expanded to one copy per task ([T] + base shape): the starting
// point of a task-batched inner loop. Recorded, so meta-gradients sum back.
std::vector<Tensor> per_task(const std::vector<Tensor>& params, std::int64_t tasks);

}  // namespace metatape::meta
