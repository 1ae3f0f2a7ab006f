// The empirical NTK (docs/methods.md §5): per-layer Gram matrices for models
// made of dense layers, otherwise per-sample Jacobian rows in one
// batched pass, contracted into the kernel's three output modes.
#include "metatape/meta/ntk.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>
#include <string>

#include "choices.hpp"
#include "metatape/functional.hpp"

namespace metatape::meta {
namespace {

// Throws unless params are the model's parameters in their base shapes and
// floating point.
void check_params(const Model& model, const std::vector<Tensor>& params, const char* where) {
  const auto& infos = model.parameters();
  if (params.size() != infos.size())
    throw ShapeError(std::string(where) + ": " + model.describe() + " has " + std::to_string(infos.size()) +
                     " parameters, got " + std::to_string(params.size()));
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (!params[i].defined() || params[i].shape() != infos[i].shape)
      throw ShapeError(std::string(where) + ": parameter " + infos[i].name + " has shape " +
                       (params[i].defined() ? params[i].shape().str() : std::string("(undefined)")) +
                       ", expected its shared shape " + infos[i].shape.str());
    if (params[i].dtype() != DType::f32 && params[i].dtype() != DType::f64)
      throw DTypeError(std::string(where) + ": parameter " + infos[i].name + " must be f32 or f64");
  }
}

// Returns t after checking (on the CPU; a device tensor would need a copy
// to the host) that every entry is finite: NaN or inf in a kernel would
// otherwise reach a meta-gradient silently. Throws ValueError naming the
// entry.
const Tensor& finite(const Tensor& t, const char* where) {
  if (t.device() != Device::cpu) return t;
  const auto report = [&](std::int64_t k) {
    throw ValueError(std::string(where) + ": the result " + t.shape().str() + " has a non-finite entry at flat index " +
                     std::to_string(k) + " (are the parameters and inputs finite?)");
  };
  const std::int64_t n = t.numel();  // once: Shape::numel is a product over the axes
  const auto scan = [&](const auto* data) {
    for (std::int64_t k = 0; k < n; ++k)
      if (!std::isfinite(data[k])) report(k);
  };
  if (t.dtype() == DType::f64)
    scan(t.data<double>());
  else
    scan(t.data<float>());
  return t;
}

// The rows come from backward passes over what the forward records, which
// a caller's NoGradScope would stop: say so rather than fail inside grad().
void check_grad_mode(const char* where) {
  if (!grad_enabled())
    throw GradError(std::string(where) +
                    ": the Jacobian rows need grad mode (backward passes); call it outside NoGradScope");
}

// Whether x is task-batched ([T, n] + input shape) rather than one task
// ([n] + input shape); throws ShapeError, DTypeError or ValueError (no
// examples) naming `what`.
bool check_inputs(const Model& model, const Tensor& x, const std::vector<Tensor>& params, const std::string& what) {
  if (!x.defined()) throw ValueError(what + " is undefined");
  const Shape example = model.input_shape();
  const int leading = x.rank() - example.rank();
  bool fits = leading == 1 || leading == 2;
  for (int a = 0; fits && a < example.rank(); ++a) fits = x.dim(leading + a) == example[a];
  if (!fits)
    throw ShapeError(what + " must be [points, " + example.str().substr(1) + " or [tasks, points, " +
                     example.str().substr(1) + " for " + model.describe() + ", got " + x.shape().str());
  if (x.dtype() != params.front().dtype()) throw DTypeError(what + " and the parameters must have one floating dtype");
  for (int a = 0; a < leading; ++a)
    if (x.dim(a) == 0) throw ValueError(what + " is empty: " + x.shape().str());
  return leading == 2;
}

// The selected parameters as leaves the backward can stop at, one copy per
// group ([G] + base shape), and the model's parameter list with them in place.
// With `record` a live parameter is expanded on the tape, so gradients of the
// rows reach it; otherwise every copy is a fresh constant leaf.
struct Copies {
  std::vector<Tensor> leaves;
  std::vector<Tensor> mixed;
};

Copies make_copies(const std::vector<Tensor>& params, const std::vector<std::size_t>& selected, std::int64_t groups,
                   bool record) {
  Copies c;
  for (const Tensor& p : params) c.mixed.push_back(record ? p : p.detach());
  for (std::size_t i : selected) {
    Tensor copy = per_task({c.mixed[i]}, groups).front();
    if (!copy.requires_grad()) copy.requires_grad_();
    c.leaves.push_back(copy);
    c.mixed[i] = copy;
  }
  return c;
}

// A seed [G, n, C] that is 1 at output c of point `point` (every point when
// nullopt) of every group, 0 elsewhere.
Tensor seed(const Shape& shape, std::int64_t c, std::optional<std::int64_t> point, DType dtype, Device device) {
  std::vector<double> values(static_cast<std::size_t>(shape.numel()), 0.0);
  for (std::int64_t g = 0; g < shape[0]; ++g)
    for (std::int64_t i = 0; i < shape[1]; ++i)
      if (!point || *point == i) values[static_cast<std::size_t>((g * shape[1] + i) * shape[2] + c)] = 1.0;
  return from_vector(values, shape, dtype).to(device);
}

// The gradients of one backward, one [G] + shape per leaf, as rows [G, P].
Tensor flat_rows(const std::vector<Tensor>& grads) {
  std::vector<Tensor> parts;
  for (const Tensor& g : grads) parts.push_back(reshape(g, Shape{g.dim(0), g.numel() / g.dim(0)}));
  return parts.size() == 1 ? parts.front() : concat(parts, 1);
}

// Jacobian rows of x [G, n, ...] run as G groups (tasks), each with its own
// copy of the selected parameters: [C, G, P] when every group holds one
// point (the per-sample pass: one backward per output), [C, G, n, P] with
// `per_point` (the set Jacobian: one backward per output and point).
Tensor grouped_rows(const Model& model, const std::vector<Tensor>& params, const std::vector<std::size_t>& selected,
                    const Tensor& x, bool per_point, bool create_graph) {
  const Copies copies = make_copies(params, selected, x.dim(0), create_graph);
  const Tensor f = model.forward(copies.mixed, x);  // [G, n, C]
  const GradOptions grad_options{.create_graph = create_graph, .allow_unused = true};
  std::vector<Tensor> per_output;
  for (std::int64_t c = 0; c < f.dim(2); ++c) {
    if (!per_point) {
      per_output.push_back(
          flat_rows(grad({f}, copies.leaves, {seed(f.shape(), c, {}, f.dtype(), f.device())}, grad_options)));
      continue;
    }
    std::vector<Tensor> points;
    for (std::int64_t i = 0; i < f.dim(1); ++i)
      points.push_back(
          flat_rows(grad({f}, copies.leaves, {seed(f.shape(), c, i, f.dtype(), f.device())}, grad_options)));
    per_output.push_back(stack(points, 1));
  }
  return stack(per_output, 0);
}

// jacobian_rows after validation: x [S, ...] -> [C, S, P], x [T, S, ...] ->
// [T, C, S, P].
Tensor rows(const Model& model, const std::vector<Tensor>& params, const Tensor& x, bool batched,
            const NtkOptions& options) {
  const std::vector<std::size_t> selected = subset_indices(model, options.subset);
  const Tensor tasks = batched ? x : unsqueeze(x, 0);  // [T, S, ...]
  const std::int64_t t = tasks.dim(0), s = tasks.dim(1);
  Tensor j;
  if (model.couples_examples()) {
    j = permute(grouped_rows(model, params, selected, tasks, true, options.create_graph), {1, 0, 2, 3});
  } else {  // every example its own one-point task
    Shape points = tasks.shape();
    points[0] = t * s;
    points[1] = 1;
    const Tensor r = grouped_rows(model, params, selected, reshape(tasks, points), false, options.create_graph);
    j = permute(reshape(r, Shape{r.dim(0), t, s, r.dim(2)}), {1, 0, 2, 3});  // [T, C, S, P]
  }
  return batched ? j : squeeze(j, 0);
}

// Θ from rows a [..., C, nA, P] and b [..., C, nB, P] in `mode`.
Tensor contract(const Tensor& a, const Tensor& b, KernelMode mode) {
  const int r = a.rank();  // 3, or 4 with tasks
  if (mode == KernelMode::full) {
    // [..., n, C, P] flattened to rows i·C + c.
    const auto by_point = [r](const Tensor& j) {
      std::vector<int> perm;
      for (int i = 0; i + 3 < r; ++i) perm.push_back(i);
      perm.insert(perm.end(), {r - 2, r - 3, r - 1});
      Tensor p = permute(j, perm);
      Shape shape;
      for (int i = 0; i + 3 < r; ++i) shape.push_back(j.dim(i));
      shape.push_back(j.dim(r - 2) * j.dim(r - 3));
      shape.push_back(j.dim(r - 1));
      return reshape(p, shape);
    };
    return matmul(by_point(a), by_point(b), false, true);
  }
  const Tensor per_output = matmul(a, b, false, true);  // [..., C, nA, nB]
  if (mode == KernelMode::trace) return mean(per_output, {r - 3});
  return r == 3 ? permute(per_output, {1, 2, 0}) : permute(per_output, {0, 2, 3, 1});
}

// The fast exact path for a model made of dense layers (Model::dense_layers).
// Per example the gradient of output c with respect to a layer's W is
// s · a δᵀ and with respect to its b is δ, δ = ∂f_c/∂z, so the layer adds
// s² (aᵢ·aⱼ)(δᵢ·δⱼ) + δᵢ·δⱼ to Θ: Gram matrices of a and δ, never a
// per-example weight gradient. Examples do not interact, so one backward of
// Σᵢ f_c(xᵢ) to every z gives every example's δ for output c.
struct DenseFactors {
  struct Layer {
    Tensor input;   // a [T, n, in]; undefined when the weight is not selected
    Tensor deltas;  // δ [T, C, n, out]
    double scale;   // s
    bool bias;      // whether the bias is selected
  };
  std::vector<Layer> layers;
};

// The factors of x [T, n, ...] over the selected parameters, recorded with
// create_graph (so the kernel's derivatives reach params); std::nullopt when
// the model gives no dense tape or a selected parameter lies outside it.
std::optional<DenseFactors> dense_factors(const Model& model, const std::vector<Tensor>& params,
                                          const std::vector<std::size_t>& selected, const Tensor& x,
                                          bool create_graph) {
  if (model.couples_examples()) return std::nullopt;
  // Every parameter live, so every z is a variable grad() can stop at.
  std::vector<Tensor> live;
  for (const Tensor& p : params) live.push_back(create_graph && p.requires_grad() ? p : p.detach().requires_grad_());
  const std::optional<DenseTape> tape = model.dense_layers(live, x);
  if (!tape) return std::nullopt;
  const auto is_selected = [&](std::size_t i) {
    return std::find(selected.begin(), selected.end(), i) != selected.end();
  };
  std::size_t covered = 0;
  DenseFactors factors;
  std::vector<Tensor> z;
  for (const DenseLayer& l : tape->layers) {
    const bool weight = is_selected(l.weight), bias = l.bias && is_selected(*l.bias);
    covered += (weight ? 1 : 0) + (bias ? 1 : 0);
    if (!weight && !bias) continue;
    factors.layers.push_back({weight ? l.input : Tensor(), Tensor(), l.scale, bias});
    z.push_back(l.preactivation);
  }
  if (covered != selected.size() || factors.layers.empty()) return std::nullopt;
  const Tensor& f = tape->output;  // [T, n, C]
  const GradOptions grad_options{.create_graph = create_graph, .allow_unused = true};
  std::vector<std::vector<Tensor>> per_output(z.size());  // [layer][c] -> δ [T, n, out]
  for (std::int64_t c = 0; c < f.dim(2); ++c) {
    const std::vector<Tensor> d = grad({f}, z, {seed(f.shape(), c, {}, f.dtype(), f.device())}, grad_options);
    for (std::size_t l = 0; l < z.size(); ++l) per_output[l].push_back(d[l]);
  }
  for (std::size_t l = 0; l < z.size(); ++l)  // a view for one output
    factors.layers[l].deltas = per_output[l].size() == 1 ? unsqueeze(per_output[l][0], 1) : stack(per_output[l], 1);
  return factors;
}

// Θ [T, ...] in `mode` from the factors of sets a and b.
Tensor dense_kernel(const DenseFactors& a, const DenseFactors& b, KernelMode mode) {
  Tensor total;
  for (std::size_t l = 0; l < a.layers.size(); ++l) {
    const DenseFactors::Layer &la = a.layers[l], &lb = b.layers[l];
    // What multiplies δᵢ·δⱼ: s² aᵢ·aⱼ for the weight, plus 1 for the bias.
    Tensor pair;  // [T, nA, nB], undefined for 1
    if (la.input.defined()) {
      pair = matmul(la.input, lb.input, false, true);
      if (la.scale != 1) pair = scale(pair, la.scale * la.scale);
      if (la.bias) pair = shift(pair, 1.0);
    }
    const std::int64_t t = la.deltas.dim(0), c = la.deltas.dim(1), na = la.deltas.dim(2), nb = lb.deltas.dim(2);
    Tensor term;
    if (mode == KernelMode::full) {  // rows i·C + c
      const auto by_point = [](const Tensor& d) {
        return reshape(permute(d, {0, 2, 1, 3}), Shape{d.dim(0), d.dim(2) * d.dim(1), d.dim(3)});
      };
      term = matmul(by_point(la.deltas), by_point(lb.deltas), false, true);  // [T, nA·C, nB·C]
      if (pair.defined())
        term = reshape(mul(reshape(term, Shape{t, na, c, nb, c}), reshape(pair, Shape{t, na, 1, nb, 1})),
                       Shape{t, na * c, nb * c});
    } else {
      term = matmul(la.deltas, lb.deltas, false, true);  // [T, C, nA, nB]
      if (pair.defined()) term = mul(term, unsqueeze(pair, 1));
    }
    total = total.defined() ? add(total, term) : term;
  }
  if (mode == KernelMode::full) return total;
  if (mode == KernelMode::trace) return total.dim(1) == 1 ? squeeze(total, 1) : mean(total, {1});
  return permute(total, {0, 2, 3, 1});
}

// Θ(x, x) symmetric to the last bit (a GEMM of J with itself need not be),
// as the Cholesky factorisations and eigensolvers downstream assume.
Tensor symmetric(const Tensor& k, KernelMode mode) {
  const int i = mode == KernelMode::diagonal ? k.rank() - 3 : k.rank() - 2;
  return scale(add(k, transpose(k, i, i + 1)), 0.5);
}

// empirical_ntk after validation by the dense path (a and b one set when
// `same`); std::nullopt where it does not apply.
std::optional<Tensor> dense_ntk(const Model& model, const std::vector<Tensor>& params, const Tensor& a, const Tensor& b,
                                bool same, bool batched, const NtkOptions& options) {
  const std::vector<std::size_t> selected = subset_indices(model, options.subset);
  const auto factors = [&](const Tensor& x) {
    return dense_factors(model, params, selected, batched ? x : unsqueeze(x, 0), options.create_graph);
  };
  const std::optional<DenseFactors> fa = factors(a);
  if (!fa) return std::nullopt;
  const Tensor k = same ? symmetric(dense_kernel(*fa, *fa, options.mode), options.mode)
                        : dense_kernel(*fa, *factors(b), options.mode);
  return batched ? k : squeeze(k, 0);
}

}  // namespace

