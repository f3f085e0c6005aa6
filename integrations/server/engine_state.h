// Engine internals shared by engine.cc (admission, the step loop, the public calls) and
// session_parking.cc (moving sessions between memory and the store). Not a public header.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "engine.h"
#include "kvcache/page_pool.h"
#include "llama/decode_batch.h"
#include "llama/sampler.h"
#include "prefix_index.h"
#include "session_record.h"
#include "text_stops.h"

namespace kvserve {

/// One conversation: a stream whose tokens are all either in the cache or `meta.pending` (a
/// non-empty session always has exactly one token sampled or given but not yet fed, so the next
/// request starts by feeding it and never needs logits kept from the last one).
struct Session {
  enum class Where { resident, parked, corrupt };
  SessionMeta meta;
  Where where = Where::resident;
  std::unique_ptr<kvcache::llama::Decoder> decoder;  ///< resident only
  bool busy = false;               ///< a request runs on it (the engine thread owns the decoder)
  bool ephemeral = false;          ///< a one-off stream, dropped when its request ends
  std::size_t reserved_pages = 0;  ///< while busy: pages its request may reach
  std::uint64_t lru = 0;           ///< engine tick of its last use (parking order)
  std::string problem;             ///< corrupt: why it is never loaded
  std::string recovery;            ///< a torn write was found and discarded at startup
  kvcache::StreamStats stats;      ///< cache statistics, refreshed by the engine
};

/// A running request (engine thread only).
struct ActiveJob {
  ActiveJob(std::shared_ptr<Job> j, std::shared_ptr<Session> s, const GenerationOptions& r,
            std::vector<std::string> stop)
      : job(std::move(j)),
        session(std::move(s)),
        sampler({r.temperature, r.top_p, 1}),
        stops(std::move(stop)) {}

  std::shared_ptr<Job> job;
  std::shared_ptr<Session> session;
  std::vector<std::int32_t> input;  ///< tokens to feed: the pending token (or BOS), then the prompt
  std::size_t fed = 0;              ///< of input, fed so far
  std::size_t feed_end = 0;         ///< input[feed_end, end) stays unfed (pending) when max_tokens is 0
  kvcache::llama::Sampler sampler;
  TextStops stops;
  std::span<const float> logits;  ///< after the last token fed; valid until the decoder runs again
  std::int32_t prev = -1;         ///< last token of the stream (for decoding text)
  std::int32_t pending = -1;      ///< sampled (or, at the end of a prompt, given) and not fed
  std::uint32_t generated = 0;
  std::uint64_t prompt_added = 0;  ///< tokens this request adds to the stream before generating
  bool prefilled = false;          ///< input[0, feed_end) is fed
  bool chat = false;               ///< a chat request: end-of-turn tokens end it, no blank lines
  /// Tokens this request fed to the cache, in order, kept when the session records its history.
  std::optional<std::vector<std::int32_t>> fed_tokens;
  bool done = false;
  std::string reason, why;  ///< finish_reason and error text once done
};

struct Engine::State {
  /// Rows of one batched decode step (more running requests take several passes per round).
  static constexpr std::uint32_t kMaxDecodeRows = 64;

  State(std::shared_ptr<const kvcache::llama::ModelWeights> m,
        std::shared_ptr<const kvcache::llama::TextTokenizer> t, EngineOptions o)
      : model(std::move(m)), tokenizer(std::move(t)), opt(std::move(o)) {}

  std::shared_ptr<const kvcache::llama::ModelWeights> model;
  std::shared_ptr<const kvcache::llama::TextTokenizer> tokenizer;
  EngineOptions opt;
  std::shared_ptr<kvcache::PagePool> pool;
  std::string fingerprint;        ///< model identity stored with every session
  std::uint32_t budget = 0;       ///< tokens kept per layer (the policy's budget)
  std::uint32_t page_tokens = 0;  ///< tokens per page of the narrower region (pages_bound)
  std::size_t pages_max = 0;

