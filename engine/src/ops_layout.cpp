// Shape and layout ops. Each primitive comes with its adjoint, which is also
// a primitive whose adjoint is the first: reshape/reshape, permute/permute,
// slice/pad, gather_rows/scatter_rows, take/scatter_add. So derivatives of
// every order stay within this file.
#include <numeric>

#include "backend.hpp"
#include "cpu_capture.hpp"
#include "kernels/cpu/strided.hpp"
#include "metatape/error.hpp"
#include "metatape/ops.hpp"
#include "op_defs.hpp"
#include "samples.hpp"

namespace metatape::detail {
namespace {

// x viewed as [outer, shape[axis], inner].
void split_at_axis(const Shape& shape, int axis, std::int64_t& outer, std::int64_t& inner) {
  outer = inner = 1;
  for (int i = 0; i < axis; ++i) outer *= shape[i];
  for (int i = axis + 1; i < shape.rank(); ++i) inner *= shape[i];
}

// Every index in [0, limit), or ValueError naming the first bad one. Skipped
// when the caller vouches for the indices (attrs.indices_checked: the engine's
// own arg-max indices and the adjoints of checked gathers), which keeps a
// device op from copying its indices to the host.
void require_indices_below(const char* op, const Tensor& index_tensor, std::int64_t limit, const char* what,
                           const Attrs& attrs) {
  if (attrs.indices_checked) return;
  // A CPU replay reruns the kernels, not this check: indices that change
  // between replays would go unchecked into the kernels.
  refuse_in_cpu_capture("checking index values on the host (take, gather or scatter with caller's indices)");
  const Tensor index = index_tensor.to(Device::cpu);
  const std::int64_t* p = index.data<std::int64_t>();
  const std::int64_t n = index.numel();
  for (std::int64_t i = 0; i < n; ++i)
    if (p[i] < 0 || p[i] >= limit)
      throw ValueError(std::string(op) + ": index " + std::to_string(p[i]) + " at position " + std::to_string(i) +
                       " is out of range for " + std::to_string(limit) + " " + what);
}

// --- reshape: the same elements under attrs.shape (a view) ---
void reshape_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  if (attrs.shape.numel() != in[0]->numel())
    throw ShapeError("reshape: cannot reshape " + in[0]->shape().str() + " (" + std::to_string(in[0]->numel()) +
                     " elements) to " + attrs.shape.str() + " (" + std::to_string(attrs.shape.numel()) + " elements)");
  out[0] = {attrs.shape, in[0]->dtype()};
}
void reshape_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  out[0] = TensorAccess::view(*in[0], attrs.shape);
}
void reshape_backward(BackwardContext& c) { c.set_grad(0, reshape(c.grad_output(), c.input_shape(0))); }

// --- permute: output axis i is input axis attrs.perm[i] ---
void permute_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  Shape shape;
  for (int i = 0; i < in[0]->rank(); ++i) shape.push_back(in[0]->shape()[attrs.perm[static_cast<std::size_t>(i)]]);
  out[0] = {shape, in[0]->dtype()};
}
void permute_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  const Tensor& x = *in[0];
  std::int64_t x_strides[kMaxRank], read_strides[kMaxRank];
  kernels::cpu::contiguous_strides(x.rank(), x.shape().begin(), x_strides);
  for (int i = 0; i < x.rank(); ++i) read_strides[i] = x_strides[attrs.perm[static_cast<std::size_t>(i)]];
  dispatch_any(x.device(), x.dtype(), [&]<class K, class T>() {
    K::template strided_copy<T>(x.rank(), out[0].shape().begin(), x.data<T>(), read_strides, out[0].data<T>());
  });
}
void permute_backward(BackwardContext& c) {
  const int rank = c.input_shape(0).rank();
  std::vector<int> inverse(static_cast<std::size_t>(rank));
  for (int i = 0; i < rank; ++i) inverse[static_cast<std::size_t>(c.attrs().perm[static_cast<std::size_t>(i)])] = i;
  c.set_grad(0, permute(c.grad_output(), inverse));
}

