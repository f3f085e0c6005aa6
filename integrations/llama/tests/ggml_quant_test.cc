// ggml block types: dequantisation of hand-built blocks against values worked out by hand from
// the block definitions, round-trip error bounds of the reference quantisers, and edge cases.
#include "llama/ggml_quant.h"

#include <doctest/doctest.h>

#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kvcache/dtype.h"
#include "kvcache/error.h"
#include "llama/ggml_blocks.h"

namespace kvcache::llama::test {
namespace {

std::vector<float> decode(GgmlType type, const std::vector<std::uint8_t>& bytes, std::size_t n) {
  std::vector<float> out(n);
  dequantize_row(type, reinterpret_cast<const std::byte*>(bytes.data()), out);
  return out;
}

void put_u16(std::vector<std::uint8_t>& b, std::size_t at, std::uint16_t v) {
  b[at] = static_cast<std::uint8_t>(v & 0xFF);
  b[at + 1] = static_cast<std::uint8_t>(v >> 8);
}

constexpr std::uint16_t kHalfOne = 0x3C00, kHalfHalf = 0x3800, kHalfMinusHalf = 0xB800,
                        kHalfMinusQuarter = 0xB400;

std::vector<float> gaussian(std::size_t n, std::uint32_t seed, float sigma = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, sigma);
  std::vector<float> x(n);
  for (float& v : x) v = dist(rng);
  return x;
}

std::vector<float> round_trip(GgmlType type, const std::vector<float>& x, std::vector<std::uint8_t>& bytes) {
  bytes.assign(*ggml_row_bytes(type, x.size()), 0);
  quantize_row(type, x, reinterpret_cast<std::byte*>(bytes.data()));
  return decode(type, bytes, x.size());
}

}  // namespace

TEST_CASE("half_to_float equals f32_from_f16 on all 65536 halves") {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float a = blocks::half_to_float(static_cast<std::uint16_t>(h));
    const float b = f32_from_f16(static_cast<std::uint16_t>(h));
    if (std::isnan(b)) {
      REQUIRE(std::isnan(a));
    } else {
      REQUIRE(std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b));
    }
  }
}

TEST_CASE("q8_0 block: x = d * q, including a negative scale and q = -128") {
  std::vector<std::uint8_t> b(2 * 34);
  put_u16(b, 0, kHalfHalf);
  put_u16(b, 34, kHalfMinusHalf);
  for (std::size_t j = 0; j < 32; ++j) {
    b[2 + j] = static_cast<std::uint8_t>(static_cast<std::int8_t>(static_cast<int>(j) - 16));
    b[36 + j] = b[2 + j];
  }
  b[2 + 31] = 0x80;  // -128
  const auto y = decode(GgmlType::q8_0, b, 64);
  CHECK(y[0] == -8.f);    // 0.5 * -16
  CHECK(y[16] == 0.f);    // 0.5 * 0
  CHECK(y[30] == 7.f);    // 0.5 * 14
  CHECK(y[31] == -64.f);  // 0.5 * -128
  CHECK(y[32] == 8.f);    // -0.5 * -16
  CHECK(y[63] == -7.5f);  // -0.5 * 15
  for (std::size_t j = 0; j < 31; ++j) CHECK(y[j] == 0.5f * (static_cast<float>(j) - 16.f));
}

TEST_CASE("q4_0 block: low nibbles are elements 0-15, high nibbles 16-31, x = d * (q - 8)") {
  std::vector<std::uint8_t> b(18);
  put_u16(b, 0, kHalfMinusQuarter);  // d = -0.25
  for (std::size_t j = 0; j < 16; ++j) b[2 + j] = static_cast<std::uint8_t>(j | (15 - j) << 4);
  const auto y = decode(GgmlType::q4_0, b, 32);
  CHECK(y[0] == 2.f);      // -0.25 * (0 - 8)
  CHECK(y[8] == 0.f);      // -0.25 * (8 - 8)
  CHECK(y[15] == -1.75f);  // -0.25 * (15 - 8)
  CHECK(y[16] == -1.75f);  // high nibble of byte 0 is 15
  CHECK(y[31] == 2.f);     // high nibble of byte 15 is 0
  for (std::size_t j = 0; j < 16; ++j) {
    CHECK(y[j] == -0.25f * (static_cast<float>(j) - 8.f));
    CHECK(y[16 + j] == -0.25f * (7.f - static_cast<float>(j)));
  }
}

