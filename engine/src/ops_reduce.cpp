// Reductions. One primitive sums (sum_to, the adjoint of broadcasting) and
// its partner expand; sum, mean, max and logsumexp are compositions.
#include <algorithm>
#include <cmath>

#include "backend.hpp"
#include "kernels/cpu/strided.hpp"
#include "metatape/error.hpp"
#include "metatape/ops.hpp"
#include "op_defs.hpp"
#include "samples.hpp"

namespace metatape::detail {
namespace {

// `target` padded on the left with 1s to `rank` dimensions.
Shape left_pad(const Shape& target, int rank) {
  Shape padded;
  for (int i = 0; i < rank - target.rank(); ++i) padded.push_back(1);
  for (std::int64_t d : target) padded.push_back(d);
  return padded;
}

// True if `big` is a NumPy broadcast of `small`.
bool broadcasts_to(const Shape& small, const Shape& big) {
  if (small.rank() > big.rank()) return false;
  for (int i = 0; i < small.rank(); ++i) {
    const std::int64_t s = small[small.rank() - 1 - i], b = big[big.rank() - 1 - i];
    if (s != b && s != 1) return false;
  }
  return true;
}

// --- sum_to: x summed down to attrs.shape (x's shape broadcasts from it) ---
void sum_to_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  require_floating("sum_to", *in[0], 0);
  if (!broadcasts_to(attrs.shape, in[0]->shape()))
    throw ShapeError("sum_to: shape " + in[0]->shape().str() + " is not a broadcast of " + attrs.shape.str());
  out[0] = {attrs.shape, in[0]->dtype()};
}
void sum_to_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  const Tensor& x = *in[0];
  const Shape target = left_pad(attrs.shape, x.rank());
  dispatch(x.device(), x.dtype(), [&]<class K, class T>() {
    K::template sum_to<T>(x.rank(), x.shape().begin(), x.data<T>(), target.begin(), out[0].data<T>());
  });
}
void sum_to_backward(BackwardContext& c) { set_broadcast_grad(c, 0, c.grad_output()); }

// --- expand: x repeated along broadcast dimensions up to attrs.shape ---
void expand_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  if (!broadcasts_to(in[0]->shape(), attrs.shape))
    throw ShapeError("expand: shape " + in[0]->shape().str() + " cannot be broadcast to " + attrs.shape.str());
  out[0] = {attrs.shape, in[0]->dtype()};
}
void expand_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  const Tensor& x = *in[0];
  Tensor& y = out[0];
  std::int64_t strides[kMaxRank];
  kernels::cpu::broadcast_strides(x.rank(), x.shape().begin(), y.rank(), y.shape().begin(), strides);
  dispatch_any(x.device(), x.dtype(), [&]<class K, class T>() {
    K::template strided_copy<T>(y.rank(), attrs.shape.begin(), x.data<T>(), strides, y.data<T>());
  });
}
void expand_backward(BackwardContext& c) { c.set_grad(0, sum_to(c.grad_output(), c.input_shape(0))); }

// Sorted, distinct, non-negative axes; all axes if `axes` is empty.
std::vector<int> reduction_axes(const std::vector<int>& axes, int rank, const char* op) {
  std::vector<int> result;
  if (axes.empty()) {
    for (int i = 0; i < rank; ++i) result.push_back(i);
    return result;
  }
  for (int a : axes) result.push_back(normalize_axis(a, rank, op));
  std::sort(result.begin(), result.end());
  if (std::adjacent_find(result.begin(), result.end()) != result.end())
    throw ValueError(std::string(op) + ": an axis is listed twice");
  return result;
}

// x's shape with the reduced axes set to 1 (keepdim) or removed.
Shape reduced_shape(const Shape& shape, const std::vector<int>& axes, bool keepdim) {
  Shape out;
  for (int i = 0; i < shape.rank(); ++i) {
    const bool reduced = std::find(axes.begin(), axes.end(), i) != axes.end();
    if (!reduced)
      out.push_back(shape[i]);
    else if (keepdim)
      out.push_back(1);
  }
  return out;
}

