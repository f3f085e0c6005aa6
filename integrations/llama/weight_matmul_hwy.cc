// Highway weight kernels (the contract is matmul_rows_* in weight_matmul_kernels.h; the scalar
// twin is weight_matmul_scalar.cc).
//
// A matmul-vector product streams the weights once and uses each byte for one multiply-add, so it
// is bound by memory bandwidth if the per-block work stays small. Hence:
//  - R weight rows are processed together against the same activation row: every activation load
//    and widening is shared by R rows, and R independent accumulator chains hide latencies;
//  - a batch (n > 1) runs all n activation rows against those R rows before moving on, so the
//    R rows (a few KiB to a few tens of KiB) are re-read from L1/L2, not from memory;
//  - while a group is processed, the next group's bytes are prefetched (PrefetchBlock below);
//  - quantized weights meet int8 activations (Q8, per block of 32): values are widened to int16
//    and multiplied pairwise into int32 lanes (pmaddwd on x86), exact; each block's int32 lanes are
//    converted to f32 once and scaled by (weight scale x activation scale) with one FMA, and lanes
//    are reduced only at the end of the row.
// Weights may sit at any address, so every load is LoadU. Float-type tails shorter than a vector
// are summed element by element (MaskedLoad is a full load on SSE4 in Highway 1.0.3).
//
// CPUs with AVX512-VNNI run q8_0 and q4_0 through weight_matmul_vnni-inl.h. Highway compiles its
// AVX3_DL target only on request; the request must precede every Highway header of this file (and
// of the test that runs each target).
#define HWY_WANT_AVX3_DL 1

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

// Highway needs foreach_target.h before highway.h: keep this order.
// clang-format off
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "llama/weight_matmul_hwy.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/cache_control.h>
#include <hwy/highway.h>
#include "llama/ggml_blocks.h"
#include "llama/weight_matmul_kernels.h"
#include "llama/weight_matmul_vnni-inl.h"
// clang-format on

HWY_BEFORE_NAMESPACE();
namespace kvcache::llama::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using namespace blocks;

template <std::size_t R>
using Rows = std::array<const std::byte*, R>;

// Activation row t of a product.
struct Act {
  const float* x;
  const std::int8_t* xq;
  const float* xd;
  const std::int32_t* xs;
};

// A block's f16 scale as f32: F16C's vcvtph2ps where the target has it (AVX2 and up; a quarter of
// the per-block work otherwise), else the exact bit conversion. Both are exact for every input.
HWY_INLINE float BlockScale(const std::byte* p) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
  return _cvtsh_ss(load_u16(p));
#else
  return half_to_float(load_u16(p));
#endif
}

// Prefetch of the next row group. The hardware prefetchers follow R interleaved row streams
// poorly when a block takes several cycles of arithmetic per cache line (the q8_0 kernels read
// ~10 GB/s per core from DRAM but ~35 GB/s from L2), so while a group of R rows is processed,
// every kernel requests the same offset of the next group (`ahead` = R rows of bytes further):
// about +50% from DRAM on q8_0 and q4_0 (see weight_matmul.h). x86 prefetches never fault, so
// asking for bytes past the matrix end is harmless.
template <std::size_t kBytes>
HWY_INLINE void PrefetchBlock(const std::byte* p) {
  for (std::size_t off = 0; off < kBytes; off += 64) hwy::Prefetch(p + off);
}

// ---------------------------------------------------------------- f32, f16, bf16

template <GgmlType kType>
using WeightT = std::conditional_t<kType == GgmlType::f32, float, std::uint16_t>;

template <GgmlType kType, class D>
HWY_INLINE hn::Vec<D> LoadWeights(D d, const std::byte* HWY_RESTRICT row, std::size_t c) {
  if constexpr (kType == GgmlType::f32) {
    return hn::LoadU(d, reinterpret_cast<const float*>(row) + c);
  } else if constexpr (kType == GgmlType::f16) {
    const hn::Rebind<hwy::float16_t, D> dh;
    return hn::PromoteTo(d, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(row) + c));
  } else {  // bf16: the upper half of an f32
    const hn::RebindToUnsigned<D> du32;
    const hn::Rebind<std::uint16_t, D> du16;
    const auto h = hn::PromoteTo(du32, hn::LoadU(du16, reinterpret_cast<const std::uint16_t*>(row) + c));
    return hn::BitCast(d, hn::ShiftLeft<16>(h));
  }
}

