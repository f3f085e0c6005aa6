#include "kvcache/rope.h"

#include <cassert>
#include <cmath>
#include <cstddef>

namespace kvcache {

void rope_rotate(const RopeConfig& rope, std::uint32_t head_dim, double position, std::span<float> x) {
  if (rope.style == RopeStyle::none || position == 0.0) return;
  assert(head_dim % 2 == 0 && x.size() % head_dim == 0);
  const std::uint32_t half = head_dim / 2;
  // Angles in double: position * frequency loses f32 precision long before positions of 2^24.
  for (std::uint32_t i = 0; i < half; ++i) {
    const double freq = std::pow(rope.theta, -2.0 * i / head_dim);
    const double angle = position * freq;
    const double c = std::cos(angle);
    const double s = std::sin(angle);
    for (std::size_t row = 0; row < x.size(); row += head_dim) {
      const std::size_t a = row + (rope.style == RopeStyle::adjacent_pairs ? 2 * i : i);
      const std::size_t b = rope.style == RopeStyle::adjacent_pairs ? a + 1 : a + half;
      const double x0 = x[a];
      const double x1 = x[b];
      x[a] = static_cast<float>(x0 * c - x1 * s);
      x[b] = static_cast<float>(x0 * s + x1 * c);
    }
  }
}

}  // namespace kvcache
