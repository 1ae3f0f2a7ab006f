// Neural-network ops. Primitives: log_softmax, conv2d with its two adjoints
// (im2col + GEMM, in chunks), batch_norm (one fused pass forward), and
// max_pool2d with its adjoint max_unpool2d (whose own adjoint is a take at
// the same indices). Compositions, differentiated through their parts:
// softmax and the losses are reductions.
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
// The padded input must hold one whole window: out_h's division truncates
// toward zero, so a smaller one would still count one output row.
void require_window(const char* op, const Window2d& w, std::int64_t h, std::int64_t wd) {
  if (h + 2 * w.pad_h < w.kernel_h || wd + 2 * w.pad_w < w.kernel_w || w.out_h(h) < 1 || w.out_w(wd) < 1)
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

// --- conv2d: x ⋆ w, plus an optional bias (input 2) ---
// The bias is [O], or for task-grouped x also [T, O] (one per task).
void require_conv_bias(Inputs in, const kernels::ConvShape& s, bool grouped) {
  const Tensor& bias = *in[2];
  require_floating("conv2d", bias, 2);
  require_same_dtype("conv2d", *in[0], bias);
  const Shape shared{s.out_channels}, per_group{s.groups, s.out_channels};
  if (bias.shape() != shared && !(grouped && bias.shape() == per_group))
    throw ShapeError("conv2d: bias must be " + shared.str() + (grouped ? " or " + per_group.str() : std::string()) +
                     " for weight " + in[1]->shape().str() + ", got " + bias.shape().str());
}

void conv2d_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  if (in.size() != 2 && in.size() != 3)
    throw ValueError("conv2d: expected x, weight and an optional bias, got " + std::to_string(in.size()) + " inputs");
  require_floating("conv2d", *in[0], 0);
  require_floating("conv2d", *in[1], 1);
  require_same_dtype("conv2d", *in[0], *in[1]);
  const auto s = conv_shape("conv2d", in[0]->shape(), in[1]->shape(), attrs.window);
  if (in.size() == 3) require_conv_bias(in, s, in[0]->rank() == 5);
  out[0] = {conv_output_shape(in[0]->shape(), s), in[0]->dtype()};
}
void conv2d_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  auto s = conv_shape("conv2d", in[0]->shape(), in[1]->shape(), attrs.window);
  s.relu = attrs.relu;
  const Tensor* bias = in.size() == 3 ? in[2] : nullptr;
  const std::int64_t bias_group_stride = bias != nullptr && bias->rank() == 2 ? s.out_channels : 0;
  with_scratch(out[0].device(), out[0].dtype(), s, [&]<class K, class T>(T* scratch) {
    K::template conv2d_forward<T>(s, in[0]->data<T>(), in[1]->data<T>(), bias ? bias->data<T>() : nullptr,
                                  bias_group_stride, out[0].data<T>(), scratch);
  });
}
Tensor conv2d_input_grad(const Tensor& g, const Tensor& w, const Window2d& window, const Shape& x_shape);
Tensor conv2d_weight_grad(const Tensor& x, const Tensor& g, const Window2d& window, const Shape& w_shape);
// The gradients for the output gradient g. The bias's sums g over the
// images and pixels (and the tasks, for a shared bias of task-grouped x).
void conv2d_gradients(BackwardContext& c, const Tensor& g) {
  const Tensor &x = c.input(0), &w = c.input(1);
  if (c.needs_grad(0)) c.set_grad(0, conv2d_input_grad(g, w, c.attrs().window, x.shape()));
  if (c.needs_grad(1)) c.set_grad(1, conv2d_weight_grad(x, g, c.attrs().window, w.shape()));
  if (c.num_inputs() == 3 && c.needs_grad(2)) {
    const Shape& bias = c.input_shape(2);
    const std::int64_t channels = bias[bias.rank() - 1];
    const Shape to =
        x.rank() == 5 ? Shape{bias.rank() == 2 ? bias[0] : 1, 1, channels, 1, 1} : Shape{1, channels, 1, 1};
    c.set_grad(2, reshape(sum_to(g, to), bias));
  }
}
void conv2d_backward(BackwardContext& c) { conv2d_gradients(c, c.grad_output()); }