template <GgmlType kType>
HWY_INLINE float ScalarWeight(const std::byte* row, std::size_t c) {
  if constexpr (kType == GgmlType::f32) {
    float v;
    std::memcpy(&v, row + 4 * c, 4);
    return v;
  } else if constexpr (kType == GgmlType::f16) {
    return half_to_float(load_u16(row + 2 * c));
  } else {
    return bf16_to_float(load_u16(row + 2 * c));
  }
}

template <GgmlType kType, std::size_t R>
HWY_INLINE void DotFloat(const Rows<R>& w, const Act& a, std::size_t cols, std::size_t ahead, float* out) {
  const hn::ScalableTag<float> d;
  const std::size_t N = hn::Lanes(d);
  std::array<hn::Vec<decltype(d)>, R> acc;
  for (auto& v : acc) v = hn::Zero(d);
  std::size_t c = 0;
  for (; c + N <= cols; c += N) {
    const auto xv = hn::LoadU(d, a.x + c);
    for (std::size_t i = 0; i < R; ++i) hwy::Prefetch(w[i] + ahead + c * sizeof(WeightT<kType>));
    for (std::size_t i = 0; i < R; ++i) acc[i] = hn::MulAdd(LoadWeights<kType>(d, w[i], c), xv, acc[i]);
  }
  for (std::size_t i = 0; i < R; ++i) out[i] = hn::GetLane(hn::SumOfLanes(d, acc[i]));
  // The tail element by element, read with memcpy: a one-lane f32 LoadU is a typed scalar load,
  // which a row at an odd address must not get.
  for (; c < cols; ++c)
    for (std::size_t i = 0; i < R; ++i) out[i] += ScalarWeight<kType>(w[i], c) * a.x[c];
}

// ---------------------------------------------------------------- quantized

// Tags for int8 values widened to int16 in chunks of L16 = Lanes(D16) <= kMax elements, their
// int32 pairwise sums, and those sums as f32.
template <std::size_t kMax>
struct QTags {
  hn::CappedTag<std::int16_t, kMax> d16;
  hn::Rebind<std::int8_t, decltype(d16)> d8;
  hn::RebindToUnsigned<decltype(d16)> du16;
  hn::Rebind<std::uint8_t, decltype(d16)> du8;
  hn::RepartitionToWide<decltype(d16)> d32;
  hn::Rebind<float, decltype(d32)> df;
};

template <class T, class V16>
HWY_INLINE hn::Vec<decltype(T{}.d32)> MulPairs(const T& t, V16 a, V16 b, hn::Vec<decltype(T{}.d32)> sum) {
  // On x86 the second accumulator of ReorderWidenMulAccumulate stays zero (pmaddwd sums pairs);
  // the emulated targets fill it, so it is folded back in at once.
  auto odd = hn::Zero(t.d32);
  sum = hn::ReorderWidenMulAccumulate(t.d32, a, b, sum, odd);
  return hn::Add(sum, odd);
}

template <class T>
HWY_INLINE hn::Vec<decltype(T{}.d16)> LoadI8(const T& t, const void* p) {
  return hn::PromoteTo(t.d16, hn::LoadU(t.d8, static_cast<const std::int8_t*>(p)));
}
template <class T>
HWY_INLINE hn::Vec<decltype(T{}.du16)> LoadU8(const T& t, const std::byte* p) {
  return hn::PromoteTo(t.du16, hn::LoadU(t.du8, reinterpret_cast<const std::uint8_t*>(p)));
}

