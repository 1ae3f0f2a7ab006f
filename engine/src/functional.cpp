// Functional transforms on top of grad(): every one runs f once on fresh
// leaves and walks the recorded graph (or the graph a recorded backward
// left) as often as it needs, never re-running f.
#include "metatape/functional.hpp"

#include <optional>
#include <string>

#include "metatape/error.hpp"
#include "metatape/ops.hpp"
#include "metatape/tape.hpp"
#include "tape.hpp"

namespace metatape {
namespace {

using Tensors = std::vector<Tensor>;

// What a transform records: released when it returns, unless its results are
// to stay differentiable. Grad mode is on throughout (a transform asked for a
// derivative under NoGradScope would otherwise record nothing to walk).
// Members are destroyed scope first, then grad mode.
class Recording {
 public:
  explicit Recording(bool create_graph) {
    if (!create_graph) scope_.emplace();
  }

 private:
  detail::GradModeGuard grad_on_{detail::this_thread_tape(), true};
  std::optional<TapeScope> scope_;
};

Tensor finish(const Tensor& t, bool create_graph) { return create_graph ? t : t.detach(); }

Tensors finish(const Tensors& ts, bool create_graph) {
  Tensors out;
  out.reserve(ts.size());
  for (const Tensor& t : ts) out.push_back(finish(t, create_graph));
  return out;
}

// "primal 2", "output 0 of f".
std::string label(const std::string& role, std::size_t i) {
  return role + " " + std::to_string(i) + (role == "output" ? " of f" : "");
}

std::string at(const char* fn, const char* role, std::size_t i) { return std::string(fn) + ": " + label(role, i); }

void check_function(const char* fn, bool callable) {
  if (!callable) throw ValueError(std::string(fn) + ": f is an empty function");
}

// Defined floating tensors; `role` is "primal" or "output".
void check_differentiable(const char* fn, const char* role, const Tensors& ts) {
  if (ts.empty())
    throw ValueError(std::string(fn) +
                     (role == std::string("output") ? ": f returned no outputs" : ": no primals given"));
  for (std::size_t i = 0; i < ts.size(); ++i) {
    if (!ts[i].defined()) throw ValueError(at(fn, role, i) + " is an undefined tensor");
    if (!is_floating(ts[i].dtype()))
      throw DTypeError(at(fn, role, i) + " is " + dtype_name(ts[i].dtype()) +
                       "; only f32 and f64 tensors can be differentiated");
  }
}

// `given` (cotangents, tangents, v) must match `reference` (outputs or
// primals) one to one in shape, dtype and device.
void check_matching(const char* fn, const char* role, const Tensors& given, const char* reference_role,
                    const Tensors& reference) {
  if (given.size() != reference.size())
    throw ValueError(std::string(fn) + ": " + std::to_string(given.size()) + " " + role + "(s) given for " +
                     std::to_string(reference.size()) + " " + reference_role + "(s)");
  for (std::size_t i = 0; i < given.size(); ++i) {
    const Tensor& g = given[i];
    const Tensor& r = reference[i];
    const std::string other = label(reference_role, i);
    if (!g.defined()) throw ValueError(at(fn, role, i) + " is an undefined tensor");
    if (g.shape() != r.shape())
      throw ShapeError(at(fn, role, i) + " has shape " + g.shape().str() + " but " + other + " has shape " +
                       r.shape().str());
    if (g.dtype() != r.dtype())
      throw DTypeError(at(fn, role, i) + " is " + dtype_name(g.dtype()) + " but " + other + " is " +
                       dtype_name(r.dtype()));
    if (g.device() != r.device())
      throw DeviceError(at(fn, role, i) + " is on " + device_name(g.device()) + " but " + other + " is on " +
                        device_name(r.device()));
  }
}

void check_scalar(const char* fn, const Tensor& y) {
  if (y.numel() != 1)
    throw ShapeError(std::string(fn) + ": f must return a scalar (one element), but it returned shape " +
                     y.shape().str());
}

// The primals as variables to differentiate with respect to. A live primal
// is copied by a recorded op when the result is to be recorded, so that the
// derivatives stay connected to it (and only f's use of it counts, not a use
// f closes over); otherwise a fresh leaf holds the same storage.
Tensors make_leaves(const Tensors& primals, bool create_graph) {
  Tensors leaves;
  leaves.reserve(primals.size());
  for (const Tensor& x : primals) {
    if (create_graph && x.requires_grad()) {
      leaves.push_back(x.clone());
    } else {
      leaves.push_back(x.detach());
      leaves.back().requires_grad_();
    }
  }
  return leaves;
}

Tensors run(const char* fn, const TensorListFn& f, const Tensors& leaves) {
  Tensors outputs = f(leaves);
  check_differentiable(fn, "output", outputs);
  return outputs;
}

// d(Σ_k ⟨seeds_k, outputs_k⟩)/d inputs. An output that was not recorded is
// a constant of the inputs and contributes nothing (grad() would refuse it);
// an input nothing depends on gets zeros.
Tensors backward(const Tensors& outputs, const Tensors& inputs, const Tensors& seeds, bool create_graph) {
  Tensors live_outputs, live_seeds;
  for (std::size_t k = 0; k < outputs.size(); ++k) {
    if (!outputs[k].requires_grad()) continue;
    live_outputs.push_back(outputs[k]);
    live_seeds.push_back(create_graph ? seeds[k] : seeds[k].detach());
  }
  if (live_outputs.empty()) {
    Tensors zero;
    for (const Tensor& x : inputs) zero.push_back(zeros(x.shape(), x.dtype(), x.device()));
    return zero;
  }
  return grad(live_outputs, inputs, live_seeds, {.create_graph = create_graph, .allow_unused = true});
}

Tensor ones_like(const Tensor& t) { return ones(t.shape(), t.dtype(), t.device()); }

Shape joined(const Shape& a, const Shape& b) {
  Shape s = a;
  for (std::int64_t d : b) s.push_back(d);
  return s;
}

// Refuses, before any backward pass, a block whose shape would not fit a tensor.
// `role` names what is differentiated: "output" (of f) or "gradient of primal".
void check_block_ranks(const char* fn, const char* role, const Tensors& outputs, const Tensors& inputs,
                       const FunctionalOptions& o) {
  if (o.flatten) return;
  for (std::size_t k = 0; k < outputs.size(); ++k)
    for (std::size_t i = 0; i < inputs.size(); ++i)
      if (outputs[k].rank() + inputs[i].rank() > kMaxRank)
        throw ShapeError(std::string(fn) + ": the block of " + label(role, k) + " (shape " + outputs[k].shape().str() +
                         ") and primal " + std::to_string(i) + " (shape " + inputs[i].shape().str() +
                         ") would have rank " + std::to_string(outputs[k].rank() + inputs[i].rank()) +
                         ", more than the " + std::to_string(kMaxRank) +
                         " a tensor can have; set flatten for [numel_out, numel_in]");
}

// e_r, shaped like `like`.
Tensor basis_vector(const Tensor& like, std::int64_t r) {
  std::vector<double> e(static_cast<std::size_t>(like.numel()), 0.0);
  e[static_cast<std::size_t>(r)] = 1.0;
  return from_vector(e, like.shape(), like.dtype()).to(like.device());
}

// The block ∂y/∂x from its flattened rows (stacked along `axis` 0) or
// columns (axis 1); zeros when there are none (y does not depend on x).
Tensor assemble(const Tensors& pieces, int axis, const Tensor& y, const Tensor& x, bool flatten) {
  const Shape shape = flatten ? Shape{y.numel(), x.numel()} : joined(y.shape(), x.shape());
  return pieces.empty() ? zeros(shape, x.dtype(), x.device()) : reshape(stack(pieces, axis), shape);
}

// blocks[k][i] = ∂ outputs_k / ∂ inputs_i, row by row: one backward walk per
// element r of output k, seeded with e_r, gives row r of every block k at
// once. The tape keeps the graph between walks, so nothing is recomputed.
std::vector<Tensors> jacobian_by_rows(const Tensors& outputs, const Tensors& inputs, const FunctionalOptions& o) {
  std::vector<Tensors> blocks(outputs.size());
  for (std::size_t k = 0; k < outputs.size(); ++k) {
    const Tensor& y = outputs[k];
    std::vector<Tensors> rows(inputs.size());
    if (y.requires_grad()) {
      for (std::int64_t r = 0; r < y.numel(); ++r) {
        const Tensors row = backward({y}, inputs, {basis_vector(y, r)}, o.create_graph);
        for (std::size_t i = 0; i < inputs.size(); ++i) rows[i].push_back(reshape(row[i], {inputs[i].numel()}));
      }
    }
    for (std::size_t i = 0; i < inputs.size(); ++i) blocks[k].push_back(assemble(rows[i], 0, y, inputs[i], o.flatten));
  }
  return blocks;
}

Tensors zero_cotangents(const Tensors& outputs) {
  Tensors u;
  for (const Tensor& y : outputs) {
    u.push_back(zeros(y.shape(), y.dtype(), y.device()));
    u.back().requires_grad_();
  }
  return u;
}

// The same blocks column by column: g(u) = uᵀJ is recorded once (linear in
// u, so u = 0 will do), and the walk of g_i seeded with e_c gives column c of
// every block (k, i) at once: J_{k,i} e_c = ∂⟨g_i, e_c⟩/∂u_k.
std::vector<Tensors> jacobian_by_columns(const Tensors& outputs, const Tensors& inputs, const FunctionalOptions& o) {
  const Tensors u = zero_cotangents(outputs);
  const Tensors g = backward(outputs, inputs, u, /*create_graph=*/true);
  std::vector<std::vector<Tensors>> columns(outputs.size(), std::vector<Tensors>(inputs.size()));
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (!g[i].requires_grad()) continue;
    for (std::int64_t c = 0; c < inputs[i].numel(); ++c) {
      const Tensors column = backward({g[i]}, u, {basis_vector(g[i], c)}, o.create_graph);
      for (std::size_t k = 0; k < outputs.size(); ++k)
        columns[k][i].push_back(reshape(column[k], {outputs[k].numel()}));
    }
  }
  std::vector<Tensors> blocks(outputs.size());
  for (std::size_t k = 0; k < outputs.size(); ++k)
    for (std::size_t i = 0; i < inputs.size(); ++i)
      blocks[k].push_back(assemble(columns[k][i], 1, outputs[k], inputs[i], o.flatten));
  return blocks;
}

VjpResult<Tensors, Tensors> vjp_impl(const char* fn, const TensorListFn& f, const Tensors& primals,
                                     const Tensors& cotangents, const FunctionalOptions& o) {
  check_differentiable(fn, "primal", primals);
  Recording recording(o.create_graph);
  const Tensors x = make_leaves(primals, o.create_graph);
  const Tensors y = run(fn, f, x);
  check_matching(fn, "cotangent", cotangents, "output", y);
  const Tensors vj = backward(y, x, cotangents, o.create_graph);
  return {finish(y, o.create_graph), finish(vj, o.create_graph)};
}

JvpResult<Tensors> jvp_impl(const char* fn, const TensorListFn& f, const Tensors& primals, const Tensors& tangents,
                            const FunctionalOptions& o) {
  check_differentiable(fn, "primal", primals);
  check_matching(fn, "tangent", tangents, "primal", primals);
  Recording recording(o.create_graph);
  const Tensors x = make_leaves(primals, o.create_graph);
  const Tensors y = run(fn, f, x);
  // g(u) = uᵀJ, recorded: linear in u, so its value at u = 0 does not matter.
  const Tensors u = zero_cotangents(y);
  const Tensors g = backward(y, x, u, /*create_graph=*/true);
  const Tensors jv = backward(g, u, tangents, o.create_graph);
  return {finish(y, o.create_graph), finish(jv, o.create_graph)};
}

// f's value and its recorded gradient, for the second-order transforms.
struct Gradient {
  Tensors x;
  Tensor y;
  Tensors g;
};

Gradient recorded_gradient(const char* fn, const TensorListToTensorFn& f, const Tensors& primals, bool create_graph) {
  Gradient r;
  r.x = make_leaves(primals, create_graph);
  r.y = f(r.x);
  check_differentiable(fn, "output", {r.y});
  check_scalar(fn, r.y);
  r.g = backward({r.y}, r.x, {ones_like(r.y)}, /*create_graph=*/true);
  return r;
}

HvpResult<Tensors> hvp_impl(const char* fn, const TensorListToTensorFn& f, const Tensors& primals, const Tensors& v,
                            const FunctionalOptions& o) {
  check_function(fn, static_cast<bool>(f));
  check_differentiable(fn, "primal", primals);
  check_matching(fn, "v", v, "primal", primals);
  Recording recording(o.create_graph);
  const Gradient r = recorded_gradient(fn, f, primals, o.create_graph);
  const Tensors hv = backward(r.g, r.x, v, o.create_graph);
  return {finish(r.y, o.create_graph), finish(hv, o.create_graph)};
}

std::vector<Tensors> jacobian_impl(const char* fn, const TensorListFn& f, const Tensors& primals,
                                   const FunctionalOptions& o) {
  check_differentiable(fn, "primal", primals);
  Recording recording(o.create_graph);
  const Tensors x = make_leaves(primals, o.create_graph);
  const Tensors y = run(fn, f, x);
  check_block_ranks(fn, "output", y, x, o);
  std::vector<Tensors> blocks =
      o.strategy == JacobianStrategy::forward ? jacobian_by_columns(y, x, o) : jacobian_by_rows(y, x, o);
  for (Tensors& row : blocks) row = finish(row, o.create_graph);
  return blocks;
}

std::vector<Tensors> hessian_impl(const char* fn, const TensorListToTensorFn& f, const Tensors& primals,
                                  const FunctionalOptions& o) {
  check_function(fn, static_cast<bool>(f));
  check_differentiable(fn, "primal", primals);
  Recording recording(o.create_graph);
  const Gradient r = recorded_gradient(fn, f, primals, o.create_graph);
  check_block_ranks(fn, "gradient of primal", r.x, r.x, o);
  std::vector<Tensors> blocks = jacobian_by_rows(r.g, r.x, o);
  for (Tensors& row : blocks) row = finish(row, o.create_graph);
  return blocks;
}

// The single-tensor and many-to-one forms as list functions.
TensorListFn as_list(const char* fn, const TensorFn& f) {
  check_function(fn, static_cast<bool>(f));
  return [&f](const Tensors& xs) { return Tensors{f(xs[0])}; };
}

TensorListFn as_list(const char* fn, const TensorListToTensorFn& f) {
  check_function(fn, static_cast<bool>(f));
  return [&f](const Tensors& xs) { return Tensors{f(xs)}; };
}

TensorListFn as_list(const char* fn, const TensorListFn& f) {
  check_function(fn, static_cast<bool>(f));
  return f;
}

TensorListToTensorFn as_many_to_one(const char* fn, const TensorFn& f) {
  check_function(fn, static_cast<bool>(f));
  return [&f](const Tensors& xs) { return f(xs[0]); };
}

}  // namespace

