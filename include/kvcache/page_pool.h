// PagePool: fixed-size pages carved from large aligned arenas, shared by many streams.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

namespace kvcache {

/// A page is named by a dense id into the pool's arenas, never by a pointer.
using PageId = std::uint32_t;

struct PagePoolOptions {
  /// Bytes per page; > 0. Rounded up to a multiple of 64 so every page is 64-byte aligned.
  std::size_t page_bytes = 0;
  /// Byte budget: the pool never holds more than this many bytes of pages. >= one page.
  std::size_t max_bytes = 0;
  /// Pages are carved from arenas of about this many bytes, allocated lazily as demand grows
  /// (so an unused budget costs no memory). Clamped to [one page, max_bytes].
  std::size_t arena_bytes = std::size_t{4} << 20;
};

/// Exact counters; a snapshot (each field exact, fields read one after another).
struct PagePoolStats {
  std::size_t page_bytes = 0;            ///< bytes per page after rounding
  std::size_t pages_max = 0;             ///< pages the budget allows
  std::size_t pages_reserved = 0;        ///< pages carved from arenas so far
  std::size_t pages_in_use = 0;          ///< pages allocated and not yet released
  std::size_t pages_free = 0;            ///< reserved pages waiting on the free list
  std::size_t pages_high_water = 0;      ///< maximum of pages_in_use ever observed
  std::size_t bytes_reserved = 0;        ///< pages_reserved * page_bytes
  std::size_t bytes_in_use = 0;          ///< pages_in_use * page_bytes
  std::size_t arenas = 0;                ///< arenas allocated
  std::uint64_t failed_allocations = 0;  ///< allocate() calls refused for lack of budget
};

/// A pool of equally sized pages.
///
/// Thread safety: allocate/try_allocate/release/data/stats may be called from any number of
/// threads at once. The free list is a lock-free LIFO stack (ABA-safe tagged head); a mutex is
/// taken only when a new arena is carved (at most pages_max / pages_per_arena times).
///
/// Errors: a bad option or a release of a page that is not in use throws InvalidArgument;
/// exhaustion is PoolExhausted (or an empty optional from try_allocate). A pool destroyed with
/// pages still out reports the count on stderr and frees its arenas; the outstanding ids
/// become dangling, which is the caller's contract to avoid (streams hold a shared_ptr to
/// their pool, so this only happens with pages allocated by hand).
class PagePool {
 public:
  explicit PagePool(const PagePoolOptions& options);
  ~PagePool();
  PagePool(const PagePool&) = delete;
  PagePool& operator=(const PagePool&) = delete;

  /// A free page, or nullopt when the budget is exhausted. Never throws.
  std::optional<PageId> try_allocate() noexcept;
  /// A free page; throws PoolExhausted when the budget is exhausted.
  PageId allocate();
  /// Returns `id` to the pool. Throws InvalidArgument if `id` is unknown or not in use
  /// (double release), leaving the pool unchanged.
  void release(PageId id);

  /// Start of page `id` (64-byte aligned, page_bytes() long). Call only for a page in use.
  std::byte* data(PageId id) const noexcept;
  std::size_t page_bytes() const noexcept;
  PagePoolStats stats() const noexcept;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace kvcache
