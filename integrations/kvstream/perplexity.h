// `kvstream ppl`: streaming perplexity of a text or token file through the KV cache.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "common_options.h"
#include "token_input.h"

namespace kvstream {

struct PplOptions {
  CommonOptions common;
  TokenInput input;              ///< --text / --tokens / --max-tokens
  std::uint32_t segment = 1024;  ///< scored tokens per reported segment
  bool json = false;             ///< one JSON object on stdout instead of the human report
  std::string nll_out;           ///< --nll-out: per-token score file (token_nll_file.h); empty = none
};

/// Adds the `ppl` subcommand to `app`; it fills `opts` when parsed.
CLI::App* add_ppl_command(CLI::App& app, PplOptions& opts);

/// Runs the evaluation; returns the process exit status. Throws kvcache::Error on failure.
int run_ppl(const PplOptions& opts);

}  // namespace kvstream
