// Per-token cost of cache maintenance (begin: policy + eviction/pinning; append: RoPE, store) and
// of the sink detector, next to the attention it serves, for one decode step over all layers.
// Each benchmark reports ns per token; `attention_share` compares maintenance to attention
// measured in the same process on the same stream shape.
#include <benchmark/benchmark.h>

#include <memory>
#include <vector>

#include "kvcache/attention.h"
#include "kvcache/sink_detector.h"
#include "kvcache/stream_cache.h"

namespace {

constexpr std::uint32_t kLayers = 5, kKvHeads = 4, kHeads = 8, kDim = 8;  // stories260K

struct Setup {
  kvcache::SinkDetector detector{kLayers, kHeads};
  std::shared_ptr<kvcache::PagePool> pool;
  std::unique_ptr<kvcache::StreamCache> cache;
  std::vector<float> k = std::vector<float>(kKvHeads * kDim, 0.25f), v = k;
  std::vector<float> q = std::vector<float>(kHeads * kDim, 0.5f), out = q, mass;

  Setup(kvcache::PolicyKind kind, std::uint32_t budget) {
    kvcache::StreamConfig c;
    c.n_layers = kLayers;
    c.n_kv_heads = kKvHeads;
    c.head_dim = kDim;
    c.page_tokens = 16;
    c.policy = kind == kvcache::PolicyKind::hidden_sinks ? kvcache::PolicyConfig::hidden(4, 8, budget)
                                                         : kvcache::PolicyConfig::streaming(4, budget);
    c.token_state_floats = detector.state_floats();
    const std::size_t page = c.layout().page_bytes();
    pool = std::make_shared<kvcache::PagePool>(
        kvcache::PagePoolOptions{page, page * kLayers * (budget / 8 + 8)});
    cache = std::make_unique<kvcache::StreamCache>(pool, c);
    for (std::uint32_t t = 0; t < budget + 100; ++t) admit();
    mass.resize(std::size_t{kHeads} * cache->n_kept());
  }
  void admit() {
    const std::int32_t id = 5;
    cache->begin({&id, 1});
    for (std::uint32_t il = 0; il < kLayers; ++il) cache->append(il, k, v);
  }
};

// begin + append in every layer: policy decisions, eviction, RoPE of the new key, stores.
void BM_Maintenance(benchmark::State& state) {
  Setup s(static_cast<kvcache::PolicyKind>(state.range(1)), static_cast<std::uint32_t>(state.range(0)));
  for (auto _ : state) s.admit();
  state.SetItemsProcessed(state.iterations());
}

// The detector's observe() for every layer (mass from a previous attend()).
void BM_Detector(benchmark::State& state) {
  Setup s(kvcache::PolicyKind::hidden_sinks, static_cast<std::uint32_t>(state.range(0)));
  for (std::uint32_t il = 0; il < kLayers; ++il) kvcache::attend(*s.cache, il, s.q, s.out, s.mass, {kHeads});
  for (auto _ : state) {
    for (std::uint32_t il = 0; il < kLayers; ++il) s.detector.observe(*s.cache, il, s.mass);
  }
  state.SetItemsProcessed(state.iterations());
}

// SIMD attention for every layer, with or without the fused mass output.
void BM_Attention(benchmark::State& state) {
  Setup s(kvcache::PolicyKind::sinks, static_cast<std::uint32_t>(state.range(0)));
  const bool with_mass = state.range(1) != 0;
  for (auto _ : state) {
    for (std::uint32_t il = 0; il < kLayers; ++il) {
      kvcache::attend(*s.cache, il, s.q, s.out, with_mass ? std::span<float>(s.mass) : std::span<float>(),
                      {kHeads});
    }
  }
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

BENCHMARK(BM_Maintenance)
    ->ArgNames({"budget", "policy"})
    ->ArgsProduct({{256, 1024, 4096},
                   {static_cast<int>(kvcache::PolicyKind::sinks),
                    static_cast<int>(kvcache::PolicyKind::hidden_sinks)}});
BENCHMARK(BM_Detector)->ArgName("budget")->Arg(256)->Arg(1024)->Arg(4096);
BENCHMARK(BM_Attention)->ArgNames({"budget", "mass"})->ArgsProduct({{256, 1024, 4096}, {0, 1}});
BENCHMARK_MAIN();
