// q8 / q4 pages: the formats' error bounds from their own definition (kvcache/quant.h), what a
// StreamCache stores (a q4 page is always the per-channel quantisation of its tokens' keys), moves
// between regions of different precision, and configurations that are refused.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kvcache/attention.h"
#include "kvcache/error.h"
#include "kvcache/quant.h"
#include "tests/test_support.h"

using namespace kvcache;

namespace {

// Slack for the f32 roundings of (x - zero) / s, s * code and zero + s * code: a few ulps of the
// magnitudes involved.
float slack(float magnitude) { return 4e-7f * (1.f + magnitude); }

std::vector<float> random_row(std::mt19937& rng, std::size_t n, float spread) {
  std::normal_distribution<float> normal(0.f, spread);
  std::vector<float> x(n);
  for (float& v : x) v = normal(rng);
  if (n > 1) x[rng() % n] *= 8.f;  // an outlier, as real keys have
  return x;
}

// Rounds every element to f16, as the stream's key copies do.
std::vector<float> f16_rounded(std::vector<float> x) {
  for (float& v : x) v = f32_from_f16(f16_from_f32(v));
  return x;
}

}  // namespace

TEST_CASE("q8 round trip stays within half a step of its f16 scale") {
  std::mt19937 rng(1);
  for (std::size_t n : {1u, 2u, 3u, 8u, 64u, 128u}) {
    for (float spread : {1e-3f, 0.5f, 30.f}) {
      const std::vector<float> x = random_row(rng, n, spread);
      std::vector<std::int8_t> codes(n);
      const std::uint16_t s = quant::q8_quantize(x, codes.data());
      const float sf = f32_from_f16(s);
      float absmax = 0;
      for (float v : x) absmax = std::max(absmax, std::abs(v));
      CHECK(sf * 127.f >= absmax);                                // every value representable
      CHECK(sf <= absmax / 127.f * (1.f + 1.f / 512.f) + 1e-7f);  // and the scale no coarser than needed
      std::vector<float> back(n);
      quant::q8_dequantize(codes.data(), s, back);
      for (std::size_t i = 0; i < n; ++i) {
        CAPTURE(x[i]);
        CHECK(std::abs(back[i] - x[i]) <= sf / 2 + slack(absmax));
      }
    }
  }
  std::vector<std::int8_t> codes(4, std::int8_t{9});
  const std::vector<float> zeros(4, 0.f);
  CHECK(quant::q8_quantize(zeros, codes.data()) == 0);
  CHECK(std::all_of(codes.begin(), codes.end(), [](std::int8_t c) { return c == 0; }));
}

TEST_CASE("q4 rows and channels stay within half a step of their f16 parameters") {
  std::mt19937 rng(2);
  for (std::size_t n : {2u, 8u, 64u, 128u}) {
    for (float spread : {1e-3f, 0.5f, 30.f}) {
      // Per row (values).
      const std::vector<float> x = random_row(rng, n, spread);
      std::vector<std::uint8_t> packed(n / 2);
      const quant::Q4Params p = quant::q4_quantize_row(x, packed.data());
      const auto [lo, hi] = std::minmax_element(x.begin(), x.end());
      const float s = f32_from_f16(p.scale), z = f32_from_f16(p.zero);
      CHECK(z <= *lo);
      CHECK(z + 15.f * s >= *hi);
      const float mag = std::max(std::abs(*lo), std::abs(*hi));
      CHECK(s <= (*hi - *lo) / 15.f * (1.f + 1.f / 256.f) + std::abs(*lo) / 512.f + 1e-7f);
      std::vector<float> back(n);
      quant::q4_dequantize_row(packed.data(), p, back);
      for (std::size_t i = 0; i < n; ++i) CHECK(std::abs(back[i] - x[i]) <= s / 2 + slack(mag));

      // Per channel over 16 rows (keys of a page).
      const std::size_t rows = 16;
      std::vector<float> k;
      for (std::size_t r = 0; r < rows; ++r) {
        const std::vector<float> row = random_row(rng, n, spread);
        k.insert(k.end(), row.begin(), row.end());
      }
      std::vector<std::uint16_t> scales(n), zeros(n);
      std::vector<std::uint8_t> codes(rows * n / 2);
      quant::q4_quantize_channels(k.data(), rows, n, scales.data(), zeros.data(), codes.data());
      for (std::size_t r = 0; r < rows; ++r) {
        std::vector<float> kb(n);
        quant::q4_dequantize_channels(codes.data() + r * n / 2, scales.data(), zeros.data(), kb);
        for (std::size_t c = 0; c < n; ++c) {
          const float sc = f32_from_f16(scales[c]);
          CHECK(std::abs(kb[c] - k[r * n + c]) <=
                sc / 2 + slack(std::abs(k[r * n + c]) + std::abs(f32_from_f16(zeros[c]))));
        }
      }
    }
  }
}

