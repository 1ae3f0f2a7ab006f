// Elementwise ops. Each op: its shape rule, forward and backward side by
// side, then its sample calls. Backward rules use only differentiable ops
// (or constants such as relu's 0/1 mask, whose own derivative is zero), so
// they can be recorded and differentiated again.
#include <cmath>
#include <cstring>

#include "backend.hpp"
#include "kernels/cpu/strided.hpp"
#include "metatape/error.hpp"
#include "metatape/ops.hpp"
#include "metatape/tape.hpp"
#include "op_defs.hpp"
#include "samples.hpp"

namespace metatape::detail {
namespace {

using kernels::BinaryOp;
using kernels::UnaryOp;

// --- shared pieces ---

void binary_rule(const char* op, Inputs in, std::span<OutputSpec> out) {
  require_floating(op, *in[0], 0);
  require_floating(op, *in[1], 1);
  require_same_dtype(op, *in[0], *in[1]);
  out[0] = {broadcast_shapes(in[0]->shape(), in[1]->shape(), op), in[0]->dtype()};
}

template <BinaryOp K>
void binary_forward(Inputs in, const Attrs&, std::span<Tensor> out) {
  const Tensor &a = *in[0], &b = *in[1];
  Tensor& y = out[0];
  std::int64_t a_strides[kMaxRank], b_strides[kMaxRank];
  kernels::cpu::broadcast_strides(a.rank(), a.shape().begin(), y.rank(), y.shape().begin(), a_strides);
  kernels::cpu::broadcast_strides(b.rank(), b.shape().begin(), y.rank(), y.shape().begin(), b_strides);
  dispatch(y.device(), y.dtype(), [&]<class Kernels, class T>() {
    Kernels::template binary<T>(K, y.rank(), y.shape().begin(), a.data<T>(), a_strides, b.data<T>(), b_strides,
                                y.data<T>());
  });
}

// Two floating operands of one dtype and one shape (no broadcasting), and
// an output of that shape: add_scaled's and the mask products' rule.
void same_shape_rule(const char* op, Inputs in, std::span<OutputSpec> out) {
  require_floating(op, *in[0], 0);
  require_floating(op, *in[1], 1);
  require_same_dtype(op, *in[0], *in[1]);
  if (in[0]->shape() != in[1]->shape())
    throw ShapeError(std::string(op) + ": operands must have one shape, got " + in[0]->shape().str() + " and " +
                     in[1]->shape().str());
  out[0] = {in[0]->shape(), in[0]->dtype()};
}

void unary_rule(const char* op, Inputs in, std::span<OutputSpec> out) {
  require_floating(op, *in[0], 0);
  out[0] = {in[0]->shape(), in[0]->dtype()};
}

template <UnaryOp K>
void unary_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  dispatch(out[0].device(), out[0].dtype(), [&]<class Kernels, class T>() {
    Kernels::template unary<T>(K, in[0]->data<T>(), out[0].data<T>(), out[0].numel(), attrs.scalar);
  });
}

// Two random shapes that broadcast together: a random result shape of rank
// 1 to 4 with dimensions 1 to 3; each operand drops some leading dimensions
// and turns some others into 1.
std::pair<Shape, Shape> random_broadcast_pair(Generator& gen) {
  const int rank = 1 + static_cast<int>(gen.below(4));
  Shape full;
  for (int i = 0; i < rank; ++i) full.push_back(1 + gen.below(3));
  const auto operand = [&] {
    const int dropped = static_cast<int>(gen.below(rank));
    Shape s;
    for (int i = dropped; i < rank; ++i) s.push_back(gen.uniform01() < 0.3 ? 1 : full[i]);
    return s;
  };
  Shape a = operand();
  return {a, operand()};
}

// Broadcast cases for binary samples: equal shapes, a row against a column,
// a trailing vector, a scalar, size-1 dimensions on both sides, and three
// random pairs.
std::vector<OpSample> binary_samples(Generator& gen, DType dtype, Tensor (*fn)(const Tensor&, const Tensor&),
                                     bool positive_rhs) {
  const std::vector<std::pair<Shape, Shape>> cases = {{{3, 4}, {3, 4}}, {{3, 1}, {1, 4}},       {{2, 3, 4}, {4}},
                                                      {{}, {2, 3}},     {{1, 3, 1}, {2, 1, 5}}, {{2, 3}, {}}};
  std::vector<OpSample> samples;
  auto all_cases = cases;
  for (int k = 0; k < 3; ++k) all_cases.push_back(random_broadcast_pair(gen));
  for (const auto& [sa, sb] : all_cases) {
    Tensor b = positive_rhs ? sample_uniform(sb, gen, dtype, 0.5, 2.0) : sample_uniform(sb, gen, dtype);
    samples.push_back(make_sample(sa.str() + " by " + sb.str(), {sample_uniform(sa, gen, dtype), b},
                                  [fn](const std::vector<Tensor>& in) { return fn(in[0], in[1]); }));
  }
  return samples;
}

// Unary samples on a matrix and a rank-4 tensor, with inputs drawn by `draw`.
std::vector<OpSample> unary_samples(Generator& gen, DType dtype, std::function<Tensor(const Tensor&)> fn,
                                    Tensor (*draw)(const Shape&, Generator&, DType, double, double), double low,
                                    double high) {
  std::vector<OpSample> samples;
  for (const Shape& s : {Shape{3, 4}, Shape{2, 1, 3, 2}})
    samples.push_back(make_sample(s.str(), {draw(s, gen, dtype, low, high)},
                                  [fn](const std::vector<Tensor>& in) { return fn(in[0]); }));
  return samples;
}

std::vector<OpSample> smooth_unary(Generator& gen, DType dtype, Tensor (*fn)(const Tensor&)) {
  return unary_samples(gen, dtype, fn, sample_uniform, -1.5, 1.5);
}
std::vector<OpSample> positive_unary(Generator& gen, DType dtype, Tensor (*fn)(const Tensor&)) {
  return unary_samples(gen, dtype, fn, sample_uniform, 0.5, 2.0);
}
std::vector<OpSample> kinked_unary(Generator& gen, DType dtype, Tensor (*fn)(const Tensor&)) {
  return unary_samples(gen, dtype, fn, sample_away_from_zero, 0.2, 1.5);
}

// --- add: a + b ---
// An operand of the output's shape gets g itself, added into its adjoint
// in place where the tape offers it; a broadcast one, g summed to its shape.
void add_backward(BackwardContext& c) {
  const Tensor& g = c.grad_output();
  for (int i = 0; i < 2; ++i) {
    if (!c.needs_grad(i)) continue;
    if (g.shape() == c.input_shape(i))
      set_broadcast_grad(c, i, g);
    else
      c.set_grad(i, sum_to(g, c.input_shape(i)));
  }
}

// --- add_scaled: x + alpha · y, x and y of one shape ---
void add_scaled_rule(Inputs in, const Attrs&, std::span<OutputSpec> out) { same_shape_rule("add_scaled", in, out); }
void add_scaled_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  dispatch(out[0].device(), out[0].dtype(), [&]<class Kernels, class T>() {
    Kernels::template add_scaled<T>(in[0]->data<T>(), in[1]->data<T>(), out[0].data<T>(), out[0].numel(), attrs.scalar);
  });
}
void add_scaled_backward(BackwardContext& c) {
  if (c.needs_grad(0)) set_broadcast_grad(c, 0, c.grad_output());
  if (c.needs_grad(1)) c.set_grad(1, scale(c.grad_output(), c.attrs().scalar));
}

