// Cholesky factorisation and triangular solves: values against their
// definitions, identities, errors, and derivatives up to third order of the
// log-determinant built on them.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <vector>

#include "gradcheck.hpp"
#include "test_util.hpp"

namespace mt = metatape;
using mt::DType;
using mt::Tensor;
using mt::testing::relative_error;
using mt::testing::throws_error;

namespace {

using mt::testing::directional;

constexpr DType f64 = DType::f64;

Tensor identity(std::int64_t n, DType dtype) {
  std::vector<double> v(static_cast<std::size_t>(n * n), 0.0);
  for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i * n + i)] = 1.0;
  return mt::from_vector(v, {n, n}, dtype);
}

// M Mᵀ / n + I: symmetric positive definite, eigenvalues in [1, 1 + n].
Tensor random_spd(const mt::Shape& batch, std::int64_t n, mt::Generator& gen, DType dtype) {
  std::vector<std::int64_t> dims(batch.begin(), batch.end());
  dims.push_back(n);
  dims.push_back(n);
  const Tensor m = mt::uniform(mt::Shape(dims), -1.0, 1.0, gen, f64);
  return (mt::matmul(m, m, false, true) / static_cast<double>(n) + identity(n, f64)).to(dtype);
}

// x's entries at (r, c) of every matrix of a batch, by a host loop.
double entry(const Tensor& x, std::int64_t matrix, std::int64_t r, std::int64_t c) {
  const std::int64_t n = x.dim(x.rank() - 2), k = x.dim(x.rank() - 1);
  return x.to_vector()[static_cast<std::size_t>(matrix * n * k + r * k + c)];
}

// log det A = 2 Σ log diag L, for A read symmetrically.
Tensor logdet(const Tensor& a) {
  const Tensor l = mt::cholesky(0.5 * (a + mt::transpose(a)));
  const Tensor diag = mt::sum(l * identity(a.dim(a.rank() - 1), a.dtype()), {-1});
  return 2.0 * mt::sum(mt::log(diag));
}

// The inverse of a small matrix by Gauss-Jordan elimination with partial
// pivoting on the host: a reference independent of the code under test.
std::vector<double> host_inverse(std::vector<double> a, std::int64_t n) {
  std::vector<double> inv(static_cast<std::size_t>(n * n), 0.0);
  const auto at = [n](std::vector<double>& m, std::int64_t r, std::int64_t c) -> double& {
    return m[static_cast<std::size_t>(r * n + c)];
  };
  for (std::int64_t i = 0; i < n; ++i) at(inv, i, i) = 1.0;
  for (std::int64_t col = 0; col < n; ++col) {
    std::int64_t pivot = col;
    for (std::int64_t r = col + 1; r < n; ++r)
      if (std::fabs(at(a, r, col)) > std::fabs(at(a, pivot, col))) pivot = r;
    for (std::int64_t c = 0; c < n; ++c) {
      std::swap(at(a, col, c), at(a, pivot, c));
      std::swap(at(inv, col, c), at(inv, pivot, c));
    }
    const double p = at(a, col, col);
    for (std::int64_t c = 0; c < n; ++c) {
      at(a, col, c) /= p;
      at(inv, col, c) /= p;
    }
    for (std::int64_t r = 0; r < n; ++r) {
      if (r == col) continue;
      const double f = at(a, r, col);
      for (std::int64_t c = 0; c < n; ++c) {
        at(a, r, c) -= f * at(a, col, c);
        at(inv, r, c) -= f * at(inv, col, c);
      }
    }
  }
  return inv;
}

}  // namespace

