#include "tape.hpp"

#include <algorithm>
#include <string>

#include "cpu_capture.hpp"
#include "metatape/error.hpp"
#include "metatape/ops.hpp"

namespace metatape::detail {
namespace {

std::string describe(const char* role, std::size_t i) { return std::string(role) + " " + std::to_string(i); }

// Checks that `t` is a live variable of `tape` for grad(); `role` is
// "output" or "input".
void require_live(const Tape& tape, const Tensor& t, const char* role, std::size_t i) {
  if (!t.defined()) throw GradError("grad: " + describe(role, i) + " is an undefined tensor");
  const VarRef& ref = t.var();
  if (ref.tape == nullptr) {
    if (std::string(role) == "input")
      throw GradError("grad: input " + std::to_string(i) +
                      " was not recorded on the tape: mark it with requires_grad_() before computing the outputs");
    throw GradError("grad: output " + std::to_string(i) +
                    " was not recorded on the tape: it does not depend on any tensor marked requires_grad_(), "
                    "or it was computed under NoGradScope or detached");
  }
  if (!tape.is_live(ref)) throw GradError("grad: " + describe(role, i) + " " + stale_reason(ref));
}

void accumulate(Tensor& into, Tensor grad) { into = into.defined() ? add(into, grad) : std::move(grad); }

// Whether `t` is the only handle on its storage (a CPU capture's own
// reference aside), so that writing into it changes no other tensor.
bool sole_handle(const Tensor& t) {
  Storage* storage = TensorAccess::storage(t);
  const int capture_refs = active_cpu_capture != nullptr && active_cpu_capture->holds(storage) ? 1 : 0;
  return storage->refs.load(std::memory_order_acquire) == 1 + capture_refs;
}

// Outputs and inputs must be live variables of this tape.
void validate_grad_arguments(const Tape& tape, const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs) {
  if (outputs.empty()) throw GradError("grad: no outputs given");
  if (inputs.empty()) throw GradError("grad: no inputs given");
  for (std::size_t i = 0; i < outputs.size(); ++i) require_live(tape, outputs[i], "output", i);
  for (std::size_t i = 0; i < inputs.size(); ++i) require_live(tape, inputs[i], "input", i);
}

// The gradient each output starts from: the given seeds, checked against
// their outputs, or 1 for scalar outputs when none are given.
std::vector<Tensor> seed_gradients(const std::vector<Tensor>& outputs, const std::vector<Tensor>& seeds) {
  std::vector<Tensor> seed_values(outputs.size());
  if (seeds.empty()) {
    for (std::size_t i = 0; i < outputs.size(); ++i) {
      if (outputs[i].numel() != 1)
        throw GradError("grad: output " + std::to_string(i) + " has shape " + outputs[i].shape().str() +
                        "; a non-scalar output needs a seed gradient of that shape");
      seed_values[i] = ones(outputs[i].shape(), outputs[i].dtype(), outputs[i].device());
    }
    return seed_values;
  }
  if (seeds.size() != outputs.size())
    throw GradError("grad: " + std::to_string(seeds.size()) + " seeds given for " + std::to_string(outputs.size()) +
                    " outputs");
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    if (!seeds[i].defined()) throw GradError("grad: seed " + std::to_string(i) + " is an undefined tensor");
    if (seeds[i].shape() != outputs[i].shape())
      throw ShapeError("grad: seed " + std::to_string(i) + " has shape " + seeds[i].shape().str() + " but output " +
                       std::to_string(i) + " has shape " + outputs[i].shape().str());
    if (seeds[i].dtype() != outputs[i].dtype())
      throw DTypeError("grad: seed " + std::to_string(i) + " is " + dtype_name(seeds[i].dtype()) + " but output " +
                       std::to_string(i) + " is " + dtype_name(outputs[i].dtype()));
    if (seeds[i].device() != outputs[i].device())
      throw DeviceError("grad: seed " + std::to_string(i) + " is on " + device_name(seeds[i].device()) +
                        " but output " + std::to_string(i) + " is on " + device_name(outputs[i].device()));
    seed_values[i] = seeds[i];
  }
  return seed_values;
}

}  // namespace

Tape& this_thread_tape() {
  thread_local Tape tape;
  return tape;
}

const char* stale_reason(const VarRef& ref) {
  return ref.tape == &this_thread_tape()
             ? "was recorded in a TapeScope that has since been released; detach() it to use it as a constant"
             : "was recorded on another thread's tape; each thread differentiates only what it recorded";
}

