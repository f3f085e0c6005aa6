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

#include "completion_request.h"

namespace kvserve {

/// Everything here is guarded by `mu` except `cancelled`; the engine writes, the HTTP thread reads.
/// Thread safety: the methods lock `mu`.
struct Job {
  enum class Phase { queued, running, done };

  explicit Job(CompletionRequest r, std::vector<std::int32_t> tokens)
      : request(std::move(r)), prompt_tokens(std::move(tokens)) {}

  const CompletionRequest request;
  const std::vector<std::int32_t> prompt_tokens;  ///< the prompt encoded without BOS
  const std::chrono::steady_clock::time_point submitted = std::chrono::steady_clock::now();
  std::atomic<bool> cancelled{false};  ///< the client went away: stop at the next step

  std::mutex mu;
  std::condition_variable cv;
  Phase phase = Phase::queued;
  std::optional<ApiError> refused;     ///< set with phase done when the job was never admitted
  std::vector<std::string> pieces;     ///< released text not yet read by the HTTP side, one per token
  std::string finish_reason;           ///< "stop", "length", "cancelled", "shutdown" or "error"
  std::string error;                   ///< what went wrong when finish_reason is "error"
  std::string session_id;              ///< the session it ran on ("" for a one-off stream)
  std::uint64_t prompt_count = 0;      ///< prompt tokens this request added (and BOS on a new stream)
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
