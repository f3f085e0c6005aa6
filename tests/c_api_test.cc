// The C API (kvcache.h): every entry point's error paths, and results equal to the C++ API's.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "kvcache/attention.h"
#include "kvcache/kvcache.h"
#include "kvcache/sink_detector.h"
#include "tests/test_support.h"

// c_api_enum_args.c: calls with enum arguments outside their enumerators.
extern "C" {
const char* kvc_test_status_name(int status);
kvc_status kvc_test_page_bytes(uint32_t page_tokens, uint32_t n_kv_heads, uint32_t head_dim, int dtype,
                               size_t* out);
}

namespace {

constexpr std::uint32_t kLayers = 2, kKvHeads = 2, kHeads = 4, kDim = 8, kPageTokens = 4;

// Releases C handles at scope exit, so a failing CHECK does not leak into the leak checker.
struct PoolDeleter {
  void operator()(kvc_pool* p) const { kvc_pool_destroy(p); }
};
struct StreamDeleter {
  void operator()(kvc_stream* s) const { kvc_stream_destroy(s); }
};
using PoolPtr = std::unique_ptr<kvc_pool, PoolDeleter>;
using StreamPtr = std::unique_ptr<kvc_stream, StreamDeleter>;

bool error_mentions(const char* what) {
  return std::string(kvc_last_error()).find(what) != std::string::npos;
}

// Stores `v` into an enum field, even outside the enumerators, as C code can. The field is never
// read as an enum on this side: the library reads its bytes.
template <class E>
void set_raw(E& field, int v) {
  static_assert(sizeof(E) == sizeof v);
  std::memcpy(&field, &v, sizeof v);
}

kvc_stream_config c_config(kvc_policy_kind policy, std::uint32_t budget) {
  kvc_stream_config c;
  kvc_stream_config_init(&c);
  c.n_layers = kLayers;
  c.n_kv_heads = kKvHeads;
  c.head_dim = kDim;
  c.page_tokens = kPageTokens;
  c.policy = policy;
  c.budget = budget;
  c.sinks = 2;
  c.hidden_sinks = 3;
  c.min_sink_heads = 1;
  return c;
}

// The C++ StreamConfig the C config describes (written out independently of the C API's own
// conversion, so a mapping mistake there shows up as a mismatch).
kvcache::StreamConfig cpp_config(kvcache::PolicyKind kind, std::uint32_t budget) {
  kvcache::StreamConfig c;
  c.n_layers = kLayers;
  c.n_kv_heads = kKvHeads;
  c.head_dim = kDim;
  c.page_tokens = kPageTokens;
  c.policy.kind = kind;
  c.policy.budget = budget;
  c.policy.sinks = 2;
  c.policy.hidden_sinks = 3;
  c.policy.min_sink_heads = 1;
  return c;
}

std::size_t page_bytes() {
  std::size_t b = 0;
  REQUIRE(kvc_page_bytes(kPageTokens, kKvHeads, kDim, KVC_DTYPE_F32, &b) == KVC_OK);
  return b;
}

PoolPtr make_pool(std::size_t pages) {
  kvc_pool* p = nullptr;
  REQUIRE(kvc_pool_create(page_bytes(), pages * page_bytes(), &p) == KVC_OK);
  return PoolPtr(p);
}

StreamPtr make_stream(kvc_pool* pool, const kvc_stream_config& c) {
  kvc_stream* s = nullptr;
  REQUIRE(kvc_stream_create(pool, &c, &s) == KVC_OK);
  return StreamPtr(s);
}

// Synthetic K (or V) rows of all KV heads for token `pos` of `layer` (as kvtest::push_token
// writes them). With `planted`, token 0 and every 7th token (pos % 7 == 5) get a key of all 2s:
// with RoPE off and all-ones queries they draw most of the attention, an initial sink every head
// dumps on and planted hidden sinks (the detector counts hidden sinks only in heads that dump on
// an initial sink). Several such tokens share the attention, so the tests that plant them lower
// the detector's alpha.
std::vector<float> kv_rows(std::uint64_t salt, std::uint32_t il, std::int64_t pos, bool planted) {
  kvcache::StreamConfig shape;
  shape.n_kv_heads = kKvHeads;
  shape.head_dim = kDim;
  std::vector<float> r = kvtest::synth_rows(shape, salt, il, pos);
  if (planted && salt == kvtest::kSaltK && (pos == 0 || pos % 7 == 5)) r.assign(r.size(), 2.f);
  return r;
}

// Admits token `pos` and appends its K/V in every layer, through the C API.
kvc_status push(kvc_stream* s, std::int64_t pos, bool planted = false) {
  const auto id = static_cast<std::int32_t>(pos % 1000);
  if (const kvc_status st = kvc_stream_begin(s, &id, 1); st != KVC_OK) return st;
  for (std::uint32_t il = 0; il < kLayers; ++il) {
    const std::vector<float> k = kv_rows(kvtest::kSaltK, il, pos, planted);
    const std::vector<float> v = kv_rows(kvtest::kSaltV, il, pos, planted);
    if (const kvc_status st = kvc_stream_append(s, il, k.data(), v.data(), k.size()); st != KVC_OK) return st;
  }
  return KVC_OK;
}

// The same through the C++ API.
void push(kvcache::StreamCache& cache, std::int64_t pos, bool planted) {
  const auto id = static_cast<std::int32_t>(pos % 1000);
  cache.begin({&id, 1});
  for (std::uint32_t il = 0; il < kLayers; ++il) {
    cache.append(il, kv_rows(kvtest::kSaltK, il, pos, planted), kv_rows(kvtest::kSaltV, il, pos, planted));
  }
}

// A query for `layer` at `pos`: pseudo-random, or all ones with `planted` (see kv_rows).
std::vector<float> query(std::uint32_t il, std::int64_t pos, bool planted = false) {
  std::vector<float> q(std::size_t{kHeads} * kDim, 1.f);
  if (planted) return q;
  for (std::size_t i = 0; i < q.size(); ++i)
    q[i] = 2.f * kvtest::synth(97, il, static_cast<std::uint64_t>(pos), 0, i);
  return q;
}

kvc_stream_stats stats_of(const kvc_stream* s) {
  kvc_stream_stats st{};
  REQUIRE(kvc_stream_stats_get(s, &st) == KVC_OK);
  return st;
}

std::vector<kvc_token_info> tokens_of(const kvc_stream* s) {
  std::size_t n = 0;
  REQUIRE(kvc_stream_tokens(s, nullptr, 0, &n) == KVC_OK);
  std::vector<kvc_token_info> t(n);
  REQUIRE(kvc_stream_tokens(s, t.data(), t.size(), &n) == KVC_OK);
  return t;
}

}  // namespace

