// Element loops compiled once per vector width.
//
// The library targets baseline x86-64, so a plain loop over floats
// vectorises to 4-lane SSE. On the small tensors of a task-batched step
// ([25, 10, 40], [25, 40, 40]) the elementwise kernels then ran at a
// quarter of an AVX-512 core's width. run_vectorised(loop) runs a loop
// written once (a lambda with no arguments) in a copy compiled for AVX-512,
// for AVX2, or for the baseline: GCC and Clang inline the lambda into
// functions that carry the `target` attribute, and vectorise it there
// (x86-64 with GCC or Clang; elsewhere the one copy is the build's own).
// element_loop_isa() (small_gemm.hpp) picks the copy, the widest this CPU
// runs unless a test has chosen another (ElementLoopIsaScope), so every
// copy can be tested on one machine. Unoptimised builds (the sanitizer
// build is -O0) inline and vectorise nothing: there each copy calls the
// same scalar loop.
//
// Only loops whose every output element is computed on its own may use
// it. The vector width then decides how many elements one instruction
// handles, never what any of them is: the kernels are built with
// -ffp-contract=off, so no copy fuses a multiply and an add that another
// keeps apart, and the C library's functions (exp, log, tanh, pow, and
// sqrt, which sets errno) stay scalar calls in each. A reduction whose
// order follows the vector width (an `omp simd` reduction) must not use
// it, or its bits would depend on the machine; lane_sum.hpp's order is
// written out and would be safe.
#pragma once

#include "small_gemm.hpp"

#ifndef METATAPE_SMALL_GEMM
#error "vector_clones.hpp is for the kernels library, whose build says whether the x86 copies exist"
#endif

namespace metatape::kernels::cpu {

#if METATAPE_SMALL_GEMM
namespace vector_copies {
// The loop inlined into a function compiled for the instruction set.
template <class Loop>
[[gnu::target("avx512f")]] void run_avx512(const Loop& loop) {
  loop();
}
template <class Loop>
[[gnu::target("avx2")]] void run_avx2(const Loop& loop) {
  loop();
}
}  // namespace vector_copies
#endif

// loop() in the copy element_loop_isa() names.
template <class Loop>
void run_vectorised(const Loop& loop) {
#if METATAPE_SMALL_GEMM
  switch (element_loop_isa()) {
    case SmallGemmIsa::avx512:
      return vector_copies::run_avx512(loop);
    case SmallGemmIsa::avx2:
      return vector_copies::run_avx2(loop);
    case SmallGemmIsa::none:
      break;
  }
#endif
  loop();
}

}  // namespace metatape::kernels::cpu
