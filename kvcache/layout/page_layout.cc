#include "kvcache/page_layout.h"

#include <string>

#include "kvcache/error.h"

namespace kvcache {

void PageLayout::validate() const {
  if (page_tokens == 0) throw InvalidArgument("page layout: page_tokens must be > 0");
  if (n_kv_heads == 0) throw InvalidArgument("page layout: n_kv_heads must be > 0");
  if (head_dim == 0) throw InvalidArgument("page layout: head_dim must be > 0");
  if (static_cast<std::uint8_t>(dtype) > static_cast<std::uint8_t>(kLastDType))
    throw InvalidArgument("page layout: unknown dtype " + std::to_string(static_cast<unsigned>(dtype)));
  if (dtype == DType::q4 && head_dim % 2 != 0) {
    throw InvalidArgument("page layout: q4 packs two codes per byte and needs an even head_dim (got " +
                          std::to_string(head_dim) + ")");
  }
  // Bound each factor before multiplying so the product cannot overflow size_t.
  constexpr std::size_t kMaxPageBytes = std::size_t{1} << 31;
  if (page_tokens > (1u << 16) || n_kv_heads > (1u << 16) || head_dim > (1u << 16) ||
      page_bytes() > kMaxPageBytes) {
    throw InvalidArgument("page layout: " + std::to_string(page_tokens) + " tokens x " +
                          std::to_string(n_kv_heads) + " heads x " + std::to_string(head_dim) +
                          " dims exceeds the 2 GiB page limit");
  }
}

std::uint32_t max_page_tokens(PageLayout shape, std::size_t bytes) {
  // page_bytes() grows with page_tokens: binary search for the last size that fits.
  std::uint32_t lo = 0, hi = 1u << 16;
  while (lo < hi) {
    const std::uint32_t mid = lo + (hi - lo + 1) / 2;
    shape.page_tokens = mid;
    if (shape.page_bytes() <= bytes) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

}  // namespace kvcache
