// `kvstream serve`: an OpenAI-compatible completion server over many endless streams (see
// integrations/server/ and README.md, "Serving").
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "common_options.h"

namespace kvstream {

struct ServeOptions {
  CommonOptions common;
  std::string host = "127.0.0.1";
  int port = 8080;        ///< 0 = any free port (printed at startup)
  double pool_mib = 256;  ///< the shared KV pool's hard limit
  std::string state_dir = "kvstream-state";
  std::size_t max_body_bytes = 1 << 20;
  std::uint32_t max_tokens_limit = 4096;
  std::size_t max_sessions = 4096;
  int threads = 128;
  int retry_after = 1;
  std::string chat_template;  ///< --chat-template; empty = the model's own, else chatml
};

CLI::App* add_serve_command(CLI::App& app, ServeOptions& opts);
/// Serves until SIGTERM or SIGINT, then parks every session in --state-dir and returns 0.
int run_serve(const ServeOptions& opts);

}  // namespace kvstream
