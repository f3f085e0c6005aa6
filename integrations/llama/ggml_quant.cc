#include "llama/ggml_quant.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "kvcache/dtype.h"
#include "kvcache/error.h"
#include "llama/ggml_blocks.h"

namespace kvcache::llama {
namespace {

using namespace blocks;

std::size_t checked_blocks(GgmlType type, std::size_t n) {
  const std::size_t be = ggml_block_elems(type);
  if (n % be != 0)
    throw InvalidArgument("row of " + std::to_string(n) + " elements is not a whole number of " +
                          std::string(ggml_type_name(type)) + " blocks of " + std::to_string(be));
  return n / be;
}

// ---------------------------------------------------------------- dequantisation

void dequant_q8_0(const std::byte* b, float* y) {
  const float d = half_to_float(load_u16(b + Q8_0::d));
  for (std::size_t j = 0; j < kQK; ++j) y[j] = d * static_cast<float>(i8(b + Q8_0::qs + j));
}

void dequant_q4_0(const std::byte* b, float* y) {
  const float d = half_to_float(load_u16(b + Q4_0::d));
  for (std::size_t j = 0; j < kQK / 2; ++j) {
    const int q = u8(b + Q4_0::qs + j);
    y[j] = d * static_cast<float>((q & 0xF) - 8);
    y[j + kQK / 2] = d * static_cast<float>((q >> 4) - 8);
  }
}

void dequant_q4_k(const std::byte* b, float* y) {
  const float d = half_to_float(load_u16(b + Q4_K::d));
  const float dmin = half_to_float(load_u16(b + Q4_K::dmin));
  for (std::size_t j = 0; j < 4; ++j) {
    std::uint8_t sc, m;
    q4k_scale_min(2 * j, b + Q4_K::scales, sc, m);
    const float d1 = d * sc, m1 = dmin * m;
    q4k_scale_min(2 * j + 1, b + Q4_K::scales, sc, m);
    const float d2 = d * sc, m2 = dmin * m;
    const std::byte* q = b + Q4_K::qs + 32 * j;
    for (std::size_t l = 0; l < 32; ++l) y[64 * j + l] = d1 * static_cast<float>(u8(q + l) & 0xF) - m1;
    for (std::size_t l = 0; l < 32; ++l) y[64 * j + 32 + l] = d2 * static_cast<float>(u8(q + l) >> 4) - m2;
  }
}

void dequant_q6_k(const std::byte* b, float* y) {
  const float d = half_to_float(load_u16(b + Q6_K::d));
  for (std::size_t h = 0; h < 2; ++h) {
    const std::byte* ql = b + Q6_K::ql + 64 * h;
    const std::byte* qh = b + Q6_K::qh + 32 * h;
    const std::byte* sc = b + Q6_K::scales + 8 * h;
    float* yh = y + 128 * h;
    for (std::size_t l = 0; l < 32; ++l) {
      const std::size_t is = l / 16;
      const int lo0 = u8(ql + l), lo1 = u8(ql + l + 32), hi = u8(qh + l);
      const int q1 = ((lo0 & 0xF) | ((hi >> 0) & 3) << 4) - 32;
      const int q2 = ((lo1 & 0xF) | ((hi >> 2) & 3) << 4) - 32;
      const int q3 = ((lo0 >> 4) | ((hi >> 4) & 3) << 4) - 32;
      const int q4 = ((lo1 >> 4) | ((hi >> 6) & 3) << 4) - 32;
      yh[l] = d * static_cast<float>(i8(sc + is)) * static_cast<float>(q1);
      yh[l + 32] = d * static_cast<float>(i8(sc + is + 2)) * static_cast<float>(q2);
      yh[l + 64] = d * static_cast<float>(i8(sc + is + 4)) * static_cast<float>(q3);
      yh[l + 96] = d * static_cast<float>(i8(sc + is + 6)) * static_cast<float>(q4);
    }
  }
}

// ---------------------------------------------------------------- quantisation

// The f32 value a scale takes once stored as f16: quantising against it (not the unrounded
// scale) keeps the rounding error within half a step of what is decoded.
float via_f16(float x, std::uint16_t& h) {
  h = f16_from_f32(x);
  return f32_from_f16(h);
}

int round_clamp(float v, int lo, int hi) { return std::clamp(static_cast<int>(std::lround(v)), lo, hi); }

void quant_q8_0(const float* x, std::byte* b) {
  float amax = 0.f;
  for (std::size_t j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
  std::uint16_t h;
  const float d = via_f16(amax / 127.f, h);
  const float id = d != 0.f ? 1.f / d : 0.f;
  store_u16(b + Q8_0::d, h);
  for (std::size_t j = 0; j < kQK; ++j)
    b[Q8_0::qs + j] = static_cast<std::byte>(static_cast<std::int8_t>(round_clamp(x[j] * id, -127, 127)));
}

// ggml's rule: the element of largest magnitude maps to -8 exactly, so the scale's sign follows
// it and the 16 levels [-8, 7] are used asymmetrically in its favour.
void quant_q4_0(const float* x, std::byte* b) {
  float amax = 0.f, max = 0.f;
  for (std::size_t j = 0; j < kQK; ++j)
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  std::uint16_t h;
  const float d = via_f16(max / -8.f, h);
  const float id = d != 0.f ? 1.f / d : 0.f;
  store_u16(b + Q4_0::d, h);
  for (std::size_t j = 0; j < kQK / 2; ++j) {
    const int q0 = round_clamp(x[j] * id, -8, 7) + 8;
    const int q1 = round_clamp(x[j + kQK / 2] * id, -8, 7) + 8;
    b[Q4_0::qs + j] = static_cast<std::byte>(q0 | q1 << 4);
  }
}

// Best x ~ scale * q - min for one q4_K sub-block with q in [0, 15], min >= 0 (ggml's
// make_qkx2_quants idea): for each of 21 candidate step sizes around (max - lo) / 15, round, then
// refit scale and min by least squares for those q; keep the pair with the least squared error.
void fit_scale_min(const float* x, std::size_t n, float& scale, float& min) {
  float lo = 0.f, hi = x[0];
  for (std::size_t i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  scale = 0.f;
  min = -lo;
  if (hi <= lo) return;
  double best = INFINITY;
  for (int step = 0; step <= 20; ++step) {
    const float iscale = (15.f - 1.f + 0.1f * static_cast<float>(step)) / (hi - lo);
    double sq = 0, sx = 0, sqq = 0, sqx = 0;
    std::array<int, 32> q{};
    for (std::size_t i = 0; i < n; ++i) {
      q[i] = round_clamp(iscale * (x[i] - lo), 0, 15);
      sq += q[i];
      sx += x[i];
      sqq += double(q[i]) * q[i];
      sqx += double(q[i]) * x[i];
    }
    const double det = double(n) * sqq - sq * sq;
    if (det <= 0) continue;
    double s = (double(n) * sqx - sq * sx) / det;
    double b = (sqq * sx - sq * sqx) / det;  // x ~ s * q + b
    if (b > 0) {                             // the stored min is subtracted: b <= 0
      b = 0;
      s = sqx / sqq;
    }
    double err = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double e = s * q[i] + b - x[i];
      err += e * e;
    }
    if (err < best && s > 0) {
      best = err;
      scale = static_cast<float>(s);
      min = static_cast<float>(-b);
    }
  }
}

void pack_q4k_scales(const std::array<std::uint8_t, 8>& sc, const std::array<std::uint8_t, 8>& mn,
                     std::byte* p) {
  std::array<std::uint8_t, 12> out{};
  for (std::size_t j = 0; j < 4; ++j) {
    out[j] = static_cast<std::uint8_t>((sc[j] & 63) | (sc[j + 4] >> 4) << 6);
    out[j + 4] = static_cast<std::uint8_t>((mn[j] & 63) | (mn[j + 4] >> 4) << 6);
    out[j + 8] = static_cast<std::uint8_t>((sc[j + 4] & 0xF) | (mn[j + 4] & 0xF) << 4);
  }
  std::memcpy(p, out.data(), 12);
}

void quant_q4_k(const float* x, std::byte* b) {
  std::array<float, 8> scales{}, mins{};
  for (std::size_t j = 0; j < 8; ++j) fit_scale_min(x + 32 * j, 32, scales[j], mins[j]);
  const float max_scale = *std::max_element(scales.begin(), scales.end());
  const float max_min = *std::max_element(mins.begin(), mins.end());
  std::uint16_t hd, hm;
  const float d = via_f16(max_scale / 63.f, hd);
  const float dmin = via_f16(max_min / 63.f, hm);
  store_u16(b + Q4_K::d, hd);
  store_u16(b + Q4_K::dmin, hm);
  std::array<std::uint8_t, 8> sc{}, mn{};
  for (std::size_t j = 0; j < 8; ++j) {
    sc[j] = static_cast<std::uint8_t>(d > 0.f ? round_clamp(scales[j] / d, 0, 63) : 0);
    mn[j] = static_cast<std::uint8_t>(dmin > 0.f ? round_clamp(mins[j] / dmin, 0, 63) : 0);
  }
  pack_q4k_scales(sc, mn, b + Q4_K::scales);
  // Round again against the scale and min as stored, so the error is half a stored step.
  std::array<int, 256> q{};
  for (std::size_t j = 0; j < 8; ++j) {
    const float step = d * sc[j], m = dmin * mn[j];
    for (std::size_t l = 0; l < 32; ++l)
      q[32 * j + l] = step > 0.f ? round_clamp((x[32 * j + l] + m) / step, 0, 15) : 0;
  }
  for (std::size_t j = 0; j < 4; ++j)
    for (std::size_t l = 0; l < 32; ++l)
      b[Q4_K::qs + 32 * j + l] = static_cast<std::byte>(q[64 * j + l] | q[64 * j + 32 + l] << 4);
}

// Best signed scale s for x ~ s * q, q in [-32, 31], for one 16-element q6_K sub-block (ggml's
// make_qx_quants idea): candidates map the largest-magnitude element to about -32, each refit by
// least squares for its q; the least squared error wins.
float fit_scale_q6(const float* x) {
  float amax = 0.f, max = 0.f;
  for (std::size_t i = 0; i < 16; ++i)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  if (amax == 0.f) return 0.f;
  float best_s = max / -32.f;
  double best = INFINITY;
  for (int step = -9; step <= 9; ++step) {
    const float iscale = -(32.f + 0.1f * static_cast<float>(step)) / max;
    double sqx = 0, sqq = 0;
    std::array<int, 16> q{};
    for (std::size_t i = 0; i < 16; ++i) {
      q[i] = round_clamp(iscale * x[i], -32, 31);
      sqx += double(q[i]) * x[i];
      sqq += double(q[i]) * q[i];
    }
    if (sqq == 0) continue;
    const double s = sqx / sqq;
    double err = 0;
    for (std::size_t i = 0; i < 16; ++i) err += (s * q[i] - x[i]) * (s * q[i] - x[i]);
    if (err < best) {
      best = err;
      best_s = static_cast<float>(s);
    }
  }
  return best_s;
}

void quant_q6_k(const float* x, std::byte* b) {
  std::array<float, 16> scales{};
  float amax = 0.f, max = 0.f;
  for (std::size_t i = 0; i < 16; ++i) {
    scales[i] = fit_scale_q6(x + 16 * i);
    if (std::fabs(scales[i]) > amax) {
      amax = std::fabs(scales[i]);
      max = scales[i];
    }
  }
  // The largest sub-scale maps to -128 (int8's full range), as ggml does.
  std::uint16_t hd;
  const float d = via_f16(max / -128.f, hd);
  store_u16(b + Q6_K::d, hd);
  std::array<int, 256> q{};
  for (std::size_t i = 0; i < 16; ++i) {
    const int sc = d != 0.f ? round_clamp(scales[i] / d, -128, 127) : 0;
    b[Q6_K::scales + i] = static_cast<std::byte>(static_cast<std::int8_t>(sc));
    const float step = d * static_cast<float>(sc);
    for (std::size_t l = 0; l < 16; ++l)
      q[16 * i + l] = (step != 0.f ? round_clamp(x[16 * i + l] / step, -32, 31) : 0) + 32;
  }
  for (std::size_t h = 0; h < 2; ++h) {
    const int* qh = q.data() + 128 * h;
    for (std::size_t l = 0; l < 32; ++l) {
      const int q1 = qh[l], q2 = qh[l + 32], q3 = qh[l + 64], q4 = qh[l + 96];
      b[Q6_K::ql + 64 * h + l] = static_cast<std::byte>((q1 & 0xF) | (q3 & 0xF) << 4);
      b[Q6_K::ql + 64 * h + l + 32] = static_cast<std::byte>((q2 & 0xF) | (q4 & 0xF) << 4);
      b[Q6_K::qh + 32 * h + l] =
          static_cast<std::byte>((q1 >> 4) | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6);
    }
  }
}

std::uint16_t bf16_from_f32(float x) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 64);  // quiet NaN
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

}  // namespace

void dequantize_row(GgmlType type, const std::byte* src, std::span<float> out) {
  const std::size_t nb = checked_blocks(type, out.size());
  const std::size_t bb = ggml_block_bytes(type), be = ggml_block_elems(type);
  float* y = out.data();
  for (std::size_t i = 0; i < nb; ++i) {
    const std::byte* b = src + i * bb;
    float* yb = y + i * be;
    switch (type) {
      case GgmlType::f32:
        std::memcpy(yb, b, 4);
        break;
      case GgmlType::f16:
        *yb = half_to_float(load_u16(b));
        break;
      case GgmlType::bf16:
        *yb = bf16_to_float(load_u16(b));
        break;
      case GgmlType::q8_0:
        dequant_q8_0(b, yb);
        break;
      case GgmlType::q4_0:
        dequant_q4_0(b, yb);
        break;
      case GgmlType::q4_k:
        dequant_q4_k(b, yb);
        break;
      case GgmlType::q6_k:
        dequant_q6_k(b, yb);
        break;
    }
  }
}

void quantize_row(GgmlType type, std::span<const float> in, std::byte* dst) {
  const std::size_t nb = checked_blocks(type, in.size());
  const std::size_t bb = ggml_block_bytes(type), be = ggml_block_elems(type);
  for (std::size_t i = 0; i < nb; ++i) {
    const float* x = in.data() + i * be;
    std::byte* b = dst + i * bb;
    switch (type) {
      case GgmlType::f32:
        std::memcpy(b, x, 4);
        break;
      case GgmlType::f16:
        store_u16(b, f16_from_f32(*x));
        break;
      case GgmlType::bf16:
        store_u16(b, bf16_from_f32(*x));
        break;
      case GgmlType::q8_0:
        quant_q8_0(x, b);
        break;
      case GgmlType::q4_0:
        quant_q4_0(x, b);
        break;
      case GgmlType::q4_k:
        quant_q4_k(x, b);
        break;
      case GgmlType::q6_k:
        quant_q6_k(x, b);
        break;
    }
  }
}

}  // namespace kvcache::llama
