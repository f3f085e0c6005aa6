#include "serve.h"

#include <fmt/format.h>
#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <memory>
#include <thread>

#include "chat_template.h"
#include "directory_store.h"
#include "engine.h"
#include "http_server.h"
#include "kvcache/error.h"

namespace kvstream {

namespace {

std::vector<std::string> template_names() {
  std::vector<std::string> out;
  for (const std::string_view n : kvserve::ChatTemplate::names()) out.emplace_back(n);
  return out;
}

kvserve::ChatTemplate chat_template(const ServeOptions& o, const LoadedModel& m, std::string& source) {
  try {
    return kvserve::ChatTemplate::choose(
        o.chat_template.empty() ? std::nullopt : std::optional<std::string_view>(o.chat_template),
        m.chat_template ? std::optional<std::string_view>(*m.chat_template) : std::nullopt, source);
  } catch (const kvcache::FormatError& e) {
    throw kvcache::FormatError(m.weights->path.string() + ": " + e.what());
  }
}

}  // namespace

CLI::App* add_serve_command(CLI::App& app, ServeOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "serve",
      "OpenAI-compatible completion server (POST /v1/chat/completions, whose stateless clients continue the "
      "session already holding their conversation; POST /v1/completions with an extra 'session' field that "
      "continues a stream without re-reading it; /v1/sessions, /v1/models, /metrics, /health). All sessions "
      "share one KV pool of "
      "--pool-mib; idle sessions are parked to --state-dir when it is full and restored on their next "
      "request. "
      "SIGTERM or Ctrl-C parks every session and exits; started again on the same --state-dir, every session "
      "resumes exactly.");
  // --threads already counts HTTP connections here: the decode thread count is --decode-threads.
  add_common_options(*cmd, o.common, /*policy_flags=*/true, "--decode-threads");
  cmd->remove_option(cmd->get_option("--max-kv-mb"));  // the pool is --pool-mib, shared by all sessions
  cmd->add_option("--host", o.host, "address to listen on (default loopback only)")->capture_default_str();
  cmd->add_option("--port", o.port, "TCP port; 0 = any free port (printed at startup)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--pool-mib", o.pool_mib, "hard limit of the KV page pool shared by every session, MiB")
      ->check(CLI::Range(0.01, 1e7))
      ->capture_default_str();
  cmd->add_option("--state-dir", o.state_dir, "directory where sessions are parked and kept across restarts")
      ->capture_default_str();
  cmd->add_option("--max-body-bytes", o.max_body_bytes, "largest request body accepted (larger: HTTP 413)")
      ->check(CLI::Range(std::size_t{64}, std::size_t{1} << 30))
      ->capture_default_str();
  cmd->add_option("--max-tokens-limit", o.max_tokens_limit, "largest max_tokens a request may ask for")
      ->check(CLI::Range(1u, 1u << 24))
      ->capture_default_str();
  cmd->add_option("--max-sessions", o.max_sessions, "sessions kept at once, live and parked (more: HTTP 429)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1} << 24))
      ->capture_default_str();
  cmd->add_option("--threads", o.threads, "connections served at once (every streaming client holds one)")
      ->check(CLI::Range(2, 4096))
      ->capture_default_str();
  cmd->add_option(
         "--chat-template", o.chat_template,
         "chat template of /v1/chat/completions: one of the built-in names (default: detected from the "
         "GGUF's tokenizer.chat_template, else chatml)")
      ->check(CLI::IsMember(template_names()));
  cmd->add_option("--retry-after", o.retry_after, "seconds a 503 (out of KV memory) asks clients to wait")
      ->check(CLI::Range(0, 3600))
      ->capture_default_str();
  return cmd;
}

int run_serve(const ServeOptions& o) {
  // Signals go to one thread that waits for them: block them before any other thread exists so
  // every thread inherits the mask. SIGPIPE (a client gone mid-write) is an error return instead.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  const LoadedModel m = load_model(o.common);
  kvserve::EngineOptions e;
  e.cache = cache_options(o.common, m.weights->config);
  e.pool_bytes = static_cast<std::size_t>(o.pool_mib * 1024 * 1024);
  e.store = std::make_shared<kvserve::DirectoryStore>(o.state_dir);
  e.scratch_dir = o.state_dir;
  e.max_sessions = o.max_sessions;
  e.limits.max_tokens = o.max_tokens_limit;
  e.model_name = m.weights->path.stem().string();
  e.threads = thread_count(o.common);
  std::string template_source;
  e.chat_template = chat_template(o, m, template_source);
  nlohmann::json model = model_json(m);
  model.erase("path");  // clients need not learn the server's file system
  e.model_details = {{"model", std::move(model)},
                     {"cache", policy_json(o.common, m.weights->config)},
                     {"chat_template_source", template_source}};
  std::fprintf(
      stderr, "[kvstream serve] model %s (%s), %s; KV pool %.1f MiB; sessions in %s; chat template %s (%s)\n",
      m.weights->path.string().c_str(), m.model_source.c_str(),
      policy_summary(o.common, m.weights->config).c_str(), o.pool_mib, e.store->describe().c_str(),
      std::string(e.chat_template.name()).c_str(), template_source.c_str());
  kvserve::Engine engine(m.weights, m.tokenizer, std::move(e));
  kvserve::HttpOptions h;
  h.host = o.host;
  h.port = o.port;
  h.max_body_bytes = o.max_body_bytes;
  h.threads = o.threads;
  h.retry_after_s = o.retry_after;
  kvserve::HttpServer server(engine, h);
  std::fprintf(
      stderr,
      "[kvstream serve] listening on http://%s:%d (SIGTERM or Ctrl-C parks every session and exits)\n",
      o.host.c_str(), server.port());
  // The same, as one JSON line on stdout, for scripts that start the server on port 0.
  std::printf("{\"event\":\"listening\",\"host\":\"%s\",\"port\":%d}\n", o.host.c_str(), server.port());
  std::fflush(stdout);

  std::thread waiter([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    std::fprintf(stderr, "[kvstream serve] %s: finishing the current step and parking every session\n",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT");
    server.stop();
  });
  const bool ok = server.run();
  if (!ok) {
    // The listener failed on its own: wake the waiter so it runs the same orderly stop.
    pthread_kill(waiter.native_handle(), SIGTERM);
  }
  waiter.join();
  std::fprintf(stderr, "[kvstream serve] stopped\n");
  return ok ? 0 : 1;
}

}  // namespace kvstream
