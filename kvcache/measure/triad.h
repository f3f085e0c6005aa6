// STREAM-style triad bandwidth: the yardstick benchmarks and `kvstream bench` report memory
// bandwidth against. Internal to the repository (not installed): bench/triad.h and the Llama
// runtime's decode benchmark include it as "kvcache/measure/triad.h".
#pragma once

#include <cstddef>

namespace kvcache::measure {

/// Bytes per second of a[i] = b[i] + 3 * c[i] over three f32 arrays totalling `bytes` (at least
/// 12 KiB are used), split statically over `threads` workers of their own oneTBB task_arena,
/// counted as STREAM counts (2 reads + 1 write per element, no write-allocate), best of several
/// repetitions (STREAM's rule; enough for about 4 GiB of traffic, at least 3, at most 200).
///
/// Memory: allocates `bytes` (64-byte aligned) for the duration of the call and frees it.
/// Caching: the result is remembered per (bytes, threads), so benchmarks of the same size share
/// one measurement. Thread safety: safe to call from several threads (the cache is locked; two
/// first calls for the same key may both measure, and the first stored value wins).
/// Errors: InvalidArgument for threads < 1; std::bad_alloc when the arrays do not fit.
double triad_bandwidth(std::size_t bytes, int threads);

}  // namespace kvcache::measure