// --- sub: a - b ---
void sub_backward(BackwardContext& c) {
  if (c.needs_grad(0)) c.set_grad(0, sum_to(c.grad_output(), c.input_shape(0)));
  if (c.needs_grad(1)) c.set_grad(1, neg(sum_to(c.grad_output(), c.input_shape(1))));
}

// --- mul: a * b ---
void mul_backward(BackwardContext& c) {
  if (c.needs_grad(0)) c.set_grad(0, sum_to(mul(c.grad_output(), c.input(1)), c.input_shape(0)));
  if (c.needs_grad(1)) c.set_grad(1, sum_to(mul(c.grad_output(), c.input(0)), c.input_shape(1)));
}

// --- div: a / b. With q = g / b: da = q, db = -q · (a / b). ---
void div_backward(BackwardContext& c) {
  const Tensor q = div(c.grad_output(), c.input(1));
  if (c.needs_grad(0)) c.set_grad(0, sum_to(q, c.input_shape(0)));
  if (c.needs_grad(1)) c.set_grad(1, sum_to(neg(mul(q, c.output())), c.input_shape(1)));
}

// --- unary rules: d/dx in terms of x (input 0) or y (the output) ---
void neg_backward(BackwardContext& c) { c.set_grad(0, neg(c.grad_output())); }
void exp_backward(BackwardContext& c) { c.set_grad(0, mul(c.grad_output(), c.output())); }               // e^x
void log_backward(BackwardContext& c) { c.set_grad(0, div(c.grad_output(), c.input(0))); }               // 1/x
void sqrt_backward(BackwardContext& c) { c.set_grad(0, div(c.grad_output(), scale(c.output(), 2.0))); }  // 1/(2y)
void tanh_backward(BackwardContext& c) {                                                                 // 1 - y²
  c.set_grad(0, mul(c.grad_output(), shift(neg(square(c.output())), 1.0)));
}
void sigmoid_backward(BackwardContext& c) {  // y (1 - y)
  const Tensor& y = c.output();
  c.set_grad(0, mul(c.grad_output(), mul(y, shift(neg(y), 1.0))));
}
}  // namespace