const char* kernel_mode_name(KernelMode mode) {
  switch (mode) {
    case KernelMode::full:
      return "full";
    case KernelMode::trace:
      return "trace";
    case KernelMode::diagonal:
      return "diagonal";
  }
  return "?";
}

KernelMode parse_kernel_mode(const std::string& name) {
  return detail::parse_choice(name, kKernelModes, kernel_mode_name, "kernel mode");
}

const char* param_subset_name(ParamSubset subset) {
  switch (subset) {
    case ParamSubset::all:
      return "all";
    case ParamSubset::head:
      return "head";
    case ParamSubset::weights:
      return "weights";
  }
  return "?";
}

ParamSubset parse_param_subset(const std::string& name) {
  return detail::parse_choice(name, kParamSubsets, param_subset_name, "parameter subset");
}

std::vector<std::size_t> subset_indices(const Model& model, ParamSubset subset) {
  if (subset == ParamSubset::head) return model.head();
  std::vector<std::size_t> indices;
  for (std::size_t i = 0; i < model.parameters().size(); ++i)
    if (subset == ParamSubset::all || model.parameters()[i].shape.rank() >= 2) indices.push_back(i);
  return indices;
}

Tensor jacobian_rows(const Model& model, const std::vector<Tensor>& params, const Tensor& x,
                     const NtkOptions& options) {
  check_params(model, params, "jacobian_rows");
  check_grad_mode("jacobian_rows");
  const bool batched = check_inputs(model, x, params, "jacobian_rows: inputs");
  if (options.create_graph) return finite(rows(model, params, x, batched, options), "jacobian_rows");
  TapeScope scope;
  return finite(rows(model, params, x, batched, options).detach(), "jacobian_rows");
}

