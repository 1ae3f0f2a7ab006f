// Ops of any arity: a variadic op records, saves and differentiates every
// input however many it has (the per-input bookkeeping is not limited to the
// width of a machine word). Run under the sanitizer build, where an
// out-of-range bit shift is reported.
#include <doctest/doctest.h>

#include <vector>

#include "gradcheck.hpp"

namespace mt = metatape;
using mt::DType;
using mt::Tensor;

namespace {

constexpr DType f64 = DType::f64;
constexpr int kInputs = 100;  // well past 32 and 64

std::vector<Tensor> random_inputs(const mt::Shape& shape, std::uint64_t seed) {
  mt::Generator gen(seed);
  std::vector<Tensor> xs;
  for (int i = 0; i < kInputs; ++i) xs.push_back(mt::uniform(shape, -1.0, 1.0, gen, f64));
  return xs;
}

// f(xs) = y ⊙ y with y the joined inputs: nonlinear, so the second-order
// check differentiates through the recorded backward of the join as well.
mt::testing::Function squared(Tensor (*join)(const std::vector<Tensor>&, int), int axis) {
  return [join, axis](const std::vector<Tensor>& xs) {
    const Tensor y = join(xs, axis);
    return std::vector<Tensor>{mt::mul(y, y)};
  };
}

void check_to_second_order(const mt::testing::Function& f, const std::vector<Tensor>& xs) {
  const std::vector<bool> all(xs.size(), true);
  const mt::testing::CheckResult first = mt::testing::gradcheck(f, xs, all);
  CHECK_MESSAGE(first.ok, first.message);
  CHECK(first.entries > 0);
  const mt::testing::CheckResult second = mt::testing::gradgradcheck(f, xs, all);
  CHECK_MESSAGE(second.ok, second.message);
  CHECK(second.entries > 0);
}

}  // namespace

TEST_SUITE("arity") {
  TEST_CASE("concat of 100 recorded inputs: every input gets its gradient, to second order") {
    mt::TapeScope scope;
    const std::vector<Tensor> xs = random_inputs({2}, 11);
    check_to_second_order(squared(mt::concat, 0), xs);

    // Each input's gradient is its own block of the seed, none dropped.
    std::vector<Tensor> leaves;
    for (const Tensor& x : xs) leaves.push_back(x.detach().requires_grad_());
    std::vector<double> weights;
    for (int i = 0; i < 2 * kInputs; ++i) weights.push_back(i + 1.0);
    const Tensor w = mt::from_vector(weights, {2 * kInputs}, f64);
    const std::vector<Tensor> g = mt::grad(mt::sum(mt::mul(mt::concat(leaves, 0), w)), leaves);
    REQUIRE(g.size() == static_cast<std::size_t>(kInputs));
    for (int i = 0; i < kInputs; ++i) {
      const std::vector<double> gi = g[static_cast<std::size_t>(i)].to_vector();
      CHECK(gi[0] == 2.0 * i + 1);
      CHECK(gi[1] == 2.0 * i + 2);
    }
  }

  TEST_CASE("stack of 100 recorded inputs, on a new inner axis, to second order") {
    mt::TapeScope scope;
    check_to_second_order(squared(mt::stack, 1), random_inputs({2}, 12));
  }

  TEST_CASE("concat of 100 inputs where only some are recorded") {
    mt::TapeScope scope;
    std::vector<Tensor> xs = random_inputs({1}, 13);
    std::vector<Tensor> recorded;
    for (int i = 0; i < kInputs; ++i)
      if (i % 3 == 2) recorded.push_back(xs[static_cast<std::size_t>(i)].requires_grad_());
    const Tensor y = mt::concat(xs, 0);
    CHECK(y.requires_grad());
    const std::vector<Tensor> g = mt::grad(mt::sum(mt::mul(y, y)), recorded);
    for (std::size_t k = 0; k < recorded.size(); ++k) CHECK(g[k].to_vector()[0] == 2 * recorded[k].to_vector()[0]);
  }
}