// --- conv2d_relu: max(conv2d(x, w) + bias, 0), one pass over the output ---
// Its rule and forward are conv2d's, with attrs.relu set. The ReLU's
// derivative is read off the saved output: y > 0 exactly where the
// pre-activation is, so g is masked as relu's backward would mask it.
void conv2d_relu_backward(BackwardContext& c) {
  conv2d_gradients(c, times_mask(kernels::UnaryOp::step, c.grad_output(), c.output()));
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

// An op of two inputs whose attributes are a window and an output shape:
// the convolution's adjoints and max-pool's.
Tensor apply_windowed(const OpDef& op, const Tensor& a, const Tensor& b, const Window2d& window, const Shape& shape) {
  const Tensor* in[] = {&a, &b};
  Attrs attrs;
  attrs.window = window;
  attrs.shape = shape;
  return apply(op, in, attrs);
}

Tensor conv2d_input_grad(const Tensor& g, const Tensor& w, const Window2d& window, const Shape& x_shape) {
  return apply_windowed(conv2d_input_grad_op, g, w, window, x_shape);
}

Tensor conv2d_weight_grad(const Tensor& x, const Tensor& g, const Window2d& window, const Shape& w_shape) {
  return apply_windowed(conv2d_weight_grad_op, x, g, window, w_shape);
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

// op names the op in errors: batch_norm or batch_norm_max_pool2d.
NormLayout norm_layout(const char* op, const Shape& x, const Shape& gamma, int group_axes, double eps, bool relu) {
  const int channel = group_axes + 1;
  if (x.rank() < group_axes + 2)
    throw ShapeError(std::string(op) + ": x " + x.str() + " needs a batch and a channel axis after " +
                     std::to_string(group_axes) + " group axes");
  Shape per_channel{x[channel]}, per_group;
  for (int i = 0; i < group_axes; ++i) per_group.push_back(x[i]);
  per_group.push_back(x[channel]);
  if (gamma != per_channel && gamma != per_group)
    throw ShapeError(std::string(op) + ": gamma and beta must be " + per_channel.str() + " or " + per_group.str() +
                     " for x " + x.str() + ", got " + gamma.str());
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

// The dtypes of batch_norm's three inputs and the shapes of γ and β agree,
// in the words of `op`; the layout (norm_layout) checks x against γ.
void require_norm_inputs(const char* op, Inputs in) {
  for (int i = 0; i < 3; ++i) require_floating(op, *in[static_cast<std::size_t>(i)], i);
  require_same_dtype(op, *in[0], *in[1]);
  require_same_dtype(op, *in[0], *in[2]);
  if (in[1]->shape() != in[2]->shape())
    throw ShapeError(std::string(op) + ": gamma " + in[1]->shape().str() + " and beta " + in[2]->shape().str() +
                     " differ in shape");
}

void batch_norm_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  require_norm_inputs("batch_norm", in);
  (void)norm_layout("batch_norm", in[0]->shape(), in[1]->shape(), attrs.axis, attrs.scalar, attrs.relu);
  out[0] = {in[0]->shape(), in[0]->dtype()};
}
void batch_norm_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  const NormLayout layout =
      norm_layout("batch_norm", in[0]->shape(), in[1]->shape(), attrs.axis, attrs.scalar, attrs.relu);
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
// c is batch_norm's context or batch_norm_max_pool2d's (the same inputs and
// attributes); g is the gradient of batch_norm's output.
void record_batch_norm_backward(BackwardContext& c, const NormLayout& layout, Tensor g) {
  const Tensor &x = c.input(0), &gamma = c.input(1), &beta = c.input(2);
  const std::vector<int>& axes = layout.stat_axes;
  const Tensor centred = sub(x, mean(x, axes, true));
  const Tensor rstd = pow(shift(mean(square(centred), axes, true), c.attrs().scalar), -0.5);
  const Tensor xhat = mul(centred, rstd);
  if (c.attrs().relu) {
    // The ReLU's derivative at the pre-activation, recomputed as a constant
    // (its own derivative, through the mask, is zero).
    Tensor pre;
    {
      NoGradScope constant;
      pre = add(mul(xhat, reshape(gamma, layout.affine)), reshape(beta, layout.affine));
    }
    g = times_mask(kernels::UnaryOp::step, g, pre);
  }
  if (c.needs_grad(1)) c.set_grad(1, reshape(sum_to(mul(g, xhat), layout.affine), gamma.shape()));
  if (c.needs_grad(2)) c.set_grad(2, reshape(sum_to(g, layout.affine), gamma.shape()));
  if (c.needs_grad(0)) {
    const Tensor gx = mul(g, reshape(gamma, layout.affine));
    c.set_grad(0, mul(rstd, sub(sub(gx, mean(gx, axes, true)), mul(xhat, mean(mul(gx, xhat), axes, true)))));
  }
}

// The three gradients by one kernel, kernel(dx, dgamma, dbeta), for a
// backward that is not recorded.
template <class Kernel>
void set_batch_norm_grads(BackwardContext& c, Kernel&& kernel) {
  const Tensor &x = c.input(0), &gamma = c.input(1);
  Tensor dx = empty(x.shape(), x.dtype(), x.device()), dgamma = empty(gamma.shape(), x.dtype(), x.device()),
         dbeta = empty(gamma.shape(), x.dtype(), x.device());
  kernel(dx, dgamma, dbeta);
  if (c.needs_grad(0)) c.set_grad(0, dx);
  if (c.needs_grad(1)) c.set_grad(1, dgamma);
  if (c.needs_grad(2)) c.set_grad(2, dbeta);
}

void batch_norm_backward(BackwardContext& c) {
  const Tensor &x = c.input(0), &gamma = c.input(1), &beta = c.input(2);
  const NormLayout layout =
      norm_layout("batch_norm", x.shape(), gamma.shape(), c.attrs().axis, c.attrs().scalar, c.attrs().relu);
  if (grad_enabled()) return record_batch_norm_backward(c, layout, c.grad_output());
  set_batch_norm_grads(c, [&](Tensor& dx, Tensor& dgamma, Tensor& dbeta) {
    const Tensor& g = c.grad_output();
    dispatch(x.device(), x.dtype(), [&]<class K, class T>() {
      K::template batch_norm_backward<T>(layout.kernel, x.data<T>(), gamma.data<T>(), beta.data<T>(), g.data<T>(),
                                         dx.data<T>(), dgamma.data<T>(), dbeta.data<T>());
    });
  });
}

// --- max_pool2d: each window's maximum, and (output 1, i64) its index into x ---
// x is [..., H, W] of rank 3 to 5, pooled plane by plane over attrs.window.
struct PoolPlanes {
  std::int64_t planes, h, w;
};

PoolPlanes pool_planes(const char* op, const Shape& x, const Window2d& window) {
  if (x.rank() < 3 || x.rank() > 5)
    throw ShapeError(std::string(op) + ": expected [..., H, W] of rank 3 to 5, got " + x.str());
  const std::int64_t h = x[x.rank() - 2], w = x[x.rank() - 1];
  if (h == 0 || w == 0)  // windows of padding alone have no maximum
    throw ShapeError(std::string(op) + ": the input " + x.str() + " has no pixels to pool");
  require_window(op, window, h, w);
  return {x.numel() / (h * w), h, w};
}

Shape pooled_shape(const Shape& x, const Window2d& window) {
  Shape out = x;
  out[x.rank() - 2] = window.out_h(x[x.rank() - 2]);
  out[x.rank() - 1] = window.out_w(x[x.rank() - 1]);
  return out;
}

void max_pool2d_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  require_floating("max_pool2d", *in[0], 0);
  (void)pool_planes("max_pool2d", in[0]->shape(), attrs.window);
  const Shape pooled = pooled_shape(in[0]->shape(), attrs.window);
  out[0] = {pooled, in[0]->dtype()};
  out[1] = {pooled, DType::i64};
}
void max_pool2d_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  const PoolPlanes p = pool_planes("max_pool2d", in[0]->shape(), attrs.window);
  dispatch(in[0]->device(), in[0]->dtype(), [&]<class K, class T>() {
    K::template max_pool<T>(in[0]->data<T>(), p.planes, p.h, p.w, attrs.window, out[0].data<T>(),
                            out[1].data<std::int64_t>());
  });
}
void max_pool2d_backward(BackwardContext& c) {
  c.set_grad(0, max_unpool2d(c.grad_output(0), c.output(1), c.attrs().window, c.input_shape(0)));
}

