#include "compare.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "kvcache/error.h"
#include "token_nll_file.h"

namespace kvstream {

CLI::App* add_compare_command(CLI::App& app, CompareOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "compare",
      "Paired comparison of two runs that scored the same tokens (files from `ppl --nll-out` or `sweep "
      "--nll-dir`): the perplexity ratio B/A and an interval from a circular block bootstrap over the "
      "per-token differences. When the interval contains 0 the two settings cannot be told apart on this "
      "text at this level.");
  cmd->add_option("A", o.a, "baseline per-token score file")->required()->check(CLI::ExistingFile);
  cmd->add_option("B", o.b, "per-token score file compared to A")->required()->check(CLI::ExistingFile);
  cmd->add_option("--block", o.bootstrap.block,
                  "consecutive tokens per resampled block: neighbouring tokens share context, so their "
                  "differences are correlated; blocks keep that (clamped to the token count)")
      ->check(CLI::Range(1u, 1u << 30))
      ->capture_default_str();
  cmd->add_option("--resamples", o.bootstrap.resamples, "bootstrap replicates")
      ->check(CLI::Range(100u, 10'000'000u))
      ->capture_default_str();
  cmd->add_option("--seed", o.bootstrap.seed, "seed of the resampling (the result is a function of it)")
      ->capture_default_str();
  cmd->add_option("--level", o.bootstrap.level, "two-sided interval level")
      ->check(CLI::Range(0.5, 0.999))
      ->capture_default_str();
  cmd->add_flag("--json", o.json, "print one JSON object on stdout instead of the human report");
  return cmd;
}

namespace {

double percent(double log_ratio) { return 100.0 * std::expm1(log_ratio); }

}  // namespace

int run_compare(const CompareOptions& o) {
  const TokenNll a = read_token_nll_csv(o.a);
  const TokenNll b = read_token_nll_csv(o.b);
  if (a.tokens.size() != b.tokens.size()) {
    throw kvcache::InvalidArgument(
        fmt::format("{} scores {} tokens and {} scores {}: compare needs runs over the "
                    "same tokens (same text and --max-tokens)",
                    o.a, a.tokens.size(), o.b, b.tokens.size()));
  }
  for (std::size_t i = 0; i < a.tokens.size(); ++i) {
    if (a.tokens[i] != b.tokens[i]) {
      throw kvcache::InvalidArgument(
          fmt::format("{} and {} differ at position {} (token {} against {}): not the "
                      "same text or tokenizer",
                      o.a, o.b, i + 1, a.tokens[i], b.tokens[i]));
    }
  }
  const PairedComparison r = compare_paired(a.nll, b.nll, o.bootstrap);
  const char* verdict = r.verdict() > 0 ? "B higher" : r.verdict() < 0 ? "B lower" : "not distinguishable";
  if (o.json) {
    const nlohmann::json j{{"a", o.a},
                           {"b", o.b},
                           {"tokens", r.tokens},
                           {"ppl_a", r.ppl_a},
                           {"ppl_b", r.ppl_b},
                           {"ratio", r.ratio()},
                           {"log_ratio", r.log_ratio},
                           {"ci_low", r.ci_low},
                           {"ci_high", r.ci_high},
                           {"ratio_low", std::exp(r.ci_low)},
                           {"ratio_high", std::exp(r.ci_high)},
                           {"share_b_higher", r.share_b_higher},
                           {"verdict", verdict},
                           {"level", r.options.level},
                           {"block", r.options.block},
                           {"resamples", r.options.resamples},
                           {"seed", r.options.seed}};
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::printf("A  ppl %.4f  %s\n", r.ppl_a, o.a.c_str());
  std::printf("B  ppl %.4f  %s\n", r.ppl_b, o.b.c_str());
  std::printf("B/A %+.2f%% perplexity over %llu tokens, %.0f%% interval %+.2f%% .. %+.2f%%: %s\n",
              percent(r.log_ratio), static_cast<unsigned long long>(r.tokens), 100 * r.options.level,
              percent(r.ci_low), percent(r.ci_high), verdict);
  std::printf(
      "(circular block bootstrap: %u-token blocks, %u resamples, seed %llu; B higher in %.1f%% of them)\n",
      r.options.block, r.options.resamples, static_cast<unsigned long long>(r.options.seed),
      100 * r.share_b_higher);
  return 0;
}

}  // namespace kvstream
