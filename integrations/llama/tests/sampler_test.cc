// Sampler: greedy, determinism under a seed, nucleus restriction, bad input.
#include "llama/sampler.h"

#include <doctest/doctest.h>

#include <limits>
#include <vector>

#include "kvcache/error.h"

namespace kvcache::llama::test {

TEST_CASE("sampler: temperature 0 is argmax") {
  Sampler s({0.f, 0.9f, 7});
  CHECK(s.sample(std::vector<float>{0.1f, 3.f, -2.f, 2.9f}) == 1);
}

TEST_CASE("sampler: equal seeds give equal streams") {
  const std::vector<float> logits = {1.f, 1.2f, 0.8f, 1.1f, 0.f, 0.5f};
  for (float top_p : {0.f, 0.9f}) {
    Sampler a({1.f, top_p, 42}), b({1.f, top_p, 42});
    std::vector<int> seen(logits.size(), 0);
    for (int i = 0; i < 500; ++i) {
      const auto x = a.sample(logits);
      CHECK(x == b.sample(logits));
      ++seen[static_cast<std::size_t>(x)];
    }
    CHECK(seen[1] > 0);
    CHECK(seen[0] > 0);
  }
}

TEST_CASE("sampler: a saved RNG state resumes the same stream in another sampler") {
  const std::vector<float> logits = {1.f, 1.2f, 0.8f, 1.1f, 0.f, 0.5f};
  Sampler a({1.f, 0.9f, 5});
  for (int i = 0; i < 17; ++i) a.sample(logits);
  Sampler b({1.f, 0.9f, 99});
  b.set_rng_state(a.rng_state());
  for (int i = 0; i < 200; ++i) CHECK(a.sample(logits) == b.sample(logits));
  CHECK_THROWS_AS(b.set_rng_state(0), InvalidArgument);
}

TEST_CASE("sampler: a tiny nucleus keeps only the most likely token") {
  Sampler s({1.f, 0.01f, 3});
  for (int i = 0; i < 100; ++i) CHECK(s.sample(std::vector<float>{0.f, 5.f, 4.f, 1.f}) == 1);
}

TEST_CASE("sampler: bad configuration and non-finite logits throw") {
  CHECK_THROWS_AS(Sampler({-1.f, 0.9f, 1}), InvalidArgument);
  CHECK_THROWS_AS(Sampler({std::numeric_limits<float>::quiet_NaN(), 0.9f, 1}), InvalidArgument);
  Sampler s({1.f, 0.9f, 1});
  CHECK_THROWS_AS(s.sample(std::vector<float>{0.f, std::numeric_limits<float>::quiet_NaN()}),
                  InvalidArgument);
  CHECK_THROWS_AS(s.sample(std::vector<float>{}), InvalidArgument);
}

}  // namespace kvcache::llama::test
