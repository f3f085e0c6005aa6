#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "hwy/highway.h"
#include "kvcache/dtype.h"

using namespace kvcache;

namespace {

// Oracle for f32 -> f16: pick the nearer of the two neighbouring halves, ties to even, by exact
// comparison in double.
std::uint16_t f16_oracle(float x) {
  if (std::isnan(x)) return 0;  // callers skip NaN
  const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::abs(double(x));
  if (a >= 65520.0) return sign | 0x7c00;
  std::uint16_t lo = 0;
  for (std::uint16_t step = 0x4000; step; step >>= 1) {  // largest half <= a
    const std::uint16_t t = lo | step;
    if (t < 0x7c00 && f32_from_f16(t) <= a) lo = t;
  }
  const double dl = a - f32_from_f16(lo);
  const double dh = f32_from_f16(static_cast<std::uint16_t>(lo + 1)) - a;
  std::uint16_t r = lo;
  if (dh < dl || (dh == dl && (lo & 1))) r = static_cast<std::uint16_t>(lo + 1);
  return sign | r;
}

}  // namespace

TEST_CASE("every half survives f16 -> f32 -> f16") {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = f32_from_f16(static_cast<std::uint16_t>(h));
    if (std::isnan(f)) {
      CHECK(std::isnan(f32_from_f16(f16_from_f32(f))));
      continue;
    }
    CHECK(f16_from_f32(f) == h);
  }
}

TEST_CASE("f32 -> f16 rounds to nearest even") {
  std::mt19937 rng(42);
  std::uniform_int_distribution<std::uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    // Bias exponents toward the half range, including subnormals and overflow.
    std::uint32_t b = bits(rng);
    b = (b & 0x807fffffu) | ((100u + (b >> 23) % 48u) << 23);
    const float x = std::bit_cast<float>(b);
    CAPTURE(b);
    CHECK(f16_from_f32(x) == f16_oracle(x));
  }
  CHECK(f16_from_f32(65504.f) == 0x7bff);
  CHECK(f16_from_f32(65520.f) == 0x7c00);
  CHECK(f16_from_f32(0x1p-25f) == 0);
  CHECK(f16_from_f32(0x1.000002p-25f) == 1);
}

TEST_CASE("bulk conversions equal the scalar ones on every compiled target") {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-70000.f, 70000.f);
  std::vector<float> src(1031);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = i % 3 == 0 ? u(rng) * 1e-6f : u(rng);
  src[5] = 65520.f;
  src[6] = -0.f;
  src[7] = 0x1.8p-25f;
  for (std::int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    const std::string name = hwy::TargetName(target);
    CAPTURE(name);
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{16}, src.size()}) {
      std::vector<std::uint16_t> h(n);
      convert_f32_to_f16({src.data(), n}, h);
      for (std::size_t i = 0; i < n; ++i) CHECK(h[i] == f16_from_f32(src[i]));
      std::vector<float> back(n);
      convert_f16_to_f32(h, back);
      for (std::size_t i = 0; i < n; ++i)
        CHECK(std::bit_cast<std::uint32_t>(back[i]) == std::bit_cast<std::uint32_t>(f32_from_f16(h[i])));
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}
