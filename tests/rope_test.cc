// RoPE styles and Llama 3 frequency factors against a formula written out in double, through
// rope_rotate and through a StreamCache (keys read back, attention, snapshots).
#include "kvcache/rope.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "kvcache/attention.h"
#include "kvcache/error.h"
#include "tests/test_support.h"

using namespace kvcache;
namespace fs = std::filesystem;

namespace {

// Rotation of one head row from the definitions: pair i of `style` turns by
// pos * theta^(-2i/d) / factor_i, with (x[2i], x[2i+1]) for adjacent pairs and (x[i], x[i+d/2])
// for the half split of GPT-NeoX / HF.
std::vector<double> rope_oracle(std::vector<double> x, RopeStyle style, double theta, std::int64_t pos,
                                const std::vector<float>& factors) {
  const std::size_t d = x.size();
  for (std::size_t i = 0; i < d / 2; ++i) {
    double angle =
        static_cast<double>(pos) * std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(d));
    if (!factors.empty()) angle /= factors[i];
    const std::size_t a = style == RopeStyle::adjacent_pairs ? 2 * i : i;
    const std::size_t b = style == RopeStyle::adjacent_pairs ? 2 * i + 1 : i + d / 2;
    const double x0 = x[a], x1 = x[b];
    x[a] = x0 * std::cos(angle) - x1 * std::sin(angle);
    x[b] = x0 * std::sin(angle) + x1 * std::cos(angle);
  }
  return x;
}

// Llama 3.1-like factors: 1 for high frequencies, up to 8 for low ones, smooth in between.
std::vector<float> llama3_like_factors(std::uint32_t head_dim) {
  std::vector<float> f(head_dim / 2);
  for (std::size_t i = 0; i < f.size(); ++i)
    f[i] = 1.f + 7.f * static_cast<float>(i) / static_cast<float>(f.size());
  return f;
}

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("kvcache_rope_" + std::to_string(std::random_device{}()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
};

}  // namespace

TEST_CASE("rope_rotate matches the formula for both styles, with and without frequency factors") {
  constexpr std::uint32_t d = 16;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (RopeStyle style : {RopeStyle::adjacent_pairs, RopeStyle::half_split}) {
    for (bool with_factors : {false, true}) {
      for (double theta : {10000.0, 1000000.0}) {
        for (std::int64_t pos : {1, 7, 300, 123456}) {
          CAPTURE(static_cast<int>(style));
          CAPTURE(with_factors);
          CAPTURE(pos);
          RopeConfig rope{style, theta};
          if (with_factors) rope.freq_factors = llama3_like_factors(d);
          std::vector<float> x(2 * d);  // two heads: every row rotates alike
          for (float& v : x) v = u(rng);
          std::vector<float> got = x;
          rope_rotate(rope, d, static_cast<double>(pos), got);
          for (std::size_t h = 0; h < 2; ++h) {
            const std::vector<double> want =
                rope_oracle(std::vector<double>(x.begin() + h * d, x.begin() + (h + 1) * d), style, theta,
                            pos, rope.freq_factors);
            for (std::size_t i = 0; i < d; ++i) CHECK(std::abs(got[h * d + i] - want[i]) < 2e-6);
          }
        }
      }
    }
  }
}

TEST_CASE("frequency factors of 1 change nothing, and a factor slows its pair down") {
  constexpr std::uint32_t d = 8;
  std::vector<float> x = {0.3f, -0.2f, 0.9f, 0.1f, -0.5f, 0.7f, 0.25f, -0.8f};
  std::vector<float> plain = x, ones = x, halved = x;
  rope_rotate(RopeConfig{RopeStyle::half_split, 10000.0}, d, 41.0, plain);
  rope_rotate(RopeConfig{RopeStyle::half_split, 10000.0, {1.f, 1.f, 1.f, 1.f}}, d, 41.0, ones);
  CHECK(plain == ones);
  // Factor 2 on every pair: rotating by 82 then equals no factors at 41.
  rope_rotate(RopeConfig{RopeStyle::half_split, 10000.0, {2.f, 2.f, 2.f, 2.f}}, d, 82.0, halved);
  for (std::size_t i = 0; i < d; ++i) CHECK(halved[i] == doctest::Approx(plain[i]).epsilon(1e-6));
}

TEST_CASE("a half-split cache with frequency factors reads keys back rotated from scratch") {
  for (PositionMode mode : {PositionMode::reindexed, PositionMode::absolute}) {
    StreamConfig c{2,
                   2,
                   16,
                   4,
                   DType::f32,
                   mode,
                   {RopeStyle::half_split, 500000.0, llama3_like_factors(16)},
                   PolicyConfig::streaming(3, 19)};
    StreamCache s(kvtest::make_pool(c, 256), c);
    std::vector<float> k(16);
    double worst = 0;
    for (int t = 0; t < 120; ++t) {
      kvtest::push_token(s);
      const std::vector<KeptToken> kept = s.tokens();
      for (std::uint32_t il = 0; il < c.n_layers; ++il) {
        for (std::uint32_t i = 0; i < kept.size(); ++i) {
          for (std::uint32_t h = 0; h < c.n_kv_heads; ++h) {
            s.read_key(il, i, h, k);
            std::vector<double> pre(16);
            for (std::uint32_t j = 0; j < 16; ++j)
              pre[j] = kvtest::synth(kvtest::kSaltK, il, kept[i].meta.pos, h, j);
            const std::vector<double> want =
                rope_oracle(pre, RopeStyle::half_split, 500000.0, kept[i].cache_pos, c.rope.freq_factors);
            for (std::uint32_t j = 0; j < 16; ++j) worst = std::max(worst, std::abs(k[j] - want[j]));
          }
        }
      }
    }
    CHECK(worst < 1e-5);
  }
}

