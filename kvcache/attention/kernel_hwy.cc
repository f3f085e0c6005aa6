// Highway decode-attention kernel (the contract is attend_group in kernel.h; the scalar twin is
// kernel_scalar.cc).
//
// Decode attention is memory-bound: every cached K and V byte is read once per query token and
// used for a handful of flops. So the kernel makes exactly one pass over K and V:
//  - rows are taken in chunks of up to kChunkRows (gathered across blocks, because pinned spans
//    can be a single row and a per-block softmax step would then dominate);
//  - per chunk, the logits of all n_group queries are computed while each K row is hot (the first
//    query brings the row from memory, the others re-read it from L1: that is GQA's saving);
//  - an online softmax (running max M, sum S, accumulator A per query) rescales A and S only when
//    the chunk raises M, then adds exp(l - M) * V for each row, again reading each V row from
//    memory once for the whole group;
//  - attention mass needs the final M and S, so raw logits are parked in `mass` during the pass
//    and turned into probabilities at the end: O(rows) extra work, no second pass over K/V.
// Blocks may be of different dtypes (a pinned region at another precision than the window), so
// the dtype is dispatched per piece of a chunk. Quantised rows are dequantised in registers:
//  - q8: logit = row scale * (q . codes), and a value row adds (p * row scale) * codes;
//  - q4 keys (per channel, per page): logit = (q * channel scales) . codes + q . zeros, with the
//    scaled query and the bias computed once per piece;
//  - q4 values (per row): acc += (p * row scale) * codes + p * row zero.
// 4-bit rows hold element j and j + head_dim / 2 in one byte, so a vector of bytes unpacks into
// two vectors of contiguous elements (AND 15 and shift right 4) without any shuffle.
// Rows are contiguous head_dim-element vectors with no alignment promise (a page slot offset is a
// multiple of head_dim elements only), so every load is LoadU. Tails shorter than a vector use a
// one-lane tag: MaskedLoad is not fault-safe on SSE4 in Highway 1.0.3 (it is a full Load).
#include <algorithm>
#include <bit>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

// Highway needs foreach_target.h before highway.h and its -inl headers: keep this order.
// clang-format off
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kvcache/attention/kernel_hwy.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"
#include "kvcache/attention/kernel.h"
// clang-format on

HWY_BEFORE_NAMESPACE();
namespace kvcache::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Rows per softmax step. Larger amortises the per-step max/rescale/exp bookkeeping; 64 rows keep
// a chunk's K (64 x 128 x 4 B = 32 KiB at head_dim 128) close to L1 for the group's re-reads.
// A multiple of every target's f32 lane count, so the softmax step needs no tail.
constexpr std::size_t kChunkRows = 64;

// A run of rows of one block that lies inside the current chunk.
struct Piece {
  DType dtype;
  const std::byte* k;
  const std::byte* v;
  const std::byte* kp;  // K parameters of the piece's first row (q4: the page's channel parameters)
  const std::byte* vp;  // V parameters of the piece's first row
  const float* q;       // n_group x head_dim
  std::size_t n;
  std::size_t row_bytes;
};

// An f16 parameter as f32, exactly (normal and subnormal halves; infinities and NaN kept).
HWY_INLINE float HalfAt(const std::byte* p, std::size_t i) {
  std::uint16_t h;
  std::memcpy(&h, p + 2 * i, 2);
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t em = h & 0x7fffu;
  if (em >= 0x7c00u) return std::bit_cast<float>(sign | 0x7f800000u | ((em & 0x3ffu) << 13));
  // The half's exponent and mantissa in f32 position, rebiased by 2^112 (exact, subnormals too).
  const float mag = std::bit_cast<float>(em << 13) * 0x1p112f;
  return std::bit_cast<float>(std::bit_cast<std::uint32_t>(mag) | sign);
}

// Loads lanes [i, i + Lanes(d)) of a cached row as f32 (for q8, the codes, unscaled). f16 rows
// are IEEE halves stored as uint16; PromoteTo widens them exactly (F16C on AVX2/AVX-512, emulated
// elsewhere; Highway 1.0.3's emulation turns half infinity into 65536, which only matters for
// non-finite K/V).
template <DType kT, class D>
HWY_INLINE hn::Vec<D> LoadRow(D d, const std::byte* HWY_RESTRICT row, std::size_t i) {
  if constexpr (kT == DType::f16) {
    const hn::Rebind<hwy::float16_t, D> dh;
    return hn::PromoteTo(d, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(row) + i));
  } else if constexpr (kT == DType::q8) {
    const hn::Rebind<std::int8_t, D> d8;
    const hn::Rebind<std::int32_t, D> di;
    return hn::ConvertTo(d, hn::PromoteTo(di, hn::LoadU(d8, reinterpret_cast<const std::int8_t*>(row) + i)));
  } else {
    static_assert(kT == DType::f32, "q4 rows are read by the Q4 functions");
    return hn::LoadU(d, reinterpret_cast<const float*>(row) + i);
  }
}

// The 4-bit codes of bytes [j, j + Lanes(d)) of a q4 row: elements j... (lo) and half + j... (hi).
template <class D>
HWY_INLINE void LoadNibbles(D d, const std::byte* HWY_RESTRICT row, std::size_t j, hn::Vec<D>& lo,
                            hn::Vec<D>& hi) {
  const hn::Rebind<std::uint8_t, D> du8;
  const hn::Rebind<std::int32_t, D> di;
  const auto bytes = hn::PromoteTo(di, hn::LoadU(du8, reinterpret_cast<const std::uint8_t*>(row) + j));
  lo = hn::ConvertTo(d, hn::And(bytes, hn::Set(di, 15)));
  hi = hn::ConvertTo(d, hn::ShiftRight<4>(bytes));
}

// Scale of a logit row r of a piece: q8 multiplies by the row's key scale.
template <DType kT>
HWY_INLINE float RowKeyScale(const std::byte* kp, std::size_t r) {
  if constexpr (kT == DType::q8) {
    return HalfAt(kp, r);
  } else {
    (void)kp;
    (void)r;
    return 1.f;
  }
}

