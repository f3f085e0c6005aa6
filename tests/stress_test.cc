// Stress: 64 streams with random policies, budgets, page sizes and dtypes share one PagePool and
// run on 2 std::threads (run under TSan and ASan by scripts/test.sh; the TSan job selects tests
// whose name contains "threads"). Plain std::thread, not oneTBB: TSan intercepts pthreads, while
// Debian's libtbb is not instrumented and its task hand-off shows up as false races. The layers
// are small enough that attend() never hands work to oneTBB either.
//
// Streams move between the threads halfway (pages freed on one thread are then reused on the
// other through the pool's per-thread caches and global stack) and some are destroyed and
// recreated on the way. Checked: the newest token's values after every step (a page handed to
// two streams would corrupt them), the budget, and at the end exact page accounting and an empty
// pool after destruction.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <random>
#include <thread>

#include "kvcache/attention.h"
#include "kvcache/sink_detector.h"
#include "tests/test_support.h"

using namespace kvcache;

namespace {

constexpr int kStreams = 64;
constexpr int kThreads = 2;

// One stream and what drives it: a detector for hidden-sinks, query heads, its own RNG.
struct Driver {
  std::optional<StreamCache> cache;
  std::optional<SinkDetector> detector;
  std::uint32_t n_heads = 0;
  int tokens_left = 0;  // tokens still to push in the current phase
  std::mt19937 rng;
  std::vector<float> q, out, mass, per_token, k, v;
  std::int64_t hidden_pins = 0;  // tokens seen pinned as hidden sinks or heavy hitters
};

StreamConfig random_config(std::mt19937& rng, std::uint32_t* n_heads) {
  auto pick = [&rng](std::uint32_t lo, std::uint32_t hi) {
    return std::uniform_int_distribution<std::uint32_t>(lo, hi)(rng);
  };
  StreamConfig c;
  c.n_layers = pick(1, 2);
  c.n_kv_heads = pick(1, 2);
  c.head_dim = 4u << pick(0, 2);     // 4, 8, 16
  c.page_tokens = 2u << pick(0, 3);  // 2, 4, 8, 16
  c.dtype = pick(0, 1) ? DType::f16 : DType::f32;
  c.positions = pick(0, 3) == 0 ? PositionMode::absolute : PositionMode::reindexed;
  // A third without RoPE: there a query of ones sees a "sink" key of twos as a sink at any
  // distance, so the hidden-sinks pinning path surely runs.
  c.rope.style = pick(0, 2) == 0 ? RopeStyle::none : RopeStyle::adjacent_pairs;
  const std::uint32_t budget = pick(8, 96);
  switch (pick(0, 3)) {
    case 0:
      c.policy = PolicyConfig::window(budget);
      break;
    case 1:
      c.policy = PolicyConfig::streaming(pick(1, 4), budget);
      break;
    case 2:
      c.policy = PolicyConfig::hidden(pick(0, 4), pick(1, 3), budget, 1);
      break;
    default:
      c.policy = PolicyConfig::heavy_hitters(pick(0, budget / 2), budget);
      break;
  }
  *n_heads = c.n_kv_heads * pick(1, 2);
  if (c.policy.kind == PolicyKind::hidden_sinks) c.token_state_floats = SinkDetector(c.n_layers, *n_heads).state_floats();
  return c;
}

void create(Driver& d, const std::shared_ptr<PagePool>& pool, int tokens) {
  const StreamConfig c = random_config(d.rng, &d.n_heads);
  d.cache.emplace(pool, c);
  if (c.policy.kind == PolicyKind::hidden_sinks) {
    d.detector.emplace(c.n_layers, d.n_heads, SinkDetectorOptions{2.f, 0.9f});
  } else {
    d.detector.reset();
  }
  d.q.assign(std::size_t{d.n_heads} * c.head_dim, 1.f);
  d.out.resize(d.q.size());
  d.tokens_left = tokens;
}

// One token: begin, append every layer, attend every layer with its mass fed back (detector for
// hidden-sinks, accumulated scores for h2o). Returns the number of value mismatches.
int step(Driver& d) {
  StreamCache& s = *d.cache;
  const StreamConfig& c = s.config();
  const auto pos = static_cast<std::int64_t>(s.stats().tokens_seen);
  const auto id = static_cast<std::int32_t>(pos % 500);
  s.begin({&id, 1});
  const bool sink_token = pos % 17 == 3;  // a strong key every 17 tokens: a hidden-sink candidate
  int wrong = 0;
  for (std::uint32_t il = 0; il < c.n_layers; ++il) {
    d.k = kvtest::synth_rows(c, kvtest::kSaltK, il, pos);
    d.v = kvtest::synth_rows(c, kvtest::kSaltV, il, pos);
    if (sink_token) std::fill(d.k.begin(), d.k.end(), 2.f);
    s.append(il, d.k, d.v);
    d.mass.assign(std::size_t{d.n_heads} * s.n_kept(), 0.f);
    attend(s, il, d.q, d.out, d.mass, AttendOptions{d.n_heads});
    if (d.detector) {
      d.detector->observe(s, il, d.mass);
    } else if (c.policy.kind == PolicyKind::h2o) {
      d.per_token.assign(s.n_kept(), 0.f);
      for (std::size_t h = 0; h < d.n_heads; ++h) {
        for (std::size_t j = 0; j < s.n_kept(); ++j) d.per_token[j] += d.mass[h * s.n_kept() + j];
      }
      s.add_scores(d.per_token);
    }
    // The newest token's value as appended: its page belongs to this stream alone.
    std::vector<float> row(c.head_dim);
    const std::uint32_t newest = s.n_kept() - 1;
    const std::uint32_t kv_head = c.n_kv_heads - 1;
    s.read_value(il, newest, kv_head, row);
    const float tol = c.dtype == DType::f16 ? 1e-3f : 0.f;
    for (std::uint32_t i = 0; i < c.head_dim; ++i) {
      const float want = d.v[std::size_t{kv_head} * c.head_dim + i];
      if (std::abs(row[i] - want) > tol) ++wrong;
    }
  }
  if (s.n_kept() > s.policy().budget()) ++wrong;
  for (const KeptToken& t : s.tokens()) {
    if (t.meta.pin == PinReason::hidden_sink || t.meta.pin == PinReason::heavy_hitter) ++d.hidden_pins;
  }
  return wrong;
}

}  // namespace

