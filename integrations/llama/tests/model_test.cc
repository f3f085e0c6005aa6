// The forward pass on stories260K: the documented greedy text, equality with a plain float
// reference, exact batched prefill, and streaming past the trained context under eviction.
#include "llama/model.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kvcache/error.h"
#include "kvcache/page_pool.h"
#include "llama/checkpoint.h"
#include "llama/sampler.h"
#include "llama/tokenizer.h"
#include "reference_llama.h"
#include "temp_file.h"

namespace kvcache::llama::test {
namespace {

std::shared_ptr<const ModelWeights> model() {
  static const auto m = checkpoint_weights(Checkpoint::load(model_path()));
  return m;
}
const Tokenizer& tokenizer() {
  static const Tokenizer t = Tokenizer::load(tokenizer_path(), 512);
  return t;
}

CacheOptions full_cache() {
  CacheOptions o;
  o.policy = PolicyConfig::full();
  return o;
}

// |a - b| <= tol * max(|b|, 1) for every element: relative for large logits, absolute near 0.
void check_close(std::span<const float> a, std::span<const float> b, double tol) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::abs(double{a[i]} - b[i]) / std::max(1.0, std::abs(double{b[i]})));
  }
  CHECK_MESSAGE(worst <= tol, "worst relative difference " << worst);
}

std::vector<std::int32_t> sample_tokens(std::size_t n) {
  const std::string text = read_text(sample_text_path()).substr(0, 20000);
  auto toks = tokenizer().encode(text, true, false);
  REQUIRE(toks.size() >= n);
  toks.resize(n);
  return toks;
}

bool all_finite(std::span<const float> x) {
  return std::all_of(x.begin(), x.end(), [](float v) { return std::isfinite(v); });
}

}  // namespace

TEST_CASE("model: greedy decoding from BOS prints the documented story opening") {
  const std::string expected =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
      "One day, she saw a big, red ball.";
  Decoder dec(model(), full_cache());
  Sampler greedy({0.f, 0.f, 1});
  std::string text;
  std::int32_t token = Tokenizer::kBos;
  for (int i = 0; i < 200 && text.size() < expected.size(); ++i) {
    const std::int32_t next = greedy.sample(dec.step(token));
    text += tokenizer().decode(token, next);
    token = next;
  }
  CHECK(text == expected);
}

TEST_CASE("model: logits equal a plain float reference for the first 64 sample tokens") {
  const auto toks = sample_tokens(64);
  ReferenceLlama ref(model_path());
  Decoder stepwise(model(), full_cache());
  std::vector<std::vector<float>> want;
  for (std::int32_t t : toks) {
    want.push_back(ref.forward(t));
    const auto got = stepwise.step(t);
    check_close(got, want.back(), 1e-4);
  }
  SUBCASE("batched prefill gives the same logits") {
    Decoder batched(model(), full_cache());
    std::vector<float> all;
    batched.prefill(toks, &all);
    for (std::size_t i = 0; i < toks.size(); ++i) {
      check_close(std::span(all).subspan(i * 512, 512), want[i], 1e-4);
    }
  }
  SUBCASE("the reference attention kernel agrees too") {
    CacheOptions o = full_cache();
    o.attention = AttentionKernel::reference;
    Decoder ref_kernel(model(), o);
    for (std::size_t i = 0; i < toks.size(); ++i) check_close(ref_kernel.step(toks[i]), want[i], 1e-4);
  }
  SUBCASE("f16 pages stay close") {
    CacheOptions o = full_cache();
    o.dtype = DType::f16;
    Decoder half(model(), o);
    for (std::size_t i = 0; i < toks.size(); ++i) check_close(half.step(toks[i]), want[i], 2e-2);
  }
}

TEST_CASE("model: prefill under eviction equals token-by-token steps") {
  const auto toks = sample_tokens(150);
  CacheOptions o;
  o.policy = PolicyConfig::streaming(4, 48);
  o.page_tokens = 8;
  Decoder a(model(), o), b(model(), o);
  std::vector<float> all;
  a.prefill(toks, &all);
  for (std::size_t i = 0; i < toks.size(); ++i) {
    const auto l = b.step(toks[i]);
    check_close(std::span(all).subspan(i * 512, 512), l, 1e-6);
  }
  CHECK(a.cache().n_kept() == 48);
  CHECK(a.cache().stats().tokens_seen == toks.size());
}

TEST_CASE("model: decoders sharing one pool account for every page, and a restored cache continues exactly") {
  const auto toks = sample_tokens(100);
  CacheOptions o;
  o.policy = PolicyConfig::streaming(4, 40);
  o.page_tokens = 8;
  Decoder sizing(model(), o);
  const std::size_t page_bytes = sizing.cache().config().layout().page_bytes();
  o.pool = std::make_shared<PagePool>(PagePoolOptions{page_bytes, 200 * page_bytes});
  Decoder a(model(), o), b(model(), o);
  a.prefill(std::span(toks).first(61));  // past the budget: the window ring has wrapped
  b.prefill(std::span(toks).first(30));
  CHECK(o.pool->stats().pages_in_use == a.cache().stats().pages + b.cache().stats().pages);

  const TempFile snap("shared-pool", {});
  a.cache().save(snap.path());
  Decoder c(model(), o);
  c.restore_cache(snap.path());
  CHECK(o.pool->stats().pages_in_use ==
        a.cache().stats().pages + b.cache().stats().pages + c.cache().stats().pages);
  for (std::size_t i = 61; i < toks.size(); ++i) check_close(c.step(toks[i]), a.step(toks[i]), 0.0);

  // A pool whose pages are too small for the layout is refused.
  CacheOptions small = o;
  small.pool = std::make_shared<PagePool>(PagePoolOptions{64, 64 * 64});
  CHECK_THROWS_AS(Decoder(model(), small), InvalidArgument);
}

