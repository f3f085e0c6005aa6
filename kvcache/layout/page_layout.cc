#include "kvcache/page_layout.h"

#include <string>

#include "kvcache/error.h"

namespace kvcache {

void PageLayout::validate() const {
  if (page_tokens == 0) throw InvalidArgument("page layout: page_tokens must be > 0");
  if (n_kv_heads == 0) throw InvalidArgument("page layout: n_kv_heads must be > 0");
  if (head_dim == 0) throw InvalidArgument("page layout: head_dim must be > 0");
  // Bound each factor before multiplying so the product cannot overflow size_t.
  constexpr std::size_t kMaxPageBytes = std::size_t{1} << 31;
  if (page_tokens > (1u << 16) || n_kv_heads > (1u << 16) || head_dim > (1u << 16) ||
      page_bytes() > kMaxPageBytes) {
    throw InvalidArgument("page layout: " + std::to_string(page_tokens) + " tokens x " +
                          std::to_string(n_kv_heads) + " heads x " + std::to_string(head_dim) +
                          " dims exceeds the 2 GiB page limit");
  }
}

}  // namespace kvcache