// --- slice: positions attrs.start..attrs.stop-1 along attrs.axis ---
void slice_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  Shape shape = in[0]->shape();
  shape[attrs.axis] = attrs.stop - attrs.start;
  out[0] = {shape, in[0]->dtype()};
}
void slice_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  const Tensor& x = *in[0];
  std::int64_t outer, inner;
  split_at_axis(x.shape(), attrs.axis, outer, inner);
  dispatch_any(x.device(), x.dtype(), [&]<class K, class T>() {
    K::template copy_from_axis<T>(x.data<T>(), outer, x.shape()[attrs.axis], inner, attrs.start,
                                  attrs.stop - attrs.start, out[0].data<T>());
  });
}
void slice_backward(BackwardContext& c) {
  c.set_grad(0, pad_axis(c.grad_output(), c.attrs().axis, c.attrs().start, c.input_shape(0)));
}

// --- pad: g placed at attrs.start along attrs.axis of zeros(attrs.shape) ---
void pad_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  require_floating("pad", *in[0], 0);
  const Shape& g = in[0]->shape();
  bool fits =
      g.rank() == attrs.shape.rank() && attrs.start >= 0 && attrs.start + g[attrs.axis] <= attrs.shape[attrs.axis];
  for (int i = 0; fits && i < g.rank(); ++i) fits = i == attrs.axis || g[i] == attrs.shape[i];
  if (!fits)
    throw ShapeError("pad: " + g.str() + " does not fit into " + attrs.shape.str() + " at position " +
                     std::to_string(attrs.start) + " of axis " + std::to_string(attrs.axis));
  out[0] = {attrs.shape, in[0]->dtype()};
}
void pad_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  const Tensor& g = *in[0];
  std::int64_t outer, inner;
  split_at_axis(attrs.shape, attrs.axis, outer, inner);
  dispatch(g.device(), g.dtype(), [&]<class K, class T>() {
    K::template fill<T>(out[0].data<T>(), out[0].numel(), T(0));
    K::template copy_into_axis<T>(g.data<T>(), outer, g.shape()[attrs.axis], inner, out[0].data<T>(),
                                  attrs.shape[attrs.axis], attrs.start);
  });
}
void pad_backward(BackwardContext& c) {
  const std::int64_t start = c.attrs().start;
  c.set_grad(0, slice(c.grad_output(), c.attrs().axis, start, start + c.input_shape(0)[c.attrs().axis]));
}

// --- concat: inputs joined along attrs.axis ---
void concat_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  const Tensor& first = *in[0];
  Shape shape = first.shape();
  std::int64_t total = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    const Tensor& x = *in[i];
    require_same_dtype("concat", first, x);
    bool same = x.rank() == first.rank();
    for (int d = 0; same && d < x.rank(); ++d) same = d == attrs.axis || x.shape()[d] == first.shape()[d];
    if (!same)
      throw ShapeError("concat: input " + std::to_string(i) + " has shape " + x.shape().str() +
                       ", which does not match input 0's " + first.shape().str() + " outside axis " +
                       std::to_string(attrs.axis));
    total += x.shape()[attrs.axis];
  }
  shape[attrs.axis] = total;
  out[0] = {shape, first.dtype()};
}
void concat_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  std::int64_t outer, inner;
  split_at_axis(out[0].shape(), attrs.axis, outer, inner);
  std::int64_t offset = 0;
  for (const Tensor* x : in) {
    dispatch_any(x->device(), x->dtype(), [&]<class K, class T>() {
      K::template copy_into_axis<T>(x->data<T>(), outer, x->shape()[attrs.axis], inner, out[0].data<T>(),
                                    out[0].shape()[attrs.axis], offset);
    });
    offset += x->shape()[attrs.axis];
  }
}
void concat_backward(BackwardContext& c) {
  const int axis = c.attrs().axis;
  std::int64_t offset = 0;
  for (int i = 0; i < c.num_inputs(); ++i) {
    const std::int64_t size = c.input_shape(i)[axis];
    if (c.needs_grad(i)) c.set_grad(i, slice(c.grad_output(), axis, offset, offset + size));
    offset += size;
  }
}

