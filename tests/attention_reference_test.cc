// Attention over the paged cache equals attention over a dense array of the same kept tokens at
// the same positions, and keys read back equal keys rotated from scratch.
#include <doctest/doctest.h>

#include <cmath>

#include "kvcache/attention.h"
#include "tests/test_support.h"

using namespace kvcache;

namespace {

// Independent RoPE (adjacent pairs), written from the formula.
void rope_oracle(std::vector<double>& x, std::int64_t pos) {
  const std::size_t d = x.size();
  for (std::size_t i = 0; i < d / 2; ++i) {
    const double angle =
        static_cast<double>(pos) * std::pow(10000.0, -2.0 * static_cast<double>(i) / static_cast<double>(d));
    const double a = x[2 * i], b = x[2 * i + 1];
    x[2 * i] = a * std::cos(angle) - b * std::sin(angle);
    x[2 * i + 1] = a * std::sin(angle) + b * std::cos(angle);
  }
}

std::vector<double> rotated_key(const StreamConfig& c, std::uint32_t layer, std::int64_t pos, std::uint32_t h,
                                std::int64_t at) {
  std::vector<double> k(c.head_dim);
  for (std::uint32_t i = 0; i < c.head_dim; ++i) k[i] = kvtest::synth(kvtest::kSaltK, layer, pos, h, i);
  rope_oracle(k, at);
  return k;
}

// Dense attention of one query token over the kept tokens (original positions `kept`, cache
// positions `at`): returns out (n_heads x d) and mass (n_heads x n).
void dense_attention(const StreamConfig& c, std::uint32_t layer, std::uint32_t n_heads,
                     const std::vector<float>& q_pre, const std::vector<std::int64_t>& kept,
                     const std::vector<std::int64_t>& at, std::vector<double>& out,
                     std::vector<double>& mass) {
  const std::uint32_t d = c.head_dim, group = n_heads / c.n_kv_heads;
  const std::size_t n = kept.size();
  out.assign(std::size_t{n_heads} * d, 0.0);
  mass.assign(std::size_t{n_heads} * n, 0.0);
  for (std::uint32_t hq = 0; hq < n_heads; ++hq) {
    std::vector<double> q(q_pre.begin() + hq * d, q_pre.begin() + (hq + 1) * d);
    rope_oracle(q, at.back());
    const std::uint32_t h = hq / group;
    std::vector<double> logit(n);
    double mx = -1e300;
    for (std::size_t j = 0; j < n; ++j) {
      const std::vector<double> k = rotated_key(c, layer, kept[j], h, at[j]);
      double dot = 0;
      for (std::uint32_t i = 0; i < d; ++i) dot += q[i] * k[i];
      logit[j] = dot / std::sqrt(double(d));
      mx = std::max(mx, logit[j]);
    }
    double sum = 0;
    for (double& l : logit) sum += (l = std::exp(l - mx));
    for (std::size_t j = 0; j < n; ++j) {
      const double p = logit[j] / sum;
      mass[hq * n + j] = p;
      for (std::uint32_t i = 0; i < d; ++i)
        out[hq * d + i] += p * kvtest::synth(kvtest::kSaltV, layer, kept[j], h, i);
    }
  }
}

void check_against_dense(PolicyConfig policy, PositionMode mode, std::uint32_t P, std::uint32_t n_kv,
                         std::uint32_t n_heads, std::uint32_t d, int n_tokens) {
  StreamConfig c{2, n_kv, d, P, DType::f32, mode, {}, policy};
  StreamCache s(kvtest::make_pool(c, 1024), c);
  double worst = 0;
  for (int t = 0; t < n_tokens; ++t) {
    kvtest::push_token(s);
    if (t % 7 != 6 && t != n_tokens - 1) continue;
    std::vector<std::int64_t> kept, at;
    for (const KeptToken& k : s.tokens()) {
      kept.push_back(k.meta.pos);
      at.push_back(k.cache_pos);
    }
    for (std::uint32_t il = 0; il < c.n_layers; ++il) {
      std::vector<float> q(std::size_t{n_heads} * d);
      for (std::size_t i = 0; i < q.size(); ++i) q[i] = 2.f * kvtest::synth(99, il, t, i, 0);
      std::vector<float> out(q.size()), mass(std::size_t{n_heads} * s.n_kept());
      attend_reference(s, il, q, out, mass, AttendOptions{n_heads});
      std::vector<double> want_out, want_mass;
      dense_attention(c, il, n_heads, q, kept, at, want_out, want_mass);
      for (std::size_t i = 0; i < out.size(); ++i) worst = std::max(worst, std::abs(out[i] - want_out[i]));
      for (std::size_t i = 0; i < mass.size(); ++i) worst = std::max(worst, std::abs(mass[i] - want_mass[i]));
    }
  }
  CHECK(worst < 1e-5);
}

}  // namespace

