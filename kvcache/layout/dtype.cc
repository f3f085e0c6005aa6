// Scalar f16 conversions (the reference) and names of dtypes.
#include "kvcache/dtype.h"

#include <bit>
#include <string>

#include "kvcache/error.h"

namespace kvcache {

std::string_view dtype_name(DType dt) {
  switch (dt) {
    case DType::f32:
      return "f32";
    case DType::f16:
      return "f16";
    case DType::q8:
      return "q8";
    case DType::q4:
      return "q4";
  }
  return "unknown";
}

DType parse_dtype(std::string_view name) {
  for (DType dt : {DType::f32, DType::f16, DType::q8, DType::q4}) {
    if (name == dtype_name(dt)) return dt;
  }
  throw InvalidArgument("unknown KV dtype '" + std::string(name) + "' (expected f32, f16, q8 or q4)");
}

std::uint16_t f16_from_f32(float x) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(x);
  const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const std::uint32_t mag = bits & 0x7fffffffu;
  if (mag > 0x7f800000u) {  // NaN: keep it quiet and non-zero in the mantissa
    return static_cast<std::uint16_t>(sign | 0x7e00u | ((mag >> 13) & 0x3ffu));
  }
  if (mag >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to inf
  if (mag >= 0x38800000u) {  // normal half: rebias the exponent, round to nearest even at bit 13
    std::uint32_t r = mag - 0x38000000u;
    r += 0xfffu + ((r >> 13) & 1u);
    return static_cast<std::uint16_t>(sign | (r >> 13));
  }
  if (mag < 0x33000000u) return sign;  // below 2^-25: rounds to zero (2^-25 itself ties to even 0)
  // Subnormal half: count units of 2^-24, rounding to nearest even.
  const std::uint32_t exponent = mag >> 23;
  const std::uint32_t mantissa = (mag & 0x7fffffu) | 0x800000u;
  const std::uint32_t shift = 126u - exponent;  // in [14, 24]
  std::uint32_t units = mantissa >> shift;
  const std::uint32_t rest = mantissa & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1u);
  if (rest > half || (rest == half && (units & 1u))) ++units;
  return static_cast<std::uint16_t>(sign | units);
}

float f32_from_f16(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1fu;
  const std::uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in f32
    const float v = static_cast<float>(mantissa) * 0x1p-24f;
    return sign != 0 ? -v : v;
  }
  if (exponent == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  return std::bit_cast<float>(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

}  // namespace kvcache
