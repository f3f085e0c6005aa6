// The q8 / q4 formats (definition in kvcache/quant.h), scalar: this is both what the cache stores
// and the reference the attention kernels' dequantisation is tested against.
#include "kvcache/quant.h"

#include <algorithm>
#include <cassert>
#include <cmath>

#include "kvcache/dtype.h"

namespace kvcache::quant {
namespace {

// Neighbouring f16 values of a finite, non-negative-or-not half `h` (bit patterns are ordered by
// magnitude within a sign).
std::uint16_t f16_up(std::uint16_t h) {
  if (h == 0x8000u) return 0x0001u;                           // -0 -> smallest positive subnormal
  if (h & 0x8000u) return static_cast<std::uint16_t>(h - 1);  // negative: towards zero
  return static_cast<std::uint16_t>(h + 1);
}
std::uint16_t f16_down(std::uint16_t h) {
  if (h == 0x0000u) return 0x8001u;
  if (h & 0x8000u) return static_cast<std::uint16_t>(h + 1);
  return static_cast<std::uint16_t>(h - 1);
}
bool f16_finite(std::uint16_t h) { return (h & 0x7c00u) != 0x7c00u; }

// round_half_even(v) clamped to [lo, hi]; NaN maps to lo. Clamping in float first keeps the
// conversion to int defined for any input.
int round_clamped(float v, float lo, float hi) {
  if (!(v >= lo)) return static_cast<int>(lo);
  if (v > hi) return static_cast<int>(hi);
  return static_cast<int>(std::nearbyint(v));
}

}  // namespace

std::uint16_t q8_scale(float absmax) {
  std::uint16_t s = f16_from_f32(absmax / 127.f);
  if (f16_finite(s) && f32_from_f16(s) * 127.f < absmax) s = f16_up(s);
  return s;
}

std::uint16_t q8_quantize(std::span<const float> x, std::int8_t* codes) {
  float absmax = 0.f;
  for (float v : x) absmax = std::max(absmax, std::abs(v));
  const std::uint16_t s = q8_scale(absmax);
  const float sf = f32_from_f16(s);
  for (std::size_t i = 0; i < x.size(); ++i) {
    codes[i] = sf > 0.f ? static_cast<std::int8_t>(round_clamped(x[i] / sf, -127.f, 127.f)) : std::int8_t{0};
  }
  return s;
}

void q8_dequantize(const std::int8_t* codes, std::uint16_t scale, std::span<float> out) {
  const float sf = f32_from_f16(scale);
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = sf * static_cast<float>(codes[i]);
}

Q4Params q4_params(float lo, float hi) {
  Q4Params p;
  p.zero = f16_from_f32(lo);
  if (f16_finite(p.zero) && f32_from_f16(p.zero) > lo) p.zero = f16_down(p.zero);
  const float z = f32_from_f16(p.zero);
  p.scale = f16_from_f32((hi - z) / 15.f);
  if (f16_finite(p.scale) && z + 15.f * f32_from_f16(p.scale) < hi) p.scale = f16_up(p.scale);
  return p;
}

std::uint8_t q4_code(float x, float scale, float zero) {
  if (!(scale > 0.f)) return 0;
  return static_cast<std::uint8_t>(round_clamped((x - zero) / scale, 0.f, 15.f));
}

Q4Params q4_quantize_row(std::span<const float> x, std::uint8_t* packed) {
  assert(x.size() % 2 == 0 && !x.empty());
  const auto [lo, hi] = std::minmax_element(x.begin(), x.end());
  const Q4Params p = q4_params(*lo, *hi);
  const float s = f32_from_f16(p.scale), z = f32_from_f16(p.zero);
  const std::size_t half = x.size() / 2;
  for (std::size_t j = 0; j < half; ++j) {
    packed[j] = static_cast<std::uint8_t>(q4_code(x[j], s, z) | (q4_code(x[j + half], s, z) << 4));
  }
  return p;
}

void q4_dequantize_row(const std::uint8_t* packed, Q4Params p, std::span<float> out) {
  const float s = f32_from_f16(p.scale), z = f32_from_f16(p.zero);
  for (std::size_t i = 0; i < out.size(); ++i)
    out[i] = z + s * static_cast<float>(q4_unpack(packed, out.size(), i));
}

void q4_quantize_channels(const float* rows, std::size_t n_rows, std::size_t head_dim, std::uint16_t* scales,
                          std::uint16_t* zeros, std::uint8_t* packed) {
  assert(n_rows >= 1 && head_dim % 2 == 0);
  const std::size_t half = head_dim / 2;
  for (std::size_t c = 0; c < head_dim; ++c) {
    float lo = rows[c], hi = rows[c];
    for (std::size_t r = 1; r < n_rows; ++r) {
      lo = std::min(lo, rows[r * head_dim + c]);
      hi = std::max(hi, rows[r * head_dim + c]);
    }
    const Q4Params p = q4_params(lo, hi);
    scales[c] = p.scale;
    zeros[c] = p.zero;
  }
  for (std::size_t r = 0; r < n_rows; ++r) {
    const float* x = rows + r * head_dim;
    std::uint8_t* out = packed + r * half;
    for (std::size_t j = 0; j < half; ++j) {
      const std::uint8_t lo_code = q4_code(x[j], f32_from_f16(scales[j]), f32_from_f16(zeros[j]));
      const std::uint8_t hi_code =
          q4_code(x[j + half], f32_from_f16(scales[j + half]), f32_from_f16(zeros[j + half]));
      out[j] = static_cast<std::uint8_t>(lo_code | (hi_code << 4));
    }
  }
}

void q4_dequantize_channels(const std::uint8_t* packed, const std::uint16_t* scales,
                            const std::uint16_t* zeros, std::span<float> out) {
  for (std::size_t c = 0; c < out.size(); ++c) {
    out[c] = f32_from_f16(zeros[c]) +
             f32_from_f16(scales[c]) * static_cast<float>(q4_unpack(packed, out.size(), c));
  }
}

}  // namespace kvcache::quant