template <std::size_t R>
HWY_INLINE void DotQ8_0(const Rows<R>& w, const Act& a, std::size_t nb, std::size_t ahead, float* out) {
  const QTags<32> t;
  const std::size_t L = hn::Lanes(t.d16);
  std::array<hn::Vec<decltype(t.df)>, R> acc;
  for (auto& v : acc) v = hn::Zero(t.df);
  for (std::size_t b = 0; b < nb; ++b) {
    std::array<hn::Vec<decltype(t.d32)>, R> isum;
    for (auto& v : isum) v = hn::Zero(t.d32);
    for (std::size_t i = 0; i < R; ++i) hwy::Prefetch(w[i] + ahead + b * Q8_0::bytes);
    for (std::size_t k = 0; k < kQK; k += L) {
      const auto xv = LoadI8(t, a.xq + kQK * b + k);
      for (std::size_t i = 0; i < R; ++i)
        isum[i] = MulPairs(t, LoadI8(t, w[i] + b * Q8_0::bytes + Q8_0::qs + k), xv, isum[i]);
    }
    for (std::size_t i = 0; i < R; ++i) {
      const float scale = BlockScale(w[i] + b * Q8_0::bytes + Q8_0::d) * a.xd[b];
      acc[i] = hn::MulAdd(hn::ConvertTo(t.df, isum[i]), hn::Set(t.df, scale), acc[i]);
    }
  }
  for (std::size_t i = 0; i < R; ++i) out[i] = hn::GetLane(hn::SumOfLanes(t.df, acc[i]));
}

#if HWY_TARGET != HWY_SCALAR  // Combine does not exist there; the wide path is never taken
// q4_0 where a vector holds 32 int16 (AVX-512): a block's 16 bytes widen to 16 lanes, the low
// and high nibbles are joined into one 32-lane vector in element order, and the whole block takes
// a single multiply-pairs against the activation block.
template <std::size_t R>
HWY_INLINE void DotQ4_0Wide(const Rows<R>& w, const Act& a, std::size_t nb, std::size_t ahead, float* out) {
  const QTags<32> t;
  const hn::Half<decltype(t.du16)> du16h;
  const hn::Rebind<std::uint8_t, decltype(du16h)> du8h;
  const auto mask = hn::Set(du16h, 0xF);
  const auto eight = hn::Set(t.d16, 8);
  std::array<hn::Vec<decltype(t.df)>, R> acc;
  for (auto& v : acc) v = hn::Zero(t.df);
  for (std::size_t b = 0; b < nb; ++b) {
    const auto xv = LoadI8(t, a.xq + kQK * b);
    for (std::size_t i = 0; i < R; ++i) {
      const std::byte* blk = w[i] + b * Q4_0::bytes;
      hwy::Prefetch(blk + ahead);
      const auto raw =
          hn::PromoteTo(du16h, hn::LoadU(du8h, reinterpret_cast<const std::uint8_t*>(blk + Q4_0::qs)));
      const auto q = hn::Combine(t.du16, hn::ShiftRight<4>(raw), hn::And(raw, mask));
      const auto isum = MulPairs(t, hn::Sub(hn::BitCast(t.d16, q), eight), xv, hn::Zero(t.d32));
      const float scale = BlockScale(blk + Q4_0::d) * a.xd[b];
      acc[i] = hn::MulAdd(hn::ConvertTo(t.df, isum), hn::Set(t.df, scale), acc[i]);
    }
  }
  for (std::size_t i = 0; i < R; ++i) out[i] = hn::GetLane(hn::SumOfLanes(t.df, acc[i]));
}
#endif