TEST_CASE("c api: version, status names and the last-error message") {
  CHECK(kvc_version() == KVC_VERSION_MAJOR * 10000u + KVC_VERSION_MINOR * 100u + KVC_VERSION_PATCH);
  CHECK(std::string(kvc_version_string()) == std::to_string(KVC_VERSION_MAJOR) + "." +
                                                 std::to_string(KVC_VERSION_MINOR) + "." +
                                                 std::to_string(KVC_VERSION_PATCH));
  CHECK(std::string(kvc_status_name(KVC_POOL_EXHAUSTED)) == "KVC_POOL_EXHAUSTED");
  CHECK(std::string(kvc_status_name(KVC_INTERNAL)) == "KVC_INTERNAL");
  CHECK(std::string(kvc_test_status_name(42)) == "KVC_UNKNOWN");

  CHECK(kvc_pool_stats_get(nullptr, nullptr) == KVC_INVALID_ARGUMENT);
  CHECK(error_mentions("kvc_pool_stats_get: pool is NULL"));
  // Success clears it; the message is per thread.
  std::size_t b = 0;
  CHECK(kvc_page_bytes(4, 1, 2, KVC_DTYPE_F32, &b) == KVC_OK);
  CHECK(std::string(kvc_last_error()).empty());
  CHECK(kvc_pool_stats_get(nullptr, nullptr) == KVC_INVALID_ARGUMENT);
  std::string other = "unset";
  std::thread([&] { other = kvc_last_error(); }).join();
  CHECK(other.empty());
  CHECK(error_mentions("pool is NULL"));
}

TEST_CASE("c api: kvc_page_bytes equals PageLayout::page_bytes and rejects bad layouts") {
  std::size_t b = 0;
  CHECK(kvc_page_bytes(16, 8, 64, KVC_DTYPE_F16, &b) == KVC_OK);
  CHECK(b == kvcache::PageLayout{16, 8, 64, kvcache::DType::f16}.page_bytes());
  CHECK(kvc_page_bytes(16, 8, 64, KVC_DTYPE_F32, &b) == KVC_OK);
  CHECK(b == std::size_t{2} * 16 * 8 * 64 * 4);
  CHECK(kvc_page_bytes(16, 8, 64, KVC_DTYPE_F32, nullptr) == KVC_INVALID_ARGUMENT);
  CHECK(kvc_page_bytes(0, 8, 64, KVC_DTYPE_F32, &b) == KVC_INVALID_ARGUMENT);
  CHECK(error_mentions("page_tokens"));
  CHECK(kvc_page_bytes(16, 0, 64, KVC_DTYPE_F32, &b) == KVC_INVALID_ARGUMENT);
  CHECK(kvc_page_bytes(16, 8, 0, KVC_DTYPE_F32, &b) == KVC_INVALID_ARGUMENT);
  CHECK(kvc_page_bytes(65536, 65536, 65536, KVC_DTYPE_F32, &b) == KVC_INVALID_ARGUMENT);
  CHECK(error_mentions("2 GiB"));
  CHECK(kvc_test_page_bytes(16, 8, 64, 7, &b) == KVC_INVALID_ARGUMENT);
  CHECK(error_mentions("dtype 7"));
  CHECK(kvc_page_bytes(16, 8, 64, KVC_DTYPE_SAME, &b) == KVC_INVALID_ARGUMENT);
  CHECK(kvc_page_bytes(16, 8, 64, KVC_DTYPE_Q8, &b) == KVC_OK);
  CHECK(b == kvcache::PageLayout{16, 8, 64, kvcache::DType::q8}.page_bytes());
  CHECK(kvc_page_bytes(16, 8, 64, KVC_DTYPE_Q4, &b) == KVC_OK);
  CHECK(b == kvcache::PageLayout{16, 8, 64, kvcache::DType::q4}.page_bytes());
  CHECK(kvc_page_bytes(16, 8, 7, KVC_DTYPE_Q4, &b) == KVC_INVALID_ARGUMENT);
  CHECK(error_mentions("even head_dim"));
}

