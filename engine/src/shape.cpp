#include "metatape/shape.hpp"

#include <sstream>

#include "metatape/error.hpp"

namespace metatape {

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return "f32";
    case DType::f64:
      return "f64";
    case DType::i64:
      return "i64";
  }
  return "?";
}

const char* device_name(Device device) {
  switch (device) {
    case Device::cpu:
      return "cpu";
    case Device::cuda:
      return "cuda";
  }
  return "?";
}

std::size_t dtype_size(DType dtype) { return dtype == DType::f32 ? 4 : 8; }

Shape::Shape(std::initializer_list<std::int64_t> dims)
    : Shape(std::span<const std::int64_t>(dims.begin(), dims.size())) {}

Shape::Shape(std::span<const std::int64_t> dims) {
  if (dims.size() > static_cast<std::size_t>(kMaxRank))
    throw ShapeError("shape of rank " + std::to_string(dims.size()) + " exceeds the maximum rank " +
                     std::to_string(kMaxRank));
  for (std::int64_t d : dims) push_back(d);
}

void Shape::push_back(std::int64_t dim) {
  if (rank_ == kMaxRank)
    throw ShapeError("shape " + str() + " cannot grow past the maximum rank " + std::to_string(kMaxRank));
  if (dim < 0) throw ShapeError("negative dimension " + std::to_string(dim) + " in shape " + str());
  dims_[static_cast<std::size_t>(rank_++)] = dim;
}

std::int64_t Shape::numel() const {
  std::int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= dims_[static_cast<std::size_t>(i)];
  return n;
}

bool Shape::operator==(const Shape& other) const {
  if (rank_ != other.rank_) return false;
  for (int i = 0; i < rank_; ++i)
    if ((*this)[i] != other[i]) return false;
  return true;
}

std::string Shape::str() const {
  std::ostringstream out;
  out << '[';
  for (int i = 0; i < rank_; ++i) out << (i ? ", " : "") << (*this)[i];
  out << ']';
  return out.str();
}

int normalize_axis(int axis, int rank, const char* op) {
  // A rank-0 tensor has no axes, but accepting axis 0 / -1 for it is what
  // NumPy calls an error too; keep it one.
  int normalized = axis < 0 ? axis + rank : axis;
  if (normalized < 0 || normalized >= rank)
    throw ValueError(std::string(op) + ": axis " + std::to_string(axis) + " is out of range for rank " +
                     std::to_string(rank));
  return normalized;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const int rank = a.rank() > b.rank() ? a.rank() : b.rank();
  Shape out;
  for (int i = 0; i < rank; ++i) {
    // Align from the right: axis i of the result meets axis i - (rank - r).
    const int ia = i - (rank - a.rank()), ib = i - (rank - b.rank());
    const std::int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
    if (da != db && da != 1 && db != 1)
      throw ShapeError(std::string(op) + ": shapes " + a.str() + " and " + b.str() + " are not broadcastable");
    out.push_back(da == 1 ? db : da);
  }
  return out;
}

}  // namespace metatape
