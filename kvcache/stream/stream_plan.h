// Internal: the plan StreamCache::begin computes before it changes anything.
#pragma once

#include <cstdint>
#include <deque>
#include <span>
#include <vector>

#include "kvcache/policy.h"

namespace kvcache::detail {

/// One decision about the oldest window token (applied in order).
struct LeaveOp {
  PinReason pin = PinReason::none;  ///< none = evict
  bool release = false;             ///< release pinned index `release_index` first
  std::uint32_t release_index = 0;
};

/// Everything begin() will do, computed by a const planner: the leave decisions, how many new
/// tokens are pinned on arrival, and how many pages each layer gains or loses.
struct AdmitPlan {
  std::vector<LeaveOp> leaves;             ///< decisions for window tokens [0, leaves.size())
  std::uint32_t arrival_pins = 0;          ///< prefix of the batch pinned on arrival
  std::uint32_t pinned_peak = 0;           ///< most pinned tokens at any point of the apply
  std::uint32_t pinned_final = 0;          ///< pinned tokens after the apply
  std::uint32_t window_final = 0;          ///< window tokens after the apply
  std::uint32_t pinned_pages_new = 0;      ///< pinned pages to take from the pool, per layer
  std::uint32_t pinned_pages_freed = 0;    ///< trailing pinned pages left empty, per layer
  std::uint32_t window_pages_dropped = 0;  ///< oldest window pages emptied, per layer
  std::uint32_t window_pages_grown = 0;    ///< window pages appended, per layer
  std::uint32_t front_final = 0;           ///< slot of the oldest window token afterwards

  /// Pages per layer that must come from the pool (dropped window pages are reused first).
  std::uint32_t pool_pages_per_layer() const {
    const std::uint32_t reused =
        window_pages_grown < window_pages_dropped ? window_pages_grown : window_pages_dropped;
    return pinned_pages_new + (window_pages_grown - reused);
  }
};

/// Inputs of the planner: the current shape of the cache.
struct CacheShape {
  std::uint32_t pinned_page_tokens = 0;  ///< tokens per pinned page
  std::uint32_t window_page_tokens = 0;  ///< tokens per window page
  std::uint32_t front = 0;               ///< slot of the oldest window token in the first window page
  std::uint32_t window_pages = 0;        ///< pages in the window ring
  std::uint32_t pinned_pages = 0;        ///< pages of the pinned region
  std::int64_t next_pos = 0;             ///< original position of the first new token
};

/// Plans admitting `n_new` tokens. Throws InvalidArgument if the batch cannot fit.
AdmitPlan plan_admit(const Policy& policy, const CacheShape& shape, std::span<const TokenMeta> pinned,
                     const std::deque<TokenMeta>& window, std::uint32_t n_new);

}  // namespace kvcache::detail
