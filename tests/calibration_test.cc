// Calibration after the fact equals attention recomputed with the sinks' weights scaled by beta.
#include "kvcache/calibration.h"

#include <doctest/doctest.h>

#include <cmath>

#include "kvcache/attention.h"
#include "kvcache/error.h"
#include "tests/test_support.h"

using namespace kvcache;

TEST_CASE("calibrate_sinks equals a direct softmax with beta on the hidden sinks' weights") {
  const std::uint32_t kHeads = 4;
  SinkDetector detector(1, kHeads);
  StreamConfig c{
      1, 2, 8, 4, DType::f32, PositionMode::reindexed, {}, PolicyConfig::full(), detector.state_floats()};
  StreamCache cache(kvtest::make_pool(c, 64), c);
  // Token 0 is an initial sink (pinned as such under a sinks policy; here full: plant by mass);
  // token 9 is a hidden sink in heads 1 and 3.
  for (int t = 0; t < 30; ++t) {
    kvtest::push_token(cache);
    const std::uint32_t n = cache.n_kept();
    std::vector<float> mass(std::size_t{kHeads} * n, 1.f);
    for (std::uint32_t h = 0; h < kHeads; ++h) {
      if (n > 9 && (h == 1 || h == 3)) mass[h * n + 9] = 10.f * static_cast<float>(n);
      float sum = 0;
      for (std::uint32_t j = 0; j < n; ++j) sum += mass[h * n + j];
      for (std::uint32_t j = 0; j < n; ++j) mass[h * n + j] /= sum;
    }
    detector.observe(cache, 0, mass);
  }
  REQUIRE(detector.is_sink(cache, 9, 0, 1));
  REQUIRE_FALSE(detector.is_sink(cache, 9, 0, 0));

  std::vector<float> q(kHeads * 8);
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = kvtest::synth(3, 0, 0, i, 1);
  std::vector<float> out(q.size()), mass(kHeads * cache.n_kept());
  attend_reference(cache, 0, q, out, mass, AttendOptions{kHeads});
  const std::vector<float> p0 = mass;
  const float beta = 0.25f;
  CHECK(calibrate_sinks(cache, detector, 0, beta, out, mass) == 2);

  // Direct: reweight the original probabilities and recompute the output from the values.
  const std::uint32_t n = cache.n_kept();
  std::vector<float> v(8);
  for (std::uint32_t h = 0; h < kHeads; ++h) {
    double z = 0;
    for (std::uint32_t j = 0; j < n; ++j) z += p0[h * n + j] * ((j == 9 && h % 2 == 1) ? beta : 1.f);
    std::vector<double> want(8, 0.0);
    for (std::uint32_t j = 0; j < n; ++j) {
      const double p = p0[h * n + j] * ((j == 9 && h % 2 == 1) ? beta : 1.f) / z;
      CHECK(std::abs(mass[h * n + j] - p) < 1e-6);
      cache.read_value(0, j, h / 2, v);
      for (int i = 0; i < 8; ++i) want[i] += p * v[i];
    }
    for (int i = 0; i < 8; ++i) CHECK(std::abs(out[h * 8 + i] - want[i]) < 1e-5);
  }
  CHECK_THROWS_AS(calibrate_sinks(cache, detector, 0, 0.f, out, mass), InvalidArgument);
  CHECK_THROWS_AS(calibrate_sinks(cache, detector, 0, 0.5f, out, std::span<float>(mass).first(3)),
                  InvalidArgument);
}
