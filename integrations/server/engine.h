// Engine: the sessions of a completion server and the one thread that runs them. All sessions'
// KV caches share one PagePool whose byte budget is a hard limit: admission reserves the pages a
// request can reach, parking the least recently used idle sessions to a SessionStore when they do
// not fit and refusing (HTTP 503) when nothing idle is left, so a running stream never runs out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "chat_request.h"
#include "chat_template.h"
#include "completion_request.h"
#include "job.h"
#include "llama/model.h"
#include "llama/model_weights.h"
#include "llama/text_tokenizer.h"
#include "session_store.h"

namespace kvserve {

struct EngineOptions {
  /// Cache options of every session (its `pool` and `max_kv_bytes` are ignored: see pool_bytes).
  kvcache::llama::CacheOptions cache;
  std::size_t pool_bytes = std::size_t{256} << 20;  ///< the shared pool's hard limit, bytes
  std::shared_ptr<SessionStore> store;              ///< where idle sessions are parked (required)
  std::filesystem::path scratch_dir;  ///< a local directory for snapshot files on their way to the store
  /// Sessions kept (resident + parked). At the limit a new session replaces the least recently
  /// used idle chat session; with none, it is refused (429).
  std::size_t max_sessions = 4096;
  RequestLimits limits;
  std::string model_name = "kvstream";  ///< reported as "model" in answers
  /// How /v1/chat/completions renders a conversation.
  ChatTemplate chat_template{ChatTemplate::Kind::chatml};
  /// Extra facts GET /v1/models reports under "meta" (the model's shape, the cache policy).
  nlohmann::json model_details = nlohmann::json::object();
  /// Threads of the oneTBB task arena the engine thread decodes in (matrix products, attention);
  /// 0 = every core.
  int threads = 0;
  /// Log lines (one event each, no newline); default: stderr with a "[kvstream serve]" prefix.
  std::function<void(const std::string&)> log;
};

/// Counts for tests and /metrics (one consistent snapshot, taken under the engine's lock).
struct EngineAccounting {
  std::size_t pool_pages_in_use = 0;  ///< what the pool says
  std::size_t pool_pages_max = 0;
  std::size_t resident_pages = 0;   ///< sum of the pages resident sessions' caches hold
  std::size_t committed_pages = 0;  ///< reservations of running requests + pages of idle sessions
  std::size_t sessions_resident = 0, sessions_parked = 0, sessions_corrupt = 0;
  std::size_t requests_active = 0, requests_queued = 0;
  std::uint64_t parks = 0, restores = 0, refusals = 0;
  /// Requests whose session ended holding more pages than admission reserved for it (a bug in
  /// the reservation bound: the pool could then run out under a running stream). Always 0.
  std::uint64_t reservation_overruns = 0;
};

/// Thread safety: every public method may be called from any thread at any time.
/// Errors: request problems are ApiError (status, field, message); I/O problems while parking are
/// logged and turn into refusals, never into a lost session.
class Engine {
 public:
  /// Loads nothing from the store but its index: sessions found there are parked and restored on
  /// their next request; torn writes and corrupt records are logged and reported in their
  /// session's status (corrupt ones are never loaded). Starts the engine thread.
  /// Throws kvcache::InvalidArgument for bad options (no store, a pool too small for one session).
  Engine(std::shared_ptr<const kvcache::llama::ModelWeights> model,
         std::shared_ptr<const kvcache::llama::TextTokenizer> tokenizer, EngineOptions options);
  /// shutdown(), then joins the engine thread.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  /// Queues a completion. Validation that needs the tokenizer happens here (ApiError 400 with
  /// param "prompt" when the prompt does not fit the budget); admission (session lookup, memory)
  /// happens on the engine thread: wait on the job until its phase leaves `queued`.
  std::shared_ptr<Job> submit(CompletionRequest request);
  /// Queues a chat completion: renders the messages with the chat template and encodes them
  /// (BOS as the tokenizer adds it, special tokens parsed). On the engine thread, the job runs on
  /// `session` when given (its history must be a prefix of the conversation), else on the chat
  /// session whose whole history the conversation starts with (only the new tokens are fed),
  /// else on a new chat session. The sampler starts from `seed` (or a random seed) every time, so
  /// an answer does not depend on whether the conversation was found in a session.
  std::shared_ptr<Job> submit_chat(ChatRequest request);

  /// A new empty session; its id. ApiError 429 when max_sessions exist, 503 while shutting down.
  std::string create_session();
  /// GET /v1/sessions/{id}: state, counts and KV bytes. ApiError 404 for an unknown id.
  nlohmann::json session_status(const std::string& id);
  /// Ids and states of every session.
  nlohmann::json list_sessions();
  /// Ends a session and removes it from the store. ApiError 404 (unknown), 409 (a request is running on it).
  void delete_session(const std::string& id);

  /// Prometheus text exposition of the engine's gauges and counters.
  std::string metrics_text();
  EngineAccounting accounting();
  const std::string& model_name() const noexcept;
  /// The model as GET /v1/models lists it: id, object, created, owned_by, meta.
  nlohmann::json model_card() const;
  const RequestLimits& limits() const noexcept;

  /// Stops admitting, ends running requests after their current step (finish_reason
  /// "shutdown"), parks every live session in the store and stops the engine thread. Idempotent;
  /// returns when done.
  void shutdown();
  bool shutting_down() const noexcept;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace kvserve
