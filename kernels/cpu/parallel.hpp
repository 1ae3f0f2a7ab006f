// The CPU kernels' one thread pool. Every kernel that runs on more than one
// core goes through parallel_for; OpenBLAS itself is kept at one thread, so
// the pool is the only source of threads and `set_threads` (the engine's
// set_num_threads, the CLI's --threads) decides them all.
//
// Determinism: how [0, n) is cut into chunks depends only on n, the grain
// and the thread count, never on timing, and each chunk is computed by one
// thread in a fixed order. A kernel whose chunks write disjoint outputs is
// therefore bit-identical across thread counts; one that sums chunk results
// differs only by that summation order, and is bit-identical at a fixed
// thread count.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

namespace metatape::kernels::cpu {

// Threads the CPU kernels use (>= 1), the calling thread included.
void set_threads(int threads);
int threads();

// Whether this thread is running a chunk of a parallel_for now: a nested
// parallel_for runs serially on it.
bool in_parallel_region();

// The threads a kernel called here may use: 1 inside a parallel region,
// threads() elsewhere (what sizes a kernel's per-worker scratch).
int available_threads();

// How many parallel_for calls have been handed to the pool's threads since
// the program started (for tests that check which work is split).
std::uint64_t pool_jobs();

// A borrowed callable: body(begin, end). Not owning, so no allocation per
// call; valid for the duration of the parallel_for that receives it.
class RangeBody {
 public:
  template <class F>
  requires(!std::is_same_v<std::remove_cvref_t<F>, RangeBody>)
      RangeBody(F&& f)  // NOLINT: implicit on purpose, like std::function_ref
      : object_(const_cast<void*>(static_cast<const void*>(&f))),
        call_([](void* o, std::int64_t b, std::int64_t e) { (*static_cast<std::remove_reference_t<F>*>(o))(b, e); }) {}
  void operator()(std::int64_t begin, std::int64_t end) const { call_(object_, begin, end); }

 private:
  void* object_;
  void (*call_)(void*, std::int64_t, std::int64_t);
};

// Elements per chunk below which an elementwise loop is not worth a second
// thread (about 10 us of work, a few times what handing a chunk over costs):
// loops that stream memory (copies, adds), and loops that evaluate exp,
// tanh or a division per element.
inline constexpr std::int64_t kStreamGrain = std::int64_t{1} << 15;
inline constexpr std::int64_t kMathGrain = std::int64_t{1} << 12;
// Multiply-adds (a product's m·n·k, a convolution's share of it) of the
// smallest block handed to a thread: about 40 us of one core's work, many
// times the cost of waking a pool thread.
inline constexpr std::int64_t kMultiplyAddGrain = std::int64_t{1} << 21;
// Values per chunk of the kernels that take whole planes or slices (max-pool,
// batch norm), below which a second thread does not pay.
inline constexpr std::int64_t kPlaneGrain = std::int64_t{1} << 14;

// The grain of a parallel_for over items of `item_size` elements each: the
// items that make a chunk of at least `chunk_elements`, and at least one.
inline std::int64_t items_grain(std::int64_t item_size, std::int64_t chunk_elements = kStreamGrain) {
  const std::int64_t size = item_size > 1 ? item_size : 1;
  return chunk_elements / size > 1 ? chunk_elements / size : 1;
}

// The number of chunks parallel_for(n, grain, ...) cuts [0, n) into: at most
// threads(), and none smaller than `grain` items (so small work stays on the
// calling thread, which costs no more than a plain loop).
std::int64_t parallel_chunks(std::int64_t n, std::int64_t grain);

// While alive, this thread counts as inside a parallel region: every kernel
// it calls runs unsplit, exactly as at one thread.
class UnsplitRegion {
 public:
  UnsplitRegion();
  ~UnsplitRegion();
  UnsplitRegion(const UnsplitRegion&) = delete;
  UnsplitRegion& operator=(const UnsplitRegion&) = delete;

 private:
  bool previous_;
};

// Runs body(begin, end) over contiguous chunks covering [0, n): chunk i is
// [n·i/c, n·(i+1)/c) for c = parallel_chunks(n, grain). The calling thread
// takes chunks too, and which thread takes which is left to timing (only
// the chunks themselves are fixed). While another thread's parallel_for
// holds the pool, this one runs its chunks itself, in order, rather than
// wait. Returns when every chunk is done; the first exception a chunk
// throws is rethrown here (after the others have finished).
void parallel_for(std::int64_t n, std::int64_t grain, RangeBody body);

// For items that are whole computations (one task's meta-gradient), not the
// loop of a kernel: body(begin, end) over at most threads() contiguous runs
// of [0, n), each run whole on one thread and inside an UnsplitRegion, so
// that every kernel it calls runs as at one thread and what a run computes
// does not depend on the thread count. While a kernel recording is active
// on this thread (it sees only this thread's calls) or another thread's job
// holds the pool, the runs go on this thread, in order. The first exception
// a run throws is rethrown once every run is done.
void parallel_for_unsplit(std::int64_t n, RangeBody body);

}  // namespace metatape::kernels::cpu
