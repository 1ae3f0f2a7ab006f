// The tape's contract: what is recorded and when, scopes, no-grad, detach,
// seeds, accumulation, and a steady state without allocation.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <thread>

#include "metatape/captured_step.hpp"
#include "test_util.hpp"

namespace mt = metatape;
using mt::DType;
using mt::Tensor;

namespace {
constexpr DType f64 = DType::f64;
}

TEST_SUITE("tape") {
  TEST_CASE("ops on recorded tensors are recorded; ops on constants are not") {
    mt::TapeScope scope;
    const auto before = mt::tape_stats();
    Tensor c = mt::ones({3}, f64);
    const Tensor constant = mt::exp(c);
    CHECK(!constant.requires_grad());
    CHECK(mt::tape_stats().nodes == before.nodes);
    Tensor x = mt::ones({3}, f64);
    x.requires_grad_();
    const Tensor y = mt::exp(x) * c;
    CHECK(y.requires_grad());
    CHECK(mt::tape_stats().nodes == before.nodes + 2);
  }

  TEST_CASE("a TapeScope releases what was recorded inside it") {
    const auto outer = mt::tape_stats();
    {
      mt::TapeScope scope;
      Tensor x = mt::ones({3}, f64);
      x.requires_grad_();
      const Tensor y = mt::sum(mt::tanh(x));
      CHECK(mt::tape_stats().nodes > outer.nodes);
      {
        mt::TapeScope inner;
        const Tensor z = mt::grad(y, x, {.create_graph = true});
        CHECK(z.requires_grad());
      }
      // The inner release leaves the outer recording usable.
      CHECK(mt::grad(y, x).to_vector()[0] == doctest::Approx(1 - std::pow(std::tanh(1.0), 2)));
    }
    CHECK(mt::tape_stats().nodes == outer.nodes);
    CHECK(mt::tape_stats().variables == outer.variables);
  }

  TEST_CASE("grad without create_graph records nothing; with it, the backward is recorded") {
    mt::TapeScope scope;
    Tensor x = mt::from_vector({0.3, -0.4}, {2}, f64);
    x.requires_grad_();
    const Tensor y = mt::sum(mt::sigmoid(x) * x);
    const auto nodes = mt::tape_stats().nodes;
    const Tensor g = mt::grad(y, x);
    CHECK(mt::tape_stats().nodes == nodes);
    CHECK(!g.requires_grad());
    const Tensor g2 = mt::grad(y, x, {.create_graph = true});
    CHECK(mt::tape_stats().nodes > nodes);
    CHECK(g2.requires_grad());
    CHECK(mt::testing::relative_error(g, g2) == 0.0);
  }

  TEST_CASE("relu's and abs's recorded derivatives are one kernel each, the bits of the unrecorded ones") {
    // g ⊙ mask(x) recorded as one op (times_step, times_sign) in one pass,
    // where it was a mask tensor and a mul by it; its mask argument is never
    // differentiated, and d/dg of the recorded gradient is the mask again.
    // Signed zeros and a NaN in x, a NaN in the seed.
    const double nan = std::nan("");
    const Tensor x0 = mt::from_vector({-1.5, -0.0, 0.0, 2.0, nan, 0.25}, {6}, f64);
    const Tensor seed = mt::from_vector({0.5, -3.0, 2.0, -0.75, 1.0, nan}, {6}, f64);
    const Tensor v = mt::from_vector({1.0, 2.0, 3.0, 4.0, 5.0, 6.0}, {6}, f64);
    const auto same_bits = [](const std::vector<double>& a, const std::vector<double>& b) {
      for (std::size_t i = 0; i < a.size(); ++i) {
        INFO("entry " << i << ": " << a[i] << " against " << b[i]);
        CHECK(std::signbit(a[i]) == std::signbit(b[i]));
        CHECK((a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i]))));
      }
    };
    for (const bool is_relu : {true, false}) {
      INFO(std::string(is_relu ? "relu" : "abs"));
      // in: x, g. out: the gradient without a graph, with one, and the
      // recorded one's derivatives along g and x.
      const auto derivatives = [&](const std::vector<Tensor>& in) {
        mt::TapeScope scope;
        Tensor x = in[0], g = in[1];
        x.requires_grad_();
        g.requires_grad_();
        const Tensor y = is_relu ? mt::relu(x) : mt::abs(x);
        const Tensor plain = mt::grad({y}, {x}, {g})[0];
        const Tensor recorded = mt::grad({y}, {x}, {g}, {.create_graph = true})[0];
        const auto second = mt::grad({mt::sum(recorded * v)}, {g, x}, {}, {.allow_unused = true});
        return std::vector<Tensor>{plain.detach(), recorded.detach(), second[0], second[1]};
      };
      const std::vector<Tensor> out = derivatives({x0, seed});
      same_bits(out[0].to_vector(), out[1].to_vector());
      const std::vector<double> mask =
          is_relu ? std::vector<double>{0, 0, 0, 1, 0, 1} : std::vector<double>{-1, 0, 0, 1, 0, 1};  // sign(NaN) is 0
      std::vector<double> expected = v.to_vector();
      for (std::size_t i = 0; i < mask.size(); ++i) expected[i] *= mask[i];
      same_bits(out[2].to_vector(), expected);
      same_bits(out[3].to_vector(), std::vector<double>(mask.size(), 0.0));
      // The kernels: the forward's unary, and a mask product for each of
      // the three derivatives; no mask tensor, no mul.
      mt::CapturedStep step(derivatives, {x0, seed}, mt::Device::cpu);
      int unary = 0, masked = 0, products = 0;
      for (const auto& call : step.kernel_times(1)) {
        const std::string kernel = call.kernel;
        unary += kernel == "unary" ? 1 : 0;
        masked += kernel == "multiply_by_mask" ? 1 : 0;
        products += kernel == "binary" && call.arguments.rfind("2,", 0) == 0 ? 1 : 0;
      }
      CHECK(unary == 1);
      CHECK(masked == 3);
      CHECK(products == 2);  // recorded * v and its derivative along recorded
    }
  }

  TEST_CASE("NoGradScope stops recording and restores the mode after") {
    mt::TapeScope scope;
    Tensor x = mt::ones({2}, f64);
    x.requires_grad_();
    {
      mt::NoGradScope no_grad;
      CHECK(!mt::grad_enabled());
      CHECK(!(x * 2.0).requires_grad());
    }
    CHECK(mt::grad_enabled());
    CHECK((x * 2.0).requires_grad());
  }

  TEST_CASE("detach cuts the gradient") {
    mt::TapeScope scope;
    Tensor x = mt::scalar(2.0, f64);
    x.requires_grad_();
    const Tensor y = x * x.detach();  // d/dx = x, not 2x
    CHECK(mt::grad(y, x).item() == doctest::Approx(2.0));
  }

  TEST_CASE("a tensor used twice accumulates both contributions") {
    mt::TapeScope scope;
    Tensor x = mt::from_vector({1.0, 2.0}, {2}, f64);
    x.requires_grad_();
    const Tensor y = mt::sum(x * x + mt::exp(x) + x);
    const auto g = mt::grad(y, x).to_vector();
    CHECK(g[0] == doctest::Approx(2 * 1.0 + std::exp(1.0) + 1));
    CHECK(g[1] == doctest::Approx(2 * 2.0 + std::exp(2.0) + 1));
  }

  TEST_CASE("a product's gradient is added into the adjoint gathered so far, to the bits of adding it after") {
    // W [4, 6, 5] (a weight per task) gets three products' gradients: from a
    // layer, from x2 W and from (x2 W) Wᵀ, and last its column sums'.
    // Without a recorded graph the later ones are summed into the first in
    // the products' own pass (gemm_batched_accumulate), and the column sums'
    // gradient added in place, broadcast; with a graph, every contribution
    // is an add op.
    // The values must be the same bits either way, and a CPU replay of the
    // walk must show the accumulating kernel (so the path is taken).
    for (const DType dtype : {DType::f32, f64}) {
      INFO(mt::dtype_name(dtype));
      mt::Generator gen(7);
      const Tensor x = mt::normal({4, 3, 6}, 0, 1, gen, dtype), x2 = mt::normal({4, 3, 6}, 0, 1, gen, dtype);
      const Tensor b = mt::normal({5}, 0, 1, gen, dtype), c = mt::normal({4, 3, 6}, 0, 1, gen, dtype);
      const Tensor w0 = mt::normal({4, 6, 5}, 0, 1, gen, dtype);
      const auto gradients = [&](const std::vector<Tensor>& in, bool create_graph) {
        mt::TapeScope scope;
        Tensor w = in[0];
        w.requires_grad_();
        const Tensor column_sums = mt::sum_to(w, {4, 1, 5});  // its gradient, expanded, is added last
        const Tensor y1 = mt::linear(x, w, b, {.relu = true});
        const Tensor y3 = mt::matmul(mt::matmul(x2, w), w, false, true);
        const Tensor loss = mt::sum(y1 * y1) + mt::sum(y3 * c) + mt::sum(column_sums * column_sums);
        return std::vector<Tensor>{mt::grad(loss, w, {.create_graph = create_graph}).detach()};
      };
      const Tensor fused = gradients({w0}, false)[0], added = gradients({w0}, true)[0];
      CHECK(mt::testing::relative_error(fused, added) == 0.0);
      mt::CapturedStep step([&](const std::vector<Tensor>& in) { return gradients(in, false); }, {w0}, mt::Device::cpu);
      CHECK(mt::testing::relative_error(step({w0})[0], fused) == 0.0);
      int accumulating = 0, expansions = 0;
      for (const auto& call : step.kernel_times(1)) {
        accumulating += std::string(call.kernel) == "gemm_batched_accumulate" ? 1 : 0;
        expansions += std::string(call.kernel) == "strided_copy" && call.arguments == "[4, 6, 5]" ? 1 : 0;
      }
      CHECK(accumulating == 2);
      CHECK(expansions == 0);  // sum_to's gradient added in place, never expanded into W's shape
    }
  }

  TEST_CASE("a gradient is never added into a tensor the caller holds") {
    // h's adjoint starts as the caller's seed; the product y = h W adds its
    // gradient for h to it, which must make a new tensor, not write the seed.
    mt::TapeScope scope;
    mt::Generator gen(3);
    Tensor h = mt::normal({3, 4}, 0, 1, gen, f64), w = mt::normal({4, 2}, 0, 1, gen, f64);
    h.requires_grad_();
    w.requires_grad_();
    const Tensor y = mt::matmul(h, w);
    const Tensor seed_h = mt::normal({3, 4}, 0, 1, gen, f64), seed_y = mt::normal({3, 2}, 0, 1, gen, f64);
    const std::vector<double> seed_before = seed_h.to_vector();
    const Tensor g = mt::grad({h, y}, {h}, {seed_h, seed_y})[0];
    CHECK(seed_h.to_vector() == seed_before);
    const Tensor expected = seed_h.detach() + mt::matmul(seed_y, w.detach(), false, true);
    CHECK(mt::testing::relative_error(g, expected) == 0.0);
  }

  TEST_CASE("seeds weight non-scalar outputs, and several outputs add up") {
    mt::TapeScope scope;
    Tensor x = mt::from_vector({1.0, -2.0, 3.0}, {3}, f64);
    x.requires_grad_();
    const Tensor y = x * x, z = 3.0 * x;
    const Tensor seed_y = mt::from_vector({1.0, 0.5, -1.0}, {3}, f64);
    const Tensor seed_z = mt::from_vector({2.0, 2.0, 2.0}, {3}, f64);
    const auto g = mt::grad({y, z}, {x}, {seed_y, seed_z})[0].to_vector();
    CHECK(g[0] == doctest::Approx(2 * 1.0 * 1.0 + 6));
    CHECK(g[1] == doctest::Approx(2 * -2.0 * 0.5 + 6));
    CHECK(g[2] == doctest::Approx(2 * 3.0 * -1.0 + 6));
  }

  TEST_CASE("gradients with respect to intermediate variables") {
    mt::TapeScope scope;
    Tensor x = mt::scalar(0.5, f64);
    x.requires_grad_();
    const Tensor h = mt::exp(x);
    const Tensor y = h * h;
    const auto g = mt::grad(y, {h, x});
    CHECK(g[0].item() == doctest::Approx(2 * std::exp(0.5)));
    CHECK(g[1].item() == doctest::Approx(2 * std::exp(1.0)));
  }

  TEST_CASE("allow_unused gives zeros for inputs the outputs do not depend on") {
    mt::TapeScope scope;
    Tensor x = mt::ones({2}, f64), unused = mt::ones({3}, f64);
    x.requires_grad_();
    unused.requires_grad_();
    const auto g = mt::grad(mt::sum(x), {x, unused}, {.allow_unused = true});
    CHECK(g[1].shape() == mt::Shape{3});
    CHECK(mt::sum(mt::abs(g[1])).item() == 0.0);
  }

  TEST_CASE("an output recorded before every input contributes nothing, beside one that depends") {
    // grad() only walks from the oldest input on; the older output's seed
    // must be ignored, not written outside the walk's arrays.
    mt::TapeScope scope;
    Tensor x = mt::from_vector({0.5, -1.0}, {2}, f64);
    x.requires_grad_();
    const Tensor older = mt::sum(mt::exp(x));
    Tensor z = mt::from_vector({2.0, 3.0}, {2}, f64);
    z.requires_grad_();
    const Tensor newer = mt::sum(z * z);
    const Tensor alone = mt::grad({older}, {z}, {}, {.allow_unused = true})[0];
    CHECK(mt::sum(mt::abs(alone)).item() == 0.0);
    const std::vector<double> both = mt::grad({older, newer}, {z}, {}, {})[0].to_vector();
    CHECK(both[0] == 4.0);
    CHECK(both[1] == 6.0);
  }

  TEST_CASE("a training loop reaches a steady state without system allocations") {
    mt::Generator gen(5);
    Tensor w = mt::normal({8, 8}, 0, 0.3, gen, f64);
    const Tensor x = mt::normal({16, 8}, 0, 1, gen, f64);
    std::size_t after_warmup = 0;
    for (int step = 0; step < 20; ++step) {
      if (step == 5) after_warmup = mt::pool_stats().system_allocations;
      mt::TapeScope scope;
      Tensor p = w.detach();
      p.requires_grad_();
      const Tensor loss = mt::mean(mt::square(mt::tanh(mt::matmul(x, p))));
      const Tensor g = mt::grad(loss, p, {.create_graph = true});
      const Tensor hvp = mt::grad(mt::sum(g * g), p);
      mt::NoGradScope no_grad;
      w = w - 0.1 * hvp;
    }
    CHECK(mt::pool_stats().system_allocations == after_warmup);
  }

  TEST_CASE("requires_grad_ on a live handle keeps its variable") {
    mt::TapeScope scope;
    Tensor x = mt::ones({2}, f64);
    x.requires_grad_();
    const Tensor y = mt::sum(x * 3.0);
    x.requires_grad_();  // no new leaf: y still depends on x
    CHECK(mt::grad(y, x).to_vector()[0] == doctest::Approx(3.0));
    x.requires_grad_(false);
    CHECK(!x.requires_grad());
  }

  TEST_CASE("each thread has its own tape") {
    mt::TapeScope scope;
    Tensor x = mt::ones({2}, f64);
    x.requires_grad_();
    const Tensor y = mt::sum(x);
    bool threw = false;
    std::thread other([&] {
      try {
        (void)mt::grad(y, x);
      } catch (const mt::GradError&) {
        threw = true;
      }
    });
    other.join();
    CHECK(threw);
  }
}
