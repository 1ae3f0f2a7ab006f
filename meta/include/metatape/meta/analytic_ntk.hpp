// Analytic (infinite-width) NTKs of ReLU networks (docs/methods.md §4), the
// limits the empirical kernel of ntk.hpp approaches as the width m → ∞, at
// rate ~1/√m: the references it is validated against.
//
// Both take inputs a [nA, d] and b [nB, d] (f32 or f64; computed in double)
// and return Θ(a, b) [nA, nB] in f64, on the CPU. They are functions of the
// data alone: constants, with no derivative. Errors: ShapeError unless a and
// b are matrices with one d (both shapes named); ValueError for an undefined
// or empty input, a NaN or inf entry (naming the input and the entry), or
// hidden_layers < 1; DTypeError for integer inputs.
#pragma once

#include "metatape/engine.hpp"

namespace metatape::meta {

// One hidden layer, f(x) = (1/√m) Σ_r a_r ReLU(w_rᵀ x), w_r ~ N(0, I_d),
// a_r ~ N(0, 1), the kernel over all of w and a (the arc-cosine formula):
//   Θ(x, x') = x·x' (π − φ)/(2π) + ‖x‖‖x'‖ (sin φ + (π − φ) cos φ)/(2π),
// φ = angle(x, x') (taken as π/2 where x or x' is 0: the kernel is 0 there).
// Note the first layer is not scaled by 1/√d: this network on x is the
// NTK-parameterised Mlp {d, m, 1} without bias on √d·x, so
// relu_ntk_one_hidden(a, b) = d · relu_ntk(a, b, 1).
Tensor relu_ntk_one_hidden(const Tensor& a, const Tensor& b);

// The limit of the NTK-parameterised Mlp (models.hpp: Parameterization::ntk,
// ReLU, widths {d, m, ..., m, 1} with `hidden_layers` hidden layers, every
// pre-activation h W/√n_in + b, all parameters N(0, 1)), with its biases
// (`bias`, β = 1) or without: the recursion of Jacot et al. (2018), as
// Arora et al. (2019) write it,
//   Σ¹(x, x') = x·x'/d + β²,                  Θ¹ = Σ¹,
//   Σˡ⁺¹ = E[ReLU(u) ReLU(v)] + β²,  Σ̇ˡ⁺¹ = E[ReLU'(u) ReLU'(v)],
//   Θˡ⁺¹ = Θˡ Σ̇ˡ⁺¹ + Σˡ⁺¹,
// (u, v) ~ N(0, [[Σˡ(x,x), Σˡ(x,x')], [Σˡ(x,x'), Σˡ(x',x')]]), in closed form
//   E[ReLU ReLU] = √(Σˡ(x,x) Σˡ(x',x')) (sin φ + (π − φ) cos φ)/(2π),
//   E[ReLU' ReLU'] = (π − φ)/(2π),  cos φ = Σˡ(x,x')/√(Σˡ(x,x) Σˡ(x',x')),
// and Θ = Θ^{L+1} for L hidden layers (the kernel of one scalar output; with
// C outputs the limit is Θ ⊗ I_C, so the trace-mode kernel approaches Θ).
Tensor relu_ntk(const Tensor& a, const Tensor& b, int hidden_layers, bool bias = false);

}  // namespace metatape::meta
