// The Llama forward pass over a kvcache::StreamCache: one decoder per sequence.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "kvcache/dtype.h"
#include "kvcache/policy.h"
#include "kvcache/sink_detector.h"
#include "kvcache/stream_cache.h"
#include "llama/layer_attention.h"
#include "llama/model_weights.h"
#include "llama/transformer_pass.h"

namespace kvcache::llama {

/// How a decoder's KV cache is organised. Validated by the StreamCache / PagePool constructors.
struct CacheOptions {
  PolicyConfig policy = PolicyConfig::streaming(4, 256);  ///< what is kept (see kvcache/policy.h)
  std::uint32_t page_tokens = 16;                         ///< tokens per page
  DType dtype = DType::f32;                               ///< storage of K and V (the window's)
  std::optional<DType> pinned_dtype;                      ///< storage of pinned tokens; unset = dtype
  PositionMode positions = PositionMode::reindexed;       ///< positions RoPE sees
  /// Byte budget of the decoder's page pool. Memory is reserved lazily, so a generous value costs
  /// nothing; under the full policy it bounds the stream (PoolExhausted when reached).
  std::size_t max_kv_bytes = std::size_t{1} << 30;
  /// A pool shared with other decoders (a server's one memory limit); its pages must hold this
  /// cache's page layout (InvalidArgument otherwise). Null: the decoder makes its own pool of
  /// max_kv_bytes (ignored when a pool is given).
  std::shared_ptr<PagePool> pool;
  /// Attention implementation (the reference is for tests and comparisons).
  AttentionKernel attention = AttentionKernel::simd;
  /// Sink detection (hidden_sinks and h2o read its results; see kvcache/sink_detector.h).
  SinkDetectorOptions detector;
  /// ACT calibration: attention on detected non-initial sinks is scaled by beta and renormalised
  /// (kvcache/calibration.h). 1 = off (the default); in (0, 1) it runs the detector whatever the
  /// policy.
  float calibrate_beta = 1.f;
  /// Run the sink detector (and compute every query's attention mass) even when neither the
  /// policy nor calibration needs it: for diagnostics (kvstream inspect) under the full policy.
  /// Decoding then goes one token at a time, as with any detector; the logits are unchanged.
  bool force_detector = false;
};

/// Called after the attention of each layer of a single-token step with the n_heads x n_kept
/// probabilities the newest query gave every kept token (cache order, see StreamCache::tokens()).
/// The span is valid only during the call.
using AttentionObserver = std::function<void(std::uint32_t layer, std::span<const float> mass)>;

/// Runs the model on one token stream: RMSNorm, attention through the cache (Q/K/V biases when the
/// model has them; keys appended before RoPE, and the cache rotates them to their cache positions
/// in the model's RoPE style), GQA, SwiGLU FFN, classifier. Weights are read in their own type.
///
/// Ownership: shares the weights (immutable) and owns its cache and scratch buffers.
/// Thread safety: a Decoder must not be used from two threads at once; several decoders may share
/// one ModelWeights. Matrix products may use oneTBB worker threads internally.
/// Errors: InvalidArgument for a token id outside the vocabulary or an empty batch; PoolExhausted
/// when the pool budget is reached (the cache is then unchanged, but the token was not consumed).
class Decoder {
 public:
  /// Largest batch one prefill step runs at once (bounds the scratch memory).
  static constexpr std::uint32_t kMaxBatch = 64;

  Decoder(std::shared_ptr<const ModelWeights> model, const CacheOptions& options);

  /// Feeds one token and returns its next-token logits (vocab_size floats), valid until the next
  /// call on this decoder.
  std::span<const float> step(std::int32_t token);

  /// Feeds `tokens` (at least one) and returns the logits after the last one. Runs batches of up
  /// to kMaxBatch tokens through one begin() when that evicts nothing (so the result equals
  /// token-by-token steps), and single steps otherwise. When `all_logits` is given, it receives
  /// tokens.size() x vocab_size logits, row t after token t.
  std::span<const float> prefill(std::span<const std::int32_t> tokens,
                                 std::vector<float>* all_logits = nullptr);

  const ModelConfig& config() const noexcept { return model_->config; }
  const ModelWeights& weights() const noexcept { return *model_; }
  const StreamCache& cache() const noexcept { return cache_; }
  /// Replaces the cache's contents with a snapshot written by cache().save() (see
  /// StreamCache::restore: FormatError for a missing, torn, corrupt or mismatching file,
  /// PoolExhausted; on error the decoder is unchanged). The logits of the last step are not part
  /// of a snapshot: feed a token before reading logits again.
  void restore_cache(const std::filesystem::path& snapshot) { cache_.restore(snapshot); }
  /// The sink detector, when the policy or calibration needs one (null otherwise).
  const SinkDetector* detector() const noexcept { return detector_ ? &*detector_ : nullptr; }
  /// (head, token) pairs whose attention calibration has scaled so far.
  std::uint64_t calibrated_pairs() const noexcept { return calibrated_; }
  /// Whether the detector's rule holds now for cache index `index` in (layer, head)
  /// (SinkDetector::is_sink on this decoder's cache). Throws InvalidArgument without a detector.
  bool is_sink(std::uint32_t index, std::uint32_t layer, std::uint32_t head);
  /// Installs (or, with an empty function, removes) an observer of every query's attention mass.
  /// Needs a detector (CacheOptions::force_detector or a policy that uses one), since only then
  /// is the mass computed; throws InvalidArgument otherwise.
  void set_attention_observer(AttentionObserver observer);

 private:
  /// Runs tokens.size() <= kMaxBatch tokens through one begin(); a batch of more than one token
  /// must cause no eviction. Leaves logits of the last token in logits_ (and every token's in
  /// `all_logits` from row `row0` when given).
  void forward(std::span<const std::int32_t> tokens, std::vector<float>* all_logits, std::size_t row0);
  /// Throws InvalidArgument for a token id outside the vocabulary.
  void check_token(std::int32_t token) const;
  /// Attention of one query of layer `il` (keys and values already appended), with the detector,
  /// calibration and observer when present. query_index as in AttendOptions.
  void attend_token(std::uint32_t il, std::span<const float> q, std::span<float> att,
                    std::int64_t query_index);

  class BatchAttention;
  friend class DecodeBatch;  // runs check_token / cache_.begin / attend_token for one token per stream

  std::shared_ptr<const ModelWeights> model_;  ///< weights, shared and immutable
  AttentionKernel attention_;                  ///< which kvcache attention to call
  StreamCache cache_;                          ///< this stream's KV cache
  float calibrate_beta_ = 1.f;                 ///< ACT calibration factor, 1 = off
  std::optional<SinkDetector> detector_;       ///< present when attention mass is needed
  std::uint64_t calibrated_ = 0;               ///< calibrated (head, token) pairs so far
  AttentionObserver observer_;                 ///< diagnostics hook, usually empty
  ActivationBuffers buffers_;                  ///< scratch for kMaxBatch rows (no allocation while decoding)
  std::vector<float> logits_;                  ///< [vocab] logits of the last token fed
  std::vector<float> mass_;                    ///< [n_heads][n_kept] attention mass of one query (detector)
};

}  // namespace kvcache::llama
