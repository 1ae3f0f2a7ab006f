// Matrix products: one OpenBLAS call per block of C, the blocks spread over
// the CPU kernels' pool when a product is large enough to pay for it.
//
// Small products (op(B) within small_gemm.hpp's panel) go to our own kernel
// where the CPU has AVX2 and FMA or AVX-512. On every call, even for
// [10 x 40] x [40 x 40], OpenBLAS 0.3.21's Haswell kernels pack A and B and
// take a buffer and a lock; in the sinusoid MLP's task-batched step those
// copies and that overhead were 20% of the step, beside 33% in its compute
// kernel. Its AVX-512 kernels have a small-matrix path without the packing,
// and the AVX-512 kernel of ours is still 1.2-1.4x as fast on these shapes
// (bench-engine's BM_SmallGemm_*). A kernel of ours compiled for the baseline
// x86-64 this library is built for was ten times slower, so ours run only
// where the CPU reports the instructions.
#include "gemm.hpp"

#include <cblas.h>

#include <algorithm>
#include <type_traits>

#include "../scalar_math.hpp"
#include "kernels.hpp"
#include "parallel.hpp"
#include "small_gemm.hpp"

namespace metatape::kernels::cpu {
namespace {

// Rows of C per unit of a split: a multiple of every OpenBLAS kernel's
// register tile, so each block's tiles line up with the whole's.
constexpr std::int64_t kSplitUnit = 16;

// Scales C by beta where a product with k = 0 contributes nothing; BLAS
// implementations differ on whether they touch C then.
template <class T>
void scale_rows(std::int64_t m, std::int64_t n, T beta, T* c, std::int64_t ldc) {
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
}

// y (n entries, incy apart) = alpha · op(A) x + beta · y for A [rows, cols]
// with leading dimension lda. beta = 0 ignores y's old values (NaN
// included), as GEMM does, whatever the BLAS's gemv does with them.
template <class T>
void blas_gemv(bool trans, std::int64_t rows, std::int64_t cols, T alpha, const T* a, std::int64_t lda, const T* x,
               std::int64_t incx, T beta, T* y, std::int64_t incy) {
  const auto dims = [](std::int64_t v) { return static_cast<blasint>(v); };
  if (beta == T(0)) {
    for (std::int64_t i = 0, n = trans ? cols : rows; i < n; ++i) y[i * incy] = T(0);
    beta = T(1);
  }
  const auto t = trans ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemv(CblasRowMajor, t, dims(rows), dims(cols), alpha, a, dims(lda), x, dims(incx), beta, y, dims(incy));
  else
    cblas_dgemv(CblasRowMajor, t, dims(rows), dims(cols), alpha, a, dims(lda), x, dims(incx), beta, y, dims(incy));
}

// One product on the calling thread: a product small_gemm takes goes
// there (single columns with k up to 64 included). Where it does not (no
// AVX2, or a shape it does not take: small_gemm_takes), a single column of C
// (n = 1) or row (m = 1) is a gemv and k = 1 a GEMM without transposes (an
// operand with one row or column has the same layout either way): OpenBLAS
// 0.3.21's small-GEMM path took 1.3-3.5x as long for those shapes (10 x 40
// with k = 1; 40 x 10 and 10 x 40 times a vector).
template <class T>
void blas_gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
               std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  if (small_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)) return;
  if (n == 1)  // c (m entries, ldc apart) = op(A) · op(B)'s one column
    return blas_gemv(trans_a, trans_a ? k : m, trans_a ? m : k, alpha, a, lda, b, trans_b ? 1 : ldb, beta, c, ldc);
  if (m == 1)  // c (one row) = op(B)ᵀ · op(A)'s one row
    return blas_gemv(!trans_b, trans_b ? n : k, trans_b ? k : n, alpha, b, ldb, a, trans_a ? lda : 1, beta, c, 1);
  // k = 1: op(A) is a column and op(B) a row, contiguous unless a transposed
  // layout spaces them ld apart.
  if (k == 1 && (trans_a || lda == 1) && (!trans_b || ldb == 1) && (trans_a || trans_b)) {
    trans_a = trans_b = false;
    lda = 1;
    ldb = n;
  }
  const auto ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
  const auto dims = [](std::int64_t v) { return static_cast<blasint>(v); };
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, ta, tb, dims(m), dims(n), dims(k), alpha, a, dims(lda), b, dims(ldb), beta, c,
                dims(ldc));
  else
    cblas_dgemm(CblasRowMajor, ta, tb, dims(m), dims(n), dims(k), alpha, a, dims(lda), b, dims(ldb), beta, c,
                dims(ldc));
}

// How many units of kSplitUnit rows make a block worth a thread when a row
// costs `row_work` multiply-adds.
std::int64_t grain(std::int64_t row_work) {
  return std::max<std::int64_t>(1, (kMultiplyAddGrain + row_work * kSplitUnit - 1) / (row_work * kSplitUnit));
}

}  // namespace

