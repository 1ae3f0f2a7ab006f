// Internal: the tape, a Wengert list of recorded ops.
//
// Four flat arrays, appended in creation order and truncated by TapeScope:
//   nodes   one per recorded op: which op, its attributes, where its records
//           start in the other arrays;
//   vars    one per variable (leaf or op output): a serial number, so that a
//           handle to a released slot is recognised, and its producer;
//   inputs  per node input: the variable (or none, for constants), shape, dtype;
//   saved   per node input and output: the handle its backward rule reads
//           (empty where the rule does not need it).
// The arrays keep their capacity when truncated, so a training loop records
// into the same memory every step: no allocation per node in steady state,
// no pointer-chasing graph, no per-node reference count. grad() walks the
// nodes backwards, which is a valid reverse topological order by
// construction.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "metatape/tape.hpp"
#include "op.hpp"

namespace metatape::detail {

inline constexpr std::uint32_t kNoVar = UINT32_MAX;  // input is a constant
inline constexpr std::uint32_t kLeaf = UINT32_MAX;   // variable has no producer

struct InputRecord {
  std::uint32_t var = kNoVar;
  DType dtype = DType::f32;
  Shape shape;
};

struct Node {
  const OpDef* op = nullptr;
  std::uint32_t in_begin = 0, n_in = 0;  // into inputs
  std::uint32_t saved_begin = 0;         // into saved: n_in input slots, then n_out output slots
  std::uint32_t out_var_begin = 0;       // outputs are consecutive variables
  std::uint32_t n_out = 0;
  bool released = false;  // saved values freed by a grad() with retain_graph = false
  Attrs attrs;
};

struct Var {
  std::uint64_t serial = 0;
  std::uint32_t producer = kLeaf;  // node index
  std::uint32_t first_node = 0;    // number of nodes when it was created
};

struct TapeMark {
  std::size_t nodes, vars, inputs, saved;
};

class Tape {
 public:
  bool grad_enabled = true;

  bool is_live(const VarRef& ref) const {
    return ref.tape == this && ref.index < vars_.size() && vars_[ref.index].serial == ref.serial;
  }
  // A handle that was recorded but whose variable is gone (released scope,
  // or another thread's tape).
  bool is_stale(const VarRef& ref) const { return ref.tape != nullptr && !is_live(ref); }

  VarRef new_leaf();
  void record(const OpDef& op, Inputs in, const Attrs& attrs, std::span<Tensor> out);
  std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                           const std::vector<Tensor>& seeds, const GradOptions& options);

  TapeMark mark() const { return {nodes_.size(), vars_.size(), inputs_.size(), saved_.size()}; }
  void release_to(const TapeMark& mark);
  TapeStats stats() const { return {nodes_.size(), vars_.size()}; }

 private:
  std::vector<Node> nodes_;
  std::vector<Var> vars_;
  std::vector<InputRecord> inputs_;
  std::vector<Tensor> saved_;
  std::uint64_t next_serial_ = 1;

  // grad()'s working arrays, kept between calls for their capacity.
  // By variable (see Walk): depends, requested, adjoint; by input of the
  // node being run: the others.
  struct Scratch {
    std::vector<std::uint8_t> depends, requested, needs;
    std::vector<Tensor> adjoint, saved, grad_outputs, grads;
    std::vector<Shape> shapes;
    std::vector<DType> dtypes;
    std::vector<Tensor*> accumulators;  // BackwardContext::grad_accumulator's, into `adjoint`
    // Drops the handles (not the capacity), so no storage outlives the call.
    void release_tensors() {
      for (auto* v : {&adjoint, &saved, &grad_outputs, &grads}) v->assign(v->size(), Tensor{});
    }
  };
  Scratch scratch_;

  // One grad() call's part of the tape: the nodes it walks, and per
  // variable it may touch, what it knows about that variable.
  struct Walk {
    std::uint32_t lowest;                  // the oldest input variable
    std::size_t first_node;                // the first node recorded after it (or its producer)
    std::size_t end_node;                  // one past the newest output's producer
    std::vector<std::uint8_t>& depends;    // by slot: depends on an input
    std::vector<std::uint8_t>& requested;  // by slot: is an input, its adjoint is returned
    std::vector<Tensor>& adjoint;          // by slot: the gradient accumulated so far

    // The arrays start at the oldest input: a variable older than that
    // existed before every input, so cannot depend on one and has no slot.
    // The guard has_slot(v) comes before slot(v) wherever v may lie outside:
    // a node's input (older, or kNoVar for a constant) and a node's output
    // (the producer of the oldest input may have older outputs besides).
    // The inputs, and the outputs of a node that reads a dependent, need none.
    bool has_slot(std::uint32_t v) const { return v != kNoVar && v >= lowest; }
    std::size_t slot(std::uint32_t v) const { return v - lowest; }  // v's position in the arrays
    bool depends_on_input(std::uint32_t v) const { return has_slot(v) && depends[slot(v)] != 0; }
  };
  Walk begin_walk(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs);
  void mark_dependents(Walk& walk) const;
  void run_node(std::size_t n, Walk& walk, const GradOptions& options);
  void offer_accumulators(const Node& node, Walk& walk, const GradOptions& options);
  void call_backward(const Node& node);
  std::vector<Tensor> collect_input_grads(const Walk& walk, const std::vector<Tensor>& inputs,
                                          const GradOptions& options) const;
};

Tape& this_thread_tape();

// Sets grad mode for a scope (a backward walk, a functional transform) and
// puts the previous mode back when it closes.
class GradModeGuard {
 public:
  GradModeGuard(Tape& tape, bool enabled) : tape_(tape), previous_(tape.grad_enabled) { tape.grad_enabled = enabled; }
  ~GradModeGuard() { tape_.grad_enabled = previous_; }
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  Tape& tape_;
  bool previous_;
};

// Explains why a recorded handle can no longer be used (for error messages).
const char* stale_reason(const VarRef& ref);

}  // namespace metatape::detail
