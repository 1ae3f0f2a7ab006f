// Neural-network ops. Primitives: log_softmax, and conv2d with its two
// adjoints (im2col + GEMM, in chunks), batch_norm (one fused pass forward).
// Compositions, differentiated through their parts: max_pool2d is a take at
// the windows' arg-max, softmax and the losses are reductions.
#include "backend.hpp"
#include "kernels/cpu/parallel.hpp"
#include "metatape/error.hpp"
#include "metatape/ops.hpp"
#include "metatape/tape.hpp"
#include "op_defs.hpp"
#include "samples.hpp"

namespace metatape::detail {
namespace {

using kernels::Window2d;

// --- log_softmax: (x - max) - log Σ exp(x - max) along attrs.axis ---
void log_softmax_rule(Inputs in, const Attrs&, std::span<OutputSpec> out) {
  require_floating("log_softmax", *in[0], 0);
  out[0] = {in[0]->shape(), in[0]->dtype()};
}
void log_softmax_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  const Tensor& x = *in[0];
  std::int64_t outer = 1, inner = 1;
  for (int i = 0; i < attrs.axis; ++i) outer *= x.shape()[i];
  for (int i = attrs.axis + 1; i < x.rank(); ++i) inner *= x.shape()[i];
  dispatch(x.device(), x.dtype(), [&]<class K, class T>() {
    K::template log_softmax<T>(x.data<T>(), out[0].data<T>(), outer, x.shape()[attrs.axis], inner);
  });
}
// dx = g - softmax(x) Σ g, with softmax(x) = exp(y). It reads x only
// through y, never recomputing from x, so it inherits the forward's
// invariance under shifting x; recorded (create_graph), its own derivatives
// are this rule and exp's again, so that holds at every order.
void log_softmax_backward(BackwardContext& c) {
  const Tensor& g = c.grad_output();
  c.set_grad(0, sub(g, mul(exp(c.output()), sum(g, {c.attrs().axis}, true))));
}

// --- conv2d and its two adjoints --------------------------------------------
// y = conv2d(x, w) is bilinear, so its gradients are two more bilinear maps:
//   D(g, w) = conv2d_input_grad  (the adjoint in x)
//   E(x, g) = conv2d_weight_grad (the adjoint in w)
// and the adjoints of D and E are conv2d, D and E again. The three ops close
// under differentiation, to any order. None saves its im2col columns: they
// are rebuilt in scratch by whichever op needs them.
void require_window(const char* op, const Window2d& w, std::int64_t h, std::int64_t wd) {
  if (w.out_h(h) < 1 || w.out_w(wd) < 1)
    throw ShapeError(std::string(op) + ": a " + std::to_string(w.kernel_h) + "x" + std::to_string(w.kernel_w) +
                     " window with padding " + std::to_string(w.pad_h) + " does not fit a " + std::to_string(h) + "x" +
                     std::to_string(wd) + " input");
}

// x [N, C, H, W] with w [O, C, kh, kw], or grouped x [G, N, C, H, W] with
// w [G, O, C, kh, kw]; throws naming `op`.
kernels::ConvShape conv_shape(const char* op, const Shape& x, const Shape& w, Window2d window) {
  const bool grouped = x.rank() == 5;
  if (!((x.rank() == 4 && w.rank() == 4) || (grouped && w.rank() == 5)))
    throw ShapeError(std::string(op) +
                     ": expected x [N, C, H, W] with weight [O, C, kh, kw], or x [T, N, C, H, W] "
                     "with weight [T, O, C, kh, kw]; got x " +
                     x.str() + " and weight " + w.str());
  const int o = grouped ? 1 : 0;
  if (w[o + 1] != x[o + 1] || (grouped && w[0] != x[0]))
    throw ShapeError(std::string(op) + ": weight " + w.str() + " does not match the channels (and tasks) of x " +
                     x.str());
  window.kernel_h = w[o + 2];
  window.kernel_w = w[o + 3];
  require_window(op, window, x[o + 2], x[o + 3]);
  // The CPU kernels' scratch is sized for, and used by, this many workers.
  const std::int64_t workers = kernels::cpu::available_threads();
  return {grouped ? x[0] : 1, x[o], x[o + 1], x[o + 2], x[o + 3], w[o], window, workers, grouped};
}

Shape conv_output_shape(const Shape& x, const kernels::ConvShape& s) {
  return x.rank() == 5 ? Shape{s.groups, s.images, s.out_channels, s.out_h(), s.out_w()}
                       : Shape{s.images, s.out_channels, s.out_h(), s.out_w()};
}

void require_grad_shape(const char* op, const Shape& g, const Shape& expected) {
  if (g != expected)
    throw ShapeError(std::string(op) + ": the output gradient has shape " + g.str() + ", expected " + expected.str());
}

// f.template operator()<K, T>(scratch) with the kernel table of `device` and
// a scratch buffer of the size its convolution kernels ask for.
template <class F>
void with_scratch(Device device, DType dtype, const kernels::ConvShape& s, F&& f) {
  dispatch(device, dtype, [&]<class K, class T>() {
    Tensor scratch = empty(Shape{K::conv_scratch_size(s)}, dtype, device);
    f.template operator()<K, T>(scratch.data<T>());
  });
}

void conv2d_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  require_floating("conv2d", *in[0], 0);
  require_floating("conv2d", *in[1], 1);
  require_same_dtype("conv2d", *in[0], *in[1]);
  const auto s = conv_shape("conv2d", in[0]->shape(), in[1]->shape(), attrs.window);
  out[0] = {conv_output_shape(in[0]->shape(), s), in[0]->dtype()};
}
void conv2d_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  const auto s = conv_shape("conv2d", in[0]->shape(), in[1]->shape(), attrs.window);
  with_scratch(out[0].device(), out[0].dtype(), s, [&]<class K, class T>(T* scratch) {
    K::template conv2d_forward<T>(s, in[0]->data<T>(), in[1]->data<T>(), out[0].data<T>(), scratch);
  });
}
Tensor conv2d_input_grad(const Tensor& g, const Tensor& w, const Window2d& window, const Shape& x_shape);
Tensor conv2d_weight_grad(const Tensor& x, const Tensor& g, const Window2d& window, const Shape& w_shape);
void conv2d_backward(BackwardContext& c) {
  const Tensor &x = c.input(0), &w = c.input(1);
  if (c.needs_grad(0)) c.set_grad(0, conv2d_input_grad(c.grad_output(), w, c.attrs().window, x.shape()));
  if (c.needs_grad(1)) c.set_grad(1, conv2d_weight_grad(x, c.grad_output(), c.attrs().window, w.shape()));
}