// --- gather_rows: x [R, ...] at i64 index (any shape) ---
Shape gathered_shape(const char* op, const Shape& index, const Shape& rows) {
  if (index.rank() + rows.rank() - 1 > kMaxRank)
    throw ShapeError(std::string(op) + ": index " + index.str() + " with rows of " + rows.str() +
                     " would exceed rank " + std::to_string(kMaxRank));
  Shape shape = index;
  for (int i = 1; i < rows.rank(); ++i) shape.push_back(rows[i]);
  return shape;
}
std::int64_t row_size(const Shape& shape) {
  std::int64_t n = 1;
  for (int i = 1; i < shape.rank(); ++i) n *= shape[i];
  return n;
}
void gather_rows_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  const Tensor &x = *in[0], &index = *in[1];
  require_floating("gather_rows", x, 0);
  require_index("gather_rows", index, 1);
  if (x.rank() == 0) throw ShapeError("gather_rows: input 0 is a scalar; it has no rows");
  require_indices_below("gather_rows", index, x.shape()[0], "rows", attrs);
  out[0] = {gathered_shape("gather_rows", index.shape(), x.shape()), x.dtype()};
}
void gather_rows_forward(Inputs in, const Attrs&, std::span<Tensor> out) {
  const Tensor &x = *in[0], &index = *in[1];
  dispatch(x.device(), x.dtype(), [&]<class K, class T>() {
    K::template gather_rows<T>(x.data<T>(), row_size(x.shape()), index.data<std::int64_t>(), index.numel(),
                               out[0].data<T>());
  });
}
void gather_rows_backward(BackwardContext& c) {
  c.set_grad(0, scatter_rows(c.grad_output(), c.input(1), c.input_shape(0), true));
}

// --- scatter_rows: zeros(attrs.shape) with row index[i] += g[i] ---
void scatter_rows_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  const Tensor &g = *in[0], &index = *in[1];
  require_floating("scatter_rows", g, 0);
  require_index("scatter_rows", index, 1);
  if (attrs.shape.rank() == 0 || g.shape() != gathered_shape("scatter_rows", index.shape(), attrs.shape))
    throw ShapeError("scatter_rows: " + g.shape().str() + " rows at index " + index.shape().str() +
                     " do not fit into " + attrs.shape.str());
  require_indices_below("scatter_rows", index, attrs.shape[0], "rows", attrs);
  out[0] = {attrs.shape, g.dtype()};
}
void scatter_rows_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  const Tensor &g = *in[0], &index = *in[1];
  dispatch(g.device(), g.dtype(), [&]<class K, class T>() {
    K::template scatter_rows_add<T>(g.data<T>(), row_size(attrs.shape), index.data<std::int64_t>(), index.numel(),
                                    out[0].data<T>(), attrs.shape[0]);
  });
}
void scatter_rows_backward(BackwardContext& c) {
  c.set_grad(0, gather_rows_checked(c.grad_output(), c.input(1), true));
}

// --- take: x.flat[index], shaped like index ---
void take_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  require_floating("take", *in[0], 0);
  require_index("take", *in[1], 1);
  require_indices_below("take", *in[1], in[0]->numel(), "elements", attrs);
  out[0] = {in[1]->shape(), in[0]->dtype()};
}
void take_forward(Inputs in, const Attrs&, std::span<Tensor> out) {
  dispatch(in[0]->device(), in[0]->dtype(), [&]<class K, class T>() {
    K::template take<T>(in[0]->data<T>(), in[1]->data<std::int64_t>(), in[1]->numel(), out[0].data<T>());
  });
}
void take_backward(BackwardContext& c) {
  c.set_grad(0, scatter_add(c.grad_output(), c.input(1), c.input_shape(0), true));
}

