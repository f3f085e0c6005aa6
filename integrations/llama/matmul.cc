// Matrix products with Highway (the best SIMD target of this CPU, chosen at run time), split across
// oneTBB threads only when the product is large enough to pay for it.
#include "llama/matmul.h"

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <cassert>

// Highway needs foreach_target.h before highway.h and its -inl headers: keep this order.
// clang-format off
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "llama/matmul.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
// clang-format on

HWY_BEFORE_NAMESPACE();
namespace kvcache::llama::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Rows [r0, r1) of y = W x for each of the n inputs. Four weight rows share each load of x, and
// each row keeps its own vector accumulator: 4 independent FMA chains per step.
void MatmulRows(const float* HWY_RESTRICT w, std::uint32_t rows, std::uint32_t cols,
                const float* HWY_RESTRICT x, std::uint32_t n, float* HWY_RESTRICT y, std::uint32_t r0,
                std::uint32_t r1) {
  const hn::ScalableTag<float> d;
  const std::size_t N = hn::Lanes(d);
  const std::size_t body = cols - cols % N;  // columns covered by whole vectors
  for (std::uint32_t t = 0; t < n; ++t) {
    const float* xt = x + std::size_t{t} * cols;
    float* yt = y + std::size_t{t} * rows;
    std::uint32_t r = r0;
    for (; r + 4 <= r1; r += 4) {
      const float* w0 = w + std::size_t{r} * cols;
      const float* w1 = w0 + cols;
      const float* w2 = w1 + cols;
      const float* w3 = w2 + cols;
      auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
      for (std::size_t c = 0; c < body; c += N) {
        const auto xv = hn::LoadU(d, xt + c);
        a0 = hn::MulAdd(hn::LoadU(d, w0 + c), xv, a0);
        a1 = hn::MulAdd(hn::LoadU(d, w1 + c), xv, a1);
        a2 = hn::MulAdd(hn::LoadU(d, w2 + c), xv, a2);
        a3 = hn::MulAdd(hn::LoadU(d, w3 + c), xv, a3);
      }
      float s0 = hn::GetLane(hn::SumOfLanes(d, a0)), s1 = hn::GetLane(hn::SumOfLanes(d, a1));
      float s2 = hn::GetLane(hn::SumOfLanes(d, a2)), s3 = hn::GetLane(hn::SumOfLanes(d, a3));
      for (std::size_t c = body; c < cols; ++c) {
        s0 += w0[c] * xt[c];
        s1 += w1[c] * xt[c];
        s2 += w2[c] * xt[c];
        s3 += w3[c] * xt[c];
      }
      yt[r] = s0;
      yt[r + 1] = s1;
      yt[r + 2] = s2;
      yt[r + 3] = s3;
    }
    for (; r < r1; ++r) {
      const float* wr = w + std::size_t{r} * cols;
      auto a = hn::Zero(d);
      for (std::size_t c = 0; c < body; c += N) a = hn::MulAdd(hn::LoadU(d, wr + c), hn::LoadU(d, xt + c), a);
      float s = hn::GetLane(hn::SumOfLanes(d, a));
      for (std::size_t c = body; c < cols; ++c) s += wr[c] * xt[c];
      yt[r] = s;
    }
  }
}

}  // namespace kvcache::llama::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvcache::llama {

HWY_EXPORT(MatmulRows);

float dot(std::span<const float> a, std::span<const float> b) {
  assert(a.size() == b.size());
  float y = 0.f;
  HWY_DYNAMIC_DISPATCH(MatmulRows)(a.data(), 1, static_cast<std::uint32_t>(a.size()), b.data(), 1, &y, 0, 1);
  return y;
}

void matmul(std::span<const float> w, std::uint32_t rows, std::uint32_t cols, std::span<const float> x,
            std::uint32_t n, std::span<float> y) {
  assert(w.size() == std::size_t{rows} * cols);
  assert(x.size() >= std::size_t{n} * cols && y.size() >= std::size_t{n} * rows);
  const std::uint64_t macs = std::uint64_t{rows} * cols * n;
  if (macs < kParallelMatmulMacs) {
    HWY_DYNAMIC_DISPATCH(MatmulRows)(w.data(), rows, cols, x.data(), n, y.data(), 0, rows);
    return;
  }
  // About 64K multiply-adds per task: enough to amortise stealing, small enough to balance.
  const std::uint64_t grain =
      std::max<std::uint64_t>(4, (std::uint64_t{1} << 16) / (std::uint64_t{cols} * n));
  oneapi::tbb::parallel_for(
      oneapi::tbb::blocked_range<std::uint32_t>(0, rows, static_cast<std::size_t>(grain)),
      [&](const oneapi::tbb::blocked_range<std::uint32_t>& range) {
        HWY_DYNAMIC_DISPATCH(MatmulRows)
        (w.data(), rows, cols, x.data(), n, y.data(), range.begin(), range.end());
      });
}

}  // namespace kvcache::llama
#endif  // HWY_ONCE