template <std::size_t R>
HWY_INLINE void DotQ4_0(const Rows<R>& w, const Act& a, std::size_t nb, std::size_t ahead, float* out) {
#if HWY_TARGET != HWY_SCALAR
  if constexpr (hn::MaxLanes(hn::ScalableTag<std::int16_t>()) >= 32)
    return DotQ4_0Wide<R>(w, a, nb, ahead, out);
#endif
  const QTags<16> t;  // a chunk pairs low nibbles with elements k.. and high ones with 16 + k..
  const std::size_t L = hn::Lanes(t.d16);
  const auto mask = hn::Set(t.du16, 0xF);
  const auto eight = hn::Set(t.d16, 8);
  std::array<hn::Vec<decltype(t.df)>, R> acc;
  for (auto& v : acc) v = hn::Zero(t.df);
  for (std::size_t b = 0; b < nb; ++b) {
    std::array<hn::Vec<decltype(t.d32)>, R> isum;
    for (auto& v : isum) v = hn::Zero(t.d32);
    for (std::size_t i = 0; i < R; ++i) hwy::Prefetch(w[i] + ahead + b * Q4_0::bytes);
    for (std::size_t k = 0; k < kQK / 2; k += L) {
      const auto xlo = LoadI8(t, a.xq + kQK * b + k);
      const auto xhi = LoadI8(t, a.xq + kQK * b + kQK / 2 + k);
      for (std::size_t i = 0; i < R; ++i) {
        const auto raw = LoadU8(t, w[i] + b * Q4_0::bytes + Q4_0::qs + k);
        const auto lo = hn::Sub(hn::BitCast(t.d16, hn::And(raw, mask)), eight);
        const auto hi = hn::Sub(hn::BitCast(t.d16, hn::ShiftRight<4>(raw)), eight);
        isum[i] = MulPairs(t, hi, xhi, MulPairs(t, lo, xlo, isum[i]));
      }
    }
    for (std::size_t i = 0; i < R; ++i) {
      const float scale = BlockScale(w[i] + b * Q4_0::bytes + Q4_0::d) * a.xd[b];
      acc[i] = hn::MulAdd(hn::ConvertTo(t.df, isum[i]), hn::Set(t.df, scale), acc[i]);
    }
  }
  for (std::size_t i = 0; i < R; ++i) out[i] = hn::GetLane(hn::SumOfLanes(t.df, acc[i]));
}

template <std::size_t R>
HWY_INLINE void DotQ4_K(const Rows<R>& w, const Act& a, std::size_t n_super, std::size_t ahead, float* out) {
  const QTags<32> t;
  const std::size_t L = hn::Lanes(t.d16);
  const auto mask = hn::Set(t.du16, 0xF);
  std::array<hn::Vec<decltype(t.df)>, R> acc;
  for (auto& v : acc) v = hn::Zero(t.df);
  std::array<float, R> mins{};  // sum of the min terms, subtracted at the end
  for (std::size_t sb = 0; sb < n_super; ++sb) {
    std::array<float, R> d, dmin;
    for (std::size_t i = 0; i < R; ++i) {
      const std::byte* blk = w[i] + sb * Q4_K::bytes;
      PrefetchBlock<Q4_K::bytes>(blk + ahead);
      d[i] = BlockScale(blk + Q4_K::d);
      dmin[i] = BlockScale(blk + Q4_K::dmin);
    }
    for (std::size_t j = 0; j < 4; ++j) {  // sub-blocks 2j (low nibbles) and 2j + 1 (high)
      const std::size_t b0 = 8 * sb + 2 * j, b1 = b0 + 1;
      std::array<hn::Vec<decltype(t.d32)>, R> s0, s1;
      for (std::size_t i = 0; i < R; ++i) s0[i] = s1[i] = hn::Zero(t.d32);
      for (std::size_t k = 0; k < 32; k += L) {
        const auto x0 = LoadI8(t, a.xq + kQK * b0 + k);
        const auto x1 = LoadI8(t, a.xq + kQK * b1 + k);
        for (std::size_t i = 0; i < R; ++i) {
          const auto raw = LoadU8(t, w[i] + sb * Q4_K::bytes + Q4_K::qs + 32 * j + k);
          s0[i] = MulPairs(t, hn::BitCast(t.d16, hn::And(raw, mask)), x0, s0[i]);
          s1[i] = MulPairs(t, hn::BitCast(t.d16, hn::ShiftRight<4>(raw)), x1, s1[i]);
        }
      }
      for (std::size_t i = 0; i < R; ++i) {
        const std::byte* packed = w[i] + sb * Q4_K::bytes + Q4_K::scales;
        std::uint8_t sc0, m0, sc1, m1;
        q4k_scale_min(2 * j, packed, sc0, m0);
        q4k_scale_min(2 * j + 1, packed, sc1, m1);
        acc[i] = hn::MulAdd(hn::ConvertTo(t.df, s0[i]),
                            hn::Set(t.df, d[i] * static_cast<float>(sc0) * a.xd[b0]), acc[i]);
        acc[i] = hn::MulAdd(hn::ConvertTo(t.df, s1[i]),
                            hn::Set(t.df, d[i] * static_cast<float>(sc1) * a.xd[b1]), acc[i]);
        mins[i] += static_cast<float>(a.xs[b0]) * (dmin[i] * static_cast<float>(m0) * a.xd[b0]);
        mins[i] += static_cast<float>(a.xs[b1]) * (dmin[i] * static_cast<float>(m1) * a.xd[b1]);
      }
    }
  }
  for (std::size_t i = 0; i < R; ++i) out[i] = hn::GetLane(hn::SumOfLanes(t.df, acc[i])) - mins[i];
}