// Logits of 4 consecutive rows for every query of the group: lg[g * kChunkRows + r].
// Four independent accumulators hide the FMA latency that a single row's chain would expose.
template <DType kT, class D>
HWY_INLINE void Logits4(D d, std::size_t head_dim, std::size_t n_group, float scale,
                        const std::byte* HWY_RESTRICT k0, const std::byte* HWY_RESTRICT kp,
                        const float* HWY_RESTRICT q_group, float* HWY_RESTRICT lg) {
  const hn::CappedTag<float, 1> d1;
  const std::size_t N = hn::Lanes(d);
  const std::size_t row_bytes = head_dim * dtype_bits(kT) / 8;
  const float c0 = scale * RowKeyScale<kT>(kp, 0), c1 = scale * RowKeyScale<kT>(kp, 1);
  const float c2 = scale * RowKeyScale<kT>(kp, 2), c3 = scale * RowKeyScale<kT>(kp, 3);
  const std::byte* k1 = k0 + row_bytes;
  const std::byte* k2 = k1 + row_bytes;
  const std::byte* k3 = k2 + row_bytes;
  for (std::size_t g = 0; g < n_group; ++g) {
    const float* HWY_RESTRICT q = q_group + g * head_dim;
    auto s0 = hn::Zero(d);
    auto s1 = hn::Zero(d);
    auto s2 = hn::Zero(d);
    auto s3 = hn::Zero(d);
    std::size_t i = 0;
    for (; i + N <= head_dim; i += N) {
      const auto qv = hn::LoadU(d, q + i);
      s0 = hn::MulAdd(qv, LoadRow<kT>(d, k0, i), s0);
      s1 = hn::MulAdd(qv, LoadRow<kT>(d, k1, i), s1);
      s2 = hn::MulAdd(qv, LoadRow<kT>(d, k2, i), s2);
      s3 = hn::MulAdd(qv, LoadRow<kT>(d, k3, i), s3);
    }
    float t0 = hn::GetLane(hn::SumOfLanes(d, s0));
    float t1 = hn::GetLane(hn::SumOfLanes(d, s1));
    float t2 = hn::GetLane(hn::SumOfLanes(d, s2));
    float t3 = hn::GetLane(hn::SumOfLanes(d, s3));
    for (; i < head_dim; ++i) {
      const auto qv = hn::LoadU(d1, q + i);
      t0 += hn::GetLane(hn::Mul(qv, LoadRow<kT>(d1, k0, i)));
      t1 += hn::GetLane(hn::Mul(qv, LoadRow<kT>(d1, k1, i)));
      t2 += hn::GetLane(hn::Mul(qv, LoadRow<kT>(d1, k2, i)));
      t3 += hn::GetLane(hn::Mul(qv, LoadRow<kT>(d1, k3, i)));
    }
    float* HWY_RESTRICT out = lg + g * kChunkRows;
    out[0] = t0 * c0;
    out[1] = t1 * c1;
    out[2] = t2 * c2;
    out[3] = t3 * c3;
  }
}

// Logits of one row for every query of the group (the remainder after Logits4).
template <DType kT, class D>
HWY_INLINE void Logits1(D d, std::size_t head_dim, std::size_t n_group, float scale,
                        const std::byte* HWY_RESTRICT k0, const std::byte* HWY_RESTRICT kp,
                        const float* HWY_RESTRICT q_group, float* HWY_RESTRICT lg) {
  const hn::CappedTag<float, 1> d1;
  const std::size_t N = hn::Lanes(d);
  const float c0 = scale * RowKeyScale<kT>(kp, 0);
  for (std::size_t g = 0; g < n_group; ++g) {
    const float* HWY_RESTRICT q = q_group + g * head_dim;
    auto s0 = hn::Zero(d);
    std::size_t i = 0;
    for (; i + N <= head_dim; i += N) s0 = hn::MulAdd(hn::LoadU(d, q + i), LoadRow<kT>(d, k0, i), s0);
    float t0 = hn::GetLane(hn::SumOfLanes(d, s0));
    for (; i < head_dim; ++i) t0 += hn::GetLane(hn::Mul(hn::LoadU(d1, q + i), LoadRow<kT>(d1, k0, i)));
    lg[g * kChunkRows] = t0 * c0;
  }
}

// acc[g * state_stride + i] += sum over 4 rows of p_r * V_r[i], each V row loaded once per query.
// q8 rows fold their scale into p (vs: the rows' f16 scales; unused otherwise).
template <DType kT, class D>
HWY_INLINE void Values4(D d, std::size_t head_dim, std::size_t n_group, const std::byte* HWY_RESTRICT v0,
                        const std::byte* HWY_RESTRICT vs, const float* HWY_RESTRICT pb,
                        float* HWY_RESTRICT acc, std::size_t state_stride) {
  const hn::CappedTag<float, 1> d1;
  const std::size_t N = hn::Lanes(d);
  const std::size_t row_bytes = head_dim * dtype_bits(kT) / 8;
  const float c0 = RowKeyScale<kT>(vs, 0), c1 = RowKeyScale<kT>(vs, 1);
  const float c2 = RowKeyScale<kT>(vs, 2), c3 = RowKeyScale<kT>(vs, 3);
  const std::byte* v1 = v0 + row_bytes;
  const std::byte* v2 = v1 + row_bytes;
  const std::byte* v3 = v2 + row_bytes;
  for (std::size_t g = 0; g < n_group; ++g) {
    const float* HWY_RESTRICT pr = pb + g * kChunkRows;
    const float p[4] = {pr[0] * c0, pr[1] * c1, pr[2] * c2, pr[3] * c3};
    float* HWY_RESTRICT a = acc + g * state_stride;
    const auto p0 = hn::Set(d, p[0]);
    const auto p1 = hn::Set(d, p[1]);
    const auto p2 = hn::Set(d, p[2]);
    const auto p3 = hn::Set(d, p[3]);
    std::size_t i = 0;
    for (; i + N <= head_dim; i += N) {
      // Two partial sums shorten the dependency chain through the accumulator.
      auto x = hn::MulAdd(p0, LoadRow<kT>(d, v0, i), hn::LoadU(d, a + i));
      auto y = hn::Mul(p1, LoadRow<kT>(d, v1, i));
      x = hn::MulAdd(p2, LoadRow<kT>(d, v2, i), x);
      y = hn::MulAdd(p3, LoadRow<kT>(d, v3, i), y);
      hn::StoreU(hn::Add(x, y), d, a + i);
    }
    for (; i < head_dim; ++i) {
      auto x = hn::MulAdd(hn::Set(d1, p[0]), LoadRow<kT>(d1, v0, i), hn::LoadU(d1, a + i));
      x = hn::MulAdd(hn::Set(d1, p[1]), LoadRow<kT>(d1, v1, i), x);
      x = hn::MulAdd(hn::Set(d1, p[2]), LoadRow<kT>(d1, v2, i), x);
      x = hn::MulAdd(hn::Set(d1, p[3]), LoadRow<kT>(d1, v3, i), x);
      hn::StoreU(x, d1, a + i);
    }
  }
}

