// Bulk f32 <-> f16 conversion with Highway dynamic dispatch.
// Highway 1.0.3 converts natively only with F16C (AVX2/AVX-512: round to nearest even, exact
// widening). Its emulation on SSE4 and below truncates when narrowing and widens half infinity
// to 65536, so those targets use the scalar reference conversions instead.
// Tests compare every compiled target against the scalar reference bit for bit.
#include <cassert>
#include <cstddef>
#include <cstdint>

// Highway needs foreach_target.h before highway.h and its -inl headers: keep this order.
// clang-format off
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kvcache/layout/f16_convert.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kvcache/dtype.h"
// clang-format on

HWY_BEFORE_NAMESPACE();
namespace kvcache {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void ToF16(const float* HWY_RESTRICT src, std::uint16_t* HWY_RESTRICT dst, std::size_t n) {
  std::size_t i = 0;
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
  const hn::ScalableTag<float> df;
  const hn::Rebind<hwy::float16_t, decltype(df)> dh;
  const std::size_t lanes = hn::Lanes(df);
  auto* out = reinterpret_cast<hwy::float16_t*>(dst);
  for (; i + lanes <= n; i += lanes) hn::StoreU(hn::DemoteTo(dh, hn::LoadU(df, src + i)), dh, out + i);
#endif
  for (; i < n; ++i) dst[i] = f16_from_f32(src[i]);
}

void ToF32(const std::uint16_t* HWY_RESTRICT src, float* HWY_RESTRICT dst, std::size_t n) {
  std::size_t i = 0;
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
  const hn::ScalableTag<float> df;
  const hn::Rebind<hwy::float16_t, decltype(df)> dh;
  const std::size_t lanes = hn::Lanes(df);
  const auto* in = reinterpret_cast<const hwy::float16_t*>(src);
  for (; i + lanes <= n; i += lanes) hn::StoreU(hn::PromoteTo(df, hn::LoadU(dh, in + i)), df, dst + i);
#endif
  for (; i < n; ++i) dst[i] = f32_from_f16(src[i]);
}

}  // namespace HWY_NAMESPACE
}  // namespace kvcache
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvcache {
HWY_EXPORT(ToF16);
HWY_EXPORT(ToF32);

void convert_f32_to_f16(std::span<const float> src, std::span<std::uint16_t> dst) {
  assert(src.size() == dst.size());
  HWY_DYNAMIC_DISPATCH(ToF16)(src.data(), dst.data(), src.size());
}

void convert_f16_to_f32(std::span<const std::uint16_t> src, std::span<float> dst) {
  assert(src.size() == dst.size());
  HWY_DYNAMIC_DISPATCH(ToF32)(src.data(), dst.data(), src.size());
}
}  // namespace kvcache
#endif
