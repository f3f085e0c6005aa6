// Consumer of the installed kvcache through find_package: the C++ API and the C API, one step each.
#include <cstdio>
#include <memory>
#include <vector>

#include "kvcache/attention.h"
#include "kvcache/kvcache.h"
#include "kvcache/page_pool.h"
#include "kvcache/stream_cache.h"

int main() {
  kvcache::StreamConfig config;
  config.n_layers = 1;
  config.n_kv_heads = 1;
  config.head_dim = 4;
  config.policy = kvcache::PolicyConfig::streaming(1, 8);
  auto pool = std::make_shared<kvcache::PagePool>(
      kvcache::PagePoolOptions{config.layout().page_bytes(), 16 * config.layout().page_bytes()});
  kvcache::StreamCache cache(pool, config);
  std::vector<float> kv(4, 0.5f), q(4, 1.f), out(4);
  for (std::int32_t t = 0; t < 20; ++t) {
    cache.begin({&t, 1});
    cache.append(0, kv, kv);
  }
  kvcache::attend(cache, 0, q, out, {}, {1, 0.f, -1});
  // Every value row is 0.5, so any attention output is 0.5 up to rounding.
  if (cache.n_kept() != 8 || out[0] < 0.499f || out[0] > 0.501f) {
    std::fprintf(stderr, "consumer_cmake: unexpected result (kept %u, out %g)\n", cache.n_kept(), out[0]);
    return 1;
  }
  kvc_pool* c_pool = nullptr;
  if (kvc_pool_create(4096, 4096, &c_pool) != KVC_OK) return 1;
  kvc_pool_destroy(c_pool);
  std::printf("consumer_cmake: kvcache %s ok\n", kvc_version_string());
  return 0;
}
