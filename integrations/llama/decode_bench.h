// Decode speed of a model at given depths of its stream: prefill tokens per second, decode tokens
// per second at each depth, the bytes a decode step reads (weights + KV held) and the bandwidth
// that means, as a ratio to a STREAM triad measured in the same process. The library side of
// `kvstream bench` and of bench/decode_benchmark.
//
// Token ids are drawn from a seeded RNG: on a random-weight model the text is meaningless, and
// the speed of a step does not depend on which token it is.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "llama/model.h"
#include "llama/model_weights.h"

namespace kvcache::llama {

/// What run_decode_bench measures. Validated by run_decode_bench (InvalidArgument naming the field).
struct DecodeBenchOptions {
  /// Stream depths (tokens fed before the timed steps) at which decode speed is measured; run in
  /// ascending order on one decoder, so each depth continues the stream of the previous one.
  std::vector<std::uint64_t> depths{0, 4096, 16384};
  std::uint32_t prompt_tokens = 128;  ///< P: tokens of the timed prefill (0 = no prefill measurement)
  std::uint32_t decode_steps = 32;    ///< timed Decoder::step calls at each depth (>= 1)
  /// How depth is reached: false = one Decoder::step per token (what streaming generation does);
  /// true = Decoder::prefill, which batches up to Decoder::kMaxBatch tokens while nothing is
  /// evicted (exact: the same cache as single steps) and steps one at a time once the budget is
  /// full. Under the full policy every token is batched; under sinks only the first `budget`.
  bool fill_prefill = false;
  /// Give up filling once the whole run has taken this long (seconds, > 0); the depths not
  /// reached are reported with reached = false. Keeps a run on a slow machine bounded.
  double max_seconds = 600;
  std::uint64_t seed = 1;  ///< seed of the random token ids
  /// Threads for the triad (>= 1): those of the task arena the caller runs this in.
  int threads = 1;
  /// Bytes of the triad's three arrays; far larger than the last-level cache (0 = no triad; then
  /// the ratios are 0).
  std::size_t triad_bytes = std::size_t{384} << 20;
  /// Progress: called with a phase ("prefill", "fill 4096", "decode 4096", ...), tokens done and
  /// tokens in the phase, after every batch of up to Decoder::kMaxBatch tokens fed and at the end
  /// of each phase. May be empty.
  std::function<void(std::string_view phase, std::uint64_t done, std::uint64_t total)> progress;
};

/// One depth's measurement.
struct DepthResult {
  std::uint64_t requested_depth = 0;  ///< as asked
  std::uint64_t depth = 0;          ///< tokens fed before the first timed step (> requested when the previous
                                    ///< depth's timed steps already went past it)
  bool reached = false;             ///< false: the time limit stopped filling; nothing else below is set
  std::uint32_t tokens_kept = 0;    ///< tokens in the cache at the first timed step
  std::size_t kv_bytes = 0;         ///< KV held (pages x page bytes, StreamStats::kv_bytes), mean of
                                    ///< before and after the timed steps
  std::size_t bytes_per_token = 0;  ///< ModelWeights::step_matrix_bytes() + kv_bytes
  double fill_seconds = 0;          ///< time taken to reach the depth from the previous one
  double seconds = 0;               ///< time of the timed steps
  double tokens_per_second = 0;     ///< decode_steps / seconds
  double gbps = 0;                  ///< bytes_per_token x tokens_per_second / 1e9
  double triad_ratio = 0;           ///< gbps / triad GB/s (0 without a triad)
  /// Process CPU time (all threads) during the timed steps. On a shared machine the wall-clock
  /// rate also counts time the threads waited for a core; cpu_seconds / threads does not.
  double cpu_seconds = 0;
  /// bytes_per_token x decode_steps / (cpu_seconds / threads) / 1e9: the rate while the threads
  /// ran (oneTBB workers that spin while waiting count as running, so this is a lower bound).
  double gbps_cpu = 0;
};

struct DecodeBenchResult {
  std::size_t weight_bytes = 0;  ///< ModelWeights::step_matrix_bytes()
  std::uint32_t prompt_tokens = 0;
  double prefill_seconds = 0;            ///< time of prefill(P tokens) on an empty cache
  double prefill_tokens_per_second = 0;  ///< P / prefill_seconds (0 when P = 0)
  double triad_gbps = 0;                 ///< STREAM triad, threads as given, GB/s (1e9 bytes)
  std::uint32_t decode_steps = 0;
  bool fill_prefill = false;
  std::vector<DepthResult> depths;  ///< ascending by requested depth, duplicates removed
  double total_seconds = 0;         ///< the whole run, triad included
};

/// Measures `model` under cache `options` (its own page pool unless options.pool is set):
/// first one untimed step (it faults in a memory-mapped model's pages), then the timed prefill
/// of P tokens on a fresh decoder, then on another fresh decoder, for each depth, filling up to
/// it and timing decode_steps single steps; the triad runs last, after the decoders are gone.
/// Runs on the calling thread; matrix products and attention use the caller's current oneTBB
/// task arena (run it inside a task_arena of `threads` threads).
/// Errors: InvalidArgument for bad options (field named); PoolExhausted when the full policy's
/// cache outgrows options.max_kv_bytes on the way to a depth.
DecodeBenchResult run_decode_bench(std::shared_ptr<const ModelWeights> model, const CacheOptions& options,
                                   const DecodeBenchOptions& bench);

}  // namespace kvcache::llama
