// The token sequence a kvstream evaluation reads: --text or --tokens, cut to --max-tokens.
// Shared by ppl, sweep and inspect so all three see exactly the same tokens for the same flags.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common_options.h"

namespace kvstream {

struct TokenInput {
  std::string text_file;         ///< --text: UTF-8 text, tokenized as one document after BOS
  std::string tokens_file;       ///< --tokens: llama2.c uint16 token shard
  std::uint64_t max_tokens = 0;  ///< use at most this many tokens; 0 = all

  /// The file given, for reports.
  const std::string& source() const { return text_file.empty() ? tokens_file : text_file; }
  /// "text" or "tokens".
  const char* source_kind() const { return text_file.empty() ? "tokens" : "text"; }
};

/// Registers --text, --tokens (mutually exclusive) and --max-tokens on `cmd`. The current
/// value of `in.max_tokens` is the default shown; `max_tokens_help` explains it.
void add_token_input_options(CLI::App& cmd, TokenInput& in, const std::string& max_tokens_help);

/// Reads and tokenizes the input as `kvstream ppl` always has: a text file becomes BOS + the
/// encoding of the whole file; a token file is used as is. Cut to max_tokens when it is > 0.
/// Throws kvcache::InvalidArgument unless exactly one file is given or when fewer than
/// `min_tokens` tokens result (`command` names the subcommand in the message), and the loaders'
/// errors naming the file.
std::vector<std::int32_t> load_tokens(const TokenInput& in, const LoadedModel& model,
                                      std::string_view command, std::size_t min_tokens);

}  // namespace kvstream
