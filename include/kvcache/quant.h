// The quantised page formats q8 and q4: their definition, as scalar reference functions.
//
// q8 (keys and values, per token per head): s = absmax(x) / 127 rounded to f16 (rounded up when
//   f16 rounding would put absmax past 127 s); code = round_half_even(x / s) in [-127, 127];
//   x' = s * code. Error bound: |x - x'| <= s / 2 (plus f32 rounding of the division).
// q4 (asymmetric, 16 levels): for a set of values with minimum lo and maximum hi, zero = lo
//   rounded to f16 (down if rounding went up), s = (hi - zero) / 15 rounded to f16 (up if zero +
//   15 s would fall short of hi); code = round_half_even((x - zero) / s) in [0, 15];
//   x' = zero + s * code. Error bound: |x - x'| <= s / 2 (plus f32 rounding).
//   Keys: one (s, zero) per channel over the tokens of a page (KIVI: outlier channels get their
//   own range). Values: one (s, zero) per token per head.
//   Two 4-bit codes share a byte: byte j of a row holds element j in its low nibble and element
//   j + head_dim / 2 in its high nibble, so a SIMD kernel unpacks contiguous halves of the row.
// s == 0 (all values equal, or all zero for q8) gives code 0 and x' = zero (q4) or 0 (q8), exact.
// Valid range: finite values within f16 range (|x| <= 65504); beyond it scales or zero points
// become infinite and dequantised values non-finite (never undefined behaviour).
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace kvcache::quant {

/// The f16 scale q8 uses for a row whose largest magnitude is `absmax` (>= 0).
std::uint16_t q8_scale(float absmax);
/// Quantises `x` (one row) to `codes` (x.size() int8) and returns its f16 scale.
std::uint16_t q8_quantize(std::span<const float> x, std::int8_t* codes);
/// x'[i] = scale * codes[i] for i < out.size().
void q8_dequantize(const std::int8_t* codes, std::uint16_t scale, std::span<float> out);

/// The q4 parameters (f16 scale, f16 zero point) for values in [lo, hi] (lo <= hi).
struct Q4Params {
  std::uint16_t scale = 0;
  std::uint16_t zero = 0;
};
Q4Params q4_params(float lo, float hi);
/// The 4-bit code of `x` under (scale, zero), both given as f32 values of the f16 parameters.
std::uint8_t q4_code(float x, float scale, float zero);

/// Quantises one row of `x.size()` (even) values per token: packed codes (x.size() / 2 bytes,
/// layout above) and returns the row's parameters.
Q4Params q4_quantize_row(std::span<const float> x, std::uint8_t* packed);
/// Dequantises a per-token row of out.size() (even) values.
void q4_dequantize_row(const std::uint8_t* packed, Q4Params p, std::span<float> out);

/// Per-channel q4 over `n_rows` rows of `head_dim` (even) values (rows[r * head_dim + c]):
/// writes scales[c], zeros[c] (f16) and the packed codes of every row (row r at
/// packed + r * head_dim / 2). n_rows >= 1.
void q4_quantize_channels(const float* rows, std::size_t n_rows, std::size_t head_dim, std::uint16_t* scales,
                          std::uint16_t* zeros, std::uint8_t* packed);
/// Dequantises row `packed` (head_dim / 2 bytes) of a per-channel block.
void q4_dequantize_channels(const std::uint8_t* packed, const std::uint16_t* scales,
                            const std::uint16_t* zeros, std::span<float> out);

/// The 4-bit code of element `i` of a packed row of `head_dim` elements.
constexpr std::uint8_t q4_unpack(const std::uint8_t* packed, std::size_t head_dim, std::size_t i) {
  const std::size_t half = head_dim / 2;
  return i < half ? static_cast<std::uint8_t>(packed[i] & 0xf)
                  : static_cast<std::uint8_t>(packed[i - half] >> 4);
}

}  // namespace kvcache::quant
