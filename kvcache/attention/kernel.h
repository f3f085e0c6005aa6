// Internal: the per-KV-head attention kernel that StreamCache attention is built from.
// One scalar twin (kernel_scalar.cc) and one Highway version (kernel_hwy.cc) with equal contracts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "kvcache/dtype.h"

namespace kvcache::kernels {

/// A run of `n` consecutive cached rows of one KV head, and the query rotated for them.
struct HeadBlock {
  const std::byte* k = nullptr;  ///< n rows x head_dim elements of the dtype, contiguous
  const std::byte* v = nullptr;  ///< n rows x head_dim elements of the dtype, contiguous
  std::uint32_t n = 0;
  const float* q = nullptr;  ///< n_group x head_dim f32: the group's queries rotated for this block
};

/// Softmax attention of the `n_group` query heads that share one KV head over `blocks` in order.
/// out: n_group x head_dim. mass: null, or n_group rows of `mass_stride` floats receiving the
/// probability of each row of the blocks (concatenated in block order).
/// Preconditions (asserted): head_dim > 0, n_group > 0, at least one row in total.
void attend_group_scalar(DType dtype, std::uint32_t head_dim, std::uint32_t n_group, float scale,
                         std::span<const HeadBlock> blocks, float* out, float* mass, std::size_t mass_stride);

/// The Highway version of attend_group_scalar (kernel_hwy.cc): the same contract, dispatched at
/// run time to the best target the CPU supports. One pass over K and V with an online softmax
/// (running max, sum and accumulator per query), so rows are read from memory once each and every
/// K/V row is shared by the n_group queries. With `mass`, raw logits are parked there during the
/// pass and normalised at the end (no second pass over K/V).
/// Accuracy: f32 arithmetic throughout; agrees with the double-precision scalar twin to about
/// 1e-6 relative on typical inputs (see tests/attention_kernel_test.cc for the stated bound).
void attend_group(DType dtype, std::uint32_t head_dim, std::uint32_t n_group, float scale,
                  std::span<const HeadBlock> blocks, float* out, float* mass, std::size_t mass_stride);

}  // namespace kvcache::kernels
