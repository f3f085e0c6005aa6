// SinkDetector: finds attention sinks, initial and hidden, from the attention mass the kernels
// return, and records them in the cache's token metadata for policies to act on.
//
// The rule, after ACT (Yu et al., "Unveiling and Harnessing Hidden Attention Sinks", ICML 2024):
// a key j is a sink in a head when the mean attention it receives exceeds alpha / N, i.e. alpha
// times the uniform share of the N keys a query sees. Streaming has no fixed set of queries, so
// the mean is an exponential moving average over the queries that saw the key, with Adam-style
// bias correction (divide by 1 - decay^n after n queries) so a new key is judged on its first
// queries rather than pulled toward zero:
//     r_j <- decay * r_j + (1 - decay) * (p_j * N)        (per layer and query head)
//     sink in that head  <=>  r_j / (1 - decay^n_j) > alpha
// TokenMeta::sink_heads counts the (layer, head) pairs where the rule holds now; the
// hidden-sinks policy pins a token leaving the window when sink_heads >= min_sink_heads (up to
// its cap), and releases a pinned hidden sink whose count has decayed to zero. Every observe()
// also adds the token's mass, summed over heads, to TokenMeta::score (H2O's accumulated score).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kvcache/stream_cache.h"

namespace kvcache {

struct SinkDetectorOptions {
  float alpha = 5.f;   ///< sink threshold in multiples of the uniform share 1/N; > 1
  float decay = 0.9f;  ///< per-query EMA decay in (0, 1): memory of about 1/(1-decay) queries
};

/// Stateless apart from its options; all per-token state lives in the StreamCache (its
/// token_state rows), so it moves with tokens as they are pinned or evicted.
/// Thread safety: const; concurrent observe() calls on different caches are fine.
class SinkDetector {
 public:
  /// Throws InvalidArgument for zero sizes, alpha <= 1 or decay outside (0, 1).
  SinkDetector(std::uint32_t n_layers, std::uint32_t n_heads, SinkDetectorOptions options = {});

  /// Floats of per-token state the cache must keep (StreamConfig::token_state_floats).
  std::uint32_t state_floats() const noexcept { return n_layers_ * n_heads_ + n_layers_; }

  /// Folds in the attention of the newest query of `layer`: mass is n_heads x n_kept
  /// probabilities (as attend() writes them). Throws InvalidArgument if sizes do not match the
  /// cache or the cache keeps too little token state.
  void observe(StreamCache& cache, std::uint32_t layer, std::span<const float> mass) const;

  /// Whether token `index` is a sink in (layer, head) now, by the rule above.
  bool is_sink(StreamCache& cache, std::uint32_t index, std::uint32_t layer, std::uint32_t head) const;

  const SinkDetectorOptions& options() const noexcept { return options_; }

 private:
  float corrected(float ema, std::int64_t n_queries) const;

  std::uint32_t n_layers_;
  std::uint32_t n_heads_;
  SinkDetectorOptions options_;
  std::vector<float> inv_bias_;  ///< 1 / (1 - decay^n) for small n (bias correction)
};

}  // namespace kvcache
