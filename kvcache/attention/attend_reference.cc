#include <algorithm>

#include "kvcache/attention/attend_driver.h"

namespace kvcache {

void attend_reference(const StreamCache& cache, std::uint32_t layer, std::span<const float> q,
                      std::span<float> out, std::span<float> mass, const AttendOptions& options) {
  detail::AttentionWork work;
  detail::prepare_attention(cache, layer, q, out, mass, options, work);
  std::fill(mass.begin(), mass.end(), 0.f);
  detail::run_heads(work, kernels::attend_group_scalar, 0, work.n_kv_heads, out, mass, cache.n_kept());
}

}  // namespace kvcache