TEST_CASE("a q4 window page always holds the per-channel quantisation of its tokens' keys") {
  // Without RoPE, key j of the stream is exactly synth_rows(j): after every append, every key of
  // the cache must equal the q4 per-channel quantisation, over the tokens of its page so far, of
  // those keys rounded to f16 (the stream's copy), and every value the per-row quantisation.
  StreamConfig c{
      2, 2, 8, 4, DType::q4, PositionMode::absolute, {RopeStyle::none, 10000.0}, PolicyConfig::window(10)};
  StreamCache s(kvtest::make_pool(c, 64), c);
  const std::uint32_t P = c.page_tokens;
  for (int t = 0; t < 23; ++t) {
    kvtest::push_token(s);
    const std::vector<KeptToken> kept = s.tokens();
    for (std::uint32_t il = 0; il < c.n_layers; ++il) {
      for (std::uint32_t i = 0; i < kept.size(); ++i) {
        const std::int64_t pos = kept[i].meta.pos;
        // Window slots are assigned in arrival order from the first token (no pins), so the page
        // of `pos` holds positions [pos - pos % P, ...] up to the newest token.
        const std::int64_t first = pos - pos % P;
        const std::int64_t last = std::min<std::int64_t>(first + P - 1, t);
        for (std::uint32_t h = 0; h < c.n_kv_heads; ++h) {
          std::vector<float> rows;
          for (std::int64_t j = first; j <= last; ++j) {
            const std::vector<float> all = f16_rounded(kvtest::synth_rows(c, kvtest::kSaltK, il, j));
            rows.insert(rows.end(), all.begin() + h * c.head_dim, all.begin() + (h + 1) * c.head_dim);
          }
          const auto n_rows = static_cast<std::size_t>(last - first + 1);
          std::vector<std::uint16_t> scales(c.head_dim), zeros(c.head_dim);
          std::vector<std::uint8_t> codes(n_rows * c.head_dim / 2);
          quant::q4_quantize_channels(rows.data(), n_rows, c.head_dim, scales.data(), zeros.data(),
                                      codes.data());
          std::vector<float> want(c.head_dim), got(c.head_dim);
          quant::q4_dequantize_channels(codes.data() + static_cast<std::size_t>(pos - first) * c.head_dim / 2,
                                        scales.data(), zeros.data(), want);
          s.read_key(il, i, h, got);
          CHECK(got == want);

          const std::vector<float> v = kvtest::synth_rows(c, kvtest::kSaltV, il, pos);
          std::vector<std::uint8_t> vcodes(c.head_dim / 2);
          const quant::Q4Params vp =
              quant::q4_quantize_row({v.data() + h * c.head_dim, c.head_dim}, vcodes.data());
          quant::q4_dequantize_row(vcodes.data(), vp, want);
          s.read_value(il, i, h, got);
          CHECK(got == want);
        }
      }
    }
  }
  // The f16 copies: 2 layers x 2 heads x 4 tokens x 8 dims x 2 bytes for the window (the pinned
  // region, q4 too, never stored a token under this policy).
  CHECK(s.stats().staging_bytes == 2 * 2 * 4 * 8 * 2);
}