// --- scatter_add: zeros(attrs.shape) with flat entry index[i] += g[i] ---
void scatter_add_rule(Inputs in, const Attrs& attrs, std::span<OutputSpec> out) {
  require_floating("scatter_add", *in[0], 0);
  require_index("scatter_add", *in[1], 1);
  if (in[0]->shape() != in[1]->shape())
    throw ShapeError("scatter_add: values " + in[0]->shape().str() + " and index " + in[1]->shape().str() +
                     " differ in shape");
  require_indices_below("scatter_add", *in[1], attrs.shape.numel(), "elements", attrs);
  out[0] = {attrs.shape, in[0]->dtype()};
}
void scatter_add_forward(Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  dispatch(in[0]->device(), in[0]->dtype(), [&]<class K, class T>() {
    K::template scatter_add<T>(in[0]->data<T>(), in[1]->data<std::int64_t>(), in[1]->numel(), out[0].data<T>(),
                               attrs.shape.numel());
  });
}
void scatter_add_backward(BackwardContext& c) { c.set_grad(0, take_checked(c.grad_output(), c.input(1), true)); }

// Random row indices (repeats included, so that scatters must accumulate).
Tensor sample_rows(const Shape& shape, std::int64_t rows, Generator& gen) {
  std::vector<std::int64_t> values(static_cast<std::size_t>(shape.numel()));
  for (auto& v : values) v = gen.below(rows);
  return from_indices(values, shape);
}

OpSample with_index(OpSample sample) {
  sample.differentiable.back() = false;
  return sample;
}

}  // namespace

Tensor pad_axis(const Tensor& g, int axis, std::int64_t start, const Shape& shape) {
  const Tensor* in[] = {&g};
  Attrs attrs;
  attrs.axis = normalize_axis(axis, shape.rank(), "pad");
  attrs.start = start;
  attrs.shape = shape;
  return apply(pad_op, in, attrs);
}

Tensor scatter_rows(const Tensor& g, const Tensor& index, const Shape& shape, bool indices_checked) {
  const Tensor* in[] = {&g, &index};
  Attrs attrs;
  attrs.shape = shape;
  attrs.indices_checked = indices_checked;
  return apply(scatter_rows_op, in, attrs);
}

Tensor scatter_add(const Tensor& g, const Tensor& index, const Shape& shape, bool indices_checked) {
  const Tensor* in[] = {&g, &index};
  Attrs attrs;
  attrs.shape = shape;
  attrs.indices_checked = indices_checked;
  return apply(scatter_add_op, in, attrs);
}

Tensor gather_rows_checked(const Tensor& x, const Tensor& index, bool indices_checked) {
  const Tensor* in[] = {&x, &index};
  Attrs attrs;
  attrs.indices_checked = indices_checked;
  return apply(gather_rows_op, in, attrs);
}

Tensor take_checked(const Tensor& x, const Tensor& index, bool indices_checked) {
  const Tensor* in[] = {&x, &index};
  Attrs attrs;
  attrs.indices_checked = indices_checked;
  return apply(take_op, in, attrs);
}

// clang-format off
const OpDef reshape_op = {.name = "reshape", .arity = 1, .num_outputs = 1, .saves = 0, .nondiff = 0,
    .is_view = true, .shape_rule = reshape_rule, .forward = reshape_forward, .backward = reshape_backward,
    .samples = [](Generator& g, DType d) {
      return std::vector<OpSample>{
          make_sample("[2, 3, 4] to [6, 4]", {sample_uniform({2, 3, 4}, g, d)},
                      [](const std::vector<Tensor>& in) { return reshape(in[0], {6, 4}); }),
          make_sample("[3, 4] to [-1]", {sample_uniform({3, 4}, g, d)},
                      [](const std::vector<Tensor>& in) { return reshape(in[0], {-1}); })};
    }};
const OpDef permute_op = {.name = "permute", .arity = 1, .num_outputs = 1, .saves = 0, .nondiff = 0,
    .is_view = false, .shape_rule = permute_rule, .forward = permute_forward, .backward = permute_backward,
    .samples = [](Generator& g, DType d) {
      return std::vector<OpSample>{
          make_sample("[2, 3, 4] by (2, 0, 1)", {sample_uniform({2, 3, 4}, g, d)},
                      [](const std::vector<Tensor>& in) { return permute(in[0], {2, 0, 1}); }),
          make_sample("rank 5 by (0, 3, 1, 4, 2)", {sample_uniform({2, 1, 3, 2, 2}, g, d)},
                      [](const std::vector<Tensor>& in) { return permute(in[0], {0, 3, 1, 4, 2}); })};
    }};