namespace {

// --- times_step, times_sign: g ⊙ step(x) and g ⊙ sign(x) ---
// relu's and abs's backward (and a fused layer's), one pass without a mask
// tensor, recorded or not. The mask is piecewise constant, so x is never
// differentiated (nondiff) and the backward is the same product with the
// incoming gradient: a recorded walk records one node where a mask and a
// mul by it took two kernels, and the walk over it one pass, not a mul.
// Each entry is g · mask(x), rounded once: the bits of mul(g, unary(x)).
template <UnaryOp K>
void times_mask_rule(Inputs in, const Attrs&, std::span<OutputSpec> out) {
  same_shape_rule(K == UnaryOp::step ? "times_step" : "times_sign", in, out);
}
template <UnaryOp K>
void times_mask_forward(Inputs in, const Attrs&, std::span<Tensor> out) {
  dispatch(out[0].device(), out[0].dtype(), [&]<class Kernels, class T>() {
    Kernels::template multiply_by_mask<T>(K, in[0]->data<T>(), in[1]->data<T>(), out[0].data<T>(), out[0].numel());
  });
}
template <UnaryOp K>
void times_mask_backward(BackwardContext& c) {
  c.set_grad(0, times_mask(K, c.grad_output(), c.input(1)));
}
// g anywhere, x at least 0.2 from the kink at 0 (the finite differences
// along x then see the mask's zero derivative).
template <UnaryOp K>
std::vector<OpSample> times_mask_samples(Generator& gen, DType dtype) {
  std::vector<OpSample> samples;
  for (const Shape& s : {Shape{3, 4}, Shape{2, 1, 3, 2}})
    samples.push_back(make_sample(s.str(), {sample_uniform(s, gen, dtype), sample_away_from_zero(s, gen, dtype)},
                                  [](const std::vector<Tensor>& in) { return times_mask(K, in[0], in[1]); }));
  return samples;
}

}  // namespace

// clang-format off
const OpDef times_step_op = {.name = "times_step", .arity = 2, .num_outputs = 1, .saves = save_input(1),
    .nondiff = index_input(1), .is_view = false,
    .shape_rule = times_mask_rule<UnaryOp::step>, .forward = times_mask_forward<UnaryOp::step>,
    .backward = times_mask_backward<UnaryOp::step>, .samples = times_mask_samples<UnaryOp::step>};
const OpDef times_sign_op = {.name = "times_sign", .arity = 2, .num_outputs = 1, .saves = save_input(1),
    .nondiff = index_input(1), .is_view = false,
    .shape_rule = times_mask_rule<UnaryOp::sign>, .forward = times_mask_forward<UnaryOp::sign>,
    .backward = times_mask_backward<UnaryOp::sign>, .samples = times_mask_samples<UnaryOp::sign>};
// clang-format on

