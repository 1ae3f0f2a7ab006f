// Sums of a row of terms in independent lanes.
//
// A single running sum makes every addition wait for the one before it
// (about 4 cycles each), so a reduction over data in cache runs at a
// quarter of the adder's rate or less, whatever the vector width. Here lane
// l adds the terms l, l + kLanes, l + 2·kLanes, ... and the lanes are
// combined pairwise at the end: kLanes chains proceed at once, and the
// compiler turns the lanes into vector registers of whatever width the
// build allows. The order of every addition is written out below, not
// chosen by the compiler, so the bits do not depend on the instruction set
// the library was built for.
#pragma once

#include <cstdint>

namespace metatape::kernels::cpu {

// Four AVX-512 or eight SSE registers of float partial sums.
inline constexpr int kLanes = 16;

// lanes[0] += lanes[Width / 2], ... pairwise down to one, with every trip
// count a constant: a loop over the widths compiled to shifts and branches
// that cost more than the additions for rows of 7×7 maps.
template <int Width, class Acc>
inline void fold_lanes(Acc* lanes) {
  if constexpr (Width > 1) {
    for (int l = 0; l < Width / 2; ++l) lanes[l] += lanes[l + Width / 2];
    fold_lanes<Width / 2>(lanes);
  }
}

// Σ_i term(i) for i < n, in Acc. `term` must be cheap to inline. Rows
// shorter than two rounds of lanes are summed in order: combining the lanes
// would cost more than the chains save.
template <class Acc, class Term>
Acc lane_sum(std::int64_t n, Term&& term) {
  if (n < 2 * kLanes) {
    Acc total = 0;
    for (std::int64_t i = 0; i < n; ++i) total += static_cast<Acc>(term(i));
    return total;
  }
  Acc lanes[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] += static_cast<Acc>(term(i + l));
  for (int l = 0; i + l < n; ++l) lanes[l] += static_cast<Acc>(term(i + l));  // the tail, in its lanes
  fold_lanes<kLanes>(lanes);
  return lanes[0];
}

}  // namespace metatape::kernels::cpu
