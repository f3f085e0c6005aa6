// The scalar twin of the Highway weight kernels: per block, the same integer dot products and the
// same f32 scale products as weight_matmul_hwy.cc, summed in plain element order.
#include <cstring>

#include "llama/ggml_blocks.h"
#include "llama/weight_matmul_kernels.h"

namespace kvcache::llama::kernels {
namespace {

using namespace blocks;

float weight_f32(GgmlType type, const std::byte* row, std::size_t c) {
  switch (type) {
    case GgmlType::f16:
      return half_to_float(load_u16(row + 2 * c));
    case GgmlType::bf16:
      return bf16_to_float(load_u16(row + 2 * c));
    default: {
      float v;
      std::memcpy(&v, row + 4 * c, 4);
      return v;
    }
  }
}

float dot_float(GgmlType type, const std::byte* row, const float* x, std::size_t cols) {
  float s = 0.f;
  for (std::size_t c = 0; c < cols; ++c) s += weight_f32(type, row, c) * x[c];
  return s;
}

float dot_q8_0(const std::byte* row, const std::int8_t* xq, const float* xd, std::size_t nb) {
  float s = 0.f;
  for (std::size_t b = 0; b < nb; ++b) {
    const std::byte* blk = row + b * Q8_0::bytes;
    std::int32_t isum = 0;
    for (std::size_t j = 0; j < kQK; ++j) isum += i8(blk + Q8_0::qs + j) * xq[kQK * b + j];
    s += static_cast<float>(isum) * (half_to_float(load_u16(blk + Q8_0::d)) * xd[b]);
  }
  return s;
}

float dot_q4_0(const std::byte* row, const std::int8_t* xq, const float* xd, std::size_t nb) {
  float s = 0.f;
  for (std::size_t b = 0; b < nb; ++b) {
    const std::byte* blk = row + b * Q4_0::bytes;
    const std::int8_t* x = xq + kQK * b;
    std::int32_t isum = 0;
    for (std::size_t j = 0; j < kQK / 2; ++j) {
      const int q = u8(blk + Q4_0::qs + j);
      isum += ((q & 0xF) - 8) * x[j] + ((q >> 4) - 8) * x[j + kQK / 2];
    }
    s += static_cast<float>(isum) * (half_to_float(load_u16(blk + Q4_0::d)) * xd[b]);
  }
  return s;
}

float dot_q4_k(const std::byte* row, const std::int8_t* xq, const float* xd, const std::int32_t* xs,
               std::size_t n_super) {
  float s = 0.f;
  for (std::size_t sb = 0; sb < n_super; ++sb) {
    const std::byte* blk = row + sb * Q4_K::bytes;
    const float d = half_to_float(load_u16(blk + Q4_K::d));
    const float dmin = half_to_float(load_u16(blk + Q4_K::dmin));
    for (std::size_t j = 0; j < 8; ++j) {
      std::uint8_t sc, m;
      q4k_scale_min(j, blk + Q4_K::scales, sc, m);
      const std::size_t b = 8 * sb + j;  // activation block = sub-block
      const std::byte* q = blk + Q4_K::qs + 32 * (j / 2);
      const int shift = j % 2 == 0 ? 0 : 4;
      std::int32_t isum = 0;
      for (std::size_t l = 0; l < 32; ++l) isum += ((u8(q + l) >> shift) & 0xF) * xq[kQK * b + l];
      s += static_cast<float>(isum) * (d * static_cast<float>(sc) * xd[b]);
      s -= static_cast<float>(xs[b]) * (dmin * static_cast<float>(m) * xd[b]);
    }
  }
  return s;
}

float dot_q6_k(const std::byte* row, const std::int8_t* xq, const float* xd, std::size_t n_super) {
  float s = 0.f;
  for (std::size_t sb = 0; sb < n_super; ++sb) {
    const std::byte* blk = row + sb * Q6_K::bytes;
    const float d = half_to_float(load_u16(blk + Q6_K::d));
    for (std::size_t h = 0; h < 2; ++h) {
      const std::byte* ql = blk + Q6_K::ql + 64 * h;
      const std::byte* qh = blk + Q6_K::qh + 32 * h;
      for (std::size_t k = 0; k < 4; ++k) {  // activation block 8 sb + 4 h + k: elements 32k + l
        const std::size_t b = 8 * sb + 4 * h + k;
        std::int32_t isum = 0;
        for (std::size_t l = 0; l < 32; ++l) {
          const int lo = u8(ql + l + (k % 2) * 32) >> (k / 2 * 4) & 0xF;
          const int hi = u8(qh + l) >> (2 * k) & 3;
          const int sc = i8(blk + Q6_K::scales + 8 * h + 2 * k + l / 16);
          isum += sc * ((lo | hi << 4) - 32) * xq[kQK * b + l];
        }
        s += static_cast<float>(isum) * (d * xd[b]);
      }
    }
  }
  return s;
}

}  // namespace

void matmul_rows_scalar(const MatmulArgs& a, std::uint32_t r0, std::uint32_t r1) {
  const std::size_t cols = a.w.cols, nb = cols / kQK;
  for (std::uint32_t t = 0; t < a.n; ++t) {
    // Only the operands of this type are set (the others are null and must not be offset).
    const float* x = a.x != nullptr ? a.x + t * cols : nullptr;
    const std::int8_t* xq = a.xq != nullptr ? a.xq + t * cols : nullptr;
    const float* xd = a.xd != nullptr ? a.xd + t * nb : nullptr;
    const std::int32_t* xs = a.xs != nullptr ? a.xs + t * nb : nullptr;
    float* y = a.y + std::size_t{t} * a.w.rows;
    for (std::uint32_t r = r0; r < r1; ++r) {
      const std::byte* row = a.w.row(r);
      switch (a.w.type) {
        case GgmlType::f32:
        case GgmlType::f16:
        case GgmlType::bf16:
          y[r] = dot_float(a.w.type, row, x, cols);
          break;
        case GgmlType::q8_0:
          y[r] = dot_q8_0(row, xq, xd, nb);
          break;
        case GgmlType::q4_0:
          y[r] = dot_q4_0(row, xq, xd, nb);
          break;
        case GgmlType::q4_k:
          y[r] = dot_q4_k(row, xq, xd, xs, cols / kQKK);
          break;
        case GgmlType::q6_k:
          y[r] = dot_q6_k(row, xq, xd, cols / kQKK);
          break;
      }
    }
  }
}

}  // namespace kvcache::llama::kernels
