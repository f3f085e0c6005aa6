// StreamCache: applies AdmitPlans to per-layer page tables. See stream_cache.h for the model.
#include "kvcache/stream_cache.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <deque>
#include <string>

#include "kvcache/error.h"
#include "kvcache/stream/stream_plan.h"
#include "kvcache/stream/stream_state.h"

namespace kvcache {

using Region = detail::Region;

PageLayout StreamConfig::pinned_layout() const {
  const PageLayout window = layout();
  if (pinned() == dtype) return window;
  PageLayout p = window;
  p.dtype = pinned();
  p.page_tokens = max_page_tokens(p, window.page_bytes());
  return p;
}

namespace {

void check_alive(const void* state) {
  if (state == nullptr) throw InvalidArgument("StreamCache: used after being moved from");
}

}  // namespace

StreamCache::StreamCache(std::shared_ptr<PagePool> pool, const StreamConfig& config)
    : state_(std::make_unique<State>()) {
  if (!pool) throw InvalidArgument("StreamCache: pool is null");
  if (config.n_layers == 0) throw InvalidArgument("StreamCache: n_layers must be > 0");
  if (config.n_layers > 4096) throw InvalidArgument("StreamCache: n_layers must be <= 4096");
  // Enumerators arrive from callers (and the C API) as plain integers: a value outside the enum
  // would silently pick different code paths in different places (found by tests/fuzz/fuzz_api).
  for (DType dt : {config.dtype, config.pinned()}) {
    if (static_cast<std::uint8_t>(dt) > static_cast<std::uint8_t>(kLastDType))
      throw InvalidArgument("StreamCache: unknown dtype " + std::to_string(static_cast<unsigned>(dt)));
  }
  if (static_cast<std::uint8_t>(config.positions) > static_cast<std::uint8_t>(PositionMode::absolute)) {
    throw InvalidArgument("StreamCache: unknown position mode " +
                          std::to_string(static_cast<unsigned>(config.positions)));
  }
  if (static_cast<std::uint8_t>(config.rope.style) > static_cast<std::uint8_t>(RopeStyle::half_split)) {
    throw InvalidArgument("StreamCache: unknown rope style " +
                          std::to_string(static_cast<unsigned>(config.rope.style)));
  }
  config.layout().validate();
  const PageLayout pinned_layout = config.pinned_layout();
  if (pinned_layout.page_tokens == 0) {
    throw InvalidArgument("StreamCache: not one token of the pinned region's " +
                          std::string(dtype_name(config.pinned())) + " fits in a window page of " +
                          std::to_string(config.layout().page_bytes()) + " bytes (raise page_tokens)");
  }
  pinned_layout.validate();
  if (config.rope.style != RopeStyle::none && config.head_dim % 2 != 0) {
    throw InvalidArgument("StreamCache: head_dim must be even with RoPE (got " +
                          std::to_string(config.head_dim) + ")");
  }
  if (!(config.rope.theta > 1.0) || !std::isfinite(config.rope.theta)) {
    throw InvalidArgument("StreamCache: rope theta must be finite and > 1");
  }
  if (!config.rope.freq_factors.empty()) {
    if (config.rope.style == RopeStyle::none || config.rope.freq_factors.size() != config.head_dim / 2) {
      throw InvalidArgument(
          "StreamCache: rope freq_factors must hold head_dim / 2 = " + std::to_string(config.head_dim / 2) +
          " values (got " + std::to_string(config.rope.freq_factors.size()) + ")");
    }
    for (float f : config.rope.freq_factors) {
      if (!(f > 0.f) || !std::isfinite(f))
        throw InvalidArgument("StreamCache: rope freq_factors must be finite and > 0");
    }
  }
  if (pool->page_bytes() < config.layout().page_bytes()) {
    throw InvalidArgument("StreamCache: pool pages of " + std::to_string(pool->page_bytes()) +
                          " bytes are smaller than the " + std::to_string(config.layout().page_bytes()) +
                          " bytes this layout needs");
  }
  State& s = *state_;
  s.policy = make_policy(config.policy);
  s.pool = std::move(pool);
  s.config = config;
  s.layouts[static_cast<int>(Region::pinned)] = pinned_layout;
  s.layouts[static_cast<int>(Region::window)] = config.layout();
  s.layers.resize(config.n_layers);
  s.stages.resize(std::size_t{config.n_layers} * 2);  // their rows are allocated on first use
  s.written.assign(config.n_layers, 1);
  s.window_state = detail::RowRing(config.token_state_floats);
  s.token_rows.resize(std::size_t{config.n_kv_heads} * config.head_dim);
  s.rope = RopeAngles(config.rope, config.head_dim);
}

StreamCache::~StreamCache() {
  if (state_) state_->release_all();
}

StreamCache::StreamCache(StreamCache&&) noexcept = default;

StreamCache& StreamCache::operator=(StreamCache&& other) noexcept {
  if (this != &other) {
    if (state_) state_->release_all();
    state_ = std::move(other.state_);
  }
  return *this;
}

void StreamCache::begin(std::span<const std::int32_t> token_ids) {
  check_alive(state_.get());
  State& s = *state_;
  if (token_ids.empty()) throw InvalidArgument("StreamCache::begin: no tokens");
  for (std::uint32_t il = 0; il < s.layers.size(); ++il) {
    if (!s.written[il]) {
      throw InvalidArgument("StreamCache::begin: layer " + std::to_string(il) +
                            " of the previous tokens was never appended");
    }
  }
  if (token_ids.size() > 0x7fffffffu) throw InvalidArgument("StreamCache::begin: batch too large");
  const auto n_new = static_cast<std::uint32_t>(token_ids.size());

  // Plan (const), then take every page the plan needs: nothing has changed if either throws.
  detail::CacheShape shape;
  shape.pinned_page_tokens = s.P(Region::pinned);
  shape.window_page_tokens = s.P(Region::window);
  shape.front = s.front;
  shape.window_pages = static_cast<std::uint32_t>(s.layers[0].window.size());
  shape.pinned_pages = static_cast<std::uint32_t>(s.layers[0].pinned.size());
  shape.next_pos = static_cast<std::int64_t>(s.seen);
  const detail::AdmitPlan plan = detail::plan_admit(*s.policy, shape, s.pinned, s.window, n_new);
  detail::PageBatch fresh(*s.pool);
  fresh.acquire(std::size_t{plan.pool_pages_per_layer()} * s.layers.size());
  s.pending_pinned = 0;  // the earlier batch is complete (checked above); nothing can throw below
  s.pending_window = 0;

  // Apply: leave decisions in order, reading old window slots before any page is dropped.
  const std::uint32_t Pp = s.P(Region::pinned);
  const std::uint32_t Pw = s.P(Region::window);
  for (std::uint32_t il = 0; il < s.layers.size(); ++il) {
    detail::LayerPages& lp = s.layers[il];
    for (std::uint32_t p = 0; p < plan.pinned_pages_new; ++p) lp.pinned.push_back(fresh.take());
  }
  std::uint32_t k = 0;
  for (const detail::LeaveOp& op : plan.leaves) {
    if (op.release) {
      s.compact_pinned(op.release_index);
      s.pinned.erase(s.pinned.begin() + op.release_index);
      const std::size_t w = s.config.token_state_floats;
      s.pinned_state.erase(s.pinned_state.begin() + static_cast<std::ptrdiff_t>(op.release_index * w),
                           s.pinned_state.begin() + static_cast<std::ptrdiff_t>((op.release_index + 1) * w));
      ++s.evicted;
    }
    if (op.pin != PinReason::none) {
      const auto j = static_cast<std::uint32_t>(s.pinned.size());
      const TokenMeta& leaving = s.window[k];
      const std::int64_t shift = s.reindexed() ? std::int64_t{j} - leaving.pos : 0;
      const std::uint32_t g = s.front + k;
      for (std::uint32_t il = 0; il < s.layers.size(); ++il) {
        const detail::LayerPages& lp = s.layers[il];
        s.move_token(il, {Region::window, lp.window[g / Pw], g % Pw},
                     {Region::pinned, lp.pinned[j / Pp], j % Pp}, shift);
      }
      s.pinned.push_back(leaving);
      s.pinned.back().pin = op.pin;
      const std::span<const float> row = s.window_state.row(k);
      s.pinned_state.insert(s.pinned_state.end(), row.begin(), row.end());
    } else {
      ++s.evicted;
    }
    ++k;
  }
  for (std::uint32_t i = 0; i < k; ++i) s.window.pop_front();
  s.window_state.pop_front(k);

  // Window ring: emptied front pages are recycled for growth, the rest go back to the pool.
  std::vector<PageId> recycled;
  for (detail::LayerPages& lp : s.layers) {
    for (std::uint32_t p = 0; p < plan.window_pages_dropped; ++p) {
      recycled.push_back(lp.window.front());
      lp.window.pop_front();
    }
    for (std::uint32_t p = 0; p < plan.pinned_pages_freed; ++p) {
      s.pool->release(lp.pinned.back());
      lp.pinned.pop_back();
    }
  }
  for (detail::LayerPages& lp : s.layers) {
    for (std::uint32_t p = 0; p < plan.window_pages_grown; ++p) {
      if (!recycled.empty()) {
        lp.window.push_back(recycled.back());
        recycled.pop_back();
      } else {
        lp.window.push_back(fresh.take());
      }
    }
  }
  for (PageId id : recycled) s.pool->release(id);
  assert(fresh.empty());
  s.front = plan.front_final;

  // Admit the new tokens.
  for (std::uint32_t i = 0; i < n_new; ++i) {
    TokenMeta m;
    m.pos = static_cast<std::int64_t>(s.seen + i);
    m.token = token_ids[i];
    if (i < plan.arrival_pins) {
      m.pin = s.policy->on_arrival(m.pos);
      s.pinned.push_back(m);
      s.pinned_state.resize(s.pinned_state.size() + s.config.token_state_floats, 0.f);
    } else {
      s.window.push_back(m);
      s.window_state.push_back_zero();
    }
  }
  assert(s.pinned.size() == plan.pinned_final && s.window.size() == plan.window_final);
  s.seen += n_new;
  s.pending_pinned = plan.arrival_pins;
  s.pending_window = n_new - plan.arrival_pins;
  std::fill(s.written.begin(), s.written.end(), 0);
  s.peak_bytes = std::max(s.peak_bytes, s.pages_held() * s.pool->page_bytes());
}

void StreamCache::append(std::uint32_t layer, std::span<const float> k, std::span<const float> v) {
  check_alive(state_.get());
  State& s = *state_;
  if (layer >= s.layers.size()) {
    throw InvalidArgument("StreamCache::append: layer " + std::to_string(layer) + " out of range (n_layers " +
                          std::to_string(s.layers.size()) + ")");
  }
  if (s.written[layer]) {
    throw InvalidArgument("StreamCache::append: layer " + std::to_string(layer) +
                          " already holds the pending tokens (call begin first)");
  }
  const std::uint32_t n = s.pending_pinned + s.pending_window;
  const std::size_t per_token = s.token_floats();
  if (k.size() != n * per_token || v.size() != n * per_token) {
    throw InvalidArgument("StreamCache::append: expected " + std::to_string(n * per_token) +
                          " floats for k and v (" + std::to_string(n) + " tokens x " +
                          std::to_string(s.config.n_kv_heads) + " heads x " +
                          std::to_string(s.config.head_dim) + "), got " + std::to_string(k.size()) + " and " +
                          std::to_string(v.size()));
  }
  const std::uint32_t first = s.n_kept() - n;
  const std::uint32_t first_pinned = static_cast<std::uint32_t>(s.pinned.size()) - s.pending_pinned;
  for (std::uint32_t t = 0; t < n; ++t) {
    // Pending pinned tokens end the pinned region; pending window tokens end the window.
    const std::uint32_t index = t < s.pending_pinned ? first_pinned + t : first + t;
    // Rotate all heads of the token at once: the angles are shared by heads and layers.
    std::copy_n(k.data() + t * per_token, per_token, s.token_rows.begin());
    s.rope.set_position(static_cast<double>(s.stored_pos(index)));
    s.rope.rotate(s.token_rows);
    s.write_token(layer, s.locate(layer, index), s.token_rows.data(), v.data() + t * per_token);
  }
  s.written[layer] = 1;
}

std::uint32_t StreamCache::n_pending() const noexcept {
  return state_ ? state_->pending_pinned + state_->pending_window : 0;
}

bool StreamCache::layer_ready(std::uint32_t layer) const {
  check_alive(state_.get());
  if (layer >= state_->layers.size()) throw InvalidArgument("StreamCache::layer_ready: layer out of range");
  return state_->written[layer] != 0;
}

std::uint32_t StreamCache::n_kept() const noexcept { return state_ ? state_->n_kept() : 0; }
std::uint32_t StreamCache::n_pinned() const noexcept {
  return state_ ? static_cast<std::uint32_t>(state_->pinned.size()) : 0;
}

std::vector<KeptToken> StreamCache::tokens() const {
  check_alive(state_.get());
  const State& s = *state_;
  std::vector<KeptToken> out;
  out.reserve(s.n_kept());
  for (std::uint32_t i = 0; i < s.n_kept(); ++i) {
    out.push_back({s.meta(i), s.cache_pos(i)});
  }
  return out;
}

std::int64_t StreamCache::cache_position(std::uint32_t index) const {
  check_alive(state_.get());
  if (index >= state_->n_kept()) throw InvalidArgument("StreamCache::cache_position: index out of range");
  return state_->cache_pos(index);
}

void StreamCache::layer_spans(std::uint32_t layer, std::vector<KvSpan>& out) const {
  check_alive(state_.get());
  const State& s = *state_;
  if (layer >= s.layers.size()) throw InvalidArgument("StreamCache::layer_spans: layer out of range");
  out.clear();
  const detail::LayerPages& lp = s.layers[layer];
  const PageLayout& pl = s.lay(Region::pinned);
  const PageLayout& wl = s.lay(Region::window);
  const auto n_pinned = static_cast<std::uint32_t>(s.pinned.size());
  for (std::uint32_t i = 0; i < n_pinned; i += pl.page_tokens) {
    out.push_back(
        {s.pool->data(lp.pinned[i / pl.page_tokens]), pl, 0, std::min(pl.page_tokens, n_pinned - i), i, 0});
  }
  if (s.window.empty()) return;
  const std::int64_t delta = s.reindexed() ? std::int64_t{n_pinned} - s.window.front().pos : 0;
  const auto n_window = static_cast<std::uint32_t>(s.window.size());
  std::uint32_t w = 0;
  for (std::size_t p = 0; w < n_window; ++p) {
    const std::uint32_t begin = p == 0 ? s.front : 0;
    const std::uint32_t n = std::min(wl.page_tokens - begin, n_window - w);
    out.push_back({s.pool->data(lp.window[p]), wl, begin, n, n_pinned + w, delta});
    w += n;
  }
}

namespace {

// A template so it can take the private State without naming it.
template <class State>
void check_read(const State* s, std::uint32_t layer, std::uint32_t index, std::uint32_t kv_head,
                std::size_t out_size) {
  check_alive(s);
  if (layer >= s->layers.size() || index >= s->n_kept() || kv_head >= s->config.n_kv_heads ||
      out_size != s->config.head_dim) {
    throw InvalidArgument("StreamCache::read_key/read_value: layer " + std::to_string(layer) + ", index " +
                          std::to_string(index) + ", kv_head " + std::to_string(kv_head) +
                          " or output size " + std::to_string(out_size) + " out of range");
  }
  if (!s->written[layer]) {
    // Pending tokens end the pinned region and the window; their rows hold stale bytes.
    const auto n_pinned = static_cast<std::uint32_t>(s->pinned.size());
    const bool pending =
        index < n_pinned ? index >= n_pinned - s->pending_pinned : index >= s->n_kept() - s->pending_window;
    if (pending) {
      throw InvalidArgument("StreamCache::read_key/read_value: token " + std::to_string(index) +
                            " of layer " + std::to_string(layer) + " is not appended yet");
    }
  }
}

}  // namespace

void StreamCache::read_key(std::uint32_t layer, std::uint32_t index, std::uint32_t kv_head,
                           std::span<float> out) const {
  check_read(state_.get(), layer, index, kv_head, out.size());
  const State& s = *state_;
  s.load_k(s.locate(layer, index), kv_head, out.data());
  const std::int64_t shift = s.cache_pos(index) - s.stored_pos(index);
  if (s.config.rope.style != RopeStyle::none && shift != 0) {
    rope_rotate(s.config.rope, s.config.head_dim, static_cast<double>(shift), out);
  }
}

void StreamCache::read_value(std::uint32_t layer, std::uint32_t index, std::uint32_t kv_head,
                             std::span<float> out) const {
  check_read(state_.get(), layer, index, kv_head, out.size());
  const State& s = *state_;
  s.load_v(s.locate(layer, index), kv_head, out.data());
}

StreamCache::Observed StreamCache::observed(std::uint32_t index) {
  check_alive(state_.get());
  State& s = *state_;
  if (index >= s.n_kept()) throw InvalidArgument("StreamCache::observed: index out of range");
  const std::size_t w = s.config.token_state_floats;
  TokenMeta& m = s.meta(index);
  if (index < s.pinned.size()) {
    return {&m.score, &m.sink_heads, std::span<float>(s.pinned_state.data() + index * w, w), m.pos};
  }
  const std::uint32_t wi = index - static_cast<std::uint32_t>(s.pinned.size());
  return {&m.score, &m.sink_heads, s.window_state.row(wi), m.pos};
}

void StreamCache::add_scores(std::span<const float> mass) {
  check_alive(state_.get());
  State& s = *state_;
  if (mass.size() != s.n_kept()) throw InvalidArgument("StreamCache::add_scores: size must equal n_kept()");
  for (std::uint32_t i = 0; i < s.n_kept(); ++i) {
    s.meta(i).score += mass[i];
  }
}

void StreamCache::set_sink_heads(std::span<const std::uint16_t> heads) {
  check_alive(state_.get());
  State& s = *state_;
  if (heads.size() != s.n_kept())
    throw InvalidArgument("StreamCache::set_sink_heads: size must equal n_kept()");
  for (std::uint32_t i = 0; i < s.n_kept(); ++i) {
    s.meta(i).sink_heads = heads[i];
  }
}

const StreamConfig& StreamCache::config() const {
  check_alive(state_.get());
  return state_->config;
}
const Policy& StreamCache::policy() const {
  check_alive(state_.get());
  return *state_->policy;
}

StreamStats StreamCache::stats() const noexcept {
  StreamStats st;
  if (!state_) return st;
  const State& s = *state_;
  st.tokens_seen = s.seen;
  st.tokens_kept = s.n_kept();
  st.tokens_pinned = static_cast<std::uint32_t>(s.pinned.size());
  st.tokens_evicted = s.evicted;
  st.pages = s.pages_held();
  st.kv_bytes = st.pages * s.pool->page_bytes();
  st.kv_bytes_peak = s.peak_bytes;
  st.staging_bytes = s.staging_bytes();
  return st;
}

}  // namespace kvcache