  std::mutex mu;  ///< guards everything below except `active` (engine thread only)
  std::condition_variable cv;
  std::map<std::string, std::shared_ptr<Session>> sessions;
  std::deque<std::shared_ptr<Job>> incoming;
  std::size_t committed = 0;  ///< see EngineAccounting::committed_pages
  std::uint64_t tick = 0;
  bool stopping = false, stopped = false;
  std::vector<ActiveJob> active;  ///< engine thread only
  /// Chat sessions by their whole history, so that a stateless client's next turn continues its
  /// session (under `mu`; only "chat" sessions with a known history are in it).
  PrefixIndex prefix_index;
  /// What ends a chat answer (chat_stops of the template and tokenizer).
  std::vector<std::int32_t> chat_end_tokens;
  std::vector<std::string> chat_stop_texts;
  /// The decode step of all running requests (engine thread only), with its argument buffers
  /// (reused: no allocation per step).
  kvcache::llama::DecodeBatch decode_batch{model, kMaxDecodeRows};
  std::vector<kvcache::llama::Decoder*> batch_decoders;
  std::vector<std::int32_t> batch_tokens;
  std::vector<std::exception_ptr> batch_errors;

  // Counters for /metrics (the atomic ones are bumped by the engine thread without the lock).
  std::uint64_t parks = 0, restores = 0, refusals = 0, requests = 0, cancelled = 0, overruns = 0;
  std::uint64_t chat_reuses = 0,
                chat_cached_tokens = 0;  ///< chat requests that continued a session, tokens not fed again
  std::atomic<std::uint64_t> tokens_generated{0}, tokens_prompted{0}, decode_steps{0}, decode_rows{0};
  std::deque<std::pair<double, std::uint64_t>> rate_window;  ///< (seconds, tokens_generated) samples

  std::thread thread;
  std::int64_t created_unix = 0;  ///< when the engine started (GET /v1/models "created")

  void log(const std::string& line) const;
  /// Upper bound of the pages a cache of `tokens` tokens (before the budget caps it) holds.
  std::size_t pages_bound(std::uint64_t tokens) const;
  std::unique_ptr<kvcache::llama::Decoder> new_decoder() const;
  std::shared_ptr<Session> new_session(const std::string& id, bool ephemeral) const;

  // session_parking.cc (call with `mu` held).
  /// Parks `s` (idle, resident): writes its record to the store and releases its pages. False
  /// (logged, `s` unchanged) when the store fails.
  bool park(Session& s);
  /// Makes a parked `s` resident. Throws ApiError 409 (and marks `s` corrupt) when its record or
  /// snapshot is unusable, ApiError 503 when the store cannot be read.
  void restore(Session& s);
  /// Reads the store's index at startup.
  void load_index();

  // engine.cc
  /// Queues `job` for admission (ApiError 503 while shutting down).
  std::shared_ptr<Job> enqueue(std::shared_ptr<Job> job);
  void run();
  void admit(const std::shared_ptr<Job>& job);
  /// The session named `id`, able to take a request: ApiError 404 (unknown), 409 (corrupt, busy).
  std::shared_ptr<Session> named_session(const std::string& id) const;
  /// The session a chat job runs on and how many of its tokens the session's history covers:
  /// the named session (ApiError 409 when its history is not recorded, 400 when the conversation
  /// does not continue it), else the chat session the prefix index finds, else a new chat session
  /// (not yet in `sessions`; `victim` is then the chat session to drop to stay within
  /// max_sessions, or null). Changes nothing.
  std::shared_ptr<Session> chat_session(const Job& job, std::size_t& matched,
                                        std::shared_ptr<Session>& victim);
  /// The least recently used idle chat session, dropped to make room for a new session (null: none).
  std::shared_ptr<Session> chat_victim() const;
  /// Removes `s` (idle) and its record. False (logged, nothing changed) when the store fails.
  bool drop(Session& s);
  /// One scheduling round over the running requests (engine thread, without the lock): a prompt
  /// chunk for those still feeding, one decode step for the others.
  void step_all();
  /// Feeds the next chunk of `a`'s input: the batch Decoder::prefill would run next, so feeding a
  /// prompt chunk by chunk runs exactly the forward passes one prefill call would.
  void feed_chunk(ActiveJob& a);
  /// Samples the next token from a.logits, publishes its text, and ends `a` at a stop string or
  /// max_tokens.
  void sample(ActiveJob& a);
  /// Hands finished requests back: session state, reservations, the job's answer (with the lock).
  void retire_done();
  /// After a request on `s` ended: its new history from what `a` fed, and its prefix index entry.
  void record_history(Session& s, const ActiveJob& a);
  void refresh(Session& s) const;
};

}  // namespace kvserve