Tensor times_mask(UnaryOp mask, const Tensor& g, const Tensor& x) {
  if (mask != UnaryOp::step && mask != UnaryOp::sign) throw ValueError("times_mask: the mask must be step or sign");
  const Tensor* in[] = {&g, &x};
  return apply(mask == UnaryOp::step ? times_step_op : times_sign_op, in);
}

void add_in_place(Tensor& into, const Tensor& x) {
  std::int64_t into_strides[kMaxRank], x_strides[kMaxRank];
  kernels::cpu::contiguous_strides(into.rank(), into.shape().begin(), into_strides);
  kernels::cpu::broadcast_strides(x.rank(), x.shape().begin(), into.rank(), into.shape().begin(), x_strides);
  dispatch(into.device(), into.dtype(), [&]<class Kernels, class T>() {
    T* out = into.data<T>();
    Kernels::template binary<T>(BinaryOp::add, into.rank(), into.shape().begin(), out, into_strides, x.data<T>(),
                                x_strides, out);
  });
}

void set_broadcast_grad(BackwardContext& c, int i, const Tensor& g) {
  if (Tensor* into = c.grad_accumulator(i)) return add_in_place(*into, g);
  c.set_grad(i, expand(g, c.input_shape(i)));
}

namespace {

void relu_backward(BackwardContext& c) { c.set_grad(0, times_mask(UnaryOp::step, c.grad_output(), c.input(0))); }
void abs_backward(BackwardContext& c) { c.set_grad(0, times_mask(UnaryOp::sign, c.grad_output(), c.input(0))); }
void pow_backward(BackwardContext& c) {  // p x^(p-1); exactly zero for p = 0, even at x = 0
  const double p = c.attrs().scalar;
  if (p == 0.0) {
    c.set_grad(0, zeros(c.input_shape(0), c.input_dtype(0), c.grad_output().device()));
    return;
  }
  // x^1 is x itself (power()'s exact path): square's backward, in every
  // MSE loss, then records no pow node, nor its own backward's chain. Every
  // derivative keeps its value; at third order an exact zero may now keep
  // its sign (the chain used to add a zero tensor, turning −0 into +0).
  const Tensor base = p == 2.0 ? c.input(0) : pow(c.input(0), p - 1.0);
  c.set_grad(0, mul(c.grad_output(), scale(base, p)));
}
void scale_backward(BackwardContext& c) { c.set_grad(0, scale(c.grad_output(), c.attrs().scalar)); }
void shift_backward(BackwardContext& c) { c.set_grad(0, c.grad_output()); }

// --- cast: x converted to attrs.dtype ---
void cast_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  require_floating("to", *in[0], 0);
  if (!is_floating(attrs.dtype))
    throw DTypeError(std::string("to: can only convert between f32 and f64, not to ") + dtype_name(attrs.dtype));
  out[0] = {in[0]->shape(), attrs.dtype};
}
void cast_forward(Inputs in, const Attrs&, std::span<Tensor> out) {
  dispatch(in[0]->device(), in[0]->dtype(), [&]<class Kernels, class From>() {
    with_float_type(out[0].dtype(), [&](auto to) {
      Kernels::template convert<From, decltype(to)>(in[0]->data<From>(), out[0].data<decltype(to)>(), out[0].numel());
    });
  });
}
void cast_backward(BackwardContext& c) { c.set_grad(0, c.grad_output().to(c.input_dtype(0))); }

// --- copy: a fresh buffer with x's values (clone) ---
void copy_backward(BackwardContext& c) { c.set_grad(0, c.grad_output()); }

#define METATAPE_UNARY_RULE(name) [](Inputs in, const Attrs&, std::span<OutputSpec> out) { unary_rule(name, in, out); }
#define METATAPE_BINARY_RULE(name) \
  [](Inputs in, const Attrs&, std::span<OutputSpec> out) { binary_rule(name, in, out); }

}  // namespace

// clang-format off
const OpDef add_op = {.name = "add", .arity = 2, .num_outputs = 1, .saves = 0, .nondiff = 0, .is_view = false,
    .shape_rule = METATAPE_BINARY_RULE("add"), .forward = binary_forward<BinaryOp::add>, .backward = add_backward,
    .samples = [](Generator& g, DType d) { return binary_samples(g, d, add, false); }};
