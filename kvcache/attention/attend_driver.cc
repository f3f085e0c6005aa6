#include "kvcache/attention/attend_driver.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "kvcache/error.h"

namespace kvcache::detail {

void prepare_attention(const StreamCache& cache, std::uint32_t layer, std::span<const float> q,
                       std::span<float> out, std::span<float> mass, const AttendOptions& options,
                       AttentionWork& work) {
  const StreamConfig& cfg = cache.config();
  if (layer >= cfg.n_layers)
    throw InvalidArgument("attend: layer " + std::to_string(layer) + " out of range");
  if (options.n_heads == 0 || options.n_heads % cfg.n_kv_heads != 0) {
    throw InvalidArgument("attend: n_heads (" + std::to_string(options.n_heads) +
                          ") must be a positive multiple of n_kv_heads (" + std::to_string(cfg.n_kv_heads) +
                          ")");
  }
  const std::size_t q_size = std::size_t{options.n_heads} * cfg.head_dim;
  if (q.size() != q_size || out.size() != q_size) {
    throw InvalidArgument("attend: q and out must hold n_heads x head_dim = " + std::to_string(q_size) +
                          " floats (got " + std::to_string(q.size()) + " and " + std::to_string(out.size()) +
                          ")");
  }
  const std::uint32_t n_kept = cache.n_kept();
  if (n_kept == 0) throw InvalidArgument("attend: the cache holds no tokens");
  if (!cache.layer_ready(layer)) {
    throw InvalidArgument("attend: layer " + std::to_string(layer) + " has pending tokens not yet appended");
  }
  if (!mass.empty() && mass.size() != std::size_t{options.n_heads} * n_kept) {
    throw InvalidArgument("attend: mass must be empty or hold n_heads x n_kept = " +
                          std::to_string(std::size_t{options.n_heads} * n_kept) + " floats");
  }
  if (options.query_index < -1 || options.query_index >= std::int64_t{n_kept}) {
    throw InvalidArgument("attend: query_index " + std::to_string(options.query_index) + " out of range");
  }
  if (!std::isfinite(options.scale) || options.scale < 0.f)
    throw InvalidArgument("attend: scale must be >= 0");
  const auto query_index =
      static_cast<std::uint32_t>(options.query_index < 0 ? n_kept - 1 : options.query_index);

  work.n_kv_heads = cfg.n_kv_heads;
  work.n_group = options.n_heads / cfg.n_kv_heads;
  work.head_dim = cfg.head_dim;
  work.n_rows = query_index + 1;
  work.row_bytes = kernels::kv_row_bytes(cfg.dtype, cfg.head_dim);
  work.scale = options.scale > 0.f ? options.scale : 1.f / std::sqrt(static_cast<float>(cfg.head_dim));

  std::vector<KvSpan>& spans = work.spans;
  cache.layer_spans(layer, spans);
  // Rotate the query once per distinct rot_delta (at most a few: pinned and window).
  const std::int64_t query_pos = cache.cache_position(query_index);
  std::vector<std::int64_t>& deltas = work.deltas;
  std::vector<std::size_t>& span_q = work.span_q;
  deltas.clear();
  span_q.clear();
  for (const KvSpan& sp : spans) {
    if (sp.kept_begin >= work.n_rows) break;
    auto it = std::find(deltas.begin(), deltas.end(), sp.rot_delta);
    if (it == deltas.end()) it = deltas.insert(deltas.end(), sp.rot_delta);
    span_q.push_back(static_cast<std::size_t>(it - deltas.begin()));
  }
  if (work.rope.head_dim() != cfg.head_dim || work.rope.config() != cfg.rope) {
    work.rope = RopeAngles(cfg.rope, cfg.head_dim);
  }
  work.q_rotated.resize(deltas.size() * q_size);
  for (std::size_t d = 0; d < deltas.size(); ++d) {
    std::span<float> qr(work.q_rotated.data() + d * q_size, q_size);
    std::copy(q.begin(), q.end(), qr.begin());
    work.rope.set_position(static_cast<double>(query_pos - deltas[d]));
    work.rope.rotate(qr);
  }

  work.blocks_per_head = span_q.size();
  work.blocks.resize(std::size_t{cfg.n_kv_heads} * work.blocks_per_head);
  for (std::uint32_t h = 0; h < cfg.n_kv_heads; ++h) {
    for (std::size_t b = 0; b < span_q.size(); ++b) {
      const KvSpan& sp = spans[b];
      kernels::HeadBlock& blk = work.blocks[h * work.blocks_per_head + b];
      const PageLayout& lay = sp.layout;
      blk.dtype = lay.dtype;
      blk.k = sp.page + lay.k_offset(h, sp.slot_begin);
      blk.v = sp.page + lay.v_offset(h, sp.slot_begin);
      blk.k_params = nullptr;
      blk.v_params = nullptr;
      if (lay.dtype == DType::q8)
        blk.k_params = sp.page + lay.k_params_offset(h) + std::size_t{sp.slot_begin} * 2;
      if (lay.dtype == DType::q4) blk.k_params = sp.page + lay.k_params_offset(h);
      if (is_quantized(lay.dtype)) blk.v_params = sp.page + lay.v_params_offset(h, sp.slot_begin);
      blk.n = std::min(sp.n, work.n_rows - sp.kept_begin);
      blk.q = work.q_rotated.data() + span_q[b] * q_size + std::size_t{h} * work.n_group * cfg.head_dim;
    }
  }
}

void run_heads(const AttentionWork& work, GroupKernel kernel, std::uint32_t h0, std::uint32_t h1,
               std::span<float> out, std::span<float> mass, std::size_t mass_stride) {
  for (std::uint32_t h = h0; h < h1; ++h) {
    const std::span<const kernels::HeadBlock> blocks(work.blocks.data() + h * work.blocks_per_head,
                                                     work.blocks_per_head);
    const std::size_t first_head = std::size_t{h} * work.n_group;
    float* m = mass.empty() ? nullptr : mass.data() + first_head * mass_stride;
    kernel(work.head_dim, work.n_group, work.scale, blocks, out.data() + first_head * work.head_dim, m,
           mass_stride);
  }
}

}  // namespace kvcache::detail
