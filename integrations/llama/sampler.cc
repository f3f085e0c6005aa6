#include "llama/sampler.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "kvcache/error.h"

namespace kvcache::llama {

Sampler::Sampler(const SamplerConfig& config)
    : config_(config), state_(config.seed == 0 ? 0x9E3779B97F4A7C15ull : config.seed) {
  if (!std::isfinite(config.temperature) || config.temperature < 0.f) {
    throw InvalidArgument("temperature " + std::to_string(config.temperature) + " must be finite and >= 0");
  }
  if (!std::isfinite(config.top_p)) throw InvalidArgument("top_p must be finite");
}

void Sampler::set_rng_state(std::uint64_t state) {
  if (state == 0) throw InvalidArgument("Sampler::set_rng_state: 0 is not an xorshift state");
  state_ = state;
}

std::uint32_t Sampler::next_u32() {
  state_ ^= state_ >> 12;
  state_ ^= state_ << 25;
  state_ ^= state_ >> 27;
  return static_cast<std::uint32_t>((state_ * 0x2545F4914F6CDD1Dull) >> 32);
}

float Sampler::next_f32() { return static_cast<float>(next_u32() >> 8) / 16777216.0f; }

std::int32_t Sampler::sample(std::span<const float> logits) {
  if (logits.empty()) throw InvalidArgument("Sampler::sample: no logits");
  for (float l : logits) {
    if (!std::isfinite(l)) throw InvalidArgument("Sampler::sample: non-finite logit");
  }
  const auto argmax = [&] {
    return static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  };
  if (config_.temperature == 0.f) return argmax();

  // Softmax of logits / temperature, max subtracted for range.
  const float max_l = *std::max_element(logits.begin(), logits.end());
  probs_.resize(logits.size());
  double sum = 0;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    probs_[i] = std::exp((logits[i] - max_l) / config_.temperature);
    sum += probs_[i];
  }
  const auto inv = static_cast<float>(1.0 / sum);
  for (float& p : probs_) p *= inv;

  const float coin = next_f32();
  const auto last = static_cast<std::int32_t>(probs_.size() - 1);
  if (config_.top_p <= 0.f || config_.top_p >= 1.f) {
    float cdf = 0.f;
    for (std::size_t i = 0; i < probs_.size(); ++i) {
      cdf += probs_[i];
      if (coin < cdf) return static_cast<std::int32_t>(i);
    }
    return last;  // rounding left the cdf just below the coin
  }

  // Nucleus: the smallest set of most likely tokens whose mass exceeds top_p. Tokens below
  // (1 - top_p) / (n - 1) can never be in it (llama2.c's cut), which keeps the sort short.
  const float cutoff = (1.0f - config_.top_p) / static_cast<float>(probs_.size() > 1 ? probs_.size() - 1 : 1);
  nucleus_.clear();
  for (std::size_t i = 0; i < probs_.size(); ++i) {
    if (probs_[i] >= cutoff) nucleus_.emplace_back(probs_[i], static_cast<std::int32_t>(i));
  }
  if (nucleus_.empty()) return argmax();
  std::sort(nucleus_.begin(), nucleus_.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  float mass = 0.f;
  std::size_t end = nucleus_.size();
  for (std::size_t i = 0; i < nucleus_.size(); ++i) {
    mass += nucleus_[i].first;
    if (mass > config_.top_p) {
      end = i + 1;
      break;
    }
  }
  const float r = coin * mass;
  float cdf = 0.f;
  for (std::size_t i = 0; i < end; ++i) {
    cdf += nucleus_[i].first;
    if (r < cdf) return nucleus_[i].second;
  }
  return nucleus_[end - 1].second;
}

}  // namespace kvcache::llama
