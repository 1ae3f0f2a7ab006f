// Small matrix products without OpenBLAS's packing: the shapes of a
// task-batched MLP ([10 x 40] x [40 x 40] and its adjoints), where a call's
// packing, buffer allocation and locking can cost as much as its arithmetic.
//
// C = alpha · op(A) op(B) + beta · C, row-major, with AVX-512 or AVX2 and
// FMA, chosen at run time: the library is built for baseline x86-64, and
// each instruction set's kernel is its own translation unit compiled for
// that set (small_gemm_tiles.hpp). Each entry of C is one fused
// multiply-add chain over k in order, s = fma(a_ip, b_pj, s) for p = 0, 1,
// …, starting from 0, then c = fma(beta, c, alpha · s) (alpha · s skipped
// when alpha = 1, C not read when beta = 0): the same bits on either
// instruction set and wherever a row or column lands in the register tiles,
// so a product split into blocks of rows equals the whole. One exception,
// a single column (n = 1) with A untransposed: there s is the sum of 16
// lanes, lane l the chain over p = l, l + 16, … in order, added pairwise
// (lane l + 8 into l, then + 4, + 2, + 1); again the same bits on either
// instruction set and for any split of the rows.
#pragma once

#include <atomic>
#include <cstdint>

namespace metatape::kernels::cpu {

// The largest op(B) (k · n entries) the kernel takes: 16 KiB of floats
// (32 KiB of doubles), a panel that stays in the L1 cache while every row
// of A passes over it.
inline constexpr std::int64_t kSmallGemmMaxPanel = 64 * 64;
// A single column of C (n = 1) is taken for k up to kSmallGemvMaxDepth
// (op(B)'s column then fits a local copy where it is not contiguous). With
// A stored untransposed its entries are dot products summed in
// kSmallGemvLanes interleaved lanes (see small_gemm below).
inline constexpr std::int64_t kSmallGemvMaxDepth = 64;
inline constexpr int kSmallGemvLanes = 16;

enum class SmallGemmIsa { none, avx2, avx512 };

// The fewest columns (n) the kernel of `isa` takes. AVX-512's masked
// vectors cost little; AVX2's partial vectors do, and on narrow products (a
// Conv4 first layer's [25088 x 64] x [64 x 9]) its kernel was 1.3-1.5x
// slower than OpenBLAS's Haswell kernels, so it takes only products with at
// least one full tile of two vectors (16 floats, 8 doubles). The choice
// depends on n and k alone, never on m: every block of rows of a split
// product takes the same path.
template <class T>
constexpr std::int64_t small_gemm_min_columns(SmallGemmIsa isa) {
  return isa == SmallGemmIsa::avx2 ? 2 * (32 / static_cast<std::int64_t>(sizeof(T))) : 2;
}

// Whether this CPU runs the kernel of `isa` (AVX2 and FMA; AVX-512F), and
// whether this build has it.
bool cpu_runs(SmallGemmIsa isa);
// The widest instruction set the kernel uses here (none: OpenBLAS takes
// every product), asked once.
SmallGemmIsa small_gemm_isa();
const char* small_gemm_isa_name(SmallGemmIsa isa);

// For tests and benchmarks comparing instruction sets on one machine: while
// it lives, `choice` (one of the kernels' choices of instruction set) holds
// `isa`, and the value it had before comes back after. A KernelError naming
// `who` if cpu_runs(isa) does not allow it. Set it where no kernel runs.
class IsaChoiceScope {
 public:
  IsaChoiceScope(std::atomic<SmallGemmIsa>& choice, SmallGemmIsa isa, const char* who);
  ~IsaChoiceScope();
  IsaChoiceScope(const IsaChoiceScope&) = delete;
  IsaChoiceScope& operator=(const IsaChoiceScope&) = delete;