TEST_CASE("c api: pool create, stats and destroy") {
  kvc_pool* p = reinterpret_cast<kvc_pool*>(&p);  // not NULL: failures must reset it
  CHECK(kvc_pool_create(0, 4096, &p) == KVC_INVALID_ARGUMENT);
  CHECK(p == nullptr);
  CHECK(kvc_pool_create(4096, 100, &p) == KVC_INVALID_ARGUMENT);
  CHECK(p == nullptr);
  CHECK(kvc_pool_create(4096, 8192, nullptr) == KVC_INVALID_ARGUMENT);
  CHECK(error_mentions("out is NULL"));
  kvc_pool_destroy(nullptr);  // a no-op

  REQUIRE(kvc_pool_create(100, 10 * 128, &p) == KVC_OK);
  PoolPtr pool(p);
  kvc_pool_stats st{};
  CHECK(kvc_pool_stats_get(pool.get(), nullptr) == KVC_INVALID_ARGUMENT);
  REQUIRE(kvc_pool_stats_get(pool.get(), &st) == KVC_OK);
  CHECK(st.page_bytes == 128);  // rounded up to 64
  CHECK(st.pages_max == 10);
  CHECK(st.pages_in_use == 0);
  CHECK(st.failed_allocations == 0);
}

TEST_CASE("c api: stream creation validates the config and names the field") {
  PoolPtr pool = make_pool(64);
  kvc_stream* s = reinterpret_cast<kvc_stream*>(&s);
  const kvc_stream_config good = c_config(KVC_POLICY_SINKS, 10);
  CHECK(kvc_stream_create(nullptr, &good, &s) == KVC_INVALID_ARGUMENT);
  CHECK(s == nullptr);
  CHECK(error_mentions("pool is NULL"));
  CHECK(kvc_stream_create(pool.get(), nullptr, &s) == KVC_INVALID_ARGUMENT);
  CHECK(error_mentions("config is NULL"));
  CHECK(kvc_stream_create(pool.get(), &good, nullptr) == KVC_INVALID_ARGUMENT);
  kvc_stream_destroy(nullptr);  // a no-op

  auto rejects = [&](auto edit, const char* field) {
    kvc_stream_config c = good;
    edit(c);
    kvc_stream* out = nullptr;
    const kvc_status st = kvc_stream_create(pool.get(), &c, &out);
    CHECK(out == nullptr);
    CHECK(st == KVC_INVALID_ARGUMENT);
    INFO(kvc_last_error());
    CHECK(error_mentions(field));
  };
  rejects([](kvc_stream_config& c) { c.n_layers = 0; }, "n_layers");
  rejects([](kvc_stream_config& c) { c.n_kv_heads = 0; }, "n_kv_heads");
  rejects([](kvc_stream_config& c) { c.head_dim = 3; }, "even");
  rejects([](kvc_stream_config& c) { c.page_tokens = 0; }, "page_tokens");
  rejects([](kvc_stream_config& c) { c.budget = 0; }, "budget");
  rejects([](kvc_stream_config& c) { c.sinks = 10; }, "sinks");
  rejects([](kvc_stream_config& c) { c.rope_theta = 0.5; }, "theta");
  rejects([](kvc_stream_config& c) { c.head_dim = 64; }, "smaller than");
  rejects([](kvc_stream_config& c) { set_raw(c.dtype, 4); }, "dtype 4");
  rejects([](kvc_stream_config& c) { c.dtype = KVC_DTYPE_SAME; }, "dtype -1");
  rejects([](kvc_stream_config& c) { set_raw(c.pinned_dtype, 9); }, "pinned_dtype 9");
  rejects([](kvc_stream_config& c) { set_raw(c.positions, -1); }, "positions -1");
  rejects([](kvc_stream_config& c) { set_raw(c.rope_style, 3); }, "rope_style 3");
  rejects([](kvc_stream_config& c) { set_raw(c.policy, 5); }, "policy 5");
  rejects(
      [](kvc_stream_config& c) {
        c.detector = 1;
        c.n_heads = 3;
      },
      "multiple of n_kv_heads");
  rejects(
      [](kvc_stream_config& c) {
        c.detector = 1;
        c.detector_alpha = 1.f;
      },
      "alpha");
  rejects(
      [](kvc_stream_config& c) {
        c.detector = 1;
        c.detector_decay = 1.f;
      },
      "decay");
}

