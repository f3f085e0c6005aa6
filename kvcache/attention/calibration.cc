#include "kvcache/calibration.h"

#include <string>
#include <vector>

#include "kvcache/error.h"

namespace kvcache {

std::uint32_t calibrate_sinks(StreamCache& cache, const SinkDetector& detector, std::uint32_t layer,
                              float beta, std::span<float> out, std::span<float> mass) {
  if (!(beta > 0.f && beta <= 1.f)) throw InvalidArgument("calibrate_sinks: beta must be in (0, 1]");
  const StreamConfig& cfg = cache.config();
  const std::uint32_t n = cache.n_kept();
  if (n == 0 || mass.size() % n != 0)
    throw InvalidArgument("calibrate_sinks: mass must hold n_heads x n_kept floats");
  const auto n_heads = static_cast<std::uint32_t>(mass.size() / n);
  if (n_heads == 0 || n_heads % cfg.n_kv_heads != 0 || out.size() != std::size_t{n_heads} * cfg.head_dim) {
    throw InvalidArgument(
        "calibrate_sinks: out must hold n_heads x head_dim floats, n_heads a multiple of n_kv_heads");
  }
  if (beta == 1.f) return 0;
  const std::vector<KeptToken> tokens = cache.tokens();
  const std::uint32_t group = n_heads / cfg.n_kv_heads;
  std::vector<float> v(cfg.head_dim);
  std::vector<double> removed(cfg.head_dim);
  std::uint32_t calibrated = 0;
  for (std::uint32_t h = 0; h < n_heads; ++h) {
    float* p = mass.data() + std::size_t{h} * n;
    double removed_mass = 0;
    std::fill(removed.begin(), removed.end(), 0.0);
    for (std::uint32_t j = 0; j < n; ++j) {
      if (tokens[j].meta.pin == PinReason::initial || p[j] == 0.f) continue;
      if (!detector.is_sink(cache, j, layer, h)) continue;
      const double cut = (1.0 - beta) * p[j];
      cache.read_value(layer, j, h / group, v);
      for (std::uint32_t i = 0; i < cfg.head_dim; ++i) removed[i] += cut * v[i];
      removed_mass += cut;
      p[j] *= beta;
      ++calibrated;
    }
    if (removed_mass == 0) continue;
    const double z = 1.0 - removed_mass;
    float* o = out.data() + std::size_t{h} * cfg.head_dim;
    for (std::uint32_t i = 0; i < cfg.head_dim; ++i) o[i] = static_cast<float>((o[i] - removed[i]) / z);
    for (std::uint32_t j = 0; j < n; ++j) p[j] = static_cast<float>(p[j] / z);
  }
  return calibrated;
}

}  // namespace kvcache