VarRef Tape::new_leaf() {
  const auto index = static_cast<std::uint32_t>(vars_.size());
  vars_.push_back({next_serial_, kLeaf, static_cast<std::uint32_t>(nodes_.size())});
  return {this, next_serial_++, index};
}

void Tape::record(const OpDef& op, Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  const auto node_index = static_cast<std::uint32_t>(nodes_.size());
  Node& node = nodes_.emplace_back();
  node.op = &op;
  node.attrs = attrs;
  node.in_begin = static_cast<std::uint32_t>(inputs_.size());
  node.n_in = static_cast<std::uint32_t>(in.size());
  node.saved_begin = static_cast<std::uint32_t>(saved_.size());
  node.out_var_begin = static_cast<std::uint32_t>(vars_.size());
  node.n_out = static_cast<std::uint32_t>(out.size());

  for (std::size_t i = 0; i < in.size(); ++i) {
    const Tensor& t = *in[i];
    const bool differentiable = !op_input_is_index(op, i) && is_live(t.var());
    inputs_.push_back({differentiable ? t.var().index : kNoVar, t.dtype(), t.shape()});
    if (op_saves_input(op, i))
      saved_.push_back(t);
    else
      saved_.emplace_back();
  }
  for (Tensor& t : out) {
    const auto index = static_cast<std::uint32_t>(vars_.size());
    vars_.push_back({next_serial_, node_index, node_index});
    TensorAccess::set_var(t, {this, next_serial_++, index});
    if (op_saves_outputs(op))
      saved_.push_back(t);
    else
      saved_.emplace_back();
  }
}

void Tape::release_to(const TapeMark& mark) {
  // Scopes close in reverse order of opening, so the tape never shrank below
  // an open scope's mark; the min() only guards against misuse.
  nodes_.resize(std::min(nodes_.size(), mark.nodes));
  vars_.resize(std::min(vars_.size(), mark.vars));
  inputs_.resize(std::min(inputs_.size(), mark.inputs));
  saved_.resize(std::min(saved_.size(), mark.saved));
}

// grad() runs in phases:
//   1. validate the outputs and inputs (validate_grad_arguments) and the seeds
//      (seed_gradients);
//   2. fix the part of the tape to walk and size its arrays (begin_walk);
//   3. mark what depends on an input, by a forward sweep (mark_dependents);
//   4. walk the nodes backwards, running each one's backward rule (run_node);
//   5. collect the inputs' adjoints (collect_input_grads).
// Its working arrays are the tape's own (Scratch) and keep their capacity
// between calls, so a training loop's backward passes allocate nothing either.
std::vector<Tensor> Tape::grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                               const std::vector<Tensor>& seeds, const GradOptions& options) {
  validate_grad_arguments(*this, outputs, inputs);
  const std::vector<Tensor> seed_values = seed_gradients(outputs, seeds);

  struct ReleaseOnExit {  // also when a rule throws: no storage kept past the call
    Scratch& w;
    ~ReleaseOnExit() { w.release_tensors(); }
  } release_on_exit{scratch_};
  Walk walk = begin_walk(outputs, inputs);
  mark_dependents(walk);
  {
    GradModeGuard mode(*this, options.create_graph);
    for (std::size_t i = 0; i < outputs.size(); ++i) {
      const std::uint32_t v = outputs[i].var().index;
      if (walk.depends_on_input(v)) accumulate(walk.adjoint[walk.slot(v)], seed_values[i]);
    }
    for (std::size_t n = walk.end_node; n-- > walk.first_node;) run_node(n, walk, options);
  }
  return collect_input_grads(walk, inputs, options);
}

Tape::Walk Tape::begin_walk(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs) {
  // The walk covers the nodes between the oldest input and the newest output;
  // nothing outside that range can carry a gradient from one to the other.
  std::uint32_t lowest = UINT32_MAX;
  for (const Tensor& t : inputs) lowest = std::min(lowest, t.var().index);
  std::size_t end_node = 0;
  for (const Tensor& t : outputs) {
    const Var& v = vars_[t.var().index];
    if (v.producer != kLeaf) end_node = std::max<std::size_t>(end_node, v.producer + 1);
  }
  Walk walk{lowest, vars_[lowest].first_node, end_node, scratch_.depends, scratch_.requested, scratch_.adjoint};
  const std::size_t span = vars_.size() - lowest;  // variables the walk may touch
  walk.depends.assign(span, 0);
  walk.requested.assign(span, 0);
  walk.adjoint.assign(span, Tensor{});
  for (const Tensor& t : inputs) walk.depends[walk.slot(t.var().index)] = walk.requested[walk.slot(t.var().index)] = 1;
  return walk;
}

