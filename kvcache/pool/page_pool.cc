// PagePool: pages are dense ids into lazily carved arenas. Free pages sit first in per-thread
// caches (oneTBB enumerable_thread_specific; each guarded by a spin lock its owner almost never
// contends), then on a global lock-free LIFO stack (a Treiber stack with a generation tag in the
// head word against ABA). LIFO hands back the most recently freed page, the one most likely
// still in cache. A thread that finds no page anywhere else steals from other threads' caches
// before reporting exhaustion, so the budget is exact: allocation fails only when every page
// is in use.
#include "kvcache/page_pool.h"

#include <mimalloc.h>
#include <oneapi/tbb/cache_aligned_allocator.h>
#include <oneapi/tbb/enumerable_thread_specific.h>
#include <sanitizer/asan_interface.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kvcache/error.h"

namespace kvcache {
namespace {

constexpr std::size_t kAlign = 64;
// Arenas of at least one huge page are aligned to it and advised as huge-page backed: attention
// walks a head's rows page after page, and with 4 KiB pages every 4 KiB costs a TLB miss.
constexpr std::size_t kHugePage = std::size_t{2} << 20;
constexpr std::uint32_t kNil = 0xffffffffu;  // end of the free stack

// Per-page record; lives beside its arena, never moves.
struct PageSlot {
  std::atomic<std::uint32_t> next{kNil};  // next id on the free stack
  std::atomic<bool> in_use{false};        // guards against double release
};

struct ArenaFree {
  void operator()(std::byte* p) const { mi_free(p); }
};

// A thread's private stash of free pages.
struct LocalCache {
  static constexpr std::uint32_t kCapacity = 64;  // spill half to the global stack when full
  std::atomic_flag busy;                          // spin lock: the owner, or a thief
  std::uint32_t n = 0;
  PageId ids[kCapacity];

  void lock() {
    while (busy.test_and_set(std::memory_order_acquire)) std::this_thread::yield();
  }
  void unlock() { busy.clear(std::memory_order_release); }
};

using LocalCaches = tbb::enumerable_thread_specific<LocalCache, tbb::cache_aligned_allocator<LocalCache>,
                                                    tbb::ets_key_per_instance>;

// The head word: low 32 bits a page id (kNil when empty), high 32 bits a generation tag.
constexpr std::uint64_t pack(std::uint32_t id, std::uint32_t tag) { return (std::uint64_t{tag} << 32) | id; }
constexpr std::uint32_t head_id(std::uint64_t w) { return static_cast<std::uint32_t>(w); }
constexpr std::uint32_t head_tag(std::uint64_t w) { return static_cast<std::uint32_t>(w >> 32); }

}  // namespace

struct PagePool::State {
  std::size_t page_bytes = 0;       // after rounding to kAlign
  std::size_t pages_per_arena = 0;  // pages carved per arena
  std::size_t pages_max = 0;        // budget in pages
  std::size_t arenas_max = 0;       // ceil(pages_max / pages_per_arena)

  // Fixed-size tables indexed by arena, published with release stores once carved.
  std::vector<std::atomic<std::byte*>> arena_data;
  std::vector<std::atomic<PageSlot*>> arena_slots;
  // Owners of the arenas (touched only under grow_mutex and in the destructor).
  std::vector<std::unique_ptr<std::byte, ArenaFree>> arena_owner;
  std::vector<std::unique_ptr<PageSlot[]>> slot_owner;

  std::atomic<std::uint64_t> free_head{pack(kNil, 0)};
  std::atomic<std::size_t> n_arenas{0};
  std::atomic<std::size_t> pages_reserved{0};
  std::atomic<std::size_t> pages_in_use{0};
  std::atomic<std::size_t> high_water{0};
  std::atomic<std::uint64_t> failed{0};
  std::mutex grow_mutex;              // serialises carving a new arena
  LocalCaches caches;                 // per-thread stashes of free pages
  std::mutex registry_mutex;          // guards `registry`
  std::vector<LocalCache*> registry;  // every cache ever created, for stealing

  LocalCache& local() {
    bool exists = false;
    LocalCache& c = caches.local(exists);
    if (!exists) {
      std::lock_guard lock(registry_mutex);
      registry.push_back(&c);
    }
    return c;
  }

  // Moves up to `want` pages from the global stack into `c` (locked by the caller).
  void refill(LocalCache& c, std::uint32_t want) {
    while (c.n < want) {
      const std::optional<PageId> id = pop();
      if (!id) return;
      c.ids[c.n++] = *id;
    }
  }

  // Takes one page from another thread's cache; nullopt if all are empty.
  std::optional<PageId> steal(const LocalCache& self) {
    std::lock_guard lock(registry_mutex);
    for (LocalCache* c : registry) {
      if (c == &self) continue;
      c->lock();
      std::optional<PageId> id;
      if (c->n > 0) id = c->ids[--c->n];
      c->unlock();
      if (id) return id;
    }
    return std::nullopt;
  }