Tensor empirical_ntk(const Model& model, const std::vector<Tensor>& params, const Tensor& a, const Tensor& b,
                     const NtkOptions& options) {
  check_params(model, params, "empirical_ntk");
  check_grad_mode("empirical_ntk");
  const bool batched = check_inputs(model, a, params, "empirical_ntk: first inputs");
  const bool same = a.defined() && b.defined() && a.raw_data() == b.raw_data() && a.shape() == b.shape();
  if (!same && check_inputs(model, b, params, "empirical_ntk: second inputs") != batched)
    throw ShapeError("empirical_ntk: inputs " + a.shape().str() + " and " + b.shape().str() +
                     " must both be task-batched or both one task");
  if (batched && a.dim(0) != b.dim(0))
    throw ShapeError("empirical_ntk: inputs " + a.shape().str() + " and " + b.shape().str() +
                     " have different task counts");
  const auto compute = [&] {
    if (std::optional<Tensor> k = dense_ntk(model, params, a, b, same, batched, options)) return *k;
    const Tensor ja = rows(model, params, a, batched, options);
    if (!same) return contract(ja, rows(model, params, b, batched, options), options.mode);
    return symmetric(contract(ja, ja, options.mode), options.mode);
  };
  if (options.create_graph) return finite(compute(), "empirical_ntk");
  TapeScope scope;
  return finite(compute().detach(), "empirical_ntk");
}

