// Neural-network ops. Primitives: log_softmax and the im2col / col2im pair.
// Everything else is a composition, differentiated through its parts:
// conv2d is im2col + one GEMM per group, max_pool2d is a take at the
// windows' arg-max, batch_norm is arithmetic on batch statistics.
#include "kernels/cpu/reduce.hpp"
#include "kernels/cpu/window_ops.hpp"
#include "metatape/error.hpp"
#include "metatape/ops.hpp"
#include "op_defs.hpp"
#include "samples.hpp"

namespace metatape::detail {
namespace {

using kernels::Window2d;

// --- log_softmax: x - logsumexp(x) along attrs.axis ---
void log_softmax_rule(Inputs in, const Attrs&, std::span<OutputSpec> out) {
  require_floating("log_softmax", *in[0], 0);
  out[0] = {in[0]->shape(), in[0]->dtype()};
}
void log_softmax_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  const Tensor& x = *in[0];
  std::int64_t outer = 1, inner = 1;
  for (int i = 0; i < attrs.axis; ++i) outer *= x.shape()[i];
  for (int i = attrs.axis + 1; i < x.rank(); ++i) inner *= x.shape()[i];
  with_float_type(x.dtype(), [&](auto t) {
    using T = decltype(t);
    kernels::cpu::log_softmax<T>(x.data<T>(), out[0].data<T>(), outer, x.shape()[attrs.axis], inner);
  });
}
// dx = g - softmax(x) Σ g, with softmax(x) = exp(y).
void log_softmax_backward(BackwardContext& c) {
  const Tensor& g = c.grad_output();
  c.set_grad(0, sub(g, mul(exp(c.output()), sum(g, {c.attrs().axis}, true))));
}

// --- im2col: x [G, N, C, H, W] -> columns [G, C·kh·kw, N·Ho·Wo] ---
void require_window(const char* op, const Window2d& w, std::int64_t h, std::int64_t wd) {
  if (w.out_h(h) < 1 || w.out_w(wd) < 1)
    throw ShapeError(std::string(op) + ": a " + std::to_string(w.kernel_h) + "x" + std::to_string(w.kernel_w) +
                     " window with padding " + std::to_string(w.pad_h) + " does not fit a " + std::to_string(h) +
                     "x" + std::to_string(wd) + " input");
}
Shape columns_shape(const Shape& x, const Window2d& w) {
  return {x[0], x[2] * w.kernel_h * w.kernel_w, x[1] * w.out_h(x[3]) * w.out_w(x[4])};
}
void im2col_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  require_floating("im2col", *in[0], 0);
  const Shape& x = in[0]->shape();
  if (x.rank() != 5) throw ShapeError("im2col: expected [groups, images, channels, h, w], got " + x.str());
  require_window("im2col", attrs.window, x[3], x[4]);
  out[0] = {columns_shape(x, attrs.window), in[0]->dtype()};
}
void im2col_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  const Shape& x = in[0]->shape();
  with_float_type(in[0]->dtype(), [&](auto t) {
    using T = decltype(t);
    kernels::cpu::im2col<T>(in[0]->data<T>(), x[0], x[1], x[2], x[3], x[4], attrs.window, out[0].data<T>());
  });
}
Tensor col2im(const Tensor& cols, const Window2d& window, const Shape& image_shape);
void im2col_backward(BackwardContext& c) {
  c.set_grad(0, col2im(c.grad_output(), c.attrs().window, c.input_shape(0)));
}