TEST_CASE("paged attention equals dense attention over the kept tokens") {
  for (PositionMode mode : {PositionMode::reindexed, PositionMode::absolute}) {
    for (std::uint32_t P : {1u, 4u, 16u}) {
      CAPTURE(P);
      CAPTURE(int(mode));
      check_against_dense(PolicyConfig::streaming(4, 24), mode, P, 2, 4, 8, 80);
      check_against_dense(PolicyConfig::window(13), mode, P, 4, 8, 6, 50);
      check_against_dense(PolicyConfig::full(), mode, P, 1, 3, 16, 40);
    }
  }
}

TEST_CASE("keys read back at cache position i equal keys rotated from scratch at i") {
  for (PositionMode mode : {PositionMode::reindexed, PositionMode::absolute}) {
    StreamConfig c{3, 2, 16, 4, DType::f32, mode, {}, PolicyConfig::streaming(3, 19)};
    StreamCache s(kvtest::make_pool(c, 256), c);
    std::vector<float> k(16), v(16);
    double worst = 0;
    for (int t = 0; t < 300; ++t) {
      kvtest::push_token(s);
      const std::vector<KeptToken> kept = s.tokens();
      for (std::uint32_t il = 0; il < c.n_layers; ++il) {
        for (std::uint32_t i = 0; i < kept.size(); ++i) {
          for (std::uint32_t h = 0; h < c.n_kv_heads; ++h) {
            s.read_key(il, i, h, k);
            const std::vector<double> want = rotated_key(c, il, kept[i].meta.pos, h, kept[i].cache_pos);
            for (std::uint32_t j = 0; j < 16; ++j) worst = std::max(worst, std::abs(k[j] - want[j]));
            s.read_value(il, i, h, v);
            for (std::uint32_t j = 0; j < 16; ++j) {
              CHECK(v[j] == kvtest::synth(kvtest::kSaltV, il, kept[i].meta.pos, h, j));
            }
          }
        }
      }
    }
    CHECK(worst < 1e-5);
  }
}

TEST_CASE("absolute positions stay exact at a million tokens") {
  // The rotation angle is computed in double, so a key at position ~1e6 is as exact as at 0.
  StreamConfig c{1, 1, 8, 16, DType::f32, PositionMode::absolute, {}, PolicyConfig::streaming(4, 20)};
  StreamCache s(kvtest::make_pool(c, 64), c);
  for (int t = 0; t < 2000; ++t) kvtest::push_token(s);
  std::vector<float> k(8);
  const std::vector<KeptToken> kept = s.tokens();
  s.read_key(0, 19, 0, k);
  const std::vector<double> want = rotated_key(c, 0, kept[19].meta.pos, 0, kept[19].cache_pos);
  for (int j = 0; j < 8; ++j) CHECK(std::abs(k[j] - want[j]) < 1e-6);
}

TEST_CASE("f16 pages attend within f16 rounding of f32 pages") {
  for (DType dt : {DType::f32, DType::f16}) {
    StreamConfig c{1, 2, 8, 16, dt, PositionMode::reindexed, {}, PolicyConfig::streaming(4, 40)};
    StreamConfig c32 = c;
    c32.dtype = DType::f32;
    StreamCache a(kvtest::make_pool(c, 64), c), b(kvtest::make_pool(c32, 64), c32);
    for (int t = 0; t < 100; ++t) {
      kvtest::push_token(a);
      kvtest::push_token(b);
    }
    std::vector<float> q(32), oa(32), ob(32);
    for (std::size_t i = 0; i < q.size(); ++i) q[i] = kvtest::synth(5, 0, 0, i, 0);
    attend_reference(a, 0, q, oa, {}, AttendOptions{4});
    attend_reference(b, 0, q, ob, {}, AttendOptions{4});
    // f16 keeps 11 significant bits: relative error 2^-11 per element, values in [-1, 1).
    for (std::size_t i = 0; i < 32; ++i)
      CHECK(std::abs(oa[i] - ob[i]) < (dt == DType::f32 ? 0.0 : 2e-3) + 1e-7);
  }
}