TEST_CASE("q4_K block: 6-bit scales and mins with packed upper bits, x = d * sc * q - dmin * m") {
  // d = 1, dmin = 0.5; scales {1, 2, 3, 4, 63, 33, 17, 48}, mins {0, 1, 2, 63, 5, 40, 16, 31},
  // packed by hand: bytes 0-3 = sc[0..3] | (sc[4..7] >> 4) << 6, bytes 4-7 = m[0..3] |
  // (m[4..7] >> 4) << 6, bytes 8-11 = (sc[4..7] & 15) | (m[4..7] & 15) << 4.
  const std::array<int, 8> sc{1, 2, 3, 4, 63, 33, 17, 48}, mn{0, 1, 2, 63, 5, 40, 16, 31};
  const std::array<std::uint8_t, 12> packed{0xC1, 0x82, 0x43, 0xC4, 0x00, 0x81,
                                            0x42, 0x7F, 0x5F, 0x81, 0x01, 0xF0};
  std::vector<std::uint8_t> b(144);
  put_u16(b, 0, kHalfOne);
  put_u16(b, 2, kHalfHalf);
  std::memcpy(b.data() + 4, packed.data(), 12);
  for (std::size_t i = 0; i < 128; ++i) b[16 + i] = static_cast<std::uint8_t>((7 * i + 3) & 0xFF);
  const auto y = decode(GgmlType::q4_k, b, 256);
  // Worked by hand: byte 0 = 0x03, byte 32 = 0xE3, byte 64 = 0xC3, byte 96 = 0xA3.
  CHECK(y[0] == 3.f);       // 1 * 1 * 3 - 0.5 * 0
  CHECK(y[32] == -0.5f);    // 1 * 2 * 0 - 0.5 * 1
  CHECK(y[64] == 8.f);      // 1 * 3 * 3 - 0.5 * 2
  CHECK(y[96] == 24.5f);    // 1 * 4 * 14 - 0.5 * 63
  CHECK(y[128] == 186.5f);  // 1 * 63 * 3 - 0.5 * 5
  CHECK(y[160] == 376.f);   // 1 * 33 * 12 - 0.5 * 40
  CHECK(y[192] == 43.f);    // 1 * 17 * 3 - 0.5 * 16
  CHECK(y[224] == 464.5f);  // 1 * 48 * 10 - 0.5 * 31
  for (std::size_t j = 0; j < 4; ++j)
    for (std::size_t l = 0; l < 32; ++l) {
      const int byte = b[16 + 32 * j + l];
      CHECK(y[64 * j + l] ==
            static_cast<float>(sc[2 * j] * (byte & 15)) - 0.5f * static_cast<float>(mn[2 * j]));
      CHECK(y[64 * j + 32 + l] ==
            static_cast<float>(sc[2 * j + 1] * (byte >> 4)) - 0.5f * static_cast<float>(mn[2 * j + 1]));
    }
}

TEST_CASE("q6_K block: 4 low bits in ql, 2 high bits in qh, signed 8-bit scales per 16") {
  const std::array<int, 16> sc{1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 127, -128, 7, -7, 8, -8};
  std::array<int, 256> q{};
  for (std::size_t e = 0; e < 256; ++e) q[e] = static_cast<int>((e * 5 + 1) % 64);
  // The layout, half h of 128 elements at a time: ql[64h + l] holds elements l (low nibble) and
  // 64 + l (high nibble), ql[64h + 32 + l] elements 32 + l and 96 + l; qh[32h + l] holds the top
  // two bits of elements l, 32 + l, 64 + l, 96 + l in bits 0-1, 2-3, 4-5, 6-7.
  std::vector<std::uint8_t> b(210);
  for (std::size_t h = 0; h < 2; ++h)
    for (std::size_t l = 0; l < 32; ++l) {
      const int* e = q.data() + 128 * h;
      b[64 * h + l] = static_cast<std::uint8_t>((e[l] & 15) | (e[64 + l] & 15) << 4);
      b[64 * h + 32 + l] = static_cast<std::uint8_t>((e[32 + l] & 15) | (e[96 + l] & 15) << 4);
      b[128 + 32 * h + l] = static_cast<std::uint8_t>(e[l] >> 4 | (e[32 + l] >> 4) << 2 |
                                                      (e[64 + l] >> 4) << 4 | (e[96 + l] >> 4) << 6);
    }
  for (std::size_t i = 0; i < 16; ++i)
    b[192 + i] = static_cast<std::uint8_t>(static_cast<std::int8_t>(sc[i]));
  put_u16(b, 208, kHalfHalf);
  // Hand-built bytes of the first column: element 0 (q 1), 32 (q 33), 64 (q 1), 96 (q 33).
  CHECK(b[0] == 0x11);
  CHECK(b[32] == 0x11);
  CHECK(b[128] == 0x88);  // top bits 0, 2, 0, 2
  const auto y = decode(GgmlType::q6_k, b, 256);
  CHECK(y[0] == -15.5f);     // 0.5 * 1 * (1 - 32)
  CHECK(y[16] == 7.5f);      // 0.5 * -1 * (17 - 32)
  CHECK(y[160] == 63.5f);    // 0.5 * 127 * (33 - 32)
  CHECK(y[176] == -1088.f);  // 0.5 * -128 * (49 - 32)
  for (std::size_t e = 0; e < 256; ++e) CHECK(y[e] == 0.5f * static_cast<float>(sc[e / 16] * (q[e] - 32)));
}