template <DType kT, class D>
HWY_INLINE void Values1(D d, std::size_t head_dim, std::size_t n_group, const std::byte* HWY_RESTRICT v0,
                        const std::byte* HWY_RESTRICT vs, const float* HWY_RESTRICT pb,
                        float* HWY_RESTRICT acc, std::size_t state_stride) {
  const hn::CappedTag<float, 1> d1;
  const std::size_t N = hn::Lanes(d);
  const float c0 = RowKeyScale<kT>(vs, 0);
  for (std::size_t g = 0; g < n_group; ++g) {
    const float p = pb[g * kChunkRows] * c0;
    float* HWY_RESTRICT a = acc + g * state_stride;
    std::size_t i = 0;
    for (; i + N <= head_dim; i += N) {
      hn::StoreU(hn::MulAdd(hn::Set(d, p), LoadRow<kT>(d, v0, i), hn::LoadU(d, a + i)), d, a + i);
    }
    for (; i < head_dim; ++i) {
      hn::StoreU(hn::MulAdd(hn::Set(d1, p), LoadRow<kT>(d1, v0, i), hn::LoadU(d1, a + i)), d1, a + i);
    }
  }
}

// ---- Small heads: several rows per vector ------------------------------------------------
// With head_dim kD < Lanes(d) = N (stories260K: 8 dims, 16 lanes on AVX-512), a vector per row
// wastes lanes and a horizontal sum per row dominates. Instead N consecutive rows (kD vectors,
// each holding N / kD whole rows) are multiplied by the query repeated across the vector, and a
// tree of pairwise sums (ConcatEven + ConcatOdd) folds the kD vectors into one vector holding the
// N logits in row order. Values are accumulated the same way: row probabilities are expanded to
// the row slots with TableLookupLanes, and the N / kD slot accumulators are folded at the end.

// Sums adjacent lane pairs of the concatenation lo|hi: result lane j = c[2j] + c[2j + 1].
template <class D, class V>
HWY_INLINE V PairSum(D d, V lo, V hi) {
#if HWY_TARGET == HWY_SCALAR
  // One lane: the packed path is never taken (head_dim >= 1 lane); HWY_SCALAR has no Concat*.
  (void)d;
  return hn::Add(lo, hi);
#else
  return hn::Add(hn::ConcatEven(d, hi, lo), hn::ConcatOdd(d, hi, lo));
#endif
}

// Logits of rows [0, N) of k for every query; qpat[g * N + l] = q_g[l % kD].
template <std::size_t kD, DType kT, class D>
HWY_INLINE void LogitsPacked(D d, std::size_t n_group, float scale, const std::byte* HWY_RESTRICT k,
                             const float* HWY_RESTRICT qpat, float* HWY_RESTRICT lg) {
  const std::size_t N = hn::Lanes(d);
  const auto vscale = hn::Set(d, scale);
  for (std::size_t g = 0; g < n_group; ++g) {
    const auto q = hn::LoadU(d, qpat + g * N);
    hn::Vec<D> u;
    if constexpr (kD == 1) {
      u = hn::Mul(q, LoadRow<kT>(d, k, 0));
    } else if constexpr (kD == 2) {
      u = PairSum(d, hn::Mul(q, LoadRow<kT>(d, k, 0)), hn::Mul(q, LoadRow<kT>(d, k, N)));
    } else if constexpr (kD == 4) {
      const auto s01 = PairSum(d, hn::Mul(q, LoadRow<kT>(d, k, 0)), hn::Mul(q, LoadRow<kT>(d, k, N)));
      const auto s23 = PairSum(d, hn::Mul(q, LoadRow<kT>(d, k, 2 * N)), hn::Mul(q, LoadRow<kT>(d, k, 3 * N)));
      u = PairSum(d, s01, s23);
    } else {
      static_assert(kD == 8, "packed rows support head_dim 1, 2, 4, 8");
      const auto s01 = PairSum(d, hn::Mul(q, LoadRow<kT>(d, k, 0)), hn::Mul(q, LoadRow<kT>(d, k, N)));
      const auto s23 = PairSum(d, hn::Mul(q, LoadRow<kT>(d, k, 2 * N)), hn::Mul(q, LoadRow<kT>(d, k, 3 * N)));
      const auto s45 = PairSum(d, hn::Mul(q, LoadRow<kT>(d, k, 4 * N)), hn::Mul(q, LoadRow<kT>(d, k, 5 * N)));
      const auto s67 = PairSum(d, hn::Mul(q, LoadRow<kT>(d, k, 6 * N)), hn::Mul(q, LoadRow<kT>(d, k, 7 * N)));
      u = PairSum(d, PairSum(d, s01, s23), PairSum(d, s45, s67));
    }
    hn::StoreU(hn::Mul(u, vscale), d, lg + g * kChunkRows);
  }
}

