// Paired comparison of two perplexity runs over the same tokens: is run B's perplexity higher or
// lower than run A's by more than re-drawing the text would move it?
//
// Perplexity differences between cache settings are often a fraction of a percent, the size of the
// noise a different 3000-token text would give. Both runs score the same tokens, so the per-token
// differences d_i = nll_b[i] - nll_a[i] carry the comparison; ln(ppl_b / ppl_a) is their mean.
// Neighbouring tokens share context and cache state, so the d_i are correlated: a plain bootstrap
// over tokens would understate the spread. The circular block bootstrap resamples runs of `block`
// consecutive tokens instead (Politis and Romano, 1992), which keeps that local dependence.
#pragma once

#include <cstdint>
#include <span>

namespace kvstream {

struct BootstrapOptions {
  std::uint32_t block = 64;        ///< consecutive tokens per resampled block (clamped to the token count)
  std::uint32_t resamples = 2000;  ///< bootstrap replicates, at least 100
  std::uint64_t seed = 1;          ///< the replicates are a pure function of the inputs and this seed
  double level = 0.95;             ///< two-sided interval level, in (0, 1)
};

struct PairedComparison {
  std::uint64_t tokens = 0;
  double ppl_a = 0, ppl_b = 0;
  double log_ratio = 0;            ///< mean(nll_b - nll_a) = ln(ppl_b / ppl_a), in nats
  double ci_low = 0, ci_high = 0;  ///< percentile interval of log_ratio over the replicates
  double share_b_higher = 0;       ///< fraction of replicates with log_ratio > 0
  BootstrapOptions options;        ///< what produced the interval (block as clamped)

  double ratio() const;  ///< ppl_b / ppl_a
  /// -1: B lower (the whole interval below 0), +1: B higher (the whole interval above 0), 0: the
  /// interval contains 0, so the runs cannot be told apart at this level.
  int verdict() const;
};

/// Compares per-token negative log-likelihoods `a` and `b` (natural log, same tokens in the same
/// order). Deterministic for given inputs and options. Throws kvcache::InvalidArgument when the
/// spans are empty or of different lengths, a value is not finite, or an option is out of range.
PairedComparison compare_paired(std::span<const double> a, std::span<const double> b,
                                const BootstrapOptions& opts = {});

}  // namespace kvstream