const OpDef sub_op = {.name = "sub", .arity = 2, .num_outputs = 1, .saves = 0, .nondiff = 0, .is_view = false,
    .shape_rule = METATAPE_BINARY_RULE("sub"), .forward = binary_forward<BinaryOp::sub>, .backward = sub_backward,
    .samples = [](Generator& g, DType d) { return binary_samples(g, d, sub, false); }};
const OpDef mul_op = {.name = "mul", .arity = 2, .num_outputs = 1, .saves = save_input(0) | save_input(1),
    .nondiff = 0, .is_view = false,
    .shape_rule = METATAPE_BINARY_RULE("mul"), .forward = binary_forward<BinaryOp::mul>, .backward = mul_backward,
    .samples = [](Generator& g, DType d) { return binary_samples(g, d, mul, false); }};
const OpDef div_op = {.name = "div", .arity = 2, .num_outputs = 1, .saves = save_input(1) | kSaveOutputs,
    .nondiff = 0, .is_view = false,
    .shape_rule = METATAPE_BINARY_RULE("div"), .forward = binary_forward<BinaryOp::div>, .backward = div_backward,
    .samples = [](Generator& g, DType d) { return binary_samples(g, d, div, true); }};

const OpDef add_scaled_op = {.name = "add_scaled", .arity = 2, .num_outputs = 1, .saves = 0, .nondiff = 0,
    .is_view = false,
    .shape_rule = add_scaled_rule, .forward = add_scaled_forward, .backward = add_scaled_backward,
    .samples = [](Generator& g, DType d) {
      std::vector<OpSample> samples;
      for (const Shape& s : {Shape{3, 4}, Shape{2, 1, 3, 2}})
        for (double alpha : {-2.5, 0.75})
          samples.push_back(make_sample(s.str() + ", alpha " + std::to_string(alpha),
                                        {sample_uniform(s, g, d), sample_uniform(s, g, d)},
                                        [alpha](const std::vector<Tensor>& in) {
                                          return add_scaled(in[0], in[1], alpha);
                                        }));
      return samples;
    }};
const OpDef neg_op = {.name = "neg", .arity = 1, .num_outputs = 1, .saves = 0, .nondiff = 0, .is_view = false,
    .shape_rule = METATAPE_UNARY_RULE("neg"), .forward = unary_forward<UnaryOp::neg>, .backward = neg_backward,
    .samples = [](Generator& g, DType d) { return smooth_unary(g, d, neg); }};
const OpDef exp_op = {.name = "exp", .arity = 1, .num_outputs = 1, .saves = kSaveOutputs, .nondiff = 0,
    .is_view = false,
    .shape_rule = METATAPE_UNARY_RULE("exp"), .forward = unary_forward<UnaryOp::exp>, .backward = exp_backward,
    .samples = [](Generator& g, DType d) { return smooth_unary(g, d, exp); }};
const OpDef log_op = {.name = "log", .arity = 1, .num_outputs = 1, .saves = save_input(0), .nondiff = 0,
    .is_view = false,
    .shape_rule = METATAPE_UNARY_RULE("log"), .forward = unary_forward<UnaryOp::log>, .backward = log_backward,
    .samples = [](Generator& g, DType d) { return positive_unary(g, d, log); }};
const OpDef sqrt_op = {.name = "sqrt", .arity = 1, .num_outputs = 1, .saves = kSaveOutputs, .nondiff = 0,
    .is_view = false,
    .shape_rule = METATAPE_UNARY_RULE("sqrt"), .forward = unary_forward<UnaryOp::sqrt>, .backward = sqrt_backward,
    .samples = [](Generator& g, DType d) { return positive_unary(g, d, sqrt); }};
const OpDef tanh_op = {.name = "tanh", .arity = 1, .num_outputs = 1, .saves = kSaveOutputs, .nondiff = 0,
    .is_view = false,
    .shape_rule = METATAPE_UNARY_RULE("tanh"), .forward = unary_forward<UnaryOp::tanh>, .backward = tanh_backward,
    .samples = [](Generator& g, DType d) { return smooth_unary(g, d, tanh); }};
