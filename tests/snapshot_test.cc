// Snapshot round trip and corruption handling.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "kvcache/attention.h"
#include "kvcache/error.h"
#include "kvcache/sink_detector.h"
#include "tests/test_support.h"

using namespace kvcache;
namespace fs = std::filesystem;

namespace {

constexpr std::uint32_t kHeads = 4;

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("kvcache_snapshot_" + std::to_string(std::random_device{}()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
};

StreamConfig config(const SinkDetector& d, DType dt, DType pinned = DType::f32) {
  StreamConfig c{
      2, 2, 8, 4, dt, PositionMode::reindexed, {}, PolicyConfig::hidden(4, 3, 20, 1), d.state_floats()};
  c.pinned_dtype = pinned;
  return c;
}

// One decode step: append, attend every layer, feed the detector; returns the outputs.
std::vector<float> step(StreamCache& s, const SinkDetector& d) {
  kvtest::push_token(s);
  std::vector<float> all;
  const auto t = static_cast<std::uint64_t>(s.stats().tokens_seen);
  for (std::uint32_t il = 0; il < 2; ++il) {
    std::vector<float> q(kHeads * 8), out(q.size()), mass(kHeads * s.n_kept());
    for (std::size_t i = 0; i < q.size(); ++i) q[i] = 3.f * kvtest::synth(7, il, t, i, 0);
    attend_reference(s, il, q, out, mass, AttendOptions{kHeads});
    d.observe(s, il, mass);
    all.insert(all.end(), out.begin(), out.end());
  }
  return all;
}

}  // namespace

TEST_CASE("restore then continue equals never stopping") {
  // Every dtype, and mixed precision (hidden sinks move from the window into the pinned region and
  // are released from it, so q4 pages are rewritten mid-page and their key copies matter).
  const std::pair<DType, DType> kRegions[] = {{DType::f32, DType::f32}, {DType::f16, DType::f16},
                                              {DType::q8, DType::q8},   {DType::q4, DType::q4},
                                              {DType::q4, DType::f16},  {DType::f16, DType::q4}};
  for (const auto& [dt, pinned] : kRegions) {
    CAPTURE(dtype_name(dt));
    CAPTURE(dtype_name(pinned));
    TempDir dir;
    SinkDetector d(2, kHeads);
    const StreamConfig c = config(d, dt, pinned);
    auto pool = kvtest::make_pool(c, 256);
    StreamCache original(pool, c);
    for (int t = 0; t < 150; ++t) step(original, d);
    original.save(dir.path / "s.snap");
    CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator{}) == 1);  // no temp left
    StreamCache restored(pool, c);
    for (int t = 0; t < 7; ++t) step(restored, d);  // some unrelated history, replaced by restore
    restored.restore(dir.path / "s.snap");
    CHECK(restored.stats().tokens_seen == 150);
    CHECK(restored.n_kept() == original.n_kept());
    for (int t = 0; t < 60; ++t) {
      const std::vector<float> a = step(original, d), b = step(restored, d);
      REQUIRE(a == b);
      std::vector<std::int64_t> pa, pb;
      for (const KeptToken& k : original.tokens()) pa.push_back(k.meta.pos);
      for (const KeptToken& k : restored.tokens()) pb.push_back(k.meta.pos);
      REQUIRE(pa == pb);
    }
  }
}

TEST_CASE("a restored stream keeps its page layout, so SIMD attention continues bit for bit") {
  TempDir dir;
  const StreamConfig c{2, 2, 8, 4, DType::f32, PositionMode::reindexed, {}, PolicyConfig::streaming(2, 11),
                       0};
  auto pool = kvtest::make_pool(c, 256);
  StreamCache original(pool, c);
  auto simd_step = [](StreamCache& s) {
    kvtest::push_token(s);
    const auto t = static_cast<std::uint64_t>(s.stats().tokens_seen);
    std::vector<float> all;
    for (std::uint32_t il = 0; il < 2; ++il) {
      std::vector<float> q(kHeads * 8), out(q.size());
      for (std::size_t i = 0; i < q.size(); ++i) q[i] = 3.f * kvtest::synth(9, il, t, i, 0);
      attend(s, il, q, out, {}, AttendOptions{kHeads});
      all.insert(all.end(), out.begin(), out.end());
    }
    return all;
  };
  auto layout = [](const StreamCache& s) {
    std::vector<std::uint32_t> out;
    std::vector<KvSpan> spans;
    s.layer_spans(0, spans);
    for (const KvSpan& sp : spans) out.insert(out.end(), {sp.slot_begin, sp.n, sp.kept_begin});
    return out;
  };
  for (int t = 0; t < 30; ++t) simd_step(original);  // the window has wrapped: front != 0
  original.save(dir.path / "s.snap");
  StreamCache restored(pool, c);
  restored.restore(dir.path / "s.snap");
  CHECK(layout(restored) == layout(original));
  CHECK(layout(original).at(3 + 0) != 0);  // the window's first span starts mid-page
  for (int t = 0; t < 20; ++t) REQUIRE(simd_step(original) == simd_step(restored));
}

