// The single point where the runtime calls the cache's attention kernel.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "kvcache/attention.h"
#include "kvcache/stream_cache.h"

namespace kvcache::llama {

/// Which kvcache attention implementation the runtime calls.
enum class AttentionKernel : std::uint8_t {
  simd,       ///< kvcache::attend: Highway, online softmax, f32 (the default)
  reference,  ///< kvcache::attend_reference: scalar, double accumulation (the oracle; slow)
};

std::string_view attention_kernel_name(AttentionKernel kernel);
/// Parses "simd" / "reference"; throws kvcache::InvalidArgument otherwise.
AttentionKernel parse_attention_kernel(std::string_view name);

/// Attention of one query token of `layer` over `cache`, with the contract of
/// kvcache::attend_reference (q before RoPE: n_heads x head_dim; out: n_heads x head_dim; mass
/// empty, or n_heads x n_kept probabilities to fill). Every attention call of the runtime goes through here,
/// so swapping kernels is a one-line change.
void layer_attention(AttentionKernel kernel, const StreamCache& cache, std::uint32_t layer,
                     std::span<const float> q, std::span<float> out, std::span<float> mass,
                     const AttendOptions& options);

}  // namespace kvcache::llama
