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
    for (std::size_t i = 0; i < n; ++i) ids_.push_back(pool_.allocate());  // throws PoolExhausted
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

}  // namespace detail

struct StreamCache::State {
  std::shared_ptr<PagePool> pool;
  StreamConfig config;
  PageLayout layout;
  std::unique_ptr<Policy> policy;
  std::vector<detail::LayerPages> layers;
  std::vector<TokenMeta> pinned;      // pinned tokens, cache order (= original order)
  std::deque<TokenMeta> window;       // window tokens, cache order (consecutive positions)
  std::vector<float> pinned_state;    // observer state rows of pinned tokens
  detail::RowRing window_state;       // observer state rows of window tokens
  std::uint32_t front = 0;            // slot of window[0] in layers[*].window.front()
  std::uint64_t seen = 0;             // tokens ever admitted
  std::uint64_t evicted = 0;          // tokens dropped
  std::uint32_t pending_pinned = 0;   // pending tokens at the end of `pinned`
  std::uint32_t pending_window = 0;   // pending tokens at the end of `window`
  std::vector<std::uint8_t> written;  // per layer: pending tokens' K/V written
  std::size_t peak_bytes = 0;
  std::vector<float> row;         // scratch: one head row
  std::vector<float> token_rows;  // scratch: all KV heads of one token
  RopeAngles rope;                // cos/sin of the last position keys were rotated by

  std::uint32_t P() const { return layout.page_tokens; }
  std::uint32_t n_kept() const { return static_cast<std::uint32_t>(pinned.size() + window.size()); }
  bool reindexed() const { return config.positions == PositionMode::reindexed; }

  // Page and slot of cache index `i` in layer `il`.
  std::pair<PageId, std::uint32_t> locate(std::uint32_t il, std::uint32_t i) const {
    const detail::LayerPages& lp = layers[il];
    if (i < pinned.size()) return {lp.pinned[i / P()], i % P()};
    const std::uint32_t g = front + (i - static_cast<std::uint32_t>(pinned.size()));
    return {lp.window[g / P()], g % P()};
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
  std::byte* k_row(PageId page, std::uint32_t slot, std::uint32_t h) const {
    return pool->data(page) + layout.k_offset(h, slot);
  }
  std::byte* v_row(PageId page, std::uint32_t slot, std::uint32_t h) const {
    return pool->data(page) + layout.v_offset(h, slot);
  }
  void load(const std::byte* src, float* dst) const {
    if (layout.dtype == DType::f32) {
      std::memcpy(dst, src, std::size_t{layout.head_dim} * 4);
    } else {
      const auto* h = reinterpret_cast<const std::uint16_t*>(src);
      convert_f16_to_f32({h, layout.head_dim}, {dst, layout.head_dim});
    }
  }
  void store(const float* src, std::byte* dst) const {
    if (layout.dtype == DType::f32) {
      std::memcpy(dst, src, std::size_t{layout.head_dim} * 4);
    } else {
      auto* h = reinterpret_cast<std::uint16_t*>(dst);
      convert_f32_to_f16({src, layout.head_dim}, {h, layout.head_dim});
    }
  }
  // Copies one token's K and V rows between slots, re-rotating K by `shift` positions.
  void move_token(PageId from, std::uint32_t from_slot, PageId to, std::uint32_t to_slot,
                  std::int64_t shift) {
    const std::size_t row_bytes = std::size_t{layout.head_dim} * dtype_bytes(layout.dtype);
    for (std::uint32_t h = 0; h < layout.n_kv_heads; ++h) {
      if (shift == 0 || config.rope.style == RopeStyle::none) {
        std::memmove(k_row(to, to_slot, h), k_row(from, from_slot, h), row_bytes);
      } else {
        load(k_row(from, from_slot, h), row.data());
        rope_rotate(config.rope, layout.head_dim, static_cast<double>(shift), row);
        store(row.data(), k_row(to, to_slot, h));
      }
      std::memmove(v_row(to, to_slot, h), v_row(from, from_slot, h), row_bytes);
    }
  }
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
