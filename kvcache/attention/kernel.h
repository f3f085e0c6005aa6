// Internal: the per-KV-head attention kernel that StreamCache attention is built from.
// One scalar twin (kernel_scalar.cc) and one Highway version (kernel_hwy.cc) with equal contracts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "kvcache/dtype.h"

namespace kvcache::kernels {

/// A run of `n` consecutive cached rows of one KV head in one page, and the query rotated for
/// them. Rows are stored as `dtype` (formats: kvcache/quant.h, page layout: page_layout.h).
struct HeadBlock {
  DType dtype = DType::f32;
  const std::byte* k = nullptr;  ///< n rows of codes (PageLayout::row_bytes() each), contiguous
  const std::byte* v = nullptr;  ///< n rows of codes, contiguous
  /// q8: the f16 scales of the n key rows; q4: the page's f16 channel scales [head_dim] then
  /// zero points [head_dim] for this head. Null for f32 / f16.
  const std::byte* k_params = nullptr;
  /// q8: the f16 scales of the n value rows; q4: (f16 scale, f16 zero) of each of the n rows.
  const std::byte* v_params = nullptr;
  std::uint32_t n = 0;
  const float* q = nullptr;  ///< n_group x head_dim f32: the group's queries rotated for this block
};

/// Bytes a kernel reads for one row of K and V of `dtype` (codes and their parameters; q4 key
/// parameters are per page and not counted): the "bytes actually read" of bandwidth figures.
std::size_t kv_row_bytes(DType dtype, std::uint32_t head_dim);

/// Softmax attention of the `n_group` query heads that share one KV head over `blocks` in order.
/// out: n_group x head_dim. mass: null, or n_group rows of `mass_stride` floats receiving the
/// probability of each row of the blocks (concatenated in block order).
/// Preconditions (asserted): head_dim > 0, n_group > 0, at least one row in total.
/// Blocks may mix dtypes (a pinned region stored at another precision than the window). The scalar
/// twin dequantises every row with kvcache/quant.h and computes in double.
void attend_group_scalar(std::uint32_t head_dim, std::uint32_t n_group, float scale,
                         std::span<const HeadBlock> blocks, float* out, float* mass, std::size_t mass_stride);

/// The Highway version of attend_group_scalar (kernel_hwy.cc): the same contract, dispatched at
/// run time to the best target the CPU supports. One pass over K and V with an online softmax
/// (running max, sum and accumulator per query), so rows are read from memory once each and every
/// K/V row is shared by the n_group queries. With `mass`, raw logits are parked there during the
/// pass and normalised at the end (no second pass over K/V).
/// Accuracy: f32 arithmetic throughout; agrees with the double-precision scalar twin to about
/// 1e-6 relative on typical inputs (see tests/attention_kernel_test.cc for the stated bound).
/// Quantised rows are dequantised in registers (no copy of the page): q8 and q4 values fold the
/// row scale into the probability, q4 keys fold the channel scales into the query and add the
/// zero points' dot product as a per-block bias.
void attend_group(std::uint32_t head_dim, std::uint32_t n_group, float scale,
                  std::span<const HeadBlock> blocks, float* out, float* mass, std::size_t mass_stride);

}  // namespace kvcache::kernels
