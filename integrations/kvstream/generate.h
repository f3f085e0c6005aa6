// `kvstream generate`: unbounded streaming generation.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>

#include "common_options.h"

namespace kvstream {

struct GenerateOptions {
  CommonOptions common;
  std::uint64_t n = 0;                ///< tokens to generate; 0 = until interrupted
  float temperature = 1.0f;           ///< 0 = greedy
  float top_p = 0.9f;                 ///< nucleus mass; >= 1 disables
  std::optional<std::uint64_t> seed;  ///< unset = random (printed in the summary)
  std::string prompt;                 ///< text after BOS; empty = start from BOS alone
  bool quiet = false;                 ///< no stats on stderr
  double stats_seconds = 2.0;         ///< stats period in seconds (0 = only the summary)
  std::uint64_t stats_tokens = 0;     ///< if > 0, stats every this many tokens instead of by time
};

/// Adds the `generate` subcommand to `app`; it fills `opts` when parsed.
CLI::App* add_generate_command(CLI::App& app, GenerateOptions& opts);

/// Runs generation; returns the process exit status. Throws kvcache::Error on failure.
int run_generate(const GenerateOptions& opts);

}  // namespace kvstream