// Only the adjoints of variables that depend on an input are worth computing,
// and a backward rule is asked only for those of its inputs.
void Tape::mark_dependents(Walk& walk) const {
  for (std::size_t n = walk.first_node; n < walk.end_node; ++n) {
    const Node& node = nodes_[n];
    bool any = false;
    for (std::uint32_t i = 0; i < node.n_in && !any; ++i) any = walk.depends_on_input(inputs_[node.in_begin + i].var);
    if (any)
      for (std::uint32_t j = 0; j < node.n_out; ++j) walk.depends[walk.slot(node.out_var_begin + j)] = 1;
  }
}

void Tape::run_node(std::size_t n, Walk& walk, const GradOptions& options) {
  // A copy: with create_graph the rule appends to nodes_, which may move it.
  const Node node = nodes_[n];
  Scratch& w = scratch_;
  bool any_output = false;
  w.grad_outputs.assign(node.n_out, Tensor{});
  for (std::uint32_t j = 0; j < node.n_out; ++j) {
    const std::uint32_t v = node.out_var_begin + j;
    if (walk.has_slot(v) && walk.adjoint[walk.slot(v)].defined()) {
      w.grad_outputs[j] = walk.adjoint[walk.slot(v)];
      any_output = true;
    }
  }
  if (!any_output) return;
  bool any_input = false;
  w.needs.assign(node.n_in, 0);
  for (std::uint32_t i = 0; i < node.n_in; ++i) {
    w.needs[i] = walk.depends_on_input(inputs_[node.in_begin + i].var);
    any_input = any_input || w.needs[i];
  }
  if (!any_input) return;
  if (node.released)
    throw GradError(std::string("grad: the tape around '") + node.op->name +
                    "' was already differentiated with retain_graph = false, which freed the values its "
                    "backward needs; keep retain_graph = true to differentiate it again");

  offer_accumulators(node, walk, options);
  call_backward(node);
  if (!options.retain_graph) {
    for (std::uint32_t k = 0; k < node.n_in + node.n_out; ++k) saved_[node.saved_begin + k] = Tensor{};
    nodes_[n].released = true;
  }

  // An output's adjoint is complete once its producer has run; drop it
  // unless it was asked for, so peak memory follows the walk.
  for (std::uint32_t j = 0; j < node.n_out; ++j) {
    const std::uint32_t v = node.out_var_begin + j;
    if (walk.has_slot(v) && !walk.requested[walk.slot(v)]) walk.adjoint[walk.slot(v)] = Tensor{};
  }
  for (std::uint32_t i = 0; i < node.n_in; ++i) {
    if (!w.needs[i] || !w.grads[i].defined()) continue;
    if (w.grads[i].shape() != w.shapes[i] || w.grads[i].dtype() != w.dtypes[i])
      throw Error(std::string("internal error: the backward rule of '") + node.op->name + "' gave input " +
                  std::to_string(i) + " a gradient of shape " + w.grads[i].shape().str() + " " +
                  dtype_name(w.grads[i].dtype()) + ", expected " + w.shapes[i].str() + " " + dtype_name(w.dtypes[i]));
    accumulate(walk.adjoint[walk.slot(inputs_[node.in_begin + i].var)], std::move(w.grads[i]));
  }
}

// The adjoints the node's rule may add its gradients into in place
// (BackwardContext::grad_accumulator): with no graph recorded, an input's
// adjoint already gathered, of its shape and dtype, held by no other handle,
// and the input's only position among the node's inputs. Adding into it is
// the tape's own next step (accumulate), done in the rule's pass: the same
// sum, and since the node adds just this one term to that adjoint (the
// input appears once), its terms arrive in the same order.
void Tape::offer_accumulators(const Node& node, Walk& walk, const GradOptions& options) {
  std::vector<Tensor*>& offered = scratch_.accumulators;
  offered.assign(node.n_in, nullptr);
  if (options.create_graph) return;
  for (std::uint32_t i = 0; i < node.n_in; ++i) {
    const InputRecord& in = inputs_[node.in_begin + i];
    if (!scratch_.needs[i]) continue;
    Tensor& adjoint = walk.adjoint[walk.slot(in.var)];
    if (!adjoint.defined() || adjoint.shape() != in.shape || adjoint.dtype() != in.dtype || !sole_handle(adjoint))
      continue;
    // Last, as it scans the node's inputs (a concat may have many).
    bool repeated = false;
    for (std::uint32_t j = 0; j < node.n_in && !repeated; ++j)
      repeated = j != i && inputs_[node.in_begin + j].var == in.var;
    if (!repeated) offered[i] = &adjoint;
  }
}