TEST_CASE("f16 and bf16 rows keep infinities and NaNs; f32 is copied") {
  std::vector<std::uint8_t> h(8), bf(8);
  put_u16(h, 0, 0x7C00);
  put_u16(h, 2, 0xFC00);
  put_u16(h, 4, 0x7E00);
  put_u16(h, 6, 0x0001);  // smallest subnormal, 2^-24
  put_u16(bf, 0, 0x7F80);
  put_u16(bf, 2, 0xFF80);
  put_u16(bf, 4, 0x7FC0);
  put_u16(bf, 6, 0x3FC0);  // 1.5
  const auto yh = decode(GgmlType::f16, h, 4);
  const auto yb = decode(GgmlType::bf16, bf, 4);
  CHECK(yh[0] == std::numeric_limits<float>::infinity());
  CHECK(yh[1] == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(yh[2]));
  CHECK(yh[3] == std::ldexp(1.f, -24));
  CHECK(yb[0] == std::numeric_limits<float>::infinity());
  CHECK(yb[1] == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(yb[2]));
  CHECK(yb[3] == 1.5f);

  const std::vector<float> x{1e6f, std::nanf(""), -0.f, 1.f + std::ldexp(1.f, -8) + std::ldexp(1.f, -10)};
  std::vector<std::uint8_t> bytes;
  const auto rh = round_trip(GgmlType::f16, x, bytes);
  CHECK(rh[0] == std::numeric_limits<float>::infinity());
  CHECK(std::isnan(rh[1]));
  CHECK(std::signbit(rh[2]));
  CHECK(rh[3] == x[3]);  // exact in f16 (11 significant bits)
  const auto rb = round_trip(GgmlType::bf16, x, bytes);
  CHECK(rb[0] == 999424.f);  // 1e6 to 8 significant bits, nearest
  CHECK(std::isnan(rb[1]));
  CHECK(std::signbit(rb[2]));
  CHECK(rb[3] == 1.f + std::ldexp(1.f, -7));  // above the midpoint 1 + 2^-8, so rounded up
  const auto rf = round_trip(GgmlType::f32, x, bytes);
  CHECK(rf[0] == 1e6f);
  CHECK(std::isnan(rf[1]));
}

TEST_CASE("all-zero inputs quantise to all-zero outputs of every type") {
  const std::vector<float> zero(512, 0.f);
  for (GgmlType type : {GgmlType::f32, GgmlType::f16, GgmlType::bf16, GgmlType::q8_0, GgmlType::q4_0,
                        GgmlType::q4_k, GgmlType::q6_k}) {
    CAPTURE(ggml_type_name(type));
    std::vector<std::uint8_t> bytes;
    for (float v : round_trip(type, zero, bytes)) CHECK(v == 0.f);
  }
}

TEST_CASE("rows that are not whole blocks are rejected") {
  std::vector<float> out(33);
  std::vector<std::byte> bytes(1024);
  CHECK_THROWS_AS(dequantize_row(GgmlType::q8_0, bytes.data(), out), InvalidArgument);
  CHECK_THROWS_AS(quantize_row(GgmlType::q4_k, std::span<const float>(out).first(32), bytes.data()),
                  InvalidArgument);
}

TEST_CASE("q8_0 round trip is within half a step (d / 2) of every input") {
  const auto x = gaussian(4096, 11);
  std::vector<std::uint8_t> bytes;
  const auto y = round_trip(GgmlType::q8_0, x, bytes);
  for (std::size_t i = 0; i < x.size(); ++i) {
    const float d = blocks::half_to_float(
        static_cast<std::uint16_t>(bytes[34 * (i / 32)] | bytes[34 * (i / 32) + 1] << 8));
    REQUIRE(std::fabs(y[i] - x[i]) <= d / 2 * (1 + 1e-6f));
  }
}