// --- max_unpool2d: zeros(attrs.shape) with entry index[i] += g[i] ---
// The adjoint of max_pool2d, with its index output: every index lies in its
// own plane, as max_pool2d writes them (which is why this op is internal).
void max_unpool2d_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  require_floating("max_unpool2d", *in[0], 0);
  require_index("max_unpool2d", *in[1], 1);
  (void)pool_planes("max_unpool2d", attrs.shape, attrs.window);
  const Shape pooled = pooled_shape(attrs.shape, attrs.window);
  if (in[0]->shape() != pooled || in[1]->shape() != pooled)
    throw ShapeError("max_unpool2d: gradient " + in[0]->shape().str() + " and index " + in[1]->shape().str() +
                     " must both be " + pooled.str() + ", the pooled shape of " + attrs.shape.str());
  out[0] = {attrs.shape, in[0]->dtype()};
}
void max_unpool2d_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  const PoolPlanes p = pool_planes("max_unpool2d", attrs.shape, attrs.window);
  dispatch(in[0]->device(), in[0]->dtype(), [&]<class K, class T>() {
    K::template max_unpool<T>(in[0]->data<T>(), in[1]->data<std::int64_t>(), p.planes, p.h, p.w, attrs.window,
                              out[0].data<T>());
  });
}
void max_unpool2d_backward(BackwardContext& c) { c.set_grad(0, take_checked(c.grad_output(), c.input(1), true)); }

