// `kvstream bench`: prefill and decode speed of a model at given stream depths, the bytes a decode
// step reads and the bandwidth that is, against a STREAM triad measured in the same process (the
// measurement itself is kvcache::llama::run_decode_bench in integrations/llama/decode_bench.h).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <vector>

#include "common_options.h"

namespace kvstream {

struct BenchOptions {
  CommonOptions common;  ///< model, cache policy (--kv-dtype f16 here), --threads
  std::vector<std::uint64_t> depths{0, 4096, 16384};  ///< --depths
  std::uint32_t prompt_tokens = 128;                  ///< --prompt-tokens: tokens of the timed prefill
  std::uint32_t steps = 32;                           ///< --steps: timed decode steps per depth
  bool fill_prefill = false;                          ///< --fill-prefill: reach depths with Decoder::prefill
  double max_seconds = 600;                           ///< --max-seconds: stop filling after this long
  std::uint64_t seed = 1;                             ///< --seed of the random token ids
  double triad_mib = 384;                             ///< --triad-mib: triad working set; 0 = no triad
  bool json = false;                                  ///< --json: one JSON object on stdout
};

/// Adds the `bench` subcommand to `app`; it fills `opts` when parsed.
CLI::App* add_bench_command(CLI::App& app, BenchOptions& opts);

/// Runs the measurement (in the caller's task arena: main runs it inside run_in_arena) and prints
/// the report; returns the process exit status. Throws kvcache::Error on failure.
int run_bench(const BenchOptions& opts);

}  // namespace kvstream
