#include "kvcache/measure/triad.h"

#include <hwy/aligned_allocator.h>
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/partitioner.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "kvcache/error.h"

namespace kvcache::measure {
namespace {

// Keeps a value alive without Google Benchmark (its DoNotOptimize, for GCC and Clang): the
// compiler must assume the empty asm reads it, so the timed loops cannot be dropped as dead code.
void keep(float v) { asm volatile("" : : "r,m"(v) : "memory"); }

double measure(std::size_t bytes, int threads) {
  using Clock = std::chrono::steady_clock;
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
  // A static partition: each worker always touches the same part, so the first touch below puts
  // its pages where the timed loop reads them.
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
  for_each_part([&](std::size_t lo, std::size_t hi) {
    for (std::size_t i = lo; i < hi; ++i) {
      pa[i] = 0.f;
      pb[i] = static_cast<float>(i % 1000) * 1e-3f;
      pc[i] = static_cast<float>(i % 777) * 1e-3f;
    }
  });
  const int reps =
      static_cast<int>(std::clamp<std::size_t>((std::size_t{4} << 30) / (3 * n * sizeof(float)), 3, 200));
  double best = 1e30;
  for (int rep = 0; rep < reps; ++rep) {
    const auto t0 = Clock::now();
    for_each_part([&](std::size_t lo, std::size_t hi) {
      for (std::size_t i = lo; i < hi; ++i) pa[i] = pb[i] + 3.f * pc[i];
    });
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
    keep(pa[static_cast<std::size_t>(rep) % n]);
  }
  return 3.0 * static_cast<double>(n * sizeof(float)) / best;
}

}  // namespace

double triad_bandwidth(std::size_t bytes, int threads) {
  if (threads < 1)
    throw InvalidArgument("triad_bandwidth: threads must be at least 1, got " + std::to_string(threads));
  static std::mutex mutex;
  static std::map<std::pair<std::size_t, int>, double> cache;
  const auto key = std::make_pair(bytes, threads);
  {
    std::lock_guard lock(mutex);
    if (auto it = cache.find(key); it != cache.end()) return it->second;
  }
  const double bw = measure(bytes, threads);  // unlocked: a measurement takes a second or more
  std::lock_guard lock(mutex);
  return cache.emplace(key, bw).first->second;
}

}  // namespace kvcache::measure
