// Element loops compiled once per vector width.
//
// The library targets baseline x86-64, so a plain loop over floats
// vectorises to 4-lane SSE. On the small tensors of a task-batched step
// ([25, 10, 40], [25, 40, 40]) the elementwise kernels then ran at a
// quarter of an AVX-512 core's width. METATAPE_VECTOR_CLONES marks a loop
// function that GCC compiles three times, for AVX-512, AVX2 and the
// baseline; the copy that suits the CPU is picked when the library loads
// (function multiversioning, through an ifunc), at the cost of one
// indirect call per loop (per row, for a broadcasting op).
//
// Only loops whose every output element is computed on its own may carry
// it. The vector width then decides how many elements one instruction
// handles, never what any of them is: the kernels are built with
// -ffp-contract=off, so no copy fuses a multiply and an add that another
// keeps apart. A reduction whose order follows the vector width (an
// `omp simd` reduction) must not carry it, or its bits would depend on the
// machine; lane_sum.hpp's order is written out and would be safe.
//
// The macro is empty, and the one copy is the build's own, elsewhere:
// - with another compiler (Clang does not clone templates), on another
//   architecture, or without glibc's ifuncs;
// - in sanitizer builds: the loader runs the ifunc resolvers before
//   AddressSanitizer has mapped its shadow memory, and an instrumented
//   resolver faults there.
//
// The tests check the copy that the test machine's CPU picks, against the
// scalar formulas; the AVX2 copy runs only on a CPU without AVX-512.
#pragma once

#include <cstddef>  // defines __GLIBC__ where glibc is the C library

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define METATAPE_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define METATAPE_VECTOR_CLONES
#endif