VjpResult<Tensor, Tensor> vjp(const TensorFn& f, const Tensor& primal, const Tensor& cotangent,
                              const FunctionalOptions& options) {
  auto r = vjp_impl("vjp", as_list("vjp", f), {primal}, {cotangent}, options);
  return {r.output[0], r.vjp[0]};
}

VjpResult<Tensor, std::vector<Tensor>> vjp(const TensorListToTensorFn& f, const std::vector<Tensor>& primals,
                                           const Tensor& cotangent, const FunctionalOptions& options) {
  auto r = vjp_impl("vjp", as_list("vjp", f), primals, {cotangent}, options);
  return {r.output[0], std::move(r.vjp)};
}

VjpResult<std::vector<Tensor>, std::vector<Tensor>> vjp(const TensorListFn& f, const std::vector<Tensor>& primals,
                                                        const std::vector<Tensor>& cotangents,
                                                        const FunctionalOptions& options) {
  return vjp_impl("vjp", as_list("vjp", f), primals, cotangents, options);
}

JvpResult<Tensor> jvp(const TensorFn& f, const Tensor& primal, const Tensor& tangent,
                      const FunctionalOptions& options) {
  auto r = jvp_impl("jvp", as_list("jvp", f), {primal}, {tangent}, options);
  return {r.output[0], r.jvp[0]};
}