// --- batch_norm_max_pool2d: max_pool2d(batch_norm(x, γ, β), 2×2) in one op ---
// Outputs the maxima and (output 1, i64) their indices into x, as
// max_pool2d's. x is [G..., N, C, H, W] (attrs.axis group axes); the window
// is kernels::kNormPoolWindow. On large maps the CPU keeps only one
// normalised (or, backward, unpooled) map at a time, in a buffer of the
// thread's.
NormLayout norm_pool_layout(const Shape& x, const Shape& gamma, const Attrs& attrs) {
  if (x.rank() != attrs.axis + 4)
    throw ShapeError("batch_norm_max_pool2d: x must be [groups..., N, C, H, W] with " + std::to_string(attrs.axis) +
                     " group axes, got " + x.str());
  require_window("batch_norm_max_pool2d", kernels::kNormPoolWindow, x[x.rank() - 2], x[x.rank() - 1]);
  return norm_layout("batch_norm_max_pool2d", x, gamma, attrs.axis, attrs.scalar, attrs.relu);
}

void batch_norm_max_pool2d_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  require_norm_inputs("batch_norm_max_pool2d", in);
  (void)norm_pool_layout(in[0]->shape(), in[1]->shape(), attrs);
  const Shape pooled = pooled_shape(in[0]->shape(), kernels::kNormPoolWindow);
  out[0] = {pooled, in[0]->dtype()};
  out[1] = {pooled, DType::i64};
}
void batch_norm_max_pool2d_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  const Shape& x = in[0]->shape();
  const NormLayout layout = norm_pool_layout(x, in[1]->shape(), attrs);
  dispatch(out[0].device(), out[0].dtype(), [&]<class K, class T>() {
    Tensor scratch =
        empty(Shape{K::batch_norm_max_pool_scratch_size(layout.kernel)}, in[0]->dtype(), in[0]->device());
    K::template batch_norm_max_pool_forward<T>(layout.kernel, x[x.rank() - 2], x[x.rank() - 1], in[0]->data<T>(),
                                               in[1]->data<T>(), in[2]->data<T>(), out[0].data<T>(),
                                               out[1].data<std::int64_t>(), scratch.data<T>());
  });
}
// Recorded: max_pool2d's adjoint, then batch_norm's recorded backward.
void batch_norm_max_pool2d_backward(BackwardContext& c) {
  const Tensor &x = c.input(0), &gamma = c.input(1), &beta = c.input(2);
  const NormLayout layout = norm_pool_layout(x.shape(), gamma.shape(), c.attrs());
  const Tensor& index = c.output(1);
  if (grad_enabled())
    return record_batch_norm_backward(c, layout,
                                      max_unpool2d(c.grad_output(0), index, kernels::kNormPoolWindow, x.shape()));
  const Tensor& g = c.grad_output(0);
  const std::int64_t h = x.dim(x.rank() - 2), w = x.dim(x.rank() - 1);
  dispatch(x.device(), x.dtype(), [&]<class K, class T>() {
    Tensor scratch = empty(Shape{K::batch_norm_max_pool_scratch_size(layout.kernel)}, x.dtype(), x.device());
    set_batch_norm_grads(c, [&](Tensor& dx, Tensor& dgamma, Tensor& dbeta) {
      K::template batch_norm_max_pool_backward<T>(layout.kernel, h, w, x.data<T>(), gamma.data<T>(), beta.data<T>(),
                                                  g.data<T>(), index.data<std::int64_t>(), dx.data<T>(),
                                                  dgamma.data<T>(), dbeta.data<T>(), scratch.data<T>());
    });
  });
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
const OpDef conv2d_op = {.name = "conv2d", .arity = kVariadic, .num_outputs = 1, .saves = save_input(0) | save_input(1),
    .nondiff = 0, .is_view = false,
    .shape_rule = conv2d_rule, .forward = conv2d_forward, .backward = conv2d_backward,
    .samples = conv2d_samples};
const OpDef conv2d_relu_op = {.name = "conv2d_relu", .arity = kVariadic, .num_outputs = 1,
    .saves = save_input(0) | save_input(1) | kSaveOutputs, .nondiff = 0, .is_view = false,
    .shape_rule = conv2d_rule, .forward = conv2d_forward, .backward = conv2d_relu_backward,
    .samples = conv2d_relu_samples};
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
const OpDef batch_norm_max_pool2d_op = {.name = "batch_norm_max_pool2d", .arity = 3, .num_outputs = 2,
    .saves = save_input(0) | save_input(1) | save_input(2) | kSaveOutputs, .nondiff = 0, .is_view = false,
    .shape_rule = batch_norm_max_pool2d_rule, .forward = batch_norm_max_pool2d_forward,
    .backward = batch_norm_max_pool2d_backward, .samples = batch_norm_max_pool2d_samples};
const OpDef max_pool2d_op = {.name = "max_pool2d", .arity = 1, .num_outputs = 2, .saves = kSaveOutputs,
    .nondiff = 0, .is_view = false,
    .shape_rule = max_pool2d_rule, .forward = max_pool2d_forward, .backward = max_pool2d_backward,
    .samples = max_pool2d_samples};
const OpDef max_unpool2d_op = {.name = "max_unpool2d", .arity = 2, .num_outputs = 1, .saves = save_input(1),
    .nondiff = index_input(1), .is_view = false,
    .shape_rule = max_unpool2d_rule, .forward = max_unpool2d_forward, .backward = max_unpool2d_backward,
    .samples = max_unpool2d_samples};
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
                  [](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], {.stride = 1, .padding = 1}); }),
      make_sample(
          "with a bias, stride 2",
          {sample_uniform({2, 2, 5, 5}, gen, dtype), sample_uniform({3, 2, 3, 3}, gen, dtype),
           sample_uniform({3}, gen, dtype)},
          [](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], {.stride = 2, .padding = 1}); }),
      make_sample("task-batched, weight and bias per task",
                  {sample_uniform({2, 2, 1, 4, 4}, gen, dtype), sample_uniform({2, 3, 1, 3, 3}, gen, dtype),
                   sample_uniform({2, 3}, gen, dtype)},
                  [](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], {.padding = 1}); }),
      make_sample("task-batched, one bias for every task",
                  {sample_uniform({2, 3, 1, 4, 4}, gen, dtype), sample_uniform({2, 2, 1, 3, 3}, gen, dtype),
                   sample_uniform({2}, gen, dtype)},
                  [](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2]); })};
}

