// Running an op: validate, allocate, compute, record.
#include <climits>
#include <string>

#include "metatape/error.hpp"
#include "op.hpp"
#include "tape.hpp"

namespace metatape::detail {

void require_defined(const char* op, Inputs in) {
  for (std::size_t i = 0; i < in.size(); ++i)
    if (!in[i]->defined())
      throw ValueError(std::string(op) + ": input " + std::to_string(i) + " is an undefined tensor");
}

void require_same_device(const char* op, Inputs in) {
  for (std::size_t i = 1; i < in.size(); ++i)
    if (in[i]->device() != in[0]->device())
      throw DeviceError(std::string(op) + ": input 0 is on " + device_name(in[0]->device()) + " but input " +
                        std::to_string(i) + " is on " + device_name(in[i]->device()));
}

void require_floating(const char* op, const Tensor& t, int input) {
  if (!is_floating(t.dtype()))
    throw DTypeError(std::string(op) + ": input " + std::to_string(input) + " must be f32 or f64, not " +
                     dtype_name(t.dtype()));
}

void require_index(const char* op, const Tensor& index, int input) {
  if (index.dtype() != DType::i64)
    throw DTypeError(std::string(op) + ": input " + std::to_string(input) + " (the index) must be i64, not " +
                     dtype_name(index.dtype()));
}

void require_square(const char* op, const char* what, const Tensor& t, bool lapack) {
  const Shape& s = t.shape();
  if (s.rank() < 2 || s[s.rank() - 1] != s[s.rank() - 2])
    throw ShapeError(std::string(op) + ": " + what + " must be a square matrix or a batch of them [..., n, n], got " +
                     s.str());
  if (lapack && s[s.rank() - 1] > INT_MAX)
    throw ShapeError(std::string(op) + ": n = " + std::to_string(s[s.rank() - 1]) +
                     " exceeds the LAPACK limit of 2^31 - 1");
}

void require_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype())
    throw DTypeError(std::string(op) + ": dtypes " + dtype_name(a.dtype()) + " and " + dtype_name(b.dtype()) +
                     " differ; convert one with .to()");
}

void apply(const OpDef& op, Inputs in, const Attrs& attrs, std::span<Tensor> out) {
  if (op.arity != kVariadic && static_cast<int>(in.size()) != op.arity)
    throw ValueError(std::string(op.name) + ": expected " + std::to_string(op.arity) + " inputs, got " +
                     std::to_string(in.size()));
  require_defined(op.name, in);
  require_same_device(op.name, in);

  // Decide about recording before computing, so that a stale handle is
  // reported before any work is done.
  Tape& tape = this_thread_tape();
  bool record = false;
  if (tape.grad_enabled) {
    for (std::size_t i = 0; i < in.size(); ++i) {
      const VarRef& ref = in[i]->var();
      if (ref.tape == nullptr) continue;
      if (!tape.is_live(ref))
        throw GradError(std::string(op.name) + ": input " + std::to_string(i) + " " + stale_reason(ref));
      if (!op_input_is_index(op, i)) record = true;
    }
  }

  OutputSpec specs[kMaxOutputs];
  op.shape_rule(in, attrs, std::span<OutputSpec>(specs, static_cast<std::size_t>(op.num_outputs)));
  const Device device = in.empty() ? Device::cpu : in[0]->device();
  if (!op.is_view)
    for (int j = 0; j < op.num_outputs; ++j)
      out[static_cast<std::size_t>(j)] = empty(specs[j].shape, specs[j].dtype, device);
  op.forward(in, attrs, out);
  if (record) tape.record(op, in, attrs, out);
}

Tensor apply(const OpDef& op, Inputs in, const Attrs& attrs) {
  Tensor out;
  apply(op, in, attrs, std::span<Tensor>(&out, 1));
  return out;
}

}  // namespace metatape::detail
