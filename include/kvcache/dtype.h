// Storage types of cached K and V, and the f32 <-> f16 conversions used for f16 pages and for the
// scales of quantised pages (quantisation itself: kvcache/quant.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace kvcache {

/// Storage type of K and V elements in a page. Computation is always in f32.
enum class DType : std::uint8_t {
  f32,  ///< IEEE binary32, stored exactly.
  f16,  ///< IEEE binary16; converted from f32 with round-to-nearest-even, overflow to +-inf.
  q8,   ///< int8 codes, one f16 scale per token per head (symmetric; see quant.h). Any head_dim.
  q4,   ///< 4-bit codes; keys per channel within a page, values per token (KIVI); f16 scales and
        ///< zero points (see quant.h). head_dim must be even.
};

/// The last valid DType (for validating enumerators that arrive as integers).
inline constexpr DType kLastDType = DType::q4;

/// Bits of one element's code in a page row (32, 16, 8 or 4); quantised pages add their scales
/// and zero points on top (PageLayout::page_bytes states the exact total).
constexpr std::size_t dtype_bits(DType dt) {
  return dt == DType::f32 ? 32 : dt == DType::f16 ? 16 : dt == DType::q8 ? 8 : 4;
}

/// Whether `dt` is a quantised type (q8, q4).
constexpr bool is_quantized(DType dt) { return dt == DType::q8 || dt == DType::q4; }

/// "f32", "f16", "q8" or "q4".
std::string_view dtype_name(DType dt);

/// Parses "f32" / "f16" / "q8" / "q4"; throws InvalidArgument otherwise.
DType parse_dtype(std::string_view name);

/// Scalar reference conversions (round-to-nearest-even, NaN stays NaN, subnormals exact).
std::uint16_t f16_from_f32(float x);
float f32_from_f16(std::uint16_t h);

/// Bulk conversions, SIMD (Highway, dynamic dispatch). Results equal the scalar functions above
/// bit for bit. `dst.size()` must equal `src.size()` (asserted).
void convert_f32_to_f16(std::span<const float> src, std::span<std::uint16_t> dst);
void convert_f16_to_f32(std::span<const std::uint16_t> src, std::span<float> dst);

}  // namespace kvcache