TEST_CASE("c api: config defaults match the C++ defaults") {
  kvc_stream_config c;
  std::memset(&c, 0xff, sizeof c);
  kvc_stream_config_init(&c);
  kvc_stream_config_init(nullptr);
  const kvcache::StreamConfig cpp;
  CHECK(c.n_layers == 0);
  CHECK(c.n_heads == 0);
  CHECK(c.page_tokens == cpp.page_tokens);
  CHECK(c.dtype == KVC_DTYPE_F32);
  CHECK(c.pinned_dtype == KVC_DTYPE_SAME);
  CHECK(c.positions == KVC_POSITIONS_REINDEXED);
  CHECK(c.rope_style == KVC_ROPE_ADJACENT_PAIRS);
  CHECK(c.rope_theta == cpp.rope.theta);
  CHECK(c.policy == KVC_POLICY_FULL);
  CHECK(c.sinks == cpp.policy.sinks);
  CHECK(c.hidden_sinks == cpp.policy.hidden_sinks);
  CHECK(c.min_sink_heads == cpp.policy.min_sink_heads);
  CHECK(c.detector == 0);
  CHECK(c.detector_alpha == kvcache::SinkDetectorOptions{}.alpha);
  CHECK(c.detector_decay == kvcache::SinkDetectorOptions{}.decay);
}

TEST_CASE("c api: begin, append, attend, observe, tokens, stats, reset reject bad calls and change nothing") {
  PoolPtr pool = make_pool(64);
  StreamPtr stream = make_stream(pool.get(), c_config(KVC_POLICY_SINKS, 10));
  kvc_stream* s = stream.get();
  for (std::int64_t t = 0; t < 13; ++t) REQUIRE(push(s, t) == KVC_OK);
  const std::vector<kvc_token_info> before = tokens_of(s);
  const kvc_stream_stats st0 = stats_of(s);
  const std::int32_t id = 5;
  std::vector<float> q = query(0, 13), out(q.size()), mass(std::size_t{kHeads} * st0.tokens_kept);
  const std::size_t row = std::size_t{kKvHeads} * kDim;
  std::vector<float> kv(row);

  // begin
  CHECK(kvc_stream_begin(nullptr, &id, 1) == KVC_INVALID_ARGUMENT);
  CHECK(error_mentions("kvc_stream_begin: stream is NULL"));
  CHECK(kvc_stream_begin(s, nullptr, 1) == KVC_INVALID_ARGUMENT);
  CHECK(kvc_stream_begin(s, &id, 0) == KVC_INVALID_ARGUMENT);
  CHECK(error_mentions("no tokens"));
  const std::vector<std::int32_t> too_many(9, 1);  // 9 > budget 10 - 2 sinks
  CHECK(kvc_stream_begin(s, too_many.data(), too_many.size()) == KVC_INVALID_ARGUMENT);

  // append (nothing pending: every layer already written)
  CHECK(kvc_stream_append(nullptr, 0, kv.data(), kv.data(), row) == KVC_INVALID_ARGUMENT);
  CHECK(kvc_stream_append(s, 0, nullptr, kv.data(), row) == KVC_INVALID_ARGUMENT);
  CHECK(kvc_stream_append(s, 0, kv.data(), nullptr, row) == KVC_INVALID_ARGUMENT);
  CHECK(kvc_stream_append(s, 0, kv.data(), kv.data(), row) == KVC_INVALID_ARGUMENT);
  CHECK(error_mentions("call begin first"));
  CHECK(kvc_stream_append(s, kLayers, kv.data(), kv.data(), row) == KVC_INVALID_ARGUMENT);
  CHECK(error_mentions("out of range"));

  // attend
  const std::size_t nq = q.size();
  CHECK(kvc_stream_attend(nullptr, 0, kHeads, q.data(), nq, out.data(), nq, nullptr, 0, nullptr) ==
        KVC_INVALID_ARGUMENT);
  CHECK(kvc_stream_attend(s, 0, kHeads, nullptr, nq, out.data(), nq, nullptr, 0, nullptr) ==
        KVC_INVALID_ARGUMENT);
  CHECK(kvc_stream_attend(s, 0, kHeads, q.data(), nq, nullptr, nq, nullptr, 0, nullptr) ==
        KVC_INVALID_ARGUMENT);
  CHECK(kvc_stream_attend(s, 0, kHeads, q.data(), nq - 1, out.data(), nq, nullptr, 0, nullptr) ==
        KVC_INVALID_ARGUMENT);
  CHECK(kvc_stream_attend(s, 0, kHeads, q.data(), nq, out.data(), nq + 1, nullptr, 0, nullptr) ==
        KVC_INVALID_ARGUMENT);
  CHECK(kvc_stream_attend(s, 0, kHeads, q.data(), nq, out.data(), nq, mass.data(), mass.size() - 1,
                          nullptr) == KVC_INVALID_ARGUMENT);
  CHECK(kvc_stream_attend(s, 0, kHeads, q.data(), nq, out.data(), nq, nullptr, 4, nullptr) ==
        KVC_INVALID_ARGUMENT);
  CHECK(error_mentions("mass is NULL"));
  CHECK(kvc_stream_attend(s, kLayers, kHeads, q.data(), nq, out.data(), nq, nullptr, 0, nullptr) ==
        KVC_INVALID_ARGUMENT);
  CHECK(kvc_stream_attend(s, 0, 3, q.data(), 3 * kDim, out.data(), 3 * kDim, nullptr, 0, nullptr) ==
        KVC_INVALID_ARGUMENT);  // not a multiple of n_kv_heads
  kvc_attend_options opt;
  kvc_attend_options_init(&opt);
  kvc_attend_options_init(nullptr);
  CHECK(opt.query_index == -1);
  opt.flags = 4;
  CHECK(kvc_stream_attend(s, 0, kHeads, q.data(), nq, out.data(), nq, nullptr, 0, &opt) ==
        KVC_INVALID_ARGUMENT);
  CHECK(error_mentions("flags"));
  kvc_attend_options_init(&opt);
  opt.query_index = st0.tokens_kept;
  CHECK(kvc_stream_attend(s, 0, kHeads, q.data(), nq, out.data(), nq, nullptr, 0, &opt) ==
        KVC_INVALID_ARGUMENT);
  kvc_attend_options_init(&opt);
  opt.scale = -1.f;
  CHECK(kvc_stream_attend(s, 0, kHeads, q.data(), nq, out.data(), nq, nullptr, 0, &opt) ==
        KVC_INVALID_ARGUMENT);

  // observe
  CHECK(kvc_stream_observe(nullptr, 0, kHeads, mass.data(), mass.size()) == KVC_INVALID_ARGUMENT);
  CHECK(kvc_stream_observe(s, 0, kHeads, nullptr, mass.size()) == KVC_INVALID_ARGUMENT);
  CHECK(kvc_stream_observe(s, kLayers, kHeads, mass.data(), mass.size()) == KVC_INVALID_ARGUMENT);
  CHECK(kvc_stream_observe(s, 0, kHeads, mass.data(), mass.size() + 1) == KVC_INVALID_ARGUMENT);
  CHECK(kvc_stream_observe(s, 0, 0, mass.data(), 0) == KVC_INVALID_ARGUMENT);

  // tokens, stats, reset
  std::size_t n = 0;
  std::vector<kvc_token_info> small(3);
  CHECK(kvc_stream_tokens(nullptr, nullptr, 0, &n) == KVC_INVALID_ARGUMENT);
  CHECK(kvc_stream_tokens(s, small.data(), small.size(), nullptr) == KVC_INVALID_ARGUMENT);
  CHECK(kvc_stream_tokens(s, small.data(), small.size(), &n) == KVC_INVALID_ARGUMENT);
  CHECK(n == st0.tokens_kept);  // still reported, to size a buffer
  CHECK(error_mentions("capacity 3"));
  kvc_stream_stats st{};
  CHECK(kvc_stream_stats_get(nullptr, &st) == KVC_INVALID_ARGUMENT);
  CHECK(kvc_stream_stats_get(s, nullptr) == KVC_INVALID_ARGUMENT);
  CHECK(kvc_stream_reset(nullptr) == KVC_INVALID_ARGUMENT);

  // Nothing changed, and the stream carries on.
  const std::vector<kvc_token_info> after = tokens_of(s);
  REQUIRE(after.size() == before.size());
  for (std::size_t i = 0; i < after.size(); ++i) {
    CHECK(after[i].pos == before[i].pos);
    CHECK(after[i].score == before[i].score);
  }
  const kvc_stream_stats st1 = stats_of(s);
  CHECK(st1.tokens_seen == st0.tokens_seen);
  CHECK(st1.pages == st0.pages);
  CHECK(st1.n_pending == 1);  // the last begin admitted one token
  CHECK(kvc_stream_attend(s, 0, kHeads, q.data(), nq, out.data(), nq, mass.data(), mass.size(), nullptr) ==
        KVC_OK);
  CHECK(push(s, 13) == KVC_OK);

  // A layer not yet appended cannot be attended; the pending count shows the batch.
  REQUIRE(kvc_stream_begin(s, &id, 1) == KVC_OK);
  CHECK(stats_of(s).n_pending == 1);
  CHECK(kvc_stream_attend(s, 0, kHeads, q.data(), nq, out.data(), nq, nullptr, 0, nullptr) ==
        KVC_INVALID_ARGUMENT);
  CHECK(error_mentions("not yet appended"));
  CHECK(kvc_stream_begin(s, &id, 1) == KVC_INVALID_ARGUMENT);
  CHECK(error_mentions("never appended"));
  CHECK(kvc_stream_append(s, 0, kv.data(), kv.data(), row + 1) == KVC_INVALID_ARGUMENT);
  CHECK(error_mentions("expected 16 floats"));
  CHECK(kvc_stream_append(s, 0, kv.data(), kv.data(), row) == KVC_OK);
  CHECK(kvc_stream_append(s, 1, kv.data(), kv.data(), row) == KVC_OK);
  CHECK(kvc_stream_attend(s, 1, kHeads, q.data(), nq, out.data(), nq, nullptr, 0, nullptr) == KVC_OK);
}