template <std::size_t R>
HWY_INLINE void DotQ6_K(const Rows<R>& w, const Act& a, std::size_t n_super, std::size_t ahead, float* out) {
  const QTags<16> t;  // a chunk stays inside one 16-element sub-block (one scale)
  const std::size_t L = hn::Lanes(t.d16);
  const auto m4 = hn::Set(t.du16, 0xF);
  const auto m30 = hn::Set(t.du16, 0x30);
  const auto k32 = hn::Set(t.d16, 32);
  std::array<hn::Vec<decltype(t.df)>, R> acc;
  for (auto& v : acc) v = hn::Zero(t.df);
  for (std::size_t sb = 0; sb < n_super; ++sb) {
    for (std::size_t i = 0; i < R; ++i) PrefetchBlock<Q6_K::bytes>(w[i] + sb * Q6_K::bytes + ahead);
    for (std::size_t h = 0; h < 2; ++h) {
      const std::size_t b = 8 * sb + 4 * h;  // activation blocks b + k hold elements 32k + l
      std::array<std::array<hn::Vec<decltype(t.d32)>, 4>, R> s;
      for (auto& row : s)
        for (auto& v : row) v = hn::Zero(t.d32);
      for (std::size_t l0 = 0; l0 < 32; l0 += 16) {
        for (std::size_t l = l0; l < l0 + 16; l += L) {
          const auto x0 = LoadI8(t, a.xq + kQK * (b + 0) + l);
          const auto x1 = LoadI8(t, a.xq + kQK * (b + 1) + l);
          const auto x2 = LoadI8(t, a.xq + kQK * (b + 2) + l);
          const auto x3 = LoadI8(t, a.xq + kQK * (b + 3) + l);
          for (std::size_t i = 0; i < R; ++i) {
            const std::byte* blk = w[i] + sb * Q6_K::bytes;
            const auto lo0 = LoadU8(t, blk + Q6_K::ql + 64 * h + l);
            const auto lo1 = LoadU8(t, blk + Q6_K::ql + 64 * h + 32 + l);
            const auto hi = LoadU8(t, blk + Q6_K::qh + 32 * h + l);
            const auto q0 = hn::Or(hn::And(lo0, m4), hn::And(hn::ShiftLeft<4>(hi), m30));
            const auto q1 = hn::Or(hn::And(lo1, m4), hn::And(hn::ShiftLeft<2>(hi), m30));
            const auto q2 = hn::Or(hn::ShiftRight<4>(lo0), hn::And(hi, m30));
            const auto q3 = hn::Or(hn::ShiftRight<4>(lo1), hn::And(hn::ShiftRight<2>(hi), m30));
            const std::byte* sc = blk + Q6_K::scales + 8 * h + l0 / 16;
            // (q - 32) * scale fits int16 (|.| <= 32 * 128), so the scale is applied before the
            // pairwise products and each activation block needs one accumulator.
            const auto scaled = [&](auto q, std::size_t k) {
              return hn::Mul(hn::Sub(hn::BitCast(t.d16, q), k32), hn::Set(t.d16, i8(sc + 2 * k)));
            };
            s[i][0] = MulPairs(t, scaled(q0, 0), x0, s[i][0]);
            s[i][1] = MulPairs(t, scaled(q1, 1), x1, s[i][1]);
            s[i][2] = MulPairs(t, scaled(q2, 2), x2, s[i][2]);
            s[i][3] = MulPairs(t, scaled(q3, 3), x3, s[i][3]);
          }
        }
      }
      for (std::size_t i = 0; i < R; ++i) {
        const float d = BlockScale(w[i] + sb * Q6_K::bytes + Q6_K::d);
        for (std::size_t k = 0; k < 4; ++k)
          acc[i] = hn::MulAdd(hn::ConvertTo(t.df, s[i][k]), hn::Set(t.df, d * a.xd[b + k]), acc[i]);
      }
    }
  }
  for (std::size_t i = 0; i < R; ++i) out[i] = hn::GetLane(hn::SumOfLanes(t.df, acc[i]));
}