// The pre-activations are kept at least 0.05 away from 0, where the ReLU's
// kink would break the finite differences: x in [0.5, 1.5], and each output
// channel's weights all of one sign, |w| in [0.5, 1.5] (the first channel
// positive, every window meeting at least one pixel: |y − b| >= 0.25), with
// |b| <= 0.2. So one channel is kept whole and the other zeroed.
std::vector<OpSample> conv2d_relu_samples(Generator& gen, DType dtype) {
  // w [.., 2, C, kh, kw] from two same-shaped magnitudes: +first, −second.
  const auto signed_channels = [](const Tensor& plus, const Tensor& minus, int axis) {
    return stack({plus, neg(minus)}, axis);
  };
  const auto magnitudes = [&](const Shape& shape) { return sample_uniform(shape, gen, dtype, 0.5, 1.5); };
  return {make_sample("3x3, stride 2, padding 1, with a bias",
                      {magnitudes({2, 2, 5, 5}), magnitudes({2, 3, 3}), magnitudes({2, 3, 3}),
                       sample_uniform({2}, gen, dtype, -0.2, 0.2)},
                      [signed_channels](const std::vector<Tensor>& in) {
                        return conv2d(in[0], signed_channels(in[1], in[2], 0), in[3],
                                      {.stride = 2, .padding = 1, .relu = true});
                      }),
          make_sample("task-batched, weight and bias per task",
                      {magnitudes({2, 2, 1, 4, 4}), magnitudes({2, 1, 3, 3}), magnitudes({2, 1, 3, 3}),
                       sample_uniform({2, 2}, gen, dtype, -0.2, 0.2)},
                      [signed_channels](const std::vector<Tensor>& in) {
                        return conv2d(in[0], signed_channels(in[1], in[2], 1), in[3], {.padding = 1, .relu = true});
                      }),
          make_sample("no bias", {magnitudes({1, 2, 4, 4}), magnitudes({2, 3, 3}), magnitudes({2, 3, 3})},
                      [signed_channels](const std::vector<Tensor>& in) {
                        return conv2d(in[0], signed_channels(in[1], in[2], 0), {.padding = 1, .relu = true});
                      })};
}

