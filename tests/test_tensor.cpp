// Values: factories, views, random generators, and each op's forward against
// a direct computation.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "test_util.hpp"

namespace mt = metatape;
using mt::DType;
using mt::Shape;
using mt::Tensor;

namespace {
constexpr DType f64 = DType::f64;

double at(const Tensor& t, std::int64_t i) { return t.to_vector()[static_cast<std::size_t>(i)]; }
}  // namespace

TEST_SUITE("tensor") {
  TEST_CASE("factories fill and report shape, dtype and values") {
    const Tensor z = mt::zeros({2, 3}, f64);
    CHECK(z.shape() == Shape{2, 3});
    CHECK(z.rank() == 2);
    CHECK(z.dim(-1) == 3);
    CHECK(z.numel() == 6);
    CHECK(z.dtype() == f64);
    CHECK(z.device() == mt::Device::cpu);
    CHECK(mt::sum(mt::full({4}, 2.5, f64)).item() == 10.0);
    CHECK(mt::arange(4, DType::i64).to_vector() == std::vector<double>{0, 1, 2, 3});
    CHECK(mt::scalar(3.0).rank() == 0);
    CHECK(mt::from_vector({1, 2, 3, 4, 5, 6}, {2, 3}).data<float>()[4] == 5.0f);
    CHECK(mt::Shape{2, 3, 4}.str() == "[2, 3, 4]");
    CHECK(mt::zeros({1, 1, 1, 1, 1}).rank() == 5);
  }

  TEST_CASE("reshape is a view; clone and ops make new storage") {
    Tensor x = mt::from_vector({1, 2, 3, 4}, {2, 2}, f64);
    const Tensor r = mt::reshape(x, {4});
    CHECK(r.data<double>() == x.data<double>());
    const Tensor c = x.clone();
    CHECK(c.data<double>() != x.data<double>());
    CHECK(c.to_vector() == x.to_vector());
    CHECK(mt::reshape(x, {-1, 1}).shape() == Shape{4, 1});
  }

  TEST_CASE("generators: same seed, same bits; different seed, different bits") {
    mt::Generator a(42), b(42), c(43);
    const Tensor ua = mt::uniform({100}, -1, 1, a, f64), ub = mt::uniform({100}, -1, 1, b, f64);
    const Tensor uc = mt::uniform({100}, -1, 1, c, f64);
    CHECK(ua.to_vector() == ub.to_vector());
    CHECK(ua.to_vector() != uc.to_vector());
    // Resuming from a saved position continues the stream exactly.
    mt::Generator d(42);
    (void)mt::uniform({37}, 0, 1, d, f64);
    mt::Generator e(42);
    e.set_position(d.position());
    CHECK(mt::normal({9}, 0, 1, d, f64).to_vector() == mt::normal({9}, 0, 1, e, f64).to_vector());
  }

  TEST_CASE("distributions have their ranges and moments") {
    mt::Generator gen(1);
    const auto u = mt::uniform({20000}, 2, 5, gen, f64).to_vector();
    CHECK(*std::min_element(u.begin(), u.end()) >= 2.0);
    CHECK(*std::max_element(u.begin(), u.end()) < 5.0);
    CHECK(std::accumulate(u.begin(), u.end(), 0.0) / 20000 == doctest::Approx(3.5).epsilon(0.01));
    const Tensor n = mt::normal({20000}, 1.0, 2.0, gen, f64);
    CHECK(mt::mean(n).item() == doctest::Approx(1.0).epsilon(0.05));
    CHECK(std::sqrt(mt::mean(mt::square(n - 1.0)).item()) == doctest::Approx(2.0).epsilon(0.03));
    const auto t = mt::truncated_normal({20000}, 0.0, 1.5, gen, f64).to_vector();
    CHECK(*std::min_element(t.begin(), t.end()) >= -3.0);
    CHECK(*std::max_element(t.begin(), t.end()) <= 3.0);
    auto p = mt::permutation(50, gen).to_vector();
    std::sort(p.begin(), p.end());
    for (int i = 0; i < 50; ++i) CHECK(p[static_cast<std::size_t>(i)] == i);
  }

  TEST_CASE("broadcasting follows NumPy") {
    const Tensor a = mt::from_vector({1, 2, 3}, {3, 1}, f64), b = mt::from_vector({10, 20}, {1, 2}, f64);
    CHECK((a + b).to_vector() == std::vector<double>{11, 21, 12, 22, 13, 23});
    CHECK((a * b).shape() == Shape{3, 2});
    CHECK((mt::scalar(2.0, f64) - a).to_vector() == std::vector<double>{1, 0, -1});
    CHECK(mt::sum_to(mt::ones({2, 3, 4}, f64), {3, 1}).to_vector() == std::vector<double>{8, 8, 8});
    CHECK(mt::expand(a, {2, 3, 2}).shape() == Shape{2, 3, 2});
  }

  TEST_CASE("add_scaled has the bits of add after scale, one shape or broadcast") {
    mt::Generator gen(11);
    for (const DType dtype : {DType::f32, f64}) {
      const Tensor x = mt::normal({25, 40, 40}, 0.0, 1.0, gen, dtype),
                   y = mt::normal({25, 40, 40}, 0.0, 1.0, gen, dtype);
      const Tensor row = mt::normal({40}, 0.0, 1.0, gen, dtype);
      for (const double alpha : {-0.01, 0.4, -3.0}) {
        CAPTURE(alpha);
        CHECK(mt::add_scaled(x, y, alpha).to_vector() == mt::add(x, mt::scale(y, alpha)).to_vector());
        CHECK(mt::add_scaled(x, row, alpha).to_vector() == mt::add(x, mt::scale(row, alpha)).to_vector());
        CHECK(mt::add_scaled(row, x, alpha).to_vector() == mt::add(row, mt::scale(x, alpha)).to_vector());
      }
    }
  }

  TEST_CASE("reductions, max and logsumexp") {
    const Tensor x = mt::from_vector({1, 5, 3, 4, 2, 6}, {2, 3}, f64);
    CHECK(mt::sum(x).item() == 21);
    CHECK(mt::sum(x, {1}).to_vector() == std::vector<double>{9, 12});
    CHECK(mt::mean(x, {0}, true).shape() == Shape{1, 3});
    CHECK(mt::max(x, 1).to_vector() == std::vector<double>{5, 6});
    CHECK(mt::max(x, 0).to_vector() == std::vector<double>{4, 5, 6});
    const Tensor big = mt::from_vector({1000, 1000}, {1, 2}, f64);
    CHECK(mt::logsumexp(big, 1).item() == doctest::Approx(1000 + std::log(2.0)));
    const Tensor minus_inf = mt::full({1, 2}, -INFINITY, f64);
    CHECK(mt::logsumexp(minus_inf, 1).item() == -INFINITY);
  }

  TEST_CASE("layout ops move the right elements") {
    const Tensor x = mt::from_vector({0, 1, 2, 3, 4, 5}, {2, 3}, f64);
    CHECK(mt::transpose(x).to_vector() == std::vector<double>{0, 3, 1, 4, 2, 5});
    CHECK(mt::slice(x, 1, 1, 3).to_vector() == std::vector<double>{1, 2, 4, 5});
    CHECK(mt::concat({x, x}, 0).shape() == Shape{4, 3});
    CHECK(mt::concat({x, x}, 1).to_vector() == std::vector<double>{0, 1, 2, 0, 1, 2, 3, 4, 5, 3, 4, 5});
    CHECK(mt::stack({x, x}, 0).shape() == Shape{2, 2, 3});
    CHECK(mt::gather_rows(x, mt::from_indices({1, 1, 0}, {3})).to_vector() ==
          std::vector<double>{3, 4, 5, 3, 4, 5, 0, 1, 2});
    CHECK(mt::take(x, mt::from_indices({5, 0}, {2})).to_vector() == std::vector<double>{5, 0});
    CHECK(mt::permute(mt::reshape(mt::arange(24, f64), {2, 3, 4}), {2, 0, 1}).shape() == Shape{4, 2, 3});
    CHECK(at(mt::permute(mt::reshape(mt::arange(24, f64), {2, 3, 4}), {2, 0, 1}), 1) == 4);
  }

  TEST_CASE("matmul agrees with a direct triple loop, batched and transposed") {
    mt::Generator gen(2);
    const Tensor a = mt::normal({3, 5, 4}, 0, 1, gen, f64), b = mt::normal({3, 4, 6}, 0, 1, gen, f64);
    const Tensor c = mt::matmul(a, b);
    REQUIRE(c.shape() == Shape{3, 5, 6});
    const auto va = a.to_vector(), vb = b.to_vector(), vc = c.to_vector();
    double worst = 0;
    for (int t = 0; t < 3; ++t)
      for (int i = 0; i < 5; ++i)
        for (int j = 0; j < 6; ++j) {
          double s = 0;
          for (int k = 0; k < 4; ++k)
            s += va[static_cast<std::size_t>((t * 5 + i) * 4 + k)] * vb[static_cast<std::size_t>((t * 4 + k) * 6 + j)];
          worst = std::max(worst, std::abs(s - vc[static_cast<std::size_t>((t * 5 + i) * 6 + j)]));
        }
    CHECK(worst < 1e-12);
    CHECK(mt::testing::relative_error(mt::matmul(mt::transpose(a), b, true, false), c) < 1e-15);
    CHECK(mt::testing::relative_error(mt::matmul(a, mt::transpose(b), false, true), c) < 1e-15);
    const Tensor shared = mt::normal({4, 2}, 0, 1, gen, f64);
    CHECK(mt::testing::relative_error(mt::matmul(a, shared), mt::matmul(a, mt::expand(shared, {3, 4, 2}))) < 1e-15);
  }

  TEST_CASE("linear has the bits of add(matmul) and relu, values and gradients, on every bias layout") {
    struct Case {
      Shape x, w, bias;  // bias {}: none
    };
    mt::Generator gen(12);
    for (const DType dtype : {DType::f32, f64})
      for (const Case& cs :
           {Case{{25, 10, 40}, {25, 40, 40}, {25, 1, 40}}, Case{{25, 10, 1}, {25, 1, 40}, {25, 1, 40}},
            Case{{25, 10, 40}, {25, 40, 1}, {25, 1, 1}}, Case{{6, 10, 40}, {40, 40}, {6, 1, 40}},
            Case{{6, 10, 40}, {40, 40}, {40}}, Case{{3, 5, 4}, {3, 4, 70}, {}}, Case{{7, 80}, {80, 90}, {1, 90}}})
        for (const bool relu : {false, true}) {
          INFO(cs.x.str() << " @ " << cs.w.str() << " + " << cs.bias.str() << ", relu " << relu << ", "
                          << (dtype == f64 ? "f64" : "f32"));
          const bool has_bias = cs.bias.rank() > 0;
          const Tensor x = mt::normal(cs.x, 0, 1, gen, dtype).requires_grad_(),
                       w = mt::normal(cs.w, 0, 1, gen, dtype).requires_grad_(),
                       b = has_bias ? mt::normal(cs.bias, 0, 1, gen, dtype).requires_grad_() : Tensor();
          const Tensor fused = has_bias ? mt::linear(x, w, b, {.relu = relu}) : mt::linear(x, w, {.relu = relu});
          Tensor separate = mt::matmul(x, w);
          if (has_bias) separate = mt::add(separate, b);
          if (relu) separate = mt::relu(separate);
          REQUIRE(fused.shape() == separate.shape());
          CHECK(fused.to_vector() == separate.to_vector());
          const Tensor r = mt::normal(fused.shape(), 0, 1, gen, dtype);
          std::vector<Tensor> wrt = {x, w};
          if (has_bias) wrt.push_back(b);
          const auto g_fused = mt::grad(mt::sum(mt::mul(fused, r)), wrt);
          const auto g_separate = mt::grad(mt::sum(mt::mul(separate, r)), wrt);
          for (std::size_t i = 0; i < wrt.size(); ++i) {
            CAPTURE(i);
            CHECK(g_fused[i].to_vector() == g_separate[i].to_vector());
            CHECK(mt::testing::relative_error(g_fused[i], g_separate[i]) == 0);
          }
        }
    const Tensor x = mt::ones({2, 3, 4}, f64), w = mt::ones({2, 4, 5}, f64);
    for (const Shape& bad : {Shape{2, 3, 5}, Shape{4}, Shape{3, 1, 5}}) {
      CAPTURE(bad);
      CHECK_THROWS_WITH_AS(mt::linear(x, w, mt::ones(bad, f64)), doctest::Contains("linear: bias"), mt::ShapeError);
    }
  }

  TEST_CASE("conv2d agrees with a direct convolution") {
    // Small images go through chunked GEMMs, large ones (>= 128 output
    // pixels) through one GEMM per image: both are checked.
    mt::Generator gen(4);
    for (auto [height, width] : {std::pair{7, 6}, std::pair{17, 14}}) {
      const Tensor x = mt::normal({2, 3, height, width}, 0, 1, gen, f64), w = mt::normal({4, 3, 3, 3}, 0, 1, gen, f64);
      for (auto [stride, pad] : {std::pair{1, 1}, std::pair{2, 0}, std::pair{2, 1}}) {
        const Tensor y = mt::conv2d(x, w, {.stride = stride, .padding = pad});
        const int oh = (height + 2 * pad - 3) / stride + 1, ow = (width + 2 * pad - 3) / stride + 1;
        REQUIRE(y.shape() == Shape{2, 4, oh, ow});
        const auto vx = x.to_vector(), vw = w.to_vector(), vy = y.to_vector();
        double worst = 0;
        for (int n = 0; n < 2; ++n)
          for (int o = 0; o < 4; ++o)
            for (int i = 0; i < oh; ++i)
              for (int j = 0; j < ow; ++j) {
                double sum = 0;
                for (int c = 0; c < 3; ++c)
                  for (int ki = 0; ki < 3; ++ki)
                    for (int kj = 0; kj < 3; ++kj) {
                      const int r = i * stride - pad + ki, q = j * stride - pad + kj;
                      if (r < 0 || r >= height || q < 0 || q >= width) continue;
                      sum += vx[static_cast<std::size_t>(((n * 3 + c) * height + r) * width + q)] *
                             vw[static_cast<std::size_t>(((o * 3 + c) * 3 + ki) * 3 + kj)];
                    }
                worst = std::max(worst, std::abs(sum - vy[static_cast<std::size_t>(((n * 4 + o) * oh + i) * ow + j)]));
              }
        INFO(height << "x" << width << ", stride " << stride << ", padding " << pad);
        CHECK(worst < 1e-12);
      }
    }
  }

  TEST_CASE("task-batched conv2d equals per-task conv2d") {
    mt::Generator gen(6);
    const Tensor x = mt::normal({3, 2, 2, 5, 5}, 0, 1, gen, f64), w = mt::normal({3, 4, 2, 3, 3}, 0, 1, gen, f64);
    const Tensor y = mt::conv2d(x, w, {.padding = 1});
    for (std::int64_t t = 0; t < 3; ++t) {
      const Tensor xt = mt::squeeze(mt::slice(x, 0, t, t + 1), 0), wt = mt::squeeze(mt::slice(w, 0, t, t + 1), 0);
      const Tensor yt = mt::squeeze(mt::slice(y, 0, t, t + 1), 0);
      CHECK(mt::testing::relative_error(yt, mt::conv2d(xt, wt, {.padding = 1})) < 1e-15);
    }
  }

  TEST_CASE("max_pool2d picks each window's maximum") {
    const Tensor x =
        mt::reshape(mt::from_vector({1, 2, 5, 3, 4, 8, 7, 6, 9, 0, 1, 2, 3, 4, 5, 6}, {16}, f64), {1, 1, 4, 4});
    CHECK(mt::max_pool2d(x, {.kernel = 2}).to_vector() == std::vector<double>{8, 7, 9, 6});
    CHECK(mt::max_pool2d(x, {.kernel = 3, .stride = 1}).to_vector() == std::vector<double>{9, 8, 9, 8});
    const Tensor padded = mt::max_pool2d(mt::neg(x), {.kernel = 2, .stride = 2, .padding = 1});
    CHECK(padded.shape() == Shape{1, 1, 3, 3});
    CHECK(padded.to_vector()[0] == -1);  // padding never wins, even against negatives
    // Ties go to the first maximum (the gradient lands there), and NaN wins.
    mt::TapeScope scope;
    Tensor ties = mt::from_vector({1, 3, 3, 2}, {1, 1, 2, 2}, f64);
    ties.requires_grad_();
    CHECK(mt::grad(mt::sum(mt::max_pool2d(ties, {.kernel = 2})), ties).to_vector() == std::vector<double>{0, 1, 0, 0});
    const Tensor with_nan = mt::from_vector({1, 2, NAN, 0, 5, 6, 7, 8}, {1, 2, 2, 2}, f64);
    const auto pooled = mt::max_pool2d(with_nan, {.kernel = 2}).to_vector();
    CHECK(std::isnan(pooled[0]));
    CHECK(pooled[1] == 8);
  }

  TEST_CASE("batch_norm normalises each channel with the batch statistics") {
    mt::Generator gen(8);
    const Tensor x = mt::normal({6, 3, 4, 4}, 2.0, 3.0, gen, f64);
    const Tensor gamma = mt::from_vector({1, 2, 3}, {3}, f64), beta = mt::from_vector({0, -1, 1}, {3}, f64);
    const Tensor y = mt::batch_norm(x, gamma, beta, {.eps = 0.0});
    const Tensor m = mt::mean(y, {0, 2, 3}), v = mt::mean(mt::square(y - mt::reshape(m, {3, 1, 1})), {0, 2, 3});
    CHECK(mt::testing::relative_error(m, beta) < 1e-12);
    CHECK(mt::testing::relative_error(mt::sqrt(v), gamma) < 1e-12);
  }

  TEST_CASE("losses: cross-entropy and MSE by hand") {
    const Tensor logits = mt::from_vector({1, 2, 3, 1, 1, 1}, {2, 3}, f64);
    const Tensor labels = mt::from_indices({2, 0}, {2});
    const double l0 = -(3 - std::log(std::exp(1) + std::exp(2) + std::exp(3))), l1 = std::log(3.0);
    CHECK(mt::cross_entropy(logits, labels).item() == doctest::Approx((l0 + l1) / 2).epsilon(1e-14));
    CHECK(mt::mse_loss(mt::from_vector({1, 2}, {2}, f64), mt::from_vector({0, 4}, {2}, f64)).item() == 2.5);
    const auto sm = mt::softmax(logits, 1).to_vector();
    CHECK(sm[3] == doctest::Approx(1.0 / 3));
  }

  TEST_CASE("NaN propagates through ops and reductions") {
    const Tensor x = mt::from_vector({1.0, NAN, 3.0}, {1, 3}, f64);
    CHECK(std::isnan(mt::sum(x).item()));
    CHECK(std::isnan(mt::max(x, 1).item()));
    CHECK(std::isnan(mt::log_softmax(x, 1).to_vector()[0]));
    CHECK(std::isnan(mt::relu(x).to_vector()[1]));
  }

  TEST_CASE("str() shows dtype, shape and values") {
    CHECK(mt::from_vector({1, 2}, {2}, f64).str() == "Tensor(f64, [2]) {1, 2}");
    CHECK(Tensor().str() == "Tensor(undefined)");
  }

  // The shared test helpers (test_util.hpp): every comparison and batch in
  // the other suites goes through them.
  TEST_CASE("relative_error: joint over lists, absolute against zero, infinite on a shape mismatch") {
    using mt::testing::relative_error;
    const Tensor b = mt::from_vector({3, 4}, {2}, f64), a = mt::from_vector({3, 4.5}, {2}, f64);
    CHECK(relative_error(a, b) == doctest::Approx(0.1));
    CHECK(relative_error(b.to(DType::f32), b) == 0.0);
    // A tiny tensor 100% off weighs by its norm in the whole, not by its own error.
    const Tensor tiny = mt::from_vector({1e-3}, {1}, f64), twice = mt::from_vector({2e-3}, {1}, f64);
    CHECK(relative_error({a, twice}, {b, tiny}) == doctest::Approx(std::sqrt((0.25 + 1e-6) / (25 + 1e-6))));
    CHECK(relative_error(mt::from_vector({0, 1e-3}, {2}, f64), mt::zeros({2}, f64)) == doctest::Approx(1e-3));
    CHECK(relative_error(mt::ones({2, 3}, f64), mt::ones({3, 2}, f64)) == INFINITY);
    CHECK(relative_error({b}, {b, b}) == INFINITY);
  }

  TEST_CASE("RandomImageTasks: Conv4's shapes, labels i mod ways, pixels in [0, 1)") {
    mt::Generator gen(5);
    const auto batch = mt::testing::RandomImageTasks({.ways = 3, .channels = 2, .size = 4}).sample(2, 6, 3, gen, f64);
    CHECK(batch.support_x.shape() == Shape{2, 6, 2, 4, 4});
    CHECK(batch.query_x.shape() == Shape{2, 3, 2, 4, 4});
    CHECK(batch.support_y.dtype() == DType::i64);
    CHECK(batch.support_y.to_vector() == std::vector<double>{0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2});
    CHECK(batch.query_y.to_vector() == std::vector<double>{0, 1, 2, 0, 1, 2});
    const std::vector<double> pixels = batch.query_x.to_vector();
    CHECK(*std::min_element(pixels.begin(), pixels.end()) >= 0.0);
    CHECK(*std::max_element(pixels.begin(), pixels.end()) < 1.0);
    CHECK(mt::testing::throws_error<mt::ValueError>([] { mt::testing::RandomImageTasks({.ways = 0}); }, {"ways"}));
    CHECK(mt::testing::throws_error<mt::ValueError>(
        [&] { (void)mt::testing::RandomImageTasks().sample(1, 0, 1, gen, f64); }, {"0 support"}));
  }
}
