// metatape-demo: exact higher-order derivatives, shown and checked.
//
//   1. Derivatives of order 1 to 4 of tanh(a·x), each a grad() of the last
//      with create_graph, against their closed forms.
//   2. A Hessian-vector product of a small MLP's MSE loss by double backward,
//      against a central finite difference of gradients.
//
// Exits non-zero if either check fails, so it doubles as a smoke test.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "metatape/engine.hpp"

namespace mt = metatape;

namespace {

constexpr mt::DType f64 = mt::DType::f64;

// Closed forms: with t = tanh(a x),
//   f'   = a (1 - t²)
//   f''  = -2 a² t (1 - t²)
//   f''' = -2 a³ (1 - t²)(1 - 3t²)
//   f⁗   = 8 a⁴ t (1 - t²)(2 - 3t²)
double tanh_derivative(int order, double a, double x) {
  const double t = std::tanh(a * x), s = 1 - t * t;
  switch (order) {
    case 1:
      return a * s;
    case 2:
      return -2 * a * a * t * s;
    case 3:
      return -2 * a * a * a * s * (1 - 3 * t * t);
    default:
      return 8 * a * a * a * a * t * s * (2 - 3 * t * t);
  }
}

bool tanh_orders() {
  const double a = 3.0, x0 = 0.4;
  std::printf("1. Derivatives of tanh(%.0f x) at x = %.1f, each the grad() of the previous one\n", a, x0);
  std::printf("   %-6s %22s %22s %10s\n", "order", "metatape", "closed form", "rel. err");
  mt::TapeScope scope;
  mt::Tensor x = mt::scalar(x0, f64);
  x.requires_grad_();
  mt::Tensor f = mt::tanh(x * a);
  bool ok = true;
  for (int order = 1; order <= 4; ++order) {
    f = mt::grad(f, x, {.create_graph = true});
    const double got = f.item(), want = tanh_derivative(order, a, x0);
    const double err = std::abs(got - want) / std::max(1.0, std::abs(want));
    ok = ok && err < 1e-12;
    std::printf("   %-6d %22.15g %22.15g %10.1e\n", order, got, want, err);
  }
  return ok;
}

// loss(θ) for a 2-16-1 tanh MLP on fixed data; θ = {W1, b1, W2, b2}.
mt::Tensor mlp_loss(const std::vector<mt::Tensor>& p, const mt::Tensor& x, const mt::Tensor& y) {
  const mt::Tensor h = mt::tanh(mt::matmul(x, p[0]) + p[1]);
  return mt::mse_loss(mt::matmul(h, p[2]) + p[3], y);
}

std::vector<mt::Tensor> gradient_at(const std::vector<mt::Tensor>& theta, const mt::Tensor& x, const mt::Tensor& y) {
  mt::TapeScope scope;
  std::vector<mt::Tensor> p;
  for (const mt::Tensor& t : theta) p.push_back(t.detach().requires_grad_());
  return mt::grad(mlp_loss(p, x, y), p);
}

double norm(const std::vector<mt::Tensor>& ts) {
  double s = 0;
  for (const mt::Tensor& t : ts)
    for (double v : t.to_vector()) s += v * v;
  return std::sqrt(s);
}

bool mlp_hvp() {
  std::printf("\n2. Hessian-vector product of a 2-16-1 tanh MLP's MSE loss on 32 points (float64)\n");
  mt::Generator gen(7);
  const mt::Tensor x = mt::uniform({32, 2}, -2, 2, gen, f64);
  std::vector<double> xs = x.to_vector(), ys(32);
  for (std::size_t i = 0; i < ys.size(); ++i) ys[i] = std::sin(xs[2 * i]) * std::cos(xs[2 * i + 1]);
  const mt::Tensor y = mt::from_vector(ys, {32, 1}, f64);
  const std::vector<mt::Tensor> theta = {mt::normal({2, 16}, 0, 0.7, gen, f64), mt::normal({16}, 0, 0.1, gen, f64),
                                         mt::normal({16, 1}, 0, 0.7, gen, f64), mt::normal({1}, 0, 0.1, gen, f64)};
  std::vector<mt::Tensor> v;
  for (const mt::Tensor& t : theta) v.push_back(mt::normal(t.shape(), 0, 1, gen, f64));

  // Exact: Hv = ∇θ (∇θ L · v), the second backward through the recorded first.
  std::vector<mt::Tensor> hv;
  {
    mt::TapeScope scope;
    std::vector<mt::Tensor> p;
    for (const mt::Tensor& t : theta) p.push_back(t.detach().requires_grad_());
    const std::vector<mt::Tensor> g = mt::grad(mlp_loss(p, x, y), p, {.create_graph = true});
    mt::Tensor g_dot_v = mt::sum(g[0] * v[0]);
    for (std::size_t i = 1; i < g.size(); ++i) g_dot_v = g_dot_v + mt::sum(g[i] * v[i]);
    hv = mt::grad(g_dot_v, p);
  }

  // Reference: (∇L(θ + εv) − ∇L(θ − εv)) / 2ε, error O(ε²).
  const double eps = 1e-5;
  std::vector<mt::Tensor> plus, minus, fd;
  for (std::size_t i = 0; i < theta.size(); ++i) {
    plus.push_back(theta[i] + v[i] * eps);
    minus.push_back(theta[i] - v[i] * eps);
  }
  const std::vector<mt::Tensor> g_plus = gradient_at(plus, x, y), g_minus = gradient_at(minus, x, y);
  std::vector<mt::Tensor> diff;
  for (std::size_t i = 0; i < theta.size(); ++i) {
    fd.push_back((g_plus[i] - g_minus[i]) / (2 * eps));
    diff.push_back(hv[i] - fd[i]);
  }

  const char* names[] = {"W1", "b1", "W2", "b2"};
  std::printf("   %-8s %24s %24s\n", "entry", "double backward", "finite difference");
  for (std::size_t i = 0; i < theta.size(); ++i)
    std::printf("   %-8s %24.15g %24.15g\n", (std::string(names[i]) + "[0]").c_str(), hv[i].to_vector()[0],
                fd[i].to_vector()[0]);
  const double rel = norm(diff) / norm(fd);
  std::printf("   ||Hv|| = %.12g over %d parameters; ||Hv - FD|| / ||FD|| = %.2e (want < 1e-7)\n", norm(hv),
              2 * 16 + 16 + 16 + 1, rel);
  return rel < 1e-7;
}

}  // namespace

int main() {
  bool ok = true;
  try {
    ok = tanh_orders() && ok;
    ok = mlp_hvp() && ok;
  } catch (const mt::Error& e) {
    std::fprintf(stderr, "metatape-demo: %s\n", e.what());
    return 1;
  }
  std::printf("\n%s\n", ok ? "All checks passed." : "A CHECK FAILED.");
  return ok ? 0 : 1;
}
