// `kvstream sweep`: perplexity against KV memory over a grid of policies x budgets.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "common_options.h"
#include "token_input.h"

namespace kvstream {

struct SweepOptions {
  CommonOptions common;  ///< every cache flag but --policy / --budget, shared by all points
  TokenInput input;
  std::vector<std::string> policies{"full", "window", "sinks", "hidden-sinks", "h2o"};
  std::vector<std::uint32_t> budgets{32, 64, 128, 256, 512};
  std::vector<std::string> kv_dtypes;  ///< --kv-dtypes: a dtype axis; empty = --kv-dtype alone
  std::string out_dir;                 ///< --out: created if missing
  unsigned jobs = 0;                   ///< grid points run at once; 0 = the thread count
  std::uint32_t segment = 1024;        ///< scored tokens per segment in sweep.json
  std::string plot_script;             ///< --plot-script; empty = scripts/plot_sweep.py in the source tree
  std::string python;                  ///< --python; empty = python3, then /usr/bin/python3
  bool no_plot = false;
  bool per_token = false;  ///< --per-token: DIR/nll/<point>.csv for `kvstream compare`
};

/// Adds the `sweep` subcommand to `app`; it fills `opts` when parsed.
CLI::App* add_sweep_command(CLI::App& app, SweepOptions& opts);

/// Runs the grid and writes the files; returns the process exit status (130 when interrupted).
/// Throws kvcache::Error on failure.
int run_sweep(const SweepOptions& opts);

}  // namespace kvstream