const OpDef slice_op = {.name = "slice", .arity = 1, .num_outputs = 1, .saves = 0, .nondiff = 0, .is_view = false,
    .shape_rule = slice_rule, .forward = slice_forward, .backward = slice_backward,
    .samples = [](Generator& g, DType d) {
      return std::vector<OpSample>{
          make_sample("[5, 3] rows 1..3", {sample_uniform({5, 3}, g, d)},
                      [](const std::vector<Tensor>& in) { return slice(in[0], 0, 1, 4); }),
          make_sample("[2, 6, 2] axis 1 from -4", {sample_uniform({2, 6, 2}, g, d)},
                      [](const std::vector<Tensor>& in) { return slice(in[0], 1, -4, 6); })};
    }};
const OpDef pad_op = {.name = "pad", .arity = 1, .num_outputs = 1, .saves = 0, .nondiff = 0, .is_view = false,
    .shape_rule = pad_rule, .forward = pad_forward, .backward = pad_backward,
    .samples = [](Generator& g, DType d) {
      return std::vector<OpSample>{make_sample("[2, 3] into [2, 7] at 2", {sample_uniform({2, 3}, g, d)},
          [](const std::vector<Tensor>& in) { return pad_axis(in[0], 1, 2, {2, 7}); })};
    }};
const OpDef concat_op = {.name = "concat", .arity = kVariadic, .num_outputs = 1, .saves = 0, .nondiff = 0,
    .is_view = false, .shape_rule = concat_rule, .forward = concat_forward, .backward = concat_backward,
    .samples = [](Generator& g, DType d) {
      return std::vector<OpSample>{
          make_sample("three along axis 1",
                      {sample_uniform({2, 1, 3}, g, d), sample_uniform({2, 4, 3}, g, d), sample_uniform({2, 2, 3}, g, d)},
                      [](const std::vector<Tensor>& in) { return concat(in, 1); }),
          make_sample("two along axis 0", {sample_uniform({3}, g, d), sample_uniform({2}, g, d)},
                      [](const std::vector<Tensor>& in) { return concat(in, 0); })};
    }};
const OpDef gather_rows_op = {.name = "gather_rows", .arity = 2, .num_outputs = 1, .saves = save_input(1),
    .nondiff = index_input(1), .is_view = false,
    .shape_rule = gather_rows_rule, .forward = gather_rows_forward, .backward = gather_rows_backward,
    .samples = [](Generator& g, DType d) {
      return std::vector<OpSample>{
          with_index(make_sample("[5, 3] at 7 rows with repeats", {sample_uniform({5, 3}, g, d), sample_rows({7}, 5, g)},
                                 [](const std::vector<Tensor>& in) { return gather_rows(in[0], in[1]); })),
          with_index(make_sample("[4, 2, 2] at a [2, 3] index", {sample_uniform({4, 2, 2}, g, d), sample_rows({2, 3}, 4, g)},
                                 [](const std::vector<Tensor>& in) { return gather_rows(in[0], in[1]); }))};
    }};
const OpDef scatter_rows_op = {.name = "scatter_rows", .arity = 2, .num_outputs = 1, .saves = save_input(1),
    .nondiff = index_input(1), .is_view = false,
    .shape_rule = scatter_rows_rule, .forward = scatter_rows_forward, .backward = scatter_rows_backward,
    .samples = [](Generator& g, DType d) {
      return std::vector<OpSample>{with_index(make_sample("[6, 2] into [4, 2]",
          {sample_uniform({6, 2}, g, d), sample_rows({6}, 4, g)},
          [](const std::vector<Tensor>& in) { return scatter_rows(in[0], in[1], {4, 2}, false); }))};
    }};
