// Shapes, element types and devices: the small value types every tensor and
// every op signature is made of.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>

namespace metatape {

// Up to five dimensions: a leading task dimension on top of N, C, H, W.
inline constexpr int kMaxRank = 5;

// f32 and f64 are the differentiable types. i64 holds integer labels and
// gather indices; ops that need real numbers reject it.
enum class DType : std::uint8_t { f32, f64, i64 };

enum class Device : std::uint8_t { cpu, cuda };

const char* dtype_name(DType dtype);
const char* device_name(Device device);
std::size_t dtype_size(DType dtype);
inline bool is_floating(DType dtype) { return dtype != DType::i64; }

// A row-major shape of rank 0..kMaxRank. Rank 0 is a scalar (one element).
// A value type: copying it copies the dims, nothing is shared.
class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims);     // throws ShapeError
  explicit Shape(std::span<const std::int64_t> dims);  // throws ShapeError

  int rank() const { return rank_; }
  std::int64_t operator[](int axis) const { return dims_[static_cast<std::size_t>(axis)]; }
  std::int64_t& operator[](int axis) { return dims_[static_cast<std::size_t>(axis)]; }
  std::int64_t numel() const;
  const std::int64_t* begin() const { return dims_.data(); }
  const std::int64_t* end() const { return dims_.data() + rank_; }
  std::span<const std::int64_t> dims() const { return {dims_.data(), static_cast<std::size_t>(rank_)}; }

  // Appends a dimension; throws ShapeError past kMaxRank.
  void push_back(std::int64_t dim);

  bool operator==(const Shape& other) const;
  bool operator!=(const Shape& other) const { return !(*this == other); }

  // "[2, 3, 4]"; "[]" for a scalar.
  std::string str() const;

 private:
  std::array<std::int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

// Maps a possibly negative axis (-1 is the last) into [0, rank); throws
// ValueError naming `op` when it is out of range.
int normalize_axis(int axis, int rank, const char* op);

// The NumPy broadcast of two shapes; throws ShapeError naming `op`.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

}  // namespace metatape