std::vector<OpSample> max_pool2d_samples(Generator& gen, DType dtype) {
  return {make_sample("2x2", {sample_distinct({2, 2, 4, 4}, gen, dtype)},
                      [](const std::vector<Tensor>& in) { return max_pool2d(in[0], {.kernel = 2}); }),
          make_sample("3x3, stride 2, padding 1", {sample_distinct({1, 2, 5, 5}, gen, dtype)},
                      [](const std::vector<Tensor>& in) {
                        return max_pool2d(in[0], {.kernel = 3, .stride = 2, .padding = 1});
                      }),
          make_sample("task-batched 2x2 on 5x5 (the last row and column in no window)",
                      {sample_distinct({2, 1, 2, 5, 5}, gen, dtype)},
                      [](const std::vector<Tensor>& in) { return max_pool2d(in[0], {.kernel = 2}); })};
}

// Gradients routed to the indices max_pool2d picks in random images, with
// windows apart and overlapping (where entries receive several gradients).
std::vector<OpSample> max_unpool2d_samples(Generator& gen, DType dtype) {
  std::vector<OpSample> samples;
  const std::pair<Shape, Window2d> cases[] = {{Shape{2, 2, 4, 5}, square_window(2, 2, 0)},
                                              {Shape{1, 2, 5, 5}, square_window(3, 1, 1)}};
  for (const auto& [shape, window] : cases) {
    const Tensor x = sample_distinct(shape, gen, dtype);
    const Tensor* in[] = {&x};
    Attrs attrs;
    attrs.window = window;
    Tensor pooled[2];
    apply(max_pool2d_op, in, attrs, pooled);
    OpSample sample = make_sample(
        "into " + shape.str() + ", " + std::to_string(window.kernel_h) + "x" + std::to_string(window.kernel_w) +
            " windows at stride " + std::to_string(window.stride_h),
        {sample_uniform(pooled[0].shape(), gen, dtype), pooled[1]},
        [shape, window](const std::vector<Tensor>& in) { return max_unpool2d(in[0], in[1], window, shape); });
    sample.differentiable[1] = false;
    samples.push_back(std::move(sample));
  }
  return samples;
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

Tensor max_unpool2d(const Tensor& g, const Tensor& index, const Window2d& window, const Shape& shape) {
  return apply_windowed(max_unpool2d_op, g, index, window, shape);
}

// Distinct inputs and positive γ: each window's maximum is clear of the
// finite differences' steps, as in max_pool2d's samples.
std::vector<OpSample> batch_norm_max_pool2d_samples(Generator& gen, DType dtype) {
  return {make_sample("[2, 3, 4, 4] images",
                      {sample_distinct({2, 3, 4, 4}, gen, dtype), sample_uniform({3}, gen, dtype, 0.5, 1.5),
                       sample_uniform({3}, gen, dtype)},
                      [](const std::vector<Tensor>& in) { return batch_norm_max_pool2d(in[0], in[1], in[2]); }),
          make_sample("task-batched [2, 2, 2, 4, 4] with the fused ReLU, affine per task",
                      {sample_distinct({2, 2, 2, 4, 4}, gen, dtype), sample_uniform({2, 2}, gen, dtype, 0.5, 1.5),
                       sample_uniform({2, 2}, gen, dtype, -0.5, 0.5)},
                      [](const std::vector<Tensor>& in) {
                        return batch_norm_max_pool2d(in[0], in[1], in[2], {.eps = 1e-3, .group_axes = 1, .relu = true});
                      }),
          make_sample("[3, 2, 5, 5] with the fused ReLU (the last row and column in no window)",
                      {sample_distinct({3, 2, 5, 5}, gen, dtype), sample_uniform({2}, gen, dtype, 0.5, 1.5),
                       sample_uniform({2}, gen, dtype, -0.5, 0.5)},
                      [](const std::vector<Tensor>& in) {
                        return batch_norm_max_pool2d(in[0], in[1], in[2], {.relu = true});
                      }),
          make_sample("[1, 2, 11, 10]: maps the CPU normalises and pools one at a time, the last row in no window",
                      {sample_distinct({1, 2, 11, 10}, gen, dtype), sample_uniform({2}, gen, dtype, 0.5, 1.5),
                       sample_uniform({2}, gen, dtype)},
                      [](const std::vector<Tensor>& in) { return batch_norm_max_pool2d(in[0], in[1], in[2]); })};
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

namespace {

Tensor apply_conv2d(std::span<const Tensor* const> in, const Conv2dOptions& options) {
  if (options.stride < 1 || options.padding < 0)
    throw ValueError("conv2d: stride must be >= 1 and padding >= 0, got stride " + std::to_string(options.stride) +
                     " and padding " + std::to_string(options.padding));
  detail::Attrs attrs;
  attrs.window = {1, 1, options.stride, options.stride, options.padding, options.padding};
  attrs.relu = options.relu;
  return detail::apply(options.relu ? detail::conv2d_relu_op : detail::conv2d_op, in, attrs);
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Conv2dOptions& options) {
  const Tensor* in[] = {&x, &weight};
  return apply_conv2d(in, options);
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dOptions& options) {
  const Tensor* in[] = {&x, &weight, &bias};
  return apply_conv2d(in, options);
}

Tensor max_pool2d(const Tensor& x, const Pool2dOptions& options) {
  if (!x.defined()) throw ValueError("max_pool2d: input 0 is an undefined tensor");
  const std::int64_t stride = options.stride == 0 ? options.kernel : options.stride;
  if (options.kernel < 1 || stride < 1 || options.padding < 0 || 2 * options.padding > options.kernel)
    throw ValueError("max_pool2d: need kernel >= 1, stride >= 1 and 0 <= padding <= kernel / 2, got kernel " +
                     std::to_string(options.kernel) + ", stride " + std::to_string(stride) + ", padding " +
                     std::to_string(options.padding));
  const Tensor* in[] = {&x};
  detail::Attrs attrs;
  attrs.window = detail::square_window(options.kernel, stride, options.padding);
  Tensor out[2];  // the maxima, and their indices (kept for the backward)
  detail::apply(detail::max_pool2d_op, in, attrs, out);
  return out[0];
}

namespace {

// batch_norm's attributes, its options checked in the words of `op`.
detail::Attrs batch_norm_attrs(const char* op, const BatchNormOptions& options) {
  if (!(options.eps >= 0)) throw ValueError(std::string(op) + ": eps must be >= 0, got " + std::to_string(options.eps));
  if (options.group_axes < 0 || options.group_axes > kMaxRank - 2)
    throw ValueError(std::string(op) + ": group_axes must be in 0.." + std::to_string(kMaxRank - 2) + ", got " +
                     std::to_string(options.group_axes));
  detail::Attrs attrs;
  attrs.scalar = options.eps;
  attrs.axis = options.group_axes;
  attrs.relu = options.relu;
  return attrs;
}

}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const BatchNormOptions& options) {
  const Tensor* in[] = {&x, &gamma, &beta};
  return detail::apply(detail::batch_norm_op, in, batch_norm_attrs("batch_norm", options));
}

Tensor batch_norm_max_pool2d(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             const BatchNormOptions& options) {
  const Tensor* in[] = {&x, &gamma, &beta};
  Tensor out[2];  // the maxima, and their indices (kept for the backward)
  detail::apply(detail::batch_norm_max_pool2d_op, in, batch_norm_attrs("batch_norm_max_pool2d", options), out);
  return out[0];
}

}  // namespace metatape
