// `kvstream tokenize`: text files to a llama2.c uint16 token file with the runtime's own tokenizer,
// so a training recipe sees exactly the tokens `kvstream ppl --text` scores.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "common_options.h"

namespace kvstream {

struct TokenizeOptions {
  CommonOptions common;            ///< only --model/--tokenizer matter (the vocabulary size)
  std::vector<std::string> texts;  ///< --text, one or more; each becomes BOS + its encoding
  std::string out;                 ///< --out: the token file written
  bool json = false;               ///< one JSON object on stdout instead of the human report
};

/// Adds the `tokenize` subcommand to `app`; it fills `opts` when parsed.
CLI::App* add_tokenize_command(CLI::App& app, TokenizeOptions& opts);

/// Tokenizes every file and writes the concatenation; returns the process exit status. Throws
/// kvcache::Error (unreadable input, unwritable output) and FormatError (bad model files). The
/// output is written to a temporary file beside --out and renamed into place, so a failure leaves
/// no partial file.
int run_tokenize(const TokenizeOptions& opts);

}  // namespace kvstream