// Runs the node's backward rule on scratch_.grad_outputs and scratch_.needs;
// leaves the input gradients in scratch_.grads.
void Tape::call_backward(const Node& node) {
  Scratch& w = scratch_;
  // The rule gets copies of the saved handles: with create_graph it appends
  // to the tape's arrays, which may move them.
  w.saved.assign(saved_.begin() + node.saved_begin, saved_.begin() + node.saved_begin + node.n_in + node.n_out);
  w.shapes.resize(node.n_in);
  w.dtypes.resize(node.n_in);
  for (std::uint32_t i = 0; i < node.n_in; ++i) {
    w.shapes[i] = inputs_[node.in_begin + i].shape;
    w.dtypes[i] = inputs_[node.in_begin + i].dtype;
  }
  w.grads.assign(node.n_in, Tensor{});

  BackwardContext ctx;
  ctx.op_ = node.op;
  ctx.attrs_ = &node.attrs;
  ctx.saved_inputs_ = {w.saved.data(), node.n_in};
  ctx.saved_outputs_ = {w.saved.data() + node.n_in, node.n_out};
  ctx.input_shapes_ = w.shapes;
  ctx.input_dtypes_ = w.dtypes;
  ctx.needs_ = w.needs;
  ctx.grad_outputs_ = w.grad_outputs;
  ctx.grads_ = w.grads;
  ctx.accumulators_ = w.accumulators;
  node.op->backward(ctx);
}

std::vector<Tensor> Tape::collect_input_grads(const Walk& walk, const std::vector<Tensor>& inputs,
                                              const GradOptions& options) const {
  std::vector<Tensor> result(inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& a = walk.adjoint[walk.slot(inputs[i].var().index)];
    if (a.defined()) {
      result[i] = options.create_graph ? a : a.detach();
    } else if (options.allow_unused) {
      result[i] = zeros(inputs[i].shape(), inputs[i].dtype(), inputs[i].device());
    } else {
      throw GradError("grad: the outputs do not depend on input " + std::to_string(i) +
                      "; pass allow_unused to get a zero gradient for it");
    }
  }
  return result;
}

const Tensor& BackwardContext::input(int i) const {
  const Tensor& t = saved_inputs_[static_cast<std::size_t>(i)];
  if (!t.defined())
    throw Error(std::string("internal error: the backward rule of '") + op_->name + "' reads input " +
                std::to_string(i) + ", which its OpDef does not save");
  return t;
}

const Tensor& BackwardContext::output(int j) const {
  const Tensor& t = saved_outputs_[static_cast<std::size_t>(j)];
  if (!t.defined())
    throw Error(std::string("internal error: the backward rule of '") + op_->name +
                "' reads its output, which its OpDef does not save");
  return t;
}

}  // namespace metatape::detail

namespace metatape {

std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& seeds, const GradOptions& options) {
  return detail::this_thread_tape().grad(outputs, inputs, seeds, options);
}

Tensor grad(const Tensor& output, const Tensor& input, const GradOptions& options) {
  return grad(std::vector<Tensor>{output}, std::vector<Tensor>{input}, {}, options)[0];
}

std::vector<Tensor> grad(const Tensor& output, const std::vector<Tensor>& inputs, const GradOptions& options) {
  return grad(std::vector<Tensor>{output}, inputs, {}, options);
}

TapeScope::TapeScope() {
  const detail::TapeMark m = detail::this_thread_tape().mark();
  nodes_ = m.nodes;
  vars_ = m.vars;
  inputs_ = m.inputs;
  saved_ = m.saved;
}

TapeScope::~TapeScope() { detail::this_thread_tape().release_to({nodes_, vars_, inputs_, saved_}); }

NoGradScope::NoGradScope() : previous_(detail::this_thread_tape().grad_enabled) {
  detail::this_thread_tape().grad_enabled = false;
}

NoGradScope::~NoGradScope() { detail::this_thread_tape().grad_enabled = previous_; }

bool grad_enabled() { return detail::this_thread_tape().grad_enabled; }

TapeStats tape_stats() { return detail::this_thread_tape().stats(); }

}  // namespace metatape
