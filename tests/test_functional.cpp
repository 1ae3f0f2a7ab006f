// The functional transforms: each against central finite differences in
// float64, against each other (they compute the same derivatives by different
// routes), on list inputs, recorded for further differentiation, and their
// errors.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>

#include "gradcheck.hpp"
#include "metatape/functional.hpp"
#include "test_util.hpp"

namespace mt = metatape;
using mt::DType;
using mt::Tensor;
using Tensors = std::vector<Tensor>;

namespace {

constexpr DType f64 = DType::f64;
constexpr double kFdTol = 1e-7;     // central differences, eps 1e-6: O(eps²) + rounding/eps
constexpr double kSameTol = 1e-12;  // two exact routes to one derivative

// Deterministic, irregular values, so no entry is special.
Tensor values(const mt::Shape& shape, double phase) {
  std::vector<double> v(static_cast<std::size_t>(shape.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.8 * std::sin(1.7 * static_cast<double>(i) + phase) + 0.1;
  return mt::from_vector(v, shape, f64);
}

// Built on each call: a static Tensor would outlive the thread's storage pool.
Tensor W() { return values({3, 4}, 0.3); }
Tensor V() { return values({3, 4}, 1.1); }

// R^{2x3} -> R^{2x4}: tanh, matmul, log_softmax, exp.
Tensor f1(const Tensor& x) {
  return mt::log_softmax(mt::matmul(mt::tanh(x), W()), -1) * mt::exp(mt::matmul(x, V()) * 0.3);
}

// R^{2x3} -> R, with a Hessian that is neither diagonal nor constant.
Tensor s1(const Tensor& x) {
  return mt::sum(mt::log_softmax(mt::matmul(x, W()), -1) * values({2, 4}, 2.0)) +
         mt::sum(mt::exp(x * 0.5) * mt::tanh(x));
}

Tensor gradient_of_s1(const Tensor& x) {  // x must be live: inside a transform it is
  return mt::grad(s1(x), x, {.create_graph = true});
}

// Central differences of g at x: an m × n matrix, row-major (m = numel g(x)).
std::vector<double> fd_jacobian(const std::function<Tensor(const Tensor&)>& g, const Tensor& x, double eps = 1e-6) {
  mt::TapeScope scope;  // g may record (a transform inside it)
  const std::vector<double> base = x.to_vector();
  const std::size_t n = base.size();
  const std::size_t m = static_cast<std::size_t>(g(x).numel());
  std::vector<double> jac(m * n);
  for (std::size_t j = 0; j < n; ++j) {
    std::vector<double> plus = base, minus = base;
    plus[j] += eps;
    minus[j] -= eps;
    const std::vector<double> yp = g(mt::from_vector(plus, x.shape(), f64)).to_vector();
    const std::vector<double> ym = g(mt::from_vector(minus, x.shape(), f64)).to_vector();
    for (std::size_t r = 0; r < m; ++r) jac[r * n + j] = (yp[r] - ym[r]) / (2 * eps);
  }
  return jac;
}

Tensor as_matrix(const std::vector<double>& values, std::int64_t rows, std::int64_t cols) {
  return mt::from_vector(values, {rows, cols}, f64);
}

using mt::testing::relative_error;

// J (as shape_out ++ shape_in) times a vector shaped like the input.
Tensor contract_input(const Tensor& jac, const Tensor& v) {
  const Tensor flat = mt::reshape(jac, {-1, v.numel()});
  return mt::reshape(mt::matmul(flat, mt::reshape(v, {v.numel(), 1})), {flat.dim(0)});
}

// uᵀ J for u shaped like the output.
Tensor contract_output(const Tensor& jac, const Tensor& u) {
  const Tensor flat = mt::reshape(jac, {u.numel(), -1});
  return mt::reshape(mt::matmul(mt::reshape(u, {1, u.numel()}), flat), {flat.dim(1)});
}

// The point every single-primal test differentiates at.
Tensor x0() { return values({2, 3}, 0.0); }

}  // namespace

TEST_SUITE("functional") {
  TEST_CASE("jacobian has shape out ++ in and matches central differences") {
    const Tensor jac = mt::jacobian(f1, x0());
    CHECK(jac.shape() == mt::Shape{2, 4, 2, 3});
    CHECK_FALSE(jac.requires_grad());
    CHECK(relative_error(mt::reshape(jac, {8, 6}), as_matrix(fd_jacobian(f1, x0()), 8, 6)) < kFdTol);

    const Tensor flat = mt::jacobian(f1, x0(), {.flatten = true});
    CHECK(flat.shape() == mt::Shape{8, 6});
    CHECK(relative_error(flat, mt::reshape(jac, {8, 6})) == 0.0);

    // Scalar in, scalar out: the derivative itself, rank 0.
    const Tensor d = mt::jacobian([](const Tensor& t) { return mt::tanh(t * 2.0); }, mt::scalar(0.3, f64));
    CHECK(d.rank() == 0);
    CHECK(d.item() == doctest::Approx(2 * (1 - std::pow(std::tanh(0.6), 2))).epsilon(1e-14));
  }

  TEST_CASE("vjp and jvp match central differences and the Jacobian") {
    const Tensor u = values({2, 4}, 0.7), t = values({2, 3}, 1.9);
    const Tensor fd = as_matrix(fd_jacobian(f1, x0()), 8, 6);
    const auto [y, vj] = mt::vjp(f1, x0(), u);
    const auto [y2, jv] = mt::jvp(f1, x0(), t);
    CHECK(relative_error(y, f1(x0())) == 0.0);
    CHECK(relative_error(y2, f1(x0())) == 0.0);
    CHECK(vj.shape() == x0().shape());
    CHECK(jv.shape() == y.shape());
    CHECK(relative_error(mt::reshape(vj, {6}), contract_output(fd, u)) < kFdTol);
    CHECK(relative_error(mt::reshape(jv, {8}), contract_input(fd, t)) < kFdTol);

    const Tensor jac = mt::jacobian(f1, x0());
    CHECK(relative_error(mt::reshape(vj, {6}), contract_output(jac, u)) < kSameTol);
    CHECK(relative_error(mt::reshape(jv, {8}), contract_input(jac, t)) < kSameTol);
  }

  TEST_CASE("hvp and hessian match finite differences of the gradient and each other") {
    const Tensor v = values({2, 3}, 0.4);
    const auto grad_s1 = [](const Tensor& x) {
      Tensor leaf = x.detach();
      leaf.requires_grad_();
      return mt::grad(s1(leaf), leaf);
    };
    const Tensor fd = as_matrix(fd_jacobian(grad_s1, x0()), 6, 6);

    const Tensor h = mt::hessian(s1, x0());
    CHECK(h.shape() == mt::Shape{2, 3, 2, 3});
    const Tensor hm = mt::reshape(h, {6, 6});
    CHECK(relative_error(hm, fd) < kFdTol);
    CHECK(relative_error(hm, mt::transpose(hm)) < kSameTol);  // symmetric

    const auto [value, hv] = mt::hvp(s1, x0(), v);
    CHECK(value.item() == doctest::Approx(s1(x0()).item()).epsilon(1e-15));
    CHECK(hv.shape() == x0().shape());
    CHECK(relative_error(mt::reshape(hv, {6}), contract_input(fd, v)) < kFdTol);
    CHECK(relative_error(mt::reshape(hv, {6}), contract_input(h, v)) < kSameTol);
  }

  TEST_CASE("nested transforms: jvp of the gradient is hvp, jacobian of the gradient is hessian") {
    const Tensor v = values({2, 3}, 0.4);
    const Tensor hv = mt::hvp(s1, x0(), v).hvp;
    CHECK(relative_error(mt::jvp(gradient_of_s1, x0(), v).jvp, hv) < kSameTol);
    CHECK(relative_error(mt::jacobian(gradient_of_s1, x0()), mt::hessian(s1, x0())) < kSameTol);
    // The gradient as a vjp with seed 1, recorded, then differentiated again.
    const auto grad_by_vjp = [](const Tensor& x) {
      return mt::vjp(s1, x, mt::scalar(1.0, f64), {.create_graph = true}).vjp;
    };
    CHECK(relative_error(mt::jacobian(grad_by_vjp, x0()), mt::hessian(s1, x0())) < kSameTol);
  }

  TEST_CASE("list forms: parameters of a model, and several outputs") {
    const Tensor inputs = values({4, 3}, 0.9), targets = values({4, 2}, 1.3);
    const auto model = [&](const Tensors& p) { return mt::tanh(mt::matmul(inputs, p[0]) + p[1]); };
    const auto loss = [&](const Tensors& p) { return mt::sum(mt::log_softmax(model(p), -1) * targets); };
    const Tensors params = {values({3, 2}, 0.2), values({2}, 2.5)};
    const Tensors dirs = {values({3, 2}, 3.1), values({2}, 0.6)};
    const Tensor cot = values({4, 2}, 1.7);

    // Each block against differences in its own primal, the other fixed.
    const Tensors jac = mt::jacobian(model, params);
    REQUIRE(jac.size() == 2);
    CHECK(jac[0].shape() == mt::Shape{4, 2, 3, 2});
    CHECK(jac[1].shape() == mt::Shape{4, 2, 2});
    const auto vary = [&](int i) {
      return [&, i](const Tensor& p) {
        Tensors q = params;
        q[static_cast<std::size_t>(i)] = p;
        return model(q);
      };
    };
    CHECK(relative_error(mt::reshape(jac[0], {8, 6}), as_matrix(fd_jacobian(vary(0), params[0]), 8, 6)) < kFdTol);
    CHECK(relative_error(mt::reshape(jac[1], {8, 2}), as_matrix(fd_jacobian(vary(1), params[1]), 8, 2)) < kFdTol);

    const auto [y, vj] = mt::vjp(model, params, cot);
    CHECK(relative_error(vj[0], mt::reshape(contract_output(jac[0], cot), {3, 2})) < kSameTol);
    CHECK(relative_error(vj[1], contract_output(jac[1], cot)) < kSameTol);
    const Tensor jv = mt::jvp(model, params, dirs).jvp;
    const Tensor expected_jv = contract_input(jac[0], dirs[0]) + contract_input(jac[1], dirs[1]);
    CHECK(relative_error(mt::reshape(jv, {8}), expected_jv) < kSameTol);

    const auto hess = mt::hessian(loss, params);
    REQUIRE(hess.size() == 2);
    CHECK(hess[0][1].shape() == mt::Shape{3, 2, 2});
    CHECK(hess[1][0].shape() == mt::Shape{2, 3, 2});
    CHECK(relative_error(mt::reshape(hess[0][1], {6, 2}), mt::transpose(mt::reshape(hess[1][0], {2, 6}))) < kSameTol);
    const Tensors hv = mt::hvp(loss, params, dirs).hvp;
    for (std::size_t i = 0; i < 2; ++i) {
      const Tensor expected = contract_input(hess[i][0], dirs[0]) + contract_input(hess[i][1], dirs[1]);
      CHECK(relative_error(mt::reshape(hv[i], {-1}), expected) < kSameTol);
    }
  }

  TEST_CASE("several outputs: blocks[k][i], vjp sums over outputs, jvp gives one per output") {
    const auto f = [](const Tensors& p) {
      const Tensor& a = p[0];
      const Tensor& b = p[1];
      return Tensors{mt::tanh(mt::matmul(b, mt::reshape(a, {3, 1}))), mt::exp(a) * mt::sum(b, {0})};
    };
    const Tensors primals = {values({3}, 0.5), values({2, 3}, 1.5)};
    const auto blocks = mt::jacobian(f, primals);
    REQUIRE(blocks.size() == 2);
    CHECK(blocks[0][0].shape() == mt::Shape{2, 1, 3});
    CHECK(blocks[0][1].shape() == mt::Shape{2, 1, 2, 3});
    CHECK(blocks[1][0].shape() == mt::Shape{3, 3});
    CHECK(blocks[1][1].shape() == mt::Shape{3, 2, 3});
    const auto out0_of_b = [&](const Tensor& b) { return f({primals[0], b})[0]; };
    CHECK(relative_error(mt::reshape(blocks[0][1], {2, 6}), as_matrix(fd_jacobian(out0_of_b, primals[1]), 2, 6)) <
          kFdTol);

    const Tensors cots = {values({2, 1}, 0.1), values({3}, 0.2)};
    const Tensors vj = mt::vjp(f, primals, cots).vjp;
    const Tensor vj_a = contract_output(blocks[0][0], cots[0]) + contract_output(blocks[1][0], cots[1]);
    CHECK(relative_error(vj[0], vj_a) < kSameTol);
    const Tensors tans = {values({3}, 0.3), values({2, 3}, 0.4)};
    const Tensors jv = mt::jvp(f, primals, tans).jvp;
    REQUIRE(jv.size() == 2);
    const Tensor jv1 = contract_input(blocks[1][0], tans[0]) + contract_input(blocks[1][1], tans[1]);
    CHECK(relative_error(jv[1], jv1) < kSameTol);
  }

  TEST_CASE("the forward strategy gives the reverse strategy's Jacobian, column by column") {
    const mt::FunctionalOptions forward{.strategy = mt::JacobianStrategy::forward};
    CHECK(relative_error(mt::jacobian(f1, x0(), forward), mt::jacobian(f1, x0())) < kSameTol);
    CHECK(relative_error(mt::jacobian(gradient_of_s1, x0(), forward), mt::hessian(s1, x0())) < kSameTol);
    const auto f = [](const Tensors& p) {
      return Tensors{mt::tanh(mt::matmul(p[1], mt::reshape(p[0], {3, 1}))), mt::exp(p[0]), mt::ones({2}, f64)};
    };
    const Tensors primals = {values({3}, 0.5), values({2, 3}, 1.5)};
    const auto by_rows = mt::jacobian(f, primals);
    const auto by_columns = mt::jacobian(f, primals, {.flatten = true, .strategy = mt::JacobianStrategy::forward});
    for (std::size_t k = 0; k < 3; ++k) {
      for (std::size_t i = 0; i < 2; ++i) {
        INFO("block " << k << ", " << i);
        CHECK(by_columns[k][i].shape() == mt::Shape{by_rows[k][i].numel() / primals[i].numel(), primals[i].numel()});
        CHECK(mt::sum(mt::abs(mt::reshape(by_rows[k][i], {-1}) - mt::reshape(by_columns[k][i], {-1}))).item() < 1e-14);
      }
    }
  }

  TEST_CASE("only f's argument is differentiated, not a live tensor f closes over") {
    mt::TapeScope scope;
    Tensor x = x0().detach();
    x.requires_grad_();
    // f(p) = p * x at p = x: the Jacobian is diag(x), not diag(2x), even recorded.
    const auto f = [&](const Tensor& p) { return p * x; };
    const Tensor expected = mt::reshape(mt::jacobian(f, x0()), {6, 6});
    for (bool cg : {false, true}) {
      INFO("create_graph " << cg);
      const Tensor jac = mt::reshape(mt::jacobian(f, x, {.create_graph = cg}), {6, 6});
      CHECK(relative_error(jac, expected) == 0.0);
      std::vector<double> diag(6);
      for (std::size_t i = 0; i < 6; ++i) diag[i] = jac.to_vector()[i * 7];
      CHECK(relative_error(mt::from_vector(diag, {2, 3}, f64), x0()) == 0.0);
    }
  }

  TEST_CASE("an output that does not depend on a primal has a zero block") {
    const auto f = [](const Tensors& p) { return Tensors{mt::tanh(p[0]), mt::ones({2}, f64)}; };
    const Tensors primals = {values({3}, 0.5), values({2}, 1.0)};
    const auto blocks = mt::jacobian(f, primals);
    CHECK(mt::sum(mt::abs(blocks[0][1])).item() == 0.0);
    CHECK(mt::sum(mt::abs(blocks[1][0])).item() == 0.0);
    CHECK(mt::sum(mt::abs(blocks[0][0])).item() > 0.0);
    // Linear f: the gradient is a constant, the Hessian zero.
    const auto linear = [](const Tensor& x) { return mt::sum(x * 3.0); };
    CHECK(mt::sum(mt::abs(mt::hessian(linear, x0()))).item() == 0.0);
    CHECK(mt::sum(mt::abs(mt::hvp(linear, x0(), x0()).hvp)).item() == 0.0);
    CHECK(relative_error(mt::jvp([](const Tensor& x) { return x; }, x0(), values({2, 3}, 4.0)).jvp,
                         values({2, 3}, 4.0)) == 0.0);
  }

  TEST_CASE("with create_graph the results are differentiable again: third order") {
    const Tensor v = values({2, 3}, 0.4), w = values({2, 3}, 2.2);
    // x ↦ ⟨H(x) v, w⟩ and its gradient Σ ∂³s v w, through hvp's record.
    const auto contracted = [&](const Tensor& x, bool create_graph) {
      return mt::sum(mt::hvp(s1, x, v, {.create_graph = create_graph}).hvp * w);
    };
    mt::TapeScope scope;
    Tensor x = x0().detach();
    x.requires_grad_();
    const Tensor third = mt::grad(contracted(x, true), x);
    const Tensor fd = as_matrix(fd_jacobian([&](const Tensor& p) { return contracted(p, false); }, x0()), 1, 6);
    CHECK(relative_error(mt::reshape(third, {1, 6}), fd) < kFdTol);

    // hvp is linear in v: its derivative along a live v is H w.
    Tensor vv = v.detach();
    vv.requires_grad_();
    const Tensor by_v = mt::grad(mt::sum(mt::hvp(s1, x0(), vv, {.create_graph = true}).hvp * w), vv);
    CHECK(relative_error(by_v, mt::hvp(s1, x0(), w).hvp) < kSameTol);
  }

  TEST_CASE("with create_graph: jvp inside grad, jacobian and hessian inside grad") {
    const Tensor t = values({2, 3}, 1.9), r8 = values({2, 4}, 0.8), r6 = values({2, 3, 2, 3}, 0.6);
    struct Case {
      const char* name;
      std::function<Tensor(const Tensor&, bool)> g;
    };
    const Case cases[] = {
        {"jvp", [&](const Tensor& x, bool cg) { return mt::sum(mt::jvp(f1, x, t, {.create_graph = cg}).jvp * r8); }},
        {"vjp", [&](const Tensor& x, bool cg) { return mt::sum(mt::vjp(f1, x, r8, {.create_graph = cg}).vjp * t); }},
        {"jacobian",
         [&](const Tensor& x, bool cg) { return mt::sum(mt::square(mt::jacobian(f1, x, {.create_graph = cg}))); }},
        {"jacobian, forward",
         [&](const Tensor& x, bool cg) {
           const mt::FunctionalOptions o{.create_graph = cg, .strategy = mt::JacobianStrategy::forward};
           return mt::sum(mt::square(mt::jacobian(f1, x, o)));
         }},
        {"hessian", [&](const Tensor& x, bool cg) { return mt::sum(mt::hessian(s1, x, {.create_graph = cg}) * r6); }},
    };
    for (const Case& c : cases) {
      INFO(c.name);
      mt::TapeScope scope;
      Tensor x = x0().detach();
      x.requires_grad_();
      const Tensor g = mt::grad(c.g(x, true), x);
      const Tensor fd = as_matrix(fd_jacobian([&](const Tensor& p) { return c.g(p, false); }, x0()), 1, 6);
      CHECK(relative_error(mt::reshape(g, {1, 6}), fd) < kFdTol);
    }
  }

  TEST_CASE("the empirical-NTK pattern: a Jacobian over a parameter list, recorded, differentiated") {
    const Tensor inputs = values({3, 2}, 0.9);
    const auto model_at = [&](const Tensor& w, const Tensor& b) { return mt::tanh(mt::matmul(inputs, w) + b); };
    // The trace of J Jᵀ, a function of the parameters, and its gradient.
    const auto trace = [&](const Tensor& w, const Tensor& b, bool cg) {
      const Tensors jac =
          mt::jacobian([&](const Tensors& p) { return model_at(p[0], p[1]); }, {w, b}, {.create_graph = cg});
      return mt::sum(mt::square(jac[0])) + mt::sum(mt::square(jac[1]));
    };
    const Tensor w0 = values({2, 2}, 0.1), b0 = values({2}, 0.7);
    mt::TapeScope scope;
    Tensor w = w0.detach(), b = b0.detach();
    w.requires_grad_();
    b.requires_grad_();
    const Tensors g = mt::grad(trace(w, b, true), {w, b});
    const Tensor fd_w = as_matrix(fd_jacobian([&](const Tensor& p) { return trace(p, b0, false); }, w0), 1, 4);
    const Tensor fd_b = as_matrix(fd_jacobian([&](const Tensor& p) { return trace(w0, p, false); }, b0), 1, 2);
    CHECK(relative_error(mt::reshape(g[0], {1, 4}), fd_w) < kFdTol);
    CHECK(relative_error(mt::reshape(g[1], {1, 2}), fd_b) < kFdTol);
  }

  TEST_CASE("what a transform records is released unless create_graph; results detached") {
    const Tensor v = values({2, 3}, 0.4);
    mt::TapeScope scope;
    Tensor x = x0().detach();
    x.requires_grad_();
    const std::size_t before = mt::tape_stats().nodes;
    const auto [y, vj] = mt::vjp(f1, x, values({2, 4}, 0.7));
    const auto [y2, jv] = mt::jvp(f1, x, v);
    const auto [s, hv] = mt::hvp(s1, x, v);
    const Tensor jac = mt::jacobian(f1, x);
    const Tensor hes = mt::hessian(s1, x);
    CHECK(mt::tape_stats().nodes == before);
    for (const Tensor* t : {&y, &vj, &y2, &jv, &s, &hv, &jac, &hes}) CHECK_FALSE(t->requires_grad());

    const Tensor recorded = mt::hvp(s1, x, v, {.create_graph = true}).hvp;
    CHECK(recorded.requires_grad());
    CHECK(mt::tape_stats().nodes > before);
  }

  TEST_CASE("transforms work under NoGradScope and leave it on") {
    const Tensor v = values({2, 3}, 0.4);
    const Tensor expected = mt::hvp(s1, x0(), v).hvp;
    mt::NoGradScope no_grad;
    CHECK(relative_error(mt::hvp(s1, x0(), v).hvp, expected) == 0.0);
    CHECK(mt::jacobian(f1, x0()).shape() == mt::Shape{2, 4, 2, 3});
    CHECK_FALSE(mt::grad_enabled());
  }

  TEST_CASE("float32 primals give float32 derivatives") {
    const Tensor x = x0().to(DType::f32);
    const auto f = [](const Tensor& t) { return mt::sum(mt::tanh(t) * t); };
    const Tensor h = mt::hessian(f, x);
    CHECK(h.dtype() == DType::f32);
    CHECK(relative_error(h.to(f64), mt::hessian(f, x0())) < 1e-5);
  }

  TEST_CASE("bad arguments: typed errors naming the argument and both shapes") {
    const Tensor x = values({2, 3}, 0.0);
    CHECK_THROWS_WITH_AS((void)mt::vjp(f1, x, mt::ones({2, 3}, f64)),
                         "vjp: cotangent 0 has shape [2, 3] but output 0 of f has shape [2, 4]", mt::ShapeError);
    CHECK_THROWS_WITH_AS((void)mt::jvp(f1, x, mt::ones({3, 2}, f64)),
                         "jvp: tangent 0 has shape [3, 2] but primal 0 has shape [2, 3]", mt::ShapeError);
    CHECK_THROWS_WITH_AS((void)mt::hvp(s1, x, mt::ones({6}, f64)),
                         "hvp: v 0 has shape [6] but primal 0 has shape [2, 3]", mt::ShapeError);
    CHECK_THROWS_WITH_AS((void)mt::hvp(f1, x, x),
                         "hvp: f must return a scalar (one element), but it returned shape [2, 4]", mt::ShapeError);
    CHECK_THROWS_WITH_AS((void)mt::hessian(f1, x),
                         "hessian: f must return a scalar (one element), but it returned shape [2, 4]", mt::ShapeError);
    CHECK_THROWS_WITH_AS((void)mt::jvp(f1, x, x.to(DType::f32)), "jvp: tangent 0 is f32 but primal 0 is f64",
                         mt::DTypeError);
    CHECK_THROWS_WITH_AS((void)mt::vjp(f1, x, mt::ones({2, 4}, DType::f32)),
                         "vjp: cotangent 0 is f32 but output 0 of f is f64", mt::DTypeError);
    CHECK_THROWS_WITH_AS((void)mt::jacobian(f1, mt::from_indices({1, 2}, {2})),
                         "jacobian: primal 0 is i64; only f32 and f64 tensors can be differentiated", mt::DTypeError);
    CHECK_THROWS_WITH_AS((void)mt::jacobian(f1, Tensor{}), "jacobian: primal 0 is an undefined tensor", mt::ValueError);
    CHECK_THROWS_WITH_AS((void)mt::vjp(f1, x, Tensor{}), "vjp: cotangent 0 is an undefined tensor", mt::ValueError);
    CHECK_THROWS_WITH_AS((void)mt::jacobian([](const Tensor&) { return Tensor{}; }, x),
                         "jacobian: output 0 of f is an undefined tensor", mt::ValueError);
    CHECK_THROWS_WITH_AS((void)mt::jacobian(mt::TensorFn{}, x), "jacobian: f is an empty function", mt::ValueError);
    CHECK_THROWS_WITH_AS((void)mt::hessian(mt::TensorListToTensorFn{}, {x}), "hessian: f is an empty function",
                         mt::ValueError);
    CHECK_THROWS_WITH_AS((void)mt::jacobian([](const Tensors& p) { return mt::sum(p[0]); }, Tensors{}),
                         "jacobian: no primals given", mt::ValueError);
    const auto two = [](const Tensors& p) { return Tensors{p[0], p[0]}; };
    CHECK_THROWS_WITH_AS((void)mt::vjp(two, {x}, {x}), "vjp: 1 cotangent(s) given for 2 output(s)", mt::ValueError);
    CHECK_THROWS_WITH_AS((void)mt::jvp(two, {x}, {x, x}), "jvp: 2 tangent(s) given for 1 primal(s)", mt::ValueError);

    const Tensor big = mt::ones({2, 2, 3}, f64);
    CHECK_THROWS_WITH_AS((void)mt::jacobian([](const Tensor& t) { return mt::tanh(t); }, big),
                         doctest::Contains("jacobian: the block of output 0 of f (shape [2, 2, 3]) and primal 0 (shape "
                                           "[2, 2, 3]) would have rank 6"),
                         mt::ShapeError);
    CHECK(mt::jacobian([](const Tensor& t) { return mt::tanh(t); }, big, {.flatten = true}).shape() ==
          mt::Shape{12, 12});
    // Nothing recorded by a transform that threw survives it.
    const std::size_t nodes = mt::tape_stats().nodes;
    CHECK_THROWS_AS((void)mt::vjp(f1, x, mt::ones({2, 3}, f64)), mt::ShapeError);
    CHECK(mt::tape_stats().nodes == nodes);
  }
}
