// StreamCache::State: reading and writing one token's K/V rows in pages of any dtype, and the
// f16 key copies that keep a q4 page being filled exactly quantised (see StreamConfig).
#include <cstring>

#include "kvcache/quant.h"
#include "kvcache/rope.h"
#include "kvcache/stream/stream_state.h"

namespace kvcache {
namespace {

// Dequantises the row at `codes` of `lay`; `params` points at the row's parameters (q8 scale,
// q4 value (scale, zero)) or, for q4 keys, at the head's channel scales (zeros follow).
void dequantize_row(const PageLayout& lay, const std::byte* codes, const std::byte* params, bool q4_keys,
                    float* out) {
  const std::span<float> o(out, lay.head_dim);
  switch (lay.dtype) {
    case DType::f32:
      std::memcpy(out, codes, lay.row_bytes());
      return;
    case DType::f16:
      convert_f16_to_f32({reinterpret_cast<const std::uint16_t*>(codes), lay.head_dim}, o);
      return;
    case DType::q8: {
      std::uint16_t scale;
      std::memcpy(&scale, params, 2);
      quant::q8_dequantize(reinterpret_cast<const std::int8_t*>(codes), scale, o);
      return;
    }
    case DType::q4: {
      const auto* packed = reinterpret_cast<const std::uint8_t*>(codes);
      if (q4_keys) {
        const auto* scales = reinterpret_cast<const std::uint16_t*>(params);
        quant::q4_dequantize_channels(packed, scales, scales + lay.head_dim, o);
      } else {
        quant::Q4Params p;
        std::memcpy(&p.scale, params, 2);
        std::memcpy(&p.zero, params + 2, 2);
        quant::q4_dequantize_row(packed, p, o);
      }
      return;
    }
  }
}

// Stores a row of a per-row format (everything but q4 keys).
void store_row(const PageLayout& lay, const float* x, std::byte* codes, std::byte* params) {
  const std::span<const float> in(x, lay.head_dim);
  switch (lay.dtype) {
    case DType::f32:
      std::memcpy(codes, x, lay.row_bytes());
      return;
    case DType::f16:
      convert_f32_to_f16(in, {reinterpret_cast<std::uint16_t*>(codes), lay.head_dim});
      return;
    case DType::q8: {
      const std::uint16_t scale = quant::q8_quantize(in, reinterpret_cast<std::int8_t*>(codes));
      std::memcpy(params, &scale, 2);
      return;
    }
    case DType::q4: {
      const quant::Q4Params p = quant::q4_quantize_row(in, reinterpret_cast<std::uint8_t*>(codes));
      std::memcpy(params, &p.scale, 2);
      std::memcpy(params + 2, &p.zero, 2);
      return;
    }
  }
}

}  // namespace

void StreamCache::State::load_k(const Where& w, std::uint32_t h, float* out) const {
  const PageLayout& lay = this->lay(w.region);
  const std::byte* page = pool->data(w.page);
  const std::byte* params = nullptr;
  if (lay.dtype == DType::q8) params = page + lay.k_params_offset(h) + std::size_t{w.slot} * 2;
  if (lay.dtype == DType::q4) params = page + lay.k_params_offset(h);
  dequantize_row(lay, page + lay.k_offset(h, w.slot), params, true, out);
}

void StreamCache::State::load_v(const Where& w, std::uint32_t h, float* out) const {
  const PageLayout& lay = this->lay(w.region);
  const std::byte* page = pool->data(w.page);
  const std::byte* params = is_quantized(lay.dtype) ? page + lay.v_params_offset(h, w.slot) : nullptr;
  dequantize_row(lay, page + lay.v_offset(h, w.slot), params, false, out);
}

void StreamCache::State::source_k(std::uint32_t il, const Where& w, std::uint32_t h, float* out) const {
  const detail::KeyStage& st = stage(il, w.region);
  if (lay(w.region).dtype == DType::q4 && st.n > w.slot && st.page == w.page) {
    const std::size_t at = (std::size_t{h} * P(w.region) + w.slot) * config.head_dim;
    convert_f16_to_f32({st.rows.data() + at, config.head_dim}, {out, config.head_dim});
    return;
  }
  load_k(w, h, out);
}

void StreamCache::State::write_token(std::uint32_t il, const Where& w, const float* k, const float* v) {
  const PageLayout& lay = this->lay(w.region);
  std::byte* page = pool->data(w.page);
  const std::uint32_t D = lay.head_dim;
  for (std::uint32_t h = 0; h < lay.n_kv_heads; ++h) {
    std::byte* vparams = is_quantized(lay.dtype) ? page + lay.v_params_offset(h, w.slot) : nullptr;
    store_row(lay, v + std::size_t{h} * D, page + lay.v_offset(h, w.slot), vparams);
  }
  if (lay.dtype != DType::q4) {
    for (std::uint32_t h = 0; h < lay.n_kv_heads; ++h) {
      std::byte* kparams =
          lay.dtype == DType::q8 ? page + lay.k_params_offset(h) + std::size_t{w.slot} * 2 : nullptr;
      store_row(lay, k + std::size_t{h} * D, page + lay.k_offset(h, w.slot), kparams);
    }
    return;
  }
  // q4 keys: the staged f16 copy of rows [0, slot) is kept if it is this page's, else rebuilt
  // from the page (only after a restore or when a compaction rewrites a page from its middle).
  detail::KeyStage& st = stage(il, w.region);
  const std::uint32_t P = lay.page_tokens;
  if (st.rows.empty()) st.rows.resize(std::size_t{P} * token_floats());
  std::vector<float>& rows = q4_rows;
  rows.resize(std::size_t{P} * D);
  if (w.slot > 0 && !(st.page == w.page && st.n >= w.slot)) {
    for (std::uint32_t r = 0; r < w.slot; ++r) {
      for (std::uint32_t h = 0; h < lay.n_kv_heads; ++h) {
        load_k({w.region, w.page, r}, h, rows.data());
        convert_f32_to_f16({rows.data(), D}, {st.rows.data() + (std::size_t{h} * P + r) * D, D});
      }
    }
  }
  st.page = w.page;
  st.n = w.slot + 1;
  rows.resize(std::size_t{st.n} * D);
  for (std::uint32_t h = 0; h < lay.n_kv_heads; ++h) {
    std::uint16_t* staged = st.rows.data() + std::size_t{h} * P * D;
    convert_f32_to_f16({k + std::size_t{h} * D, D}, {staged + std::size_t{w.slot} * D, D});
    convert_f16_to_f32({staged, rows.size()}, rows);
    auto* scales = reinterpret_cast<std::uint16_t*>(page + lay.k_params_offset(h));
    quant::q4_quantize_channels(rows.data(), st.n, D, scales, scales + D,
                                reinterpret_cast<std::uint8_t*>(page + lay.k_offset(h, 0)));
  }
}

void StreamCache::State::move_token(std::uint32_t il, const Where& from, const Where& to,
                                    std::int64_t shift) {
  const std::uint32_t D = config.head_dim;
  const std::size_t n = token_floats();
  move_k.resize(n);
  move_v.resize(n);
  for (std::uint32_t h = 0; h < config.n_kv_heads; ++h) {
    source_k(il, from, h, move_k.data() + std::size_t{h} * D);
    load_v(from, h, move_v.data() + std::size_t{h} * D);
    if (shift != 0 && config.rope.style != RopeStyle::none) {
      rope_rotate(config.rope, D, static_cast<double>(shift), {move_k.data() + std::size_t{h} * D, D});
    }
  }
  write_token(il, to, move_k.data(), move_v.data());
}

void StreamCache::State::compact_pinned(std::uint32_t index) {
  // Read every token that moves before writing any: a q4 page's key parameters change as it is
  // rewritten, so a later row read after an earlier write would be decoded wrongly.
  const std::int64_t shift = reindexed() ? -1 : 0;
  const auto n_pinned = static_cast<std::uint32_t>(pinned.size());
  if (index + 1 >= n_pinned) return;
  const std::uint32_t n_move = n_pinned - index - 1;
  const std::uint32_t D = config.head_dim;
  const std::size_t tf = token_floats();
  const std::uint32_t P = this->P(Region::pinned);
  std::vector<float> k(n_move * tf), v(n_move * tf);
  for (std::uint32_t il = 0; il < layers.size(); ++il) {
    const detail::LayerPages& lp = layers[il];
    for (std::uint32_t t = 0; t < n_move; ++t) {
      const std::uint32_t i = index + 1 + t;
      const Where w{Region::pinned, lp.pinned[i / P], i % P};
      for (std::uint32_t h = 0; h < config.n_kv_heads; ++h) {
        float* kr = k.data() + t * tf + std::size_t{h} * D;
        source_k(il, w, h, kr);
        load_v(w, h, v.data() + t * tf + std::size_t{h} * D);
        if (shift != 0 && config.rope.style != RopeStyle::none) {
          rope_rotate(config.rope, D, static_cast<double>(shift), {kr, D});
        }
      }
    }
    for (std::uint32_t t = 0; t < n_move; ++t) {
      const std::uint32_t i = index + t;
      write_token(il, {Region::pinned, lp.pinned[i / P], i % P}, k.data() + t * tf, v.data() + t * tf);
    }
  }
}

std::size_t StreamCache::State::staging_bytes() const {
  std::size_t bytes = 0;
  for (const detail::KeyStage& st : stages) bytes += st.rows.size() * sizeof(std::uint16_t);
  return bytes;
}

}  // namespace kvcache