// --- conv2d_input_grad: D(g, w), shaped like x (attrs.shape) ---
void conv2d_input_grad_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  require_floating("conv2d_input_grad", *in[0], 0);
  require_same_dtype("conv2d_input_grad", *in[0], *in[1]);
  const auto s = conv_shape("conv2d_input_grad", attrs.shape, in[1]->shape(), attrs.window);
  require_grad_shape("conv2d_input_grad", in[0]->shape(), conv_output_shape(attrs.shape, s));
  out[0] = {attrs.shape, in[0]->dtype()};
}
void conv2d_input_grad_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  const auto s = conv_shape("conv2d_input_grad", attrs.shape, in[1]->shape(), attrs.window);
  with_scratch(out[0].device(), out[0].dtype(), s, [&]<class K, class T>(T* scratch) {
    K::template conv2d_input_grad<T>(s, in[0]->data<T>(), in[1]->data<T>(), out[0].data<T>(), scratch);
  });
}
// ⟨D(g, w), H⟩ = ⟨conv2d(H, w), g⟩: so dg = conv2d(H, w) and dw = E(H, g).
void conv2d_input_grad_backward(BackwardContext& c) {
  const Tensor &g = c.input(0), &w = c.input(1), &h = c.grad_output();
  if (c.needs_grad(0)) {
    const Tensor* in[] = {&h, &w};
    Attrs attrs;
    attrs.window = c.attrs().window;
    c.set_grad(0, apply(conv2d_op, in, attrs));
  }
  if (c.needs_grad(1)) c.set_grad(1, conv2d_weight_grad(h, g, c.attrs().window, w.shape()));
}

// --- conv2d_weight_grad: E(x, g), shaped like w (attrs.shape) ---
void conv2d_weight_grad_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  require_floating("conv2d_weight_grad", *in[0], 0);
  require_same_dtype("conv2d_weight_grad", *in[0], *in[1]);
  const auto s = conv_shape("conv2d_weight_grad", in[0]->shape(), attrs.shape, attrs.window);
  require_grad_shape("conv2d_weight_grad", in[1]->shape(), conv_output_shape(in[0]->shape(), s));
  out[0] = {attrs.shape, in[0]->dtype()};
}
void conv2d_weight_grad_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  const auto s = conv_shape("conv2d_weight_grad", in[0]->shape(), attrs.shape, attrs.window);
  with_scratch(out[0].device(), out[0].dtype(), s, [&]<class K, class T>(T* scratch) {
    K::template conv2d_weight_grad<T>(s, in[0]->data<T>(), in[1]->data<T>(), out[0].data<T>(), scratch);
  });
}
// ⟨E(x, g), K⟩ = ⟨conv2d(x, K), g⟩: so dx = D(g, K) and dg = conv2d(x, K).
void conv2d_weight_grad_backward(BackwardContext& c) {
  const Tensor &x = c.input(0), &g = c.input(1), &k = c.grad_output();
  if (c.needs_grad(0)) c.set_grad(0, conv2d_input_grad(g, k, c.attrs().window, x.shape()));
  if (c.needs_grad(1)) {
    const Tensor* in[] = {&x, &k};
    Attrs attrs;
    attrs.window = c.attrs().window;
    c.set_grad(1, apply(conv2d_op, in, attrs));
  }
}