const OpDef take_op = {.name = "take", .arity = 2, .num_outputs = 1, .saves = save_input(1), .nondiff = index_input(1),
    .is_view = false, .shape_rule = take_rule, .forward = take_forward, .backward = take_backward,
    .samples = [](Generator& g, DType d) {
      return std::vector<OpSample>{with_index(make_sample("[3, 4] at a [2, 5] index",
          {sample_uniform({3, 4}, g, d), sample_rows({2, 5}, 12, g)},
          [](const std::vector<Tensor>& in) { return take(in[0], in[1]); }))};
    }};
const OpDef scatter_add_op = {.name = "scatter_add", .arity = 2, .num_outputs = 1, .saves = save_input(1),
    .nondiff = index_input(1), .is_view = false,
    .shape_rule = scatter_add_rule, .forward = scatter_add_forward, .backward = scatter_add_backward,
    .samples = [](Generator& g, DType d) {
      return std::vector<OpSample>{with_index(make_sample("8 values into [2, 3]",
          {sample_uniform({8}, g, d), sample_rows({8}, 6, g)},
          [](const std::vector<Tensor>& in) { return scatter_add(in[0], in[1], {2, 3}, false); }))};
    }};
// clang-format on

std::vector<OpSample> squeeze_unsqueeze_samples(Generator& gen, DType dtype) {
  return {make_sample("unsqueeze axis 1 then flatten", {sample_uniform({3, 4}, gen, dtype)},
                      [](const std::vector<Tensor>& in) { return flatten(unsqueeze(in[0], 1), 1); }),
          make_sample("squeeze axis -1", {sample_uniform({3, 1}, gen, dtype)},
                      [](const std::vector<Tensor>& in) { return squeeze(in[0], -1); })};
}

std::vector<OpSample> transpose_samples(Generator& gen, DType dtype) {
  return {make_sample("last two axes", {sample_uniform({2, 3, 4}, gen, dtype)},
                      [](const std::vector<Tensor>& in) { return transpose(in[0]); })};
}

std::vector<OpSample> stack_samples(Generator& gen, DType dtype) {
  return {make_sample(
      "three along a new axis 1",
      {sample_uniform({2, 3}, gen, dtype), sample_uniform({2, 3}, gen, dtype), sample_uniform({2, 3}, gen, dtype)},
      [](const std::vector<Tensor>& in) { return stack(in, 1); })};
}

}  // namespace metatape::detail

namespace metatape {

Tensor reshape(const Tensor& x, const Shape& shape) {
  if (x.defined() && x.shape() == shape) return x;
  const Tensor* in[] = {&x};
  detail::Attrs attrs;
  attrs.shape = shape;
  return detail::apply(detail::reshape_op, in, attrs);
}

Tensor reshape(const Tensor& x, const std::vector<std::int64_t>& dims) {
  if (!x.defined()) throw ValueError("reshape: input 0 is an undefined tensor");
  // Resolve one -1 from the element count, as NumPy does.
  int inferred = -1;
  std::int64_t known = 1;
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] == -1) {
      if (inferred >= 0) throw ShapeError("reshape: more than one dimension is -1");
      inferred = static_cast<int>(i);
    } else if (dims[i] < 0) {
      throw ShapeError("reshape: negative dimension " + std::to_string(dims[i]));
    } else {
      known *= dims[i];
    }
  }
  std::vector<std::int64_t> resolved = dims;
  if (inferred >= 0) {
    if (known == 0 || x.numel() % known != 0)
      throw ShapeError("reshape: cannot infer the -1 dimension reshaping " + x.shape().str() + " (" +
                       std::to_string(x.numel()) + " elements)");
    resolved[static_cast<std::size_t>(inferred)] = x.numel() / known;
  }
  return reshape(x, Shape(resolved));
}

Tensor reshape(const Tensor& x, std::initializer_list<std::int64_t> shape) {
  return reshape(x, std::vector<std::int64_t>(shape));
}