// C is cut into blocks of whole units of rows (rows of op(A)), each a
// plain sub-product with offset pointers. On OpenBLAS not bit-identical to
// the unsplit call: OpenBLAS 0.3.21 picks its kernels and blockings by the
// shape of each call (a small-matrix path below m·n·k = 100³, other tile
// orders for some heights), and we measured last-bit differences in some
// rows for many cuts, float and double. So a split product equals the
// serial one up to the order of its sums (tests/test_threads.cpp bounds the
// difference), and is bit-identical at a fixed thread count. A product the
// small-product kernel takes (chosen by n and k, so for every block alike)
// is bit-identical at any split.
template <class T>
void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
          std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) return scale_rows(m, n, beta, c, ldc);
  // Whole units only; the last block takes the rows left over, so that no
  // block is smaller than the grain.
  const std::int64_t units = m / kSplitUnit, rows_grain = grain(n * k);
  if (parallel_chunks(units, rows_grain) == 1)
    return blas_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  parallel_for(units, rows_grain, [&](std::int64_t begin, std::int64_t end) {
    const std::int64_t first = begin * kSplitUnit, count = (end == units ? m : end * kSplitUnit) - first;
    blas_gemm(trans_a, trans_b, count, n, k, alpha, a + first * (trans_a ? 1 : lda), lda, b, ldb, beta, c + first * ldc,
              ldc);
  });
}

namespace {

// A batch of `count` products of `work` multiply-adds each, over the pool
// when they are many (two or more per thread): each thread's run of
// matrices goes to small(begin, end) (the small-product kernel, in one
// call), or where it refuses the shape to one(i) for each. When they are
// fewer, or their outputs overlap (stride 0: written in order), one(i) for
// each on this thread, where gemm may split a large product's rows.
template <class One, class Small>
void over_batch(std::int64_t count, std::int64_t work, bool overlapping, const One& one, const Small& small) {
  if (overlapping || count < 2 * threads()) {
    for (std::int64_t i = 0; i < count; ++i) one(i);
    return;
  }
  const std::int64_t per_chunk = std::max<std::int64_t>(1, kMultiplyAddGrain / std::max<std::int64_t>(1, work));
  parallel_for(count, per_chunk, [&](std::int64_t begin, std::int64_t end) {
    if (small(begin, end)) return;
    for (std::int64_t i = begin; i < end; ++i) one(i);
  });
}

}  // namespace

namespace {

// C_i = op(A_i) op(B_i) + beta C_i (beta 0 or 1). A batch sharing one B:
// one product of all its rows (see gemm for its bits). Otherwise over the
// batch when the matrices are many (the task axis of a task-batched graph):
// each matrix is then one unsplit product (OpenBLAS, or the small-product
// kernel, which takes a thread's whole run of matrices in one call), the
// same bits at any thread count. When they are fewer than two per thread,
// one by one, each split by gemm if large (then equal up to summation
// order, as gemm).
template <class T>
void products_over_batch(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, const T* a,
                         std::int64_t stride_a, const T* b, std::int64_t stride_b, T beta, T* c, std::int64_t stride_c,
                         std::int64_t count) {
  const std::int64_t lda = trans_a ? m : k, ldb = trans_b ? k : n;
  // A matrix B shared by every entry (a broadcast weight) with the A's and
  // C's stacked row after row: the batch is one product of count·m rows,
  // [count·m, k] op(B) -> [count·m, n], which runs at GEMM speed where
  // `count` small products are dominated by per-call overhead.
  if (stride_b == 0 && !trans_a && stride_a == m * k && stride_c == m * n && count > 1)
    return gemm<T>(false, trans_b, count * m, n, k, T(1), a, k, b, ldb, beta, c, n);
  const auto one = [&](std::int64_t i) {
    gemm<T>(trans_a, trans_b, m, n, k, T(1), a + i * stride_a, lda, b + i * stride_b, ldb, beta, c + i * stride_c, n);
  };
  // Outputs that overlap (stride 0) are written in order, one by one.
  over_batch(count, m * n * k, stride_c == 0, one, [&](std::int64_t begin, std::int64_t end) {
    return small_gemm_batched(trans_a, trans_b, m, n, k, T(1), a + begin * stride_a, lda, stride_a,
                              b + begin * stride_b, ldb, stride_b, beta, c + begin * stride_c, n, stride_c,
                              end - begin);
  });
}

}  // namespace

template <class T>
void gemm_batched(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, const T* a,
                  std::int64_t stride_a, const T* b, std::int64_t stride_b, T* c, std::int64_t stride_c,
                  std::int64_t count) {
  products_over_batch<T>(trans_a, trans_b, m, n, k, a, stride_a, b, stride_b, T(0), c, stride_c, count);
}

