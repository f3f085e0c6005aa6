// `kvstream compare`: are two perplexity runs over the same tokens different, or inside the noise?
// Reads two per-token score files (`ppl --nll-out`, `sweep --nll-dir`) and reports the perplexity
// ratio with a block-bootstrap interval (paired_bootstrap.h).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "paired_bootstrap.h"

namespace kvstream {

struct CompareOptions {
  std::string a, b;  ///< the baseline run and the run compared to it
  BootstrapOptions bootstrap;
  bool json = false;  ///< one JSON object on stdout instead of the human report
};

/// Adds the `compare` subcommand to `app`; it fills `opts` when parsed.
CLI::App* add_compare_command(CLI::App& app, CompareOptions& opts);

/// Runs the comparison; returns 0 whatever the verdict (it is data, not a failure). Throws
/// kvcache::FormatError for a malformed file and kvcache::InvalidArgument when the two files do
/// not score the same tokens.
int run_compare(const CompareOptions& opts);

}  // namespace kvstream