Tensor flatten(const Tensor& x, int start_axis) {
  if (!x.defined()) throw ValueError("flatten: input 0 is an undefined tensor");
  if (x.rank() == 0) return reshape(x, Shape{1});
  const int start = normalize_axis(start_axis, x.rank(), "flatten");
  Shape shape;
  std::int64_t merged = 1;
  for (int i = 0; i < x.rank(); ++i) (i < start ? shape.push_back(x.shape()[i]) : void(merged *= x.shape()[i]));
  shape.push_back(merged);
  return reshape(x, shape);
}

Tensor unsqueeze(const Tensor& x, int axis) {
  if (!x.defined()) throw ValueError("unsqueeze: input 0 is an undefined tensor");
  const int at = normalize_axis(axis, x.rank() + 1, "unsqueeze");
  Shape shape;
  for (int i = 0; i <= x.rank(); ++i) {
    if (i == at) shape.push_back(1);
    if (i < x.rank()) shape.push_back(x.shape()[i]);
  }
  return reshape(x, shape);
}

Tensor squeeze(const Tensor& x, int axis) {
  if (!x.defined()) throw ValueError("squeeze: input 0 is an undefined tensor");
  const int at = normalize_axis(axis, x.rank(), "squeeze");
  if (x.shape()[at] != 1)
    throw ShapeError("squeeze: axis " + std::to_string(axis) + " of shape " + x.shape().str() + " is not of size 1");
  Shape shape;
  for (int i = 0; i < x.rank(); ++i)
    if (i != at) shape.push_back(x.shape()[i]);
  return reshape(x, shape);
}

Tensor permute(const Tensor& x, const std::vector<int>& perm) {
  if (!x.defined()) throw ValueError("permute: input 0 is an undefined tensor");
  if (static_cast<int>(perm.size()) != x.rank())
    throw ValueError("permute: " + std::to_string(perm.size()) + " axes given for a tensor of rank " +
                     std::to_string(x.rank()));
  detail::Attrs attrs;
  bool seen[kMaxRank] = {};
  bool identity = true;
  for (std::size_t i = 0; i < perm.size(); ++i) {
    const int a = normalize_axis(perm[i], x.rank(), "permute");
    if (seen[a]) throw ValueError("permute: axis " + std::to_string(perm[i]) + " appears twice");
    seen[a] = true;
    attrs.perm[i] = static_cast<std::int8_t>(a);
    identity = identity && a == static_cast<int>(i);
  }
  if (identity) return x;
  const Tensor* in[] = {&x};
  return detail::apply(detail::permute_op, in, attrs);
}

Tensor transpose(const Tensor& x, int axis0, int axis1) {
  if (!x.defined()) throw ValueError("transpose: input 0 is an undefined tensor");
  std::vector<int> perm(static_cast<std::size_t>(x.rank()));
  std::iota(perm.begin(), perm.end(), 0);
  std::swap(perm[static_cast<std::size_t>(normalize_axis(axis0, x.rank(), "transpose"))],
            perm[static_cast<std::size_t>(normalize_axis(axis1, x.rank(), "transpose"))]);
  return permute(x, perm);
}

Tensor slice(const Tensor& x, int axis, std::int64_t start, std::int64_t stop) {
  if (!x.defined()) throw ValueError("slice: input 0 is an undefined tensor");
  const int a = normalize_axis(axis, x.rank(), "slice");
  const std::int64_t size = x.shape()[a];
  const std::int64_t begin = start < 0 ? start + size : start, end = stop < 0 ? stop + size : stop;
  if (begin < 0 || end > size || begin > end)
    throw ValueError("slice: range " + std::to_string(start) + ".." + std::to_string(stop) + " does not fit axis " +
                     std::to_string(axis) + " of shape " + x.shape().str());
  if (begin == 0 && end == size) return x;
  const Tensor* in[] = {&x};
  detail::Attrs attrs;
  attrs.axis = a;
  attrs.start = begin;
  attrs.stop = end;
  return detail::apply(detail::slice_op, in, attrs);
}

Tensor gather_rows(const Tensor& x, const Tensor& index) { return detail::gather_rows_checked(x, index, false); }

