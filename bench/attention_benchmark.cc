// Decode attention bandwidth: bytes of K/V read per second by the Highway kernel, and its ratio
// to a STREAM-style triad measured in this binary on a working set of the same size with the
// same number of threads.
//
// BM_Kernel bypasses StreamCache: one big buffer of pages laid out as PageLayout says (head-major,
// K then V, then a quantised dtype's parameters), one HeadBlock per page and KV head, KV heads
// spread over a task_arena of `threads` workers. BM_Attend runs the public attend() over a real
// StreamCache. Both take the dtype (0 f32, 1 f16, 2 q8, 3 q4).
//
// Counters:  KV_GBps   K/V bytes actually read per second / 1e9: codes, per-row scales and q4's
//                      per-page key parameters (each byte read once per iteration)
//            triad_GBps  STREAM triad a[i] = b[i] + s * c[i] over three arrays totalling the
//                        same bytes, counted as STREAM does (2 reads + 1 write, no write-allocate)
//            ratio     KV_GBps / triad_GBps
//            MiB       working set; compare with the L3 size printed in the context (lscpu)
#include <benchmark/benchmark.h>
#include <hwy/aligned_allocator.h>
#include <hwy/targets.h>
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/partitioner.h>
#include <oneapi/tbb/task_arena.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "bench/triad.h"
#include "kvcache/attention.h"
#include "kvcache/attention/kernel.h"
#include "kvcache/page_pool.h"
#include "kvcache/quant.h"
#include "kvcache/stream_cache.h"