TEST_CASE("c api: pool exhaustion is KVC_POOL_EXHAUSTED and the stream stays usable") {
  // 2 layers x 2 pages: a full-policy stream fits 2 pages' worth of tokens (8) in each layer.
  PoolPtr pool = make_pool(4);
  StreamPtr stream = make_stream(pool.get(), c_config(KVC_POLICY_FULL, 0));
  std::int64_t t = 0;
  kvc_status st = KVC_OK;
  for (; t < 100; ++t) {
    st = push(stream.get(), t);
    if (st != KVC_OK) break;
  }
  CHECK(st == KVC_POOL_EXHAUSTED);
  CHECK(error_mentions("kvc_stream_begin: PagePool exhausted"));
  CHECK(t == 2 * kPageTokens);
  const kvc_stream_stats s0 = stats_of(stream.get());
  CHECK(s0.tokens_seen == 2 * kPageTokens);
  CHECK(s0.n_pending == 1);  // still the last successful begin's batch
  kvc_pool_stats ps{};
  REQUIRE(kvc_pool_stats_get(pool.get(), &ps) == KVC_OK);
  CHECK(ps.pages_in_use == 4);
  CHECK(ps.failed_allocations >= 1);
  std::vector<float> q = query(0, t), out(q.size());
  CHECK(kvc_stream_attend(stream.get(), 0, kHeads, q.data(), q.size(), out.data(), out.size(), nullptr, 0,
                          nullptr) == KVC_OK);

  // Reset gives every page back; the same stream then continues from position 0.
  CHECK(kvc_stream_reset(stream.get()) == KVC_OK);
  REQUIRE(kvc_pool_stats_get(pool.get(), &ps) == KVC_OK);
  CHECK(ps.pages_in_use == 0);
  const kvc_stream_stats s1 = stats_of(stream.get());
  CHECK(s1.tokens_seen == 0);
  CHECK(s1.pages == 0);
  CHECK(push(stream.get(), 0) == KVC_OK);
  CHECK(tokens_of(stream.get()).at(0).pos == 0);
}

