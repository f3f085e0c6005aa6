// StreamCache maintenance throughput: begin + append in every layer + eviction, per token, at
// steady state (the window full). No attention: that is measured in attention_benchmark.
#include <benchmark/benchmark.h>

#include <memory>
#include <vector>

#include "kvcache/stream_cache.h"

namespace {

// stories260K: 5 layers, 4 KV heads of 8; a 7B-like layer set: 32 layers, 32 KV heads of 128.
kvcache::StreamConfig config(benchmark::State& state) {
  kvcache::StreamConfig c;
  const bool big = state.range(0) == 1;
  c.n_layers = big ? 32 : 5;
  c.n_kv_heads = big ? 32 : 4;
  c.head_dim = big ? 128 : 8;
  c.page_tokens = static_cast<std::uint32_t>(state.range(1));
  c.dtype = state.range(2) == 0 ? kvcache::DType::f32 : kvcache::DType::f16;
  c.policy = kvcache::PolicyConfig::streaming(4, 256);
  return c;
}

void BM_AppendEvict(benchmark::State& state) {
  const kvcache::StreamConfig c = config(state);
  const std::size_t page = c.layout().page_bytes();
  auto pool = std::make_shared<kvcache::PagePool>(kvcache::PagePoolOptions{page, page * c.n_layers * 512});
  kvcache::StreamCache s(pool, c);
  std::vector<float> k(std::size_t{c.n_kv_heads} * c.head_dim, 0.5f), v = k;
  std::int32_t id = 7;
  for (int t = 0; t < 600; ++t) {  // fill past the budget: measure steady state
    s.begin({&id, 1});
    for (std::uint32_t il = 0; il < c.n_layers; ++il) s.append(il, k, v);
  }
  for (auto _ : state) {
    s.begin({&id, 1});
    for (std::uint32_t il = 0; il < c.n_layers; ++il) s.append(il, k, v);
  }
  state.SetItemsProcessed(state.iterations());  // tokens
  state.counters["kv_bytes"] = static_cast<double>(s.stats().kv_bytes);
  state.SetLabel(std::string(c.n_layers == 5 ? "stories260K" : "7B-like") + " " +
                 std::string(kvcache::dtype_name(c.dtype)));
}

}  // namespace

BENCHMARK(BM_AppendEvict)
    ->ArgNames({"big", "page_tokens", "f16"})
    ->ArgsProduct({{0, 1}, {16, 32, 64}, {0, 1}});
BENCHMARK_MAIN();
