#include "samples.hpp"

namespace metatape::detail {

Tensor sample_uniform(const Shape& shape, Generator& gen, DType dtype, double low, double high) {
  return uniform(shape, low, high, gen, dtype);
}

Tensor sample_away_from_zero(const Shape& shape, Generator& gen, DType dtype, double low, double high) {
  std::vector<double> values(static_cast<std::size_t>(shape.numel()));
  for (double& v : values) {
    const double magnitude = low + (high - low) * gen.uniform01();
    v = gen.uniform01() < 0.5 ? -magnitude : magnitude;
  }
  return from_vector(values, shape, dtype);
}

Tensor sample_distinct(const Shape& shape, Generator& gen, DType dtype) {
  const std::int64_t n = shape.numel();
  const Tensor order = permutation(n, gen);
  std::vector<double> values(static_cast<std::size_t>(n));
  // Neighbouring values differ by 0.1 > 2 * 0.02 noise + finite-difference steps.
  for (std::int64_t i = 0; i < n; ++i)
    values[static_cast<std::size_t>(i)] = 0.1 * static_cast<double>(order.data<std::int64_t>()[i]) -
                                          0.05 * static_cast<double>(n) + 0.02 * gen.uniform01();
  return from_vector(values, shape, dtype);
}

OpSample make_sample(std::string label, std::vector<Tensor> inputs,
                     std::function<Tensor(const std::vector<Tensor>&)> call) {
  std::vector<bool> differentiable(inputs.size(), true);
  return {std::move(label), std::move(inputs), std::move(differentiable), std::move(call), 0.0};
}

}  // namespace metatape::detail
