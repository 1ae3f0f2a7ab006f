// Matrix products through OpenBLAS, and small ones (op(B) of at most 64 x 64
// entries) through our own kernel where the CPU has AVX2 or AVX-512
// (small_gemm.hpp). Row-major; a transpose is a flag, never a copy. T is
// float or double.
//
// Threads: OpenBLAS runs single-threaded (set_blas_single_threaded), and a
// large product is split over the CPU kernels' pool (parallel.hpp) into
// blocks of rows of C, one OpenBLAS call each. OpenBLAS chooses its kernels
// by the shape of a call, so a split product may differ from the unsplit
// one in the last bits (summation order); at a fixed thread count it is
// bit-reproducible. gemm_batched computes each matrix in one gemm call,
// except a batch sharing one B, which is one product of all the rows (split
// like any large product).
#pragma once

#include <cstdint>

namespace metatape::kernels::cpu {

// C (m x n, leading dimension ldc) = alpha * op(A) op(B) + beta * C, where
// op(A) is m x k (A stored k x m when trans_a) and op(B) is k x n.
// Dimensions must fit in a 32-bit int (the engine checks).
template <class T>
void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
          std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc);

// Sets OpenBLAS to run each call on the calling thread only (its own
// threads, if its build started any, stay asleep).
void set_blas_single_threaded();
// The thread count OpenBLAS would use for one call (1 once set above).
int blas_threads();
// OpenBLAS's name for the kernels it runs on this CPU ("Haswell", "Cooperlake", …).
const char* blas_core_name();

}  // namespace metatape::kernels::cpu
