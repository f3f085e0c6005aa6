// Rotary position embedding (RoPE) as the cache applies it to keys and queries.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace kvcache {

enum class RopeStyle : std::uint8_t {
  none,            ///< the model has no RoPE; keys are stored as given
  adjacent_pairs,  ///< rotate (x[2i], x[2i+1]) (llama2.c, Meta's reference Llama)
  half_split,      ///< rotate (x[i], x[i + d/2]) (HuggingFace / GPT-NeoX)
};

struct RopeConfig {
  RopeStyle style = RopeStyle::adjacent_pairs;
  double theta = 10000.0;  ///< base; pair i rotates by position * theta^(-2i/head_dim)
  /// Per-pair frequency divisors (Llama 3's `rope_freqs.weight`, as llama.cpp applies them): pair i
  /// rotates by position * theta^(-2i/head_dim) / freq_factors[i]. Empty means 1 for every pair;
  /// otherwise head_dim/2 finite values > 0 (StreamCache validates).
  std::vector<float> freq_factors = {};

  friend bool operator==(const RopeConfig&, const RopeConfig&) = default;
};

/// The cos/sin of one position for every pair of a head: rotating many rows (all heads, all
/// layers of a token) by the same position then costs no trigonometry. Frequencies are computed
/// once at construction. Not thread safe (set_position mutates); cheap to copy.
class RopeAngles {
 public:
  RopeAngles() = default;
  RopeAngles(const RopeConfig& rope, std::uint32_t head_dim);
  /// Computes cos/sin for `position` (no-op if it is the current one).
  void set_position(double position);
  /// Rotates each head_dim-long row of `x` by the current position (asserts the size).
  void rotate(std::span<float> x) const;
  const RopeConfig& config() const { return rope_; }
  std::uint32_t head_dim() const { return head_dim_; }

 private:
  RopeConfig rope_;
  std::uint32_t head_dim_ = 0;
  double position_ = 0.0;
  std::vector<double> freq_;  ///< theta^(-2i/head_dim) / freq_factors[i]
  std::vector<float> cos_, sin_;
};

/// Rotates each head_dim-long row of `x` in place by `position`. Angles are computed in double
/// (position * frequency, then sin/cos), so positions up to 2^40 keep full f32 accuracy.
/// `x.size()` must be a multiple of head_dim and head_dim even (asserted).
void rope_rotate(const RopeConfig& rope, std::uint32_t head_dim, double position, std::span<float> x);

}  // namespace kvcache