TEST_CASE("c api: a stream keeps its pool alive after kvc_pool_destroy") {
  kvc_pool* pool = nullptr;
  REQUIRE(kvc_pool_create(page_bytes(), 64 * page_bytes(), &pool) == KVC_OK);
  StreamPtr stream = make_stream(pool, c_config(KVC_POLICY_WINDOW, 8));
  kvc_pool_destroy(pool);  // the stream still holds the PagePool (ASan would flag a use after free)
  for (std::int64_t t = 0; t < 40; ++t) REQUIRE(push(stream.get(), t) == KVC_OK);
  std::vector<float> q = query(1, 40), out(q.size());
  CHECK(kvc_stream_attend(stream.get(), 1, kHeads, q.data(), q.size(), out.data(), out.size(), nullptr, 0,
                          nullptr) == KVC_OK);
  CHECK(stats_of(stream.get()).tokens_kept == 8);
}

namespace {

// Streams `n` tokens through the C API and through the C++ API with the same inputs, attending
// in every layer (and feeding the mass back when `observe`), and checks that outputs, masses,
// kept tokens (with scores and sink counts) and stats are identical at every step.
void check_same_as_cpp(kvc_stream_config c, kvcache::StreamConfig cpp, bool observe, bool reference, int n,
                       bool planted = false) {
  std::size_t bytes = 0;
  REQUIRE(kvc_page_bytes(c.page_tokens, c.n_kv_heads, c.head_dim, c.dtype, &bytes) == KVC_OK);
  kvc_pool* raw_pool = nullptr;
  REQUIRE(kvc_pool_create(bytes, 256 * bytes, &raw_pool) == KVC_OK);
  PoolPtr c_pool(raw_pool);
  StreamPtr c_stream = make_stream(c_pool.get(), c);
  std::optional<kvcache::SinkDetector> detector;
  if (c.detector) {
    detector.emplace(kLayers, kHeads, kvcache::SinkDetectorOptions{c.detector_alpha, c.detector_decay});
    cpp.token_state_floats = detector->state_floats();
  }
  auto cpp_pool = kvtest::make_pool(cpp, 256);
  kvcache::StreamCache cache(cpp_pool, cpp);

  kvc_attend_options opt;
  kvc_attend_options_init(&opt);
  opt.flags = (observe ? KVC_ATTEND_OBSERVE : 0u) | (reference ? KVC_ATTEND_REFERENCE : 0u);
  for (int t = 0; t < n; ++t) {
    REQUIRE(push(c_stream.get(), t, planted) == KVC_OK);
    push(cache, t, planted);
    const std::uint32_t n_kept = cache.n_kept();
    for (std::uint32_t il = 0; il < kLayers; ++il) {
      const std::vector<float> q = query(il, t, planted);
      std::vector<float> out_c(q.size()), out_cpp(q.size());
      std::vector<float> mass_c(std::size_t{kHeads} * n_kept), mass_cpp(mass_c.size());
      // Every other step the C side gets no mass buffer: OBSERVE must then use its own.
      const bool give_mass = t % 2 == 0;
      REQUIRE(kvc_stream_attend(c_stream.get(), il, kHeads, q.data(), q.size(), out_c.data(), out_c.size(),
                                give_mass ? mass_c.data() : nullptr, give_mass ? mass_c.size() : 0,
                                &opt) == KVC_OK);
      const kvcache::AttendOptions o{kHeads, 0.f, -1};
      if (reference) {
        kvcache::attend_reference(cache, il, q, out_cpp, mass_cpp, o);
      } else {
        kvcache::attend(cache, il, q, out_cpp, mass_cpp, o);
      }
      if (observe) {
        if (detector) {
          detector->observe(cache, il, mass_cpp);
        } else {
          std::vector<float> sum(n_kept, 0.f);
          for (std::size_t h = 0; h < kHeads; ++h) {
            for (std::size_t j = 0; j < n_kept; ++j) sum[j] += mass_cpp[h * n_kept + j];
          }
          cache.add_scores(sum);
        }
      }
      REQUIRE(out_c == out_cpp);
      if (give_mass) REQUIRE(mass_c == mass_cpp);
    }
    const std::vector<kvc_token_info> kc = tokens_of(c_stream.get());
    const std::vector<kvcache::KeptToken> kp = cache.tokens();
    REQUIRE(kc.size() == kp.size());
    for (std::size_t i = 0; i < kc.size(); ++i) {
      REQUIRE(kc[i].pos == kp[i].meta.pos);
      REQUIRE(kc[i].cache_pos == kp[i].cache_pos);
      REQUIRE(kc[i].token == kp[i].meta.token);
      REQUIRE(kc[i].score == kp[i].meta.score);
      REQUIRE(kc[i].sink_heads == kp[i].meta.sink_heads);
      REQUIRE(kc[i].pin == static_cast<std::uint8_t>(kp[i].meta.pin));
    }
    const kvc_stream_stats sc = stats_of(c_stream.get());
    const kvcache::StreamStats sp = cache.stats();
    REQUIRE(sc.tokens_seen == sp.tokens_seen);
    REQUIRE(sc.tokens_kept == sp.tokens_kept);
    REQUIRE(sc.tokens_pinned == sp.tokens_pinned);
    REQUIRE(sc.tokens_evicted == sp.tokens_evicted);
    REQUIRE(sc.pages == sp.pages);
    REQUIRE(sc.kv_bytes == sp.kv_bytes);
    REQUIRE(sc.kv_bytes_peak == sp.kv_bytes_peak);
    REQUIRE(sc.staging_bytes == sp.staging_bytes);
    if (t == n - 1 && planted) {
      // The planted sinks were detected and pinned: the detector path really ran.
      bool any_hidden = false;
      for (const kvc_token_info& k : kc) any_hidden = any_hidden || k.pin == KVC_PIN_HIDDEN_SINK;
      CHECK(any_hidden);
    }
  }
}

}  // namespace

