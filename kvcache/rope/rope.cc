#include "kvcache/rope.h"

#include <cassert>
#include <cmath>
#include <cstddef>

namespace kvcache {

RopeAngles::RopeAngles(const RopeConfig& rope, std::uint32_t head_dim) : rope_(rope), head_dim_(head_dim) {
  assert(rope.style == RopeStyle::none || head_dim % 2 == 0);
  const std::uint32_t half = head_dim / 2;
  assert(rope.freq_factors.empty() || rope.freq_factors.size() == half);
  freq_.resize(half);
  cos_.assign(half, 1.f);
  sin_.assign(half, 0.f);
  for (std::uint32_t i = 0; i < half; ++i) {
    freq_[i] = std::pow(rope.theta, -2.0 * i / head_dim);
    if (!rope.freq_factors.empty()) freq_[i] /= static_cast<double>(rope.freq_factors[i]);
  }
}

void RopeAngles::set_position(double position) {
  if (position == position_) return;
  position_ = position;
  // Angles in double: position * frequency loses f32 precision long before positions of 2^24.
  for (std::size_t i = 0; i < freq_.size(); ++i) {
    const double angle = position * freq_[i];
    cos_[i] = static_cast<float>(std::cos(angle));
    sin_[i] = static_cast<float>(std::sin(angle));
  }
}

void RopeAngles::rotate(std::span<float> x) const {
  if (rope_.style == RopeStyle::none || position_ == 0.0) return;
  assert(head_dim_ > 0 && x.size() % head_dim_ == 0);
  const std::size_t half = head_dim_ / 2;
  const bool adjacent = rope_.style == RopeStyle::adjacent_pairs;
  for (std::size_t row = 0; row < x.size(); row += head_dim_) {
    for (std::size_t i = 0; i < half; ++i) {
      const std::size_t a = row + (adjacent ? 2 * i : i);
      const std::size_t b = adjacent ? a + 1 : a + half;
      const float x0 = x[a], x1 = x[b];
      x[a] = x0 * cos_[i] - x1 * sin_[i];
      x[b] = x0 * sin_[i] + x1 * cos_[i];
    }
  }
}

void rope_rotate(const RopeConfig& rope, std::uint32_t head_dim, double position, std::span<float> x) {
  if (rope.style == RopeStyle::none || position == 0.0) return;
  RopeAngles angles(rope, head_dim);
  angles.set_position(position);
  angles.rotate(x);
}

}  // namespace kvcache