TEST_SUITE("cholesky") {
  TEST_CASE("L Lᵀ = A, L lower triangular with a positive diagonal, single and batched, f64 and f32") {
    mt::Generator gen(11);
    for (DType dtype : {DType::f64, DType::f32}) {
      for (const mt::Shape& batch : {mt::Shape{}, mt::Shape{3}, mt::Shape{2, 2}}) {
        const Tensor a = random_spd(batch, 5, gen, dtype);
        const Tensor l = mt::cholesky(a);
        INFO("dtype " << (dtype == f64 ? "f64" : "f32") << ", batch " << batch.str());
        CHECK(l.shape() == a.shape());
        CHECK(l.dtype() == dtype);
        CHECK(relative_error(mt::matmul(l, l, false, true), a) <= (dtype == f64 ? 1e-14 : 1e-6));
        const std::int64_t count = a.numel() / 25;
        for (std::int64_t m = 0; m < count; ++m)
          for (std::int64_t r = 0; r < 5; ++r) {
            CHECK(entry(l, m, r, r) > 0);
            for (std::int64_t c = r + 1; c < 5; ++c) CHECK(entry(l, m, r, c) == 0.0);
          }
      }
    }
  }

  TEST_CASE("only the lower triangle of A is read") {
    mt::Generator gen(12);
    const Tensor a = random_spd({2}, 4, gen, f64);
    std::vector<double> v = a.to_vector();
    for (std::size_t i = 0; i < v.size(); ++i)
      if (static_cast<std::int64_t>(i) % 4 > static_cast<std::int64_t>(i) / 4 % 4) v[i] = 1e6 * (1.0 + double(i));
    const Tensor garbled = mt::from_vector(v, a.shape(), f64);
    CHECK(mt::testing::same_bits({mt::cholesky(garbled)}, {mt::cholesky(a)}));
  }

  TEST_CASE("identities: cholesky(I) = I, cholesky(diag d) = diag √d, a 1 x 1 matrix is its square root") {
    for (DType dtype : {DType::f64, DType::f32}) {
      CHECK(mt::testing::same_bits({mt::cholesky(identity(4, dtype))}, {identity(4, dtype)}));
      const Tensor d = mt::from_vector({4.0, 0, 0, 0, 9.0, 0, 0, 0, 0.25}, {3, 3}, dtype);
      const Tensor root = mt::from_vector({2.0, 0, 0, 0, 3.0, 0, 0, 0, 0.5}, {3, 3}, dtype);
      CHECK(mt::testing::same_bits({mt::cholesky(d)}, {root}));
      CHECK(mt::cholesky(mt::from_vector({2.0}, {1, 1}, dtype)).item() == doctest::Approx(std::sqrt(2.0)));
    }
    // An empty batch and 0 x 0 matrices are empty results, not errors.
    CHECK(mt::cholesky(mt::zeros({0, 3, 3}, f64)).shape() == mt::Shape{0, 3, 3});
    CHECK(mt::cholesky(mt::zeros({0, 0}, f64)).shape() == mt::Shape{0, 0});
  }

  TEST_CASE("triangular solves satisfy op(A) X = B: lower, upper, transposed, batched") {
    mt::Generator gen(13);
    for (DType dtype : {DType::f64, DType::f32}) {
      const Tensor l = mt::cholesky(random_spd({2}, 4, gen, dtype));
      const Tensor u = mt::transpose(l);
      const Tensor b = mt::uniform({2, 4, 3}, -1, 1, gen, dtype);
      const double tol = dtype == f64 ? 1e-13 : 1e-5;
      CHECK(relative_error(mt::matmul(l, mt::solve_triangular(l, b)), b) <= tol);
      CHECK(relative_error(mt::matmul(l, mt::solve_triangular(l, b, true, true), true, false), b) <= tol);
      CHECK(relative_error(mt::matmul(u, mt::solve_triangular(u, b, false)), b) <= tol);
      CHECK(relative_error(mt::matmul(u, mt::solve_triangular(u, b, false, true), true, false), b) <= tol);
      // The triangle that is not read may hold anything.
      const Tensor full_l = l + 100.0 * (u - u * identity(4, dtype));
      CHECK(mt::testing::same_bits({mt::solve_triangular(full_l, b)}, {mt::solve_triangular(l, b)}));
      CHECK(mt::testing::same_bits({mt::solve_triangular(full_l, b, true, true)},
                                   {mt::solve_triangular(l, b, true, true)}));
    }
  }

  TEST_CASE("cholesky_solve(cholesky(A), B) solves A X = B") {
    mt::Generator gen(14);
    for (DType dtype : {DType::f64, DType::f32}) {
      const Tensor a = random_spd({3}, 5, gen, dtype);
      const Tensor b = mt::uniform({3, 5, 2}, -1, 1, gen, dtype);
      const Tensor x = mt::cholesky_solve(mt::cholesky(a), b);
      CHECK(relative_error(mt::matmul(a, x), b) <= (dtype == f64 ? 1e-13 : 1e-5));
    }
  }

  TEST_CASE("bad shapes and dtypes are refused by name") {
    CHECK(throws_error<mt::ShapeError>(
        [] {
          (void)mt::cholesky(mt::ones({3, 4}, f64));
        },
        {"cholesky", "square", "[3, 4]"}));
    CHECK(throws_error<mt::ShapeError>([] { (void)mt::cholesky(mt::ones({3}, f64)); }, {"cholesky", "[3]"}));
    CHECK(throws_error<mt::DTypeError>([] { (void)mt::cholesky(mt::zeros({2, 2}, DType::i64)); }, {"cholesky"}));
    const Tensor l = identity(3, f64);
    CHECK(throws_error<mt::DTypeError>(
        [&] {
          (void)mt::solve_triangular(l, mt::ones({3, 2}, DType::f32));
        },
        {"solve_triangular"}));
    CHECK(throws_error<mt::ShapeError>(
        [&] {
          (void)mt::solve_triangular(mt::ones({2, 3, 3}, f64), mt::ones({3, 3, 1}, f64));
        },
        {"solve_triangular", "[2, 3, 3]", "[3, 3, 1]"}));
    CHECK(throws_error<mt::ShapeError>(
        [&] {
          (void)mt::solve_triangular(l, mt::ones({4, 1}, f64));
        },
        {"solve_triangular", "[3, 3]", "[4, 1]"}));
    CHECK(throws_error<mt::ShapeError>(
        [&] {
          (void)mt::solve_triangular(mt::ones({3, 2}, f64), l, false);
        },
        {"solve_triangular", "square", "[3, 2]"}));
    CHECK(throws_error<mt::ShapeError>([&] { (void)mt::cholesky_solve(l, mt::ones({3}, f64)); },
                                       {"cholesky_solve", "[3, 3]", "[3]"}));
    CHECK(throws_error<mt::ValueError>([&] { (void)mt::cholesky(Tensor()); }, {"cholesky", "undefined"}));
  }

  TEST_CASE("a matrix that is not positive definite: ValueError with its batch index, LAPACK's info and a ridge") {
    mt::Generator gen(15);
    for (DType dtype : {DType::f64, DType::f32}) {
      // Matrix 2 of 3: its leading 2 x 2 minor [[1, 2], [2, 1]] has determinant -3.
      std::vector<double> v = random_spd({3}, 3, gen, f64).to_vector();
      const double bad[] = {1, 2, 0, 2, 1, 0, 0, 0, 1};
      for (std::size_t i = 0; i < 9; ++i) v[18 + i] = bad[i];
      const Tensor a = mt::from_vector(v, {3, 3, 3}, dtype);
      CHECK(throws_error<mt::ValueError>(
          [&] { (void)mt::cholesky(a); },
          {"cholesky", "matrix 2", "[3]", "not positive definite", "order 2", "info = 2", "ridge"}));
      // Singular (positive semi-definite) and 2-D: the minor of order 3 is 0.
      const Tensor psd = mt::from_vector({1, 1, 1, 1, 1, 1, 1, 1, 1}, {3, 3}, dtype);
      CHECK(throws_error<mt::ValueError>([&] { (void)mt::cholesky(psd); },
                                         {"cholesky: the matrix", "not positive definite", "ridge"}));
      // Negative definite from the first minor on.
      CHECK(throws_error<mt::ValueError>([&] { (void)mt::cholesky(-1.0 * identity(2, dtype)); }, {"info = 1"}));
      CHECK(throws_error<mt::ValueError>(
          [&] {
            (void)mt::cholesky(mt::from_vector({NAN, 0, 0, 1}, {2, 2}, dtype));
          },
          {"cholesky", "not positive definite", "NaN", "does not help"}));
    }
  }

  TEST_CASE("the gradient of log det A = 2 Σ log diag L is A⁻¹ (symmetric A)") {
    mt::Generator gen(16);
    for (const mt::Shape& batch : {mt::Shape{}, mt::Shape{2}}) {
      Tensor a = random_spd(batch, 4, gen, f64);
      a.requires_grad_();
      mt::TapeScope scope;
      const Tensor g = mt::grad(logdet(a), a);
      const std::vector<double> av = a.to_vector();
      const std::size_t count = av.size() / 16;
      std::vector<double> expected;
      for (std::size_t m = 0; m < count; ++m) {
        const auto inv =
            host_inverse(std::vector<double>(av.begin() + long(16 * m), av.begin() + long(16 * m + 16)), 4);
        expected.insert(expected.end(), inv.begin(), inv.end());
      }
      CHECK(relative_error(g, mt::from_vector(expected, a.shape(), f64)) <= 1e-13);
    }
  }

  TEST_CASE("log det to third order: nested grads against closed forms and finite differences") {
    mt::Generator gen(17);
    const Tensor a = random_spd({}, 4, gen, f64);
    const Tensor e0 = mt::uniform({4, 4}, -1, 1, gen, f64);
    const Tensor e = 0.5 * (e0 + mt::transpose(e0));  // symmetric, so A + tE stays a valid input
    // dᵏ/dtᵏ log det(A + tE) = (-1)^(k-1) (k-1)! tr((A⁻¹E)^k).
    const Tensor p = mt::from_vector(host_inverse(a.to_vector(), 4), {4, 4}, f64) * 1.0;
    const Tensor pe = mt::matmul(p, e);
    const auto trace = [](const Tensor& m) { return mt::sum(m * identity(4, f64)).item(); };
    const double closed[] = {trace(pe), -trace(mt::matmul(pe, pe)), 2.0 * trace(mt::matmul(pe, mt::matmul(pe, pe)))};
    for (int order = 1; order <= 3; ++order) {
      INFO("order " << order);
      CHECK(directional(logdet, a, e, order) == doctest::Approx(closed[order - 1]).epsilon(1e-11));
    }
    // The third derivative against a central difference of the second.
    const double h = 1e-4;
    const double fd = (directional(logdet, a + h * e, e, 2) - directional(logdet, a - h * e, e, 2)) / (2 * h);
    CHECK(directional(logdet, a, e, 3) == doctest::Approx(fd).epsilon(1e-6));
  }

  TEST_CASE("gradgradcheck of ∇ log det (third derivatives) and of cholesky_solve with respect to A and B") {
    mt::Generator gen(18);
    const Tensor a = random_spd({2}, 3, gen, f64);
    // The finite differences call it on plain tensors, the checked backward
    // on live ones: a plain input becomes a variable of its own.
    const mt::testing::Function grad_logdet = [](const std::vector<Tensor>& in) {
      Tensor x = in[0];
      if (!x.requires_grad()) x = x.detach().requires_grad_();
      return std::vector<Tensor>{mt::grad(logdet(x), x, {.create_graph = true})};
    };
    const auto r1 = mt::testing::gradgradcheck(grad_logdet, {a}, {true});
    CHECK_MESSAGE(r1.ok, r1.message);
    const Tensor b = mt::uniform({2, 3, 2}, -1, 1, gen, f64);
    const mt::testing::Function solve = [](const std::vector<Tensor>& in) {
      return std::vector<Tensor>{mt::cholesky_solve(mt::cholesky(0.5 * (in[0] + mt::transpose(in[0]))), in[1])};
    };
    const auto r2 = mt::testing::gradgradcheck(solve, {a, b}, {true, true});
    CHECK_MESSAGE(r2.ok, r2.message);
  }
}
