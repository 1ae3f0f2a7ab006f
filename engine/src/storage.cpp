// CPU tensor storage, in two tiers, so that a training loop reaches a steady
// state with no malloc or free and a resident size close to its peak use.
//
// Small blocks (under 1 MiB) come from a per-thread pool of size classes
// (four per power of two: at most 25% lost to rounding) with a free list per
// class; a freed block waits there for the next request of its class, or of
// one of the four classes below it. No locks. A small block freed on another
// thread goes straight back to the system.
//
// Large blocks are carved best-fit out of big segments, split when much
// larger than asked and coalesced with free neighbours when released — what
// PyTorch's caching allocator does. Large tensors of changing sizes (a
// forward pass, then its gradients) then share memory instead of each size
// class holding its own copy. The segments are process-wide, under a mutex
// (a large block is rare next to the work on it). Segment memory is only
// touched, and so only resident, where a tensor has lived.
//
// Why not a bump arena reset per step: tensors outlive steps (adapted
// parameters, metrics, optimiser state), and their handles would dangle.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <new>
#include <set>
#include <utility>
#include <vector>

#include "backend.hpp"
#include "cpu_capture.hpp"
#include "kernels/size_classes.hpp"
#include "metatape/error.hpp"
#include "metatape/tensor.hpp"
#include "storage_pool.hpp"
#ifdef METATAPE_CUDA
#include "kernels/cuda/runtime.hpp"
#endif

namespace metatape {
namespace detail {
namespace {

constexpr std::size_t kHeaderBytes = 64;  // the Storage header, then 64-byte aligned data
static_assert(sizeof(Storage) <= kHeaderBytes);
constexpr int kNumClasses = 256;
constexpr std::size_t kLargeBytes = std::size_t{1} << 20;  // data this large goes to the large tier
constexpr std::size_t kPageBytes = 4096;
constexpr std::size_t kSegmentBytes = std::size_t{2} << 20;  // the least a new segment reserves

std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

void poison_bytes(void* data, std::size_t bytes, DType dtype) {
  if (dtype == DType::f32) {
    auto* p = static_cast<float*>(data);
    for (std::size_t i = 0; i < bytes / sizeof(float); ++i) p[i] = std::numeric_limits<float>::infinity();
  } else if (dtype == DType::f64) {
    auto* p = static_cast<double*>(data);
    for (std::size_t i = 0; i < bytes / sizeof(double); ++i) p[i] = std::numeric_limits<double>::infinity();
  } else {
    auto* p = static_cast<std::int64_t*>(data);
    for (std::size_t i = 0; i < bytes / sizeof(std::int64_t); ++i) p[i] = std::numeric_limits<std::int64_t>::min();
  }
}

// --- the large tier ---------------------------------------------------------

struct LargeBlock {
  char* base = nullptr;  // the Storage header; data follows it
  std::size_t size = 0;  // whole block, header included, a multiple of pages
  bool free = true;
  LargeBlock* prev = nullptr;  // address-order neighbours within one segment
  LargeBlock* next = nullptr;
};

class LargeHeap {
 public:
  LargeBlock* take(std::size_t bytes) {
    std::lock_guard lock(mutex_);
    auto it = free_.lower_bound({bytes, nullptr});  // the smallest block that fits
    LargeBlock* b;
    if (it == free_.end()) {
      const std::size_t size = std::max(bytes, kSegmentBytes);
      void* memory = std::aligned_alloc(kPageBytes, size);
      if (!memory) throw std::bad_alloc();
      b = new LargeBlock{static_cast<char*>(memory), size, true, nullptr, nullptr};
      cached_ += size;
      system_allocations_.fetch_add(1, std::memory_order_relaxed);
    } else {
      b = it->second;
      free_.erase(it);
    }
    if (b->size - bytes >= kLargeBytes) {  // keep the rest for others
      auto* rest = new LargeBlock{b->base + bytes, b->size - bytes, true, b, b->next};
      if (b->next) b->next->prev = rest;
      b->next = rest;
      b->size = bytes;
      free_.insert({rest->size, rest});
    }
    b->free = false;
    cached_ -= b->size;
    in_use_.fetch_add(b->size, std::memory_order_relaxed);
    return b;
  }