 private:
  std::atomic<SmallGemmIsa>& choice_;
  SmallGemmIsa previous_;
};

// The instruction set the element loops run in (vector_clones.hpp): the
// widest that cpu_runs() allows, unless an ElementLoopIsaScope has chosen
// another. An atomic so that reading it, once per row, is a plain load.
extern std::atomic<SmallGemmIsa> element_loop_copy;
inline SmallGemmIsa element_loop_isa() { return element_loop_copy.load(std::memory_order_relaxed); }

// The element loops in the copy for `isa` while it lives: a loop already
// running finishes in the copy it started with, row by row.
class ElementLoopIsaScope : public IsaChoiceScope {
 public:
  explicit ElementLoopIsaScope(SmallGemmIsa isa) : IsaChoiceScope(element_loop_copy, isa, "ElementLoopIsaScope") {}
};

// Whether the kernel of `isa` takes a product whose op(B) is k x n: the
// whole choice, which never looks at m. A single column (what BLAS calls
// a gemv) runs with its vectors along k (A untransposed) or along m (A
// transposed); OpenBLAS 0.3.21's sgemv took 1.2-1.8x as long for the
// sinusoid MLP's [10 x 40] times a vector and [40 x 10]ᵀ times a vector.
template <class T>
constexpr bool small_gemm_takes(SmallGemmIsa isa, std::int64_t n, std::int64_t k) {
  if (isa == SmallGemmIsa::none || k < 1) return false;
  if (n == 1) return k <= kSmallGemvMaxDepth;
  return n >= small_gemm_min_columns<T>(isa) && k * n <= kSmallGemmMaxPanel;
}

// Computes the product and returns true when this CPU has a kernel and
// it takes the shape (small_gemm_takes); otherwise leaves C alone and
// returns false.
template <class T>
bool small_gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
                std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc);

// The same with the kernel of one instruction set, which cpu_runs(isa)
// must allow (the tests compare the two).
template <class T>
bool small_gemm_with(SmallGemmIsa isa, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                     T alpha, const T* a, std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c,
                     std::int64_t ldc);

// The parameters of a batch of products: the i-th is
// C_i = alpha · op(A_i) op(B_i) + beta · C_i with A_i at a + i · stride_a,
// B_i at b + i · stride_b, C_i at c + i · stride_c, for i < count.
#define METATAPE_SMALL_GEMM_PARAMETERS(T)                                                                            \
  bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T *a, std::int64_t lda, \
      std::int64_t stride_a, const T *b, std::int64_t ldb, std::int64_t stride_b, T beta, T *c, std::int64_t ldc,    \
      std::int64_t stride_c, std::int64_t count

// A layer's finish of each entry of C, in place of alpha and beta: the
// i-th product's row bias_i = bias + i · stride_bias (n entries; null: no
// bias) is added to every row, then max(·, 0) taken where relu (NaN and −0
// kept, as relu does): c = relu(s + bias_j), each step rounded, so the bits
// of the product followed by an add and a relu.
#define METATAPE_SMALL_GEMM_EPILOGUE(T) const T *bias, std::int64_t stride_bias, bool relu

// A batch of products of one shape in one call (each product as
// small_gemm computes it: the same bits); false, C untouched, where
// small_gemm would refuse the shape.
template <class T>
bool small_gemm_batched(METATAPE_SMALL_GEMM_PARAMETERS(T));

// Whether the kernel of `isa` takes a layer's product (with the epilogue
// above): as small_gemm_takes, but never a single column, whose entries
// the kernel finishes one by one.
template <class T>
constexpr bool small_linear_takes(SmallGemmIsa isa, std::int64_t n, std::int64_t k) {
  return n >= 2 && small_gemm_takes<T>(isa, n, k);
}

// A batch of a layer's products, C_i = relu(A_i B_i + bias_i) (see
// METATAPE_SMALL_GEMM_EPILOGUE; no alpha or beta), on the kernel of `isa`
// (which cpu_runs(isa) must allow) or of this CPU; false, C untouched,
// where small_linear_takes refuses the shape.
#define METATAPE_SMALL_LINEAR_PARAMETERS(T)                                                                 \
  bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, const T *a, std::int64_t lda, \
      std::int64_t stride_a, const T *b, std::int64_t ldb, std::int64_t stride_b, T *c, std::int64_t ldc,   \
      std::int64_t stride_c, std::int64_t count, METATAPE_SMALL_GEMM_EPILOGUE(T)
template <class T>
bool small_linear_batched_with(SmallGemmIsa isa, METATAPE_SMALL_LINEAR_PARAMETERS(T));
template <class T>
bool small_linear_batched(METATAPE_SMALL_LINEAR_PARAMETERS(T));

// Each instruction set's kernel (small_gemm_avx2.cpp, small_gemm_avx512.cpp),
// for a shape small_gemm (small_linear_takes, where bias or relu is set)
// has accepted.
template <class T>
void small_gemm_avx2(METATAPE_SMALL_GEMM_PARAMETERS(T), METATAPE_SMALL_GEMM_EPILOGUE(T));
template <class T>
void small_gemm_avx512(METATAPE_SMALL_GEMM_PARAMETERS(T), METATAPE_SMALL_GEMM_EPILOGUE(T));

}  // namespace metatape::kernels::cpu