TEST_CASE("c api: results equal the C++ API's for the same inputs") {
  SUBCASE("sinks, SIMD attention") {
    check_same_as_cpp(c_config(KVC_POLICY_SINKS, 12), cpp_config(kvcache::PolicyKind::sinks, 12), false,
                      false, 60);
  }
  SUBCASE("window, f16, absolute positions, half-split RoPE, reference attention") {
    kvc_stream_config c = c_config(KVC_POLICY_WINDOW, 9);
    c.dtype = KVC_DTYPE_F16;
    c.positions = KVC_POSITIONS_ABSOLUTE;
    c.rope_style = KVC_ROPE_HALF_SPLIT;
    c.rope_theta = 500000.0;
    kvcache::StreamConfig cpp = cpp_config(kvcache::PolicyKind::window, 9);
    cpp.dtype = kvcache::DType::f16;
    cpp.positions = kvcache::PositionMode::absolute;
    cpp.rope = {kvcache::RopeStyle::half_split, 500000.0};
    check_same_as_cpp(c, cpp, false, true, 40);
  }
  SUBCASE("q4 window with f16 sinks, and q8") {
    kvc_stream_config c = c_config(KVC_POLICY_SINKS, 12);
    c.dtype = KVC_DTYPE_Q4;
    c.pinned_dtype = KVC_DTYPE_F16;
    kvcache::StreamConfig cpp = cpp_config(kvcache::PolicyKind::sinks, 12);
    cpp.dtype = kvcache::DType::q4;
    cpp.pinned_dtype = kvcache::DType::f16;
    check_same_as_cpp(c, cpp, false, false, 50);
    c.dtype = KVC_DTYPE_Q8;
    c.pinned_dtype = KVC_DTYPE_SAME;
    cpp.dtype = kvcache::DType::q8;
    cpp.pinned_dtype.reset();
    check_same_as_cpp(c, cpp, false, true, 30);
  }
  SUBCASE("hidden sinks with the detector fed by KVC_ATTEND_OBSERVE, planted sinks, no RoPE") {
    kvc_stream_config c = c_config(KVC_POLICY_HIDDEN_SINKS, 12);
    c.detector = 1;
    c.n_heads = kHeads;
    c.rope_style = KVC_ROPE_NONE;
    c.detector_alpha = 1.5f;
    kvcache::StreamConfig cpp = cpp_config(kvcache::PolicyKind::hidden_sinks, 12);
    cpp.rope.style = kvcache::RopeStyle::none;
    check_same_as_cpp(c, cpp, true, false, 80, true);
  }
  SUBCASE("hidden sinks with the detector, RoPE, random queries") {
    kvc_stream_config c = c_config(KVC_POLICY_HIDDEN_SINKS, 12);
    c.detector = 1;
    c.n_heads = kHeads;
    c.detector_alpha = 1.5f;
    check_same_as_cpp(c, cpp_config(kvcache::PolicyKind::hidden_sinks, 12), true, false, 80);
  }
  SUBCASE("h2o with scores fed by KVC_ATTEND_OBSERVE") {
    kvc_stream_config c = c_config(KVC_POLICY_H2O, 12);
    c.heavy = 4;
    kvcache::StreamConfig cpp = cpp_config(kvcache::PolicyKind::h2o, 12);
    cpp.policy.heavy = 4;
    check_same_as_cpp(c, cpp, true, false, 80);
  }
}