Tensor conv2d_input_grad(const Tensor& g, const Tensor& w, const Window2d& window, const Shape& x_shape) {
  const Tensor* in[] = {&g, &w};
  Attrs attrs;
  attrs.window = window;
  attrs.shape = x_shape;
  return apply(conv2d_input_grad_op, in, attrs);
}

Tensor conv2d_weight_grad(const Tensor& x, const Tensor& g, const Window2d& window, const Shape& w_shape) {
  const Tensor* in[] = {&x, &g};
  Attrs attrs;
  attrs.window = window;
  attrs.shape = w_shape;
  return apply(conv2d_weight_grad_op, in, attrs);
}

// --- batch_norm: (x − mean) / √(var + eps) · γ + β with the batch's statistics ---
// attrs.axis leading axes are groups (never pooled); the next is the batch,
// then the channel axis; statistics per group and channel over the rest.
// attrs.scalar is eps. γ, β are [C] or [groups..., C].
struct NormLayout {
  kernels::NormShape kernel;
  std::vector<int> stat_axes;  // the axes the statistics pool over
  Shape affine;                // γ, β viewed to broadcast against x
};

NormLayout norm_layout(const Shape& x, const Shape& gamma, int group_axes, double eps, bool relu) {
  const int channel = group_axes + 1;
  if (x.rank() < group_axes + 2)
    throw ShapeError("batch_norm: x " + x.str() + " needs a batch and a channel axis after " +
                     std::to_string(group_axes) + " group axes");
  Shape per_channel{x[channel]}, per_group;
  for (int i = 0; i < group_axes; ++i) per_group.push_back(x[i]);
  per_group.push_back(x[channel]);
  if (gamma != per_channel && gamma != per_group)
    throw ShapeError("batch_norm: gamma and beta must be " + per_channel.str() + " or " + per_group.str() + " for x " +
                     x.str() + ", got " + gamma.str());
  NormLayout layout;
  const bool per_group_affine = gamma == per_group && group_axes > 0;
  std::int64_t groups = 1, spatial = 1;
  for (int i = 0; i < group_axes; ++i) groups *= x[i];
  for (int i = channel + 1; i < x.rank(); ++i) spatial *= x[i];
  layout.kernel = {groups, x[group_axes], x[channel], spatial, per_group_affine, eps, relu};
  for (int i = group_axes; i < x.rank(); ++i)
    if (i != channel) layout.stat_axes.push_back(i);
  // [G..., 1, C, 1...] per group; [C, 1...] shared (broadcasting supplies the rest).
  for (int i = per_group_affine ? 0 : channel; i < x.rank(); ++i)
    layout.affine.push_back(i == channel || (per_group_affine && i < group_axes) ? x[i] : 1);
  return layout;
}