// --- col2im: the adjoint, columns -> x of shape attrs.shape ---
void col2im_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  require_floating("col2im", *in[0], 0);
  const Shape& x = attrs.shape;
  if (x.rank() != 5) throw ShapeError("col2im: expected an image shape [groups, images, channels, h, w], got " + x.str());
  require_window("col2im", attrs.window, x[3], x[4]);
  if (in[0]->shape() != columns_shape(x, attrs.window))
    throw ShapeError("col2im: columns " + in[0]->shape().str() + " do not match images " + x.str() + " (expected " +
                     columns_shape(x, attrs.window).str() + ")");
  out[0] = {x, in[0]->dtype()};
}
void col2im_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  const Shape& x = attrs.shape;
  with_float_type(in[0]->dtype(), [&](auto t) {
    using T = decltype(t);
    kernels::cpu::col2im<T>(in[0]->data<T>(), x[0], x[1], x[2], x[3], x[4], attrs.window, out[0].data<T>());
  });
}
Tensor im2col(const Tensor& x, const Window2d& window) {
  const Tensor* in[] = {&x};
  Attrs attrs;
  attrs.window = window;
  return apply(im2col_op, in, attrs);
}
void col2im_backward(BackwardContext& c) { c.set_grad(0, im2col(c.grad_output(), c.attrs().window)); }

Tensor col2im(const Tensor& cols, const Window2d& window, const Shape& image_shape) {
  const Tensor* in[] = {&cols};
  Attrs attrs;
  attrs.window = window;
  attrs.shape = image_shape;
  return apply(col2im_op, in, attrs);
}

Window2d square_window(std::int64_t kernel, std::int64_t stride, std::int64_t padding) {
  return {kernel, kernel, stride, stride, padding, padding};
}

Tensor random_labels(std::int64_t n, std::int64_t classes, Generator& gen) {
  std::vector<std::int64_t> labels(static_cast<std::size_t>(n));
  for (auto& l : labels) l = gen.below(classes);
  return from_indices(labels, Shape{n});
}

}  // namespace

// clang-format off
const OpDef log_softmax_op = {.name = "log_softmax", .arity = 1, .num_outputs = 1, .saves = kSaveOutputs,
    .nondiff = 0, .is_view = false,
    .shape_rule = log_softmax_rule, .forward = log_softmax_forward, .backward = log_softmax_backward,
    .samples = [](Generator& g, DType d) {
      return std::vector<OpSample>{
          make_sample("[3, 5] axis -1", {sample_uniform({3, 5}, g, d, -2.0, 2.0)},
                      [](const std::vector<Tensor>& in) { return log_softmax(in[0], -1); }),
          make_sample("[2, 3, 4] axis 1", {sample_uniform({2, 3, 4}, g, d, -2.0, 2.0)},
                      [](const std::vector<Tensor>& in) { return log_softmax(in[0], 1); })};
    }};
const OpDef im2col_op = {.name = "im2col", .arity = 1, .num_outputs = 1, .saves = 0, .nondiff = 0, .is_view = false,
    .shape_rule = im2col_rule, .forward = im2col_forward, .backward = im2col_backward,
    .samples = [](Generator& g, DType d) {
      return std::vector<OpSample>{
          make_sample("3x3, padding 1", {sample_uniform({1, 2, 2, 5, 5}, g, d)},
                      [](const std::vector<Tensor>& in) { return im2col(in[0], square_window(3, 1, 1)); }),
          make_sample("2x2, stride 2, two groups", {sample_uniform({2, 1, 1, 4, 5}, g, d)},
                      [](const std::vector<Tensor>& in) { return im2col(in[0], square_window(2, 2, 0)); })};
    }};
const OpDef col2im_op = {.name = "col2im", .arity = 1, .num_outputs = 1, .saves = 0, .nondiff = 0, .is_view = false,
    .shape_rule = col2im_rule, .forward = col2im_forward, .backward = col2im_backward,
    .samples = [](Generator& g, DType d) {
      // 3x3 windows at stride 2 with padding overlap, so col2im must accumulate.
      const Window2d w = square_window(3, 2, 1);
      const Shape image{1, 2, 1, 5, 5};
      return std::vector<OpSample>{make_sample("3x3, stride 2, padding 1",
          {sample_uniform(columns_shape(image, w), g, d)},
          [w, image](const std::vector<Tensor>& in) { return col2im(in[0], w, image); })};
    }};
// clang-format on

std::vector<OpSample> softmax_samples(Generator& gen, DType dtype) {
  return {make_sample("[3, 4] axis -1", {sample_uniform({3, 4}, gen, dtype, -2.0, 2.0)},
                      [](const std::vector<Tensor>& in) { return softmax(in[0], -1); })};
}