template <GgmlType kType, std::size_t R>
HWY_INLINE void Dot(const Rows<R>& w, const Act& a, std::size_t cols, std::size_t ahead, float* out) {
  if constexpr (kType == GgmlType::q8_0) {
    DotQ8_0<R>(w, a, cols / kQK, ahead, out);
  } else if constexpr (kType == GgmlType::q4_0) {
    DotQ4_0<R>(w, a, cols / kQK, ahead, out);
  } else if constexpr (kType == GgmlType::q4_k) {
    DotQ4_K<R>(w, a, cols / kQKK, ahead, out);
  } else if constexpr (kType == GgmlType::q6_k) {
    DotQ6_K<R>(w, a, cols / kQKK, ahead, out);
  } else {
    DotFloat<kType, R>(w, a, cols, ahead, out);
  }
}

// Weight rows [r, r + R) against every activation row: y[t * rows + r + i]. While they work, the
// kernels prefetch the same offsets R rows further on (the next group).
template <GgmlType kType, std::size_t R>
HWY_INLINE void GroupRows(const MatmulArgs& a, std::uint32_t r) {
  const std::size_t cols = a.w.cols, nb = cols / kQK, ahead = R * a.w.row_bytes;
  Rows<R> w;
  for (std::size_t i = 0; i < R; ++i) w[i] = a.w.row(r + static_cast<std::uint32_t>(i));
  const auto store = [&](std::size_t t, const std::array<float, R>& out) {
    for (std::size_t i = 0; i < R; ++i) a.y[t * a.w.rows + r + i] = out[i];
  };
  std::uint32_t t = 0;
#if HWY_TARGET == HWY_AVX3_DL
  if constexpr (kType == GgmlType::q8_0 || kType == GgmlType::q4_0) {
    // kT activation rows per pass: each weight pair is loaded and unpacked once for all of them.
    const auto pass = [&]<std::size_t kT>(std::uint32_t t0) {
      std::array<vnni::XRow, kT> xr;
      for (std::size_t j = 0; j < kT; ++j)
        xr[j] = {a.xq + (t0 + j) * cols, a.xd + (t0 + j) * nb, a.xs + (t0 + j) * nb};
      std::array<std::array<float, R>, kT> out;
      vnni::Dot<kType == GgmlType::q8_0, R, kT>(w, xr, nb, ahead, out);
      for (std::size_t j = 0; j < kT; ++j) store(t0 + j, out[j]);
    };
    for (; t + 4 <= a.n; t += 4) pass.template operator()<4>(t);
    for (; t < a.n; ++t) pass.template operator()<1>(t);
    return;
  }
#endif
  for (; t < a.n; ++t) {
    Act act;
    if constexpr (kType == GgmlType::f32 || kType == GgmlType::f16 || kType == GgmlType::bf16)
      act = Act{a.x + t * cols, nullptr, nullptr, nullptr};
    else
      act = Act{nullptr, a.xq + t * cols, a.xd + t * nb, a.xs + t * nb};
    std::array<float, R> out;
    Dot<kType, R>(w, act, cols, ahead, out.data());
    store(t, out);
  }
}