// accp[g * state_stride + l] += p(row of lane l) * V[l] over rows [0, N) of v, where vector j of
// the rows holds rows j * N / kD ... and `expand` + j * N lists, per lane, which row it belongs to.
template <std::size_t kD, DType kT, class D>
HWY_INLINE void ValuesPacked(D d, std::size_t n_group, const std::byte* HWY_RESTRICT v,
                             const std::int32_t* HWY_RESTRICT expand, const float* HWY_RESTRICT pb,
                             float* HWY_RESTRICT accp, std::size_t state_stride) {
  const std::size_t N = hn::Lanes(d);
  for (std::size_t g = 0; g < n_group; ++g) {
    const auto p = hn::LoadU(d, pb + g * kChunkRows);
    float* HWY_RESTRICT a = accp + g * state_stride;
    auto x = hn::LoadU(d, a);
    if constexpr (kD == 1) {
      x = hn::MulAdd(p, LoadRow<kT>(d, v, 0), x);
    } else {
      auto y = hn::Zero(d);  // second chain: halves the FMA latency on the accumulator
      for (std::size_t j = 0; j < kD; j += 2) {
        x = hn::MulAdd(hn::TableLookupLanes(p, hn::SetTableIndices(d, expand + j * N)),
                       LoadRow<kT>(d, v, j * N), x);
        y = hn::MulAdd(hn::TableLookupLanes(p, hn::SetTableIndices(d, expand + (j + 1) * N)),
                       LoadRow<kT>(d, v, (j + 1) * N), y);
      }
      x = hn::Add(x, y);
    }
    hn::StoreU(x, d, a);
  }
}

// ---- Software prefetch ------------------------------------------------------------------------
// Pages are head-major, so one head's rows of a page are a short contiguous run (16 rows: 8 KiB
// at head_dim 128 f32) followed by a jump of a whole page; hardware prefetchers stop at 4 KiB
// boundaries and restart on every run. While one phase of a chunk computes, the rows the next
// phase needs are prefetched (V of this chunk during the logits, K of the next chunk during the
// values), keeping enough misses in flight to stream at DRAM speed.
struct PrefetchCursor {
  const Piece* pieces = nullptr;
  std::size_t n_pieces = 0;
  bool values = false;        // prefetch V rows (else K rows)
  std::size_t ip = 0, r = 0;  // next row to prefetch: row r of pieces[ip]

  // Prefetches the cache lines of the next `rows` rows.
  HWY_INLINE void Advance(std::size_t rows) {
    while (rows > 0 && ip < n_pieces) {
      const Piece& pc = pieces[ip];
      const std::size_t take = std::min(rows, pc.n - r);
      const std::byte* begin = (values ? pc.v : pc.k) + r * pc.row_bytes;
      const std::byte* end = begin + take * pc.row_bytes;
      const auto first = reinterpret_cast<std::uintptr_t>(begin) & ~std::uintptr_t{63};
      for (std::uintptr_t line = first; line < reinterpret_cast<std::uintptr_t>(end); line += 64) {
        hwy::Prefetch(reinterpret_cast<const std::byte*>(line));
      }
      rows -= take;
      r += take;
      if (r == pc.n) {
        ++ip;
        r = 0;
      }
    }
  }
};

// x[0, n) *= f.
template <class D>
HWY_INLINE void ScaleRow(D d, float f, float* HWY_RESTRICT x, std::size_t n) {
  const hn::CappedTag<float, 1> d1;
  const std::size_t N = hn::Lanes(d);
  std::size_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::Mul(hn::LoadU(d, x + i), hn::Set(d, f)), d, x + i);
  for (; i < n; ++i) hn::StoreU(hn::Mul(hn::LoadU(d1, x + i), hn::Set(d1, f)), d1, x + i);
}

// exp(x), with NaN lanes passed through unchanged. Highway's Exp first converts x / ln 2 to int32,
// which for NaN is undefined behaviour in the EMU128 emulation (x86 instructions return INT_MIN).
// NaN logits come only from non-finite or overflowing keys, values or queries (or from the unused
// lanes past a chunk's rows); propagating them keeps the result honest.
template <class D, class V>
HWY_INLINE V ExpOrNaN(D d, V x) {
  const auto nan = hn::IsNaN(x);
  return hn::IfThenElse(nan, x, hn::Exp(d, hn::IfThenZeroElse(nan, x)));
}

// Online-softmax step for the chunk's n_rows logits of each query (lg[g * kChunkRows + r]):
// raises the running max m[g] if needed (rescaling the query's state_stride accumulator floats
// and s by exp(old - new)), then writes
// p = exp(l - m) to pb and adds them to s[g]. Lanes past n_rows are masked, never used.
template <class D>
HWY_INLINE void SoftmaxStep(D d, std::size_t n_rows, std::size_t n_group, std::size_t state_stride,
                            const float* HWY_RESTRICT lg, float* HWY_RESTRICT pb, float* HWY_RESTRICT m,
                            float* HWY_RESTRICT s, float* HWY_RESTRICT acc) {
  const std::size_t N = hn::Lanes(d);
  const auto neg_inf = hn::Set(d, -std::numeric_limits<float>::infinity());
  for (std::size_t g = 0; g < n_group; ++g) {
    const float* HWY_RESTRICT l = lg + g * kChunkRows;
    auto vmax = neg_inf;
    for (std::size_t r = 0; r < n_rows; r += N) {
      vmax = hn::Max(vmax, hn::IfThenElse(hn::FirstN(d, n_rows - r), hn::LoadU(d, l + r), neg_inf));
    }
    const float chunk_max = hn::GetLane(hn::MaxOfLanes(d, vmax));
    if (chunk_max > m[g]) {
      // The first chunk has s == 0 and acc == 0: nothing to rescale (and exp(-inf) is avoided).
      if (s[g] > 0.f) {
        const float factor = std::exp(m[g] - chunk_max);
        s[g] *= factor;
        ScaleRow(d, factor, acc + g * state_stride, state_stride);
      }
      m[g] = chunk_max;
    }
    const auto vm = hn::Set(d, m[g]);
    auto vs = hn::Zero(d);
    float* HWY_RESTRICT p = pb + g * kChunkRows;
    for (std::size_t r = 0; r < n_rows; r += N) {
      // l - m <= 0, so Exp stays in its valid range; below -104 it returns 0 as it should.
      const auto e =
          hn::IfThenElseZero(hn::FirstN(d, n_rows - r), ExpOrNaN(d, hn::Sub(hn::LoadU(d, l + r), vm)));
      hn::StoreU(e, d, p + r);
      vs = hn::Add(vs, e);
    }
    s[g] += hn::GetLane(hn::SumOfLanes(d, vs));
  }
}