Tensor take(const Tensor& x, const Tensor& index) { return detail::take_checked(x, index, false); }

Tensor detail::take_along_last(const Tensor& x, const Tensor& labels, const char* caller) {
  if (!x.defined() || !labels.defined()) throw ValueError(std::string(caller) + ": an input is an undefined tensor");
  if (labels.dtype() != DType::i64)
    throw DTypeError(std::string(caller) + ": labels must be i64, not " + dtype_name(labels.dtype()));
  if (x.rank() == 0) throw ShapeError(std::string(caller) + ": input 0 is a scalar; it has no last axis to pick from");
  const Shape rows(x.shape().dims().first(static_cast<std::size_t>(x.rank() - 1)));
  if (labels.shape() != rows)
    throw ShapeError(std::string(caller) + ": labels have shape " + labels.shape().str() + ", expected " + rows.str() +
                     " for " + x.shape().str());
  if (labels.device() != x.device())
    throw DeviceError(std::string(caller) + ": labels are on " + device_name(labels.device()) +
                      " but the input is on " + device_name(x.device()));
  const std::int64_t classes = x.dim(-1), n = labels.numel();
  if (classes == 0 && n > 0) throw ValueError(std::string(caller) + ": no classes to pick from in " + x.shape().str());
  // The range check reads the labels on the host: free for host labels, a
  // copy for device ones, impossible while a CUDA graph is captured (the
  // positions are then clamped into range and the check is the warm-up's).
  if (detail::host_reads_allowed(labels.device())) {
    const Tensor host = labels.to(Device::cpu);
    const std::int64_t* label = host.data<std::int64_t>();
    for (std::int64_t i = 0; i < n; ++i)
      if (label[i] < 0 || label[i] >= classes) {
        const std::int64_t row_length = rows.rank() > 0 ? rows.dims().back() : 1;
        std::string where = "at row " + std::to_string(i % row_length);
        if (rows.rank() > 1) where += " of slice " + std::to_string(i / row_length);
        throw ValueError(std::string(caller) + ": label " + std::to_string(label[i]) + " " + where +
                         " is out of range for " + std::to_string(classes) + " classes");
      }
  }
  Tensor positions = empty(labels.shape(), DType::i64, labels.device());
  detail::with_kernels(labels.device(), [&]<class K>() {
    K::label_positions(labels.data<std::int64_t>(), n, classes, positions.data<std::int64_t>());
  });
  return detail::take_checked(x, positions, true);
}

Tensor take_along_last(const Tensor& x, const Tensor& labels) {
  return detail::take_along_last(x, labels, "take_along_last");
}

Tensor concat(const std::vector<Tensor>& xs, int axis) {
  if (xs.empty()) throw ValueError("concat: no tensors given");
  if (!xs[0].defined()) throw ValueError("concat: input 0 is an undefined tensor");
  if (xs.size() == 1) return xs[0];
  std::vector<const Tensor*> in;
  in.reserve(xs.size());
  for (const Tensor& x : xs) in.push_back(&x);
  detail::Attrs attrs;
  attrs.axis = normalize_axis(axis, xs[0].rank(), "concat");
  return detail::apply(detail::concat_op, in, attrs);
}

Tensor stack(const std::vector<Tensor>& xs, int axis) {
  if (xs.empty()) throw ValueError("stack: no tensors given");
  if (!xs[0].defined()) throw ValueError("stack: input 0 is an undefined tensor");
  const int at = normalize_axis(axis, xs[0].rank() + 1, "stack");
  std::vector<Tensor> expanded;
  expanded.reserve(xs.size());
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (!xs[i].defined() || xs[i].shape() != xs[0].shape())
      throw ShapeError("stack: input " + std::to_string(i) + " has shape " +
                       (xs[i].defined() ? xs[i].shape().str() : std::string("(undefined)")) + ", but input 0 has " +
                       xs[0].shape().str());
    expanded.push_back(unsqueeze(xs[i], at));
  }
  return concat(expanded, at);
}

}  // namespace metatape
