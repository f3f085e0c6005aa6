// Internal: the state behind StreamCache, shared by stream_cache.cc and stream_snapshot.cc.
#pragma once

#include <algorithm>
#include <cassert>
#include <cstring>
#include <deque>
#include <memory>
#include <vector>

#include "kvcache/stream/row_ring.h"
#include "kvcache/stream_cache.h"

namespace kvcache {

namespace detail {

// Page ids of one layer.
struct LayerPages {
  std::vector<PageId> pinned;  // pinned slot i lives in pinned[i / P] at slot i % P
  std::deque<PageId> window;   // window token w lives at ring slot (front + w)
};

// Pages taken from the pool for one begin(), returned to it unless consumed.
class PageBatch {
 public:
  explicit PageBatch(PagePool& pool) : pool_(pool) {}
  ~PageBatch() {
    for (PageId id : ids_) pool_.release(id);
  }
  PageBatch(const PageBatch&) = delete;
  PageBatch& operator=(const PageBatch&) = delete;
  void acquire(std::size_t n) {
    ids_.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      ids_.push_back(pool_.allocate());  // throws PoolExhausted
      // Zeroed, so no byte of an earlier user of the page reaches a snapshot.
      std::memset(pool_.data(ids_.back()), 0, pool_.page_bytes());
    }
  }
  PageId take() {
    assert(!ids_.empty());
    const PageId id = ids_.back();
    ids_.pop_back();
    return id;
  }
  bool empty() const { return ids_.empty(); }

 private:
  PagePool& pool_;
  std::vector<PageId> ids_;
};

// Which part of the cache a page belongs to; the two may differ in dtype and page geometry.
enum class Region : std::uint8_t { pinned = 0, window = 1 };

// The f16 copy of the keys of the q4 page of one region of one layer that is being filled (see
// StreamConfig): rows [0, n) of `page`, head-major (head h, slot r at (h * P + r) * head_dim).
struct KeyStage {
  PageId page = 0;
  std::uint32_t n = 0;  // 0: nothing staged
  std::vector<std::uint16_t> rows;
};

}  // namespace detail

struct StreamCache::State {
  using Region = detail::Region;
  std::shared_ptr<PagePool> pool;
  StreamConfig config;
  PageLayout layouts[2];  // indexed by Region
  std::unique_ptr<Policy> policy;
  std::vector<detail::LayerPages> layers;
  std::vector<detail::KeyStage> stages;  // 2 per layer (by Region), used by q4 regions only
  std::vector<TokenMeta> pinned;         // pinned tokens, cache order (= original order)
  std::deque<TokenMeta> window;          // window tokens, cache order (consecutive positions)
  std::vector<float> pinned_state;       // observer state rows of pinned tokens
  detail::RowRing window_state;          // observer state rows of window tokens
  std::uint32_t front = 0;               // slot of window[0] in layers[*].window.front()
  std::uint64_t seen = 0;                // tokens ever admitted
  std::uint64_t evicted = 0;             // tokens dropped
  std::uint32_t pending_pinned = 0;      // pending tokens at the end of `pinned`
  std::uint32_t pending_window = 0;      // pending tokens at the end of `window`
  std::vector<std::uint8_t> written;     // per layer: pending tokens' K/V written
  std::size_t peak_bytes = 0;
  std::vector<float> token_rows;      // scratch: all KV heads of one token
  std::vector<float> move_k, move_v;  // scratch: K/V of tokens being moved
  std::vector<float> q4_rows;         // scratch: one head's keys of a q4 page being re-quantised
  RopeAngles rope;                    // cos/sin of the last position keys were rotated by

  const PageLayout& lay(Region r) const { return layouts[static_cast<int>(r)]; }
  std::uint32_t P(Region r) const { return lay(r).page_tokens; }
  std::uint32_t n_kept() const { return static_cast<std::uint32_t>(pinned.size() + window.size()); }
  bool reindexed() const { return config.positions == PositionMode::reindexed; }
  std::size_t token_floats() const { return std::size_t{config.n_kv_heads} * config.head_dim; }

  struct Where {
    Region region;
    PageId page;
    std::uint32_t slot;
  };
  // Region, page and slot of cache index `i` in layer `il`.
  Where locate(std::uint32_t il, std::uint32_t i) const {
    const detail::LayerPages& lp = layers[il];
    if (i < pinned.size()) return {Region::pinned, lp.pinned[i / P(Region::pinned)], i % P(Region::pinned)};
    const std::uint32_t g = front + (i - static_cast<std::uint32_t>(pinned.size()));
    return {Region::window, lp.window[g / P(Region::window)], g % P(Region::window)};
  }
  // Metadata of cache index `i`: pinned tokens first, then the window.
  TokenMeta& meta(std::uint32_t i) { return i < pinned.size() ? pinned[i] : window[i - pinned.size()]; }
  const TokenMeta& meta(std::uint32_t i) const {
    return i < pinned.size() ? pinned[i] : window[i - pinned.size()];
  }
  // Position a stored key was rotated by.
  std::int64_t stored_pos(std::uint32_t i) const {
    return i < pinned.size() && reindexed() ? std::int64_t{i} : meta(i).pos;
  }
  std::int64_t cache_pos(std::uint32_t i) const { return reindexed() ? std::int64_t{i} : meta(i).pos; }
  detail::KeyStage& stage(std::uint32_t il, Region r) {
    return stages[2 * std::size_t{il} + static_cast<std::size_t>(r)];
  }
  const detail::KeyStage& stage(std::uint32_t il, Region r) const {
    return stages[2 * std::size_t{il} + static_cast<std::size_t>(r)];
  }

  // Dequantised key / value of one head of one slot, as stored in the page (what attention sees).
  void load_k(const Where& w, std::uint32_t h, float* out) const;
  void load_v(const Where& w, std::uint32_t h, float* out) const;
  // Like load_k, but a q4 key of a page being filled comes from its f16 copy.
  void source_k(std::uint32_t il, const Where& w, std::uint32_t h, float* out) const;
  // Stores one token (all heads; k already rotated) in slot w of layer il. Slots of a page are
  // written in order from 0 (q4 keys re-quantise the page's rows [0, slot]).
  void write_token(std::uint32_t il, const Where& w, const float* k, const float* v);
  // Copies a token of layer il from slot `from` to slot `to` (any regions), re-rotating its key by
  // `shift` positions; the destination re-quantises it at its own dtype.
  void move_token(std::uint32_t il, const Where& from, const Where& to, std::int64_t shift);
  // Removes pinned token `index`: later pinned tokens move down a slot (and, reindexed, a position).
  void compact_pinned(std::uint32_t index);
  std::size_t staging_bytes() const;

  std::size_t pages_held() const {
    if (layers.empty()) return 0;
    return layers.size() * (layers[0].pinned.size() + layers[0].window.size());
  }
  void release_all() {
    for (detail::LayerPages& lp : layers) {
      for (PageId id : lp.pinned) pool->release(id);
      for (PageId id : lp.window) pool->release(id);
      lp.pinned.clear();
      lp.window.clear();
    }
  }
};

}  // namespace kvcache