// Flat indices of the first maximum along `axis` (a constant, shaped like x
// with that axis of size 1).
Tensor argmax_indices(const Tensor& x, int axis) {
  std::int64_t outer = 1, inner = 1;
  for (int i = 0; i < axis; ++i) outer *= x.shape()[i];
  for (int i = axis + 1; i < x.rank(); ++i) inner *= x.shape()[i];
  Tensor index = empty(reduced_shape(x.shape(), {axis}, true), DType::i64, x.device());
  dispatch(x.device(), x.dtype(), [&]<class K, class T>() {
    K::template argmax_axis<T>(x.data<T>(), outer, x.shape()[axis], inner, index.data<std::int64_t>());
  });
  return index;
}

}  // namespace

// clang-format off
const OpDef sum_to_op = {.name = "sum_to", .arity = 1, .num_outputs = 1, .saves = 0, .nondiff = 0, .is_view = false,
    .shape_rule = sum_to_rule, .forward = sum_to_forward, .backward = sum_to_backward,
    .samples = [](Generator& g, DType d) {
      std::vector<OpSample> samples;
      const std::vector<std::pair<Shape, Shape>> cases = {
          {{3, 4}, {1, 4}}, {{3, 4}, {4}}, {{2, 3, 4}, {3, 1}}, {{2, 3}, {}}, {{5}, {1}}, {{2, 1, 3}, {2, 1, 1}}};
      for (const auto& [from, to] : cases)
        samples.push_back(make_sample(from.str() + " to " + to.str(), {sample_uniform(from, g, d)},
                                      [to](const std::vector<Tensor>& in) { return sum_to(in[0], to); }));
      return samples;
    }};
const OpDef expand_op = {.name = "expand", .arity = 1, .num_outputs = 1, .saves = 0, .nondiff = 0, .is_view = false,
    .shape_rule = expand_rule, .forward = expand_forward, .backward = expand_backward,
    .samples = [](Generator& g, DType d) {
      std::vector<OpSample> samples;
      const std::vector<std::pair<Shape, Shape>> cases = {
          {{1, 4}, {3, 4}}, {{4}, {2, 3, 4}}, {{}, {2, 3}}, {{3, 1}, {2, 3, 5}}};
      for (const auto& [from, to] : cases)
        samples.push_back(make_sample(from.str() + " to " + to.str(), {sample_uniform(from, g, d)},
                                      [to](const std::vector<Tensor>& in) { return expand(in[0], to); }));
      return samples;
    }};
// clang-format on

std::vector<OpSample> sum_samples(Generator& gen, DType dtype) {
  return {make_sample("all axes", {sample_uniform({3, 4}, gen, dtype)},
                      [](const std::vector<Tensor>& in) { return sum(in[0]); }),
          make_sample("axis 0, keepdim", {sample_uniform({3, 4}, gen, dtype)},
                      [](const std::vector<Tensor>& in) { return sum(in[0], {0}, true); }),
          make_sample("axes {0, 2}", {sample_uniform({2, 3, 4}, gen, dtype)},
                      [](const std::vector<Tensor>& in) {
                        return sum(in[0], {0, 2});
                      }),
          make_sample("axis -1 of rank 5", {sample_uniform({2, 1, 2, 1, 3}, gen, dtype)},
                      [](const std::vector<Tensor>& in) { return sum(in[0], {-1}); })};
}

std::vector<OpSample> mean_samples(Generator& gen, DType dtype) {
  return {
      make_sample("all axes", {sample_uniform({3, 4}, gen, dtype)},
                  [](const std::vector<Tensor>& in) { return mean(in[0]); }),
      make_sample("axes {1, 2}, keepdim", {sample_uniform({2, 3, 4}, gen, dtype)}, [](const std::vector<Tensor>& in) {
        return mean(in[0], {1, 2}, true);
      })};
}

