// q8_0 and q4_0 row kernels for x86 CPUs with AVX512-VNNI (Highway's AVX3_DL target), included by
// weight_matmul_hwy.cc once per target; every other target compiles nothing from here. Same
// contract as the portable kernels there, and the same scalar twin (weight_matmul_scalar.cc).
//
// Why a target of its own: the portable kernels widen int8 to int16 and multiply pairs (pmaddwd),
// 32 products per instruction plus the widening, and with one f16 scale conversion and one FMA per
// block of 32 per row they run at ~22 GB/s of q8_0 per core from L2, too slow to hide the memory
// latency of a decode step (~10 GB/s per core from DRAM). vpdpbusd multiplies 64 unsigned by 64
// signed bytes and adds groups of four into int32 lanes, so one instruction covers two blocks with
// no widening, and the float work (convert, scale, FMA) is also shared by two blocks. Highway 1.0.3
// has no operation for it, hence raw intrinsics behind the target check.
//
// vpdpbusd wants one operand unsigned. The activations' block sums (xs) are known, so the weights
// are the unsigned side: q8_0 codes are offset by 128 (w ^ 0x80 = w + 128, exact for all 256
// codes) and q4_0 nibbles are unsigned already; the offsets times the activation sums are
// subtracted by starting each accumulator at -offset * xs, spread evenly over the block's lanes.
// Every integer is exact: |lane| <= 4 * 255 * 127.
//
// Highway 1.0.3 compiles AVX3_DL with "avxvnni" (the VEX form) but not "avx512vnni", although its
// run-time check for AVX3_DL requires AVX512-VNNI. The functions that issue vpdpbusd add
// avx512vnni to the target's own features, and the entry point (Dot) is not inlined into the rest
// (GCC inlines only into callers with the same features). Integer dot products in plain loops are
// avoided in this target: GCC vectorises them into the VEX vpdpbusd of "avxvnni", which CPUs with
// only AVX512-VNNI (Ice Lake) lack, and GCC 12 got their signedness wrong in a test here.

// Per-target include guard (the Highway convention for -inl.h files).
#if defined(KVCACHE_LLAMA_WEIGHT_MATMUL_VNNI_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVCACHE_LLAMA_WEIGHT_MATMUL_VNNI_INL_H_
#undef KVCACHE_LLAMA_WEIGHT_MATMUL_VNNI_INL_H_
#else
#define KVCACHE_LLAMA_WEIGHT_MATMUL_VNNI_INL_H_
#endif

#include <hwy/highway.h>

#if HWY_TARGET == HWY_AVX3_DL
#include <immintrin.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "llama/ggml_blocks.h"

HWY_BEFORE_NAMESPACE();
namespace kvcache::llama::kernels::HWY_NAMESPACE::vnni {

#define KVCACHE_VNNI_TARGET __attribute__((target(HWY_TARGET_STR ",avx512vnni")))
#define KVCACHE_VNNI_FUNCTION HWY_NOINLINE KVCACHE_VNNI_TARGET
#define KVCACHE_VNNI_INLINE HWY_INLINE KVCACHE_VNNI_TARGET

template <std::size_t R>
using RowPtrs = std::array<const std::byte*, R>;

// Lane l of a q8_0 pair holds codes 4l..4l+3 of block l / 8.
inline __m512i Q8Lanes() { return _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0); }
// A q4_0 pair is loaded as [low nibbles of b, of b + 1, high nibbles of b, of b + 1], 16 codes
// (4 lanes) each.
inline __m512i Q4Lanes() { return _mm512_set_epi32(1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0); }

// One pair of blocks (b, b + 1), or with kOne the single last block b of an odd count: then
// every load covers block b only and zero-fills the second half, whose lanes add exactly zero.
template <bool kOne>
HWY_INLINE __m128i LoadPair32(const void* p) {  // two int32 (xs) or two f32 (xd) bit patterns
  if constexpr (kOne) {
    int v;
    std::memcpy(&v, p, 4);
    return _mm_cvtsi32_si128(v);
  }
  return _mm_loadl_epi64(static_cast<const __m128i*>(p));
}

// The accumulator start: the activation block sums times -per_lane, placed by `lanes`.
template <bool kOne>
HWY_INLINE __m512i StartLanes(const std::int32_t* xs, int per_lane, __m512i lanes) {
  const __m512i sums = _mm512_permutexvar_epi32(lanes, _mm512_castsi128_si512(LoadPair32<kOne>(xs)));
  return _mm512_mullo_epi32(sums, _mm512_set1_epi32(-per_lane));
}

// The two weight blocks' f16 scales as f32 (lanes 0 and 1).
template <bool kOne>
HWY_INLINE __m128 WeightScales(const std::byte* blk0, const std::byte* blk1) {
  const std::uint32_t hi = kOne ? 0u : std::uint32_t{blocks::load_u16(blk1)} << 16;
  const std::uint32_t both = std::uint32_t{blocks::load_u16(blk0)} | hi;
  return _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(both)));
}

// Weight scales times activation scales (xd2 = LoadPair32 of xd), placed by lane.
HWY_INLINE __m512 LaneScales(__m128 dw, __m128 xd2, __m512i lanes) {
  return _mm512_permutexvar_ps(lanes, _mm512_castps128_ps512(_mm_mul_ps(dw, xd2)));
}

