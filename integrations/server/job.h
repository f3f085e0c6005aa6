// Job: one completion request between the HTTP thread that serves it and the engine thread that
// runs it. The HTTP side waits for admission, then reads released text until the job is done.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "request_fields.h"

namespace kvserve {

/// Everything here is guarded by `mu` except `cancelled`; the engine writes, the HTTP thread reads.
/// Thread safety: the methods lock `mu`.
struct Job {
  enum class Phase { queued, running, done };
  /// completion: `tokens` are appended to the session's stream (after BOS on a new one);
  /// chat: `tokens` are the whole conversation, BOS included, and the session's history must be
  /// a prefix of them (only the rest is fed).
  enum class Kind { completion, chat };

  Job(Kind k, GenerationOptions r, std::vector<std::int32_t> t)
      : kind(k), request(std::move(r)), tokens(std::move(t)) {}

  const Kind kind;
  const GenerationOptions request;
  const std::vector<std::int32_t> tokens;  ///< see Kind
  const std::chrono::steady_clock::time_point submitted = std::chrono::steady_clock::now();
  std::atomic<bool> cancelled{false};  ///< the client went away: stop at the next step

  std::mutex mu;
  std::condition_variable cv;
  Phase phase = Phase::queued;
  std::optional<ApiError> refused;  ///< set with phase done when the job was never admitted
  std::vector<std::string> pieces;  ///< released text not yet read by the HTTP side, one per token
  std::string finish_reason;        ///< "stop", "length", "cancelled", "shutdown" or "error"
  std::string error;                ///< what went wrong when finish_reason is "error"
  std::string session_id;           ///< the session it ran on ("" for a one-off stream)
  /// completion: prompt tokens this request added (and BOS on a new stream); chat: the whole
  /// conversation's tokens, as OpenAI counts prompt_tokens.
  std::uint64_t prompt_count = 0;
  std::uint64_t cached_count = 0;      ///< chat: conversation tokens the session held already (not fed again)
  std::uint64_t completion_count = 0;  ///< tokens sampled for this request

  /// Engine side: publish released text (one token's, usually) and wake the reader.
  void publish(std::string piece) {
    {
      std::lock_guard lk(mu);
      pieces.push_back(std::move(piece));
    }
    cv.notify_all();
  }
  /// Engine side: the job is over.
  void finish(std::string reason, std::string why = {}) {
    {
      std::lock_guard lk(mu);
      phase = Phase::done;
      finish_reason = std::move(reason);
      error = std::move(why);
    }
    cv.notify_all();
  }
  /// Engine side: the job is refused before it ran.
  void refuse(ApiError e) {
    {
      std::lock_guard lk(mu);
      phase = Phase::done;
      refused = std::move(e);
    }
    cv.notify_all();
  }
};

}  // namespace kvserve