void batch_norm_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  for (int i = 0; i < 3; ++i) require_floating("batch_norm", *in[static_cast<std::size_t>(i)], i);
  require_same_dtype("batch_norm", *in[0], *in[1]);
  require_same_dtype("batch_norm", *in[0], *in[2]);
  if (in[1]->shape() != in[2]->shape())
    throw ShapeError("batch_norm: gamma " + in[1]->shape().str() + " and beta " + in[2]->shape().str() +
                     " differ in shape");
  (void)norm_layout(in[0]->shape(), in[1]->shape(), attrs.axis, attrs.scalar, attrs.relu);
  out[0] = {in[0]->shape(), in[0]->dtype()};
}
void batch_norm_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  const NormLayout layout = norm_layout(in[0]->shape(), in[1]->shape(), attrs.axis, attrs.scalar, attrs.relu);
  dispatch(out[0].device(), out[0].dtype(), [&]<class K, class T>() {
    K::template batch_norm_forward<T>(layout.kernel, in[0]->data<T>(), in[1]->data<T>(), in[2]->data<T>(),
                                      out[0].data<T>());
  });
}
// Without create_graph one fused kernel computes all three gradients. When
// the backward is being recorded, the same formulas are written in
// differentiable ops, recomputing x̂ from x so that x̂ and 1/√(var + eps)
// carry their own dependence on x:
//   dx = r γ (g − mean(g) − x̂ mean(g x̂)),  dγ = Σ g x̂,  dβ = Σ g,
// with g first masked by the fused ReLU's 0/1 derivative if there is one.
void batch_norm_backward(BackwardContext& c) {
  const Tensor &x = c.input(0), &gamma = c.input(1), &beta = c.input(2);
  const NormLayout layout = norm_layout(x.shape(), gamma.shape(), c.attrs().axis, c.attrs().scalar, c.attrs().relu);
  if (!grad_enabled()) {
    const Tensor& g = c.grad_output();
    Tensor dx = empty(x.shape(), x.dtype(), x.device()), dgamma = empty(gamma.shape(), x.dtype(), x.device()),
           dbeta = empty(gamma.shape(), x.dtype(), x.device());
    dispatch(x.device(), x.dtype(), [&]<class K, class T>() {
      K::template batch_norm_backward<T>(layout.kernel, x.data<T>(), gamma.data<T>(), beta.data<T>(), g.data<T>(),
                                         dx.data<T>(), dgamma.data<T>(), dbeta.data<T>());
    });
    if (c.needs_grad(0)) c.set_grad(0, dx);
    if (c.needs_grad(1)) c.set_grad(1, dgamma);
    if (c.needs_grad(2)) c.set_grad(2, dbeta);
    return;
  }
  const std::vector<int>& axes = layout.stat_axes;
  const Tensor centred = sub(x, mean(x, axes, true));
  const Tensor rstd = pow(shift(mean(square(centred), axes, true), c.attrs().scalar), -0.5);
  const Tensor xhat = mul(centred, rstd);
  Tensor g = c.grad_output();
  if (c.attrs().relu) {  // the ReLU's derivative at the recomputed pre-activation: a constant mask
    NoGradScope constant;
    const Tensor pre = add(mul(xhat, reshape(gamma, layout.affine)), reshape(beta, layout.affine));
    Tensor mask = empty(pre.shape(), pre.dtype(), pre.device());
    dispatch(pre.device(), pre.dtype(), [&]<class K, class T>() {
      K::template unary<T>(kernels::UnaryOp::step, pre.data<T>(), mask.data<T>(), pre.numel(), 0.0);
    });
    g = mask;  // multiplied in below, outside the no-grad scope
  }
  if (c.attrs().relu) g = mul(c.grad_output(), g);
  if (c.needs_grad(1)) c.set_grad(1, reshape(sum_to(mul(g, xhat), layout.affine), gamma.shape()));
  if (c.needs_grad(2)) c.set_grad(2, reshape(sum_to(g, layout.affine), gamma.shape()));
  if (c.needs_grad(0)) {
    const Tensor gx = mul(g, reshape(gamma, layout.affine));
    c.set_grad(0, mul(rstd, sub(sub(gx, mean(gx, axes, true)), mul(xhat, mean(mul(gx, xhat), axes, true)))));
  }
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
const OpDef conv2d_op = {.name = "conv2d", .arity = 2, .num_outputs = 1, .saves = save_input(0) | save_input(1),
    .nondiff = 0, .is_view = false,
    .shape_rule = conv2d_rule, .forward = conv2d_forward, .backward = conv2d_backward,
    .samples = conv2d_samples};
const OpDef conv2d_input_grad_op = {.name = "conv2d_input_grad", .arity = 2, .num_outputs = 1,
    .saves = save_input(0) | save_input(1), .nondiff = 0, .is_view = false,
    .shape_rule = conv2d_input_grad_rule, .forward = conv2d_input_grad_forward,
    .backward = conv2d_input_grad_backward,
    .samples = [](Generator& g, DType d) {
      // 3x3 windows at stride 2 with padding overlap: the adjoint must accumulate.
      const Window2d w = square_window(3, 2, 1);
      return std::vector<OpSample>{
          make_sample("[1, 2, 5, 5] images, stride 2, padding 1",
                      {sample_uniform({1, 3, 3, 3}, g, d), sample_uniform({3, 2, 3, 3}, g, d)},
                      [w](const std::vector<Tensor>& in) { return conv2d_input_grad(in[0], in[1], w, {1, 2, 5, 5}); }),
          make_sample("task-grouped", {sample_uniform({2, 2, 2, 4, 4}, g, d), sample_uniform({2, 2, 1, 3, 3}, g, d)},
                      [](const std::vector<Tensor>& in) {
                        return conv2d_input_grad(in[0], in[1], square_window(3, 1, 1), {2, 2, 1, 4, 4});
                      })};
    }};
const OpDef conv2d_weight_grad_op = {.name = "conv2d_weight_grad", .arity = 2, .num_outputs = 1,
    .saves = save_input(0) | save_input(1), .nondiff = 0, .is_view = false,
    .shape_rule = conv2d_weight_grad_rule, .forward = conv2d_weight_grad_forward,
    .backward = conv2d_weight_grad_backward,
    .samples = [](Generator& g, DType d) {
      const Window2d w = square_window(3, 2, 1);
      return std::vector<OpSample>{
          make_sample("[2, 2, 5, 5] images, stride 2, padding 1",
                      {sample_uniform({2, 2, 5, 5}, g, d), sample_uniform({2, 3, 3, 3}, g, d)},
                      [w](const std::vector<Tensor>& in) { return conv2d_weight_grad(in[0], in[1], w, {3, 2, 3, 3}); }),
          make_sample("task-grouped", {sample_uniform({2, 2, 1, 4, 4}, g, d), sample_uniform({2, 2, 2, 4, 4}, g, d)},
                      [](const std::vector<Tensor>& in) {
                        return conv2d_weight_grad(in[0], in[1], square_window(3, 1, 1), {2, 2, 1, 3, 3});
                      })};
    }};
const OpDef batch_norm_op = {.name = "batch_norm", .arity = 3, .num_outputs = 1,
    .saves = save_input(0) | save_input(1) | save_input(2), .nondiff = 0, .is_view = false,
    .shape_rule = batch_norm_rule, .forward = batch_norm_forward, .backward = batch_norm_backward,
    .samples = batch_norm_samples};
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
  return {
      make_sample("3x3, padding 1",
                  {sample_uniform({2, 2, 5, 5}, gen, dtype), sample_uniform({3, 2, 3, 3}, gen, dtype)},
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
                      }),
          make_sample("[4, 3, 2, 2] with the fused ReLU",
                      {sample_uniform({4, 3, 2, 2}, gen, dtype), sample_uniform({3}, gen, dtype, 0.5, 1.5),
                       sample_uniform({3}, gen, dtype, -0.5, 0.5)},
                      [](const std::vector<Tensor>& in) { return batch_norm(in[0], in[1], in[2], {.relu = true}); })};
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
  const std::int64_t n = logits.shape()[0];
  if (labels.shape() != Shape{n})
    throw ShapeError("cross_entropy: labels have shape " + labels.shape().str() + ", expected [" + std::to_string(n) +
                     "] for logits " + logits.shape().str());
  return neg(mean(detail::take_along_last(log_softmax(logits, 1), labels, "cross_entropy")));
}