  void give_back(LargeBlock* b) noexcept {
    std::lock_guard lock(mutex_);
    in_use_.fetch_sub(b->size, std::memory_order_relaxed);
    cached_ += b->size;
    b->free = true;
    if (b->next && b->next->free) absorb_next(b);
    if (b->prev && b->prev->free) {
      b = b->prev;
      free_.erase({b->size, b});
      absorb_next(b);
    }
    try {
      free_.insert({b->size, b});
    } catch (...) {  // out of memory for the index: the block stays unusable, not lost to a crash
    }
  }

  // Returns whole free segments to the system.
  void release_unused() {
    std::lock_guard lock(mutex_);
    for (auto it = free_.begin(); it != free_.end();) {
      LargeBlock* b = it->second;
      if (b->prev || b->next) {
        ++it;
        continue;
      }
      it = free_.erase(it);
      cached_ -= b->size;
      std::free(b->base);
      delete b;
    }
  }

  std::size_t in_use() const { return in_use_.load(std::memory_order_relaxed); }
  std::size_t cached() {
    std::lock_guard lock(mutex_);
    return cached_;
  }
  std::size_t system_allocations() const { return system_allocations_.load(std::memory_order_relaxed); }

 private:
  // Merges b->next into b, dropping it from the free index if it is there.
  void absorb_next(LargeBlock* b) noexcept {
    LargeBlock* n = b->next;
    free_.erase({n->size, n});
    b->size += n->size;
    b->next = n->next;
    if (n->next) n->next->prev = b;
    delete n;
  }

  std::mutex mutex_;
  std::set<std::pair<std::size_t, LargeBlock*>> free_;  // by size, then address: best fit
  std::size_t cached_ = 0;
  std::atomic<std::size_t> in_use_{0}, system_allocations_{0};
};

// Never destroyed: a tensor may be released during static destruction.
LargeHeap& large_heap() {
  static LargeHeap* heap = new LargeHeap;
  return *heap;
}

// --- the small tier ------------------------------------------------------------

// Rounds `bytes` up to its size class (64 bytes at least); returns the class index.
int size_class_of(std::size_t bytes, std::size_t* rounded) { return kernels::size_class_of<6>(bytes, rounded); }

struct Pool {
  std::vector<Storage*> free_lists[kNumClasses];
  std::size_t small_in_use = 0, small_cached = 0, small_system_allocations = 0, peak = 0;
  bool poison = false;

  ~Pool() { release_cached(); }

  void release_cached() {
    for (auto& list : free_lists) {
      for (Storage* s : list) {
        s->~Storage();
        std::free(s);
      }
      list.clear();
    }
    small_cached = 0;
  }