TEST_CASE("model: sinks + window streams past the 512-token training context") {
  CacheOptions o;
  o.policy = PolicyConfig::streaming(4, 64);
  Decoder dec(model(), o);
  Sampler sampler({1.f, 0.9f, 1234});
  std::int32_t token = Tokenizer::kBos;
  std::size_t peak_after_warmup = 0;
  for (int i = 0; i < 700; ++i) {
    const auto logits = dec.step(token);
    REQUIRE(all_finite(logits));
    REQUIRE(dec.cache().n_kept() <= 64);
    // The window's oldest page is partly consumed, so the page count wobbles by one per layer;
    // the peak, though, must stop growing once the window is full.
    if (i == 200) peak_after_warmup = dec.cache().stats().kv_bytes_peak;
    if (i > 200) REQUIRE(dec.cache().stats().kv_bytes_peak == peak_after_warmup);
    token = sampler.sample(logits);
  }
  CHECK(dec.cache().stats().tokens_seen == 700);
  CHECK(dec.cache().n_pinned() == 4);
}

TEST_CASE("model: window policy with absolute positions also keeps running") {
  CacheOptions o;
  o.policy = PolicyConfig::window(32);
  o.positions = PositionMode::absolute;
  Decoder dec(model(), o);
  for (std::int32_t t : sample_tokens(600)) REQUIRE(all_finite(dec.step(t)));
  CHECK(dec.cache().n_kept() == 32);
}

TEST_CASE("model: bad token ids are rejected") {
  Decoder dec(model(), full_cache());
  CHECK_THROWS_AS(dec.step(512), InvalidArgument);
  CHECK_THROWS_AS(dec.step(-1), InvalidArgument);
  CHECK_THROWS_AS(dec.prefill({}), InvalidArgument);
  CHECK(all_finite(dec.step(1)));  // still usable
}

}  // namespace kvcache::llama::test

namespace kvcache::llama::test {

TEST_CASE("model: hidden-sinks feeds the detector and stays within the budget") {
  CacheOptions o;
  o.policy = PolicyConfig::hidden(4, 4, 48, 1);
  o.detector = SinkDetectorOptions{2.f, 0.9f};  // permissive, so this weak-sink model pins some
  Decoder dec(model(), o);
  REQUIRE(dec.detector() != nullptr);
  std::uint32_t most_hidden = 0;
  for (std::int32_t t : sample_tokens(700)) {
    REQUIRE(all_finite(dec.step(t)));
    REQUIRE(dec.cache().n_kept() <= 48);
    std::uint32_t hidden = 0;
    for (const KeptToken& k : dec.cache().tokens()) hidden += k.meta.pin == PinReason::hidden_sink;
    REQUIRE(hidden <= 4);
    most_hidden = std::max(most_hidden, hidden);
  }
  CHECK(most_hidden > 0);  // the detector fed real attention to the policy
  // Prefill with a detector goes token by token, so it equals single steps exactly.
  Decoder a(model(), o), b(model(), o);
  const auto toks = sample_tokens(120);
  a.prefill(toks);
  for (std::int32_t t : toks) b.step(t);
  const std::span<const float> la = a.step(1);
  const std::vector<float> after_prefill(la.begin(), la.end());
  check_close(after_prefill, b.step(1), 0.0);
}

TEST_CASE("model: h2o and ACT calibration run end to end") {
  CacheOptions h;
  h.policy = PolicyConfig::heavy_hitters(16, 48);
  Decoder heavy(model(), h);
  for (std::int32_t t : sample_tokens(300)) REQUIRE(all_finite(heavy.step(t)));
  CHECK(heavy.cache().n_kept() == 48);
  CHECK(heavy.cache().n_pinned() == 16);

  CacheOptions c;
  c.policy = PolicyConfig::streaming(4, 48);
  c.calibrate_beta = 0.5f;
  Decoder calibrated(model(), c);
  CacheOptions plain_options = c;
  plain_options.calibrate_beta = 1.f;
  Decoder plain(model(), plain_options);
  double diff = 0;
  for (std::int32_t t : sample_tokens(200)) {
    const auto a = calibrated.step(t);
    const auto b = plain.step(t);
    REQUIRE(all_finite(a));
    for (std::size_t i = 0; i < a.size(); ++i) diff = std::max(diff, double{std::abs(a[i] - b[i])});
  }
  CHECK(calibrated.calibrated_pairs() > 0);
  CHECK(diff > 1e-3);  // calibration changed the computation
  c.calibrate_beta = 0.f;
  CHECK_THROWS_AS(Decoder(model(), c), InvalidArgument);
}

}  // namespace kvcache::llama::test
