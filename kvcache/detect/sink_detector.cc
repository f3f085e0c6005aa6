#include "kvcache/sink_detector.h"

#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "kvcache/error.h"

namespace kvcache {

SinkDetector::SinkDetector(std::uint32_t n_layers, std::uint32_t n_heads, SinkDetectorOptions options)
    : n_layers_(n_layers), n_heads_(n_heads), options_(options) {
  if (n_layers == 0 || n_heads == 0) throw InvalidArgument("SinkDetector: n_layers and n_heads must be > 0");
  if (std::uint64_t{n_layers} * n_heads > 0xffff) {
    throw InvalidArgument("SinkDetector: n_layers x n_heads must be <= 65535 (sink_heads is 16-bit)");
  }
  if (!(options.alpha > 1.f) || !std::isfinite(options.alpha)) {
    throw InvalidArgument("SinkDetector: alpha must be a finite number > 1 (got " +
                          std::to_string(options.alpha) + ")");
  }
  if (!(options.decay > 0.f && options.decay < 1.f)) {
    throw InvalidArgument("SinkDetector: decay must be in (0, 1) (got " + std::to_string(options.decay) +
                          ")");
  }
  if (!(options.persistence > 0.f && options.persistence <= 1.f)) {
    throw InvalidArgument("SinkDetector: persistence must be in (0, 1] (got " +
                          std::to_string(options.persistence) + ")");
  }
  if (options.min_queries == 0) throw InvalidArgument("SinkDetector: min_queries must be >= 1");
  // inv_bias_[n] = 1 / (1 - decay^n) while decay^n is above f32 resolution.
  inv_bias_.push_back(1.f);
  double power = options.decay;
  for (std::size_t n = 1; power > 1e-8 && n < 100000; ++n, power *= options.decay) {
    inv_bias_.push_back(static_cast<float>(1.0 / (1.0 - power)));
  }
}

bool SinkDetector::recent_sink(float ema, std::int64_t n_queries) const {
  // Past the table, decay^n is below f32 resolution and the correction is exactly 1.
  const std::size_t n = static_cast<std::size_t>(std::max<std::int64_t>(n_queries, 1));
  return (n < inv_bias_.size() ? ema * inv_bias_[n] : ema) > options_.alpha;
}

void SinkDetector::observe(StreamCache& cache, std::uint32_t layer, std::span<const float> mass) const {
  const std::uint32_t n = cache.n_kept();
  if (layer >= n_layers_) throw InvalidArgument("SinkDetector::observe: layer out of range");
  if (mass.size() != std::size_t{n_heads_} * n) {
    throw InvalidArgument("SinkDetector::observe: mass must hold n_heads x n_kept = " +
                          std::to_string(std::size_t{n_heads_} * n) + " floats, got " +
                          std::to_string(mass.size()));
  }
  if (cache.config().token_state_floats < state_floats()) {
    throw InvalidArgument("SinkDetector::observe: the cache keeps " +
                          std::to_string(cache.config().token_state_floats) +
                          " state floats per token, the detector needs " + std::to_string(state_floats()));
  }
  const float keep = options_.decay, take = 1.f - options_.decay;
  const float uniform_scale = static_cast<float>(n);
  const std::size_t lh = std::size_t{n_layers_} * n_heads_;
  // Heads that dump attention on an initial sink (one of the first policy.sinks positions) by
  // recent evidence, this query included: only there can another token act as a sink (see the
  // header). Initial sinks are pinned on arrival and come first in cache order, so their flags are
  // set before any window token is judged. A stack buffer covers every real model's heads.
  const std::int64_t n_initial = cache.config().policy.sinks;
  const auto seen = static_cast<std::int64_t>(cache.stats().tokens_seen);
  std::array<char, 256> dumps_small{};
  std::vector<char> dumps_large;
  char* dumps = dumps_small.data();
  if (n_heads_ > dumps_small.size()) {
    dumps_large.assign(n_heads_, 0);
    dumps = dumps_large.data();
  }
  for (std::uint32_t j = 0; j < n; ++j) {
    StreamCache::Observed o = cache.observed(j);
    float* ema = o.state.data() + std::size_t{layer} * n_heads_;
    float mass_sum = 0.f;
    for (std::uint32_t h = 0; h < n_heads_; ++h) {
      const float p = mass[std::size_t{h} * n + j];
      mass_sum += p;
      ema[h] = keep * ema[h] + take * p * uniform_scale;
    }
    if (o.pos < n_initial) {
      for (std::uint32_t h = 0; h < n_heads_; ++h) {
        if (recent_sink(ema[h], seen - o.pos)) dumps[h] = 1;
      }
    }
    *o.score += mass_sum;
    // Rule 2: evidence only from queries that saw the token in the window (see the header).
    if (o.pin != PinReason::none) continue;
    float* hits = o.state.data() + lh + std::size_t{layer} * n_heads_;
    float* queries = o.state.data() + 2 * lh + layer;
    float* layer_count = o.state.data() + 2 * lh + n_layers_ + layer;
    *queries += 1.f;
    const bool judged = *queries >= static_cast<float>(options_.min_queries);
    const float needed = options_.persistence * *queries;
    std::uint32_t sinks_here = 0;
    for (std::uint32_t h = 0; h < n_heads_; ++h) {
      if (dumps[h] != 0 && mass[std::size_t{h} * n + j] * uniform_scale > options_.alpha) hits[h] += 1.f;
      if (judged && hits[h] >= needed) ++sinks_here;
    }
    // Token state may come from a snapshot file and hold anything; converting a float outside
    // the integer's range is undefined behaviour, so take only a count this detector can write.
    const float stored = *layer_count;
    const std::uint32_t before =
        stored >= 0.f && stored <= static_cast<float>(n_heads_) ? static_cast<std::uint32_t>(stored) : 0;
    *layer_count = static_cast<float>(sinks_here);
    const std::uint32_t total = *o.sink_heads >= before ? *o.sink_heads - before + sinks_here : sinks_here;
    *o.sink_heads = static_cast<std::uint16_t>(std::min<std::uint32_t>(total, 0xffff));
  }
}

bool SinkDetector::is_sink(StreamCache& cache, std::uint32_t index, std::uint32_t layer,
                           std::uint32_t head) const {
  if (layer >= n_layers_ || head >= n_heads_)
    throw InvalidArgument("SinkDetector::is_sink: layer or head out of range");
  StreamCache::Observed o = cache.observed(index);
  if (o.state.size() < state_floats())
    throw InvalidArgument("SinkDetector::is_sink: cache keeps too little token state");
  const std::int64_t n_queries = static_cast<std::int64_t>(cache.stats().tokens_seen) - o.pos;
  return recent_sink(o.state[std::size_t{layer} * n_heads_ + head], n_queries);
}

}  // namespace kvcache