namespace {

using kvcache::DType;
using Clock = std::chrono::steady_clock;

constexpr std::uint32_t kPageTokens = 16;

struct HeadConfig {
  const char* name;
  std::uint32_t n_heads, n_kv_heads, head_dim;
};
// 0: stories260K (8 query heads x 8 dims over 4 KV heads, GQA 2); 1: a 7B Llama (32 x 128, MHA);
// 2: a GQA 8B-style variant (32 query heads over 8 KV heads x 128).
constexpr HeadConfig kConfigs[] = {{"stories260K", 8, 4, 8}, {"7B", 32, 32, 128}, {"8B-GQA", 32, 8, 128}};

// Deterministic filler in [-1, 1): contents do not matter for bandwidth, only finiteness.
float fill_value(std::size_t i) {
  std::uint32_t x = static_cast<std::uint32_t>(i) * 2654435761u + 12345u;
  x ^= x >> 15;
  return static_cast<float>(x & 0xffffu) / 32768.f - 1.f;
}

using kvcache::bench::triad_bandwidth;  // bench/triad.h, shared with matmul_benchmark

void report(benchmark::State& state, std::size_t kv_bytes, double seconds, int threads) {
  const double kv_bw = static_cast<double>(kv_bytes) * static_cast<double>(state.iterations()) / seconds;
  const double triad = triad_bandwidth(kv_bytes, threads);
  state.SetBytesProcessed(static_cast<std::int64_t>(kv_bytes) * state.iterations());
  state.counters["KV_GBps"] = kv_bw / 1e9;
  state.counters["triad_GBps"] = triad / 1e9;
  state.counters["ratio"] = kv_bw / triad;
  state.counters["MiB"] = static_cast<double>(kv_bytes) / (1 << 20);
}

// Bytes a kernel reads for `ctx` tokens of one layer: every row's codes and per-row parameters,
// and q4's per-page channel parameters of every KV head.
std::size_t bytes_read(DType dtype, std::uint32_t ctx, std::uint32_t n_kv_heads, std::uint32_t head_dim,
                       std::uint32_t page_tokens) {
  const std::size_t pages = (ctx + page_tokens - 1) / page_tokens;
  return std::size_t{ctx} * n_kv_heads * kvcache::kernels::kv_row_bytes(dtype, head_dim) +
         (dtype == DType::q4 ? pages * n_kv_heads * 4 * head_dim : 0);
}

DType dtype_arg(std::int64_t a) {
  constexpr DType kDTypes[] = {DType::f32, DType::f16, DType::q8, DType::q4};
  return kDTypes[a];
}

// Args: config index, dtype (0 f32, 1 f16, 2 q8, 3 q4), context tokens, threads, page tokens.
void BM_Kernel(benchmark::State& state) {
  const HeadConfig& cfg = kConfigs[state.range(0)];
  const DType dtype = dtype_arg(state.range(1));
  const auto ctx = static_cast<std::uint32_t>(state.range(2));
  const int threads = static_cast<int>(state.range(3));
  const auto page_tokens = static_cast<std::uint32_t>(state.range(4));
  const kvcache::PageLayout layout{page_tokens, cfg.n_kv_heads, cfg.head_dim, dtype};
  const std::uint32_t n_pages = (ctx + page_tokens - 1) / page_tokens;
  const std::size_t page_bytes = layout.page_bytes();
  const std::size_t kv_bytes = bytes_read(dtype, ctx, cfg.n_kv_heads, cfg.head_dim, page_tokens);
  state.SetLabel(std::string(cfg.name) + " " + std::string(kvcache::dtype_name(dtype)));

  // Measure the triad before allocating the K/V buffer so the two never coexist (1 GiB each).
  triad_bandwidth(kv_bytes, threads);

  auto buf = hwy::AllocateAligned<std::byte>(page_bytes * n_pages);
#ifdef MADV_HUGEPAGE
  // As PagePool does for its arenas: huge pages spare a TLB miss per 4 KiB of a head's rows.
  const auto addr = reinterpret_cast<std::uintptr_t>(buf.get());
  const std::uintptr_t huge = std::uintptr_t{2} << 20, first = (addr + huge - 1) / huge * huge;
  const std::uintptr_t last = (addr + page_bytes * n_pages) / huge * huge;
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
  // Contents only need to be finite: codes from the filler, parameters small f16 values.
  const std::size_t codes_end = 2 * layout.half_bytes();
  for (std::uint32_t p = 0; p < n_pages; ++p) {
    std::byte* page = buf.get() + std::size_t{p} * page_bytes;
    if (dtype == DType::f32) {
      for (std::size_t i = 0; i < codes_end / 4; ++i) {
        const float x = fill_value(i + p);
        std::memcpy(page + 4 * i, &x, 4);
      }
    } else if (dtype == DType::f16) {
      for (std::size_t i = 0; i < codes_end / 2; ++i) {
        const std::uint16_t h = kvcache::f16_from_f32(fill_value(i + p));
        std::memcpy(page + 2 * i, &h, 2);
      }
    } else {
      for (std::size_t i = 0; i < codes_end; ++i) page[i] = static_cast<std::byte>(fill_value(i + p) * 127.f);
      const std::uint16_t param = kvcache::f16_from_f32(0.01f);
      for (std::size_t i = layout.params_offset(); i + 2 <= page_bytes; i += 2)
        std::memcpy(page + i, &param, 2);
    }
  }
  const std::uint32_t n_group = cfg.n_heads / cfg.n_kv_heads;
  std::vector<float> q(std::size_t{cfg.n_heads} * cfg.head_dim);
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = fill_value(i + 99);
  std::vector<kvcache::kernels::HeadBlock> blocks(std::size_t{cfg.n_kv_heads} * n_pages);
  const bool quantized = kvcache::is_quantized(dtype);
  for (std::uint32_t h = 0; h < cfg.n_kv_heads; ++h) {
    for (std::uint32_t p = 0; p < n_pages; ++p) {
      const std::byte* page = buf.get() + std::size_t{p} * page_bytes;
      blocks[std::size_t{h} * n_pages + p] = {dtype,
                                              page + layout.k_offset(h, 0),
                                              page + layout.v_offset(h, 0),
                                              quantized ? page + layout.k_params_offset(h) : nullptr,
                                              quantized ? page + layout.v_params_offset(h, 0) : nullptr,
                                              std::min(page_tokens, ctx - p * page_tokens),
                                              q.data() + std::size_t{h} * n_group * cfg.head_dim};
    }
  }
  std::vector<float> out(q.size());
  const float scale = 1.f / std::sqrt(static_cast<float>(cfg.head_dim));
  auto run_heads = [&](std::uint32_t h0, std::uint32_t h1) {
    for (std::uint32_t h = h0; h < h1; ++h) {
      kvcache::kernels::attend_group(cfg.head_dim, n_group, scale,
                                     {blocks.data() + std::size_t{h} * n_pages, n_pages},
                                     out.data() + std::size_t{h} * n_group * cfg.head_dim, nullptr, 0);
    }
  };
  oneapi::tbb::task_arena arena(threads);
  double seconds = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    if (threads == 1) {
      run_heads(0, cfg.n_kv_heads);
    } else {
      arena.execute([&] {
        oneapi::tbb::parallel_for(
            oneapi::tbb::blocked_range<std::uint32_t>(0, cfg.n_kv_heads, 1),
            [&](const oneapi::tbb::blocked_range<std::uint32_t>& r) { run_heads(r.begin(), r.end()); });
      });
    }
    seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  report(state, kv_bytes, seconds, threads);
}

void KernelArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"cfg", "dtype", "ctx", "threads", "page"});
  for (int cfg : {0, 1}) {
    for (int dtype : {0, 1, 2, 3}) {
      for (int ctx : {256, 1024, 4096, 16384, 32768}) {
        for (int threads : {1, 2}) b->Args({cfg, dtype, ctx, threads, 16});
      }
    }
  }
  // Quantised pages at the page size that suits heads of 128 (see README).
  for (int dtype : {0, 1, 2, 3}) {
    for (int threads : {1, 2}) b->Args({1, dtype, 32768, threads, 64});
  }
  // Larger pages give each head longer contiguous runs: the page-size trade-off for big heads.
  for (int page : {32, 64, 128}) {
    for (int ctx : {4096, 32768}) {
      for (int threads : {1, 2}) b->Args({1, 0, ctx, threads, page});
    }
  }
  for (int threads : {1, 2}) b->Args({2, 0, 32768, threads, 16});  // GQA: K/V read once for 4 queries
}
BENCHMARK(BM_Kernel)->Apply(KernelArgs)->UseRealTime()->Unit(benchmark::kMicrosecond);