std::vector<OpSample> cross_entropy_samples(Generator& gen, DType dtype) {
  OpSample s = make_sample("[5, 3] logits", {sample_uniform({5, 3}, gen, dtype, -2.0, 2.0), random_labels(5, 3, gen)},
                           [](const std::vector<Tensor>& in) { return cross_entropy(in[0], in[1]); });
  s.differentiable[1] = false;
  return {s};
}

std::vector<OpSample> mse_loss_samples(Generator& gen, DType dtype) {
  return {make_sample("[4, 3]", {sample_uniform({4, 3}, gen, dtype), sample_uniform({4, 3}, gen, dtype)},
                      [](const std::vector<Tensor>& in) { return mse_loss(in[0], in[1]); })};
}

std::vector<OpSample> conv2d_samples(Generator& gen, DType dtype) {
  return {make_sample("3x3, padding 1", {sample_uniform({2, 2, 5, 5}, gen, dtype), sample_uniform({3, 2, 3, 3}, gen, dtype)},
                      [](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], {.stride = 1, .padding = 1}); }),
          make_sample("3x3, stride 2", {sample_uniform({1, 1, 6, 5}, gen, dtype), sample_uniform({2, 1, 3, 3}, gen, dtype)},
                      [](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], {.stride = 2, .padding = 0}); }),
          make_sample("task-batched, weight per task",
                      {sample_uniform({2, 2, 1, 4, 4}, gen, dtype), sample_uniform({2, 3, 1, 3, 3}, gen, dtype)},
                      [](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], {.stride = 1, .padding = 1}); })};
}

std::vector<OpSample> max_pool2d_samples(Generator& gen, DType dtype) {
  return {make_sample("2x2", {sample_distinct({2, 2, 4, 4}, gen, dtype)},
                      [](const std::vector<Tensor>& in) { return max_pool2d(in[0], {.kernel = 2}); }),
          make_sample("3x3, stride 2, padding 1", {sample_distinct({1, 2, 5, 5}, gen, dtype)},
                      [](const std::vector<Tensor>& in) {
                        return max_pool2d(in[0], {.kernel = 3, .stride = 2, .padding = 1});
                      })};
}

std::vector<OpSample> batch_norm_samples(Generator& gen, DType dtype) {
  return {make_sample("[6, 3] features",
                      {sample_uniform({6, 3}, gen, dtype), sample_uniform({3}, gen, dtype, 0.5, 1.5),
                       sample_uniform({3}, gen, dtype)},
                      [](const std::vector<Tensor>& in) { return batch_norm(in[0], in[1], in[2]); }),
          make_sample("[3, 2, 3, 3] images",
                      {sample_uniform({3, 2, 3, 3}, gen, dtype), sample_uniform({2}, gen, dtype, 0.5, 1.5),
                       sample_uniform({2}, gen, dtype)},
                      [](const std::vector<Tensor>& in) { return batch_norm(in[0], in[1], in[2]); }),
          make_sample("task-batched [2, 3, 2, 2, 2], affine per task",
                      {sample_uniform({2, 3, 2, 2, 2}, gen, dtype), sample_uniform({2, 2}, gen, dtype, 0.5, 1.5),
                       sample_uniform({2, 2}, gen, dtype)},
                      [](const std::vector<Tensor>& in) {
                        return batch_norm(in[0], in[1], in[2], {.eps = 1e-5, .group_axes = 1});
                      })};
}

}  // namespace metatape::detail