std::vector<OpSample> max_samples(Generator& gen, DType dtype) {
  return {make_sample("axis 1", {sample_distinct({3, 4}, gen, dtype)},
                      [](const std::vector<Tensor>& in) { return max(in[0], 1); }),
          make_sample("axis 0, keepdim", {sample_distinct({2, 3, 4}, gen, dtype)},
                      [](const std::vector<Tensor>& in) { return max(in[0], 0, true); })};
}

std::vector<OpSample> logsumexp_samples(Generator& gen, DType dtype) {
  return {make_sample("axis -1", {sample_uniform({3, 4}, gen, dtype, -2.0, 2.0)},
                      [](const std::vector<Tensor>& in) { return logsumexp(in[0], -1); }),
          make_sample("axis 1, keepdim", {sample_uniform({2, 3, 4}, gen, dtype, -2.0, 2.0)},
                      [](const std::vector<Tensor>& in) { return logsumexp(in[0], 1, true); })};
}

}  // namespace metatape::detail

namespace metatape {

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.defined() && x.shape() == shape) return x;
  const Tensor* in[] = {&x};
  detail::Attrs attrs;
  attrs.shape = shape;
  return detail::apply(detail::sum_to_op, in, attrs);
}

Tensor expand(const Tensor& x, const Shape& shape) {
  if (x.defined() && x.shape() == shape) return x;
  const Tensor* in[] = {&x};
  detail::Attrs attrs;
  attrs.shape = shape;
  return detail::apply(detail::expand_op, in, attrs);
}

Tensor sum(const Tensor& x, const std::vector<int>& axes, bool keepdim) {
  if (!x.defined()) throw ValueError("sum: input 0 is an undefined tensor");
  const std::vector<int> reduced = detail::reduction_axes(axes, x.rank(), "sum");
  const Tensor kept = sum_to(x, detail::reduced_shape(x.shape(), reduced, true));
  return keepdim ? kept : reshape(kept, detail::reduced_shape(x.shape(), reduced, false));
}

Tensor mean(const Tensor& x, const std::vector<int>& axes, bool keepdim) {
  if (!x.defined()) throw ValueError("mean: input 0 is an undefined tensor");
  std::int64_t count = 1;
  for (int a : detail::reduction_axes(axes, x.rank(), "mean")) count *= x.shape()[a];
  // An empty reduction is 0/0: NaN, as in NumPy and PyTorch.
  return scale(sum(x, axes, keepdim), count == 0 ? std::nan("") : 1.0 / static_cast<double>(count));
}

Tensor max(const Tensor& x, int axis, bool keepdim) {
  if (!x.defined()) throw ValueError("max: input 0 is an undefined tensor");
  detail::require_floating("max", x, 0);
  const int a = normalize_axis(axis, x.rank(), "max");
  if (x.shape()[a] == 0)
    throw ShapeError("max: axis " + std::to_string(axis) + " of shape " + x.shape().str() + " is empty");
  const Tensor kept = detail::take_checked(x, detail::argmax_indices(x, a), true);
  return keepdim ? kept : reshape(kept, detail::reduced_shape(x.shape(), {a}, false));
}

Tensor logsumexp(const Tensor& x, int axis, bool keepdim) {
  if (!x.defined()) throw ValueError("logsumexp: input 0 is an undefined tensor");
  const int a = normalize_axis(axis, x.rank(), "logsumexp");
  // Subtracting the (constant) maximum keeps exp from overflowing and does not
  // change the value or any derivative. An infinite maximum is replaced by 0,
  // so that rows of -inf give -inf rather than NaN.
  Tensor shift_by = max(x.detach(), a, true);
  detail::dispatch(x.device(), x.dtype(), [&]<class K, class T>() {
    K::template unary<T>(kernels::UnaryOp::finite_or_zero, shift_by.data<T>(), shift_by.data<T>(), shift_by.numel(),
                         0.0);
  });
  const Tensor kept = add(log(sum(exp(sub(x, shift_by)), {a}, true)), shift_by);
  return keepdim ? kept : reshape(kept, detail::reduced_shape(x.shape(), {a}, false));
}

}  // namespace metatape
