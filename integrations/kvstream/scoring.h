// Streaming perplexity of one token sequence through one decoder: the loop `kvstream ppl` runs
// and every grid point of `kvstream sweep` runs. One implementation, so a sweep point and the
// ppl command with the same flags give bit-identical numbers.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "kvcache/stream_cache.h"
#include "llama/model.h"

namespace kvstream {

/// Scored tokens [begin, end) (indices into the scored tokens, 0 = the second token of the input)
/// and the sum of their negative log-likelihoods.
struct Segment {
  std::uint64_t begin = 0, end = 0;
  double nll_sum = 0;
  double ppl() const;
};

struct StreamScore {
  std::uint64_t scored = 0;    ///< tokens scored (fewer than scorable when interrupted)
  std::uint64_t scorable = 0;  ///< tokens.size() - 1
  double nll_sum = 0;          ///< natural log, summed in double in token order
  std::vector<Segment> segments;
  std::vector<double> token_nll;  ///< per scored token, in order; filled only when asked for
  double seconds = 0;             ///< wall time of the loop (decoding and scoring)
  kvcache::StreamStats stats;     ///< the cache's statistics at the end (kv_bytes_peak etc.)

  bool complete() const { return scored == scorable; }
  double nll_mean() const;
  double ppl() const;  ///< exp(nll_mean)
  double tokens_per_second() const;
};

/// Called after every scored token with the count so far and the running NLL sum (on the
/// calling thread; keep it cheap or rate-limit inside).
using ScoreProgress = std::function<void(std::uint64_t scored, double nll_sum)>;

/// Feeds tokens[0 .. n-2] one at a time through `dec` (a fresh decoder); the logits after token
/// t score token t + 1. Stops early when kvstream::interrupted() becomes true. `segment_tokens`
/// (>= 1) scored tokens form one segment; `keep_token_nll` keeps every token's NLL (8 bytes per
/// token) for a per-token score file. Throws what Decoder::step throws.
StreamScore score_stream(kvcache::llama::Decoder& dec, std::span<const std::int32_t> tokens,
                         std::uint32_t segment_tokens, const ScoreProgress& progress = {},
                         bool keep_token_nll = false);

}  // namespace kvstream