namespace metatape {

Tensor log_softmax(const Tensor& x, int axis) {
  if (!x.defined()) throw ValueError("log_softmax: input 0 is an undefined tensor");
  const Tensor* in[] = {&x};
  detail::Attrs attrs;
  attrs.axis = normalize_axis(axis, x.rank(), "log_softmax");
  return detail::apply(detail::log_softmax_op, in, attrs);
}

Tensor softmax(const Tensor& x, int axis) { return exp(log_softmax(x, axis)); }

Tensor cross_entropy(const Tensor& logits, const Tensor& labels) {
  if (!logits.defined() || !labels.defined()) throw ValueError("cross_entropy: an input is an undefined tensor");
  if (logits.rank() != 2) throw ShapeError("cross_entropy: logits must be [N, C], got " + logits.shape().str());
  if (labels.dtype() != DType::i64)
    throw DTypeError(std::string("cross_entropy: labels must be i64, not ") + dtype_name(labels.dtype()));
  const std::int64_t n = logits.shape()[0], classes = logits.shape()[1];
  if (labels.shape() != Shape{n})
    throw ShapeError("cross_entropy: labels have shape " + labels.shape().str() + ", expected [" + std::to_string(n) +
                     "] for logits " + logits.shape().str());
  // The flat position of each row's label in the [N, C] log-probabilities.
  std::vector<std::int64_t> picks(static_cast<std::size_t>(n));
  const std::int64_t* label = labels.data<std::int64_t>();
  for (std::int64_t i = 0; i < n; ++i) {
    if (label[i] < 0 || label[i] >= classes)
      throw ValueError("cross_entropy: label " + std::to_string(label[i]) + " at row " + std::to_string(i) +
                       " is out of range for " + std::to_string(classes) + " classes");
    picks[static_cast<std::size_t>(i)] = i * classes + label[i];
  }
  return neg(mean(take(log_softmax(logits, 1), from_indices(picks, Shape{n}))));
}

Tensor mse_loss(const Tensor& prediction, const Tensor& target) {
  if (!prediction.defined() || !target.defined()) throw ValueError("mse_loss: an input is an undefined tensor");
  if (prediction.shape() != target.shape())
    throw ShapeError("mse_loss: prediction " + prediction.shape().str() + " and target " + target.shape().str() +
                     " differ in shape");
  return mean(square(sub(prediction, target)));
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const Conv2dOptions& options) {
  if (!x.defined() || !weight.defined()) throw ValueError("conv2d: an input is an undefined tensor");
  if (options.stride < 1 || options.padding < 0)
    throw ValueError("conv2d: stride must be >= 1 and padding >= 0, got stride " + std::to_string(options.stride) +
                     " and padding " + std::to_string(options.padding));
  const bool batched = x.rank() == 5;
  if (!((x.rank() == 4 && weight.rank() == 4) || (batched && weight.rank() == 5)))
    throw ShapeError("conv2d: expected x [N, C, H, W] with weight [O, C, kh, kw], or x [T, N, C, H, W] with weight "
                     "[T, O, C, kh, kw]; got x " + x.shape().str() + " and weight " + weight.shape().str());
  const int o = batched ? 1 : 0;  // offset of the per-task axes
  const std::int64_t groups = batched ? x.shape()[0] : 1, images = x.shape()[o], channels = x.shape()[o + 1];
  const std::int64_t out_channels = weight.shape()[o];
  if (weight.shape()[o + 1] != channels || (batched && weight.shape()[0] != groups))
    throw ShapeError("conv2d: weight " + weight.shape().str() + " does not match the channels (and tasks) of x " +
                     x.shape().str());
  const kernels::Window2d w{weight.shape()[o + 2], weight.shape()[o + 3], options.stride, options.stride,
                            options.padding, options.padding};
  const std::int64_t h = x.shape()[o + 2], wd = x.shape()[o + 3];
  detail::require_window("conv2d", w, h, wd);
  const std::int64_t out_h = w.out_h(h), out_w = w.out_w(wd), pixels = out_h * out_w;

  // One GEMM per group: weight [O, C·kh·kw] @ columns [C·kh·kw, N·Ho·Wo].
  const Tensor cols = detail::im2col(reshape(x, Shape{groups, images, channels, h, wd}), w);
  const Tensor wmat = reshape(weight, Shape{groups, out_channels, channels * w.kernel_h * w.kernel_w});
  const Tensor y = matmul(wmat, cols);  // [G, O, N·Ho·Wo]
  const Tensor nchw = permute(reshape(y, Shape{groups, out_channels, images, pixels}), {0, 2, 1, 3});
  return batched ? reshape(nchw, Shape{groups, images, out_channels, out_h, out_w})
                 : reshape(nchw, Shape{images, out_channels, out_h, out_w});
}

Tensor max_pool2d(const Tensor& x, const Pool2dOptions& options) {
  if (!x.defined()) throw ValueError("max_pool2d: input 0 is an undefined tensor");
  detail::require_floating("max_pool2d", x, 0);
  const std::int64_t stride = options.stride == 0 ? options.kernel : options.stride;
  if (options.kernel < 1 || stride < 1 || options.padding < 0 || 2 * options.padding > options.kernel)
    throw ValueError("max_pool2d: need kernel >= 1, stride >= 1 and 0 <= padding <= kernel / 2, got kernel " +
                     std::to_string(options.kernel) + ", stride " + std::to_string(stride) + ", padding " +
                     std::to_string(options.padding));
  if (x.rank() < 3) throw ShapeError("max_pool2d: expected [..., H, W] of rank 3 to 5, got " + x.shape().str());
  const kernels::Window2d w = detail::square_window(options.kernel, stride, options.padding);
  const std::int64_t h = x.shape()[x.rank() - 2], wd = x.shape()[x.rank() - 1];
  detail::require_window("max_pool2d", w, h, wd);
  Shape out_shape = x.shape();
  out_shape[x.rank() - 2] = w.out_h(h);
  out_shape[x.rank() - 1] = w.out_w(wd);
  Tensor index = empty(out_shape, DType::i64);
  detail::with_float_type(x.dtype(), [&](auto t) {
    using T = decltype(t);
    kernels::cpu::max_pool_argmax<T>(x.data<T>(), x.numel() / (h * wd), h, wd, w, index.data<std::int64_t>());
  });
  return take(x, index);
}

Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const BatchNormOptions& options) {
  if (!x.defined() || !gamma.defined() || !beta.defined()) throw ValueError("batch_norm: an input is an undefined tensor");
  const int groups = options.group_axes, channel = groups + 1;
  if (groups < 0 || x.rank() < groups + 2)
    throw ShapeError("batch_norm: x " + x.shape().str() + " needs a batch and a channel axis after " +
                     std::to_string(groups) + " group axes");
  if (!(options.eps >= 0)) throw ValueError("batch_norm: eps must be >= 0");
  // The affine parameters broadcast as [G..., 1, C, 1, ...] (or [C, 1, ...]).
  Shape affine;
  for (int i = 0; i < x.rank(); ++i) affine.push_back(i < groups || i == channel ? x.shape()[i] : 1);
  Shape per_channel;
  per_channel.push_back(x.shape()[channel]);
  Shape per_group;
  for (int i = 0; i < groups; ++i) per_group.push_back(x.shape()[i]);
  per_group.push_back(x.shape()[channel]);
  for (const Tensor* p : {&gamma, &beta})
    if (p->shape() != per_channel && p->shape() != per_group)
      throw ShapeError("batch_norm: gamma and beta must be " + per_channel.str() + " or " + per_group.str() +
                       " for x " + x.shape().str() + ", got " + p->shape().str());
  const auto as_affine = [&](const Tensor& p) {
    if (p.shape() == per_group) return reshape(p, affine);
    Shape trailing;  // [C, 1, ...]: broadcasting supplies the leading axes
    for (int i = channel; i < x.rank(); ++i) trailing.push_back(i == channel ? x.shape()[i] : 1);
    return reshape(p, trailing);
  };
  std::vector<int> stat_axes;
  for (int i = groups; i < x.rank(); ++i)
    if (i != channel) stat_axes.push_back(i);
  const Tensor centred = sub(x, mean(x, stat_axes, true));
  const Tensor variance = mean(square(centred), stat_axes, true);  // biased, as in training-mode BN
  const Tensor normalised = mul(centred, pow(shift(variance, options.eps), -0.5));
  return add(mul(normalised, as_affine(gamma)), as_affine(beta));
}

}  // namespace metatape