// mass[j] = exp(mass[j] - m) / s for j in [0, n): turns the parked logits into probabilities.
template <class D>
HWY_INLINE void NormaliseMass(D d, float m, float s, float* HWY_RESTRICT mass, std::size_t n) {
  const hn::CappedTag<float, 1> d1;
  const std::size_t N = hn::Lanes(d);
  std::size_t j = 0;
  for (; j + N <= n; j += N) {
    const auto e = ExpOrNaN(d, hn::Sub(hn::LoadU(d, mass + j), hn::Set(d, m)));
    hn::StoreU(hn::Div(e, hn::Set(d, s)), d, mass + j);
  }
  for (; j < n; ++j) {
    const auto e = ExpOrNaN(d1, hn::Sub(hn::LoadU(d1, mass + j), hn::Set(d1, m)));
    hn::StoreU(hn::Div(e, hn::Set(d1, s)), d1, mass + j);
  }
}

// ---- q4 rows ----------------------------------------------------------------------------------
// Tag dq has at most head_dim / 2 lanes (a vector of bytes covers lanes of both halves).

// Logits of kR consecutive q4 key rows for every query: lg[g * kChunkRows + r] =
// scale * (qs_g . codes_r + bias_g), qs_g = q_g * channel scales, bias_g = q_g . zero points.
template <std::size_t kR, class DQ>
HWY_INLINE void LogitsQ4(DQ dq, std::size_t head_dim, std::size_t n_group, float scale,
                         const std::byte* HWY_RESTRICT k0, const float* HWY_RESTRICT qs,
                         const float* HWY_RESTRICT bias, float* HWY_RESTRICT lg) {
  const hn::CappedTag<float, 1> d1;
  const std::size_t N = hn::Lanes(dq);
  const std::size_t half = head_dim / 2;
  for (std::size_t g = 0; g < n_group; ++g) {
    const float* HWY_RESTRICT q = qs + g * head_dim;
    hn::Vec<DQ> acc[kR];
    for (std::size_t r = 0; r < kR; ++r) acc[r] = hn::Zero(dq);
    std::size_t j = 0;
    for (; j + N <= half; j += N) {
      const auto ql = hn::LoadU(dq, q + j);
      const auto qh = hn::LoadU(dq, q + half + j);
      for (std::size_t r = 0; r < kR; ++r) {
        hn::Vec<DQ> lo, hi;
        LoadNibbles(dq, k0 + r * half, j, lo, hi);
        acc[r] = hn::MulAdd(qh, hi, hn::MulAdd(ql, lo, acc[r]));
      }
    }
    float t[kR];
    for (std::size_t r = 0; r < kR; ++r) t[r] = hn::GetLane(hn::SumOfLanes(dq, acc[r]));
    for (; j < half; ++j) {
      const auto ql = hn::LoadU(d1, q + j);
      const auto qh = hn::LoadU(d1, q + half + j);
      for (std::size_t r = 0; r < kR; ++r) {
        hn::Vec<decltype(d1)> lo, hi;
        LoadNibbles(d1, k0 + r * half, j, lo, hi);
        t[r] += hn::GetLane(hn::MulAdd(qh, hi, hn::Mul(ql, lo)));
      }
    }
    for (std::size_t r = 0; r < kR; ++r) lg[g * kChunkRows + r] = (t[r] + bias[g]) * scale;
  }
}

// acc[g * state_stride + i] += sum over kR q4 value rows of p_r * (zero_r + scale_r * code_r[i]),
// vp: the rows' (f16 scale, f16 zero) pairs.
template <std::size_t kR, class DQ>
HWY_INLINE void ValuesQ4(DQ dq, std::size_t head_dim, std::size_t n_group, const std::byte* HWY_RESTRICT v0,
                         const std::byte* HWY_RESTRICT vp, const float* HWY_RESTRICT pb,
                         float* HWY_RESTRICT acc, std::size_t state_stride) {
  const hn::CappedTag<float, 1> d1;
  const std::size_t N = hn::Lanes(dq);
  const std::size_t half = head_dim / 2;
  float vscale[kR], vzero[kR];
  for (std::size_t r = 0; r < kR; ++r) {
    vscale[r] = HalfAt(vp, 2 * r);
    vzero[r] = HalfAt(vp, 2 * r + 1);
  }
  for (std::size_t g = 0; g < n_group; ++g) {
    const float* HWY_RESTRICT p = pb + g * kChunkRows;
    float* HWY_RESTRICT a = acc + g * state_stride;
    float ps[kR];
    float pz = 0.f;
    for (std::size_t r = 0; r < kR; ++r) {
      ps[r] = p[r] * vscale[r];
      pz += p[r] * vzero[r];
    }
    std::size_t j = 0;
    for (; j + N <= half; j += N) {
      auto lo_acc = hn::Add(hn::LoadU(dq, a + j), hn::Set(dq, pz));
      auto hi_acc = hn::Add(hn::LoadU(dq, a + half + j), hn::Set(dq, pz));
      for (std::size_t r = 0; r < kR; ++r) {
        hn::Vec<DQ> lo, hi;
        LoadNibbles(dq, v0 + r * half, j, lo, hi);
        lo_acc = hn::MulAdd(hn::Set(dq, ps[r]), lo, lo_acc);
        hi_acc = hn::MulAdd(hn::Set(dq, ps[r]), hi, hi_acc);
      }
      hn::StoreU(lo_acc, dq, a + j);
      hn::StoreU(hi_acc, dq, a + half + j);
    }
    for (; j < half; ++j) {
      auto lo_acc = hn::Add(hn::LoadU(d1, a + j), hn::Set(d1, pz));
      auto hi_acc = hn::Add(hn::LoadU(d1, a + half + j), hn::Set(d1, pz));
      for (std::size_t r = 0; r < kR; ++r) {
        hn::Vec<decltype(d1)> lo, hi;
        LoadNibbles(d1, v0 + r * half, j, lo, hi);
        lo_acc = hn::MulAdd(hn::Set(d1, ps[r]), lo, lo_acc);
        hi_acc = hn::MulAdd(hn::Set(d1, ps[r]), hi, hi_acc);
      }
      hn::StoreU(lo_acc, d1, a + j);
      hn::StoreU(hi_acc, d1, a + half + j);
    }
  }
}

