#include "parallel.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "recording.hpp"

namespace metatape::kernels::cpu {
namespace {

thread_local bool inside_chunk = false;

// Workers sleep on `wake` until a job's generation number changes, claim
// chunks from `next_chunk`, and report through `chunks_done`; `active`
// counts the workers inside a job, and a new job starts only when it is 0.
// One job at a time: `job_lock` is held by the thread that submitted it.
class Pool {
 public:
  ~Pool() { resize(0); }

  int size() const { return static_cast<int>(workers_.size()); }

  // `helpers` worker threads besides the caller; joins or starts threads.
  void resize(int helpers) {
    std::lock_guard job(job_lock_);
    {
      std::lock_guard lock(state_lock_);
      stopping_ = true;
      ++generation_;
    }
    wake_.notify_all();
    for (std::thread& t : workers_) t.join();
    workers_.clear();
    stopping_ = false;
    for (int i = 0; i < helpers; ++i) workers_.emplace_back([this] { work(); });
  }

  // Runs the job if the pool is free; false if another thread's job holds
  // it (the caller then runs serially rather than wait).
  bool run(std::int64_t n, std::int64_t chunks, RangeBody body) {
    std::unique_lock job(job_lock_, std::try_to_lock);
    if (!job.owns_lock()) return false;
    {
      // A worker still leaving the previous job reads its fields: wait for it.
      std::unique_lock lock(state_lock_);
      done_.wait(lock, [&] { return active_ == 0; });
      n_ = n;
      chunks_ = chunks;
      body_ = &body;
      error_ = nullptr;
      next_chunk_.store(0);
      chunks_done_.store(0);
      ++generation_;
    }
    wake_.notify_all();
    claim_chunks();
    {
      std::unique_lock lock(state_lock_);
      done_.wait(lock, [&] { return chunks_done_.load() == chunks_; });
      body_ = nullptr;
    }
    if (error_) std::rethrow_exception(error_);
    return true;
  }

 private:
  void work() {
    std::uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock lock(state_lock_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (stopping_) return;
        ++active_;
      }
      claim_chunks();
      std::lock_guard lock(state_lock_);
      if (--active_ == 0) done_.notify_all();
    }
  }

  // Takes chunks until none is left; the last one done wakes the submitter.
  void claim_chunks() {
    for (;;) {
      const std::int64_t i = next_chunk_.fetch_add(1);
      if (i >= chunks_) return;
      const std::int64_t begin = n_ * i / chunks_, end = n_ * (i + 1) / chunks_;
      inside_chunk = true;
      try {
        (*body_)(begin, end);
      } catch (...) {
        std::lock_guard lock(state_lock_);
        if (!error_) error_ = std::current_exception();
      }
      inside_chunk = false;
      if (chunks_done_.fetch_add(1) + 1 == chunks_) {
        std::lock_guard lock(state_lock_);
        done_.notify_all();
      }
    }
  }

  std::mutex job_lock_;
  std::mutex state_lock_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  std::uint64_t generation_ = 0;
  bool stopping_ = false;
  int active_ = 0;
  std::int64_t n_ = 0, chunks_ = 0;
  const RangeBody* body_ = nullptr;
  std::exception_ptr error_;
  std::atomic<std::int64_t> next_chunk_{0}, chunks_done_{0};
};

Pool& pool() {
  static Pool instance;
  return instance;
}

std::atomic<int> thread_count{1};
std::atomic<std::uint64_t> jobs_run{0};

}  // namespace

void set_threads(int threads) {
  threads = std::max(threads, 1);
  if (threads == thread_count.load()) return;
  pool().resize(threads - 1);
  thread_count.store(threads);
}

int threads() { return thread_count.load(); }

bool in_parallel_region() { return inside_chunk; }

int available_threads() { return inside_chunk ? 1 : thread_count.load(); }

UnsplitRegion::UnsplitRegion() : previous_(inside_chunk) { inside_chunk = true; }
UnsplitRegion::~UnsplitRegion() { inside_chunk = previous_; }

std::uint64_t pool_jobs() { return jobs_run.load(); }

std::int64_t parallel_chunks(std::int64_t n, std::int64_t grain) {
  if (inside_chunk || n <= 0) return 1;
  const std::int64_t by_grain = n / std::max<std::int64_t>(grain, 1);
  return std::clamp<std::int64_t>(by_grain, 1, thread_count.load());
}

void parallel_for(std::int64_t n, std::int64_t grain, RangeBody body) {
  if (n <= 0) return;
  const std::int64_t chunks = parallel_chunks(n, grain);
  if (chunks > 1 && pool().run(n, chunks, body)) {
    jobs_run.fetch_add(1);
    return;
  }
  // Serially, the same chunks in order: a kernel that sums per chunk gives
  // the same bits whether or not the pool was free. Several chunks count as
  // inside the parallel region, as on the pool, so that what they call (a
  // GEMM) does not split where a pool thread's chunk would not.
  const bool outer = inside_chunk;
  inside_chunk = outer || chunks > 1;
  try {
    for (std::int64_t i = 0; i < chunks; ++i) body(n * i / chunks, n * (i + 1) / chunks);
  } catch (...) {
    inside_chunk = outer;
    throw;
  }
  inside_chunk = outer;
}

void parallel_for_unsplit(std::int64_t n, RangeBody body) {
  if (n <= 0) return;
  // A pool chunk runs inside the parallel region already (claim_chunks).
  const std::int64_t chunks = detail::active_recording ? 1 : parallel_chunks(n, 1);
  if (chunks > 1 && pool().run(n, chunks, body)) {
    jobs_run.fetch_add(1);
    return;
  }
  const UnsplitRegion unsplit;
  for (std::int64_t i = 0; i < chunks; ++i) body(n * i / chunks, n * (i + 1) / chunks);
}

}  // namespace metatape::kernels::cpu
