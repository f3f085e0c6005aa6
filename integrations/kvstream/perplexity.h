// `kvstream ppl`: streaming perplexity of a text or token file through the KV cache.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "common_options.h"

namespace kvstream {

struct PplOptions {
  CommonOptions common;
  std::string text_file;         ///< --text: UTF-8 text, tokenized as one document after BOS
  std::string tokens_file;       ///< --tokens: llama2.c uint16 token shard
  std::uint64_t max_tokens = 0;  ///< use at most this many tokens (context token included); 0 = all
  std::uint32_t segment = 1024;  ///< scored tokens per reported segment
  bool json = false;             ///< one JSON object on stdout instead of the human report
};

/// Adds the `ppl` subcommand to `app`; it fills `opts` when parsed.
CLI::App* add_ppl_command(CLI::App& app, PplOptions& opts);

/// Runs the evaluation; returns the process exit status. Throws kvcache::Error on failure.
int run_ppl(const PplOptions& opts);

}  // namespace kvstream
