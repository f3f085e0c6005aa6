// HttpServer: the OpenAI-compatible HTTP front of an Engine (cpp-httplib).
//
//   POST   /v1/completions      prompt, max_tokens, temperature, top_p, seed, stop, stream (server-
//                               sent events), session (continue that session's stream)
//   POST   /v1/chat/completions messages, max_tokens / max_completion_tokens, temperature, top_p,
//                               seed, stop, stream, stream_options.include_usage, session
//   POST   /v1/sessions         create a session; GET /v1/sessions lists them
//   GET    /v1/sessions/{id}    state, kept / pinned / evicted counts, KV bytes; DELETE ends it
//   GET    /v1/models (and /v1/models/{id}), /health, /metrics (Prometheus text)
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <string>

#include "engine.h"

namespace httplib {
class Server;
struct Response;
}  // namespace httplib

namespace kvserve {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                        ///< 0 = any free port (see port())
  std::size_t max_body_bytes = 1u << 20;  ///< larger bodies get 413
  int threads = 128;                      ///< connections served at once (streams hold one each)
  int retry_after_s = 1;                  ///< Retry-After of a 503
};

/// Thread safety: run() on one thread; stop() from any thread (a signal-handling thread).
class HttpServer {
 public:
  /// Binds the socket (kvcache::Error when it cannot). `engine` must outlive the server.
  HttpServer(Engine& engine, const HttpOptions& options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// The bound port.
  int port() const noexcept { return port_; }
  /// Serves until stop(). Returns false if the listener failed.
  bool run();
  /// Parks every session (Engine::shutdown: running streams get their final event), lets open
  /// responses finish for up to two seconds, then stops the listener. Idempotent.
  void stop();

 private:
  struct EventStream;
  void routes();
  /// Answers with `job`'s events as server-sent events (one per released piece) as they come.
  void stream(httplib::Response& res, std::shared_ptr<Job> job, EventStream events);
  Engine& engine_;
  HttpOptions opt_;
  std::unique_ptr<httplib::Server> http_;
  int port_ = 0;
  std::atomic<int> open_responses_{0};  ///< completions being written
};

}  // namespace kvserve