TEST_CASE("stress: 64 streams with random policies on 2 threads share one pool with exact accounting") {
  // Pages sized for the largest layout: 16 tokens x 2 heads x 16 dims x 4 bytes x (K and V).
  // The budget is far above what 64 streams of <= 96 tokens hold: exhaustion is tested elsewhere.
  auto pool = std::make_shared<PagePool>(PagePoolOptions{4096, std::size_t{64} << 20, std::size_t{1} << 20});
  std::vector<Driver> drivers(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    drivers[static_cast<std::size_t>(i)].rng.seed(static_cast<std::mt19937::result_type>(1000 + i));
    create(drivers[static_cast<std::size_t>(i)], pool, 0);
  }

  std::atomic<int> wrong{0};
  std::atomic<int> recreated{0};
  // Phase p: thread t drives the streams i with i % kThreads == (t + p) % kThreads, interleaved
  // token by token so both threads allocate and free at the same time.
  auto run_phase = [&](int phase) {
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        std::vector<Driver*> mine;
        for (int i = 0; i < kStreams; ++i) {
          if (i % kThreads == (t + phase) % kThreads) mine.push_back(&drivers[static_cast<std::size_t>(i)]);
        }
        for (Driver* d : mine) d->tokens_left = 300 + static_cast<int>(d->rng() % 300);
        bool any = true;
        while (any) {
          any = false;
          for (Driver* d : mine) {
            if (d->tokens_left == 0) continue;
            any = true;
            --d->tokens_left;
            wrong.fetch_add(step(*d), std::memory_order_relaxed);
            // Now and then drop the stream (its pages go back from this thread) and start a new
            // one with another random config.
            if (d->rng() % 400 == 0) {
              const int left = d->tokens_left;
              d->cache.reset();
              create(*d, pool, left);
              recreated.fetch_add(1, std::memory_order_relaxed);
            }
          }
        }
      });
    }
    for (std::thread& th : threads) th.join();
  };
  run_phase(0);
  run_phase(1);  // every stream continues on the other thread

  CHECK(wrong.load() == 0);
  std::size_t held = 0;
  std::int64_t pins = 0;
  for (const Driver& d : drivers) {
    const StreamStats st = d.cache->stats();
    CHECK(st.tokens_kept <= d.cache->policy().budget());
    CHECK(st.tokens_seen == st.tokens_kept + st.tokens_evicted);
    CHECK(st.kv_bytes == st.pages * pool->page_bytes());
    held += st.pages;
    pins += d.hidden_pins;
  }
  const PagePoolStats ps = pool->stats();
  CHECK(ps.pages_in_use == held);
  CHECK(ps.pages_in_use + ps.pages_free == ps.pages_reserved);
  CHECK(ps.failed_allocations == 0);
  CHECK(pins > 0);  // the hidden-sink and heavy-hitter paths ran
  MESSAGE("pages in use " << ps.pages_in_use << ", high water " << ps.pages_high_water
                          << ", streams recreated " << recreated.load() << ", hidden/heavy pins seen "
                          << pins);

  drivers.clear();
  const PagePoolStats end = pool->stats();
  CHECK(end.pages_in_use == 0);
  CHECK(end.pages_free == end.pages_reserved);
}
