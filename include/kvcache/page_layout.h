// What one page holds: page_tokens tokens of K and V of one layer, all KV heads.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kvcache/dtype.h"

namespace kvcache {

/// Head-major layout: [K head 0: page_tokens rows][K head 1]...[V head 0]...[V head n-1], so one
/// head's keys (and values) for the page are contiguous rows of row_bytes() bytes; quantised
/// pages then append their f16 parameters (kvcache/quant.h), 4-byte aligned:
///   q8: [K scales: head-major, one per row][V scales: likewise]
///   q4: [K: per head, head_dim scales then head_dim zero points (per channel, for the page)]
///       [V: per head, per row, (scale, zero point)]
/// Exact bytes per page (P tokens, H heads, D dims): f32 8PHD; f16 4PHD; q8 2PHD + 4PH;
/// q4 PHD (rounded up to 4) + 4HD + 4PH. A value type; validate() tells whether it is usable.
struct PageLayout {
  std::uint32_t page_tokens = 16;  ///< tokens per page
  std::uint32_t n_kv_heads = 0;    ///< KV heads per layer
  std::uint32_t head_dim = 0;      ///< elements per head row
  DType dtype = DType::f32;        ///< storage type of K and V

  /// Bytes of one head row's codes (q4: two codes per byte).
  constexpr std::size_t row_bytes() const { return std::size_t{head_dim} * dtype_bits(dtype) / 8; }
  /// Bytes of the codes of K (or of V) for all heads in one page.
  constexpr std::size_t half_bytes() const { return std::size_t{page_tokens} * n_kv_heads * row_bytes(); }
  /// Byte offset of the parameter area (== page_bytes() for f32 and f16).
  constexpr std::size_t params_offset() const { return (2 * half_bytes() + 3) / 4 * 4; }
  /// Bytes of K parameters of one head: q8 a scale per row, q4 a scale and a zero per channel.
  constexpr std::size_t k_params_bytes() const {
    return dtype == DType::q8   ? std::size_t{page_tokens} * 2
           : dtype == DType::q4 ? std::size_t{head_dim} * 4
                                : 0;
  }
  /// Bytes of V parameters of one head: q8 a scale per row, q4 a scale and a zero per row.
  constexpr std::size_t v_params_bytes() const {
    return dtype == DType::q8   ? std::size_t{page_tokens} * 2
           : dtype == DType::q4 ? std::size_t{page_tokens} * 4
                                : 0;
  }
  /// Bytes one page needs.
  constexpr std::size_t page_bytes() const {
    return is_quantized(dtype) ? params_offset() + n_kv_heads * (k_params_bytes() + v_params_bytes())
                               : 2 * half_bytes();
  }
  /// Byte offset of key row `slot` of `kv_head`.
  constexpr std::size_t k_offset(std::uint32_t kv_head, std::uint32_t slot) const {
    return (std::size_t{kv_head} * page_tokens + slot) * row_bytes();
  }
  /// Byte offset of value row `slot` of `kv_head`.
  constexpr std::size_t v_offset(std::uint32_t kv_head, std::uint32_t slot) const {
    return half_bytes() + k_offset(kv_head, slot);
  }
  /// Byte offset of `kv_head`'s K parameters (q8: the scale of row 0, rows follow; q4: the
  /// head_dim channel scales, then the head_dim zero points). Quantised dtypes only.
  constexpr std::size_t k_params_offset(std::uint32_t kv_head) const {
    return params_offset() + std::size_t{kv_head} * k_params_bytes();
  }
  /// Byte offset of the V parameters of row `slot` of `kv_head` (q8: scale; q4: scale, zero).
  constexpr std::size_t v_params_offset(std::uint32_t kv_head, std::uint32_t slot) const {
    return params_offset() + std::size_t{n_kv_heads} * k_params_bytes() +
           std::size_t{kv_head} * v_params_bytes() + std::size_t{slot} * (dtype == DType::q8 ? 2 : 4);
  }
  /// Throws InvalidArgument naming the first bad field (zero sizes, an unknown dtype, q4 with an
  /// odd head_dim, overflow past 2^31 bytes).
  void validate() const;

  friend constexpr bool operator==(const PageLayout&, const PageLayout&) = default;
};

/// The largest page_tokens (<= 65536) for which `shape` (its other fields) fits in `bytes`;
/// 0 if not even one token does. Used to give a region of one dtype pages of the pool's size.
std::uint32_t max_page_tokens(PageLayout shape, std::size_t bytes);

}  // namespace kvcache