TEST_CASE("corrupted, truncated or mismatched snapshots are refused and change nothing") {
  TempDir dir;
  SinkDetector d(2, kHeads);
  const StreamConfig c = config(d, DType::f32);
  auto pool = kvtest::make_pool(c, 256);
  StreamCache src(pool, c);
  for (int t = 0; t < 40; ++t) step(src, d);
  const fs::path good = dir.path / "good.snap";
  src.save(good);
  std::ifstream in(good, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});

  StreamCache victim(pool, c);
  for (int t = 0; t < 25; ++t) step(victim, d);
  const std::vector<KeptToken> before = victim.tokens();
  const std::size_t pages_before = pool->stats().pages_in_use;
  auto refused = [&](const std::string& content, const char* expect) {
    const fs::path p = dir.path / "bad.snap";
    std::ofstream(p, std::ios::binary).write(content.data(), static_cast<std::streamsize>(content.size()));
    std::string msg;
    try {
      victim.restore(p);
    } catch (const FormatError& e) {
      msg = e.what();
    }
    CAPTURE(msg);
    CHECK(msg.find(expect) != std::string::npos);
    CHECK(msg.find("bad.snap") != std::string::npos);
    CHECK(victim.tokens().size() == before.size());
    CHECK(victim.stats().tokens_seen == 25);
    CHECK(pool->stats().pages_in_use == pages_before);
  };
  for (std::size_t cut : {std::size_t{0}, std::size_t{7}, std::size_t{20}, std::size_t{60}, bytes.size() / 2,
                          bytes.size() - 9, bytes.size() - 1}) {
    CAPTURE(cut);
    refused(bytes.substr(0, cut), cut < 8 ? "truncated" : (cut < 24 ? "" : "checksum"));
  }
  std::string flipped = bytes;
  flipped[bytes.size() / 2] ^= 0x40;
  refused(flipped, "checksum");
  refused("NOTASNAPxxxxxxxxxxxxxxxxxxxxxxxxx", "bad magic");

  StreamConfig other = c;
  other.policy.budget = 24;
  StreamCache different(pool, other);
  std::string msg;
  try {
    different.restore(good);
  } catch (const FormatError& e) {
    msg = e.what();
  }
  CHECK(msg.find("different budget") != std::string::npos);
  StreamConfig other_pinned = c;
  other_pinned.pinned_dtype = DType::f16;
  StreamCache different_pinned(pool, other_pinned);
  msg.clear();
  try {
    different_pinned.restore(good);
  } catch (const FormatError& e) {
    msg = e.what();
  }
  CHECK(msg.find("different pinned dtype") != std::string::npos);
  std::string v4 = bytes;
  v4[8] = 4;  // the version field: a format newer than this build
  refused(v4, "unsupported version 4");
  CHECK_THROWS_AS(victim.restore(dir.path / "missing.snap"), FormatError);
  std::int32_t id = 1;
  victim.begin({&id, 1});
  CHECK_THROWS_AS(victim.save(dir.path / "pending.snap"), InvalidArgument);
  CHECK_FALSE(fs::exists(dir.path / "pending.snap"));
}

TEST_CASE("a version 1 snapshot (one dtype, rows per token) still restores") {
  // Written before version 2 by the fuzz seed generator (tests/fuzz/make_seeds.cc, sinks_f32.snap;
  // kept under tests/data so regenerating the corpus cannot change it):
  // 1 layer, 1 KV head of 4 dims, 4-token pages, StreamingLLM with 2 sinks and budget 8, 20 tokens.
  const fs::path file = fs::path(KVCACHE_SOURCE_DIR) / "tests/data/snapshot_v1_sinks_f32.snap";
  std::ifstream in(file, std::ios::binary);
  REQUIRE(in);
  char header[12];
  in.read(header, sizeof header);
  REQUIRE(header[8] == 1);
  const StreamConfig c{1, 1, 4, 4, DType::f32, PositionMode::reindexed, {}, PolicyConfig::streaming(2, 8)};
  StreamCache s(kvtest::make_pool(c, 16), c);
  s.restore(file);
  CHECK(s.stats().tokens_seen == 20);
  CHECK(s.n_kept() == 8);
  CHECK(s.n_pinned() == 2);
  std::vector<float> k(4);
  s.read_key(0, 7, 0, k);
  CHECK(std::isfinite(k[0]));
  kvtest::push_token(s);  // and it continues
  CHECK(s.stats().tokens_seen == 21);
}
