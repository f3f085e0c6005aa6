// SinkDetector and the hidden-sinks / h2o policies on synthetic attention with planted sinks.
#include "kvcache/sink_detector.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <functional>
#include <random>
#include <set>
#include <string>

#include "kvcache/error.h"
#include "tests/test_support.h"

using namespace kvcache;

namespace {

constexpr std::uint32_t kLayers = 2, kHeads = 4;

// weight(pos, layer, head, query_pos) of a key before normalisation; 1 is "ordinary".
using Pattern = std::function<float(std::int64_t, std::uint32_t, std::uint32_t, std::int64_t)>;

struct Harness {
  SinkDetector detector{kLayers, kHeads};
  StreamConfig config;
  std::shared_ptr<PagePool> pool;
  StreamCache cache;
  std::mt19937 rng{3};
  // Called with each layer's kept positions and mass, for oracles.
  std::function<void(const std::vector<KeptToken>&, const std::vector<float>&)> on_mass;

  explicit Harness(PolicyConfig policy)
      : config{kLayers, 2, 4, 4, DType::f32, PositionMode::reindexed, {}, policy, 0},
        pool(kvtest::make_pool(config, 512)),
        cache((config.token_state_floats = detector.state_floats(), pool), config) {}

  // Admits one token and feeds the detector the attention `pattern` gives, with noise.
  void step(const Pattern& pattern) {
    kvtest::push_token(cache);
    const std::int64_t q = static_cast<std::int64_t>(cache.stats().tokens_seen) - 1;
    const std::vector<KeptToken> kept = cache.tokens();
    const std::uint32_t n = cache.n_kept();
    std::uniform_real_distribution<float> noise(0.5f, 1.5f);
    for (std::uint32_t il = 0; il < kLayers; ++il) {
      std::vector<float> mass(std::size_t{kHeads} * n);
      for (std::uint32_t h = 0; h < kHeads; ++h) {
        float sum = 0;
        for (std::uint32_t j = 0; j < n; ++j)
          sum += mass[h * n + j] = pattern(kept[j].meta.pos, il, h, q) * noise(rng);
        for (std::uint32_t j = 0; j < n; ++j) mass[h * n + j] /= sum;
      }
      if (on_mass) on_mass(kept, mass);
      detector.observe(cache, il, mass);
    }
  }
  std::set<std::int64_t> sinks_now(std::uint16_t min_heads) const {
    std::set<std::int64_t> out;
    for (const KeptToken& t : cache.tokens()) {
      if (t.meta.sink_heads >= min_heads) out.insert(t.meta.pos);
    }
    return out;
  }
  std::set<std::int64_t> kept_positions() const {
    std::set<std::int64_t> out;
    for (const KeptToken& t : cache.tokens()) out.insert(t.meta.pos);
    return out;
  }
};

}  // namespace

TEST_CASE("uniform attention flags no sink") {
  Harness hx(PolicyConfig::full());
  for (int t = 0; t < 300; ++t) hx.step([](auto, auto, auto, auto) { return 1.f; });
  CHECK(hx.sinks_now(1).empty());
}

TEST_CASE("planted initial and mid-stream sinks are found, in the heads they live in") {
  Harness hx(PolicyConfig::full());
  // Token 0 takes ~1/3 of the mass in every head; token 40 in heads 1 and 2 of layer 1 only.
  const Pattern planted = [](std::int64_t pos, std::uint32_t l, std::uint32_t h, std::int64_t q) {
    if (pos == 0) return 0.5f * static_cast<float>(q + 1);
    if (pos == 40 && l == 1 && (h == 1 || h == 2)) return 0.3f * static_cast<float>(q + 1);
    return 1.f;
  };
  for (int t = 0; t < 200; ++t) hx.step(planted);
  CHECK(hx.sinks_now(1) == std::set<std::int64_t>{0, 40});
  const std::vector<KeptToken> kept = hx.cache.tokens();
  CHECK(kept[0].meta.sink_heads == kLayers * kHeads);
  CHECK(kept[40].meta.sink_heads == 2);
  CHECK(hx.detector.is_sink(hx.cache, 40, 1, 1));
  CHECK_FALSE(hx.detector.is_sink(hx.cache, 40, 0, 1));
  CHECK_FALSE(hx.detector.is_sink(hx.cache, 41, 1, 1));
}

