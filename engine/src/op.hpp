// Internal: how an op is declared and how it is applied and recorded.
//
// Every primitive op is one OpDef: its name, its inputs, what its backward
// rule needs saved, a shape rule, a forward that calls kernels, and a
// backward rule written with the same differentiable ops as user code (so
// that with create_graph the backward is itself recorded and can be
// differentiated again). The OpDefs of one family of ops live together in one
// file (ops_elementwise.cpp, ...), forward beside backward; registry.cpp
// lists them all in one table that the tests iterate.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "kernels/types.hpp"
#include "metatape/random.hpp"
#include "metatape/registry.hpp"
#include "metatape/tensor.hpp"

namespace metatape::detail {

// Per-call parameters of an op, recorded with its node. Each op reads only
// the fields it documents; the rest keep their defaults.
struct Attrs {
  Shape shape;                               // reshape, expand, sum_to, pad: the target or input shape
  double scalar = 0.0;                       // pow: exponent; scale / shift / add_scaled: the scalar; batch_norm: eps
  int axis = 0;                              // log_softmax, slice, pad, concat; batch_norm: group axes
  std::int64_t start = 0, stop = 0;          // slice: positions start..stop-1 along `axis`; pad: start
  std::array<std::int8_t, kMaxRank> perm{};  // permute: output axis i is input axis perm[i]
  bool trans_a = false, trans_b = false;     // matmul: use the transpose of a / b
  kernels::Window2d window;                  // conv2d and its adjoints: stride and padding
  DType dtype = DType::f32;                  // cast: the target dtype
  bool relu = false;                         // batch_norm: a fused ReLU after it
  bool indices_checked = false;              // take, gather_rows and their adjoints: skip the range check
};

using Inputs = std::span<const Tensor* const>;

struct OutputSpec {
  Shape shape;
  DType dtype = DType::f32;
};

class BackwardContext;

inline constexpr int kVariadic = -1;  // OpDef::arity of concat
// The most outputs an op may have: apply() keeps their specs on the stack.
inline constexpr int kMaxOutputs = 2;

// A set of an op's inputs, as OpDef::saves and OpDef::nondiff hold it. Bit i
// stands for input i, for i below kMaskedInputs (save_input and index_input
// refuse any other i at compile time). A variadic op can have any number of
// inputs, which no fixed width of bits covers, so it names them all at once
// with kAllInputs (or some of the first kMaskedInputs, or none). An input
// past kMaskedInputs is in a set only through kAllInputs: read masks only
// with op_saves_input() and op_input_is_index(), which apply that rule to
// any index, never with a shift.
using InputMask = std::uint32_t;
inline constexpr int kMaskedInputs = 30;
inline constexpr InputMask kAllInputs = 1u << 30;    // every input, whatever their number
inline constexpr InputMask kSaveOutputs = 1u << 31;  // in `saves` only: the op's outputs
// consteval: an input past the masked ones is a compile error, not a wrap.
consteval InputMask input_bit(int i) {
  return i >= 0 && i < kMaskedInputs ? 1u << i : throw "input index out of the range an InputMask names";
}
consteval InputMask save_input(int i) { return input_bit(i); }
consteval InputMask index_input(int i) { return input_bit(i); }
constexpr bool mask_has_input(InputMask mask, std::size_t i) {
  return (mask & kAllInputs) != 0 || (i < kMaskedInputs && ((mask >> i) & 1u) != 0);
}
static_assert(mask_has_input(kAllInputs, 1000) && !mask_has_input(save_input(0), 32) &&
              !mask_has_input(kSaveOutputs, 31) && mask_has_input(save_input(1), 1));

struct OpDef {
  const char* name;
  int arity;          // tensor inputs, or kVariadic
  int num_outputs;    // 1..kMaxOutputs
  InputMask saves;    // what the backward rule reads: save_input(i), kAllInputs, kSaveOutputs
  InputMask nondiff;  // inputs never differentiated: index tensors, a mask's argument; index_input(i), kAllInputs
  bool is_view;       // forward aliases its input's storage instead of writing an output
  // Validates the inputs (dtype, device, shapes) and fills the output specs;
  // throws ShapeError / DTypeError / ValueError naming the op.
  void (*shape_rule)(Inputs in, const Attrs& attrs, std::span<OutputSpec> out);
  // Computes the outputs. They arrive allocated to their specs (on the
  // inputs' device) unless is_view, in which case forward sets them.
  void (*forward)(Inputs in, const Attrs& attrs, std::span<Tensor> out);
  // Writes the gradient of every input the context says is needed.
  void (*backward)(BackwardContext& ctx);
  // Test hook: sample calls on random inputs, which the test suite
  // gradchecks to second order for every registered op (metatape/registry.hpp).
  std::vector<OpSample> (*samples)(Generator& gen, DType dtype);
};

inline bool op_saves_input(const OpDef& op, std::size_t i) { return mask_has_input(op.saves, i); }
inline bool op_saves_outputs(const OpDef& op) { return (op.saves & kSaveOutputs) != 0; }
inline bool op_input_is_index(const OpDef& op, std::size_t i) { return mask_has_input(op.nondiff, i); }

// Runs an op: shape rule, allocation, forward, and a tape record when grad
// mode is on and any input is a live variable.
void apply(const OpDef& op, Inputs in, const Attrs& attrs, std::span<Tensor> out);
Tensor apply(const OpDef& op, Inputs in, const Attrs& attrs = {});

// What a backward rule sees of its node.
class BackwardContext {
 public:
  const Attrs& attrs() const { return *attrs_; }
  int num_inputs() const { return static_cast<int>(input_shapes_.size()); }
  // The upstream gradient of output j; undefined if that output received none.
  const Tensor& grad_output(int j = 0) const { return grad_outputs_[static_cast<std::size_t>(j)]; }
  // Values saved at record time (only those in OpDef::saves).
  const Tensor& input(int i) const;
  const Tensor& output(int j = 0) const;
  const Shape& input_shape(int i) const { return input_shapes_[static_cast<std::size_t>(i)]; }
  DType input_dtype(int i) const { return input_dtypes_[static_cast<std::size_t>(i)]; }
  bool needs_grad(int i) const { return needs_[static_cast<std::size_t>(i)] != 0; }
  void set_grad(int i, Tensor grad) { grads_[static_cast<std::size_t>(i)] = std::move(grad); }
  // The adjoint input i has gathered so far from the nodes already walked,
  // when the rule may add its gradient straight into it instead of calling
  // set_grad (the tape then adds nothing for that input): only in a walk
  // that records no graph, for a buffer of the input's shape and dtype that
  // no other handle shares. Null otherwise; a rule is free to ignore it.
  Tensor* grad_accumulator(int i) const {
    return accumulators_.empty() ? nullptr : accumulators_[static_cast<std::size_t>(i)];
  }