template <bool kOne>
HWY_INLINE __m512i LoadBytes32x2(const std::byte* p0, const std::byte* p1) {
  const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p0));
  if constexpr (kOne) return _mm512_zextsi256_si512(lo);
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo),
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p1)), 1);
}

template <bool kOne>
HWY_INLINE __m256i LoadBytes16x2(const std::byte* p0, const std::byte* p1) {
  const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p0));
  if constexpr (kOne) return _mm256_zextsi128_si256(lo);
  return _mm256_inserti128_si256(_mm256_castsi128_si256(lo),
                                 _mm_loadu_si128(reinterpret_cast<const __m128i*>(p1)), 1);
}

/// One activation row in Q8 form (quantize_activations): codes, block scales, block sums.
struct XRow {
  const std::int8_t* xq;
  const float* xd;
  const std::int32_t* xs;
};

// One pair of blocks of each row of the group against T activation rows (see the top of the file
// for the arithmetic). Each weight pair is loaded and unpacked once for the T rows; every
// (row, activation) accumulator takes exactly the operations a single-row call would, so a batch
// gives bit-identical results to one row at a time.
template <bool kQ8, std::size_t R, std::size_t T, bool kOne>
KVCACHE_VNNI_INLINE void Step(const RowPtrs<R>& w, const std::array<XRow, T>& xr, std::size_t b,
                              std::size_t ahead, std::array<std::array<__m512, R>, T>& acc) {
  constexpr std::size_t kBytes = kQ8 ? blocks::Q8_0::bytes : blocks::Q4_0::bytes;
  constexpr std::size_t kCodes = kQ8 ? blocks::Q8_0::qs : blocks::Q4_0::qs;
  constexpr std::size_t kScale = kQ8 ? blocks::Q8_0::d : blocks::Q4_0::d;
  const __m512i lanes = kQ8 ? Q8Lanes() : Q4Lanes();
  std::array<__m512i, T> x, start;
  std::array<__m128, T> xd2;
  for (std::size_t t = 0; t < T; ++t) {
    const std::int8_t* xq = xr[t].xq;
    const __m512i xb = LoadBytes32x2<kOne>(reinterpret_cast<const std::byte*>(xq + b * blocks::kQK),
                                           reinterpret_cast<const std::byte*>(xq + (b + 1) * blocks::kQK));
    // q4_0: [x_b 0..15, x_b 16..31, x_b+1 0..15, x_b+1 16..31] -> the codes' order (lanes 0, 2, 1, 3).
    x[t] = kQ8 ? xb : _mm512_shuffle_i64x2(xb, xb, _MM_SHUFFLE(3, 1, 2, 0));
    // The weights' offset (128 for q8_0 codes, 8 for q4_0 nibbles) times xs, over 8 lanes per block.
    start[t] = StartLanes<kOne>(xr[t].xs + b, kQ8 ? 16 : 1, lanes);
    xd2[t] = _mm_castsi128_ps(LoadPair32<kOne>(xr[t].xd + b));
  }
  for (std::size_t i = 0; i < R; ++i) {
    const std::byte* b0 = w[i] + b * kBytes;
    const std::byte* b1 = b0 + kBytes;
    _mm_prefetch(reinterpret_cast<const char*>(b0 + ahead), _MM_HINT_T0);  // the next group
    __m512i q;
    if constexpr (kQ8) {
      q = _mm512_xor_si512(LoadBytes32x2<kOne>(b0 + kCodes, b1 + kCodes),
                           _mm512_set1_epi8(static_cast<char>(0x80)));
    } else {
      const __m256i packed = LoadBytes16x2<kOne>(b0 + kCodes, b1 + kCodes);
      q = _mm512_and_si512(
          _mm512_inserti64x4(_mm512_castsi256_si512(packed), _mm256_srli_epi16(packed, 4), 1),
          _mm512_set1_epi8(0x0F));
    }
    const __m128 dw = WeightScales<kOne>(b0 + kScale, b1 + kScale);
    for (std::size_t t = 0; t < T; ++t) {
      const __m512i dot = _mm512_dpbusd_epi32(start[t], q, x[t]);
      acc[t][i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), LaneScales(dw, xd2[t], lanes), acc[t][i]);
    }
  }
}

// out[t][i] = row i of the group times activation row t, over nb blocks.
template <bool kQ8, std::size_t R, std::size_t T>
KVCACHE_VNNI_FUNCTION void Dot(const RowPtrs<R>& w, const std::array<XRow, T>& xr, std::size_t nb,
                               std::size_t ahead, std::array<std::array<float, R>, T>& out) {
  std::array<std::array<__m512, R>, T> acc;
  for (auto& row : acc)
    for (auto& v : row) v = _mm512_setzero_ps();
  std::size_t b = 0;
  for (; b + 2 <= nb; b += 2) Step<kQ8, R, T, false>(w, xr, b, ahead, acc);
  if (b < nb) Step<kQ8, R, T, true>(w, xr, b, ahead, acc);
  for (std::size_t t = 0; t < T; ++t)
    for (std::size_t i = 0; i < R; ++i) out[t][i] = _mm512_reduce_add_ps(acc[t][i]);
}

#undef KVCACHE_VNNI_INLINE
#undef KVCACHE_VNNI_FUNCTION
#undef KVCACHE_VNNI_TARGET

}  // namespace kvcache::llama::kernels::HWY_NAMESPACE::vnni
HWY_AFTER_NAMESPACE();

#endif  // HWY_TARGET == HWY_AVX3_DL
#endif  // per-target include guard