  void note_peak() { peak = std::max(peak, small_in_use + large_heap().in_use()); }
};

// Trivially destructible thread-locals survive the pool's own destruction,
// so a tensor released during thread or program exit still finds out that
// the pool is gone and frees its block directly.
thread_local Pool* tls_pool = nullptr;
thread_local bool tls_pool_dead = false;

struct PoolOwner {
  Pool pool;
  PoolOwner() { tls_pool = &pool; }
  ~PoolOwner() {
    tls_pool = nullptr;
    tls_pool_dead = true;
  }
};

Pool* this_thread_pool() {
  if (tls_pool) return tls_pool;
  if (tls_pool_dead) return nullptr;
  thread_local PoolOwner owner;
  return tls_pool;
}

Storage* allocate_large(std::size_t bytes) {
  LargeBlock* b = large_heap().take(round_up(kHeaderBytes + bytes, kPageBytes));
  Storage* s = new (b->base) Storage;
  s->size_class = -1;
  s->capacity = b->size - kHeaderBytes;
  s->data = b->base + kHeaderBytes;
  s->block = b;
  return s;
}

Storage* allocate_small(std::size_t bytes, Pool* pool) {
  std::size_t rounded = 0;
  const int cls = size_class_of(bytes, &rounded);
  // A cached block of this class, or of one of the next four (at most twice
  // the size): classes then lend to one another instead of each growing.
  for (int c = cls; pool && c < std::min(cls + 5, kNumClasses); ++c) {
    if (pool->free_lists[c].empty()) continue;
    Storage* s = pool->free_lists[c].back();
    pool->free_lists[c].pop_back();
    pool->small_cached -= s->capacity;
    s->refs.store(1, std::memory_order_relaxed);
    return s;
  }
  // aligned_alloc wants a size that is a multiple of the alignment.
  void* memory = std::aligned_alloc(64, round_up(kHeaderBytes + rounded, 64));
  if (!memory) throw std::bad_alloc();
  Storage* s = new (memory) Storage;
  s->size_class = cls;
  s->capacity = rounded;
  s->data = static_cast<char*>(memory) + kHeaderBytes;
  if (pool) ++pool->small_system_allocations;
  return s;
}

// Device storage: the header on the host, the data from the CUDA caching
// pool (kernels/cuda/runtime.hpp).
Storage* allocate_device(std::size_t bytes, DType dtype, Device device) {
#ifdef METATAPE_CUDA
  std::string reason;
  if (kernels::cuda::usable_devices(&reason) == 0) throw DeviceError("cannot allocate on cuda: " + reason);
  auto* s = new Storage;
  s->device = device;
  s->size_class = -2;
  try {
    s->data = on_device([&] { return kernels::cuda::device_allocate(bytes, &s->capacity, &s->owner); });
  } catch (...) {
    delete s;
    throw;
  }
  Pool* pool = this_thread_pool();
  if (pool && pool->poison)
    dispatch_any(device, dtype, [&]<class K, class T>() {
      const T poison =
          std::numeric_limits<T>::has_infinity ? std::numeric_limits<T>::infinity() : std::numeric_limits<T>::min();
      K::template fill<T>(static_cast<T*>(s->data), static_cast<std::int64_t>(bytes / sizeof(T)), poison);
    });
  return s;
#else
  (void)bytes;
  (void)dtype;
  throw DeviceError(std::string("cannot allocate on ") + device_name(device) +
                    ": this build of metatape has no CUDA backend (nvcc was not found when it was configured)");
#endif
}

}  // namespace

Storage* allocate_storage(std::size_t bytes, DType dtype, Device device) {
  if (bytes > (std::size_t{1} << 52))
    throw ValueError("allocation of " + std::to_string(bytes) + " bytes is too large");
  if (device != Device::cpu) return allocate_device(bytes, dtype, device);
  CpuCapture* capture = active_cpu_capture;
  if (capture) [[unlikely]]
    if (Storage* s = capture->reuse(bytes)) return s;
  Pool* pool = this_thread_pool();
  Storage* s = bytes >= kLargeBytes ? allocate_large(bytes) : allocate_small(bytes, pool);
  s->device = Device::cpu;
  s->owner = s->block ? nullptr : pool;
  if (pool) {
    if (!s->block) pool->small_in_use += s->capacity;
    pool->note_peak();
    if (pool->poison) poison_bytes(s->data, bytes, dtype);
  }
  if (capture) [[unlikely]]
    capture->adopt(s);
  return s;
}

void release_storage(Storage* storage) noexcept {
#ifdef METATAPE_CUDA
  if (storage->device != Device::cpu) {
    kernels::cuda::device_release(storage->data, storage->capacity, storage->owner);
    delete storage;
    return;
  }
#endif
  if (storage->block) {
    LargeBlock* b = static_cast<LargeBlock*>(storage->block);
    storage->~Storage();
    large_heap().give_back(b);
    return;
  }
  Pool* pool = tls_pool;
  if (pool && storage->owner == pool) {
    pool->small_in_use -= storage->capacity;
    // push_back may allocate while the list grows; if that fails, free the
    // block rather than let an exception escape a destructor.
    try {
      pool->free_lists[storage->size_class].push_back(storage);
      pool->small_cached += storage->capacity;
      return;
    } catch (...) {
    }
  }
  storage->~Storage();
  std::free(storage);
}

}  // namespace detail

PoolStats pool_stats() {
  detail::Pool* pool = detail::this_thread_pool();
  detail::LargeHeap& large = detail::large_heap();
  PoolStats stats;
  stats.bytes_in_use = large.in_use() + (pool ? pool->small_in_use : 0);
  stats.bytes_cached = large.cached() + (pool ? pool->small_cached : 0);
  stats.peak_bytes_in_use = pool ? std::max(pool->peak, stats.bytes_in_use) : stats.bytes_in_use;
  stats.system_allocations = large.system_allocations() + (pool ? pool->small_system_allocations : 0);
  return stats;
}

void reset_pool_peak() {
  if (detail::Pool* pool = detail::this_thread_pool()) pool->peak = pool->small_in_use + detail::large_heap().in_use();
}

void release_cached_storage() {
  if (detail::Pool* pool = detail::this_thread_pool()) pool->release_cached();
  detail::large_heap().release_unused();
}

}  // namespace metatape

namespace metatape::testing {

void set_poison_allocations(bool on) {
  if (detail::Pool* pool = detail::this_thread_pool()) pool->poison = on;
}

}  // namespace metatape::testing