// beta = 1: the small-product kernel finishes each entry as c + sum,
// rounded once, and OpenBLAS adds each block of k's sum to C the same way,
// so a product summed in one block has the bits of the product then an add.
template <class T>
void gemm_batched_accumulate(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, const T* a,
                             std::int64_t stride_a, const T* b, std::int64_t stride_b, T* c, std::int64_t stride_c,
                             std::int64_t count) {
  products_over_batch<T>(trans_a, trans_b, m, n, k, a, stride_a, b, stride_b, T(1), c, stride_c, count);
}

namespace {

// C (m rows of n, contiguous) = relu(C + bias) in place, entry by entry (bias
// a row of n; null: none; relu: max(·, 0) as the relu kernel takes it): the
// bits of binary add and unary relu, for the layers the small-product
// kernel does not finish itself.
template <class T>
void finish_layer_rows(std::int64_t m, std::int64_t n, const T* bias, bool relu, T* c) {
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      T v = c[i * n + j];
      if (bias != nullptr) v = v + bias[j];
      c[i * n + j] = relu ? kernels::relu(v) : v;
    }
}

}  // namespace

// gemm_batched's products, each finished as a layer: over the batch, as
// gemm_batched runs it, by the small-product kernel in the registers it
// summed in; otherwise each product as gemm_batched computes it, then a
// pass over its C_i. Either way each product is the kernel gemm_batched
// would run on it, so the bits are those of the product, the add and the
// relu in turn.
template <class T>
void linear_batched(std::int64_t m, std::int64_t n, std::int64_t k, const T* a, std::int64_t stride_a, const T* b,
                    std::int64_t stride_b, const T* bias, std::int64_t stride_bias, bool relu, T* c,
                    std::int64_t stride_c, std::int64_t count) {
  const auto finish = [&](std::int64_t i) {
    if (bias != nullptr || relu)
      finish_layer_rows(m, n, bias ? bias + i * stride_bias : nullptr, relu, c + i * stride_c);
  };
  // A shared B: one product of every row (gemm_batched), then the rows.
  if (stride_b == 0 && count > 1) {
    gemm_batched<T>(false, false, m, n, k, a, stride_a, b, stride_b, c, stride_c, count);
    for (std::int64_t i = 0; i < count; ++i) finish(i);
    return;
  }
  const auto one = [&](std::int64_t i) {
    gemm<T>(false, false, m, n, k, T(1), a + i * stride_a, k, b + i * stride_b, n, T(0), c + i * stride_c, n);
    finish(i);
  };
  over_batch(count, m * n * k, stride_c == 0, one, [&](std::int64_t begin, std::int64_t end) {
    return small_linear_batched<T>(false, false, m, n, k, a + begin * stride_a, k, stride_a, b + begin * stride_b, n,
                                   stride_b, c + begin * stride_c, n, stride_c, end - begin,
                                   bias ? bias + begin * stride_bias : nullptr, stride_bias, relu);
  });
}

template void gemm<float>(bool, bool, std::int64_t, std::int64_t, std::int64_t, float, const float*, std::int64_t,
                          const float*, std::int64_t, float, float*, std::int64_t);
template void gemm<double>(bool, bool, std::int64_t, std::int64_t, std::int64_t, double, const double*, std::int64_t,
                           const double*, std::int64_t, double, double*, std::int64_t);

template void gemm_batched<float>(bool, bool, std::int64_t, std::int64_t, std::int64_t, const float*, std::int64_t,
                                  const float*, std::int64_t, float*, std::int64_t, std::int64_t);
template void gemm_batched<double>(bool, bool, std::int64_t, std::int64_t, std::int64_t, const double*, std::int64_t,
                                   const double*, std::int64_t, double*, std::int64_t, std::int64_t);
template void gemm_batched_accumulate<float>(bool, bool, std::int64_t, std::int64_t, std::int64_t, const float*,
                                             std::int64_t, const float*, std::int64_t, float*, std::int64_t,
                                             std::int64_t);
template void gemm_batched_accumulate<double>(bool, bool, std::int64_t, std::int64_t, std::int64_t, const double*,
                                              std::int64_t, const double*, std::int64_t, double*, std::int64_t,
                                              std::int64_t);
template void linear_batched<float>(std::int64_t, std::int64_t, std::int64_t, const float*, std::int64_t, const float*,
                                    std::int64_t, const float*, std::int64_t, bool, float*, std::int64_t, std::int64_t);
template void linear_batched<double>(std::int64_t, std::int64_t, std::int64_t, const double*, std::int64_t,
                                     const double*, std::int64_t, const double*, std::int64_t, bool, double*,
                                     std::int64_t, std::int64_t);

void set_blas_single_threaded() { openblas_set_num_threads(1); }
int blas_threads() { return openblas_get_num_threads(); }
const char* blas_core_name() { return openblas_get_corename(); }

}  // namespace metatape::kernels::cpu
