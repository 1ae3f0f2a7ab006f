// The kernel figures against libtorch (part of bench-maml-libtorch; run with
// --only ntk or --only hvp), same parameters and points (maml_setups.hpp's
// mlp_points: the sinusoid MLP 1-40-40-1 ReLU on 100 inputs), one run, float32
// and float64:
//
//   empirical NTK Θ(x, x) (one output, so trace = full = J Jᵀ)
//     metatape                     meta::empirical_ntk: per-sample gradients
//                                  in one batched pass (docs/methods.md §5)
//     libtorch per input           what the issue names: for each input, a
//                                  forward and torch::autograd::grad of f(x_i)
//                                  w.r.t. the parameters, rows stacked into J
//     libtorch 1 fwd + 100 bwd     one forward of all inputs, then one grad per
//                                  output through it (retain_graph)
//     libtorch per-sample batched  libtorch's best without vmap (not in the
//                                  1.13 C++ API): parameters expanded to one
//                                  copy per input, one baddbmm forward, one
//                                  backward gives every row — metatape's own
//                                  algorithm, written in libtorch
//   Hessian-vector product of the MSE on those points over the parameters
//     metatape                     metatape::hvp (list form): reverse over
//                                  reverse
//     libtorch double backward     grad with create_graph, then grad of Σ g·v
//
// Each row: the medians over the repeats of wall-clock and process CPU time
// in ms, how many times metatape's each is, and the relative error of the
// libtorch result against metatape's in the same dtype.
#include <cstdio>

#include "libtorch_common.hpp"
#include "maml_setups.hpp"
#include "metatape/functional.hpp"
#include "metatape/meta/ntk.hpp"

