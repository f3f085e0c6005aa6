// Helpers shared by the library tests: deterministic synthetic K/V and a dense oracle.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "kvcache/page_pool.h"
#include "kvcache/stream_cache.h"

namespace kvtest {

/// A deterministic pseudo-random value in [-1, 1) for (salt, layer, pos, head, dim): lets an
/// oracle regenerate what was appended long ago without storing it.
inline float synth(std::uint64_t salt, std::uint64_t layer, std::uint64_t pos, std::uint64_t head,
                   std::uint64_t dim) {
  std::uint64_t x = salt * 0x9E3779B97F4A7C15ull ^ (layer + 1) * 0xBF58476D1CE4E5B9ull ^
                    (pos + 1) * 0x94D049BB133111EBull ^ (head + 1) * 0xD6E8FEB86659FD93ull ^ (dim + 7);
  x ^= x >> 31;
  x *= 0x7FB5D329728EA185ull;
  x ^= x >> 27;
  x *= 0x81DADEF4BC13F5B5ull;
  x ^= x >> 33;
  return static_cast<float>(x >> 40) / static_cast<float>(1ull << 23) - 1.f;
}

constexpr std::uint64_t kSaltK = 11, kSaltV = 23;

/// The pre-RoPE K (or V) rows of all KV heads for token `pos` of `layer`.
inline std::vector<float> synth_rows(const kvcache::StreamConfig& c, std::uint64_t salt, std::uint32_t layer,
                                     std::int64_t pos) {
  std::vector<float> r(std::size_t{c.n_kv_heads} * c.head_dim);
  for (std::uint32_t h = 0; h < c.n_kv_heads; ++h) {
    for (std::uint32_t i = 0; i < c.head_dim; ++i) {
      r[h * c.head_dim + i] = synth(salt, layer, static_cast<std::uint64_t>(pos), h, i);
    }
  }
  return r;
}

/// Admits one token and appends its synthetic K/V in every layer.
inline void push_token(kvcache::StreamCache& s) {
  const kvcache::StreamConfig& c = s.config();
  const std::int64_t pos = static_cast<std::int64_t>(s.stats().tokens_seen);
  const std::int32_t id = static_cast<std::int32_t>(pos % 1000);
  s.begin({&id, 1});
  for (std::uint32_t il = 0; il < c.n_layers; ++il) {
    s.append(il, synth_rows(c, kSaltK, il, pos), synth_rows(c, kSaltV, il, pos));
  }
}

inline std::shared_ptr<kvcache::PagePool> make_pool(const kvcache::StreamConfig& c, std::size_t pages) {
  return std::make_shared<kvcache::PagePool>(kvcache::PagePoolOptions{
      c.layout().page_bytes(), pages * ((c.layout().page_bytes() + 63) / 64 * 64), 1 << 16});
}

/// Original positions a StreamingLLM cache must hold after n tokens (window: sinks = 0;
/// full: budget = 0 means unbounded).
inline std::vector<std::int64_t> expected_positions(std::int64_t n, std::int64_t sinks, std::int64_t budget) {
  std::vector<std::int64_t> out;
  if (budget == 0) {
    for (std::int64_t i = 0; i < n; ++i) out.push_back(i);
    return out;
  }
  const std::int64_t window = budget - sinks;
  for (std::int64_t i = 0; i < std::min(n, sinks); ++i) out.push_back(i);
  for (std::int64_t i = std::max(sinks, n - window); i < n; ++i) out.push_back(i);
  return out;
}

}  // namespace kvtest