TEST_CASE("q4_0 round trip: half a step inside [-8d, 7d], one step at the clamped end") {
  const auto x = gaussian(4096, 12);
  std::vector<std::uint8_t> bytes;
  const auto y = round_trip(GgmlType::q4_0, x, bytes);
  double sq = 0, sx = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const float d = blocks::half_to_float(
        static_cast<std::uint16_t>(bytes[18 * (i / 32)] | bytes[18 * (i / 32) + 1] << 8));
    const float err = std::fabs(y[i] - x[i]);
    const float level = x[i] / d;
    if (level >= -8.5f && level <= 7.5f) {
      REQUIRE(err <= std::fabs(d) / 2 * (1 + 1e-5f));
    } else {
      REQUIRE(err <= std::fabs(d) * (1 + 1e-5f));
    }
    sq += double(err) * err;
    sx += double(x[i]) * x[i];
  }
  // Relative RMS error: the 4-bit grid of ggml's rule gives about 0.1 on Gaussian data.
  CHECK(std::sqrt(sq / sx) < 0.12);
}

// For the K-quants: every element inside its sub-block's representable range is within half of
// that sub-block's step of the input, and the searched scales beat the plain min/max rule.
TEST_CASE("q4_K round trip: half a sub-block step, and better than min/max scaling") {
  const auto x = gaussian(4096, 13);
  std::vector<std::uint8_t> bytes;
  const auto y = round_trip(GgmlType::q4_k, x, bytes);
  double sq = 0, sq_minmax = 0;
  for (std::size_t sb = 0; sb < x.size() / 256; ++sb) {
    const std::byte* blk = reinterpret_cast<const std::byte*>(bytes.data()) + 144 * sb;
    const float d = blocks::half_to_float(blocks::load_u16(blk));
    const float dmin = blocks::half_to_float(blocks::load_u16(blk + 2));
    for (std::size_t j = 0; j < 8; ++j) {
      std::uint8_t sc, m;
      blocks::q4k_scale_min(j, blk + 4, sc, m);
      const float step = d * sc, lo = -dmin * m;
      float xmin = 0.f, xmax = -INFINITY;
      for (std::size_t l = 0; l < 32; ++l) {
        const std::size_t i = 256 * sb + 32 * j + l;
        xmin = std::min(xmin, x[i]);
        xmax = std::max(xmax, x[i]);
        const float err = std::fabs(y[i] - x[i]);
        if (x[i] >= lo - step / 2 && x[i] <= lo + 15.5f * step)
          REQUIRE(err <= step / 2 * (1 + 1e-5f) + 1e-6f);
        sq += double(err) * err;
      }
      // Rounding to a uniform grid of (max - min) / 15 has an expected squared error of step^2 / 12.
      const double plain = (xmax - xmin) / 15.0;
      sq_minmax += 32 * plain * plain / 12;
    }
  }
  CHECK(sq < sq_minmax);
}

TEST_CASE("q6_K round trip: half a sub-block step, and better than max-magnitude scaling") {
  const auto x = gaussian(4096, 14);
  std::vector<std::uint8_t> bytes;
  const auto y = round_trip(GgmlType::q6_k, x, bytes);
  double sq = 0, sq_plain = 0;
  for (std::size_t sb = 0; sb < x.size() / 256; ++sb) {
    const std::byte* blk = reinterpret_cast<const std::byte*>(bytes.data()) + 210 * sb;
    const float d = blocks::half_to_float(blocks::load_u16(blk + 208));
    for (std::size_t s = 0; s < 16; ++s) {
      const float step = std::fabs(d * static_cast<float>(blocks::i8(blk + 192 + s)));
      float amax = 0.f;
      for (std::size_t l = 0; l < 16; ++l) {
        const std::size_t i = 256 * sb + 16 * s + l;
        amax = std::max(amax, std::fabs(x[i]));
        const float err = std::fabs(y[i] - x[i]);
        if (std::fabs(x[i]) <= 31.5f * step) REQUIRE(err <= step / 2 * (1 + 1e-5f) + 1e-6f);
        sq += double(err) * err;
      }
      const double plain = amax / 32.0;  // the largest magnitude on level -32
      sq_plain += 16 * plain * plain / 12;
    }
  }
  CHECK(sq < sq_plain);
}

}  // namespace kvcache::llama::test
