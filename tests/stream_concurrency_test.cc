// Many streams on many threads against one shared pool (run under TSan in CI's TSan job).
// Plain std::threads, not oneTBB tasks: TSan intercepts pthreads, while the Debian libtbb is
// not instrumented and its task hand-off shows up as false races.
#include <doctest/doctest.h>

#include <thread>

#include "kvcache/attention.h"
#include "tests/test_support.h"

using namespace kvcache;

TEST_CASE("16 streams on 4 threads share one pool with exact accounting") {
  StreamConfig base{2, 2, 8, 6, DType::f32, PositionMode::reindexed, {}, PolicyConfig::streaming(4, 24)};
  auto pool = kvtest::make_pool(base, 16 * 2 * 16);  // pages sized for the largest page_tokens
  std::vector<StreamCache> streams;
  for (int i = 0; i < 16; ++i) {
    StreamConfig c = base;
    c.page_tokens = 2 + static_cast<std::uint32_t>(i % 3) * 2;
    c.dtype = i % 2 ? DType::f16 : DType::f32;
    c.policy = i % 4 == 0 ? PolicyConfig::window(20) : PolicyConfig::streaming(4, 16 + (i % 3) * 4);
    streams.emplace_back(pool, c);
  }
  std::atomic<int> wrong{0};
  std::atomic<int> next{0};
  auto work = [&](int i) {
    StreamCache& s = streams[static_cast<std::size_t>(i)];
    std::vector<float> q(32), out(32);
    for (int t = 0; t < 400 + 13 * i; ++t) {
      kvtest::push_token(s);
      attend_reference(s, 1, q, out, {}, AttendOptions{4});
      // A page shared with another stream would corrupt values: check the newest token.
      std::vector<float> v(8);
      s.read_value(1, s.n_kept() - 1, 1, v);
      const float want = kvtest::synth(kvtest::kSaltV, 1, static_cast<std::uint64_t>(t), 1, 3);
      if (std::abs(v[3] - want) > (s.config().dtype == DType::f16 ? 1e-3f : 0.f)) wrong.fetch_add(1);
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = next.fetch_add(1); i < 16; i = next.fetch_add(1)) work(i);
    });
  }
  for (std::thread& t : threads) t.join();
  CHECK(wrong.load() == 0);
  std::size_t held = 0;
  for (const StreamCache& s : streams) {
    CHECK(s.n_kept() == s.policy().budget());
    held += s.stats().pages;
  }
  CHECK(pool->stats().pages_in_use == held);
  streams.clear();
  CHECK(pool->stats().pages_in_use == 0);
  CHECK(pool->stats().pages_free == pool->stats().pages_reserved);
}