// Up to kChunkRows rows taken in order from consecutive blocks.
struct Chunk {
  Piece pieces[kChunkRows];
  std::size_t n_pieces = 0;
  std::size_t n_rows = 0;
};

// Fills `c` with the next rows starting at row `off` of blocks[b] and advances (b, off).
HWY_INLINE void Gather(const HeadBlock* blocks, std::size_t n_blocks, std::size_t head_dim, std::size_t& b,
                       std::size_t& off, Chunk& c) {
  c.n_pieces = 0;
  c.n_rows = 0;
  while (b < n_blocks && c.n_rows < kChunkRows) {
    const HeadBlock& blk = blocks[b];
    const std::size_t take = std::min<std::size_t>(blk.n - off, kChunkRows - c.n_rows);
    if (take > 0) {
      const std::size_t row_bytes = head_dim * dtype_bits(blk.dtype) / 8;
      // Per-row parameters advance with the rows: q8 one half per row, q4 values two.
      const std::size_t kp_stride = blk.dtype == DType::q8 ? 2 : 0;
      const std::size_t vp_stride = blk.dtype == DType::q8 ? 2 : blk.dtype == DType::q4 ? 4 : 0;
      const std::byte* kp = blk.k_params == nullptr ? nullptr : blk.k_params + off * kp_stride;
      const std::byte* vp = blk.v_params == nullptr ? nullptr : blk.v_params + off * vp_stride;
      c.pieces[c.n_pieces++] =
          Piece{blk.dtype, blk.k + off * row_bytes, blk.v + off * row_bytes, kp, vp, blk.q, take, row_bytes};
      c.n_rows += take;
      off += take;
    }
    if (off == blk.n) {
      ++b;
      off = 0;
    }
  }
}

// Per-call scratch of AttendRows beyond the softmax state.
struct PieceScratch {
  float* qpat;            // n_group x NF, packed queries
  const float* qpat_src;  // the query qpat was built from
  float* qs;              // n_group x head_dim: q4 queries times channel scales
  float* bias;            // n_group: q4 queries . zero points
  const std::int32_t* expand;
};

// Logits of the piece's rows into lg (row r0 of the chunk onwards) for a row-format dtype kT.
template <DType kT, std::size_t kPacked, class D>
HWY_INLINE void PieceLogits(D d, std::size_t head_dim, std::size_t n_group, float scale, const Piece& pc,
                            PieceScratch& ps, PrefetchCursor& pf, float* HWY_RESTRICT lg) {
  const hn::ScalableTag<float> df;
  const std::size_t NF = hn::Lanes(df);
  const std::size_t row_bytes = pc.row_bytes;
  const std::size_t kp_stride = kT == DType::q8 ? 2 : 0;
  std::size_t r = 0;
  if constexpr (kPacked != 0 && (kT == DType::f32 || kT == DType::f16)) {
    if (pc.n >= NF && pc.q != ps.qpat_src) {
      for (std::size_t g = 0; g < n_group; ++g) {
        for (std::size_t l = 0; l < NF; ++l) ps.qpat[g * NF + l] = pc.q[g * head_dim + l % kPacked];
      }
      ps.qpat_src = pc.q;
    }
    for (; r + NF <= pc.n; r += NF) {
      pf.Advance(NF);
      LogitsPacked<kPacked, kT>(df, n_group, scale, pc.k + r * row_bytes, ps.qpat, lg + r);
    }
  }
  for (; r + 4 <= pc.n; r += 4) {
    pf.Advance(4);
    Logits4<kT>(d, head_dim, n_group, scale, pc.k + r * row_bytes, pc.kp + r * kp_stride, pc.q, lg + r);
  }
  for (; r < pc.n; ++r) {
    pf.Advance(1);
    Logits1<kT>(d, head_dim, n_group, scale, pc.k + r * row_bytes, pc.kp + r * kp_stride, pc.q, lg + r);
  }
}

template <DType kT, std::size_t kPacked, class D>
HWY_INLINE void PieceValues(D d, std::size_t head_dim, std::size_t n_group, const Piece& pc, PieceScratch& ps,
                            PrefetchCursor& pf, const float* HWY_RESTRICT pb, float* HWY_RESTRICT acc,
                            std::size_t state_stride) {
  const hn::ScalableTag<float> df;
  const std::size_t NF = hn::Lanes(df);
  const std::size_t row_bytes = pc.row_bytes;
  const std::size_t vp_stride = kT == DType::q8 ? 2 : 0;
  std::size_t r = 0;
  if constexpr (kPacked != 0 && (kT == DType::f32 || kT == DType::f16)) {
    for (; r + NF <= pc.n; r += NF) {
      pf.Advance(NF);
      ValuesPacked<kPacked, kT>(df, n_group, pc.v + r * row_bytes, ps.expand, pb + r, acc + head_dim,
                                state_stride);
    }
  }
  for (; r + 4 <= pc.n; r += 4) {
    pf.Advance(4);
    Values4<kT>(d, head_dim, n_group, pc.v + r * row_bytes, pc.vp + r * vp_stride, pb + r, acc, state_stride);
  }
  for (; r < pc.n; ++r) {
    pf.Advance(1);
    Values1<kT>(d, head_dim, n_group, pc.v + r * row_bytes, pc.vp + r * vp_stride, pb + r, acc, state_stride);
  }
}