Tensor mse_loss(const Tensor& prediction, const Tensor& target) {
  if (!prediction.defined() || !target.defined()) throw ValueError("mse_loss: an input is an undefined tensor");
  if (prediction.shape() != target.shape())
    throw ShapeError("mse_loss: prediction " + prediction.shape().str() + " and target " + target.shape().str() +
                     " differ in shape");
  return mean(square(sub(prediction, target)));
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const Conv2dOptions& options) {
  if (options.stride < 1 || options.padding < 0)
    throw ValueError("conv2d: stride must be >= 1 and padding >= 0, got stride " + std::to_string(options.stride) +
                     " and padding " + std::to_string(options.padding));
  const Tensor* in[] = {&x, &weight};
  detail::Attrs attrs;
  attrs.window = {1, 1, options.stride, options.stride, options.padding, options.padding};
  return detail::apply(detail::conv2d_op, in, attrs);
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
  Tensor index = empty(out_shape, DType::i64, x.device());
  detail::dispatch(x.device(), x.dtype(), [&]<class K, class T>() {
    K::template max_pool_argmax<T>(x.data<T>(), x.numel() / (h * wd), h, wd, w, index.data<std::int64_t>());
  });
  return detail::take_checked(x, index, true);
}

Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const BatchNormOptions& options) {
  if (!(options.eps >= 0)) throw ValueError("batch_norm: eps must be >= 0, got " + std::to_string(options.eps));
  if (options.group_axes < 0 || options.group_axes > kMaxRank - 2)
    throw ValueError("batch_norm: group_axes must be in 0.." + std::to_string(kMaxRank - 2) + ", got " +
                     std::to_string(options.group_axes));
  const Tensor* in[] = {&x, &gamma, &beta};
  detail::Attrs attrs;
  attrs.scalar = options.eps;
  attrs.axis = options.group_axes;
  attrs.relu = options.relu;
  return detail::apply(detail::batch_norm_op, in, attrs);
}

}  // namespace metatape