TEST_CASE(
    "c api: kvc_stream_observe equals attend with KVC_ATTEND_OBSERVE, and checks the detector's heads") {
  kvc_stream_config c = c_config(KVC_POLICY_HIDDEN_SINKS, 12);
  c.detector = 1;
  c.n_heads = kHeads;
  c.rope_style = KVC_ROPE_NONE;
  c.detector_alpha = 1.5f;
  PoolPtr pool = make_pool(256);
  StreamPtr a = make_stream(pool.get(), c), b = make_stream(pool.get(), c);
  kvc_attend_options observe;
  kvc_attend_options_init(&observe);
  observe.flags = KVC_ATTEND_OBSERVE;
  for (int t = 0; t < 50; ++t) {
    REQUIRE(push(a.get(), t, true) == KVC_OK);
    REQUIRE(push(b.get(), t, true) == KVC_OK);
    const std::size_t n_kept = stats_of(a.get()).tokens_kept;
    for (std::uint32_t il = 0; il < kLayers; ++il) {
      const std::vector<float> q = query(il, t, true);
      std::vector<float> out(q.size()), mass(kHeads * n_kept);
      REQUIRE(kvc_stream_attend(a.get(), il, kHeads, q.data(), q.size(), out.data(), out.size(), nullptr, 0,
                                &observe) == KVC_OK);
      REQUIRE(kvc_stream_attend(b.get(), il, kHeads, q.data(), q.size(), out.data(), out.size(), mass.data(),
                                mass.size(), nullptr) == KVC_OK);
      REQUIRE(kvc_stream_observe(b.get(), il, kHeads, mass.data(), mass.size()) == KVC_OK);
    }
  }
  const std::vector<kvc_token_info> ta = tokens_of(a.get()), tb = tokens_of(b.get());
  REQUIRE(ta.size() == tb.size());
  bool any_hidden = false;
  for (std::size_t i = 0; i < ta.size(); ++i) {
    CHECK(ta[i].pos == tb[i].pos);
    CHECK(ta[i].score == tb[i].score);
    CHECK(ta[i].sink_heads == tb[i].sink_heads);
    any_hidden = any_hidden || ta[i].pin == KVC_PIN_HIDDEN_SINK;
  }
  CHECK(any_hidden);  // the detector path really ran

  // The detector was built for kHeads query heads: 2 (= n_kv_heads) is refused before attending.
  std::vector<float> q(2 * kDim), out(q.size());
  CHECK(kvc_stream_attend(a.get(), 0, 2, q.data(), q.size(), out.data(), out.size(), nullptr, 0, &observe) ==
        KVC_INVALID_ARGUMENT);
  CHECK(error_mentions("detector"));
  const std::size_t n_kept = stats_of(a.get()).tokens_kept;
  std::vector<float> mass(2 * n_kept);
  CHECK(kvc_stream_observe(a.get(), 0, 2, mass.data(), mass.size()) == KVC_INVALID_ARGUMENT);
}

TEST_CASE("c api: save and restore a stream; a bad file is KVC_FORMAT_ERROR and changes nothing") {
  PoolPtr pool = make_pool(256);
  StreamPtr a = make_stream(pool.get(), c_config(KVC_POLICY_SINKS, 16));
  StreamPtr b = make_stream(pool.get(), c_config(KVC_POLICY_SINKS, 16));
  for (std::int64_t t = 0; t < 40; ++t) REQUIRE(push(a.get(), t) == KVC_OK);
  const std::string path = (std::filesystem::temp_directory_path() / "kvcache_c_api_snapshot.snap").string();
  REQUIRE(kvc_stream_save(a.get(), path.c_str()) == KVC_OK);
  REQUIRE(kvc_stream_restore(b.get(), path.c_str()) == KVC_OK);
  CHECK(stats_of(b.get()).tokens_seen == 40);
  CHECK(tokens_of(b.get()).size() == tokens_of(a.get()).size());
  std::vector<float> q = query(0, 40), oa(q.size()), ob(q.size());
  REQUIRE(kvc_stream_attend(a.get(), 0, kHeads, q.data(), q.size(), oa.data(), oa.size(), nullptr, 0,
                            nullptr) == KVC_OK);
  REQUIRE(kvc_stream_attend(b.get(), 0, kHeads, q.data(), q.size(), ob.data(), ob.size(), nullptr, 0,
                            nullptr) == KVC_OK);
  CHECK(oa == ob);
  {
    std::FILE* f = std::fopen(path.c_str(), "r+b");
    REQUIRE(f != nullptr);
    std::fseek(f, 100, SEEK_SET);
    std::fputc(0x5a, f);
    std::fclose(f);
  }
  CHECK(kvc_stream_restore(b.get(), path.c_str()) == KVC_FORMAT_ERROR);
  CHECK(error_mentions("checksum"));
  CHECK(stats_of(b.get()).tokens_seen == 40);
  CHECK(kvc_stream_restore(b.get(), nullptr) == KVC_INVALID_ARGUMENT);
  CHECK(kvc_stream_save(nullptr, path.c_str()) == KVC_INVALID_ARGUMENT);
  std::filesystem::remove(path);
}
