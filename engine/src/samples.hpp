// Internal: helpers for the op registry's sample calls, a test hook (see metatape/registry.hpp):
// random inputs that stay inside each op's smooth domain, so finite differences are valid.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "metatape/random.hpp"
#include "metatape/registry.hpp"

namespace metatape::detail {

// Uniform in [low, high].
Tensor sample_uniform(const Shape& shape, Generator& gen, DType dtype, double low = -1.0, double high = 1.0);
// |x| uniform in [low, high] with a random sign: keeps clear of the kinks of
// relu, abs and max, and of division by zero.
Tensor sample_away_from_zero(const Shape& shape, Generator& gen, DType dtype, double low = 0.2, double high = 1.5);
// Distinct values (a shuffled grid plus small noise): no ties for max.
Tensor sample_distinct(const Shape& shape, Generator& gen, DType dtype);

// A sample whose inputs are all differentiable.
OpSample make_sample(std::string label, std::vector<Tensor> inputs,
                     std::function<Tensor(const std::vector<Tensor>&)> call);

}  // namespace metatape::detail
