// Internal: byte layouts of ggml's quantized blocks (ggml-common.h) and the small exact helpers
// that read them. Shared by the dequantiser, the quantisers, both matmul kernels and the tests.
//
// Blocks are read through memcpy at byte offsets, never through struct pointers: a row of a
// WeightMatrix may start at any address (a GGUF tensor is aligned, a test buffer need not be).
// Multi-byte fields are little-endian as in the file; the runtime only builds on little-endian
// hosts (static_assert below).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace kvcache::llama::blocks {

static_assert(std::endian::native == std::endian::little, "GGUF data is little-endian");

/// Elements of a q8_0 / q4_0 block, and of the Q8 activation blocks every quantized kernel uses.
inline constexpr std::size_t kQK = 32;
/// Elements of a K-quant super-block (q4_K, q6_K).
inline constexpr std::size_t kQKK = 256;

/// block_q8_0: f16 d, then 32 int8 q. x[j] = d * q[j].
struct Q8_0 {
  static constexpr std::size_t d = 0, qs = 2, bytes = 34;
};
/// block_q4_0: f16 d, then 16 bytes; element j < 16 is the low nibble of qs[j], element j + 16 the
/// high nibble. x = d * (nibble - 8).
struct Q4_0 {
  static constexpr std::size_t d = 0, qs = 2, bytes = 18;
};
/// block_q4_K: f16 d, f16 dmin, 12 bytes of packed 6-bit scales and mins (see q4k_scale_min),
/// 128 bytes of nibbles. Elements 64j + l (l < 32) are the low nibbles of qs[32j + l] with
/// sub-block 2j's scale/min, elements 64j + 32 + l the high nibbles with sub-block 2j + 1's.
/// x = d * scale * q - dmin * min.
struct Q4_K {
  static constexpr std::size_t d = 0, dmin = 2, scales = 4, qs = 16, bytes = 144;
};
/// block_q6_K: 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits), 16 int8 scales (one per 16
/// elements), f16 d. In each half h of 128 elements (ql + 64h, qh + 32h), for l < 32:
///   element 32*0 + l: ql[l] low nibble,      qh[l] bits 0-1
///   element 32*1 + l: ql[l + 32] low nibble, qh[l] bits 2-3
///   element 32*2 + l: ql[l] high nibble,     qh[l] bits 4-5
///   element 32*3 + l: ql[l + 32] high nibble, qh[l] bits 6-7
/// q = low | high << 4 in [0, 63]; x = d * scales[e / 16] * (q - 32) for element e of the block.
struct Q6_K {
  static constexpr std::size_t ql = 0, qh = 128, scales = 192, d = 208, bytes = 210;
};

inline std::uint16_t load_u16(const std::byte* p) {
  std::uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline void store_u16(std::byte* p, std::uint16_t v) { std::memcpy(p, &v, 2); }
inline std::uint8_t u8(const std::byte* p) { return static_cast<std::uint8_t>(*p); }
inline std::int8_t i8(const std::byte* p) { return static_cast<std::int8_t>(*p); }

/// IEEE half to float, exact for every input (equals kvcache::f32_from_f16; a test checks all
/// 65536). Inline because the kernels convert one scale per block: the exponent/mantissa bits are
/// moved into float position and rescaled by 2^112, which also makes subnormals exact; only
/// infinities and NaNs (exponent 31) take the branch.
inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t{h & 0x8000u} << 16;
  const std::uint32_t rest = h & 0x7fffu;
  if (rest >= 0x7c00u) return std::bit_cast<float>(sign | 0x7f800000u | (rest & 0x3ffu) << 13);
  const float magnitude = std::bit_cast<float>(rest << 13) * 0x1p112f;
  return std::bit_cast<float>(sign | std::bit_cast<std::uint32_t>(magnitude));
}

/// bfloat16 to float (exact: the upper half of the f32 bits).
inline float bf16_to_float(std::uint16_t h) { return std::bit_cast<float>(std::uint32_t{h} << 16); }

/// The 6-bit scale and min of q4_K sub-block j (0..7) from the 12 packed bytes (ggml's
/// get_scale_min_k4): bytes 0-3 hold scales 0-3 in their low 6 bits, bytes 4-7 mins 0-3; scales
/// and mins 4-7 keep their low 4 bits in the nibbles of bytes 8-11 and their top 2 bits in the
/// top 2 bits of bytes 0-3 (scales) and 4-7 (mins).
inline void q4k_scale_min(std::size_t j, const std::byte* packed, std::uint8_t& scale, std::uint8_t& min) {
  const auto q = [&](std::size_t i) { return static_cast<unsigned>(u8(packed + i)); };
  if (j < 4) {
    scale = static_cast<std::uint8_t>(q(j) & 63u);
    min = static_cast<std::uint8_t>(q(j + 4) & 63u);
  } else {
    scale = static_cast<std::uint8_t>((q(j + 4) & 0xFu) | ((q(j - 4) >> 6) << 4));
    min = static_cast<std::uint8_t>((q(j + 4) >> 4) | ((q(j) >> 6) << 4));
  }
}

}  // namespace kvcache::llama::blocks
