// Tensor: a cheap handle to dense, contiguous, row-major storage.
//
// Copying a Tensor copies the handle (shape, offset, tape reference) and
// shares the storage, like torch.Tensor. Values never change behind a
// handle's back: ops return new tensors, so a value saved on the tape for a
// backward rule stays valid. A tensor that was produced by a recorded op (or
// marked with requires_grad_) carries a reference to its variable on the
// thread's tape; detach() drops it.
#pragma once

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include "metatape/shape.hpp"

namespace metatape {

namespace detail {

class Tape;

// One refcounted block of device memory, recycled by the storage pool
// (storage.cpp) so that a training loop's steady state does no malloc/free.
struct Storage {
  std::atomic<int> refs{1};
  Device device = Device::cpu;
  int size_class = 0;        // the small-block class it returns to (-1: large)
  std::size_t capacity = 0;  // bytes usable at data
  void* data = nullptr;      // 64-byte aligned
  void* owner = nullptr;     // the thread pool that handed out a small block
  void* block = nullptr;     // the large-heap block, for a large one
};

// Drops the last reference: the block goes back to its pool.
void release_storage(Storage* storage) noexcept;

// Where a recorded tensor sits on a tape. `serial` tells a live variable from
// a slot that was released by a TapeScope and reused.
struct VarRef {
  const Tape* tape = nullptr;
  std::uint64_t serial = 0;
  std::uint32_t index = 0;
};

struct TensorAccess;  // engine-internal construction of handles

}  // namespace detail

class Tensor {
 public:
  Tensor() = default;  // undefined: defined() is false, every op rejects it
  Tensor(const Tensor& other) noexcept
      : storage_(other.storage_), offset_(other.offset_), shape_(other.shape_), dtype_(other.dtype_), var_(other.var_) {
    if (storage_) storage_->refs.fetch_add(1, std::memory_order_relaxed);
  }
  Tensor(Tensor&& other) noexcept
      : storage_(other.storage_), offset_(other.offset_), shape_(other.shape_), dtype_(other.dtype_), var_(other.var_) {
    other.storage_ = nullptr;
    other.var_ = {};
  }
  // Field by field, not copy-and-swap: assignments are the engine's most
  // frequent handle operation, and a swap through a fresh temporary reads
  // back what was just stored (a store-forwarding stall on every call).
  Tensor& operator=(const Tensor& other) noexcept {
    if (other.storage_) other.storage_->refs.fetch_add(1, std::memory_order_relaxed);
    return take_fields(other);
  }
  Tensor& operator=(Tensor&& other) noexcept {
    if (this == &other) return *this;
    take_fields(other);
    other.storage_ = nullptr;
    other.var_ = {};
    return *this;
  }
  ~Tensor() {
    if (storage_ && storage_->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) detail::release_storage(storage_);
  }
  void swap(Tensor& other) noexcept;

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  std::int64_t dim(int axis) const;  // negative axes count from the end
  std::int64_t numel() const { return shape_.numel(); }
  DType dtype() const { return dtype_; }
  Device device() const;

  // Typed access to the elements, in the tensor's device memory (a device
  // pointer for CUDA tensors). Throws DTypeError if T does not match the
  // dtype (float for f32, double for f64, std::int64_t for i64).
  template <class T>
  T* data();
  template <class T>
  const T* data() const;
  void* raw_data();
  const void* raw_data() const;

  // The single element of a one-element tensor, as double (copied to the
  // host first for a device tensor, as are to_vector and str).
  double item() const;
  // All elements in row-major order, converted to double.
  std::vector<double> to_vector() const;
  // Readable rendering: dtype, shape and (up to a limit) the values.
  std::string str() const;

  // --- autodiff ---
  // True if this tensor is a live variable on this thread's tape.
  bool requires_grad() const;
  // Marks this handle as a leaf variable on this thread's tape, so that ops
  // that use it are recorded and grad() can differentiate with respect to it.
  // A handle that is already live stays as it is. requires_grad_(false)
  // detaches this handle in place.
  Tensor& requires_grad_(bool on = true);
  // The same storage without a tape variable: a constant for autodiff.
  Tensor detach() const;

  // Differentiable conversion to another floating dtype (a copy).
  Tensor to(DType dtype) const;
  // A copy on another device (the same handle if already there). Throws
  // DeviceError naming the device when this build or machine lacks it.
  Tensor to(Device device) const;
  // A deep copy of the values; recorded as an identity op.
  Tensor clone() const;

  const detail::VarRef& var() const { return var_; }

 private:
  // This handle becomes other's (whose storage reference the caller has
  // already counted for it), dropping the storage it held.
  Tensor& take_fields(const Tensor& other) noexcept {
    detail::Storage* old = storage_;
    storage_ = other.storage_;
    offset_ = other.offset_;
    shape_ = other.shape_;
    dtype_ = other.dtype_;
    var_ = other.var_;
    if (old && old->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) detail::release_storage(old);
    return *this;
  }

  detail::Storage* storage_ = nullptr;
  std::int64_t offset_ = 0;  // in elements
  Shape shape_;
  DType dtype_ = DType::f32;
  detail::VarRef var_;
  friend struct detail::TensorAccess;
};

// --- factories (values written before return unless said otherwise) ---
Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);  // values unspecified
Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
Tensor full(const Shape& shape, double value, DType dtype = DType::f32, Device device = Device::cpu);
Tensor scalar(double value, DType dtype = DType::f32, Device device = Device::cpu);  // rank 0
// The rest build on the CPU; move them with .to(device).
// Row-major values; throws ShapeError if the count does not match the shape.
Tensor from_vector(std::span<const double> values, const Shape& shape, DType dtype = DType::f32);
Tensor from_vector(std::initializer_list<double> values, const Shape& shape, DType dtype = DType::f32);
Tensor from_indices(std::span<const std::int64_t> values, const Shape& shape);  // i64
Tensor from_indices(std::initializer_list<std::int64_t> values, const Shape& shape);
// 0, 1, ..., n-1.
Tensor arange(std::int64_t n, DType dtype = DType::f32);

// Whether this build has the CUDA backend and this machine a GPU it can use;
// if not, `reason` (when given) says why. Never throws.
bool cuda_available(std::string* reason = nullptr);
// Waits until everything this thread queued on `device` has finished (a
// no-op for the CPU). Device tensors made on one thread may be used on
// another after this: each thread has its own stream, and streams are not
// ordered across threads. A failure that an earlier launch left is thrown
// here as a DeviceError naming the call.
void synchronize(Device device = Device::cuda);

// Storage pool knobs, for tests and benchmarks (CPU storage).
struct PoolStats {
  std::size_t bytes_in_use = 0;  // live storage
  std::size_t bytes_cached = 0;  // free blocks kept for reuse
  std::size_t peak_bytes_in_use = 0;
  std::size_t system_allocations = 0;  // calls that reached the system allocator
};
PoolStats pool_stats();         // this thread's CPU pool
void reset_pool_peak();         // peak := current
void release_cached_storage();  // give cached blocks back to the system

}  // namespace metatape

// --- Test hooks --------------------------------------------------------------
// Not for applications. They ship in the library because they reach into its
// storage pool, which the test suite cannot do from outside.
namespace metatape::testing {

// Fill every new allocation of this thread (CPU, and GPU) with +inf (floats)
// or INT64_MIN (i64) while on, so that a kernel or backward rule that leaves
// an output entry unwritten shows up as an inf in a gradcheck. Off by default.
void set_poison_allocations(bool on);

}  // namespace metatape::testing