// Rule 1 (is_sink): the bias-corrected moving average follows recent queries.
TEST_CASE("recent evidence: an intermittent sink stays flagged and a decaying one is dropped") {
  Harness hx(PolicyConfig::full());
  const Pattern pattern = [](std::int64_t pos, auto, auto, std::int64_t q) {
    const float big = 0.5f * static_cast<float>(q + 1);
    if (pos == 10) return q % 2 == 0 ? big : 1.f;  // every other query
    if (pos == 20) return q < 120 ? big : 1.f;     // fades after query 120
    return 1.f;
  };
  const auto recent_sinks = [&] {
    std::set<std::int64_t> out;
    for (std::uint32_t j = 0; j < hx.cache.n_kept(); ++j) {
      for (std::uint32_t l = 0; l < kLayers; ++l) {
        for (std::uint32_t h = 0; h < kHeads; ++h) {
          if (hx.detector.is_sink(hx.cache, j, l, h)) out.insert(hx.cache.tokens()[j].meta.pos);
        }
      }
    }
    return out;
  };
  for (int t = 0; t < 119; ++t) hx.step(pattern);
  CHECK(recent_sinks() == std::set<std::int64_t>{10, 20});
  for (int t = 0; t < 80; ++t) hx.step(pattern);
  CHECK(recent_sinks() == std::set<std::int64_t>{10});
}

// Rule 2 (sink_heads): a sink draws attention from most queries, not from a few.
TEST_CASE("window evidence: a token a few queries attend to is no sink, one most queries attend to is") {
  Harness hx(PolicyConfig::full());
  const Pattern pattern = [](std::int64_t pos, auto, auto, std::int64_t q) {
    const float big = 0.5f * static_cast<float>(q + 1);
    if (pos == 0) return big;                      // every head dumps on the initial sink
    if (pos == 40) return q <= 46 ? big : 1.f;     // its next 6 queries (content, like a URL's '<')
    if (pos == 60) return q % 3 != 0 ? big : 1.f;  // two queries in three: a sink
    return 1.f;
  };
  for (int t = 0; t < 46; ++t) hx.step(pattern);
  CHECK(hx.detector.is_sink(hx.cache, 40, 0, 0));     // recent evidence says sink...
  CHECK(hx.cache.tokens()[40].meta.sink_heads == 0);  // ...but 6 queries are too few to judge
  for (int t = 0; t < 102; ++t) hx.step(pattern);
  const std::vector<KeptToken> kept = hx.cache.tokens();
  CHECK(kept[40].meta.sink_heads == 0);
  CHECK(kept[60].meta.sink_heads == kLayers * kHeads);
  CHECK(hx.sinks_now(1) == std::set<std::int64_t>{0, 60});
}

// The GPL-3 case with stories260K: a token that most queries attend to, in heads that put nothing
// on the initial sinks, is content for those heads, not a sink; it is never pinned.
TEST_CASE("window evidence: attention in heads that do not dump on the initial sinks does not count") {
  Harness hx(PolicyConfig::hidden(4, 8, 24, 1));
  const Pattern pattern = [](std::int64_t pos, std::uint32_t l, std::uint32_t h, std::int64_t q) {
    const float big = 0.5f * static_cast<float>(q + 1);
    if (pos == 0 && l == 0 && h == 0) return big;      // only head (0, 0) dumps on token 0
    if (pos == 40 && !(l == 0 && h == 0)) return big;  // drawn by every other head, every query
    return 1.f;
  };
  for (int t = 0; t < 60; ++t) hx.step(pattern);
  CHECK(hx.detector.is_sink(hx.cache, 40 - (60 - 24), 1, 1));  // recent evidence: a sink
  CHECK(hx.cache.tokens()[40 - (60 - 24)].meta.sink_heads == 0);
  for (int t = 0; t < 140; ++t) hx.step(pattern);
  std::vector<std::int64_t> got;
  for (const KeptToken& t : hx.cache.tokens()) got.push_back(t.meta.pos);
  CHECK(got == kvtest::expected_positions(200, 4, 24));
}