 private:
  friend class Tape;
  const OpDef* op_ = nullptr;
  const Attrs* attrs_ = nullptr;
  std::span<const Tensor> saved_inputs_;
  std::span<const Tensor> saved_outputs_;
  std::span<const Shape> input_shapes_;
  std::span<const DType> input_dtypes_;
  std::span<const std::uint8_t> needs_;
  std::span<const Tensor> grad_outputs_;
  std::span<Tensor> grads_;
  std::span<Tensor* const> accumulators_;
};

// Dispatch on a floating dtype: f(T{}) with T = float or double.
template <class F>
decltype(auto) with_float_type(DType dtype, F&& f) {
  if (dtype == DType::f64) return f(double{});
  return f(float{});
}

// Engine-internal construction of handles.
struct TensorAccess {
  static Tensor adopt(Storage* storage, const Shape& shape, DType dtype);  // takes the reference
  static Tensor view(const Tensor& base, const Shape& shape);              // same storage and offset
  static void set_var(Tensor& t, const VarRef& var) { t.var_ = var; }
  static void clear_var(Tensor& t) { t.var_ = {}; }
  static Storage* storage(const Tensor& t) { return t.storage_; }
};

// Shape-rule helpers: throw the typed error, naming the op.
void require_defined(const char* op, Inputs in);
void require_same_device(const char* op, Inputs in);
void require_floating(const char* op, const Tensor& t, int input);
void require_same_dtype(const char* op, const Tensor& a, const Tensor& b);
void require_index(const char* op, const Tensor& index, int input);  // i64
// A square matrix or a batch of them, [..., n, n]; `what` names the operand
// ("the input", "K"). With lapack, also n within LAPACK's 32-bit int.
void require_square(const char* op, const char* what, const Tensor& t, bool lapack = false);

}  // namespace metatape::detail