TEST_CASE(
    "tokens moving into a pinned region of another precision are re-stored from their dequantised value") {
  // h2o pins tokens leaving a q8 window into an f32 pinned region. q8 is per token, so a moved
  // token's f32 key and value must be exactly its q8 dequantisation (no RoPE: no re-rotation).
  StreamConfig c{1,
                 2,
                 6,
                 4,
                 DType::q8,
                 PositionMode::absolute,
                 {RopeStyle::none, 10000.0},
                 PolicyConfig::heavy_hitters(3, 8)};
  c.pinned_dtype = DType::f32;
  CHECK(c.pinned_layout().page_tokens == 1);  // q8 page of 4 tokens: 128 bytes; one f32 token: 96
  StreamCache s(kvtest::make_pool(c, 64), c);
  std::uint32_t pinned_seen = 0;
  for (int t = 0; t < 30; ++t) {
    kvtest::push_token(s);
    std::vector<float> mass(s.n_kept());
    for (std::size_t i = 0; i < mass.size(); ++i) mass[i] = static_cast<float>((t * 7 + i * 3) % 5);
    s.add_scores(mass);
    const std::vector<KeptToken> kept = s.tokens();
    for (std::uint32_t i = 0; i < s.n_pinned(); ++i) {
      ++pinned_seen;
      for (std::uint32_t h = 0; h < c.n_kv_heads; ++h) {
        for (std::uint64_t salt : {kvtest::kSaltK, kvtest::kSaltV}) {
          const std::vector<float> x = kvtest::synth_rows(c, salt, 0, kept[i].meta.pos);
          std::vector<std::int8_t> codes(c.head_dim);
          const std::uint16_t sc = quant::q8_quantize({x.data() + h * c.head_dim, c.head_dim}, codes.data());
          std::vector<float> want(c.head_dim), got(c.head_dim);
          quant::q8_dequantize(codes.data(), sc, want);
          if (salt == kvtest::kSaltK) {
            s.read_key(0, i, h, got);
          } else {
            s.read_value(0, i, h, got);
          }
          CHECK(got == want);
        }
      }
    }
  }
  CHECK(pinned_seen > 20);
}

TEST_CASE("a q4 window with f16 sinks keeps the sinks at f16 and the window within its step") {
  StreamConfig c{1,
                 1,
                 8,
                 8,
                 DType::q4,
                 PositionMode::absolute,
                 {RopeStyle::none, 10000.0},
                 PolicyConfig::streaming(2, 12)};
  c.pinned_dtype = DType::f16;
  StreamCache s(kvtest::make_pool(c, 16), c);
  for (int t = 0; t < 40; ++t) kvtest::push_token(s);
  const std::vector<KeptToken> kept = s.tokens();
  std::vector<float> got(8);
  for (std::uint32_t i = 0; i < kept.size(); ++i) {
    const std::vector<float> k = kvtest::synth_rows(c, kvtest::kSaltK, 0, kept[i].meta.pos);
    s.read_key(0, i, 0, got);
    for (std::size_t d = 0; d < 8; ++d) {
      if (i < 2) {
        CHECK(got[d] == f32_from_f16(f16_from_f32(k[d])));  // sinks: f16
      } else {
        CHECK(std::abs(got[d] - k[d]) <= 2.f / 15.f / 2.f * 1.02f + 1e-3f);  // synth values lie in [-1, 1)
      }
    }
  }
}