// The self-reinforcement case: token 30 qualifies weakly in the window (2 heads), then, once
// pinned, draws attention in every head because it is kept. Its evidence must stay what it
// earned in the window, so token 60, a stronger sink in the window (4 heads), replaces it.
TEST_CASE("hidden-sinks: attention a token gets because it is pinned earns it nothing") {
  Harness hx(PolicyConfig::hidden(4, 1, 24, 2));
  const Pattern pattern = [](std::int64_t pos, std::uint32_t l, std::uint32_t h, std::int64_t q) {
    const float big = 0.5f * static_cast<float>(q + 1);
    if (pos == 0) return big;                                        // heads dump on the initial sink
    if (pos == 30) return (l == 0 && h < 2) || q >= 55 ? big : 1.f;  // q >= 55: pinned by then
    if (pos == 60) return l == 0 ? big : 1.f;
    return 1.f;
  };
  bool pinned_30 = false;
  std::uint16_t heads_30_when_pinned = 0;
  for (int t = 0; t < 120; ++t) {
    hx.step(pattern);
    for (const KeptToken& k : hx.cache.tokens()) {
      if (k.meta.pos != 30 || k.meta.pin != PinReason::hidden_sink) continue;
      if (!pinned_30) heads_30_when_pinned = k.meta.sink_heads;
      pinned_30 = true;
      CHECK(k.meta.sink_heads == heads_30_when_pinned);  // frozen while pinned
    }
  }
  CHECK(pinned_30);
  CHECK(heads_30_when_pinned == 2);
  std::set<std::int64_t> hidden;
  for (const KeptToken& t : hx.cache.tokens()) {
    if (t.meta.pin == PinReason::hidden_sink) hidden.insert(t.meta.pos);
  }
  CHECK(hidden == std::set<std::int64_t>{60});
  CHECK(hx.kept_positions().count(30) == 0);
}

// A token that draws attention only once it is kept beyond the window is never pinned.
TEST_CASE("hidden-sinks: a token attended only while kept is never pinned") {
  Harness hx(PolicyConfig::hidden(4, 8, 24, 1));
  const Pattern pattern = [](std::int64_t pos, auto, auto, std::int64_t q) {
    // Every token would draw attention from queries more than 20 behind it, i.e. only if kept.
    if (pos == 0) return 0.5f * static_cast<float>(q + 1);  // heads dump on the initial sink
    return pos >= 4 && q - pos > 20 ? 0.5f * static_cast<float>(q + 1) : 1.f;
  };
  for (int t = 0; t < 200; ++t) hx.step(pattern);
  std::vector<std::int64_t> got;
  for (const KeptToken& t : hx.cache.tokens()) got.push_back(t.meta.pos);
  CHECK(got == kvtest::expected_positions(200, 4, 24));
}

TEST_CASE("hidden-sinks keeps planted sinks past the window, within the cap and the budget") {
  // Sinks at 30, 50, 70, 90 in 2, 4, 6, 8 (layer, head) pairs; cap 2: the two strongest survive.
  Harness hx(PolicyConfig::hidden(4, 2, 24, 2));
  const Pattern pattern = [](std::int64_t pos, std::uint32_t l, std::uint32_t h, std::int64_t q) {
    const std::int64_t pairs = (pos - 10) / 10;
    if (pos == 0) return 0.5f * static_cast<float>(q + 1);  // heads dump on the initial sink
    if (pos >= 30 && pos <= 90 && pos % 20 == 10 && std::int64_t{l * kHeads + h} < pairs)
      return 0.5f * static_cast<float>(q + 1);
    return 1.f;
  };
  for (int t = 0; t < 400; ++t) {
    hx.step(pattern);
    CHECK(hx.cache.n_kept() <= 24);
  }
  std::set<std::int64_t> hidden;
  for (const KeptToken& t : hx.cache.tokens()) {
    if (t.meta.pin == PinReason::hidden_sink) hidden.insert(t.meta.pos);
  }
  CHECK(hidden == std::set<std::int64_t>{70, 90});
  const std::set<std::int64_t> kept = hx.kept_positions();
  for (std::int64_t p : {0, 1, 2, 3, 70, 90, 399}) CHECK(kept.count(p) == 1);
  CHECK(kept.count(30) == 0);
  CHECK(hx.cache.n_kept() == 24);
}

TEST_CASE("hidden-sinks with uniform attention behaves exactly like StreamingLLM") {
  Harness hx(PolicyConfig::hidden(4, 8, 32));
  for (int t = 0; t < 300; ++t) hx.step([](auto, auto, auto, auto) { return 1.f; });
  std::vector<std::int64_t> got;
  for (const KeptToken& t : hx.cache.tokens()) got.push_back(t.meta.pos);
  CHECK(got == kvtest::expected_positions(300, 4, 32));
}

