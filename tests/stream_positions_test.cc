// After N appends under each policy exactly the expected original positions remain, in order,
// with the expected cache positions, across page-boundary cases.
#include <doctest/doctest.h>

#include "tests/test_support.h"

using namespace kvcache;

namespace {

void check_positions(PolicyConfig policy, std::uint32_t page_tokens, PositionMode mode,
                     std::int64_t n_tokens) {
  StreamConfig c{2, 2, 4, page_tokens, DType::f32, mode, {}, policy};
  auto pool = kvtest::make_pool(c, 4096);
  StreamCache s(pool, c);
  const std::int64_t sinks = policy.kind == PolicyKind::sinks ? policy.sinks : 0;
  const std::int64_t budget = policy.kind == PolicyKind::full ? 0 : policy.budget;
  for (std::int64_t n = 1; n <= n_tokens; ++n) {
    kvtest::push_token(s);
    const std::vector<std::int64_t> want = kvtest::expected_positions(n, sinks, budget);
    const std::vector<KeptToken> got = s.tokens();
    REQUIRE(got.size() == want.size());
    for (std::size_t i = 0; i < want.size(); ++i) {
      CHECK(got[i].meta.pos == want[i]);
      CHECK(got[i].meta.token == static_cast<std::int32_t>(want[i] % 1000));
      CHECK(got[i].cache_pos == (mode == PositionMode::reindexed ? std::int64_t(i) : want[i]));
      CHECK((got[i].meta.pin == PinReason::initial) == (want[i] < sinks));
    }
    // Pages held: pinned pages plus the window ring, never more than the data needs + 1 page.
    const std::int64_t pinned = std::min(n, sinks);
    const std::int64_t win = static_cast<std::int64_t>(want.size()) - pinned;
    const std::int64_t P = page_tokens;
    const std::int64_t max_pages = (pinned + P - 1) / P + (win + P - 1) / P + (win > 0 ? 1 : 0);
    CHECK(s.stats().pages <= static_cast<std::size_t>(max_pages * c.n_layers));
    CHECK(s.stats().pages * pool->page_bytes() == s.stats().kv_bytes);
    CHECK(pool->stats().pages_in_use == s.stats().pages);
  }
}

}  // namespace

TEST_CASE("window policy keeps exactly the last W positions") {
  for (std::uint32_t P : {1u, 3u, 4u, 16u}) {
    for (std::uint32_t W : {1u, 2u, 4u, 5u, 16u, 17u}) {
      CAPTURE(P);
      CAPTURE(W);
      check_positions(PolicyConfig::window(W), P, PositionMode::reindexed, 3 * W + 2 * P + 3);
    }
  }
}

TEST_CASE("sinks policy keeps the first S and the last B-S positions") {
  for (std::uint32_t P : {1u, 2u, 4u, 7u, 16u}) {
    for (std::uint32_t S : {1u, 3u, 4u, 8u}) {
      for (std::uint32_t B : {S + 1, S + 4, S + 16, 2 * S + 13}) {
        for (PositionMode mode : {PositionMode::reindexed, PositionMode::absolute}) {
          CAPTURE(P);
          CAPTURE(S);
          CAPTURE(B);
          check_positions(PolicyConfig::streaming(S, B), P, mode, 2 * B + 2 * P + 5);
        }
      }
    }
  }
}

TEST_CASE("full policy keeps everything") {
  check_positions(PolicyConfig::full(), 4, PositionMode::absolute, 70);
}

TEST_CASE("window eviction recycles whole pages and holds memory flat") {
  StreamConfig c{1, 1, 8, 16, DType::f32, PositionMode::reindexed, {}, PolicyConfig::streaming(4, 64)};
  auto pool = kvtest::make_pool(c, 64);
  StreamCache s(pool, c);
  for (int i = 0; i < 200; ++i) kvtest::push_token(s);
  const std::size_t pages = s.stats().pages;
  for (int i = 0; i < 5000; ++i) {
    kvtest::push_token(s);
    CHECK(s.stats().pages <= pages + 1);
    CHECK(s.n_kept() == 64);
  }
  CHECK(s.stats().tokens_evicted == 5200 - 64);
  CHECK(s.stats().kv_bytes_peak <= (pages + 1) * pool->page_bytes());
}

TEST_CASE("batched begin without eviction equals single steps") {
  StreamConfig c{2, 2, 4, 4, DType::f32, PositionMode::reindexed, {}, PolicyConfig::streaming(4, 32)};
  auto pool = kvtest::make_pool(c, 256);
  StreamCache single(pool, c), batched(pool, c);
  for (int i = 0; i < 20; ++i) kvtest::push_token(single);
  std::vector<std::int32_t> ids;
  for (int i = 0; i < 20; ++i) ids.push_back(i % 1000);
  batched.begin(ids);
  for (std::uint32_t il = 0; il < c.n_layers; ++il) {
    std::vector<float> k, v;
    for (int t = 0; t < 20; ++t) {
      auto kr = kvtest::synth_rows(c, kvtest::kSaltK, il, t),
           vr = kvtest::synth_rows(c, kvtest::kSaltV, il, t);
      k.insert(k.end(), kr.begin(), kr.end());
      v.insert(v.end(), vr.begin(), vr.end());
    }
    batched.append(il, k, v);
  }
  REQUIRE(single.n_kept() == batched.n_kept());
  std::vector<float> a(4), b(4);
  for (std::uint32_t il = 0; il < 2; ++il) {
    for (std::uint32_t i = 0; i < single.n_kept(); ++i) {
      for (std::uint32_t h = 0; h < 2; ++h) {
        single.read_key(il, i, h, a);
        batched.read_key(il, i, h, b);
        CHECK(a == b);
        single.read_value(il, i, h, a);
        batched.read_value(il, i, h, b);
        CHECK(a == b);
      }
    }
  }
}

TEST_CASE("window_overflow is the pure window rule") {
  CHECK(window_overflow(4, 10, 1, 16) == 0);
  CHECK(window_overflow(4, 12, 1, 16) == 1);
  CHECK(window_overflow(4, 12, 3, 16) == 3);
  CHECK(window_overflow(4, 2, 20, 16) == 2);  // never more than the window holds
  CHECK(window_overflow(0, 0, 1, 1) == 0);
}
