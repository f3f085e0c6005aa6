// STREAM-style triad bandwidth, the yardstick the benchmarks report their bandwidth against.
#pragma once

#include <benchmark/benchmark.h>
#include <hwy/aligned_allocator.h>
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/partitioner.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <map>
#include <utility>

namespace kvcache::bench {

/// Bytes per second of a[i] = b[i] + 3 * c[i] over three f32 arrays totalling `bytes`, split
/// statically over `threads` workers of their own task_arena, counted as STREAM counts (2 reads +
/// 1 write, no write-allocate), best of several repetitions (STREAM's rule). Cached per
/// (bytes, threads): benchmarks of the same size share one measurement. Not thread safe.
inline double triad_bandwidth(std::size_t bytes, int threads) {
  using Clock = std::chrono::steady_clock;
  static std::map<std::pair<std::size_t, int>, double> cache;
  const auto key = std::make_pair(bytes, threads);
  if (auto it = cache.find(key); it != cache.end()) return it->second;

  const std::size_t n = std::max<std::size_t>(bytes / (3 * sizeof(float)), 1024);
  auto a = hwy::AllocateAligned<float>(n);
  auto b = hwy::AllocateAligned<float>(n);
  auto c = hwy::AllocateAligned<float>(n);
  float* pa = a.get();
  float* pb = b.get();
  float* pc = c.get();
  oneapi::tbb::task_arena arena(threads);
  const auto nt = static_cast<std::size_t>(threads);
  const std::size_t chunk = (n + nt - 1) / nt;
  const auto for_each_part = [&](auto&& body) {
    arena.execute([&] {
      oneapi::tbb::parallel_for(
          oneapi::tbb::blocked_range<std::size_t>(0, nt, 1),
          [&](const oneapi::tbb::blocked_range<std::size_t>& r) {
            for (std::size_t t = r.begin(); t != r.end(); ++t) body(t * chunk, std::min(n, (t + 1) * chunk));
          },
          oneapi::tbb::static_partitioner());
    });
  };
  // First touch with the timed loop's partition.
  for_each_part([&](std::size_t lo, std::size_t hi) {
    for (std::size_t i = lo; i < hi; ++i) {
      pa[i] = 0.f;
      pb[i] = static_cast<float>(i % 1000) * 1e-3f;
      pc[i] = static_cast<float>(i % 777) * 1e-3f;
    }
  });
  // Enough repetitions for ~0.2 s of work, at least 3; the best time wins.
  const int reps =
      static_cast<int>(std::clamp<std::size_t>((std::size_t{4} << 30) / (3 * n * sizeof(float)), 3, 200));
  double best = 1e30;
  for (int rep = 0; rep < reps; ++rep) {
    const auto t0 = Clock::now();
    for_each_part([&](std::size_t lo, std::size_t hi) {
      for (std::size_t i = lo; i < hi; ++i) pa[i] = pb[i] + 3.f * pc[i];
    });
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
    benchmark::DoNotOptimize(pa[static_cast<std::size_t>(rep) % n]);
  }
  const double bw = 3.0 * static_cast<double>(n * sizeof(float)) / best;
  cache[key] = bw;
  return bw;
}

}  // namespace kvcache::bench
