// small_gemm.hpp's choice of kernel. This file is compiled for the baseline
// target like the rest of the library; the kernels it calls are not, and
// run only after the CPU has said it has their instructions.
//
// The widest set wins: on the development VM (AMD EPYC with AVX-512) the
// AVX-512 kernel took 25 products of [10 x 40] x [40 x 40] 1.4x as fast as
// OpenBLAS 0.3.21 with its own AVX-512 kernels and small-matrix path, where
// the AVX2 kernel was 0.95x; bench-engine's BM_SmallGemm_* measure each.
#include "small_gemm.hpp"

#include <string>

#include "implicit_gemm.hpp"
#include "kernels/error.hpp"

namespace metatape::kernels::cpu {

bool cpu_runs(SmallGemmIsa isa) {
#if METATAPE_SMALL_GEMM
  __builtin_cpu_init();
  switch (isa) {
    case SmallGemmIsa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case SmallGemmIsa::avx512:
      return __builtin_cpu_supports("avx512f") && cpu_runs(SmallGemmIsa::avx2);
    case SmallGemmIsa::none:
      return true;
  }
#endif
  return isa == SmallGemmIsa::none;
}

SmallGemmIsa small_gemm_isa() {
  static const SmallGemmIsa isa = cpu_runs(SmallGemmIsa::avx512) ? SmallGemmIsa::avx512
                                  : cpu_runs(SmallGemmIsa::avx2) ? SmallGemmIsa::avx2
                                                                 : SmallGemmIsa::none;
  return isa;
}

IsaChoiceScope::IsaChoiceScope(std::atomic<SmallGemmIsa>& choice, SmallGemmIsa isa, const char* who)
    : choice_(choice), previous_(choice.load(std::memory_order_relaxed)) {
  if (!cpu_runs(isa))
    throw KernelError(std::string(who) + ": this CPU or build cannot run " + small_gemm_isa_name(isa));
  choice_.store(isa, std::memory_order_relaxed);
}

IsaChoiceScope::~IsaChoiceScope() { choice_.store(previous_, std::memory_order_relaxed); }

const char* small_gemm_isa_name(SmallGemmIsa isa) {
  switch (isa) {
    case SmallGemmIsa::avx2:
      return "avx2";
    case SmallGemmIsa::avx512:
      return "avx512";
    case SmallGemmIsa::none:
      break;
  }
  return "none";
}

namespace {

// The batch on the kernel of `isa` (a layer's where bias or relu is set), or
// false where it does not take the shape.
template <class T>
bool products_with(SmallGemmIsa isa, METATAPE_SMALL_GEMM_PARAMETERS(T), METATAPE_SMALL_GEMM_EPILOGUE(T)) {
  const bool layer = bias != nullptr || relu;
  if (layer ? !small_linear_takes<T>(isa, n, k) : !small_gemm_takes<T>(isa, n, k)) return false;
#if METATAPE_SMALL_GEMM
  switch (isa) {
    case SmallGemmIsa::avx512:
      small_gemm_avx512<T>(trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc, stride_c,
                           count, bias, stride_bias, relu);
      return true;
    case SmallGemmIsa::avx2:
      small_gemm_avx2<T>(trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc, stride_c,
                         count, bias, stride_bias, relu);
      return true;
    case SmallGemmIsa::none:
      break;
  }
#else
  (void)trans_a, (void)trans_b, (void)m, (void)alpha, (void)a, (void)lda, (void)stride_a, (void)b, (void)ldb,
      (void)stride_b, (void)beta, (void)c, (void)ldc, (void)stride_c, (void)count, (void)stride_bias;
#endif
  return false;
}

}  // namespace

template <class T>
bool small_gemm_with(SmallGemmIsa isa, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                     T alpha, const T* a, std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c,
                     std::int64_t ldc) {
  return products_with<T>(isa, trans_a, trans_b, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1, nullptr, 0,
                          false);
}

template <class T>
bool small_gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
                std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  return small_gemm_with(small_gemm_isa(), trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <class T>
bool small_gemm_batched(METATAPE_SMALL_GEMM_PARAMETERS(T)) {
  return products_with<T>(small_gemm_isa(), trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta,
                          c, ldc, stride_c, count, nullptr, 0, false);
}

template <class T>
bool small_linear_batched_with(SmallGemmIsa isa, METATAPE_SMALL_LINEAR_PARAMETERS(T)) {
  return products_with<T>(isa, trans_a, trans_b, m, n, k, T(1), a, lda, stride_a, b, ldb, stride_b, T(0), c, ldc,
                          stride_c, count, bias, stride_bias, relu);
}

template <class T>
bool small_linear_batched(METATAPE_SMALL_LINEAR_PARAMETERS(T)) {
  return small_linear_batched_with<T>(small_gemm_isa(), trans_a, trans_b, m, n, k, a, lda, stride_a, b, ldb, stride_b,
                                      c, ldc, stride_c, count, bias, stride_bias, relu);
}

template <class T>
void implicit_gemm(SmallGemmIsa isa, const ImplicitGemm<T>& p) {
#if METATAPE_SMALL_GEMM
  switch (isa) {
    case SmallGemmIsa::avx512:
      return implicit_gemm_avx512<T>(p);
    case SmallGemmIsa::avx2:
      return implicit_gemm_avx2<T>(p);
    case SmallGemmIsa::none:
      break;
  }
#endif
  (void)p;
  throw KernelError(std::string("implicit_gemm: this build has no kernel for instruction set ") +
                    small_gemm_isa_name(isa));
}

#define METATAPE_INSTANTIATE(T)                                                                                     \
  template bool small_gemm<T>(bool, bool, std::int64_t, std::int64_t, std::int64_t, T, const T*, std::int64_t,      \
                              const T*, std::int64_t, T, T*, std::int64_t);                                         \
  template bool small_gemm_with<T>(SmallGemmIsa, bool, bool, std::int64_t, std::int64_t, std::int64_t, T, const T*, \
                                   std::int64_t, const T*, std::int64_t, T, T*, std::int64_t);                      \
  template bool small_gemm_batched<T>(METATAPE_SMALL_GEMM_PARAMETERS(T));                                           \
  template bool small_linear_batched_with<T>(SmallGemmIsa, METATAPE_SMALL_LINEAR_PARAMETERS(T));                    \
  template bool small_linear_batched<T>(METATAPE_SMALL_LINEAR_PARAMETERS(T));                                       \
  template void implicit_gemm<T>(SmallGemmIsa, const ImplicitGemm<T>&);
METATAPE_INSTANTIATE(float)
METATAPE_INSTANTIATE(double)
#undef METATAPE_INSTANTIATE

}  // namespace metatape::kernels::cpu
