// Element types of cached K and V, and the f32 <-> f16 conversions used for f16 pages.
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
};

/// Bytes of one element of `dt`.
constexpr std::size_t dtype_bytes(DType dt) { return dt == DType::f32 ? 4 : 2; }

/// "f32" or "f16".
std::string_view dtype_name(DType dt);

/// Parses "f32" / "f16"; throws InvalidArgument otherwise.
DType parse_dtype(std::string_view name);

/// Scalar reference conversions (round-to-nearest-even, NaN stays NaN, subnormals exact).
std::uint16_t f16_from_f32(float x);
float f32_from_f16(std::uint16_t h);

/// Bulk conversions, SIMD (Highway, dynamic dispatch). Results equal the scalar functions above
/// bit for bit. `dst.size()` must equal `src.size()` (asserted).
void convert_f32_to_f16(std::span<const float> src, std::span<std::uint16_t> dst);
void convert_f16_to_f32(std::span<const std::uint16_t> src, std::span<float> dst);

}  // namespace kvcache