Tensor empirical_ntk(const Model& model, const std::vector<Tensor>& params, const Tensor& x,
                     const NtkOptions& options) {
  return empirical_ntk(model, params, x, x, options);
}

Tensor ntk_vector_product(const Model& model, const std::vector<Tensor>& params, const Tensor& x, const Tensor& v,
                          const NtkOptions& options) {
  check_params(model, params, "ntk_vector_product");
  const bool batched = check_inputs(model, x, params, "ntk_vector_product: inputs");
  const Shape out_shape = batched ? Shape{x.dim(0), x.dim(1), model.outputs()} : Shape{x.dim(0), model.outputs()};
  if (!v.defined() || v.shape() != out_shape)
    throw ShapeError("ntk_vector_product: v must have the outputs' shape " + out_shape.str() + ", got " +
                     (v.defined() ? v.shape().str() : std::string("(undefined)")));
  if (v.dtype() != params.front().dtype()) throw DTypeError("ntk_vector_product: v and the parameters differ in dtype");
  const std::vector<std::size_t> selected = subset_indices(model, options.subset);
  const auto product = [&] {
    // Per-task copies of the selected parameters make J block-diagonal over
    // tasks: one kernel per task, as empirical_ntk's.
    std::vector<Tensor> mixed;
    for (const Tensor& p : params) mixed.push_back(options.create_graph ? p : p.detach());
    std::vector<Tensor> primals;
    for (std::size_t i : selected) primals.push_back(batched ? per_task({mixed[i]}, x.dim(0)).front() : mixed[i]);
    const TensorListToTensorFn f = [&](const std::vector<Tensor>& sel) {
      std::vector<Tensor> all = mixed;
      for (std::size_t k = 0; k < selected.size(); ++k) all[selected[k]] = sel[k];
      return model.forward(all, x);
    };
    const FunctionalOptions fo{.create_graph = options.create_graph};
    const std::vector<Tensor> jt_v =
        vjp(f, primals, options.create_graph ? v : v.detach(), fo).vjp;  // Jᵀ v, shaped like the parameters
    return jvp(f, primals, jt_v, fo).jvp;                                // J (Jᵀ v)
  };
  if (options.create_graph) return finite(product(), "ntk_vector_product");
  TapeScope scope;
  return finite(product().detach(), "ntk_vector_product");
}

}  // namespace metatape::meta