// Rows [r0, r1) in groups of R, every activation row against each group while it is hot; the
// last rows that do not fill a group one at a time.
template <GgmlType kType, std::size_t R>
void ProcessRows(const MatmulArgs& a, std::uint32_t r0, std::uint32_t r1) {
  std::uint32_t r = r0;
  for (; r + R <= r1; r += R) GroupRows<kType, R>(a, r);
  for (; r < r1; ++r) GroupRows<kType, 1>(a, r);
}

// Rows per group for q8_0 and q4_0. The VNNI kernels share each block pair's activation set-up
// (load, offset start, scales) over the group, and 8 rows measured +15% (q8_0) and +26% (q4_0) on a
// TinyLlama layer against 4; the portable kernels keep 4 (AVX2 has 16 vector registers).
#if HWY_TARGET == HWY_AVX3_DL
constexpr std::size_t kInt8Rows = 8;
#else
constexpr std::size_t kInt8Rows = 4;
#endif

void MatmulRows(const MatmulArgs& a, std::uint32_t r0, std::uint32_t r1) {
  switch (a.w.type) {
    case GgmlType::f32:
      return ProcessRows<GgmlType::f32, 4>(a, r0, r1);
    case GgmlType::f16:
      return ProcessRows<GgmlType::f16, 4>(a, r0, r1);
    case GgmlType::bf16:
      return ProcessRows<GgmlType::bf16, 4>(a, r0, r1);
    case GgmlType::q8_0:
      return ProcessRows<GgmlType::q8_0, kInt8Rows>(a, r0, r1);
    case GgmlType::q4_0:
      return ProcessRows<GgmlType::q4_0, kInt8Rows>(a, r0, r1);
    case GgmlType::q4_k:
      return ProcessRows<GgmlType::q4_k, 2>(a, r0, r1);
    case GgmlType::q6_k:
      return ProcessRows<GgmlType::q6_k, 2>(a, r0, r1);
  }
}

}  // namespace kvcache::llama::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#if HWY_ARCH_X86
#include <cpuid.h>
#endif

namespace kvcache::llama::kernels {

HWY_EXPORT(MatmulRows);

namespace {

// Highway 1.0.3 compiles AVX3_DL with the VEX "avxvnni" feature but selects it on CPUs with
// AVX512-VNNI alone (Ice Lake, Tiger Lake), and compilers use the VEX forms where they see fit
// (clang fuses pmaddwd + add into VEX vpdpwssd in the q6_K kernel). Such CPUs run the AVX3 code.
bool cpu_has_avx_vnni() {
#if HWY_ARCH_X86
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) != 0 && (eax & (1u << 4)) != 0;
#else
  return false;
#endif
}

}  // namespace

void matmul_rows_hwy(const MatmulArgs& a, std::uint32_t r0, std::uint32_t r1) {
#if (HWY_TARGETS & HWY_AVX3_DL) && (HWY_TARGETS & HWY_AVX3)
  static const bool avx_vnni = cpu_has_avx_vnni();
  if (!hwy::GetChosenTarget().IsInitialized()) hwy::SupportedTargets();  // chooses the target
  const auto chosen = HWY_DISPATCH_TABLE(MatmulRows)[hwy::GetChosenTarget().GetIndex()];
  if (chosen == &N_AVX3_DL::MatmulRows && !avx_vnni) return N_AVX3::MatmulRows(a, r0, r1);
#endif
  HWY_DYNAMIC_DISPATCH(MatmulRows)(a, r0, r1);
}

}  // namespace kvcache::llama::kernels
#endif  // HWY_ONCE
