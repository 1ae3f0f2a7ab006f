// The few LAPACK routines the CPU kernels call, declared as OpenBLAS exports
// them: Fortran symbols (trailing underscore), every argument by pointer,
// column-major matrices, and, per the gfortran ABI, one hidden length
// argument per character argument, appended after the others. Calling them
// directly keeps libmetatape's dependencies to OpenBLAS (no liblapacke);
// what LAPACKE added, the callers do themselves: the NaN check and the
// workspace query.
#pragma once

#include <cblas.h>

#include <cstddef>

namespace metatape::kernels::cpu::lapack {

// OpenBLAS's integer: 32 bits unless it was built with 64-bit indices.
using integer = blasint;

extern "C" {
void spotrf_(const char* uplo, const integer* n, float* a, const integer* lda, integer* info, std::size_t uplo_len);
void dpotrf_(const char* uplo, const integer* n, double* a, const integer* lda, integer* info, std::size_t uplo_len);
void ssyevd_(const char* jobz, const char* uplo, const integer* n, float* a, const integer* lda, float* w, float* work,
             const integer* lwork, integer* iwork, const integer* liwork, integer* info, std::size_t jobz_len,
             std::size_t uplo_len);
void dsyevd_(const char* jobz, const char* uplo, const integer* n, double* a, const integer* lda, double* w,
             double* work, const integer* lwork, integer* iwork, const integer* liwork, integer* info,
             std::size_t jobz_len, std::size_t uplo_len);
}

// ?potrf: Cholesky factorisation of the column-major n x n matrix a, from
// its `uplo` triangle ('U' or 'L'); returns LAPACK's info.
inline integer potrf(char uplo, integer n, float* a, integer lda) {
  integer info = 0;
  spotrf_(&uplo, &n, a, &lda, &info, 1);
  return info;
}
inline integer potrf(char uplo, integer n, double* a, integer lda) {
  integer info = 0;
  dpotrf_(&uplo, &n, a, &lda, &info, 1);
  return info;
}

// ?syevd with jobz 'V': eigenvalues (w, ascending) and eigenvectors (over a,
// in its columns) of the symmetric column-major matrix a read from its
// `uplo` triangle. lwork = liwork = -1 asks for the workspace sizes only
// (into work[0] and iwork[0]). Returns LAPACK's info.
inline integer syevd(char uplo, integer n, float* a, integer lda, float* w, float* work, integer lwork, integer* iwork,
                     integer liwork) {
  const char jobz = 'V';
  integer info = 0;
  ssyevd_(&jobz, &uplo, &n, a, &lda, w, work, &lwork, iwork, &liwork, &info, 1, 1);
  return info;
}
inline integer syevd(char uplo, integer n, double* a, integer lda, double* w, double* work, integer lwork,
                     integer* iwork, integer liwork) {
  const char jobz = 'V';
  integer info = 0;
  dsyevd_(&jobz, &uplo, &n, a, &lda, w, work, &lwork, iwork, &liwork, &info, 1, 1);
  return info;
}

}  // namespace metatape::kernels::cpu::lapack
