// Helpers shared by the tests and the benchmarks: the one bit-for-bit
// comparison and the one relative error that compare results, the one matcher for typed errors and their
// messages, and the one builder of random few-shot image tasks. Header-only
// and free of doctest, so that bench/ includes it too (as
// "tests/test_util.hpp", from the project root).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <initializer_list>
#include <new>
#include <ostream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "metatape/engine.hpp"
#include "metatape/meta/tasks.hpp"

namespace metatape::testing {

// Sets the CPU thread count for a scope and restores the previous count
// after it.
class ThreadsFor {
 public:
  explicit ThreadsFor(int threads) : saved_(num_threads()) { set_num_threads(threads); }
  ~ThreadsFor() { set_num_threads(saved_); }
  ThreadsFor(const ThreadsFor&) = delete;
  ThreadsFor& operator=(const ThreadsFor&) = delete;

 private:
  int saved_;
};

// True when the lists hold the same tensors bit for bit: same count, shapes,
// dtypes and bytes (so NaNs compare by their bits, and -0 differs from 0).
// For results that must not move at all: resume, shift invariance. CPU
// tensors only.
inline bool same_bits(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].shape() != b[i].shape() || a[i].dtype() != b[i].dtype()) return false;
    const std::size_t bytes = static_cast<std::size_t>(a[i].numel()) * dtype_size(a[i].dtype());
    if (bytes != 0 && std::memcmp(a[i].raw_data(), b[i].raw_data(), bytes) != 0) return false;
  }
  return true;
}

// The directional derivative of order `order` of a scalar f at x0 along u,
// dᵏ/dtᵏ f(x0 + t u) at t = 0, by k nested grads with create_graph.
inline double directional(const std::function<Tensor(const Tensor&)>& f, const Tensor& x0, const Tensor& u, int order) {
  TapeScope scope;
  Tensor x = x0.detach();
  x.requires_grad_();
  Tensor d = f(x);
  for (int k = 0; k < order; ++k) d = sum(grad(d, x, {.create_graph = true}) * u);
  return d.item();
}

// ‖actual − expected‖ / ‖expected‖, 2-norms over every entry of every tensor
// of the lists together — so a tensor that is rounding noise around zero
// among larger ones (a conv bias under batch norm) is judged against the
// whole, not against itself. When `expected` is exactly zero there is no
// scale and it is the absolute ‖actual‖. Any device and dtype (computed in
// double on the host); +inf when the lists' lengths or shapes differ, so a
// `<= tolerance` check fails.
inline double relative_error(const std::vector<Tensor>& actual, const std::vector<Tensor>& expected) {
  if (actual.size() != expected.size()) return INFINITY;
  double diff = 0, ref = 0;
  for (std::size_t t = 0; t < actual.size(); ++t) {
    if (actual[t].shape() != expected[t].shape()) return INFINITY;
    const std::vector<double> a = actual[t].to_vector(), b = expected[t].to_vector();
    for (std::size_t i = 0; i < a.size(); ++i) {
      diff += (a[i] - b[i]) * (a[i] - b[i]);
      ref += b[i] * b[i];
    }
  }
  return ref > 0 ? std::sqrt(diff / ref) : std::sqrt(diff);
}

inline double relative_error(const Tensor& actual, const Tensor& expected) {
  return relative_error(std::vector<Tensor>{actual}, std::vector<Tensor>{expected});
}

// What code that should have thrown did. Checked as
//   CHECK(throws_error<ShapeError>([&] { ... }, {"part", "part"}));
// and, for an exact message,
//   CHECK(throws_error<GradError>([&] { ... }).message == "...");
// A failed CHECK prints it: what was thrown (or that nothing was) and the
// parts looked for.
struct ErrorMatch {
  bool ok = false;                 // threw the wanted type, and the message has every part
  std::string wanted;              // the wanted type
  std::string message;             // its what(), or what happened instead, in parentheses
  std::vector<std::string> parts;  // the parts looked for
  explicit operator bool() const { return ok; }
};

inline std::ostream& operator<<(std::ostream& os, const ErrorMatch& m) {
  os << "wanted " << m.wanted << ", got \"" << m.message << "\"";
  if (!m.parts.empty()) {
    const char* separator = ", looked for \"";
    for (const std::string& p : m.parts) {
      os << separator << p << "\"";
      separator = ", \"";
    }
  }
  return os;
}

