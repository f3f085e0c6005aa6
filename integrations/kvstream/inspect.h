// `kvstream inspect`: where the attention goes, head by head, and which tokens are sinks.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "common_options.h"
#include "token_input.h"

namespace kvstream {

/// Tokens inspect accepts: it keeps the whole query x key attention of every head in memory
/// (layers x heads x T x T floats: 168 MB for stories260K at 1024 tokens).
inline constexpr std::uint64_t kMaxInspectTokens = 1024;

struct InspectOptions {
  CommonOptions common;  ///< the policy defaults to full here, so no key is ever evicted
  TokenInput input;      ///< --max-tokens defaults to 512 (the model's training context)
  std::string out_dir;
  /// Queries a token must have seen after it before it can be called a sink: the newest tokens
  /// always draw many times the uniform share (local attention), which is not a sink. The
  /// hidden-sinks policy likewise judges tokens only when they leave the window.
  std::uint32_t min_age = 64;
  /// Gu et al.'s threshold: a head counts as a token-0 sink head when its mean attention on token
  /// 0, over the queries after it, exceeds this.
  double sink_epsilon = 0.3;
  std::string plot_script;  ///< --plot-script; empty = scripts/plot_inspect.py in the source tree
  std::string python;       ///< --python; empty = python3, then /usr/bin/python3
  bool no_plot = false;
};

/// Adds the `inspect` subcommand to `app`; it fills `opts` when parsed.
CLI::App* add_inspect_command(CLI::App& app, InspectOptions& opts);

/// Runs the text through the model with the sink detector on, writes the attention dump, the
/// sink report and the heatmaps; returns the process exit status. Throws kvcache::Error.
int run_inspect(const InspectOptions& opts);

}  // namespace kvstream