  // Under AddressSanitizer free pages are poisoned, so a stale page pointer or an overrun into a
  // neighbouring page is reported even though all pages share one mimalloc arena (the macros are
  // no-ops in other builds).
  void poison(PageId id) const { ASAN_POISON_MEMORY_REGION(page_ptr(id), page_bytes); }
  void unpoison(PageId id) const { ASAN_UNPOISON_MEMORY_REGION(page_ptr(id), page_bytes); }
  std::byte* page_ptr(PageId id) const {
    return arena_data[id / pages_per_arena].load(std::memory_order_acquire) +
           (id % pages_per_arena) * page_bytes;
  }

  PageSlot* slot(PageId id) const {
    const std::size_t a = id / pages_per_arena;
    if (a >= arenas_max) return nullptr;
    PageSlot* slots = arena_slots[a].load(std::memory_order_acquire);
    return slots == nullptr ? nullptr : slots + id % pages_per_arena;
  }

  void push(PageId id) {
    PageSlot* s = slot(id);
    std::uint64_t head = free_head.load(std::memory_order_relaxed);
    for (;;) {
      s->next.store(head_id(head), std::memory_order_relaxed);
      if (free_head.compare_exchange_weak(head, pack(id, head_tag(head) + 1), std::memory_order_release,
                                          std::memory_order_relaxed)) {
        return;
      }
    }
  }

  std::optional<PageId> pop() {
    std::uint64_t head = free_head.load(std::memory_order_acquire);
    for (;;) {
      const std::uint32_t id = head_id(head);
      if (id == kNil) return std::nullopt;
      // A stale `next` is harmless: the tag makes the CAS fail if the head moved meanwhile.
      const std::uint32_t next = slot(id)->next.load(std::memory_order_relaxed);
      if (free_head.compare_exchange_weak(head, pack(next, head_tag(head) + 1), std::memory_order_acquire,
                                          std::memory_order_acquire)) {
        return id;
      }
    }
  }