namespace detail {

// The metatape error type of e, by name, most derived first.
inline std::string error_name(const std::exception& e) {
  if (dynamic_cast<const ShapeError*>(&e)) return "ShapeError";
  if (dynamic_cast<const DTypeError*>(&e)) return "DTypeError";
  if (dynamic_cast<const DeviceError*>(&e)) return "DeviceError";
  if (dynamic_cast<const GradError*>(&e)) return "GradError";
  if (dynamic_cast<const ValueError*>(&e)) return "ValueError";
  if (dynamic_cast<const IoError*>(&e)) return "IoError";
  if (dynamic_cast<const Error*>(&e)) return "Error";
  if (dynamic_cast<const std::bad_alloc*>(&e)) return "std::bad_alloc";
  return "a std::exception that is no metatape error";
}

template <class E>
std::string error_name() {
  if constexpr (std::is_same_v<E, ShapeError>) return "ShapeError";
  if constexpr (std::is_same_v<E, DTypeError>) return "DTypeError";
  if constexpr (std::is_same_v<E, DeviceError>) return "DeviceError";
  if constexpr (std::is_same_v<E, GradError>) return "GradError";
  if constexpr (std::is_same_v<E, ValueError>) return "ValueError";
  if constexpr (std::is_same_v<E, IoError>) return "IoError";
  if constexpr (std::is_same_v<E, Error>) return "Error";
  return "the wanted error";
}

}  // namespace detail

// Runs f, which should throw E (by default any metatape error) with a
// message containing every one of `parts`.
template <class E = Error, class F>
ErrorMatch throws_error(F&& f, std::initializer_list<std::string_view> parts = {}) {
  ErrorMatch m;
  m.wanted = detail::error_name<E>();
  m.parts.assign(parts.begin(), parts.end());
  try {
    std::forward<F>(f)();
    m.message = "(nothing was thrown)";
    return m;
  } catch (const E& e) {
    m.message = e.what();
  } catch (const std::exception& e) {
    m.message = "(" + detail::error_name(e) + " instead: " + e.what() + ")";
    return m;
  }
  m.ok = true;
  for (const std::string& p : m.parts) m.ok = m.ok && m.message.find(p) != std::string::npos;
  return m;
}

// Few-shot classification tasks of random images, for tests and benchmarks
// whose outcome does not depend on what the images show (gradient checks,
// backend comparisons, timing): pixels uniform on [0, 1), and example i of a
// task labelled i mod ways, so `support` = ways · shots gives every class
// `shots` examples. Inputs are [tasks, n, channels, size, size], labels i64
// [tasks, n]: what Conv4 takes.
struct ImageTaskOptions {
  std::int64_t ways = 5, channels = 1, size = 28;
};

class RandomImageTasks final : public meta::TaskSampler {
 public:
  explicit RandomImageTasks(const ImageTaskOptions& options = {}) : options_(options) {
    if (options.ways < 1 || options.channels < 1 || options.size < 1)
      throw ValueError("random images: ways, channels and size must be >= 1, got " + std::to_string(options.ways) +
                       ", " + std::to_string(options.channels) + ", " + std::to_string(options.size));
  }

  meta::TaskBatch sample(std::int64_t tasks, std::int64_t support, std::int64_t query, Generator& gen,
                         DType dtype) const override {
    if (tasks < 1 || support < 1 || query < 1)
      throw ValueError("random images: need at least one task, one support and one query image, got " +
                       std::to_string(tasks) + " tasks, " + std::to_string(support) + " support, " +
                       std::to_string(query) + " query");
    const auto labels = [&](std::int64_t n) {
      std::vector<std::int64_t> y;
      for (std::int64_t t = 0; t < tasks; ++t)
        for (std::int64_t i = 0; i < n; ++i) y.push_back(i % options_.ways);
      return from_indices(y, {tasks, n});
    };
    const std::int64_t c = options_.channels, s = options_.size;
    Tensor support_x = uniform({tasks, support, c, s, s}, 0, 1, gen, dtype);
    Tensor query_x = uniform({tasks, query, c, s, s}, 0, 1, gen, dtype);
    return {std::move(support_x), labels(support), std::move(query_x), labels(query)};
  }

  std::string describe() const override { return "random images"; }

 private:
  ImageTaskOptions options_;
};

}  // namespace metatape::testing
