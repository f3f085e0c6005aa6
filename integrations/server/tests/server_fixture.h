// A server on a free loopback port for the tests (127.0.0.1 only), a plain HTTP client, and a
// single-stream oracle that runs the model directly, as `kvstream generate` does.
#pragma once

#include <httplib.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine.h"
#include "http_server.h"
#include "llama/checkpoint.h"
#include "llama/model_weights.h"
#include "llama/tokenizer.h"
#include "session_store.h"

namespace kvserve::test {

std::shared_ptr<const kvcache::llama::ModelWeights> test_model();
std::shared_ptr<const kvcache::llama::Tokenizer> test_tokenizer();

/// Sinks policy, small budget and pages so sessions are cheap and evict early.
kvcache::llama::CacheOptions test_cache(std::uint32_t budget = 64);

struct TempDir {
  TempDir();
  ~TempDir();
  std::filesystem::path path;
};

/// Engine + HttpServer on 127.0.0.1, port chosen by the kernel, serving on a thread.
class TestServer {
 public:
  /// `store`: where sessions park (default: a DirectoryStore in `state_dir`).
  TestServer(const std::filesystem::path& state_dir, double pool_mib,
             kvcache::llama::CacheOptions cache = test_cache(), std::size_t max_body = 1 << 16,
             std::shared_ptr<SessionStore> store = nullptr, std::size_t max_sessions = 4096);
  ~TestServer();  // stop() if not done
  /// SIGTERM's path: park everything, stop listening, join.
  void stop();

  httplib::Client client() const;
  Engine& engine() { return *engine_; }
  const std::vector<std::string>& log() const { return log_; }
  int port() const { return http_->port(); }

 private:
  std::vector<std::string> log_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<HttpServer> http_;
  std::thread thread_;
  bool stopped_ = false;
};

/// POST `body` to /v1/completions; the parsed answer and status.
struct Answer {
  int status = 0;
  nlohmann::json body;
  std::string raw;
};
Answer post(httplib::Client& c, const std::string& path, const nlohmann::json& body);
Answer post_raw(httplib::Client& c, const std::string& path, const std::string& body);
Answer get(httplib::Client& c, const std::string& path);

/// A streamed completion: the concatenated text of its events, the last event, and whether
/// "[DONE]" ended it.
struct Streamed {
  int status = 0;
  std::string text;
  nlohmann::json last;
  bool done = false;
  int events = 0;
};
Streamed post_stream(httplib::Client& c, nlohmann::json body);

/// A streamed chat completion: every event's JSON in order, and whether "[DONE]" ended it.
struct ChatStreamed {
  int status = 0;
  std::vector<nlohmann::json> events;
  bool done = false;
  std::string content;  ///< the concatenated delta contents
};
ChatStreamed post_chat_stream(httplib::Client& c, nlohmann::json body);

/// Sends `request` (raw HTTP/1.1 text) on a new loopback connection and returns everything the
/// server answers until it closes the connection (or `timeout_s` passes).
std::string raw_http(int port, const std::string& request, int timeout_s = 10);

/// The oracle: one Decoder and Sampler fed turn by turn exactly as one uninterrupted stream
/// (BOS + first prompt, generated tokens, the next prompt, ...), text decoded as kvstream
/// generate prints it.
class Oracle {
 public:
  Oracle(kvcache::llama::CacheOptions cache, float temperature, float top_p, std::uint64_t seed);
  ~Oracle();
  /// Appends `prompt` and generates `n` tokens (stopping early at no stop strings); their text.
  std::string turn(const std::string& prompt, std::uint32_t n);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvserve::test
