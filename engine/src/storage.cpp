// The CPU storage pool. Blocks are bucketed by size class (four classes per
// power of two, so at most 25% is wasted to rounding) and kept on a free list
// when their last handle dies; the next allocation of that class reuses one.
// A training loop thus reaches a steady state with no malloc or free.
//
// Why a pool and not a bump arena reset per step: tensors outlive steps (the
// adapted parameters, metrics, optimizer state), and a bump arena would
// leave their handles dangling. A pool gives the same steady state safely.
//
// Each thread has its own pool (no locks). A block freed on a thread other
// than the one that allocated it goes straight back to the system.
#include <bit>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <new>
#include <vector>

#include "metatape/error.hpp"
#include "metatape/tensor.hpp"
#include "storage_pool.hpp"

namespace metatape {
namespace detail {
namespace {

constexpr std::size_t kHeaderBytes = 64;  // Storage header, then 64-byte aligned data
static_assert(sizeof(Storage) <= kHeaderBytes);
constexpr int kNumClasses = 256;

// Rounds `bytes` up to its size class; returns the class index.
int size_class_of(std::size_t bytes, std::size_t* rounded) {
  if (bytes <= 64) {
    *rounded = 64;
    return 0;
  }
  const int p = std::bit_width(bytes - 1) - 1;  // 2^p < bytes <= 2^(p+1), p >= 6
  const std::size_t step = std::size_t{1} << (p - 2);
  const std::size_t sub = (bytes - (std::size_t{1} << p) + step - 1) / step;  // 1..4
  *rounded = (std::size_t{1} << p) + sub * step;
  return (p - 6) * 4 + static_cast<int>(sub);
}

struct Pool {
  std::vector<Storage*> free_lists[kNumClasses];
  PoolStats stats;
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
    stats.bytes_cached = 0;
  }
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

}  // namespace

Storage* allocate_storage(std::size_t bytes, DType dtype) {
  std::size_t rounded = 0;
  const int cls = size_class_of(bytes, &rounded);
  if (cls >= kNumClasses) throw ValueError("allocation of " + std::to_string(bytes) + " bytes is too large");
  Pool* pool = this_thread_pool();
  Storage* s = nullptr;
  if (pool && !pool->free_lists[cls].empty()) {
    s = pool->free_lists[cls].back();
    pool->free_lists[cls].pop_back();
    pool->stats.bytes_cached -= rounded;
    s->refs.store(1, std::memory_order_relaxed);
  } else {
    // aligned_alloc wants a size that is a multiple of the alignment.
    void* block = std::aligned_alloc(64, (kHeaderBytes + rounded + 63) / 64 * 64);
    if (!block) throw std::bad_alloc();
    s = new (block) Storage;
    s->size_class = cls;
    s->capacity = rounded;
    s->data = static_cast<char*>(block) + kHeaderBytes;
    if (pool) ++pool->stats.system_allocations;
  }
  s->device = Device::cpu;
  s->owner = pool;
  if (pool) {
    pool->stats.bytes_in_use += rounded;
    if (pool->stats.bytes_in_use > pool->stats.peak_bytes_in_use)
      pool->stats.peak_bytes_in_use = pool->stats.bytes_in_use;
    if (pool->poison) poison_bytes(s->data, bytes, dtype);
  }
  return s;
}

void release_storage(Storage* storage) noexcept {
  Pool* pool = tls_pool;
  if (pool && storage->owner == pool) {
    pool->stats.bytes_in_use -= storage->capacity;
    // push_back may allocate while the list grows; if that fails, free the
    // block rather than let an exception escape a destructor.
    try {
      pool->free_lists[storage->size_class].push_back(storage);
      pool->stats.bytes_cached += storage->capacity;
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
  return pool ? pool->stats : PoolStats{};
}

void reset_pool_peak() {
  if (detail::Pool* pool = detail::this_thread_pool()) pool->stats.peak_bytes_in_use = pool->stats.bytes_in_use;
}

void release_cached_storage() {
  if (detail::Pool* pool = detail::this_thread_pool()) pool->release_cached();
}

void set_poison_allocations(bool on) {
  if (detail::Pool* pool = detail::this_thread_pool()) pool->poison = on;
}

}  // namespace metatape
