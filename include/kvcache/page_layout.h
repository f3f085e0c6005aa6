// What one page holds: page_tokens tokens of K and V of one layer, all KV heads.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kvcache/dtype.h"

namespace kvcache {

/// Head-major layout: [K head 0: page_tokens rows of head_dim][K head 1]...[V head 0]...
/// so one head's keys (and values) for the page are contiguous rows of head_dim elements.
/// A value type; valid() tells whether the dimensions are usable.
struct PageLayout {
  std::uint32_t page_tokens = 16;  ///< tokens per page
  std::uint32_t n_kv_heads = 0;    ///< KV heads per layer
  std::uint32_t head_dim = 0;      ///< elements per head row
  DType dtype = DType::f32;        ///< storage type of K and V

  /// Elements of one head's rows in one page (K or V).
  constexpr std::size_t head_elems() const { return std::size_t{page_tokens} * head_dim; }
  /// Bytes of K (or of V) for all heads in one page.
  constexpr std::size_t half_bytes() const { return head_elems() * n_kv_heads * dtype_bytes(dtype); }
  /// Bytes one page needs.
  constexpr std::size_t page_bytes() const { return 2 * half_bytes(); }
  /// Byte offset of key row `slot` of `kv_head`.
  constexpr std::size_t k_offset(std::uint32_t kv_head, std::uint32_t slot) const {
    return (std::size_t{kv_head} * head_elems() + std::size_t{slot} * head_dim) * dtype_bytes(dtype);
  }
  /// Byte offset of value row `slot` of `kv_head`.
  constexpr std::size_t v_offset(std::uint32_t kv_head, std::uint32_t slot) const {
    return half_bytes() + k_offset(kv_head, slot);
  }
  /// Throws InvalidArgument naming the first bad field (zero sizes, overflow past 2^31 bytes).
  void validate() const;
};

}  // namespace kvcache