const OpDef sigmoid_op = {.name = "sigmoid", .arity = 1, .num_outputs = 1, .saves = kSaveOutputs, .nondiff = 0,
    .is_view = false,
    .shape_rule = METATAPE_UNARY_RULE("sigmoid"), .forward = unary_forward<UnaryOp::sigmoid>,
    .backward = sigmoid_backward,
    .samples = [](Generator& g, DType d) { return smooth_unary(g, d, sigmoid); }};
const OpDef relu_op = {.name = "relu", .arity = 1, .num_outputs = 1, .saves = save_input(0), .nondiff = 0,
    .is_view = false,
    .shape_rule = METATAPE_UNARY_RULE("relu"), .forward = unary_forward<UnaryOp::relu>, .backward = relu_backward,
    .samples = [](Generator& g, DType d) { return kinked_unary(g, d, relu); }};
const OpDef abs_op = {.name = "abs", .arity = 1, .num_outputs = 1, .saves = save_input(0), .nondiff = 0,
    .is_view = false,
    .shape_rule = METATAPE_UNARY_RULE("abs"), .forward = unary_forward<UnaryOp::abs>, .backward = abs_backward,
    .samples = [](Generator& g, DType d) { return kinked_unary(g, d, abs); }};
const OpDef pow_op = {.name = "pow", .arity = 1, .num_outputs = 1, .saves = save_input(0), .nondiff = 0,
    .is_view = false,
    .shape_rule = METATAPE_UNARY_RULE("pow"), .forward = unary_forward<UnaryOp::pow>, .backward = pow_backward,
    .samples = [](Generator& g, DType d) {
      std::vector<OpSample> samples;
      for (double p : {2.0, 3.0, 0.5, -1.5, 0.0}) {
        samples.push_back(make_sample("x^" + std::to_string(p), {sample_uniform({3, 4}, g, d, 0.5, 2.0)},
                                      [p](const std::vector<Tensor>& in) { return pow(in[0], p); }));
      }
      // An integer exponent is defined for negative bases too.
      samples.push_back(make_sample("negative base, x^3", {sample_uniform({3, 4}, g, d, -2.0, 2.0)},
                                    [](const std::vector<Tensor>& in) { return pow(in[0], 3.0); }));
      return samples;
    }};
const OpDef scale_op = {.name = "scale", .arity = 1, .num_outputs = 1, .saves = 0, .nondiff = 0, .is_view = false,
    .shape_rule = METATAPE_UNARY_RULE("scale"), .forward = unary_forward<UnaryOp::scale>,
    .backward = scale_backward,
    .samples = [](Generator& g, DType d) {
      return unary_samples(g, d, [](const Tensor& x) { return scale(x, -2.5); }, sample_uniform, -1.0, 1.0);
    }};
const OpDef shift_op = {.name = "shift", .arity = 1, .num_outputs = 1, .saves = 0, .nondiff = 0, .is_view = false,
    .shape_rule = METATAPE_UNARY_RULE("shift"), .forward = unary_forward<UnaryOp::shift>,
    .backward = shift_backward,
    .samples = [](Generator& g, DType d) {
      return unary_samples(g, d, [](const Tensor& x) { return shift(x, 0.75); }, sample_uniform, -1.0, 1.0);
    }};
const OpDef cast_op = {.name = "to", .arity = 1, .num_outputs = 1, .saves = 0, .nondiff = 0, .is_view = false,
    .shape_rule = cast_rule, .forward = cast_forward, .backward = cast_backward,
    .samples = [](Generator& g, DType d) {
      // A round trip through the other dtype. Inputs on a grid of 2^-10 and a
      // finite-difference step of 2^-10 keep every value exact in f32, so the
      // check sees the cast's derivative, not f32 rounding.
      const DType other = d == DType::f64 ? DType::f32 : DType::f64;
      std::vector<double> grid(12);
      for (double& v : grid) v = static_cast<double>(g.below(2048) - 1024) / 1024.0;
      OpSample s = make_sample("round trip through " + std::string(dtype_name(other)),
                               {from_vector(grid, {3, 4}, d)},
                               [d, other](const std::vector<Tensor>& in) { return in[0].to(other).to(d); });
      s.fd_step = 1.0 / 1024.0;
      return std::vector<OpSample>{s};
    }};
