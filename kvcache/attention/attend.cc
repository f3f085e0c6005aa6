// attend(): attend_reference's driver (attend_driver.h builds the HeadBlocks and rotated queries)
// with the Highway kernel, and KV heads spread over oneTBB workers when that pays.
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kvcache/attention.h"
#include "kvcache/attention/attend_driver.h"

namespace kvcache {
namespace {

// Below this much K/V in a layer, waking workers costs more than it saves. Measured with
// bench/attention_benchmark.cc BM_Attend on this 2-core machine (noisy, shared): stories260K
// shape at 1K tokens (256 KiB) 18.3 us on 1 thread vs 18.7 us on 2; at 4K (1 MiB) 70.7 vs
// 59.9 us; at 16K (4 MiB) 322 vs 156 us. So 2 threads pay from roughly half a MiB.
constexpr std::size_t kParallelMinBytes = std::size_t{512} << 10;
// Each task gets at least this much K/V so scheduling stays a small fraction of its time.
constexpr std::size_t kTaskMinBytes = std::size_t{64} << 10;

}  // namespace

void attend(const StreamCache& cache, std::uint32_t layer, std::span<const float> q, std::span<float> out,
            std::span<float> mass, const AttendOptions& options) {
  // Reused across calls on a thread: attention runs once per layer per token, and the work
  // description (blocks, rotated queries) has the same size from one token to the next.
  thread_local detail::AttentionWork work;
  detail::prepare_attention(cache, layer, q, out, mass, options, work);

  const std::size_t n_kept = cache.n_kept();
  if (!mass.empty() && work.n_rows < n_kept) {
    // The kernel writes rows [0, n_rows) of each head; later tokens received no attention.
    for (std::size_t hq = 0; hq < std::size_t{options.n_heads}; ++hq) {
      std::fill(mass.begin() + static_cast<std::ptrdiff_t>(hq * n_kept + work.n_rows),
                mass.begin() + static_cast<std::ptrdiff_t>((hq + 1) * n_kept), 0.f);
    }
  }

  const std::size_t head_bytes = work.n_rows * work.row_bytes;
  const std::size_t total_bytes = head_bytes * work.n_kv_heads;
  if (work.n_kv_heads == 1 || total_bytes < kParallelMinBytes) {
    detail::run_heads(work, kernels::attend_group, 0, work.n_kv_heads, out, mass, n_kept);
    return;
  }
  const std::size_t grain = std::max<std::size_t>(1, (kTaskMinBytes + head_bytes - 1) / head_bytes);
  const detail::AttentionWork& w = work;
  // Isolated: while waiting, this thread must not pick up an unrelated task that calls attend()
  // (another stream) and overwrite the thread_local `work` the loop is still reading.
  oneapi::tbb::this_task_arena::isolate([&] {
    oneapi::tbb::parallel_for(
        oneapi::tbb::blocked_range<std::uint32_t>(0, w.n_kv_heads, static_cast<std::uint32_t>(grain)),
        [&w, out, mass, n_kept](const oneapi::tbb::blocked_range<std::uint32_t>& r) {
          detail::run_heads(w, kernels::attend_group, r.begin(), r.end(), out, mass, n_kept);
        });
  });
}

}  // namespace kvcache
