#include "metatape/meta/models.hpp"

#include <cmath>
#include <sstream>

namespace metatape::meta {
namespace {

bool is_per_task(const Tensor& p, const ParamInfo& info) { return p.rank() == info.shape.rank() + 1; }

// A bias (or any per-channel vector) shaped to broadcast against activations
// [T, n, channels, trailing...]: [channels, 1...] when shared, [T, 1,
// channels, 1...] when per task.
Tensor as_broadcast(const Tensor& p, const ParamInfo& info, int trailing) {
  Shape shape;
  if (is_per_task(p, info)) {
    shape.push_back(p.dim(0));
    shape.push_back(1);
  }
  shape.push_back(info.shape[0]);
  for (int i = 0; i < trailing; ++i) shape.push_back(1);
  return reshape(p, shape);
}

// Glorot (Xavier) uniform: U[-l, l], l = sqrt(6 / (fan_in + fan_out)).
Tensor glorot_uniform(const Shape& shape, std::int64_t fan_in, std::int64_t fan_out, Generator& gen, DType dtype) {
  const double limit = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  return uniform(shape, -limit, limit, gen, dtype);
}

}  // namespace

std::vector<std::size_t> Model::head() const {
  std::vector<std::size_t> indices;
  const int last = num_layers() - 1;
  for (std::size_t i = 0; i < parameters().size(); ++i)
    if (parameters()[i].layer == last) indices.push_back(i);
  return indices;
}

int Model::num_layers() const { return parameters().empty() ? 0 : parameters().back().layer + 1; }

std::string Model::describe() const { return name(); }

std::optional<DenseTape> Model::dense_layers(const std::vector<Tensor>&, const Tensor&) const { return std::nullopt; }

void Model::check(const std::vector<Tensor>& params, std::int64_t tasks) const {
  const auto& infos = parameters();
  if (params.size() != infos.size())
    throw ShapeError(name() + ": expected " + std::to_string(infos.size()) + " parameters, got " +
                     std::to_string(params.size()));
  for (std::size_t i = 0; i < params.size(); ++i) {
    Shape per_task_shape;
    per_task_shape.push_back(tasks);
    for (std::int64_t d : infos[i].shape) per_task_shape.push_back(d);
    if (!params[i].defined() || (params[i].shape() != infos[i].shape && params[i].shape() != per_task_shape))
      throw ShapeError(name() + ": parameter " + infos[i].name + " has shape " +
                       (params[i].defined() ? params[i].shape().str() : std::string("(undefined)")) + ", expected " +
                       infos[i].shape.str() + " or " + per_task_shape.str());
  }
}

void Model::check_input(const Tensor& x, bool batched) const {
  const Shape example = input_shape();
  const int leading = batched ? 2 : 1;  // [tasks,] points
  bool fits = x.defined() && x.rank() == leading + example.rank();
  for (int a = 0; fits && a < example.rank(); ++a) fits = x.dim(leading + a) == example[a];
  if (!fits)
    throw ShapeError(name() + ": inputs must be " + (batched ? "[tasks, points, " : "[points, ") +
                     example.str().substr(1) + ", got " + (x.defined() ? x.shape().str() : std::string("(undefined)")));
}

void Model::check_unbatched(const std::vector<Tensor>& params, const Tensor& x) const {
  check_input(x, false);
  const auto& infos = parameters();
  if (params.size() != infos.size())
    throw ShapeError(name() + ": expected " + std::to_string(infos.size()) + " parameters, got " +
                     std::to_string(params.size()));
  for (std::size_t i = 0; i < params.size(); ++i)
    if (!params[i].defined() || params[i].shape() != infos[i].shape)
      throw ShapeError(name() + ": parameter " + infos[i].name + " has shape " +
                       (params[i].defined() ? params[i].shape().str() : std::string("(undefined)")) + ", expected " +
                       infos[i].shape.str() + " (inputs " + x.shape().str() + " are one task, without the task axis)");
}

std::vector<Tensor> per_task(const std::vector<Tensor>& params, std::int64_t tasks) {
  std::vector<Tensor> out;
  out.reserve(params.size());
  for (const Tensor& p : params) {
    Shape shape;
    shape.push_back(tasks);
    for (std::int64_t d : p.shape()) shape.push_back(d);
    out.push_back(expand(p, shape));
  }
  return out;
}

// --- MLP --------------------------------------------------------------------

Mlp::Mlp(std::vector<std::int64_t> widths, Activation activation)
    : Mlp(std::move(widths), MlpOptions{.activation = activation}) {}

Mlp::Mlp(std::vector<std::int64_t> widths, const MlpOptions& options) : widths_(std::move(widths)), options_(options) {
  if (widths_.size() < 2) throw ValueError("mlp: need at least an input and an output width");
  for (std::int64_t w : widths_)
    if (w < 1) throw ValueError("mlp: widths must be >= 1, got " + std::to_string(w));
  for (std::size_t l = 0; l + 1 < widths_.size(); ++l) {
    const int layer = static_cast<int>(l);
    params_.push_back({"w" + std::to_string(l + 1), Shape{widths_[l], widths_[l + 1]}, layer});
    if (options_.bias) params_.push_back({"b" + std::to_string(l + 1), Shape{widths_[l + 1]}, layer});
  }
}

std::string Mlp::name() const {
  std::ostringstream out;
  out << "mlp ";
  for (std::size_t i = 0; i < widths_.size(); ++i) out << (i ? "-" : "") << widths_[i];
  out << (options_.activation == Activation::relu ? " relu" : " tanh");
  if (options_.parameterization == Parameterization::ntk) out << " ntk";
  if (!options_.bias) out << " no bias";
  return out.str();
}

std::vector<Tensor> Mlp::init(Generator& gen, DType dtype) const {
  std::vector<Tensor> params;
  const bool ntk = options_.parameterization == Parameterization::ntk;
  for (const ParamInfo& p : params_) {
    if (ntk)
      params.push_back(normal(p.shape, 0.0, 1.0, gen, dtype));
    else
      params.push_back(p.shape.rank() == 2 ? truncated_normal(p.shape, 0.0, 0.01, gen, dtype) : zeros(p.shape, dtype));
  }
  return params;
}

Tensor Mlp::forward(const std::vector<Tensor>& params, const Tensor& x) const {
  if (x.defined() && x.rank() == 2)
    return forward_unbatched(params, x, [this](const auto& p, const Tensor& x1) { return forward_batched(p, x1); });
  return forward_batched(params, x);
}

double Mlp::weight_scale(std::size_t l) const {
  return options_.parameterization == Parameterization::ntk ? 1.0 / std::sqrt(static_cast<double>(widths_[l])) : 1.0;
}

Tensor Mlp::layer(const std::vector<Tensor>& params, std::size_t l, const Tensor& h, bool relu) const {
  const std::size_t first = l * per_layer();
  // A shared weight [in, out] multiplies every task's rows in one GEMM; a
  // per-task weight [T, in, out] is a batched GEMM. Under the standard
  // parameterisation the bias and the ReLU come with the product (linear);
  // under the NTK one the product is scaled first.
  if (options_.parameterization != Parameterization::ntk) {
    const LinearOptions fused{.relu = relu};
    return options_.bias ? linear(h, params[first], as_broadcast(params[first + 1], params_[first + 1], 0), fused)
                         : linear(h, params[first], fused);
  }
  Tensor pre = scale(matmul(h, params[first]), weight_scale(l));
  if (options_.bias) pre = add(pre, as_broadcast(params[first + 1], params_[first + 1], 0));
  return relu ? metatape::relu(pre) : pre;
}

Tensor Mlp::forward_batched(const std::vector<Tensor>& params, const Tensor& x, DenseTape* tape) const {
  check_input(x, true);
  check(params, x.dim(0));
  Tensor h = x;
  const std::size_t layers = widths_.size() - 1;
  for (std::size_t l = 0; l < layers; ++l) {
    const Tensor input = h;
    // A hidden ReLU comes with its layer, unless the tape wants the pre-activation.
    const bool hidden = l + 1 < layers, fused_relu = hidden && options_.activation == Activation::relu && !tape;
    h = layer(params, l, h, fused_relu);
    if (tape) {
      const std::size_t first = l * per_layer();
      tape->layers.push_back({.input = input,
                              .preactivation = h,
                              .scale = weight_scale(l),
                              .weight = first,
                              .bias = options_.bias ? std::optional<std::size_t>(first + 1) : std::nullopt});
    }
    if (hidden && !fused_relu) h = options_.activation == Activation::relu ? relu(h) : tanh(h);
  }
  return h;
}

std::optional<DenseTape> Mlp::dense_layers(const std::vector<Tensor>& params, const Tensor& x) const {
  check_input(x, true);
  check(params, x.dim(0));
  for (std::size_t i = 0; i < params.size(); ++i)
    if (params[i].shape() != params_[i].shape)
      throw ShapeError(name() + ": dense_layers takes shared parameters, but " + params_[i].name + " has shape " +
                       params[i].shape().str() + ", not " + params_[i].shape.str());
  DenseTape tape;
  tape.output = forward_batched(params, x, &tape);
  return tape;
}

std::vector<Tensor> Mlp::relu_preactivations(const std::vector<Tensor>& params, const Tensor& x) const {
  check_unbatched(params, x);
  std::vector<Tensor> out;
  if (options_.activation != Activation::relu) return out;
  Tensor h = x;
  for (std::size_t l = 0; l + 2 < widths_.size(); ++l) {
    const Tensor pre = layer(params, l, h);
    out.push_back(pre);
    h = relu(pre);
  }
  return out;
}

// --- Conv4 ------------------------------------------------------------------

Conv4::Conv4(const Conv4Options& options) : options_(options) {
  if (options.in_channels < 1 || options.image_size < 1 || options.channels < 1 || options.classes < 1)
    throw ValueError("conv4: channels, image size and classes must be >= 1");
  std::int64_t size = options.image_size;
  for (int block = 0; block < 4; ++block) {
    const std::int64_t in = block == 0 ? options.in_channels : options.channels;
    const std::string b = std::to_string(block + 1);
    params_.push_back({"conv" + b + ".w", Shape{options.channels, in, 3, 3}, block});
    params_.push_back({"conv" + b + ".b", Shape{options.channels}, block});
    if (options.batch_norm) {
      params_.push_back({"bn" + b + ".gamma", Shape{options.channels}, block});
      params_.push_back({"bn" + b + ".beta", Shape{options.channels}, block});
    }
    size = options.strided ? (size + 2 - 3) / 2 + 1 : size / 2;
    if (size < 1)
      throw ValueError("conv4: images of " + std::to_string(options.image_size) +
                       " pixels are too small for four blocks");
  }
  final_size_ = size;
  features_ = options.strided ? options.channels : options.channels * size * size;
  params_.push_back({"head.w", Shape{features_, options.classes}, 4});
  params_.push_back({"head.b", Shape{options.classes}, 4});
}

std::string Conv4::name() const {
  std::ostringstream out;
  out << "conv4 " << options_.in_channels << "x" << options_.image_size << "x" << options_.image_size << ", "
      << options_.channels << " channels, " << options_.classes << " classes, "
      << (options_.strided ? "strided" : "max-pool") << (options_.batch_norm ? "" : ", no batch norm");
  return out.str();
}

std::vector<Tensor> Conv4::init(Generator& gen, DType dtype) const {
  std::vector<Tensor> params;
  for (int block = 0; block < 4; ++block) {
    const Shape& w = params_[static_cast<std::size_t>(block) * block_params()].shape;
    params.push_back(glorot_uniform(w, w[1] * 9, w[0] * 9, gen, dtype));
    params.push_back(zeros({options_.channels}, dtype));
    if (options_.batch_norm) {
      params.push_back(ones({options_.channels}, dtype));
      params.push_back(zeros({options_.channels}, dtype));
    }
  }
  const Shape head{features_, options_.classes};
  params.push_back(options_.strided ? normal(head, 0.0, 1.0, gen, dtype)
                                    : glorot_uniform(head, features_, options_.classes, gen, dtype));
  params.push_back(zeros({options_.classes}, dtype));
  return params;
}

Tensor Conv4::forward(const std::vector<Tensor>& params, const Tensor& x) const {
  if (x.defined() && x.rank() == 4)
    return forward_unbatched(params, x, [this](const auto& p, const Tensor& x1) { return forward_batched(p, x1); });
  return forward_batched(params, x);
}

Tensor Conv4::forward_batched(const std::vector<Tensor>& params, const Tensor& x) const {
  check_input(x, true);
  const std::int64_t tasks = x.dim(0), images = x.dim(1);
  check(params, tasks);
  const Tensor h = blocks(params, x, nullptr);
  const Tensor features = options_.strided ? mean(h, {3, 4}) : reshape(h, Shape{tasks, images, features_});
  const std::size_t head = 4 * block_params();
  return add(matmul(features, params[head]), as_broadcast(params[head + 1], params_[head + 1], 0));
}

Tensor Conv4::blocks(const std::vector<Tensor>& params, const Tensor& x, std::vector<Tensor>* preactivations) const {
  const std::int64_t tasks = x.dim(0), images = x.dim(1);
  // The ReLU is fused into the op before it (the batch norm, or without one
  // the convolution when it adds the bias) unless its input is wanted.
  const bool fuse_relu = preactivations == nullptr;
  Tensor h = x;
  for (std::size_t block = 0; block < 4; ++block) {
    const std::size_t first = block * block_params();
    const Tensor &w = params[first], &b = params[first + 1];
    const bool per_task_weight = is_per_task(w, params_[first]), shared_bias = !is_per_task(b, params_[first + 1]);
    const bool conv_relu = fuse_relu && !options_.batch_norm && (per_task_weight || shared_bias);
    const bool relu_fused = conv_relu || (fuse_relu && options_.batch_norm);
    const Conv2dOptions conv{.stride = options_.strided ? 2 : 1, .padding = 1, .relu = conv_relu};
    if (per_task_weight) {
      h = conv2d(h, w, b, conv);  // [T, n, C, H, W] with [T, O, C, 3, 3], bias [T, O] or [O]
    } else {                      // one weight for all tasks: fold tasks into the batch
      const Tensor folded = reshape(h, Shape{tasks * images, h.dim(2), h.dim(3), h.dim(4)});
      const Tensor y = shared_bias ? conv2d(folded, w, b, conv) : conv2d(folded, w, conv);
      h = reshape(y, Shape{tasks, images, y.dim(1), y.dim(2), y.dim(3)});
      if (!shared_bias) h = add(h, as_broadcast(b, params_[first + 1], 2));
    }
    // Statistics per task (group axis 0), as each task is its own batch.
    const BatchNormOptions norm{.eps = 1e-3, .group_axes = 1, .relu = fuse_relu};
    if (options_.batch_norm && fuse_relu && !options_.strided) {
      // The pooling fused too: the same values without the normalised maps.
      h = batch_norm_max_pool2d(h, params[first + 2], params[first + 3], norm);
      continue;
    }
    if (options_.batch_norm) h = batch_norm(h, params[first + 2], params[first + 3], norm);
    if (!relu_fused) {
      if (preactivations) preactivations->push_back(h);
      h = relu(h);
    }
    if (!options_.strided) h = max_pool2d(h, {.kernel = 2});
  }
  return h;
}

std::vector<Tensor> Conv4::relu_preactivations(const std::vector<Tensor>& params, const Tensor& x) const {
  check_unbatched(params, x);
  std::vector<Tensor> out;
  (void)blocks(params, unsqueeze(x, 0), &out);
  for (Tensor& pre : out) pre = squeeze(pre, 0);
  return out;
}

}  // namespace metatape::meta
