#include "metatape/tensor.hpp"

#include <cmath>
#include <cstring>
#include <sstream>
#include <utility>

#include "backend.hpp"
#include "cpu_capture.hpp"
#include "metatape/error.hpp"
#include "op.hpp"
#include "storage_pool.hpp"
#include "tape.hpp"
#ifdef METATAPE_CUDA
#include "kernels/cuda/runtime.hpp"
#endif

namespace metatape {
namespace {

// Refuse shapes whose byte count would not fit comfortably in size_t, so
// that arithmetic on sizes can never wrap.
std::size_t checked_bytes(const Shape& shape, DType dtype) {
  constexpr std::int64_t kMaxElements = std::int64_t{1} << 48;
  std::int64_t n = 1;
  for (std::int64_t d : shape) {
    if (d != 0 && n > kMaxElements / d)
      throw ValueError("tensor of shape " + shape.str() + " is too large to allocate");
    n *= d;
  }
  return static_cast<std::size_t>(n) * dtype_size(dtype);
}

template <class T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::f32;
  if constexpr (std::is_same_v<T, double>) return DType::f64;
  return DType::i64;
}

// Calls f(value as double) for every element, in order; a device tensor is
// copied to the host first.
template <class F>
void for_each_value(const char* caller, const Tensor& tensor, F f) {
  detail::refuse_in_cpu_capture(caller);
  const Tensor t = tensor.device() == Device::cpu ? tensor : tensor.to(Device::cpu);
  const std::int64_t n = t.numel();
  switch (t.dtype()) {
    case DType::f32:
      for (std::int64_t i = 0; i < n; ++i) f(static_cast<double>(t.data<float>()[i]));
      break;
    case DType::f64:
      for (std::int64_t i = 0; i < n; ++i) f(t.data<double>()[i]);
      break;
    case DType::i64:
      for (std::int64_t i = 0; i < n; ++i) f(static_cast<double>(t.data<std::int64_t>()[i]));
      break;
  }
}

}  // namespace

void Tensor::swap(Tensor& other) noexcept {
  std::swap(storage_, other.storage_);
  std::swap(offset_, other.offset_);
  std::swap(shape_, other.shape_);
  std::swap(dtype_, other.dtype_);
  std::swap(var_, other.var_);
}

std::int64_t Tensor::dim(int axis) const { return shape_[normalize_axis(axis, rank(), "Tensor::dim")]; }

Device Tensor::device() const { return storage_ ? storage_->device : Device::cpu; }

template <class T>
T* Tensor::data() {
  return const_cast<T*>(std::as_const(*this).data<T>());
}

template <class T>
const T* Tensor::data() const {
  if (!storage_) throw ValueError("data: the tensor is undefined");
  if (dtype_ != dtype_of<T>())
    throw DTypeError(std::string("data: the tensor is ") + dtype_name(dtype_) + ", not " + dtype_name(dtype_of<T>()));
  if (detail::active_cpu_capture) [[unlikely]]
    detail::active_cpu_capture->access(storage_);
  return static_cast<const T*>(storage_->data) + offset_;
}

template float* Tensor::data<float>();
template double* Tensor::data<double>();
template std::int64_t* Tensor::data<std::int64_t>();
template const float* Tensor::data<float>() const;
template const double* Tensor::data<double>() const;
template const std::int64_t* Tensor::data<std::int64_t>() const;

void* Tensor::raw_data() { return const_cast<void*>(std::as_const(*this).raw_data()); }

const void* Tensor::raw_data() const {
  if (!storage_) throw ValueError("raw_data: the tensor is undefined");
  if (detail::active_cpu_capture) [[unlikely]]
    detail::active_cpu_capture->access(storage_);
  return static_cast<const char*>(storage_->data) + offset_ * static_cast<std::int64_t>(dtype_size(dtype_));
}

double Tensor::item() const {
  if (!defined()) throw ValueError("item: the tensor is undefined");
  if (numel() != 1) throw ShapeError("item: the tensor has shape " + shape_.str() + ", not a single element");
  double value = 0;
  for_each_value("item()", *this, [&](double v) { value = v; });
  return value;
}

std::vector<double> Tensor::to_vector() const {
  if (!defined()) throw ValueError("to_vector: the tensor is undefined");
  std::vector<double> values;
  values.reserve(static_cast<std::size_t>(numel()));
  for_each_value("to_vector()", *this, [&](double v) { values.push_back(v); });
  return values;
}

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream out;
  out.precision(dtype_ == DType::f32 ? 7 : 15);
  out << "Tensor(" << dtype_name(dtype_) << ", " << shape_.str() << ") {";
  constexpr std::int64_t kShown = 64;
  std::int64_t i = 0;
  for_each_value("str()", *this, [&](double v) {
    if (i < kShown) out << (i ? ", " : "") << v;
    ++i;
  });
  if (i > kShown) out << ", ... (" << i - kShown << " more)";
  out << '}';
  return out.str();
}

bool Tensor::requires_grad() const { return detail::this_thread_tape().is_live(var_); }

