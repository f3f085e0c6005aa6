// SinkDetector: finds attention sinks, initial and hidden, from the attention mass the kernels
// return, and records them in the cache's token metadata for policies to act on.
//
// Two rules, both after ACT (Yu et al., "Unveiling and Harnessing Hidden Attention Sinks", ICML
// 2024): a key j is a sink in a head when the attention it receives exceeds alpha / N, i.e. alpha
// times the uniform share of the N keys a query sees.
//
// 1. Recent evidence (is_sink(); calibration and `kvstream inspect` use it). Streaming has no
//    fixed set of queries, so the mean is an exponential moving average over the queries that saw
//    the key, with Adam-style bias correction (divide by 1 - decay^n after n queries) so a new key
//    is judged on its first queries rather than pulled toward zero:
//        r_j <- decay * r_j + (1 - decay) * (p_j * N)        (per layer and query head)
//        sink in that head  <=>  r_j / (1 - decay^n_j) > alpha
//
// 2. Persistent window evidence (TokenMeta::sink_heads, what the hidden-sinks policy pins on).
//    A sink is where a head dumps attention from (almost) every query, as BOS does in a model with
//    sinks; a token that a few queries attend to for its content (the '<' of a URL) is not one.
//    And a token must not earn its place from attention it receives *because* it was kept: a
//    pinned token sits at a low cache position next to the initial sinks, visible to every later
//    query, and draws attention for that alone (measured on GPL-3 with stories260K: '<' and '>'
//    pinned by rule 1 then drew 9% of every head's attention for 7,800 queries, and perplexity
//    rose from 73 to 101). So, per (layer, head), the detector counts the queries in which the
//    token drew more than alpha / N *only while it is in the window* (TokenMeta::pin == none);
//    once pinned (or when pinned on arrival) its count is frozen. A query counts only in heads
//    that dump on an initial sink (one of the first PolicyConfig::sinks positions is a sink there
//    by rule 1, this query included): hidden sinks are extra dumps in heads that dump, as in ACT;
//    in a head that does not (stories260K has no such head) a token drawing attention is content,
//    and pinning it was measured to hurt (GPL-3, budget 512: '<' pinned by the window share
//    alone, perplexity 105 against 77). Rule 1's average, not the single query, decides, so a
//    noisy query does not veto a head that dumps. The token is a sink in that head when it has been
//    seen by at least `min_queries` window queries and counted in at least `persistence` of them. sink_heads
//    counts the (layer, head) pairs where this holds. Pinned hidden sinks therefore keep the evidence they
//    earned in the window: a stronger token leaving the window replaces the weakest, and none is kept for its
//    own pinned attention.
//
// Every observe() also adds the token's mass, summed over heads, to TokenMeta::score (H2O's
// accumulated score).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kvcache/stream_cache.h"

namespace kvcache {

struct SinkDetectorOptions {
  float alpha = 5.f;   ///< sink threshold in multiples of the uniform share 1/N; > 1
  float decay = 0.9f;  ///< per-query EMA decay in (0, 1): memory of about 1/(1-decay) queries
  /// Rule 2: share of the window queries in which the token must exceed alpha / N, in (0, 1].
  float persistence = 0.5f;
  /// Rule 2: window queries a token must have been seen by before it can count as a sink; >= 1.
  std::uint32_t min_queries = 8;
};

/// Stateless apart from its options; all per-token state lives in the StreamCache (its
/// token_state rows), so it moves with tokens as they are pinned or evicted.
/// Thread safety: const; concurrent observe() calls on different caches are fine.
class SinkDetector {
 public:
  /// Throws InvalidArgument for zero sizes, alpha <= 1, decay outside (0, 1), persistence outside
  /// (0, 1] or min_queries 0.
  SinkDetector(std::uint32_t n_layers, std::uint32_t n_heads, SinkDetectorOptions options = {});

  /// Floats of per-token state the cache must keep (StreamConfig::token_state_floats).
  /// Layout: EMA [layer][head], window hit counts [layer][head], window queries [layer], sink
  /// heads by rule 2 [layer].
  std::uint32_t state_floats() const noexcept { return 2 * n_layers_ * n_heads_ + 2 * n_layers_; }

  /// Folds in the attention of the newest query of `layer`: mass is n_heads x n_kept
  /// probabilities (as attend() writes them). Rule 2's counts change only for window tokens. Throws
  /// InvalidArgument if sizes do not match the cache or the cache keeps too little token state.
  void observe(StreamCache& cache, std::uint32_t layer, std::span<const float> mass) const;

  /// Whether token `index` is a sink in (layer, head) now, by rule 1 (recent evidence).
  bool is_sink(StreamCache& cache, std::uint32_t index, std::uint32_t layer, std::uint32_t head) const;

  const SinkDetectorOptions& options() const noexcept { return options_; }

 private:
  /// Rule 1 on one (token, head): the bias-corrected EMA after n_queries queries exceeds alpha.
  bool recent_sink(float ema, std::int64_t n_queries) const;

  std::uint32_t n_layers_;
  std::uint32_t n_heads_;
  SinkDetectorOptions options_;
  std::vector<float> inv_bias_;  ///< 1 / (1 - decay^n) for small n (bias correction)
};

}  // namespace kvcache
