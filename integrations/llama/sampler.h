// Next-token sampling: greedy, temperature, nucleus (top-p), with a seeded, portable RNG.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace kvcache::llama {

struct SamplerConfig {
  float temperature = 1.0f;  ///< 0 = greedy (argmax); otherwise logits are divided by it
  float top_p = 0.9f;        ///< nucleus mass in (0, 1); <= 0 or >= 1 samples the full distribution
  std::uint64_t seed = 1;    ///< RNG seed; equal seeds give equal streams on every platform
};

/// Picks next tokens from logits. Holds its RNG state and scratch buffers: one Sampler per stream,
/// not shared between threads.
class Sampler {
 public:
  /// Throws kvcache::InvalidArgument for a negative or non-finite temperature or a non-finite top_p.
  explicit Sampler(const SamplerConfig& config);

  /// The next token for `logits` (one per vocabulary entry, at least one). Throws
  /// kvcache::InvalidArgument when a logit is not finite (a broken model must not drive the
  /// sort into undefined behaviour).
  std::int32_t sample(std::span<const float> logits);

  const SamplerConfig& config() const noexcept { return config_; }

  /// The RNG state: with the config, everything that decides the next samples. Save it to
  /// resume a stream elsewhere (a server's parked session) exactly where it was.
  std::uint64_t rng_state() const noexcept { return state_; }
  /// Restores a state from rng_state(). Throws kvcache::InvalidArgument for 0 (never a state).
  void set_rng_state(std::uint64_t state);

 private:
  /// xorshift64*, as llama2.c uses: tiny, fast, and the same on every platform (unlike
  /// std::uniform_real_distribution).
  std::uint32_t next_u32();
  /// Uniform in [0, 1).
  float next_f32();

  SamplerConfig config_;
  std::uint64_t state_;                                  ///< RNG state, never 0
  std::vector<float> probs_;                             ///< scratch: softmax of the scaled logits
  std::vector<std::pair<float, std::int32_t>> nucleus_;  ///< scratch: candidates for top-p
};

}  // namespace kvcache::llama