TEST_CASE("h2o keeps the tokens a naive H2O keeps, and the planted heavy hitters") {
  constexpr std::uint32_t kBudget = 16, kHeavy = 4;
  Harness hx(PolicyConfig::heavy_hitters(kHeavy, kBudget));
  const std::set<std::int64_t> heavy = {5, 17, 33, 61};
  const Pattern pattern = [&](std::int64_t pos, auto, auto, auto) { return heavy.count(pos) ? 8.f : 1.f; };

  // Naive H2O: a list of (pos, score, pinned); the oldest unpinned token leaves when over budget.
  struct Tok {
    std::int64_t pos;
    double score;
    bool pinned;
  };
  std::vector<Tok> oracle;
  hx.on_mass = [&](const std::vector<KeptToken>& kept, const std::vector<float>& mass) {
    const std::size_t n = kept.size();
    for (std::size_t j = 0; j < n; ++j) {
      auto it =
          std::find_if(oracle.begin(), oracle.end(), [&](const Tok& t) { return t.pos == kept[j].meta.pos; });
      REQUIRE(it != oracle.end());
      for (std::uint32_t h = 0; h < kHeads; ++h) it->score += mass[h * n + j];
    }
  };
  for (std::int64_t t = 0; t < 200; ++t) {
    oracle.push_back({t, 0.0, false});
    while (oracle.size() > kBudget) {
      auto leaving = std::find_if(oracle.begin(), oracle.end(), [](const Tok& x) { return !x.pinned; });
      const auto n_pinned =
          std::count_if(oracle.begin(), oracle.end(), [](const Tok& x) { return x.pinned; });
      if (n_pinned < kHeavy) {
        leaving->pinned = true;
        continue;
      }
      auto weakest = oracle.end();
      for (auto it = oracle.begin(); it != oracle.end(); ++it) {
        if (it->pinned && (weakest == oracle.end() || it->score < weakest->score)) weakest = it;
      }
      if (leaving->score > weakest->score) {
        leaving->pinned = true;
        oracle.erase(weakest);
      } else {
        oracle.erase(leaving);
      }
    }
    hx.step(pattern);
    std::set<std::int64_t> want;
    for (const Tok& x : oracle) want.insert(x.pos);
    REQUIRE(hx.kept_positions() == want);
  }
  std::set<std::int64_t> pinned;
  for (const KeptToken& t : hx.cache.tokens()) {
    if (t.meta.pin == PinReason::heavy_hitter) pinned.insert(t.meta.pos);
  }
  // Accumulated attention favours the earliest tokens (they had few rivals), as H2O does; the
  // planted heavy hitters that arrived early enough must still be among the pinned.
  CHECK(pinned.size() == kHeavy);
  CHECK(pinned.count(5) == 1);
  CHECK(pinned.count(17) == 1);
  CHECK(hx.cache.n_kept() == kBudget);
}

TEST_CASE("detector and policy arguments are validated") {
  CHECK_THROWS_AS(SinkDetector(0, 4), InvalidArgument);
  CHECK_THROWS_AS(SinkDetector(2, 4, {1.f, 0.9f}), InvalidArgument);
  CHECK_THROWS_AS(SinkDetector(2, 4, {5.f, 1.f}), InvalidArgument);
  CHECK_THROWS_AS(SinkDetector(2, 4, {5.f, 0.9f, 0.f}), InvalidArgument);
  CHECK_THROWS_AS(SinkDetector(2, 4, {5.f, 0.9f, 1.5f}), InvalidArgument);
  CHECK_THROWS_AS(SinkDetector(2, 4, {5.f, 0.9f, 0.5f, 0}), InvalidArgument);
  CHECK_THROWS_AS(make_policy(PolicyConfig::hidden(4, 28, 32)), InvalidArgument);
  CHECK_THROWS_AS(make_policy(PolicyConfig::heavy_hitters(16, 16)), InvalidArgument);
  Harness hx(PolicyConfig::full());
  kvtest::push_token(hx.cache);
  std::vector<float> wrong(3);
  CHECK_THROWS_AS(hx.detector.observe(hx.cache, 0, wrong), InvalidArgument);
  CHECK_THROWS_AS(hx.detector.observe(hx.cache, 5, wrong), InvalidArgument);
}
