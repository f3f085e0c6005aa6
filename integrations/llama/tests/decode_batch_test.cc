// DecodeBatch: one forward pass over one token of many streams gives each stream exactly the
// logits (and cache) of its own Decoder::step, for f32 and quantized weights, detectors included;
// a row that cannot start leaves its decoder untouched and the others unaffected.
#include "llama/decode_batch.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <exception>
#include <memory>
#include <vector>

#include "kvcache/error.h"
#include "llama/checkpoint.h"
#include "llama/model_file.h"
#include "llama/random_model.h"
#include "temp_file.h"

namespace kvcache::llama::test {
namespace {

std::shared_ptr<const ModelWeights> stories() {
  static const auto m = checkpoint_weights(Checkpoint::load(model_path()));
  return m;
}

// Caches of different shapes and policies, so the rows of one batch differ in everything the
// cache decides (kept tokens, eviction, page geometry, dtype, detector).
std::vector<CacheOptions> varied_caches() {
  std::vector<CacheOptions> v(4);
  v[0].policy = PolicyConfig::full();
  v[1].policy = PolicyConfig::streaming(4, 24);
  v[1].page_tokens = 4;
  v[2].policy = PolicyConfig::streaming(2, 40);
  v[2].dtype = DType::q8;
  v[2].pinned_dtype = DType::f16;
  v[3].policy = PolicyConfig::hidden(4, 4, 32, 1);
  v[3].detector = SinkDetectorOptions{2.f, 0.9f};
  return v;
}

// Runs `steps` batched steps over decoders made with `caches` (stream i first fed a prompt of
// 3 + 5 i tokens) and the same steps one decoder at a time on twins; every row's logits must be
// bit-identical, and the caches must keep the same tokens.
void check_batch_equals_single_steps(const std::shared_ptr<const ModelWeights>& m,
                                     const std::vector<CacheOptions>& caches, int steps) {
  const std::size_t n = caches.size();
  const auto vocab = static_cast<std::int32_t>(m->config.vocab_size);
  std::vector<std::unique_ptr<Decoder>> batched, single;
  std::vector<std::int32_t> next(n);
  for (std::size_t i = 0; i < n; ++i) {
    batched.push_back(std::make_unique<Decoder>(m, caches[i]));
    single.push_back(std::make_unique<Decoder>(m, caches[i]));
    std::vector<std::int32_t> prompt(3 + 5 * i);
    for (std::size_t t = 0; t < prompt.size(); ++t)
      prompt[t] = static_cast<std::int32_t>((7 * t + 13 * i + 1) % vocab);
    batched[i]->prefill(prompt);
    single[i]->prefill(prompt);
    next[i] = prompt.back();
  }
  DecodeBatch batch(m, static_cast<std::uint32_t>(n));
  std::vector<Decoder*> rows;
  for (auto& d : batched) rows.push_back(d.get());
  std::vector<std::exception_ptr> errors(n);
  for (int s = 0; s < steps; ++s) {
    batch.step(rows, next, errors);
    for (std::size_t i = 0; i < n; ++i) {
      REQUIRE(errors[i] == nullptr);
      const std::span<const float> want = single[i]->step(next[i]);
      const std::span<const float> got = batch.logits(i);
      REQUIRE(got.size() == want.size());
      REQUIRE_MESSAGE(std::equal(got.begin(), got.end(), want.begin()), "row " << i << ", step " << s);
      // The next token differs per row and step (argmax, then a row-dependent shift).
      next[i] = static_cast<std::int32_t>(
          (std::max_element(got.begin(), got.end()) - got.begin() + static_cast<std::ptrdiff_t>(i) + s) %
          vocab);
    }
  }
  for (std::size_t i = 0; i < n; ++i) {
    CHECK(batched[i]->cache().n_kept() == single[i]->cache().n_kept());
    CHECK(batched[i]->cache().stats().tokens_seen == single[i]->cache().stats().tokens_seen);
    CHECK(batched[i]->cache().stats().tokens_evicted == single[i]->cache().stats().tokens_evicted);
  }
}

}  // namespace

TEST_CASE("decode batch: stories260K rows of different policies equal their single steps bit for bit") {
  check_batch_equals_single_steps(stories(), varied_caches(), 60);
}

TEST_CASE("decode batch: quantized qwen2 weights (biases, Q8 activations) equal single steps bit for bit") {
  ModelShape s;
  s.name = "tiny";
  s.architecture = "qwen2";
  s.n_layers = 2;
  s.dim = 256;
  s.n_heads = 4;
  s.n_kv_heads = 2;
  s.ffn_dim = 512;
  s.vocab = 300;
  s.context_length = 128;
  for (GgmlType type : {GgmlType::q8_0, GgmlType::q4_k}) {
    CAPTURE(ggml_type_name(type));
    const TempFile f("decode_batch_model", {});
    write_random_model(s, type, 11, f.path());
    // Five rows: not a multiple of the kernels' row groups, so tails are exercised too.
    std::vector<CacheOptions> caches = varied_caches();
    caches.push_back(caches[1]);
    check_batch_equals_single_steps(open_model_weights(f.path()), caches, 12);
  }
}

TEST_CASE("decode batch: a row that cannot start is left out and its decoder is unchanged") {
  const auto m = stories();
  CacheOptions tight;
  tight.policy = PolicyConfig::full();
  tight.page_tokens = 4;
  tight.max_kv_bytes = 0;  // set below: room for exactly 8 tokens
  CacheOptions probe = tight;
  probe.max_kv_bytes = std::size_t{1} << 20;
  const std::size_t page_bytes = Decoder(m, probe).cache().config().layout().page_bytes();
  tight.max_kv_bytes = page_bytes * 2 * m->config.n_layers;
  CacheOptions roomy;
  roomy.policy = PolicyConfig::streaming(4, 32);

  Decoder full(m, tight), a(m, roomy), b(m, roomy), twin_a(m, roomy), twin_b(m, roomy);
  for (std::int32_t t : {1, 20, 30, 40, 50, 60, 70, 80}) full.step(t);  // now holds its 8 tokens
  DecodeBatch batch(m, 4);
  Decoder* rows[] = {&a, &full, &b};
  const std::int32_t tokens[] = {5, 9, 100000};  // b's token is outside the vocabulary
  std::vector<std::exception_ptr> errors(3);
  const auto kept_before = full.cache().n_kept();
  batch.step(rows, tokens, errors);
  CHECK(errors[0] == nullptr);
  CHECK_THROWS_AS(std::rethrow_exception(errors[1]), PoolExhausted);
  CHECK_THROWS_AS(std::rethrow_exception(errors[2]), InvalidArgument);
  CHECK(full.cache().n_kept() == kept_before);
  CHECK(b.cache().stats().tokens_seen == 0);
  CHECK(batch.logits(1).empty());
  CHECK(batch.logits(2).empty());
  const std::span<const float> want = twin_a.step(5);
  CHECK(std::equal(want.begin(), want.end(), batch.logits(0).begin()));
  // b is usable afterwards and equals a decoder that never saw the bad token.
  const std::span<const float> got_b = b.step(7);
  const std::vector<float> kept_b(got_b.begin(), got_b.end());
  const std::span<const float> want_b = twin_b.step(7);
  CHECK(std::equal(want_b.begin(), want_b.end(), kept_b.begin()));
}

TEST_CASE("decode batch: bad calls are rejected before anything changes") {
  const auto m = stories();
  CacheOptions o;
  Decoder a(m, o), b(m, o);
  DecodeBatch batch(m, 2);
  std::vector<std::exception_ptr> errors(2);
  Decoder* dup[] = {&a, &a};
  const std::int32_t two[] = {1, 2};
  CHECK_THROWS_AS(batch.step(dup, two, errors), InvalidArgument);
  Decoder* ab[] = {&a, &b};
  const std::int32_t one[] = {1};
  CHECK_THROWS_AS(batch.step(ab, one, errors), InvalidArgument);
  Decoder* three[] = {&a, &b, &a};
  const std::int32_t t3[] = {1, 2, 3};
  std::vector<std::exception_ptr> e3(3);
  CHECK_THROWS_AS(batch.step(three, t3, e3), InvalidArgument);
  const auto other = checkpoint_weights(Checkpoint::load(model_path()));  // same file, another model object
  Decoder c(other, o);
  Decoder* ac[] = {&a, &c};
  CHECK_THROWS_AS(batch.step(ac, two, errors), InvalidArgument);
  CHECK(a.cache().stats().tokens_seen == 0);
  CHECK(b.cache().stats().tokens_seen == 0);
  CHECK_THROWS_AS(DecodeBatch(m, 0), InvalidArgument);
}

}  // namespace kvcache::llama::test