// A pinned region of a smaller dtype packs more tokens per page than the window's page_tokens: its
// spans must be cut at the pinned layout's page size (the fuzzer once checked them against the
// window's), and attention over them must still match the scalar twin.
TEST_CASE("pinned pages of a smaller dtype hold more tokens than a window page, and spans follow them") {
  StreamConfig c{1,
                 2,
                 8,
                 4,
                 DType::f32,
                 PositionMode::absolute,
                 {RopeStyle::none, 10000.0},
                 PolicyConfig::streaming(11, 20)};
  c.pinned_dtype = DType::q8;
  const std::uint32_t Pp = c.pinned_layout().page_tokens;
  REQUIRE(Pp > c.page_tokens);  // f32 window page: 256 bytes; a q8 token: 40
  StreamCache s(kvtest::make_pool(c, 64), c);
  for (int t = 0; t < 40; ++t) kvtest::push_token(s);
  REQUIRE(s.n_pinned() == 11);
  std::vector<KvSpan> spans;
  s.layer_spans(0, spans);
  std::uint32_t next = 0, widest_pinned = 0;
  for (const KvSpan& sp : spans) {
    CHECK(sp.kept_begin == next);
    const bool pinned = sp.kept_begin < s.n_pinned();
    CHECK(sp.layout.page_tokens == (pinned ? Pp : c.page_tokens));
    CHECK(sp.slot_begin + sp.n <= sp.layout.page_tokens);
    if (pinned) {
      CHECK(sp.kept_begin + sp.n <= s.n_pinned());
      widest_pinned = std::max(widest_pinned, sp.n);
    }
    next += sp.n;
  }
  CHECK(next == s.n_kept());
  CHECK(widest_pinned == std::min(Pp, 11u));
  CHECK(widest_pinned > c.page_tokens);
  AttendOptions opt;
  opt.n_heads = 4;
  std::mt19937 rng(3);
  const std::vector<float> q = random_row(rng, 4 * 8, 1.f);
  std::vector<float> out(q.size()), ref(q.size()), mass(4 * s.n_kept()), mass_ref(mass.size());
  attend(s, 0, q, out, mass, opt);
  attend_reference(s, 0, q, ref, mass_ref, opt);
  for (std::size_t i = 0; i < out.size(); ++i) CHECK(out[i] == doctest::Approx(ref[i]).epsilon(1e-4));
}

TEST_CASE("quantised configurations that cannot work are refused") {
  StreamConfig c{
      1, 1, 7, 16, DType::q4, PositionMode::absolute, {RopeStyle::none, 10000.0}, PolicyConfig::full()};
  const auto pool = std::make_shared<PagePool>(PagePoolOptions{4096, 1 << 20});
  CHECK_THROWS_WITH_AS(StreamCache(pool, c), doctest::Contains("even head_dim"), InvalidArgument);
  c.dtype = DType::q8;
  CHECK_NOTHROW(StreamCache(pool, c));  // q8 takes any head_dim
  c.pinned_dtype = DType::q4;
  CHECK_THROWS_WITH_AS(StreamCache(pool, c), doctest::Contains("even head_dim"), InvalidArgument);
  // A pinned f32 token larger than a whole 1-token q4 window page.
  StreamConfig tiny{
      1, 1, 4, 1, DType::q4, PositionMode::absolute, {RopeStyle::none, 10000.0}, PolicyConfig::full()};
  tiny.pinned_dtype = DType::f32;
  CHECK(tiny.pinned_layout().page_tokens == 0);
  CHECK_THROWS_WITH_AS(StreamCache(pool, tiny), doctest::Contains("raise page_tokens"), InvalidArgument);
  // Pool pages smaller than the window's layout, and unknown dtypes.
  StreamConfig big{1, 4, 64, 64, DType::q8, PositionMode::absolute, {}, PolicyConfig::full()};
  CHECK_THROWS_WITH_AS(StreamCache(pool, big), doctest::Contains("smaller than"), InvalidArgument);
  big.dtype = static_cast<DType>(9);
  CHECK_THROWS_AS(StreamCache(pool, big), InvalidArgument);
  CHECK(parse_dtype("q4") == DType::q4);
  CHECK(parse_dtype("q8") == DType::q8);
  CHECK_THROWS_AS(parse_dtype("q2"), InvalidArgument);
}