  // Carves one more arena if the budget allows; false when it does not.
  bool grow() {
    std::lock_guard lock(grow_mutex);
    if (head_id(free_head.load(std::memory_order_acquire)) != kNil) {
      return true;  // another thread refilled the stack while we waited
    }
    const std::size_t a = n_arenas.load(std::memory_order_relaxed);
    if (a >= arenas_max) return false;
    const std::size_t first = a * pages_per_arena;
    const std::size_t count = std::min(pages_per_arena, pages_max - first);
    const std::size_t bytes = count * page_bytes;
    const std::size_t align = bytes >= kHugePage ? kHugePage : kAlign;
    auto* raw = static_cast<std::byte*>(mi_malloc_aligned(bytes, align));
    if (raw == nullptr) return false;
#ifdef MADV_HUGEPAGE
    if (align == kHugePage) ::madvise(raw, bytes / kHugePage * kHugePage, MADV_HUGEPAGE);  // advisory only
#endif
    arena_owner.emplace_back(raw);
    slot_owner.emplace_back(std::make_unique<PageSlot[]>(pages_per_arena));
    arena_data[a].store(raw, std::memory_order_release);
    arena_slots[a].store(slot_owner.back().get(), std::memory_order_release);
    n_arenas.store(a + 1, std::memory_order_release);
    pages_reserved.fetch_add(count, std::memory_order_relaxed);
    // Push in reverse so the lowest id is handed out first.
    ASAN_POISON_MEMORY_REGION(raw, bytes);
    for (std::size_t i = count; i-- > 0;) push(static_cast<PageId>(first + i));
    return true;
  }
};

PagePool::PagePool(const PagePoolOptions& options) : state_(std::make_unique<State>()) {
  if (options.page_bytes == 0) throw InvalidArgument("PagePool: page_bytes must be > 0");
  if (options.page_bytes > (std::size_t{1} << 31))
    throw InvalidArgument("PagePool: page_bytes exceeds 2 GiB");
  State& s = *state_;
  s.page_bytes = (options.page_bytes + kAlign - 1) / kAlign * kAlign;
  if (options.max_bytes < s.page_bytes) {
    throw InvalidArgument("PagePool: max_bytes (" + std::to_string(options.max_bytes) +
                          ") is smaller than one page (" + std::to_string(s.page_bytes) + " bytes)");
  }
  s.pages_max = options.max_bytes / s.page_bytes;
  if (s.pages_max >= kNil) throw InvalidArgument("PagePool: max_bytes allows more than 2^32-1 pages");
  const std::size_t arena_bytes = std::clamp(options.arena_bytes, s.page_bytes, s.pages_max * s.page_bytes);
  s.pages_per_arena = arena_bytes / s.page_bytes;
  s.arenas_max = (s.pages_max + s.pages_per_arena - 1) / s.pages_per_arena;
  s.arena_data = std::vector<std::atomic<std::byte*>>(s.arenas_max);
  s.arena_slots = std::vector<std::atomic<PageSlot*>>(s.arenas_max);
  s.arena_owner.reserve(s.arenas_max);
  s.slot_owner.reserve(s.arenas_max);
}

PagePool::~PagePool() {
  const std::size_t out = state_->pages_in_use.load();
  if (out != 0) {
    std::fprintf(stderr, "kvcache: PagePool destroyed with %zu page(s) still allocated\n", out);
  }
  const State& s = *state_;
  for (std::size_t a = 0; a < s.n_arenas.load(); ++a) {  // mimalloc writes into blocks it frees
    const std::size_t count = std::min(s.pages_per_arena, s.pages_max - a * s.pages_per_arena);
    ASAN_UNPOISON_MEMORY_REGION(s.arena_data[a].load(), count * s.page_bytes);
  }
}

std::optional<PageId> PagePool::try_allocate() noexcept {
  State& s = *state_;
  std::optional<PageId> id;
  try {
    LocalCache& c = s.local();
    c.lock();
    if (c.n == 0) s.refill(c, LocalCache::kCapacity / 2);
    if (c.n == 0 && s.grow()) s.refill(c, LocalCache::kCapacity / 2);
    if (c.n > 0) id = c.ids[--c.n];
    c.unlock();
    if (!id) id = s.steal(c);
  } catch (...) {  // bookkeeping allocation failed (thread cache, arena table): report exhaustion
    id.reset();
  }
  if (!id) {
    s.failed.fetch_add(1, std::memory_order_relaxed);
    return std::nullopt;
  }
  // The page came off a free list, so no other thread can name it: a plain store suffices.
  // (release() keeps a compare-exchange so racing double releases cannot both succeed.)
  assert(!s.slot(*id)->in_use.load(std::memory_order_relaxed));
  s.slot(*id)->in_use.store(true, std::memory_order_relaxed);
  s.unpoison(*id);
  const std::size_t now = s.pages_in_use.fetch_add(1, std::memory_order_relaxed) + 1;
  std::size_t hw = s.high_water.load(std::memory_order_relaxed);
  while (now > hw && !s.high_water.compare_exchange_weak(hw, now, std::memory_order_relaxed)) {
  }
  return id;
}

PageId PagePool::allocate() {
  if (std::optional<PageId> id = try_allocate()) return *id;
  throw PoolExhausted("PagePool exhausted: all " + std::to_string(state_->pages_max) + " pages of " +
                      std::to_string(state_->page_bytes) + " bytes are in use");
}

void PagePool::release(PageId id) {
  State& s = *state_;
  PageSlot* slot = s.slot(id);
  if (slot == nullptr || id >= s.pages_max) {
    throw InvalidArgument("PagePool::release: page id " + std::to_string(id) +
                          " does not belong to this pool");
  }
  bool expected = true;
  if (!slot->in_use.compare_exchange_strong(expected, false, std::memory_order_acq_rel)) {
    throw InvalidArgument("PagePool::release: page " + std::to_string(id) +
                          " is not in use (double release?)");
  }
  s.pages_in_use.fetch_sub(1, std::memory_order_relaxed);
  s.poison(id);
  LocalCache* c = nullptr;
  try {
    c = &s.local();
  } catch (...) {  // no thread cache could be made: the global stack takes the page
    s.push(id);
    return;
  }
  c->lock();
  if (c->n == LocalCache::kCapacity) {
    for (std::uint32_t i = 0; i < LocalCache::kCapacity / 2; ++i) s.push(c->ids[--c->n]);
  }
  c->ids[c->n++] = id;
  c->unlock();
}

std::byte* PagePool::data(PageId id) const noexcept {
  const State& s = *state_;
  assert(s.slot(id) != nullptr && s.slot(id)->in_use.load(std::memory_order_relaxed));
  return s.page_ptr(id);
}

std::size_t PagePool::page_bytes() const noexcept { return state_->page_bytes; }

PagePoolStats PagePool::stats() const noexcept {
  const State& s = *state_;
  PagePoolStats st;
  st.page_bytes = s.page_bytes;
  st.pages_max = s.pages_max;
  st.pages_reserved = s.pages_reserved.load();
  st.pages_in_use = s.pages_in_use.load();
  st.pages_free = st.pages_reserved - st.pages_in_use;
  st.pages_high_water = s.high_water.load();
  st.bytes_reserved = st.pages_reserved * s.page_bytes;
  st.bytes_in_use = st.pages_in_use * s.page_bytes;
  st.arenas = s.n_arenas.load();
  st.failed_allocations = s.failed.load();
  return st;
}

}  // namespace kvcache