namespace bench {

namespace mt = metatape;
namespace meta = metatape::meta;

namespace {

TorchList leaves(const TorchList& params) {
  TorchList out;
  for (const auto& p : params) out.push_back(p.detach().requires_grad_());
  return out;
}

// One row of J: the gradients flattened and concatenated in parameter order.
torch::Tensor flat_row(const TorchList& grads) {
  TorchList flat;
  for (const auto& g : grads) flat.push_back(g.reshape({-1}));
  return torch::cat(flat);
}

// x [n, 1] -> Θ [n, n].
torch::Tensor ntk_per_input(const TorchList& params, const torch::Tensor& x) {
  const TorchList p = leaves(params);
  TorchList rows;
  for (std::int64_t i = 0; i < x.size(0); ++i) {
    const auto f = mlp(p, x.slice(0, i, i + 1));
    rows.push_back(flat_row(torch::autograd::grad({f.sum()}, p)));
  }
  const auto j = torch::stack(rows);
  return j.mm(j.t());
}

torch::Tensor ntk_one_forward(const TorchList& params, const torch::Tensor& x) {
  const TorchList p = leaves(params);
  const auto f = mlp(p, x);
  TorchList rows;
  for (std::int64_t i = 0; i < x.size(0); ++i)
    rows.push_back(flat_row(torch::autograd::grad({f[i][0]}, p, {}, /*retain_graph=*/true)));
  const auto j = torch::stack(rows);
  return j.mm(j.t());
}

torch::Tensor ntk_per_sample_batched(const TorchList& params, const torch::Tensor& x) {
  const TorchList p = leaves(params);
  const std::int64_t n = x.size(0);
  // Weights [n, in, out], biases [n, 1, out]: one copy per input, so that
  // the gradient of Σ_i f(x_i) with respect to copy i is row i of J.
  TorchList copies;
  for (const auto& w : p)
    copies.push_back(w.dim() == 1 ? w.reshape({1, 1, -1}).expand({n, 1, w.size(0)})
                                  : w.unsqueeze(0).expand({n, w.size(0), w.size(1)}));
  const auto f = mlp_batched(copies, x.reshape({n, 1, 1}));
  TorchList blocks;
  for (const auto& g : torch::autograd::grad({f.sum()}, copies)) blocks.push_back(g.reshape({n, -1}));
  const auto j = torch::cat(blocks, 1);
  return j.mm(j.t());
}

TorchList hvp_double_backward(const TorchList& params, const torch::Tensor& x, const torch::Tensor& y,
                              const TorchList& v) {
  const TorchList p = leaves(params);
  const auto g = torch::autograd::grad({torch::mse_loss(mlp(p, x), y)}, p, {}, true, /*create_graph=*/true);
  auto gv = (g[0] * v[0]).sum();
  for (std::size_t k = 1; k < g.size(); ++k) gv = gv + (g[k] * v[k]).sum();
  return torch::autograd::grad({gv}, p);
}

const char* dtype_label(mt::DType dtype) { return dtype == mt::DType::f64 ? "float64" : "float32"; }

void print_header(const char* what, int repeats) {
  std::printf("\n%s: 1 thread, medians of %d runs, ms\n", what, repeats);
  std::printf("%-8s %-30s %10s %9s %10s %9s %10s\n", "dtype", "implementation", "wall", "vs ours", "cpu", "vs ours",
              "rel err");
}

void print_ours(mt::DType dtype, Timing ours) {
  std::printf("%-8s %-30s %10.3f %9s %10.3f\n", dtype_label(dtype), "metatape", ours.wall_ms, "", ours.cpu_ms);
  std::fflush(stdout);
}

void print_row(mt::DType dtype, const char* name, Timing t, Timing ours, double error) {
  std::printf("%-8s %-30s %10.3f %8.1fx %10.3f %8.1fx %10.1e\n", dtype_label(dtype), name, t.wall_ms,
              t.wall_ms / ours.wall_ms, t.cpu_ms, t.cpu_ms / ours.cpu_ms, error);
  std::fflush(stdout);
}

}  // namespace

void compare_ntk(int repeats) {
  print_header("empirical NTK, MLP 1-40-40-1 ReLU, 100 inputs (trace = full, 1 output)", repeats);
  using Variant = torch::Tensor (*)(const TorchList&, const torch::Tensor&);
  const std::pair<const char*, Variant> variants[] = {{"libtorch per input", ntk_per_input},
                                                      {"libtorch 1 fwd + 100 bwd", ntk_one_forward},
                                                      {"libtorch per-sample batched", ntk_per_sample_batched}};
  for (const mt::DType dtype : {mt::DType::f32, mt::DType::f64}) {
    const MlpPoints points = mlp_points(dtype);
    const meta::NtkOptions options{.mode = meta::KernelMode::trace};
    const TorchList params = to_torch(points.params);
    const torch::Tensor x = to_torch(points.x);
    const mt::Tensor reference = meta::empirical_ntk(*points.model, points.params, points.x, options);
    const Timing ours =
        median_times([&] { (void)meta::empirical_ntk(*points.model, points.params, points.x, options); }, repeats);
    print_ours(dtype, ours);
    for (const auto& [name, ntk] : variants) {
      const double error = mt::testing::relative_error(from_torch({ntk(params, x)}), {reference});
      print_row(dtype, name, median_times([&] { (void)ntk(params, x); }, repeats), ours, error);
    }
  }
}

void compare_hvp(int repeats) {
  print_header("Hessian-vector product of the MSE of MLP 1-40-40-1 ReLU on 100 points", repeats);
  for (const mt::DType dtype : {mt::DType::f32, mt::DType::f64}) {
    const MlpPoints points = mlp_points(dtype);
    const mt::TensorListToTensorFn loss = [&](const std::vector<mt::Tensor>& p) { return mlp_points_loss(points, p); };
    const TorchList params = to_torch(points.params), v = to_torch(points.v);
    const torch::Tensor x = to_torch(points.x), y = to_torch(points.y);
    const std::vector<mt::Tensor> reference = mt::hvp(loss, points.params, points.v).hvp;
    const Timing ours = median_times([&] { (void)mt::hvp(loss, points.params, points.v); }, repeats);
    print_ours(dtype, ours);
    const double error = mt::testing::relative_error(from_torch(hvp_double_backward(params, x, y, v)), reference);
    print_row(dtype, "libtorch double backward",
              median_times([&] { (void)hvp_double_backward(params, x, y, v); }, repeats), ours, error);
  }
}

}  // namespace bench
