// Bad input gives a clear error and leaves the cache usable and unchanged.
#include <doctest/doctest.h>

#include <string>

#include "kvcache/attention.h"
#include "kvcache/error.h"
#include "tests/test_support.h"

using namespace kvcache;

namespace {

StreamConfig small_config() {
  return StreamConfig{2, 2, 4, 4, DType::f32, PositionMode::reindexed, {}, PolicyConfig::streaming(2, 10)};
}

// Everything observable about a stream, to compare before and after a failed call.
struct Snapshot {
  std::vector<std::int64_t> pos;
  std::vector<float> keys;
  StreamStats stats;
  bool operator==(const Snapshot& o) const {
    return pos == o.pos && keys == o.keys && stats.tokens_seen == o.stats.tokens_seen &&
           stats.tokens_kept == o.stats.tokens_kept && stats.pages == o.stats.pages;
  }
};

Snapshot snapshot(const StreamCache& s) {
  Snapshot snap;
  for (const KeptToken& t : s.tokens()) snap.pos.push_back(t.meta.pos);
  std::vector<float> row(s.config().head_dim);
  for (std::uint32_t il = 0; il < s.config().n_layers; ++il) {
    if (!s.layer_ready(il)) continue;
    for (std::uint32_t i = 0; i < s.n_kept(); ++i) {
      s.read_key(il, i, 0, row);
      snap.keys.insert(snap.keys.end(), row.begin(), row.end());
    }
  }
  snap.stats = s.stats();
  return snap;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("bad configurations are rejected with the field named") {
  auto pool = kvtest::make_pool(small_config(), 64);
  auto with = [&](auto edit) {
    StreamConfig c = small_config();
    edit(c);
    return error_of([&] { StreamCache s(pool, c); });
  };
  CHECK(with([](StreamConfig& c) { c.n_layers = 0; }).find("n_layers") != std::string::npos);
  CHECK(with([](StreamConfig& c) { c.n_kv_heads = 0; }).find("n_kv_heads") != std::string::npos);
  CHECK(with([](StreamConfig& c) { c.head_dim = 0; }).find("head_dim") != std::string::npos);
  CHECK(with([](StreamConfig& c) { c.head_dim = 3; }).find("even") != std::string::npos);
  CHECK(with([](StreamConfig& c) { c.page_tokens = 0; }).find("page_tokens") != std::string::npos);
  CHECK(with([](StreamConfig& c) { c.policy.sinks = 10; }).find("sinks") != std::string::npos);
  CHECK(with([](StreamConfig& c) { c.policy.budget = 0; }).find("budget") != std::string::npos);
  CHECK(with([](StreamConfig& c) { c.head_dim = 64; }).find("smaller than") != std::string::npos);
  CHECK(error_of([&] { StreamCache s(nullptr, small_config()); }).find("null") != std::string::npos);
  CHECK_THROWS_AS(parse_policy("lru"), InvalidArgument);
  CHECK_THROWS_AS(parse_dtype("bf16"), InvalidArgument);
}

TEST_CASE("wrong lengths, layers and call order leave the stream unchanged") {
  auto pool = kvtest::make_pool(small_config(), 64);
  StreamCache s(pool, small_config());
  for (int i = 0; i < 13; ++i) kvtest::push_token(s);
  const Snapshot before = snapshot(s);
  std::vector<float> eight(8), seven(7);

  CHECK_THROWS_AS(s.append(0, eight, eight), InvalidArgument);  // no pending token
  CHECK(snapshot(s) == before);
  std::int32_t id = 5;
  CHECK_THROWS_AS(s.begin({}), InvalidArgument);
  CHECK(snapshot(s) == before);

  s.begin({&id, 1});
  const Snapshot admitted = snapshot(s);
  CHECK(error_of([&] { s.append(0, seven, eight); }).find("expected 8") != std::string::npos);
  CHECK_THROWS_AS(s.append(2, eight, eight), InvalidArgument);
  CHECK(error_of([&] { s.begin({&id, 1}); }).find("layer 0") != std::string::npos);
  std::vector<float> q(8), out(8);
  CHECK(error_of([&] { attend_reference(s, 0, q, out, {}, AttendOptions{2}); }).find("pending") !=
        std::string::npos);
  CHECK(snapshot(s) == admitted);

  s.append(0, eight, eight);
  CHECK_THROWS_AS(s.append(0, eight, eight), InvalidArgument);  // layer written twice
  s.append(1, eight, eight);
  CHECK_THROWS_AS(attend_reference(s, 0, q, out, {}, AttendOptions{3}), InvalidArgument);  // GQA mismatch
  CHECK_THROWS_AS(attend_reference(s, 0, seven, out, {}, AttendOptions{2}), InvalidArgument);
  std::vector<float> bad_mass(3);
  CHECK_THROWS_AS(attend_reference(s, 0, q, out, bad_mass, AttendOptions{2}), InvalidArgument);
  CHECK_THROWS_AS(attend_reference(s, 0, q, out, {}, AttendOptions{2, 0.f, 99}), InvalidArgument);
  CHECK_THROWS_AS(s.read_key(0, 99, 0, seven), InvalidArgument);
  CHECK_THROWS_AS(s.add_scores(seven), InvalidArgument);
  attend_reference(s, 0, q, out, {}, AttendOptions{2});  // still usable
  kvtest::push_token(s);
  CHECK(s.n_kept() == 10);
}

TEST_CASE("a batch larger than the window is refused before anything changes") {
  auto pool = kvtest::make_pool(small_config(), 64);
  StreamCache s(pool, small_config());
  for (int i = 0; i < 12; ++i) kvtest::push_token(s);
  const Snapshot before = snapshot(s);
  std::vector<std::int32_t> ids(9, 1);  // budget 10 - 2 sinks = window 8
  CHECK(error_of([&] { s.begin(ids); }).find("does not fit") != std::string::npos);
  CHECK(snapshot(s) == before);
  CHECK(pool->stats().pages_in_use == s.stats().pages);
}

TEST_CASE("pool exhaustion fails the admission and leaves the stream unchanged") {
  StreamConfig c = small_config();
  c.policy = PolicyConfig::full();
  auto pool = kvtest::make_pool(c, 5);  // 2 layers: two pages each, then one spare
  StreamCache s(pool, c);
  for (int i = 0; i < 8; ++i) kvtest::push_token(s);  // 2 pages per layer in use
  const Snapshot before = snapshot(s);
  std::int32_t id = 1;
  CHECK_THROWS_AS(s.begin({&id, 1}), PoolExhausted);  // needs 2 pages, 1 left
  CHECK(snapshot(s) == before);
  CHECK(pool->stats().pages_in_use == 4);
  // A one-layer, one-token window recycles its single page: it runs in what is left.
  StreamConfig w = c;
  w.n_layers = 1;
  w.policy = PolicyConfig::window(1);
  StreamCache other(pool, w);
  for (int i = 0; i < 50; ++i) kvtest::push_token(other);
  CHECK(other.n_kept() == 1);
  CHECK(pool->stats().pages_in_use == 5);
}

TEST_CASE("a moved-from stream reports use after move") {
  auto pool = kvtest::make_pool(small_config(), 64);
  StreamCache a(pool, small_config());
  kvtest::push_token(a);
  StreamCache b(std::move(a));
  std::int32_t id = 1;
  CHECK(error_of([&] {
          a.begin({&id, 1});
        }).find("moved") != std::string::npos);  // NOLINT(bugprone-use-after-move)
  CHECK(a.n_kept() == 0);                        // NOLINT(bugprone-use-after-move)
  CHECK(b.n_kept() == 1);
}

TEST_CASE("every page returns to the pool when streams are destroyed") {
  auto pool = kvtest::make_pool(small_config(), 256);
  {
    std::vector<StreamCache> streams;
    for (int i = 0; i < 6; ++i) {
      StreamConfig c = small_config();
      c.page_tokens = 1 + i % 4;
      if (i % 3 == 0) c.policy = PolicyConfig::window(7);
      streams.emplace_back(pool, c);
      for (int t = 0; t < 20 + 7 * i; ++t) kvtest::push_token(streams.back());
    }
    std::size_t held = 0;
    for (const StreamCache& s : streams) held += s.stats().pages;
    CHECK(pool->stats().pages_in_use == held);
    streams.erase(streams.begin() + 2);
    held = 0;
    for (const StreamCache& s : streams) held += s.stats().pages;
    CHECK(pool->stats().pages_in_use == held);
  }
  CHECK(pool->stats().pages_in_use == 0);
}

TEST_CASE("reading a token not yet appended, or a moved-from config, is an error") {
  auto pool = kvtest::make_pool(small_config(), 64);
  StreamCache s(pool, small_config());
  for (int i = 0; i < 3; ++i) kvtest::push_token(s);
  std::int32_t id = 1;
  s.begin({&id, 1});
  std::vector<float> row(4);
  CHECK_THROWS_AS(s.read_key(0, 3, 0, row), InvalidArgument);
  CHECK_NOTHROW(s.read_key(0, 2, 0, row));
  std::vector<float> kv(8, 0.5f);
  s.append(0, kv, kv);
  CHECK_NOTHROW(s.read_value(0, 3, 1, row));
  CHECK_THROWS_AS(s.read_value(1, 3, 1, row), InvalidArgument);
  StreamCache moved(std::move(s));
  CHECK_THROWS_AS((void)s.config(), InvalidArgument);  // NOLINT(bugprone-use-after-move)
  CHECK_THROWS_AS((void)s.policy(), InvalidArgument);  // NOLINT(bugprone-use-after-move)
}