Tensor& Tensor::requires_grad_(bool on) {
  if (!defined()) throw ValueError("requires_grad_: the tensor is undefined");
  if (!on) {
    var_ = {};
    return *this;
  }
  if (!is_floating(dtype_))
    throw DTypeError(std::string("requires_grad_: only f32 and f64 tensors can be differentiated, this one is ") +
                     dtype_name(dtype_));
  detail::Tape& tape = detail::this_thread_tape();
  if (!tape.is_live(var_)) var_ = tape.new_leaf();
  return *this;
}

Tensor Tensor::detach() const {
  Tensor out(*this);
  out.var_ = {};
  return out;
}

Tensor Tensor::to(Device device) const {
  if (!defined()) throw ValueError("to: the tensor is undefined");
  if (device == this->device()) return *this;
  detail::refuse_in_cpu_capture("a copy between devices (Tensor::to)");
  // A copy: values only, like detach() (moving devices is not recorded).
  Tensor out = empty(shape_, dtype_, device);
#ifdef METATAPE_CUDA
  const std::size_t bytes = static_cast<std::size_t>(numel()) * dtype_size(dtype_);
  detail::on_device([&] {
    if (device == Device::cuda)
      kernels::cuda::copy_host_to_device(out.raw_data(), raw_data(), bytes);
    else
      kernels::cuda::copy_device_to_host(out.raw_data(), raw_data(), bytes);
  });
#endif
  return out;
}

bool cuda_available(std::string* reason) {
#ifdef METATAPE_CUDA
  return kernels::cuda::usable_devices(reason) > 0;
#else
  if (reason) *reason = "this build of metatape has no CUDA backend (nvcc was not found when it was configured)";
  return false;
#endif
}

void synchronize(Device device) {
  if (device == Device::cpu) return;
  std::string reason;
  if (!cuda_available(&reason)) throw DeviceError("synchronize: cannot use the GPU: " + reason);
#ifdef METATAPE_CUDA
  detail::on_device([] { kernels::cuda::synchronize(); });
#endif
}

Tensor detail::TensorAccess::adopt(Storage* storage, const Shape& shape, DType dtype) {
  Tensor out;
  out.storage_ = storage;
  out.shape_ = shape;
  out.dtype_ = dtype;
  return out;
}

Tensor detail::TensorAccess::view(const Tensor& base, const Shape& shape) {
  Tensor out(base);
  out.shape_ = shape;
  out.var_ = {};
  return out;
}

Tensor empty(const Shape& shape, DType dtype, Device device) {
  const std::size_t bytes = checked_bytes(shape, dtype);
  return detail::TensorAccess::adopt(detail::allocate_storage(bytes, dtype, device), shape, dtype);
}

Tensor zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }

Tensor full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor out = empty(shape, dtype, device);
  detail::dispatch_any(device, dtype, [&]<class K, class T>() {
    K::template fill<T>(out.data<T>(), out.numel(), static_cast<T>(value));
  });
  return out;
}

Tensor scalar(double value, DType dtype, Device device) { return full(Shape{}, value, dtype, device); }

Tensor from_vector(std::span<const double> values, const Shape& shape, DType dtype) {
  if (static_cast<std::int64_t>(values.size()) != shape.numel())
    throw ShapeError("from_vector: " + std::to_string(values.size()) + " values do not fill shape " + shape.str() +
                     " (" + std::to_string(shape.numel()) + " elements)");
  Tensor out = empty(shape, dtype);
  for (std::size_t i = 0; i < values.size(); ++i) {
    switch (dtype) {
      case DType::f32:
        out.data<float>()[i] = static_cast<float>(values[i]);
        break;
      case DType::f64:
        out.data<double>()[i] = values[i];
        break;
      case DType::i64:
        out.data<std::int64_t>()[i] = static_cast<std::int64_t>(values[i]);
        break;
    }
  }
  return out;
}

Tensor from_vector(std::initializer_list<double> values, const Shape& shape, DType dtype) {
  return from_vector(std::span<const double>(values.begin(), values.size()), shape, dtype);
}

Tensor from_indices(std::span<const std::int64_t> values, const Shape& shape) {
  if (static_cast<std::int64_t>(values.size()) != shape.numel())
    throw ShapeError("from_indices: " + std::to_string(values.size()) + " values do not fill shape " + shape.str());
  Tensor out = empty(shape, DType::i64);
  if (!values.empty()) std::memcpy(out.data<std::int64_t>(), values.data(), values.size() * sizeof(std::int64_t));
  return out;
}

Tensor from_indices(std::initializer_list<std::int64_t> values, const Shape& shape) {
  return from_indices(std::span<const std::int64_t>(values.begin(), values.size()), shape);
}

Tensor arange(std::int64_t n, DType dtype) {
  if (n < 0) throw ValueError("arange: n must be >= 0, got " + std::to_string(n));
  Tensor out = empty(Shape{n}, dtype);
  for (std::int64_t i = 0; i < n; ++i) {
    switch (dtype) {
      case DType::f32:
        out.data<float>()[i] = static_cast<float>(i);
        break;
      case DType::f64:
        out.data<double>()[i] = static_cast<double>(i);
        break;
      case DType::i64:
        out.data<std::int64_t>()[i] = i;
        break;
    }
  }
  return out;
}

}  // namespace metatape