const OpDef copy_op = {.name = "clone", .arity = 1, .num_outputs = 1, .saves = 0, .nondiff = 0, .is_view = false,
    .shape_rule = [](Inputs in, const Attrs&, std::span<OutputSpec> out) {
      out[0] = {in[0]->shape(), in[0]->dtype()};  // any dtype, i64 included
    },
    .forward = [](Inputs in, const Attrs&, std::span<Tensor> out) {
      dispatch_any(in[0]->device(), in[0]->dtype(), [&]<class Kernels, class T>() {
        Kernels::template copy<T>(in[0]->data<T>(), out[0].data<T>(), out[0].numel());
      });
    },
    .backward = copy_backward,
    .samples = [](Generator& g, DType d) { return smooth_unary(g, d, [](const Tensor& x) { return x.clone(); }); }};
// clang-format on

std::vector<OpSample> square_samples(Generator& gen, DType dtype) { return smooth_unary(gen, dtype, square); }

}  // namespace metatape::detail

namespace metatape {

using detail::apply;
using detail::Attrs;

namespace {
Tensor unary_call(const detail::OpDef& op, const Tensor& x, double scalar = 0.0) {
  const Tensor* in[] = {&x};
  Attrs attrs;
  attrs.scalar = scalar;
  return apply(op, in, attrs);
}
Tensor binary_call(const detail::OpDef& op, const Tensor& a, const Tensor& b) {
  const Tensor* in[] = {&a, &b};
  return apply(op, in);
}
}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary_call(detail::add_op, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary_call(detail::sub_op, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_call(detail::mul_op, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary_call(detail::div_op, a, b); }
Tensor add_scaled(const Tensor& x, const Tensor& y, double alpha) {
  // Broadcasting operands take the two-op path: the same values, bit for bit.
  if (x.defined() && y.defined() && x.shape() != y.shape()) return add(x, scale(y, alpha));
  const Tensor* in[] = {&x, &y};
  Attrs attrs;
  attrs.scalar = alpha;
  return apply(detail::add_scaled_op, in, attrs);
}
Tensor neg(const Tensor& x) { return unary_call(detail::neg_op, x); }
Tensor exp(const Tensor& x) { return unary_call(detail::exp_op, x); }
Tensor log(const Tensor& x) { return unary_call(detail::log_op, x); }
Tensor sqrt(const Tensor& x) { return unary_call(detail::sqrt_op, x); }
Tensor tanh(const Tensor& x) { return unary_call(detail::tanh_op, x); }
Tensor sigmoid(const Tensor& x) { return unary_call(detail::sigmoid_op, x); }
Tensor relu(const Tensor& x) { return unary_call(detail::relu_op, x); }
Tensor abs(const Tensor& x) { return unary_call(detail::abs_op, x); }
Tensor pow(const Tensor& x, double exponent) { return unary_call(detail::pow_op, x, exponent); }
Tensor square(const Tensor& x) { return pow(x, 2.0); }
Tensor scale(const Tensor& x, double factor) { return unary_call(detail::scale_op, x, factor); }
Tensor shift(const Tensor& x, double offset) { return unary_call(detail::shift_op, x, offset); }

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator-(const Tensor& x) { return neg(x); }
Tensor operator+(const Tensor& x, double s) { return shift(x, s); }
Tensor operator+(double s, const Tensor& x) { return shift(x, s); }
Tensor operator-(const Tensor& x, double s) { return shift(x, -s); }
Tensor operator-(double s, const Tensor& x) { return shift(neg(x), s); }
Tensor operator*(const Tensor& x, double s) { return scale(x, s); }
Tensor operator*(double s, const Tensor& x) { return scale(x, s); }
Tensor operator/(const Tensor& x, double s) { return scale(x, 1.0 / s); }
Tensor operator/(double s, const Tensor& x) { return scale(pow(x, -1.0), s); }

Tensor Tensor::to(DType dtype) const {
  if (defined() && dtype == dtype_) return *this;
  const Tensor* in[] = {this};
  Attrs attrs;
  attrs.dtype = dtype;
  return apply(detail::cast_op, in, attrs);
}

Tensor Tensor::clone() const {
  const Tensor* in[] = {this};
  return apply(detail::copy_op, in);
}

}  // namespace metatape