JvpResult<Tensor> jvp(const TensorListToTensorFn& f, const std::vector<Tensor>& primals,
                      const std::vector<Tensor>& tangents, const FunctionalOptions& options) {
  auto r = jvp_impl("jvp", as_list("jvp", f), primals, tangents, options);
  return {r.output[0], r.jvp[0]};
}

JvpResult<std::vector<Tensor>> jvp(const TensorListFn& f, const std::vector<Tensor>& primals,
                                   const std::vector<Tensor>& tangents, const FunctionalOptions& options) {
  return jvp_impl("jvp", as_list("jvp", f), primals, tangents, options);
}

HvpResult<Tensor> hvp(const TensorFn& f, const Tensor& primal, const Tensor& v, const FunctionalOptions& options) {
  auto r = hvp_impl("hvp", as_many_to_one("hvp", f), {primal}, {v}, options);
  return {r.output, r.hvp[0]};
}

HvpResult<std::vector<Tensor>> hvp(const TensorListToTensorFn& f, const std::vector<Tensor>& primals,
                                   const std::vector<Tensor>& v, const FunctionalOptions& options) {
  return hvp_impl("hvp", f, primals, v, options);
}

Tensor jacobian(const TensorFn& f, const Tensor& primal, const FunctionalOptions& options) {
  return jacobian_impl("jacobian", as_list("jacobian", f), {primal}, options)[0][0];
}

std::vector<Tensor> jacobian(const TensorListToTensorFn& f, const std::vector<Tensor>& primals,
                             const FunctionalOptions& options) {
  return jacobian_impl("jacobian", as_list("jacobian", f), primals, options)[0];
}

std::vector<std::vector<Tensor>> jacobian(const TensorListFn& f, const std::vector<Tensor>& primals,
                                          const FunctionalOptions& options) {
  return jacobian_impl("jacobian", as_list("jacobian", f), primals, options);
}

Tensor hessian(const TensorFn& f, const Tensor& primal, const FunctionalOptions& options) {
  return hessian_impl("hessian", as_many_to_one("hessian", f), {primal}, options)[0][0];
}

std::vector<std::vector<Tensor>> hessian(const TensorListToTensorFn& f, const std::vector<Tensor>& primals,
                                         const FunctionalOptions& options) {
  return hessian_impl("hessian", f, primals, options);
}

}  // namespace metatape
