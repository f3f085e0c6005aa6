// Internal: turns a StreamCache layer into per-KV-head HeadBlocks and runs a kernel over them.
// attend_reference and the SIMD attend differ only in the kernel they pass.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "kvcache/attention.h"
#include "kvcache/attention/kernel.h"

namespace kvcache::detail {

using GroupKernel = void (*)(std::uint32_t head_dim, std::uint32_t n_group, float scale,
                             std::span<const kernels::HeadBlock>, float* out, float* mass,
                             std::size_t mass_stride);

/// Everything a kernel call per KV head needs, built once per query.
struct AttentionWork {
  std::uint32_t n_kv_heads = 0, n_group = 0, head_dim = 0, n_rows = 0;
  float scale = 0.f;
  std::size_t row_bytes = 0;               // K and V bytes read per row of the window's dtype
  std::vector<float> q_rotated;            // one n_heads x head_dim copy per distinct rot_delta
  std::vector<kernels::HeadBlock> blocks;  // n_kv_heads x blocks_per_head
  std::size_t blocks_per_head = 0;
  // Scratch kept here so a reused AttentionWork allocates nothing per call.
  std::vector<KvSpan> spans;
  std::vector<std::int64_t> deltas;  // distinct rot_delta values
  std::vector<std::size_t> span_q;   // per span: index into deltas
  RopeAngles rope;                   // rebuilt only when the cache's RoPE config changes
};

/// Validates the arguments (throws InvalidArgument) and fills `work`.
void prepare_attention(const StreamCache& cache, std::uint32_t layer, std::span<const float> q,
                       std::span<float> out, std::span<float> mass, const AttendOptions& options,
                       AttentionWork& work);

/// Runs `kernel` for KV heads [h0, h1) of prepared work.
void run_heads(const AttentionWork& work, GroupKernel kernel, std::uint32_t h0, std::uint32_t h1,
               std::span<float> out, std::span<float> mass, std::size_t mass_stride);

}  // namespace kvcache::detail
