#include "paired_bootstrap.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kvcache/error.h"

namespace kvstream {

double PairedComparison::ratio() const { return std::exp(log_ratio); }

int PairedComparison::verdict() const {
  if (ci_low > 0) return 1;
  if (ci_high < 0) return -1;
  return 0;
}

PairedComparison compare_paired(std::span<const double> a, std::span<const double> b,
                                const BootstrapOptions& opts) {
  using kvcache::InvalidArgument;
  if (a.empty()) throw InvalidArgument("paired comparison: no tokens");
  if (a.size() != b.size()) {
    throw InvalidArgument(fmt::format(
        "paired comparison: {} tokens against {}: the runs must score the same tokens", a.size(), b.size()));
  }
  if (opts.block == 0) throw InvalidArgument("paired comparison: block length must be at least 1 token");
  if (opts.resamples < 100) throw InvalidArgument("paired comparison: at least 100 resamples are needed");
  if (!(opts.level > 0 && opts.level < 1))
    throw InvalidArgument("paired comparison: level must lie in (0, 1)");

  const std::size_t n = a.size();
  // prefix[i] = sum of d over [0, i) of the sequence repeated twice, so any circular run of up to n
  // tokens is one subtraction.
  std::vector<double> prefix(2 * n + 1, 0.0);
  double sum_a = 0, sum_b = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i]))
      throw InvalidArgument(fmt::format("paired comparison: token {} has a non-finite NLL", i));
    sum_a += a[i];
    sum_b += b[i];
  }
  for (std::size_t i = 0; i < 2 * n; ++i) prefix[i + 1] = prefix[i] + (b[i % n] - a[i % n]);

  PairedComparison r;
  r.tokens = n;
  r.options = opts;
  r.options.block = static_cast<std::uint32_t>(std::min<std::size_t>(opts.block, n));
  r.ppl_a = std::exp(sum_a / static_cast<double>(n));
  r.ppl_b = std::exp(sum_b / static_cast<double>(n));
  r.log_ratio = prefix[n] / static_cast<double>(n);

  const std::size_t len = r.options.block;
  const std::size_t blocks = (n + len - 1) / len;
  std::mt19937_64 rng(opts.seed);
  std::uniform_int_distribution<std::size_t> start(0, n - 1);
  std::vector<double> means(opts.resamples);
  std::uint32_t higher = 0;
  for (double& m : means) {
    double s = 0;
    for (std::size_t k = 0; k < blocks; ++k) {
      const std::size_t i = start(rng);
      s += prefix[i + len] - prefix[i];
    }
    m = s / static_cast<double>(blocks * len);
    higher += m > 0 ? 1u : 0u;
  }
  std::sort(means.begin(), means.end());
  // Percentile interval: the replicates at ranks floor(alpha/2 * R) and ceil((1 - alpha/2) * R) - 1.
  const double tail = (1 - opts.level) / 2 * static_cast<double>(opts.resamples);
  const auto lo = static_cast<std::size_t>(std::floor(tail));
  const auto hi = static_cast<std::size_t>(std::ceil(static_cast<double>(opts.resamples) - tail)) - 1;
  r.ci_low = means[std::min(lo, means.size() - 1)];
  r.ci_high = means[std::min(hi, means.size() - 1)];
  r.share_b_higher = static_cast<double>(higher) / static_cast<double>(opts.resamples);
  return r;
}

}  // namespace kvstream
