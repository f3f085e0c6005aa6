// Decode attention over a StreamCache.
#pragma once

#include <cstdint>
#include <span>

#include "kvcache/dtype.h"
#include "kvcache/stream_cache.h"

namespace kvcache {

struct AttendOptions {
  std::uint32_t n_heads = 0;  ///< query heads; a multiple of the cache's n_kv_heads (GQA)
  float scale = 0.f;          ///< logit scale; 0 means 1/sqrt(head_dim)
  /// Cache index of the query token: it attends to cache indices [0, query_index]. -1 = newest.
  std::int64_t query_index = -1;
};

/// Attention output for one query token of `layer`.
/// q: n_heads x head_dim, before RoPE (rotated here to the query's cache position).
/// out: n_heads x head_dim. mass (optional, empty to skip): n_heads x n_kept probabilities each
/// query head gave each kept token (zero past query_index).
/// Throws InvalidArgument for wrong sizes, a layer not yet appended, or bad options.
/// attend_reference is the scalar twin: plain loops, two-pass softmax, used as the oracle.
void attend_reference(const StreamCache& cache, std::uint32_t layer, std::span<const float> q,
                      std::span<float> out, std::span<float> mass, const AttendOptions& options);

/// The same contract as attend_reference, computed with the Highway kernel (the best SIMD target
/// of this CPU, chosen at run time): one pass over K and V with an online softmax, each K/V row
/// read once for all query heads of its group, attention mass fused into the pass. KV heads run
/// in parallel on oneTBB when the layer's K/V is large enough to pay for it. Results agree with
/// attend_reference to about 1e-6 (f32 arithmetic against double).
void attend(const StreamCache& cache, std::uint32_t layer, std::span<const float> q, std::span<float> out,
            std::span<float> mass, const AttendOptions& options);

}  // namespace kvcache