TEST_CASE("attention rotates the query with the cache's frequency factors") {
  // Same keys, same query: a cache whose factors differ must attend differently, and the SIMD
  // kernel must agree with the reference under factors.
  StreamConfig c{1,
                 1,
                 8,
                 4,
                 DType::f32,
                 PositionMode::reindexed,
                 {RopeStyle::adjacent_pairs, 10000.0},
                 PolicyConfig::full()};
  StreamConfig f = c;
  f.rope.freq_factors = {1.f, 2.f, 4.f, 8.f};
  StreamCache a(kvtest::make_pool(c, 64), c), b(kvtest::make_pool(f, 64), f);
  for (int t = 0; t < 30; ++t) {
    kvtest::push_token(a);
    kvtest::push_token(b);
  }
  std::vector<float> q(8), out_a(8), out_b(8), out_b_simd(8);
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = 4.f * kvtest::synth(3, 0, 0, 0, i);
  attend_reference(a, 0, q, out_a, {}, AttendOptions{1});
  attend_reference(b, 0, q, out_b, {}, AttendOptions{1});
  attend(b, 0, q, out_b_simd, {}, AttendOptions{1});
  CHECK(out_a != out_b);
  for (std::size_t i = 0; i < 8; ++i) CHECK(out_b_simd[i] == doctest::Approx(out_b[i]).epsilon(1e-5));
}

TEST_CASE("a stream refuses frequency factors of the wrong count or value") {
  auto config = [](std::vector<float> factors, RopeStyle style = RopeStyle::adjacent_pairs) {
    return StreamConfig{1,
                        1,
                        8,
                        4,
                        DType::f32,
                        PositionMode::reindexed,
                        {style, 10000.0, std::move(factors)},
                        PolicyConfig::full()};
  };
  auto rejects = [&](const StreamConfig& c) {
    CHECK_THROWS_AS(StreamCache(kvtest::make_pool(c, 8), c), InvalidArgument);
  };
  rejects(config({1.f, 1.f, 1.f}));
  rejects(config({1.f, 1.f, 1.f, 1.f, 1.f}));
  rejects(config({1.f, 0.f, 1.f, 1.f}));
  rejects(config({1.f, -2.f, 1.f, 1.f}));
  rejects(config({1.f, NAN, 1.f, 1.f}));
  rejects(config({1.f, INFINITY, 1.f, 1.f}));
  rejects(config({1.f, 1.f, 1.f, 1.f}, RopeStyle::none));
  const StreamConfig ok = config({1.f, 2.f, 3.f, 4.f});
  CHECK_NOTHROW(StreamCache(kvtest::make_pool(ok, 8), ok));
}

TEST_CASE("snapshots carry frequency factors, and version 1 snapshots still restore") {
  TempDir dir;
  StreamConfig c{2,
                 1,
                 8,
                 4,
                 DType::f32,
                 PositionMode::reindexed,
                 {RopeStyle::half_split, 10000.0},
                 PolicyConfig::streaming(2, 12)};
  StreamConfig f = c;
  f.rope.freq_factors = {1.f, 1.5f, 3.f, 8.f};
  auto pool = kvtest::make_pool(c, 256);
  StreamCache with(pool, f), without(pool, c);
  for (int t = 0; t < 20; ++t) {
    kvtest::push_token(with);
    kvtest::push_token(without);
  }
  with.save(dir.path / "f.snap");
  without.save(dir.path / "plain.snap");

  StreamCache back(pool, f);
  back.restore(dir.path / "f.snap");
  std::vector<float> k1(8), k2(8);
  with.read_key(1, 5, 0, k1);
  back.read_key(1, 5, 0, k2);
  CHECK(k1 == k2);

  auto message = [](StreamCache& s, const fs::path& p) {
    try {
      s.restore(p);
    } catch (const FormatError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  StreamCache plain(pool, c);
  CHECK(message(plain, dir.path / "f.snap").find("different number of rope freq factors") !=
        std::string::npos);
  StreamConfig g = f;
  g.rope.freq_factors[2] = 4.f;
  StreamCache other(pool, g);
  CHECK(message(other, dir.path / "f.snap").find("different rope freq factors") != std::string::npos);

  // A version 1 file (no factors; written before version 2 by the fuzz seed generator, see
  // tests/data and tests/fuzz/make_seeds.cc: 1 layer, 1 KV head of 4 dims, 4-token pages, sinks 2 + budget 8,
  // 20 tokens) restores; pages replaced rows per token in version 3, so one cannot be made by
  // editing a fresh file any more.
  const fs::path v1 = fs::path(KVCACHE_SOURCE_DIR) / "tests/data/snapshot_v1_sinks_f32.snap";
  const StreamConfig c1{1, 1, 4, 4, DType::f32, PositionMode::reindexed, {}, PolicyConfig::streaming(2, 8)};
  StreamCache old(kvtest::make_pool(c1, 16), c1);
  old.restore(v1);
  CHECK(old.stats().tokens_seen == 20);
  // The same version 1 file cannot claim factors it does not have.
  StreamConfig f1 = c1;
  f1.rope.freq_factors = {1.f, 2.f};
  StreamCache old_f(kvtest::make_pool(f1, 16), f1);
  CHECK(message(old_f, v1).find("rope freq factors") != std::string::npos);
}