TEST_CASE("page layouts state their exact bytes") {
  // stories260K: 4 KV heads of 8 dims, 16-token pages.
  CHECK(PageLayout{16, 4, 8, DType::f32}.page_bytes() == 4096);
  CHECK(PageLayout{16, 4, 8, DType::f16}.page_bytes() == 2048);
  CHECK(PageLayout{16, 4, 8, DType::q8}.page_bytes() == 1024 + 4 * 16 * 4);  // codes + K, V scales
  CHECK(PageLayout{16, 4, 8, DType::q4}.page_bytes() == 512 + 4 * 8 * 4 + 4 * 16 * 4);
  // Odd code bytes are padded to 4 before the f16 parameters.
  const PageLayout odd{1, 1, 2, DType::q4};
  CHECK(odd.params_offset() == 4);
  CHECK(odd.page_bytes() == 4 + 8 + 4);
  CHECK(max_page_tokens(PageLayout{0, 4, 8, DType::f16}, 896) == 7);
}

// Why the pinned region has a dtype of its own (issue 11): a sink that takes most of a head's
// attention moves every output by its quantisation error. Token 0 is planted as such a sink (key
// along the query: about 60-80% of the attention, checked below); every row, the sink's included,
// is N(0, 1) with one outlier channel otherwise. Keeping the 4 sinks at f16 beside a q4 window must
// then bring the attention output closer to the f32 cache's than q4 everywhere: the window's own
// error is the same in both, the sink's is gone.
TEST_CASE("f16 sinks beside a q4 window cut the error of a sink that takes most of the attention") {
  constexpr std::uint32_t D = 16;
  const StreamConfig f32{1,
                         1,
                         D,
                         8,
                         DType::f32,
                         PositionMode::absolute,
                         {RopeStyle::none, 10000.0},
                         PolicyConfig::streaming(4, 32)};
  StreamConfig q4 = f32;
  q4.dtype = DType::q4;
  StreamConfig mixed = q4;
  mixed.pinned_dtype = DType::f16;
  std::vector<StreamCache> caches;
  for (const StreamConfig& c : {f32, q4, mixed}) caches.emplace_back(kvtest::make_pool(c, 32), c);
  std::mt19937 rng(7);
  std::vector<float> query = random_row(rng, D, 1.f);
  float qnorm = 0;
  for (float x : query) qnorm += x * x;
  qnorm = std::sqrt(qnorm);
  AttendOptions opt;
  opt.n_heads = 1;
  double err_q4 = 0, err_mixed = 0, sink_share = 0;
  int steps = 0;
  for (int t = 0; t < 96; ++t) {
    std::vector<float> k = random_row(rng, D, 1.f), v = random_row(rng, D, 1.f);
    if (t == 0) {
      for (std::uint32_t i = 0; i < D; ++i)
        k[i] = 7.f * std::sqrt(float{D}) * query[i] / (qnorm * qnorm);  // logit 7
    }
    const std::int32_t id = t;
    std::vector<std::vector<float>> out(3, std::vector<float>(D));
    std::vector<float> mass;
    for (std::size_t c = 0; c < caches.size(); ++c) {
      caches[c].begin({&id, 1});
      caches[c].append(0, k, v);
      mass.assign(caches[c].n_kept(), 0.f);
      attend(caches[c], 0, query, out[c], mass, opt);
    }
    if (t < 8) continue;  // past the first window page
    sink_share += mass[0];
    ++steps;
    for (std::uint32_t i = 0; i < D; ++i) {
      err_q4 += (out[1][i] - out[0][i]) * (out[1][i] - out[0][i]);
      err_mixed += (out[2][i] - out[0][i]) * (out[2][i] - out[0][i]);
    }
  }
  sink_share /= steps;
  MESSAGE("sink share ", sink_share, ", squared error q4 ", err_q4, ", q4 with f16 sinks ", err_mixed);
  REQUIRE(sink_share > 0.5);
  CHECK(err_mixed < 0.5 * err_q4);
}