template <class DQ>
HWY_INLINE void PieceLogitsQ4(DQ dq, std::size_t head_dim, std::size_t n_group, float scale, const Piece& pc,
                              PieceScratch& ps, PrefetchCursor& pf, float* HWY_RESTRICT lg) {
  // Fold the page's channel parameters into the queries once per piece.
  for (std::size_t g = 0; g < n_group; ++g) {
    float bias = 0.f;
    for (std::size_t c = 0; c < head_dim; ++c) {
      const float q = pc.q[g * head_dim + c];
      ps.qs[g * head_dim + c] = q * HalfAt(pc.kp, c);
      bias += q * HalfAt(pc.kp, head_dim + c);
    }
    ps.bias[g] = bias;
  }
  const std::size_t row_bytes = pc.row_bytes;
  std::size_t r = 0;
  for (; r + 4 <= pc.n; r += 4) {
    pf.Advance(4);
    LogitsQ4<4>(dq, head_dim, n_group, scale, pc.k + r * row_bytes, ps.qs, ps.bias, lg + r);
  }
  for (; r < pc.n; ++r) {
    pf.Advance(1);
    LogitsQ4<1>(dq, head_dim, n_group, scale, pc.k + r * row_bytes, ps.qs, ps.bias, lg + r);
  }
}

template <class DQ>
HWY_INLINE void PieceValuesQ4(DQ dq, std::size_t head_dim, std::size_t n_group, const Piece& pc,
                              PrefetchCursor& pf, const float* HWY_RESTRICT pb, float* HWY_RESTRICT acc,
                              std::size_t state_stride) {
  const std::size_t row_bytes = pc.row_bytes;
  std::size_t r = 0;
  for (; r + 4 <= pc.n; r += 4) {
    pf.Advance(4);
    ValuesQ4<4>(dq, head_dim, n_group, pc.v + r * row_bytes, pc.vp + r * 4, pb + r, acc, state_stride);
  }
  for (; r < pc.n; ++r) {
    pf.Advance(1);
    ValuesQ4<1>(dq, head_dim, n_group, pc.v + r * row_bytes, pc.vp + r * 4, pb + r, acc, state_stride);
  }
}

// The kernel. Rows one at a time use tag `d` (head_dim >= Lanes(d)) and q4 rows tag `dq`
// (head_dim / 2 >= Lanes(dq)); with kPacked != 0 (== head_dim, < Lanes of the full tag), runs of
// full-width row groups of f32 / f16 use the packed path.
template <std::size_t kPacked, class D, class DQ>
void AttendRows(D d, DQ dq, std::size_t head_dim, std::size_t n_group, float scale, const HeadBlock* blocks,
                std::size_t n_blocks, float* HWY_RESTRICT out, float* HWY_RESTRICT mass,
                std::size_t mass_stride) {
  const hn::ScalableTag<float> df;  // softmax and packed rows run across rows, full width
  const std::size_t NF = hn::Lanes(df);
  // Per query: the accumulator of rows done one at a time, then NF lanes of packed slots.
  const std::size_t state_stride = head_dim + NF;

  // Per-thread scratch, grown on demand: attention runs once per KV head per layer per token,
  // too often for a heap allocation per call.
  thread_local std::vector<float> scratch;
  const std::size_t need = n_group * (2 * kChunkRows + state_stride + NF + 2 + head_dim + 1);
  if (scratch.size() < need) scratch.resize(need);
  float* HWY_RESTRICT lg = scratch.data();                  // n_group x kChunkRows logits
  float* HWY_RESTRICT pb = lg + n_group * kChunkRows;       // n_group x kChunkRows exp(l - m)
  float* HWY_RESTRICT acc = pb + n_group * kChunkRows;      // n_group x state_stride
  float* HWY_RESTRICT qpat = acc + n_group * state_stride;  // n_group x NF, packed queries
  float* HWY_RESTRICT m = qpat + n_group * NF;              // running max per query
  float* HWY_RESTRICT s = m + n_group;                      // running sum per query
  float* HWY_RESTRICT qs = s + n_group;                     // n_group x head_dim, q4 scaled queries
  float* HWY_RESTRICT bias = qs + n_group * head_dim;       // n_group, q4 key biases
  std::fill(acc, acc + n_group * state_stride, 0.f);
  std::fill(m, m + n_group, -std::numeric_limits<float>::infinity());
  std::fill(s, s + n_group, 0.f);

  // Packed rows: lane l of vector j holds row j * NF / kPacked + l / kPacked.
  HWY_ALIGN std::int32_t expand[8 * hn::MaxLanes(df)];
  if constexpr (kPacked != 0) {
    for (std::size_t i = 0; i < kPacked * NF; ++i) {
      expand[i] = static_cast<std::int32_t>((i / NF) * (NF / kPacked) + (i % NF) / kPacked);
    }
  }
  PieceScratch ps{qpat, nullptr, qs, bias, expand};

  Chunk chunks[2];
  std::size_t b = 0, off = 0;
  Chunk* cur = &chunks[0];
  Chunk* next = &chunks[1];
  Gather(blocks, n_blocks, head_dim, b, off, *cur);
  std::size_t done = 0;  // rows finished (index of the chunk's first row in mass)
  while (cur->n_rows > 0) {
    Gather(blocks, n_blocks, head_dim, b, off, *next);
    const std::size_t n_rows = cur->n_rows;

    PrefetchCursor pf_v{cur->pieces, cur->n_pieces, true};
    std::size_t r0 = 0;
    for (std::size_t ip = 0; ip < cur->n_pieces; ++ip) {
      const Piece& pc = cur->pieces[ip];
      switch (pc.dtype) {
        case DType::f32:
          PieceLogits<DType::f32, kPacked>(d, head_dim, n_group, scale, pc, ps, pf_v, lg + r0);
          break;
        case DType::f16:
          PieceLogits<DType::f16, kPacked>(d, head_dim, n_group, scale, pc, ps, pf_v, lg + r0);
          break;
        case DType::q8:
          PieceLogits<DType::q8, kPacked>(d, head_dim, n_group, scale, pc, ps, pf_v, lg + r0);
          break;
        case DType::q4:
          PieceLogitsQ4(dq, head_dim, n_group, scale, pc, ps, pf_v, lg + r0);
          break;
      }
      r0 += pc.n;
    }
    if (mass != nullptr) {
      for (std::size_t g = 0; g < n_group; ++g) {
        std::memcpy(mass + g * mass_stride + done, lg + g * kChunkRows, n_rows * sizeof(float));
      }
    }
    SoftmaxStep(df, n_rows, n_group, state_stride, lg, pb, m, s, acc);

    PrefetchCursor pf_k{next->pieces, next->n_pieces, false};
    r0 = 0;
    for (std::size_t ip = 0; ip < cur->n_pieces; ++ip) {
      const Piece& pc = cur->pieces[ip];
      switch (pc.dtype) {
        case DType::f32:
          PieceValues<DType::f32, kPacked>(d, head_dim, n_group, pc, ps, pf_k, pb + r0, acc, state_stride);
          break;
        case DType::f16:
          PieceValues<DType::f16, kPacked>(d, head_dim, n_group, pc, ps, pf_k, pb + r0, acc, state_stride);
          break;
        case DType::q8:
          PieceValues<DType::q8, kPacked>(d, head_dim, n_group, pc, ps, pf_k, pb + r0, acc, state_stride);
          break;
        case DType::q4:
          PieceValuesQ4(dq, head_dim, n_group, pc, pf_k, pb + r0, acc, state_stride);
          break;
      }
      r0 += pc.n;
    }
    done += n_rows;
    std::swap(cur, next);
  }
  assert(done > 0 && "attend_group needs at least one row");

  for (std::size_t g = 0; g < n_group; ++g) {
    float* HWY_RESTRICT a = acc + g * state_stride;
    if constexpr (kPacked != 0) {
      // Fold the NF / kPacked row slots of the packed accumulator into the plain one.
      for (std::size_t slot = 0; slot < NF / kPacked; ++slot) {
        for (std::size_t i = 0; i < kPacked; ++i) a[i] += a[head_dim + slot * kPacked + i];
      }
    }
    // s >= 1: the row holding the maximum contributes exp(0).
    std::memcpy(out + g * head_dim, a, head_dim * sizeof(float));
    ScaleRow(d, 1.f / s[g], out + g * head_dim, head_dim);
    if (mass != nullptr) NormaliseMass(df, m[g], s[g], mass + g * mass_stride, done);
  }
}