// The scalar twin on the same layout, for the speed-up (one thread, 4K context).
void BM_KernelScalar(benchmark::State& state) {
  const HeadConfig& cfg = kConfigs[state.range(0)];
  const std::uint32_t ctx = 4096, n_group = cfg.n_heads / cfg.n_kv_heads;
  const std::size_t row = cfg.head_dim;
  std::vector<float> k(std::size_t{ctx} * row * cfg.n_kv_heads), v(k.size()),
      q(std::size_t{cfg.n_heads} * row), out(q.size());
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = v[i] = fill_value(i);
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = fill_value(i + 5);
  for (auto _ : state) {
    for (std::uint32_t h = 0; h < cfg.n_kv_heads; ++h) {
      const kvcache::kernels::HeadBlock blk{DType::f32,
                                            reinterpret_cast<const std::byte*>(k.data() + h * ctx * row),
                                            reinterpret_cast<const std::byte*>(v.data() + h * ctx * row),
                                            nullptr,
                                            nullptr,
                                            ctx,
                                            q.data() + h * n_group * row};
      kvcache::kernels::attend_group_scalar(cfg.head_dim, n_group, 0.1f, {&blk, 1},
                                            out.data() + h * n_group * row, nullptr, 0);
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(2 * k.size() * 4) * state.iterations());
}
BENCHMARK(BM_KernelScalar)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

// attend() over a StreamCache (one layer, full policy, RoPE on), with the mass output on, as
// the runtime and the sink detector use it. Args: config, dtype, context, threads.
void BM_Attend(benchmark::State& state) {
  const HeadConfig& cfg = kConfigs[state.range(0)];
  const DType dtype = dtype_arg(state.range(1));
  const auto ctx = static_cast<std::uint32_t>(state.range(2));
  const int threads = static_cast<int>(state.range(3));
  state.SetLabel(std::string(cfg.name) + " " + std::string(kvcache::dtype_name(dtype)) + " mass");
  kvcache::StreamConfig sc;
  sc.n_layers = 1;
  sc.n_kv_heads = cfg.n_kv_heads;
  sc.head_dim = cfg.head_dim;
  sc.page_tokens = kPageTokens;
  sc.dtype = dtype;
  sc.policy = kvcache::PolicyConfig::full();
  const std::size_t page_bytes = sc.layout().page_bytes();
  const std::size_t kv_bytes = bytes_read(dtype, ctx, cfg.n_kv_heads, cfg.head_dim, kPageTokens);
  triad_bandwidth(kv_bytes, threads);
  auto pool = std::make_shared<kvcache::PagePool>(
      kvcache::PagePoolOptions{page_bytes, (ctx / kPageTokens + 2) * page_bytes, std::size_t{16} << 20});
  kvcache::StreamCache cache(pool, sc);
  // Prefill in batches of 256 tokens (no eviction under the full policy, so exact).
  const std::uint32_t batch = 256;
  std::vector<std::int32_t> ids(batch, 1);
  std::vector<float> kv(std::size_t{batch} * cfg.n_kv_heads * cfg.head_dim);
  for (std::uint32_t t = 0; t < ctx; t += batch) {
    const std::uint32_t n = std::min(batch, ctx - t);
    for (std::size_t i = 0; i < std::size_t{n} * cfg.n_kv_heads * cfg.head_dim; ++i)
      kv[i] = fill_value(i + t);
    cache.begin({ids.data(), n});
    const std::span<const float> rows(kv.data(), std::size_t{n} * cfg.n_kv_heads * cfg.head_dim);
    cache.append(0, rows, rows);
  }
  std::vector<float> q(std::size_t{cfg.n_heads} * cfg.head_dim), out(q.size()),
      mass(std::size_t{cfg.n_heads} * cache.n_kept());
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = fill_value(i + 3);
  const kvcache::AttendOptions opt{cfg.n_heads};
  oneapi::tbb::task_arena arena(threads);
  double seconds = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    arena.execute([&] { kvcache::attend(cache, 0, q, out, mass, opt); });
    seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    benchmark::DoNotOptimize(out.data());
  }
  report(state, kv_bytes, seconds, threads);
}
BENCHMARK(BM_Attend)
    ->ArgNames({"cfg", "dtype", "ctx", "threads"})
    ->ArgsProduct({{0, 1}, {0, 1, 2, 3}, {256, 1024, 4096, 16384}, {1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  benchmark::AddCustomContext("hwy_target", hwy::TargetName(hwy::SupportedAndGeneratedTargets().front()));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
