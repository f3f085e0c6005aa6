// Page allocate/release throughput: PagePool against a mutex-guarded free list and against
// malloc/free of the same size, from 1 and 2 threads. Each iteration takes a burst of 16 pages
// and gives them back, as a stream that recycles a window does.
#include <benchmark/benchmark.h>
#include <mimalloc.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "kvcache/page_pool.h"

namespace {

constexpr std::size_t kPageBytes = 4096;  // stories260K, 16 tokens, f32: 16 x 4 x 8 x 4 x 2
constexpr std::size_t kPages = 1 << 14;
constexpr int kBurst = 16;

kvcache::PagePool& shared_pool() {
  static kvcache::PagePool pool({kPageBytes, kPages * kPageBytes});
  return pool;
}

// The baseline: one std::mutex around a vector of free page ids over one arena.
class MutexFreeList {
 public:
  MutexFreeList() : arena_(static_cast<std::byte*>(mi_malloc_aligned(kPages * kPageBytes, 64))) {
    for (std::uint32_t i = kPages; i-- > 0;) free_.push_back(i);
  }
  ~MutexFreeList() { mi_free(arena_); }
  std::uint32_t allocate() {
    std::lock_guard lock(mutex_);
    const std::uint32_t id = free_.back();
    free_.pop_back();
    return id;
  }
  void release(std::uint32_t id) {
    std::lock_guard lock(mutex_);
    free_.push_back(id);
  }
  std::byte* data(std::uint32_t id) { return arena_ + std::size_t{id} * kPageBytes; }

 private:
  std::byte* arena_;
  std::mutex mutex_;
  std::vector<std::uint32_t> free_;
};

MutexFreeList& shared_mutex_list() {
  static MutexFreeList list;
  return list;
}

void BM_PagePool(benchmark::State& state) {
  kvcache::PagePool& pool = shared_pool();
  std::uint32_t ids[kBurst];
  for (auto _ : state) {
    for (std::uint32_t& id : ids) {
      id = pool.allocate();
      *pool.data(id) = std::byte{1};  // touch, as a user would
    }
    for (std::uint32_t id : ids) pool.release(id);
  }
  state.SetItemsProcessed(state.iterations() * kBurst);
}

void BM_MutexFreeList(benchmark::State& state) {
  MutexFreeList& list = shared_mutex_list();
  std::uint32_t ids[kBurst];
  for (auto _ : state) {
    for (std::uint32_t& id : ids) {
      id = list.allocate();
      *list.data(id) = std::byte{1};
    }
    for (std::uint32_t id : ids) list.release(id);
  }
  state.SetItemsProcessed(state.iterations() * kBurst);
}

void BM_Malloc(benchmark::State& state) {
  void* ptrs[kBurst];
  for (auto _ : state) {
    for (void*& p : ptrs) {
      p = std::malloc(kPageBytes);
      benchmark::DoNotOptimize(p);
      *static_cast<char*>(p) = 1;
    }
    for (void* p : ptrs) std::free(p);
  }
  state.SetItemsProcessed(state.iterations() * kBurst);
}

void BM_MimallocAligned(benchmark::State& state) {
  void* ptrs[kBurst];
  for (auto _ : state) {
    for (void*& p : ptrs) {
      p = mi_malloc_aligned(kPageBytes, 64);
      benchmark::DoNotOptimize(p);
      *static_cast<char*>(p) = 1;
    }
    for (void* p : ptrs) mi_free(p);
  }
  state.SetItemsProcessed(state.iterations() * kBurst);
}

}  // namespace

BENCHMARK(BM_PagePool)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_MutexFreeList)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_Malloc)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_MimallocAligned)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_MAIN();