// Picks the widest row tag not wider than head_dim, so small heads still run whole vectors
// instead of a one-lane tail, the packed path for head_dim 1, 2, 4, 8 below the full width, and
// for q4 rows a tag not wider than head_dim / 2.
void AttendGroup(std::uint32_t head_dim, std::uint32_t n_group, float scale, const HeadBlock* blocks,
                 std::size_t n_blocks, float* out, float* mass, std::size_t mass_stride) {
  const hn::ScalableTag<float> d;
  const hn::CappedTag<float, 8> d8;
  const hn::CappedTag<float, 4> d4;
  const hn::CappedTag<float, 2> d2;
  const hn::CappedTag<float, 1> d1;
  const std::size_t N = hn::Lanes(d);
  const std::size_t half = head_dim / 2;
  if (head_dim >= 2 * N) {
    AttendRows<0>(d, d, head_dim, n_group, scale, blocks, n_blocks, out, mass, mass_stride);
  } else if (head_dim >= N && half >= hn::Lanes(d8)) {
    AttendRows<0>(d, d8, head_dim, n_group, scale, blocks, n_blocks, out, mass, mass_stride);
  } else if (head_dim >= N && half >= hn::Lanes(d4)) {
    AttendRows<0>(d, d4, head_dim, n_group, scale, blocks, n_blocks, out, mass, mass_stride);
  } else if (head_dim >= N && half >= hn::Lanes(d2)) {
    AttendRows<0>(d, d2, head_dim, n_group, scale, blocks, n_blocks, out, mass, mass_stride);
  } else if (head_dim >= N) {
    AttendRows<0>(d, d1, head_dim, n_group, scale, blocks, n_blocks, out, mass, mass_stride);
  } else if (head_dim == 8) {
    AttendRows<8>(d8, d4, head_dim, n_group, scale, blocks, n_blocks, out, mass, mass_stride);
  } else if (head_dim == 4) {
    AttendRows<4>(d4, d2, head_dim, n_group, scale, blocks, n_blocks, out, mass, mass_stride);
  } else if (head_dim == 2) {
    AttendRows<2>(d2, d1, head_dim, n_group, scale, blocks, n_blocks, out, mass, mass_stride);
  } else if (head_dim == 1) {
    AttendRows<1>(d1, d1, head_dim, n_group, scale, blocks, n_blocks, out, mass, mass_stride);
  } else if (head_dim >= hn::Lanes(d8)) {
    AttendRows<0>(d8, d4, head_dim, n_group, scale, blocks, n_blocks, out, mass, mass_stride);
  } else if (head_dim >= hn::Lanes(d4)) {
    AttendRows<0>(d4, d2, head_dim, n_group, scale, blocks, n_blocks, out, mass, mass_stride);
  } else {
    AttendRows<0>(d1, d1, head_dim, n_group, scale, blocks, n_blocks, out, mass, mass_stride);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace kvcache::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvcache::kernels {

HWY_EXPORT(AttendGroup);

void attend_group(std::uint32_t head_dim, std::uint32_t n_group, float scale,
                  std::span<const HeadBlock> blocks, float* out, float* mass, std::size_t mass_stride) {
  assert(head_dim > 0 && n_group > 0);
  HWY_DYNAMIC_DISPATCH(AttendGroup)
  (head_dim, n_group, scale, blocks.data(), blocks.size(), out, mass, mass_stride);
}

}  // namespace kvcache::kernels
#endif  // HWY_ONCE
