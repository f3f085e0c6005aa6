// The decode benchmark helper and thread-count independence: a task arena of 1 or 2 threads gives
// bit-identical logits (products split rows across threads, attention splits KV heads; each row's
// and head's arithmetic is the same whichever thread runs it), and run_decode_bench reports
// positive rates with consistent byte counts on the shared model.
#include "llama/decode_bench.h"

#include <doctest/doctest.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <vector>

#include "kvcache/error.h"
#include "llama/model_file.h"
#include "llama/random_model.h"
#include "llama/weight_matmul.h"
#include "temp_file.h"

namespace kvcache::llama::test {
namespace {

// One llama block wide enough that the FFN, the classifier and the key/value products are above
// kParallelWeightMacs, so two threads really split them.
ModelShape wide_block() {
  ModelShape s;
  s.name = "wide";
  s.architecture = "llama";
  s.n_layers = 1;
  s.dim = 1024;
  s.n_heads = 16;
  s.n_kv_heads = 4;
  s.ffn_dim = 2816;
  s.vocab = 2048;
  s.context_length = 256;
  return s;
}

// Logits of every step of a greedy decode of `steps` tokens after a 20-token prompt, in an arena
// of `threads` threads.
std::vector<float> greedy_logits(const std::shared_ptr<const ModelWeights>& w, int threads, int steps) {
  oneapi::tbb::task_arena arena(threads);
  return arena.execute([&] {
    CacheOptions opt;
    opt.policy = PolicyConfig::streaming(4, 16);  // evicts during the run
    Decoder dec(w, opt);
    std::vector<std::int32_t> prompt(20);
    for (std::size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<std::int32_t>(i * 37 % 2048);
    std::span<const float> logits = dec.prefill(prompt);
    std::vector<float> all;
    for (int s = 0; s < steps; ++s) {
      all.insert(all.end(), logits.begin(), logits.end());
      const auto next =
          static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      logits = dec.step(next);
    }
    return all;
  });
}

}  // namespace

TEST_CASE("threads: 1 and 2 threads give bit-identical greedy logits") {
  const ModelShape shape = wide_block();
  REQUIRE(std::uint64_t{shape.ffn_dim} * shape.dim >= kParallelWeightMacs);
  REQUIRE(std::uint64_t{shape.vocab} * shape.dim >= kParallelWeightMacs);
  const TempFile f("threads_model", {});
  for (GgmlType type : {GgmlType::q8_0, GgmlType::f16}) {
    CAPTURE(ggml_type_name(type));
    write_random_model(shape, type, 3, f.path());
    const auto w = open_model_weights(f.path());
    const std::vector<float> one = greedy_logits(w, 1, 8);
    const std::vector<float> two = greedy_logits(w, 2, 8);
    REQUIRE(one.size() == two.size());
    CHECK(std::equal(one.begin(), one.end(), two.begin()));  // exact, not approximate
  }
}

TEST_CASE("decode bench: positive rates and consistent bytes on stories260K") {
  const auto w = open_model_weights(model_path());
  CacheOptions opt;
  opt.policy = PolicyConfig::streaming(4, 32);
  opt.dtype = DType::f16;
  DecodeBenchOptions b;
  b.depths = {64, 0, 64};  // sorted and deduplicated
  b.prompt_tokens = 16;
  b.decode_steps = 4;
  b.triad_bytes = std::size_t{8} << 20;
  int calls = 0;
  b.progress = [&](std::string_view, std::uint64_t done, std::uint64_t total) {
    CHECK(done <= total);
    ++calls;
  };
  const DecodeBenchResult r = run_decode_bench(w, opt, b);
  CHECK(calls > 0);
  CHECK(r.weight_bytes == w->step_matrix_bytes());
  CHECK(r.weight_bytes > 0);
  CHECK(r.prefill_tokens_per_second > 0);
  CHECK(r.triad_gbps > 0);
  REQUIRE(r.depths.size() == 2);
  CHECK(r.depths[0].requested_depth == 0);
  CHECK(r.depths[0].depth == 0);
  CHECK(r.depths[1].depth == 64);
  for (const DepthResult& d : r.depths) {
    CHECK(d.reached);
    CHECK(d.tokens_per_second > 0);
    CHECK(d.kv_bytes > 0);
    CHECK(d.bytes_per_token == r.weight_bytes + d.kv_bytes);
    CHECK(d.gbps == doctest::Approx(static_cast<double>(d.bytes_per_token) * d.tokens_per_second / 1e9));
    CHECK(d.triad_ratio == doctest::Approx(d.gbps / r.triad_gbps));
  }
  CHECK(r.depths[1].tokens_kept == 32);  // the budget: sinks evicted on the way to depth 64
}

TEST_CASE("decode bench: bad options are InvalidArgument naming the field") {
  const auto w = open_model_weights(model_path());
  DecodeBenchOptions b;
  b.depths = {0};
  b.triad_bytes = 0;
  b.threads = 0;
  CHECK_THROWS_WITH_AS(run_decode_bench(w, CacheOptions{}, b), doctest::Contains("threads"), InvalidArgument);
  b.threads = 1;
  b.decode_steps = 0;
  CHECK_THROWS_WITH_AS(run_decode_bench(w, CacheOptions{}, b), doctest::Contains("decode_steps"),
                       InvalidArgument);
  b.decode_steps = 1;
  b.depths.clear();
  CHECK_THROWS_WITH_AS(run_decode_bench(w, CacheOptions{}, b), doctest::Contains("depths"), InvalidArgument);
}

}  // namespace kvcache::llama::test
