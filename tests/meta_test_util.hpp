// Helpers the meta:: suites share: seeded float64 sinusoid batches and
// parameters, and the directional finite-difference check of a
// meta-gradient.
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "metatape/meta/maml.hpp"

namespace metatape::testing {

// `tasks` sinusoid tasks of `points` support and `points` query points, float64.
inline meta::TaskBatch sinusoid_batch(std::int64_t tasks, std::int64_t points, std::uint64_t seed) {
  Generator gen(seed);
  return meta::SinusoidTasks().sample(tasks, points, points, gen, DType::f64);
}

// Float64 meta-parameters away from the reference initialisation (whose
// zero biases and tiny weights hide errors): weights N(0, 0.6²), learned
// rates U[0.02, 0.08].
inline meta::MetaParams random_meta_params(const meta::Model& model, const meta::MetaConfig& config,
                                           std::uint64_t seed) {
  Generator gen(seed);
  meta::MetaParams p = meta::init_meta_params(model, config, gen, DType::f64);
  for (Tensor& t : p.model) t = normal(t.shape(), 0, 0.6, gen, DType::f64);
  for (Tensor& r : p.rates) r = uniform(r.shape(), 0.02, 0.08, gen, DType::f64);
  return p;
}

// The worst relative error of gᵀu against the central difference
// (f(x + εu) − f(x − εu)) / 2ε over `directions` seeded random directions u,
// for a scalar function f of a tensor list at `point` whose gradient there
// is `gradient`. ReLU and max-pool make meta-losses piecewise smooth
// (docs/methods.md §1), so for each direction ε shrinks until the
// difference is stable under halving: the stencil then stays inside the
// base point's activation pattern. "Stable" allows for the quotient's
// rounding: f's values carry a relative error of a few ε_mach (the order of
// a BLAS's sums is its own), which the quotient divides by 2ε, so two
// quotients that agree within that much agree as well as they can. Without
// it, a directional derivative far smaller than f (|gᵀu| ~ 1e-4 against
// f ~ 1) could not pass on some BLAS kernels and pass on others. A
// direction that never stabilises counts as an infinite error.
inline double directional_fd_error(const std::function<double(const std::vector<Tensor>&)>& f,
                                   const std::vector<Tensor>& point, const std::vector<Tensor>& gradient,
                                   int directions, std::uint64_t seed = 99) {
  Generator gen(seed);
  double worst = 0;
  for (int d = 0; d < directions; ++d) {
    std::vector<Tensor> u;
    double analytic = 0;
    for (std::size_t i = 0; i < point.size(); ++i) {
      u.push_back(normal(point[i].shape(), 0, 1, gen, DType::f64));
      analytic += sum(gradient[i] * u.back()).item();
    }
    // The central difference at eps, and the rounding it carries.
    struct Quotient {
      double value, rounding;
    };
    const auto difference = [&](double eps) {
      std::vector<Tensor> plus, minus;
      for (std::size_t i = 0; i < point.size(); ++i) {
        plus.push_back(point[i] + eps * u[i]);
        minus.push_back(point[i] - eps * u[i]);
      }
      const double up = f(plus), down = f(minus);
      return Quotient{(up - down) / (2 * eps),
                      16 * std::numeric_limits<double>::epsilon() * (std::abs(up) + std::abs(down)) / (2 * eps)};
    };
    double error = INFINITY;
    for (double eps : {1e-6, 2e-7, 4e-8}) {
      const Quotient coarse = difference(eps), fine = difference(eps / 2);
      if (std::abs(coarse.value - fine.value) <= 1e-7 * std::abs(fine.value) + coarse.rounding + fine.rounding) {
        error = std::abs(analytic - fine.value) / std::abs(fine.value);
        break;
      }
    }
    worst = std::max(worst, error);
  }
  return worst;
}

// Pixel (r, c), as a byte, of the s×s image at `offset` of an episode's
// inputs x (pixels/255).
inline int episode_pixel(const std::vector<double>& x, std::size_t offset, std::int64_t s, std::int64_t r,
                         std::int64_t c) {
  return static_cast<int>(std::lround(x[offset + static_cast<std::size_t>(r * s + c)] * 255));
}

// The counterclockwise quarter turns (np.rot90's) that took an image's
// top-left corner, marked with the byte `marker`, to where it is in that
// episode image; -1 when no corner holds the marker.
inline int marker_turns(const std::vector<double>& x, std::size_t offset, std::int64_t s, int marker) {
  const std::int64_t l = s - 1;
  const std::int64_t corners[4][2] = {{0, 0}, {l, 0}, {l, l}, {0, l}};
  for (int turns = 0; turns < 4; ++turns)
    if (episode_pixel(x, offset, s, corners[turns][0], corners[turns][1]) == marker) return turns;
  return -1;
}

}  // namespace metatape::testing
